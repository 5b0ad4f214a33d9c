//! `actormq admin msg get | query`: messages looked up, not consumed,
//! through the SDK's [`MessageQuery`] (by id from the broker the id names;
//! by key through every broker's key index).

use actormq_protocol::StoredMessage;
use actormq_sdk::MessageQuery;
use actormq_sdk::query::DEFAULT_MAX_PER_KEY;
use slog::Logger;

use super::admin::MsgCommand;
use super::consume::message_json;
use super::{CliError, CommonArgs, write_line};

fn print(m: &StoredMessage, as_json: bool) {
    if as_json {
        write_line(&message_json(m, false).to_string());
    } else {
        write_line(&format!(
            "{} topic={} queue={} offset={} tags={} keys={} store_ts={} body={}",
            m.msg_id(),
            m.message.topic,
            m.queue_id,
            m.queue_offset,
            m.message.tags.as_deref().unwrap_or(""),
            m.message.keys.as_deref().unwrap_or(""),
            m.store_timestamp_ms,
            String::from_utf8_lossy(&m.message.body)
        ));
    }
}

/// `actormq admin msg …`.
pub async fn run(common: &CommonArgs, action: &MsgCommand, log: &Logger) -> Result<(), CliError> {
    let query = MessageQuery::new(&common.namesrv, log)?;
    match action {
        MsgCommand::Get { id } => match query.by_id(id).await? {
            Some(m) => {
                print(&m, common.json);
                Ok(())
            }
            None => Err(CliError(format!("no message with id {id}"))),
        },
        MsgCommand::Query {
            topic,
            key,
            begin_ms,
            end_ms,
        } => {
            let found = query
                .by_key(
                    topic,
                    key,
                    begin_ms.unwrap_or(0),
                    end_ms.unwrap_or(u64::MAX),
                    DEFAULT_MAX_PER_KEY,
                )
                .await?;
            for m in &found {
                print(m, common.json);
            }
            Ok(())
        }
    }
}
