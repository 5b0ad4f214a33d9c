//! The one place where a storage error becomes a response code.
//!
//! (And, in [`filter_error`], where a refused subscription does.)
//!
//! Every data-path actor ([`super::CommitLogActor`], [`super::PullHold`],
//! [`super::QueryService`], ...) reports store failures through
//! [`store_error`] (or [`StoreResultExt::or_reply`]), so a client always
//! sees the same code for the same cause. Refusals about consumer groups
//! are made here too ([`subscription_group_not_exist`]).

use actormq_protocol::ResponseCode;
use actormq_protocol::filter::FilterError;
use actormq_store::Error;

use crate::runtime::ServiceError;

/// The response a client sees for a store failure.
pub fn store_error(err: Error) -> ServiceError {
    {
        let code = match &err {
            // RocketMQ answers a full disk with SERVICE_NOT_AVAILABLE
            // ("service not available now, maybe disk full").
            Error::DiskFull => {
                return ServiceError::new(
                    ResponseCode::ServiceNotAvailable,
                    "disk full: the broker cannot store messages",
                );
            }
            Error::MessageTooLarge { .. } | Error::InvalidArgument(_) => {
                ResponseCode::MessageIllegal
            }
            Error::Closed => ResponseCode::ServiceNotAvailable,
            _ => ResponseCode::SystemError,
        };
        ServiceError::new(code, err.to_string())
    }
}

/// Whether a broker-internal put ([`super::commit_log::PutInternal`])
/// failed for good: the message's topic or queue is gone, or the message
/// cannot be stored as it is. The schedule, timer and pop services then
/// log it and skip it; any other failure (busy, restarting, disk full) is
/// retried.
pub fn put_failed_for_good(e: &ServiceError) -> bool {
    matches!(
        e.code,
        ResponseCode::TopicNotExist
            | ResponseCode::InvalidParameter
            | ResponseCode::NoPermission
            | ResponseCode::MessageIllegal
    )
}

/// The refusal of a request naming a consumer group the broker has no
/// config for (RocketMQ's `SUBSCRIPTION_GROUP_NOT_EXIST`).
pub fn subscription_group_not_exist(group: &str) -> ServiceError {
    ServiceError::new(
        ResponseCode::SubscriptionGroupNotExist,
        format!(
            "subscription group {group} does not exist on this broker \
             (create it with `actormq admin group create -g {group}`, \
             or enable broker.auto_create_subscription_group)"
        ),
    )
}

/// The response a client sees for a refused subscription expression:
/// `SUBSCRIPTION_PARSE_FAILED`, or, for SQL92 on a broker with
/// `enable_property_filter = false`, `SYSTEM_ERROR` with RocketMQ's remark
/// ("The broker does not support consumer to filter message by SQL92").
pub fn filter_error(err: FilterError) -> ServiceError {
    let code = match err {
        FilterError::SqlDisabled => ResponseCode::SystemError,
        _ => ResponseCode::SubscriptionParseFailed,
    };
    ServiceError::new(code, err.to_string())
}

/// Why a simple consumer's receipt handle is refused
/// ([`receipt_handle_error`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// Not a receipt handle, or one of another message than named.
    #[error("malformed receipt handle {0:?}")]
    Malformed(String),
    /// Its invisible time passed: the message is visible again (and will
    /// be, or was, delivered again with a new handle).
    #[error("receipt handle expired at {visible_at_ms} ms: the message is visible again")]
    Expired {
        /// When it became visible again.
        visible_at_ms: u64,
    },
    /// Acked already, or replaced by a change of invisible time.
    #[error("stale receipt handle: the delivery was acked or its invisible time changed")]
    Stale,
}

/// The response a simple consumer sees for a refused receipt handle:
/// `INVALID_RECEIPT_HANDLE` with the reason as remark.
pub fn receipt_handle_error(err: HandleError) -> ServiceError {
    ServiceError::new(ResponseCode::InvalidReceiptHandle, err.to_string())
}

