//! `actormq admin msg get | query`: messages looked up, not consumed,
//! through [`actormq_sdk::admin`] (by id from the broker the id names; by
//! key through every broker's key index).

use actormq_sdk::admin::MessageView;
use slog::Logger;

use super::admin::MsgCommand;
use super::{CliError, CommonArgs, write_line};

fn print(m: &MessageView, as_json: bool) {
    if as_json {
        write_line(&serde_json::to_string(m).unwrap_or_default());
    } else {
        write_line(&format!(
            "{} topic={} queue={} offset={} tags={} keys={} store_ts={} body={}",
            m.msg_id, m.topic, m.queue_id, m.queue_offset, m.tags, m.keys, m.store_ts, m.body
        ));
    }
}

/// `actormq admin msg …`.
pub async fn run(common: &CommonArgs, action: &MsgCommand, log: &Logger) -> Result<(), CliError> {
    let admin = common.admin(log)?;
    match action {
        MsgCommand::Get { id } => {
            print(&admin.message(id).await?, common.json);
            Ok(())
        }
        MsgCommand::Query {
            topic,
            key,
            begin_ms,
            end_ms,
        } => {
            for m in &admin
                .messages_by_key(topic, key, *begin_ms, *end_ms)
                .await?
            {
                print(m, common.json);
            }
            Ok(())
        }
    }
}
