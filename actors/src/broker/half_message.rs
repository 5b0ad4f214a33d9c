//! Transactional half messages and op records: the formats, as plain
//! functions (no actor, no I/O), shared by the commit log's rewrite, the
//! [`super::EndTransactionService`] and the [`super::TransactionChecker`].
//!
//! - A producer sends a message with `TRAN_MSG=true`, `PGROUP=<group>` and
//!   its `UNIQ_KEY` (the transaction id). The commit log stores it in
//!   `RMQ_SYS_TRANS_HALF_TOPIC` queue 0 instead, adding `REAL_TOPIC` and
//!   `REAL_QID` ([`half_properties`]): no consumer of the real topic sees
//!   it.
//! - A commit re-puts it to `REAL_TOPIC`/`REAL_QID` with the transaction
//!   properties removed and the same `UNIQ_KEY` ([`committed`]); commit and
//!   rollback both write an op record ([`op_record`]) to
//!   `RMQ_SYS_TRANS_OP_HALF_TOPIC` queue 0: body = the half message's
//!   queue offset (decimal, as RocketMQ), `KEYS` = the transaction id (so
//!   the key index answers "was this transaction decided?"), tag `d`,
//!   `TRAN_DECISION` = `commit` or `rollback`.
//! - A check re-puts the half message at the end of the half queue with
//!   `TRANSACTION_CHECK_TIMES` one higher ([`checked_copy`]): the count
//!   lives in the commit log, so it survives restarts.

use std::net::SocketAddr;

use actormq_protocol::ResponseCode;
use actormq_protocol::message::PROPERTY_UNIQUE_KEY;
use actormq_protocol::request::TransactionDecision;
use actormq_protocol::system_topic::{
    PROPERTY_PRODUCER_GROUP, PROPERTY_REAL_QUEUE_ID, PROPERTY_REAL_TOPIC,
    PROPERTY_TRANSACTION_CHECK_TIMES, PROPERTY_TRANSACTION_PREPARED, TRANS_HALF_TOPIC,
    TRANS_OP_HALF_TOPIC,
};
use actormq_store::MessageView;
use actormq_store::record::{properties_iter, property};
use bytes::Bytes;

use super::commit_log::InternalMessage;
use super::stored_codec::{PROPERTY_DELAY, PROPERTY_KEYS, PROPERTY_TAGS, tag_hash_of};
use crate::runtime::ServiceError;

/// Property of an op record: `commit` or `rollback`.
pub const PROPERTY_TRANSACTION_DECISION: &str = "TRAN_DECISION";
/// Tag of op records (RocketMQ's `REMOVETAG`).
pub const OP_TAG: &str = "d";

/// Properties removed from a committed message (the broker's bookkeeping).
const TRANSACTION_PROPERTIES: [&str; 5] = [
    PROPERTY_TRANSACTION_PREPARED,
    PROPERTY_PRODUCER_GROUP,
    PROPERTY_REAL_TOPIC,
    PROPERTY_REAL_QUEUE_ID,
    PROPERTY_TRANSACTION_CHECK_TIMES,
];

fn illegal(reason: impl Into<String>) -> ServiceError {
    ServiceError::new(ResponseCode::MessageIllegal, reason)
}

/// Whether encoded record properties mark a transactional half message
/// (`TRAN_MSG=true`; for a batch's properties, back to back: whether any
/// entry does). A SIMD substring search first: sends without it pay one
/// fast scan of their property bytes.
pub fn is_prepared(props: &[u8]) -> bool {
    static KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| {
            memchr::memmem::Finder::new(PROPERTY_TRANSACTION_PREPARED.as_bytes())
        });
    KEY.find(props).is_some()
        && properties_iter(props).any(|(k, v)| k == PROPERTY_TRANSACTION_PREPARED && v == "true")
}

