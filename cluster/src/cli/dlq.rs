//! `actormq admin dlq resend`: puts a group's dead letters back on the
//! topics they first failed on, through every master broker
//! (`RESEND_DEAD_LETTERS`). Each broker resends from the group's offset on
//! its `%DLQ%<group>` topic and commits past what it resent, so running
//! it again resends only newer dead letters.

use actormq_sdk::protocol::Bytes;
use actormq_sdk::protocol::request::ResendDeadLettersRequest;
use actormq_sdk::route::RouteCache;
use serde_json::json;

use super::subscription_group::masters;
use super::{CliError, CommonArgs, emit};

/// `admin dlq resend -g GROUP [--count N]`: one line per resent message,
/// then `{"resent":N,"remaining":M}`.
pub async fn resend(
    common: &CommonArgs,
    routes: &RouteCache,
    group: &str,
    count: Option<u64>,
) -> Result<(), CliError> {
    let mut left = count.unwrap_or(u64::MAX);
    let (mut resent, mut remaining) = (0u64, 0u64);
    for (name, addr) in masters(routes).await? {
        if left == 0 {
            break;
        }
        let req = ResendDeadLettersRequest {
            consumer_group: group.to_owned(),
            // 0 asks for all.
            max_count: u32::try_from(left).unwrap_or(u32::MAX),
        };
        let reply = routes
            .connections()
            .call(&addr, req, Bytes::new(), common.timeout())
            .await
            .map_err(|e| CliError(format!("resend on {name} ({addr}): {e}")))?
            .fields;
        for m in &reply.resent {
            emit(
                common.json,
                &json!({
                    "msg_id": m.msg_id,
                    "origin_msg_id": m.origin_msg_id,
                    "topic": m.topic,
                    "broker": name,
                    "queue_id": m.queue_id,
                    "queue_offset": m.queue_offset,
                }),
                || {
                    format!(
                        "{}\t{}\t{name}\tqueue={}\toffset={}\torigin={}",
                        m.msg_id, m.topic, m.queue_id, m.queue_offset, m.origin_msg_id
                    )
                },
            );
        }
        let n = reply.resent.len() as u64;
        resent += n;
        remaining += reply.remaining;
        left = left.saturating_sub(n.max(1));
    }
    emit(
        common.json,
        &json!({"resent": resent, "remaining": remaining}),
        || format!("resent {resent} dead letters of {group}; {remaining} left"),
    );
    Ok(())
}
