//! The one place where a storage error becomes a response code.
//!
//! Every data-path actor ([`super::CommitLogActor`], [`super::PullHold`],
//! [`super::QueryService`], ...) reports store failures through this
//! `From` impl, so a client always sees the same code for the same cause.

use actormq_protocol::ResponseCode;
use actormq_store::Error;

use crate::runtime::ServiceError;

impl From<Error> for ServiceError {
    fn from(err: Error) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let e = ServiceError::from(Error::DiskFull);
        assert_eq!(e.code, ResponseCode::ServiceNotAvailable);
        assert!(e.remark.contains("disk full"));
        let e = ServiceError::from(Error::MessageTooLarge { size: 10, max: 5 });
        assert_eq!(e.code, ResponseCode::MessageIllegal);
        assert_eq!(
            ServiceError::from(Error::InvalidArgument("x".into())).code,
            ResponseCode::MessageIllegal
        );
        assert_eq!(
            ServiceError::from(Error::Closed).code,
            ResponseCode::ServiceNotAvailable
        );
        assert_eq!(
            ServiceError::from(Error::Io(std::io::Error::other("boom"))).code,
            ResponseCode::SystemError
        );
    }
}