/// The properties of a half message stored for `real_topic`/`real_queue`:
/// `props` plus `REAL_TOPIC` and `REAL_QID`. A half message must carry its
/// transaction id (`UNIQ_KEY`) and producer group (`PGROUP`).
pub fn half_properties(
    props: &[u8],
    real_topic: &str,
    real_queue: u32,
) -> Result<Vec<u8>, ServiceError> {
    if property(props, PROPERTY_UNIQUE_KEY).is_none_or(str::is_empty) {
        return Err(illegal("a transactional message needs its UNIQ_KEY"));
    }
    if property(props, PROPERTY_PRODUCER_GROUP).is_none_or(str::is_empty) {
        return Err(illegal("a transactional message needs its PGROUP"));
    }
    let mut out = props.to_vec();
    let queue = real_queue.to_string();
    actormq_store::encode_properties_into(
        [
            (PROPERTY_REAL_TOPIC, real_topic),
            (PROPERTY_REAL_QUEUE_ID, queue.as_str()),
        ],
        &mut out,
    )
    .map_err(|e| illegal(e.to_string()))?;
    Ok(out)
}

/// What the broker knows of a stored half message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HalfMessage {
    /// Its queue offset in the half topic.
    pub queue_offset: u64,
    /// Its commit log offset.
    pub commit_log_offset: u64,
    /// When it was stored (ms).
    pub store_timestamp_ms: u64,
    /// The transaction id (its `UNIQ_KEY`).
    pub transaction_id: String,
    /// The producer group (`PGROUP`).
    pub producer_group: String,
    /// Where a commit delivers it.
    pub real_topic: String,
    /// Which queue a commit delivers it to.
    pub real_queue: u32,
    /// Checks so far (`TRANSACTION_CHECK_TIMES`, absent = 0).
    pub check_times: u32,
}

impl HalfMessage {
    /// Reads a half message; `None` when the record is not a well-formed
    /// one (another topic, a property missing).
    pub fn from_view(view: &MessageView) -> Option<HalfMessage> {
        if view.topic() != TRANS_HALF_TOPIC {
            return None;
        }
        let props = view.properties();
        Some(HalfMessage {
            queue_offset: view.queue_offset(),
            commit_log_offset: view.commit_log_offset(),
            store_timestamp_ms: view.store_timestamp_ms(),
            transaction_id: property(props, PROPERTY_UNIQUE_KEY)?.to_owned(),
            producer_group: property(props, PROPERTY_PRODUCER_GROUP)?.to_owned(),
            real_topic: property(props, PROPERTY_REAL_TOPIC)?.to_owned(),
            real_queue: property(props, PROPERTY_REAL_QUEUE_ID)?.parse().ok()?,
            check_times: property(props, PROPERTY_TRANSACTION_CHECK_TIMES)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        })
    }
}

fn internal(
    view: &MessageView,
    topic: &str,
    queue_id: u32,
    properties: Vec<u8>,
    delay_level: u8,
) -> InternalMessage {
    let h = view.header();
    let tags = property(view.properties(), PROPERTY_TAGS);
    InternalMessage {
        topic: topic.to_owned(),
        queue_id,
        body: view.body(),
        tag_hash: tag_hash_of(tags),
        properties,
        flags: h.flags,
        born_timestamp_ms: h.born_timestamp_ms,
        born_host: h.born_host,
        reconsume_times: h.reconsume_times,
        delay_level,
    }
}

/// The message a commit delivers: the half message's body and properties
/// minus the transaction ones, to its real topic and queue (a delay level
/// it was sent with applies from now).
pub fn committed(view: &MessageView, half: &HalfMessage) -> Result<InternalMessage, ServiceError> {
    let props = view.properties();
    let delay_level = property(props, PROPERTY_DELAY)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kept = properties_iter(props)
        .filter(|(k, _)| !TRANSACTION_PROPERTIES.contains(k) && *k != PROPERTY_DELAY);
    let properties = actormq_store::encode_properties(kept).map_err(|e| illegal(e.to_string()))?;
    Ok(internal(
        view,
        &half.real_topic,
        half.real_queue,
        properties,
        delay_level,
    ))
}

