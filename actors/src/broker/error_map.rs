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
        let e = receipt_handle_error(HandleError::Stale);
        assert_eq!(e.code, ResponseCode::InvalidReceiptHandle);
        assert!(e.remark.contains("stale"));
    }
}
