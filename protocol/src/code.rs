//! Request and response codes: explicit numbers, `u32` on the wire.
//!
//! Where Apache RocketMQ has the code, the number is RocketMQ's, so a
//! RocketMQ user recognises `SEND_MESSAGE = 10` or `PULL_NOT_FOUND = 19`.
//! Codes that only actormq has live at `10000` and above. **A number is
//! never reused**: a retired code stays reserved forever, so an old peer can
//! never misread a new code as something else. Unknown numbers decode to
//! [`Error::UnknownRequestCode`] / [`Error::UnknownResponseCode`].

use crate::error::Error;

macro_rules! wire_codes {
    (
        $(#[$meta:meta])*
        pub enum $name:ident / $err:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $num:literal => $wire:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $num, )*
        }

        impl $name {
            /// Every code, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The number on the wire.
            pub const fn as_u32(self) -> u32 {
                self as u32
            }

            /// The RocketMQ-style constant name, e.g. `SEND_MESSAGE`.
            pub const fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $wire, )*
                }
            }
        }

        impl TryFrom<u32> for $name {
            type Error = Error;
            fn try_from(n: u32) -> Result<Self, Error> {
                match n {
                    $( $num => Ok($name::$variant), )*
                    other => Err(Error::$err(other)),
                }
            }
        }

        impl From<$name> for u32 {
            fn from(c: $name) -> u32 {
                c as u32
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", self.name(), self.as_u32())
            }
        }
    };
}