/// A copy of the half message at the end of the half queue, its check
/// count set to `check_times`.
pub fn checked_copy(view: &MessageView, check_times: u32) -> Result<InternalMessage, ServiceError> {
    let times = check_times.to_string();
    let kept = properties_iter(view.properties())
        .filter(|(k, _)| *k != PROPERTY_TRANSACTION_CHECK_TIMES)
        .chain([(PROPERTY_TRANSACTION_CHECK_TIMES, times.as_str())]);
    let properties = actormq_store::encode_properties(kept).map_err(|e| illegal(e.to_string()))?;
    Ok(internal(view, TRANS_HALF_TOPIC, 0, properties, 0))
}

/// The wire name of a final decision.
pub fn decision_name(decision: TransactionDecision) -> &'static str {
    match decision {
        TransactionDecision::Commit => "commit",
        TransactionDecision::Rollback => "rollback",
        TransactionDecision::Unknown => "unknown",
    }
}

/// The op record of a decision on `half` (commit or rollback).
pub fn op_record(
    half: &HalfMessage,
    decision: TransactionDecision,
    born_host: Option<SocketAddr>,
) -> Result<InternalMessage, ServiceError> {
    let properties = actormq_store::encode_properties([
        (PROPERTY_TAGS, OP_TAG),
        (PROPERTY_KEYS, half.transaction_id.as_str()),
        (PROPERTY_TRANSACTION_DECISION, decision_name(decision)),
    ])
    .map_err(|e| illegal(e.to_string()))?;
    Ok(InternalMessage {
        topic: TRANS_OP_HALF_TOPIC.to_owned(),
        queue_id: 0,
        body: Bytes::from(half.queue_offset.to_string()),
        properties,
        tag_hash: tag_hash_of(Some(OP_TAG)),
        flags: 0,
        born_timestamp_ms: super::now_ms(),
        born_host,
        reconsume_times: 0,
        delay_level: 0,
    })
}

/// A decision read back from the op topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRecord {
    /// Its queue offset in the op topic.
    pub op_offset: u64,
    /// The decided half message's queue offset.
    pub half_offset: u64,
    /// The transaction id.
    pub transaction_id: String,
    /// Commit or rollback.
    pub decision: TransactionDecision,
}

