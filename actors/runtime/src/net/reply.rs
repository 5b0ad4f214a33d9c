//! The one rule that turns a service's answer into a reply frame (server
//! side, [`reply_frame`]) and a reply frame back into the answer (client
//! side, [`decode_reply`]), so a local and a remote recipient answer alike.
//!
//! | service answer | reply frame | what the remote caller gets |
//! |---|---|---|
//! | `Ok(Reply { code: SUCCESS, .. })` | `SUCCESS`, fields, body | `Ok(Reply)` |
//! | `Ok(Reply { code, .. })`, `code` a stored status ([`STORED_STATUSES`]) | `code`, fields, body | `Ok(Reply { code })` |
//! | `Ok(Reply { code, .. })`, `code` a pull status ([`PULL_STATUSES`]) | `code`, fields, body | `Ok(Reply { code })` |
//! | `Ok(Reply { code, .. })`, any other code | `code`, fields, body | `Err(ServiceError { code, remark })` |
//! | `Err(ServiceError { code, remark })` | `code`, remark, no fields | `Err(ServiceError { code, remark })` |
//! | mailbox closed / full (service restarting) | `SYSTEM_BUSY` | `Err(SYSTEM_BUSY)` |
//!
//! A stored status (`FLUSH_DISK_TIMEOUT`, `FLUSH_SLAVE_TIMEOUT`,
//! `SLAVE_NOT_AVAILABLE`) means "the message is stored, but a durability
//! goal was missed": the reply still carries the send result, so it is an
//! `Ok` with that code, as long as its fields decode. A pull status
//! (`PULL_NOT_FOUND`, `PULL_RETRY_IMMEDIATELY`, `PULL_OFFSET_MOVED`) is an
//! answer too: its fields (`next_begin_offset`, `min_offset`,
//! `max_offset`) tell the consumer where to go on, so they reach a remote
//! caller exactly as a local one. Services should only put those codes (or
//! `SUCCESS`) in an `Ok` reply.

use actix::MailboxError;
use actormq_protocol::{Frame, ResponseCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::call::{Reply, ServiceError};

/// Non-error statuses: the request succeeded in part (the message is
/// stored) and the reply carries the usual fields.
pub const STORED_STATUSES: [ResponseCode; 3] = [
    ResponseCode::FlushDiskTimeout,
    ResponseCode::FlushSlaveTimeout,
    ResponseCode::SlaveNotAvailable,
];

/// Pull outcomes that are answers, not failures: the reply carries the
/// pull's fields (where to pull next, the queue's min and max offsets).
pub const PULL_STATUSES: [ResponseCode; 3] = [
    ResponseCode::PullNotFound,
    ResponseCode::PullRetryImmediately,
    ResponseCode::PullOffsetMoved,
];

/// Builds the reply frame for request `request_id` from what the serving
/// actor answered (or why it could not).
pub fn reply_frame<T: Serialize>(
    request_id: u64,
    answer: Result<Result<Reply<T>, ServiceError>, MailboxError>,
) -> Frame {
    match answer {
        Ok(Ok(reply)) => Frame::response(request_id, reply.code, &reply.fields, reply.body)
            .unwrap_or_else(|err| Frame::from_error(request_id, &err)),
        Ok(Err(err)) => Frame::error(request_id, err.code, err.remark),
        Err(mailbox) => {
            let err = ServiceError::from(mailbox);
            Frame::error(request_id, err.code, err.remark)
        }
    }
}

/// Turns a reply frame into what the caller of a remote recipient gets;
/// see the module docs for the rule.
pub fn decode_reply<T: DeserializeOwned>(frame: &Frame) -> Result<Reply<T>, ServiceError> {
    let remark = || frame.header.remark.clone().unwrap_or_default();
    let code = match frame.response_code() {
        Ok(code) => code,
        Err(_) => {
            return Err(ServiceError::system(format!(
                "unknown response code {}: {}",
                frame.header.code,
                remark()
            )));
        }
    };
    let stored = STORED_STATUSES.contains(&code) || PULL_STATUSES.contains(&code);
    if code != ResponseCode::Success && !stored {
        return Err(ServiceError::new(code, remark()));
    }
    match frame.decode_fields::<T>() {
        Ok(fields) => Ok(Reply {
            fields,
            body: frame.body.clone(),
            code,
        }),
        Err(_) if stored => Err(ServiceError::new(code, remark())),
        Err(err) => Err(ServiceError::new(
            err.response_code(),
            format!("undecodable reply fields: {err}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use actormq_protocol::request::OffsetResponse;
    use bytes::Bytes;

    use super::*;

    fn round_trip(
        answer: Result<Result<Reply<OffsetResponse>, ServiceError>, MailboxError>,
    ) -> Result<Reply<OffsetResponse>, ServiceError> {
        let frame = reply_frame(7, answer);
        assert_eq!(frame.header.request_id, 7);
        assert!(frame.is_response());
        decode_reply(&frame)
    }

    #[test]
    fn success_and_stored_statuses_are_ok() {
        let r = Reply::with_body(OffsetResponse { offset: 3 }, Bytes::from_static(b"x"));
        assert_eq!(round_trip(Ok(Ok(r.clone()))), Ok(r.clone()));
        let stored = r.with_code(ResponseCode::FlushDiskTimeout);
        assert_eq!(round_trip(Ok(Ok(stored.clone()))), Ok(stored));
    }

    #[test]
    fn errors_keep_code_and_remark() {
        let err = ServiceError::topic_not_exist("t");
        assert_eq!(round_trip(Ok(Err(err.clone()))), Err(err));
        let busy = round_trip(Err(MailboxError::Closed)).unwrap_err();
        assert_eq!(busy.code, ResponseCode::SystemBusy);
        let odd = Reply::ok(OffsetResponse { offset: 1 }).with_code(ResponseCode::SystemError);
        assert_eq!(
            round_trip(Ok(Ok(odd))).unwrap_err().code,
            ResponseCode::SystemError
        );
    }

    #[test]
    fn pull_statuses_keep_their_typed_fields() {
        use actormq_protocol::request::PullMessageResponse;
        for code in PULL_STATUSES {
            let fields = PullMessageResponse {
                next_begin_offset: 42,
                min_offset: 7,
                max_offset: 99,
                ..PullMessageResponse::default()
            };
            let frame = reply_frame(3, Ok(Ok(Reply::ok(fields.clone()).with_code(code))));
            let got = decode_reply::<PullMessageResponse>(&frame)
                .unwrap_or_else(|e| panic!("{code:?}: {e:?}"));
            assert_eq!(got.code, code);
            assert_eq!(got.fields, fields, "{code:?}");
        }
        // An old peer's pull status without fields is still an error with its code.
        let bare = Frame::error(1, ResponseCode::PullOffsetMoved, "moved");
        let err = decode_reply::<PullMessageResponse>(&bare).unwrap_err();
        assert_eq!(err.code, ResponseCode::PullOffsetMoved);
    }

    #[test]
    fn stored_status_without_fields_is_an_error() {
        let f = Frame::error(1, ResponseCode::FlushDiskTimeout, "slow disk");
        let err = decode_reply::<OffsetResponse>(&f).unwrap_err();
        assert_eq!(
            err,
            ServiceError::new(ResponseCode::FlushDiskTimeout, "slow disk")
        );
    }
}