/// RocketMQ 5 gRPC status codes (`apache.rocketmq.v2.Code`) that
/// [`grpc_code`] and the gRPC front door (`actormq-grpc`) answer with.
/// The numbers are the `.proto`'s; `actormq-grpc` tests them against the
/// generated enum.
pub mod grpc {
    /// `OK`.
    pub const OK: i32 = 20_000;
    /// `BAD_REQUEST`.
    pub const BAD_REQUEST: i32 = 40_000;
    /// `ILLEGAL_TOPIC`.
    pub const ILLEGAL_TOPIC: i32 = 40_002;
    /// `ILLEGAL_CONSUMER_GROUP`.
    pub const ILLEGAL_CONSUMER_GROUP: i32 = 40_003;
    /// `ILLEGAL_MESSAGE_GROUP`.
    pub const ILLEGAL_MESSAGE_GROUP: i32 = 40_006;
    /// `INVALID_TRANSACTION_ID`.
    pub const INVALID_TRANSACTION_ID: i32 = 40_008;
    /// `ILLEGAL_FILTER_EXPRESSION`.
    pub const ILLEGAL_FILTER_EXPRESSION: i32 = 40_010;
    /// `ILLEGAL_DELIVERY_TIME`.
    pub const ILLEGAL_DELIVERY_TIME: i32 = 40_012;
    /// `INVALID_RECEIPT_HANDLE`.
    pub const INVALID_RECEIPT_HANDLE: i32 = 40_013;
    /// `ILLEGAL_OFFSET`.
    pub const ILLEGAL_OFFSET: i32 = 40_019;
    /// `FORBIDDEN`.
    pub const FORBIDDEN: i32 = 40_300;
    /// `MESSAGE_NOT_FOUND`.
    pub const MESSAGE_NOT_FOUND: i32 = 40_401;
    /// `TOPIC_NOT_FOUND`.
    pub const TOPIC_NOT_FOUND: i32 = 40_402;
    /// `CONSUMER_GROUP_NOT_FOUND`.
    pub const CONSUMER_GROUP_NOT_FOUND: i32 = 40_403;
    /// `MESSAGE_BODY_TOO_LARGE`.
    pub const MESSAGE_BODY_TOO_LARGE: i32 = 41_301;
    /// `PRECONDITION_FAILED`.
    pub const PRECONDITION_FAILED: i32 = 42_800;
    /// `TOO_MANY_REQUESTS`.
    pub const TOO_MANY_REQUESTS: i32 = 42_900;
    /// `INTERNAL_SERVER_ERROR`.
    pub const INTERNAL_SERVER_ERROR: i32 = 50_001;
    /// `HA_NOT_AVAILABLE`.
    pub const HA_NOT_AVAILABLE: i32 = 50_002;
    /// `NOT_IMPLEMENTED`.
    pub const NOT_IMPLEMENTED: i32 = 50_100;
    /// `MASTER_PERSISTENCE_TIMEOUT`.
    pub const MASTER_PERSISTENCE_TIMEOUT: i32 = 50_401;
    /// `SLAVE_PERSISTENCE_TIMEOUT`.
    pub const SLAVE_PERSISTENCE_TIMEOUT: i32 = 50_402;
    /// `VERSION_UNSUPPORTED`.
    pub const VERSION_UNSUPPORTED: i32 = 50_501;
}

/// The one table from actormq's response codes to RocketMQ 5 gRPC status
/// codes (`Status.code` of every gRPC response; [`grpc`]).
pub fn grpc_code(code: ResponseCode) -> i32 {
    use ResponseCode as R;
    match code {
        R::Success => grpc::OK,
        R::SystemError | R::ServiceNotAvailable => grpc::INTERNAL_SERVER_ERROR,
        R::SystemBusy | R::FlowControl | R::PollingFull => grpc::TOO_MANY_REQUESTS,
        R::RequestCodeNotSupported => grpc::NOT_IMPLEMENTED,
        R::TransactionFailed => grpc::INVALID_TRANSACTION_ID,
        R::FlushDiskTimeout => grpc::MASTER_PERSISTENCE_TIMEOUT,
        R::SlaveNotAvailable => grpc::HA_NOT_AVAILABLE,
        R::FlushSlaveTimeout => grpc::SLAVE_PERSISTENCE_TIMEOUT,
        R::MessageIllegal | R::InvalidParameter | R::MalformedFrame | R::TopicExistAlready => {
            grpc::BAD_REQUEST
        }
        R::VersionNotSupported => grpc::VERSION_UNSUPPORTED,
        R::NoPermission => grpc::FORBIDDEN,
        R::TopicNotExist => grpc::TOPIC_NOT_FOUND,
        R::PullNotFound
        | R::PullRetryImmediately
        | R::QueryNotFound
        | R::NoMessage
        | R::PollingTimeout => grpc::MESSAGE_NOT_FOUND,
        R::PullOffsetMoved => grpc::ILLEGAL_OFFSET,
        R::SubscriptionParseFailed => grpc::ILLEGAL_FILTER_EXPRESSION,
        R::SubscriptionNotExist | R::SubscriptionGroupNotExist => grpc::CONSUMER_GROUP_NOT_FOUND,
        R::DuplicateMessage | R::SequenceOutOfWindow => grpc::PRECONDITION_FAILED,
        R::InvalidReceiptHandle => grpc::INVALID_RECEIPT_HANDLE,
    }
}

/// `?`-friendly mapping of store results to replies.
pub trait StoreResultExt<T> {
    /// Maps the error through [`store_error`].
    fn or_reply(self) -> Result<T, ServiceError>;
}

impl<T> StoreResultExt<T> for Result<T, Error> {
    fn or_reply(self) -> Result<T, ServiceError> {
        self.map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let e = store_error(Error::DiskFull);
        assert_eq!(e.code, ResponseCode::ServiceNotAvailable);
        assert!(e.remark.contains("disk full"));
        let e = store_error(Error::MessageTooLarge { size: 10, max: 5 });
        assert_eq!(e.code, ResponseCode::MessageIllegal);
        assert_eq!(
            store_error(Error::InvalidArgument("x".into())).code,
            ResponseCode::MessageIllegal
        );
        assert_eq!(
            store_error(Error::Closed).code,
            ResponseCode::ServiceNotAvailable
        );
        assert_eq!(
            store_error(Error::Io(std::io::Error::other("boom"))).code,
            ResponseCode::SystemError
        );
        assert_eq!(grpc_code(ResponseCode::Success), grpc::OK);
        assert_eq!(grpc_code(ResponseCode::TopicNotExist), 40_402);
        assert_eq!(grpc_code(ResponseCode::SystemBusy), 42_900);
        assert_eq!(grpc_code(ResponseCode::NoMessage), 40_401);
        assert_eq!(grpc_code(ResponseCode::InvalidReceiptHandle), 40_013);
        assert_eq!(grpc_code(ResponseCode::FlushDiskTimeout), 50_401);
        let e = receipt_handle_error(HandleError::Stale);
        assert_eq!(e.code, ResponseCode::InvalidReceiptHandle);
        assert!(e.remark.contains("stale"));
    }
}