impl OpRecord {
    /// Reads an op record; `None` when the record is not one.
    pub fn from_view(view: &MessageView) -> Option<OpRecord> {
        if view.topic() != TRANS_OP_HALF_TOPIC {
            return None;
        }
        let props = view.properties();
        let decision = match property(props, PROPERTY_TRANSACTION_DECISION)? {
            "commit" => TransactionDecision::Commit,
            "rollback" => TransactionDecision::Rollback,
            _ => return None,
        };
        Some(OpRecord {
            op_offset: view.queue_offset(),
            half_offset: std::str::from_utf8(view.body_slice()).ok()?.parse().ok()?,
            transaction_id: property(props, PROPERTY_KEYS)?.to_owned(),
            decision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actormq_store::{AppendMessage, Store, StoreConfig};

    fn props(pairs: &[(&str, &str)]) -> Vec<u8> {
        actormq_store::encode_properties(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn prepared_is_tran_msg_true() {
        assert!(is_prepared(&props(&[("A", "b"), ("TRAN_MSG", "true")])));
        assert!(!is_prepared(&props(&[("TRAN_MSG", "false")])));
        assert!(!is_prepared(&props(&[("A", "TRAN_MSG")])));
        assert!(!is_prepared(&[]));
        // A batch's properties back to back: any entry counts.
        let mut batch = props(&[("A", "b")]);
        batch.extend(props(&[("TRAN_MSG", "true")]));
        assert!(is_prepared(&batch));
    }

    #[test]
    fn half_needs_its_key_and_group() {
        let p = props(&[("TRAN_MSG", "true"), ("PGROUP", "g")]);
        assert_eq!(
            half_properties(&p, "t", 1).unwrap_err().code,
            ResponseCode::MessageIllegal
        );
        let p = props(&[("TRAN_MSG", "true"), ("UNIQ_KEY", "k")]);
        assert!(half_properties(&p, "t", 1).is_err());
        let p = props(&[("TRAN_MSG", "true"), ("UNIQ_KEY", "k"), ("PGROUP", "g")]);
        let h = half_properties(&p, "orders", 3).unwrap();
        assert_eq!(property(&h, "REAL_TOPIC"), Some("orders"));
        assert_eq!(property(&h, "REAL_QID"), Some("3"));
    }

    /// Stores a half message, then checks the commit, copy and op forms.
    #[test]
    fn commit_copy_and_op_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let half_props = half_properties(
            &props(&[
                ("TAGS", "tg"),
                ("TRAN_MSG", "true"),
                ("UNIQ_KEY", "K1"),
                ("PGROUP", "pg"),
                ("DELAY", "2"),
                ("user", "v"),
            ]),
            "orders",
            2,
        )
        .unwrap();
        let append = |topic: &str, props: &[u8], body: &[u8]| {
            store
                .append(&AppendMessage {
                    topic,
                    queue_id: 0,
                    body,
                    properties: props,
                    tag_hash: 0,
                    flags: 7,
                    born_timestamp_ms: 5,
                    born_host: None,
                    store_host: None,
                    reconsume_times: 0,
                    prepared_tx_offset: 0,
                })
                .unwrap()
        };
        let at = append(TRANS_HALF_TOPIC, &half_props, b"body");
        let view = store.read_at(at.commit_log_offset).unwrap();
        let half = HalfMessage::from_view(&view).unwrap();
        assert_eq!(half.transaction_id, "K1");
        assert_eq!(half.producer_group, "pg");
        assert_eq!((half.real_topic.as_str(), half.real_queue), ("orders", 2));
        assert_eq!(half.check_times, 0);

        let c = committed(&view, &half).unwrap();
        assert_eq!(
            (c.topic.as_str(), c.queue_id, c.delay_level),
            ("orders", 2, 2)
        );
        assert_eq!(&c.body[..], b"body");
        assert_eq!(c.flags, 7);
        assert_eq!(c.tag_hash, tag_hash_of(Some("tg")));
        assert_eq!(property(&c.properties, "UNIQ_KEY"), Some("K1"));
        assert_eq!(property(&c.properties, "user"), Some("v"));
        for gone in ["TRAN_MSG", "PGROUP", "REAL_TOPIC", "REAL_QID", "DELAY"] {
            assert_eq!(property(&c.properties, gone), None, "{gone}");
        }

        let copy = checked_copy(&view, 1).unwrap();
        let at2 = append(&copy.topic, &copy.properties, &copy.body);
        let again = HalfMessage::from_view(&store.read_at(at2.commit_log_offset).unwrap()).unwrap();
        assert_eq!(again.check_times, 1);
        assert_eq!(again.transaction_id, "K1");
        let copy = checked_copy(&store.read_at(at2.commit_log_offset).unwrap(), 2).unwrap();
        assert_eq!(
            property(&copy.properties, "TRANSACTION_CHECK_TIMES"),
            Some("2")
        );

        let op = op_record(&half, TransactionDecision::Rollback, None).unwrap();
        let at3 = append(&op.topic, &op.properties, &op.body);
        let rec = OpRecord::from_view(&store.read_at(at3.commit_log_offset).unwrap()).unwrap();
        assert_eq!(rec.half_offset, half.queue_offset);
        assert_eq!(rec.transaction_id, "K1");
        assert_eq!(rec.decision, TransactionDecision::Rollback);
        // Not a half message / not an op record.
        assert!(OpRecord::from_view(&view).is_none());
        assert!(HalfMessage::from_view(&store.read_at(at3.commit_log_offset).unwrap()).is_none());
    }
}
