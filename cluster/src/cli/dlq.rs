//! `actormq admin dlq resend`: puts a group's dead letters back on the
//! topics they first failed on, through every master broker
//! (`RESEND_DEAD_LETTERS`). Each broker resends from the group's offset on
//! its `%DLQ%<group>` topic and commits past what it resent, so running
//! it again resends only newer dead letters.

use actormq_sdk::admin::Admin;
use serde_json::json;

use super::{CliError, CommonArgs, emit};

/// `admin dlq resend -g GROUP [--count N]`: one line per resent message,
/// then `{"resent":N,"remaining":M}`.
pub async fn resend(
    common: &CommonArgs,
    admin: &Admin,
    group: &str,
    count: Option<u64>,
) -> Result<(), CliError> {
    let r = admin.resend_dead_letters(group, count).await?;
    for m in &r.messages {
        emit(common.json, m, || {
            format!(
                "{}\t{}\t{}\tqueue={}\toffset={}\torigin={}",
                m.msg_id, m.topic, m.broker, m.queue_id, m.queue_offset, m.origin_msg_id
            )
        });
    }
    emit(
        common.json,
        &json!({"resent": r.resent, "remaining": r.remaining}),
        || {
            format!(
                "resent {} dead letters of {group}; {} left",
                r.resent, r.remaining
            )
        },
    );
    Ok(())
}