wire_codes! {
    /// What a request asks for. Numbers are RocketMQ's `RequestCode`s.
    pub enum RequestCode / UnknownRequestCode {
        /// Send one message ([`crate::request::SendMessageRequest`]).
        SendMessage = 10 => "SEND_MESSAGE",
        /// Pull messages from a queue ([`crate::request::PullMessageRequest`]).
        PullMessage = 11 => "PULL_MESSAGE",
        /// Query messages by key in a time range ([`crate::request::QueryMessageRequest`]).
        QueryMessage = 12 => "QUERY_MESSAGE",
        /// Read a group's committed offset ([`crate::request::QueryConsumerOffsetRequest`]).
        QueryConsumerOffset = 14 => "QUERY_CONSUMER_OFFSET",
        /// Commit a group's offset ([`crate::request::UpdateConsumerOffsetRequest`]).
        UpdateConsumerOffset = 15 => "UPDATE_CONSUMER_OFFSET",
        /// Create or update a topic on a broker ([`crate::request::CreateTopicRequest`]).
        UpdateAndCreateTopic = 17 => "UPDATE_AND_CREATE_TOPIC",
        /// All topic configs of a broker ([`crate::request::GetAllTopicConfigRequest`]).
        GetAllTopicConfig = 21 => "GET_ALL_TOPIC_CONFIG",
        /// A broker's effective configuration
        /// ([`crate::request::GetBrokerConfigRequest`]).
        GetBrokerConfig = 26 => "GET_BROKER_CONFIG",
        /// A broker's runtime status: version, uptime, roles, store,
        /// rates, its supervised children
        /// ([`crate::request::GetBrokerRuntimeInfoRequest`]).
        GetBrokerRuntimeInfo = 28 => "GET_BROKER_RUNTIME_INFO",
        /// Queue offset of the first message stored at or after a time
        /// ([`crate::request::SearchOffsetByTimestampRequest`]).
        SearchOffsetByTimestamp = 29 => "SEARCH_OFFSET_BY_TIMESTAMP",
        /// Max queue offset ([`crate::request::GetMaxOffsetRequest`]).
        GetMaxOffset = 30 => "GET_MAX_OFFSET",
        /// Min queue offset ([`crate::request::GetMinOffsetRequest`]).
        GetMinOffset = 31 => "GET_MIN_OFFSET",
        /// One message by commit log offset ([`crate::request::ViewMessageByIdRequest`]).
        ViewMessageById = 33 => "VIEW_MESSAGE_BY_ID",
        /// Client heartbeat with its producer and consumer groups
        /// ([`crate::request::HeartbeatRequest`]).
        HeartBeat = 34 => "HEART_BEAT",
        /// A consumer returns a failed message for retry
        /// ([`crate::request::ConsumerSendMsgBackRequest`]).
        ConsumerSendMsgBack = 36 => "CONSUMER_SEND_MSG_BACK",
        /// Commit or roll back a half message ([`crate::request::EndTransactionRequest`]).
        EndTransaction = 37 => "END_TRANSACTION",
        /// Client ids of a consumer group ([`crate::request::GetConsumerListByGroupRequest`]).
        GetConsumerListByGroup = 38 => "GET_CONSUMER_LIST_BY_GROUP",
        /// Broker asks a producer for a transaction's state
        /// ([`crate::request::CheckTransactionStateRequest`]).
        CheckTransactionState = 39 => "CHECK_TRANSACTION_STATE",
        /// Broker tells consumers their group changed
        /// ([`crate::request::NotifyConsumerIdsChangedRequest`]).
        NotifyConsumerIdsChanged = 40 => "NOTIFY_CONSUMER_IDS_CHANGED",
        /// Lock queues for orderly consumption ([`crate::request::LockBatchMqRequest`]).
        LockBatchMq = 41 => "LOCK_BATCH_MQ",
        /// Unlock queues ([`crate::request::UnlockBatchMqRequest`]).
        UnlockBatchMq = 42 => "UNLOCK_BATCH_MQ",
        /// Broker registers with a name server ([`crate::request::RegisterBrokerRequest`]).
        RegisterBroker = 103 => "REGISTER_BROKER",
        /// Broker leaves a name server ([`crate::request::UnregisterBrokerRequest`]).
        UnregisterBroker = 104 => "UNREGISTER_BROKER",
        /// Route of a topic ([`crate::request::GetRouteInfoByTopicRequest`]).
        GetRouteInfoByTopic = 105 => "GET_ROUTEINFO_BY_TOPIC",
        /// Clusters and their brokers ([`crate::request::GetBrokerClusterInfoRequest`]).
        GetBrokerClusterInfo = 106 => "GET_BROKER_CLUSTER_INFO",
        /// Create or update a consumer group's config
        /// ([`crate::request::CreateSubscriptionGroupRequest`]).
        UpdateAndCreateSubscriptionGroup = 200 => "UPDATE_AND_CREATE_SUBSCRIPTIONGROUP",
        /// Every consumer group config of a broker
        /// ([`crate::request::GetAllSubscriptionGroupRequest`]).
        GetAllSubscriptionGroupConfig = 201 => "GET_ALL_SUBSCRIPTIONGROUP_CONFIG",
        /// The clients online in a consumer group
        /// ([`crate::request::GetConsumerConnectionListRequest`]).
        GetConsumerConnectionList = 203 => "GET_CONSUMER_CONNECTION_LIST",
        /// The clients online in a producer group
        /// ([`crate::request::GetProducerConnectionListRequest`]).
        GetProducerConnectionList = 204 => "GET_PRODUCER_CONNECTION_LIST",
        /// All topic names known to a name server
        /// ([`crate::request::GetAllTopicListFromNamesrvRequest`]).
        GetAllTopicListFromNameserver = 206 => "GET_ALL_TOPIC_LIST_FROM_NAMESERVER",
        /// Delete a consumer group's config
        /// ([`crate::request::DeleteSubscriptionGroupRequest`]).
        DeleteSubscriptionGroup = 207 => "DELETE_SUBSCRIPTIONGROUP",
        /// Delete a topic on a broker ([`crate::request::DeleteTopicInBrokerRequest`]).
        DeleteTopicInBroker = 215 => "DELETE_TOPIC_IN_BROKER",
        /// Delete a topic's route on a name server
        /// ([`crate::request::DeleteTopicInNamesrvRequest`]).
        DeleteTopicInNamesrv = 216 => "DELETE_TOPIC_IN_NAMESRV",
        /// Broker → consumer: move to these offsets now
        /// ([`crate::request::ResetConsumerClientOffsetRequest`]).
        ResetConsumerClientOffset = 220 => "RESET_CONSUMER_CLIENT_OFFSET",
        /// Reset a group's offsets to a time ([`crate::request::ResetOffsetRequest`]).
        InvokeBrokerToResetOffset = 222 => "INVOKE_BROKER_TO_RESET_OFFSET",
        /// Send many messages of one topic ([`crate::request::SendBatchMessageRequest`]).
        SendBatchMessage = 320 => "SEND_BATCH_MESSAGE",
        /// Pop messages with an invisible time ([`crate::request::PopMessageRequest`]).
        PopMessage = 200050 => "POP_MESSAGE",
        /// Ack a popped message ([`crate::request::AckMessageRequest`]).
        AckMessage = 200051 => "ACK_MESSAGE",
        /// Change a popped message's invisible time
        /// ([`crate::request::ChangeInvisibleTimeRequest`]).
        ChangeMessageInvisibleTime = 200053 => "CHANGE_MESSAGE_INVISIBLETIME",
        /// Ack many popped messages of one topic
        /// ([`crate::request::BatchAckMessageRequest`]).
        BatchAckMessage = 200151 => "BATCH_ACK_MESSAGE",
        /// Resend a group's dead letters (actormq's;
        /// [`crate::request::ResendDeadLettersRequest`]).
        ResendDeadLetters = 10001 => "RESEND_DEAD_LETTERS",
        /// Make a slave the master (actormq's;
        /// [`crate::request::PromoteBrokerRequest`]).
        PromoteBroker = 10002 => "PROMOTE_BROKER",
        /// Messages of one queue from a queue offset, for admin views
        /// (actormq's; [`crate::request::ViewMessagesByQueueOffsetRequest`]).
        ViewMessagesByQueueOffset = 10003 => "VIEW_MESSAGES_BY_QUEUE_OFFSET",
    }
}

