//! The topics the broker writes itself and the properties it stamps on
//! the messages it moves (RocketMQ's names, so a RocketMQ user recognises
//! them in a dump).
//!
//! | topic | what |
//! |---|---|
//! | `%RETRY%<group>` | a group's failed messages, redelivered after a delay |
//! | `%DLQ%<group>` | a group's dead letters (not delivered to subscribers) |
//! | `SCHEDULE_TOPIC_XXXX` | delayed messages parked until due (queue = level − 1) |
//! | `rmq_sys_wheel_timer` | messages sent with a deliver-at time, until due (queue 0) |
//! | `RMQ_SYS_TRANS_HALF_TOPIC` | transactional half messages until decided (queue 0) |
//! | `RMQ_SYS_TRANS_OP_HALF_TOPIC` | decisions on half messages (op records, queue 0) |

/// Prefix of a group's retry topic.
pub const RETRY_PREFIX: &str = "%RETRY%";
/// Prefix of a group's dead-letter topic.
pub const DLQ_PREFIX: &str = "%DLQ%";
/// Where delayed messages wait for their level's delay.
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
/// Where messages sent with a deliver-at time wait (RocketMQ 5's name).
pub const TIMER_TOPIC: &str = "rmq_sys_wheel_timer";

/// Where a transactional message waits, invisible, for its producer's
/// commit or rollback (queue 0; `REAL_TOPIC` and `REAL_QID` say where a
/// commit delivers it).
pub const TRANS_HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// Op records: one per decided half message (queue 0; body = the half
/// message's queue offset, keys = its transaction id, the unique key).
pub const TRANS_OP_HALF_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
/// The system group whose progress the transaction checker keeps.
pub const TRANS_CHECK_GROUP: &str = "CID_SYS_RMQ_TRANS";

/// On a message a producer sends: `"true"` makes it a transactional half
/// message (RocketMQ's `TRAN_MSG`).
pub const PROPERTY_TRANSACTION_PREPARED: &str = "TRAN_MSG";
/// On a half message: the producer group asked when it is checked
/// (RocketMQ's `PGROUP`).
pub const PROPERTY_PRODUCER_GROUP: &str = "PGROUP";
/// On a half message: how many times its state was checked so far.
pub const PROPERTY_TRANSACTION_CHECK_TIMES: &str = "TRANSACTION_CHECK_TIMES";

/// On a message of an idempotent producer (the first of a batch): the
/// producer's id. The broker rebuilds its dedup window from these.
pub const PROPERTY_PRODUCER_ID: &str = "PRODUCER_ID";
/// With [`PROPERTY_PRODUCER_ID`]: the send's sequence number.
pub const PROPERTY_PRODUCER_SEQUENCE: &str = "PRODUCER_SEQ";
/// With [`PROPERTY_PRODUCER_ID`] on the first message of a batch of more
/// than one: how many messages the batch stored.
pub const PROPERTY_PRODUCER_BATCH: &str = "PRODUCER_BATCH";

/// On a parked (delayed) message: the topic it is delivered to.
pub const PROPERTY_REAL_TOPIC: &str = "REAL_TOPIC";
/// On a parked (delayed) message: the queue it is delivered to.
pub const PROPERTY_REAL_QUEUE_ID: &str = "REAL_QID";
/// On a retried or dead message: the topic it was first consumed from.
pub const PROPERTY_RETRY_TOPIC: &str = "RETRY_TOPIC";
/// On a retried or dead message: the id of the message that first failed.
pub const PROPERTY_ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";

/// `%RETRY%<group>`.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_PREFIX}{group}")
}

/// `%DLQ%<group>`.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

/// Where the broker parks a simple (pop) consumer's checkpoints until
/// they are due (one queue; broker-internal).
pub const POP_REVIVE_TOPIC: &str = "rmq_sys_pop_revive";

/// Where the broker records a simple consumer's acks (one queue;
/// broker-internal).
pub const POP_ACK_TOPIC: &str = "rmq_sys_pop_ack";

/// `%RETRY%<group>_<topic>`: where a message popped by `group` from
/// `topic` and not acked in time comes back (RocketMQ's pop retry topic).
pub fn pop_retry_topic(group: &str, topic: &str) -> String {
    format!("{RETRY_PREFIX}{group}_{topic}")
}

/// Whether `topic` is a group's retry topic.
pub fn is_retry_topic(topic: &str) -> bool {
    topic.starts_with(RETRY_PREFIX)
}

/// Whether `topic` is a group's dead-letter topic.
pub fn is_dlq_topic(topic: &str) -> bool {
    topic.starts_with(DLQ_PREFIX)
}

/// Whether clients may not send to `topic` themselves: the schedule
/// topic and the dead-letter topics are written by the broker only.
pub fn is_broker_only(topic: &str) -> bool {
    topic == SCHEDULE_TOPIC
        || is_dlq_topic(topic)
        || topic.starts_with("RMQ_SYS_")
        || topic.starts_with("rmq_sys_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_rocketmqs() {
        assert_eq!(retry_topic("g"), "%RETRY%g");
        assert_eq!(dlq_topic("g"), "%DLQ%g");
        assert_eq!(pop_retry_topic("g", "t"), "%RETRY%g_t");
        assert!(is_broker_only(POP_REVIVE_TOPIC) && is_broker_only(POP_ACK_TOPIC));
        assert!(is_retry_topic("%RETRY%g") && !is_retry_topic("g"));
        assert!(is_dlq_topic("%DLQ%g") && !is_dlq_topic("%RETRY%g"));
        for t in [
            SCHEDULE_TOPIC,
            "%DLQ%g",
            TRANS_HALF_TOPIC,
            TRANS_OP_HALF_TOPIC,
        ] {
            assert!(is_broker_only(t), "{t}");
        }
        for t in ["orders", "%RETRY%g"] {
            assert!(!is_broker_only(t), "{t}");
        }
        for t in [
            retry_topic("g"),
            dlq_topic("g"),
            SCHEDULE_TOPIC.to_owned(),
            TRANS_HALF_TOPIC.to_owned(),
            TRANS_OP_HALF_TOPIC.to_owned(),
        ] {
            crate::validate_topic(&t).unwrap();
        }
    }
}