wire_codes! {
    /// The outcome carried by a reply. Numbers are RocketMQ's `ResponseCode`s
    /// where RocketMQ has them; actormq-only codes start at 10000.
    pub enum ResponseCode / UnknownResponseCode {
        /// The request succeeded.
        Success = 0 => "SUCCESS",
        /// Unexpected server-side failure.
        SystemError = 1 => "SYSTEM_ERROR",
        /// The server is overloaded (flow control); do not retry at once.
        SystemBusy = 2 => "SYSTEM_BUSY",
        /// The request code is unknown to the server.
        RequestCodeNotSupported = 3 => "REQUEST_CODE_NOT_SUPPORTED",
        /// A transaction operation failed.
        TransactionFailed = 4 => "TRANSACTION_FAILED",
        /// Stored, but not flushed to disk in time (sync flush).
        FlushDiskTimeout = 10 => "FLUSH_DISK_TIMEOUT",
        /// Stored, but no slave available (sync replication).
        SlaveNotAvailable = 11 => "SLAVE_NOT_AVAILABLE",
        /// Stored, but the slave did not confirm in time (sync replication).
        FlushSlaveTimeout = 12 => "FLUSH_SLAVE_TIMEOUT",
        /// The message breaks a rule (size, batch rules, ...).
        MessageIllegal = 13 => "MESSAGE_ILLEGAL",
        /// The service is not available (e.g. a slave asked to write).
        ServiceNotAvailable = 14 => "SERVICE_NOT_AVAILABLE",
        /// The peer's protocol major version is unknown.
        VersionNotSupported = 15 => "VERSION_NOT_SUPPORTED",
        /// The caller lacks permission (topic perm or ACL).
        NoPermission = 16 => "NO_PERMISSION",
        /// The topic does not exist.
        TopicNotExist = 17 => "TOPIC_NOT_EXIST",
        /// The topic already exists.
        TopicExistAlready = 18 => "TOPIC_EXIST_ALREADY",
        /// No new message at the requested offset.
        PullNotFound = 19 => "PULL_NOT_FOUND",
        /// Pull again at once (e.g. everything filtered out).
        PullRetryImmediately = 20 => "PULL_RETRY_IMMEDIATELY",
        /// The requested offset is out of range; use `next_begin_offset`.
        PullOffsetMoved = 21 => "PULL_OFFSET_MOVED",
        /// A query found nothing.
        QueryNotFound = 22 => "QUERY_NOT_FOUND",
        /// The subscription expression does not parse.
        SubscriptionParseFailed = 23 => "SUBSCRIPTION_PARSE_FAILED",
        /// The group has no subscription for the topic.
        SubscriptionNotExist = 24 => "SUBSCRIPTION_NOT_EXIST",
        /// The consumer group does not exist.
        SubscriptionGroupNotExist = 26 => "SUBSCRIPTION_GROUP_NOT_EXIST",
        /// A request field is malformed or out of range.
        InvalidParameter = 29 => "INVALID_PARAMETER",
        /// No message to pop.
        NoMessage = 208 => "NO_MESSAGE",
        /// Too many pop requests held.
        PollingFull = 209 => "POLLING_FULL",
        /// A held pop request timed out.
        PollingTimeout = 210 => "POLLING_TIMEOUT",
        /// Broker-side flow control refused the request.
        FlowControl = 215 => "FLOW_CONTROL",
        /// actormq: the frame itself is malformed (length fields); the
        /// connection is closed after this reply.
        MalformedFrame = 10000 => "MALFORMED_FRAME",
        /// actormq: an idempotent producer resent a message the broker
        /// already stored (producer id + sequence seen before).
        DuplicateMessage = 10001 => "DUPLICATE_MESSAGE",
        /// actormq: an idempotent producer's sequence number is older than
        /// the broker's dedup window for its (producer, topic, queue): the
        /// broker can no longer tell whether it is a duplicate, so it
        /// neither stores nor answers it as stored. Not retried.
        SequenceOutOfWindow = 10002 => "SEQUENCE_OUT_OF_WINDOW",
        /// actormq: a simple consumer's ack or change of invisible time
        /// quoted a receipt handle that is malformed or no longer valid
        /// (its invisible time passed and the message is visible again,
        /// it was acked already, or its invisible time was changed and a
        /// new handle replaced it).
        InvalidReceiptHandle = 10010 => "INVALID_RECEIPT_HANDLE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocketmq_numbers() {
        assert_eq!(RequestCode::SendMessage.as_u32(), 10);
        assert_eq!(RequestCode::GetRouteInfoByTopic.as_u32(), 105);
        assert_eq!(RequestCode::PopMessage.as_u32(), 200_050);
        assert_eq!(ResponseCode::PullOffsetMoved.as_u32(), 21);
        assert_eq!(
            ResponseCode::VersionNotSupported.name(),
            "VERSION_NOT_SUPPORTED"
        );
    }

    #[test]
    fn numbers_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in RequestCode::ALL {
            assert!(seen.insert(c.as_u32()), "duplicate {c}");
            assert_eq!(RequestCode::try_from(c.as_u32()), Ok(*c));
        }
        seen.clear();
        for c in ResponseCode::ALL {
            assert!(seen.insert(c.as_u32()), "duplicate {c}");
            assert_eq!(ResponseCode::try_from(c.as_u32()), Ok(*c));
        }
    }

    #[test]
    fn unknown_numbers_are_typed_errors() {
        assert_eq!(
            RequestCode::try_from(13),
            Err(Error::UnknownRequestCode(13))
        );
        assert_eq!(
            ResponseCode::try_from(9999),
            Err(Error::UnknownResponseCode(9999))
        );
    }
}
