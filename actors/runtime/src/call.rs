//! `Call<R>`: the one message shape that may cross nodes.
//!
//! Every request of the wire protocol ([`Request`]), and every custom
//! request a user defines with [`Rpc`], becomes an actor message by
//! wrapping it: `Call<RegisterBrokerRequest>` is answered with
//! `Result<Reply<RegisterBrokerResponse>, ServiceError>`. An actor that
//! serves a code implements `Handler<Call<R>>`; a sender holds a
//! `Recipient<Call<R>>` that is either that actor (same process) or a
//! remote proxy that sends the same request as a frame to another node.
//! The sender cannot tell which, and that is what lets one set of actors be
//! arranged into name-server, broker or combined nodes.
//!
//! [`ServiceError`] is the single place where a failure becomes a response
//! code: every actor reports failures as a `ServiceError`, and the session
//! writes `code` and `remark` into the reply header.

use std::net::SocketAddr;
use std::time::Instant;

use actix::Message;
use actormq_protocol::ResponseCode;
use actormq_protocol::request::Request;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Anything that can travel as a request: its wire code and reply type.
///
/// Every protocol [`Request`] is an `Rpc` already. A custom actor defines
/// its own request type and implements `Rpc` with a code in
/// [`USER_CODES`], so its requests are routed and proxied like built-ins.
pub trait Rpc: Serialize + DeserializeOwned + Send + 'static {
    /// The request code on the wire.
    const CODE: u32;
    /// The typed fields of a successful reply.
    type Response: Serialize + DeserializeOwned + Send + 'static;
}

impl<R: Request + Send + 'static> Rpc for R
where
    R::Response: Send + 'static,
{
    const CODE: u32 = R::CODE.as_u32();
    type Response = R::Response;
}

/// Request codes reserved for user-defined requests (custom actors).
/// Built-in codes never enter this range.
pub const USER_CODES: std::ops::Range<u32> = 1_000_000..2_000_000;

/// Where a call came from when it arrived over the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The session's connection id (unique within the process).
    pub conn_id: u64,
    /// The peer's address.
    pub peer: SocketAddr,
}

/// A typed request with its raw body (message bytes, a batch, or empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Call<R> {
    /// The typed fields.
    pub req: R,
    /// The raw body that travels beside the fields (never re-encoded).
    pub body: Bytes,
    /// The connection it arrived on; `None` for an in-process sender.
    pub origin: Option<Origin>,
    /// When its frame was decoded by the session (`None` in process).
    /// Flow control measures a request's wait in the broker from here, so
    /// time spent in mailboxes counts.
    pub received_at: Option<Instant>,
}

impl<R> Call<R> {
    /// A call without body.
    pub fn new(req: R) -> Self {
        Self::with_body(req, Bytes::new())
    }

    /// A call carrying `body` (a message body or an encoded batch).
    pub fn with_body(req: R, body: Bytes) -> Self {
        Self {
            req,
            body,
            origin: None,
            received_at: None,
        }
    }

    /// The same call, marked as arrived on `origin`.
    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = Some(origin);
        self
    }

    /// The connection id it arrived on, if any.
    pub fn conn_id(&self) -> Option<u64> {
        self.origin.map(|o| o.conn_id)
    }
}

impl<R: Rpc> Message for Call<R> {
    type Result = Result<Reply<R::Response>, ServiceError>;
}

/// A successful answer: typed fields and a raw body (e.g. pulled messages).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<T> {
    /// The typed fields of the reply.
    pub fields: T,
    /// The raw body of the reply.
    pub body: Bytes,
    /// The response code; `SUCCESS` unless a non-error status is carried
    /// this way (e.g. `FLUSH_DISK_TIMEOUT` on a stored send).
    pub code: ResponseCode,
}

impl<T> Reply<T> {
    /// `SUCCESS` with `fields` and no body.
    pub fn ok(fields: T) -> Self {
        Self {
            fields,
            body: Bytes::new(),
            code: ResponseCode::Success,
        }
    }

    /// `SUCCESS` with `fields` and `body`.
    pub fn with_body(fields: T, body: Bytes) -> Self {
        Self {
            fields,
            body,
            code: ResponseCode::Success,
        }
    }

    /// The same reply under another response code.
    pub fn with_code(mut self, code: ResponseCode) -> Self {
        self.code = code;
        self
    }
}

/// A failed call: the response code and remark that reach the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {remark}")]
pub struct ServiceError {
    /// The response code.
    pub code: ResponseCode,
    /// Human-readable detail.
    pub remark: String,
}

impl ServiceError {
    /// An error with `code` and `remark`.
    pub fn new(code: ResponseCode, remark: impl Into<String>) -> Self {
        Self {
            code,
            remark: remark.into(),
        }
    }

    /// `SYSTEM_ERROR` with `remark`.
    pub fn system(remark: impl Into<String>) -> Self {
        Self::new(ResponseCode::SystemError, remark)
    }

    /// `SYSTEM_BUSY` with `remark` (flow control; producers do not retry).
    pub fn busy(remark: impl Into<String>) -> Self {
        Self::new(ResponseCode::SystemBusy, remark)
    }

    /// `TOPIC_NOT_EXIST` for `topic`.
    pub fn topic_not_exist(topic: &str) -> Self {
        Self::new(
            ResponseCode::TopicNotExist,
            format!("topic {topic} does not exist"),
        )
    }
}

impl From<actormq_protocol::Error> for ServiceError {
    fn from(err: actormq_protocol::Error) -> Self {
        Self::new(err.response_code(), err.to_string())
    }
}

impl From<actix::MailboxError> for ServiceError {
    fn from(err: actix::MailboxError) -> Self {
        // The serving actor is restarting (closed mailbox) or overloaded.
        Self::new(
            ResponseCode::SystemBusy,
            format!("service unavailable: {err}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use actormq_protocol::request::GetMaxOffsetRequest;

    use super::*;

    #[test]
    fn protocol_errors_keep_their_response_code() {
        let err = actormq_protocol::validate_topic("bad topic!").unwrap_err();
        let code = err.response_code();
        assert_eq!(ServiceError::from(err).code, code);
    }

    #[test]
    fn built_in_codes_stay_out_of_the_user_range() {
        for code in actormq_protocol::RequestCode::ALL {
            assert!(
                !USER_CODES.contains(&code.as_u32()),
                "{code} is in the user range"
            );
        }
        assert_eq!(<GetMaxOffsetRequest as Rpc>::CODE, 30);
    }

    #[test]
    fn call_builders() {
        let call = Call::new(GetMaxOffsetRequest {
            topic: "t".into(),
            queue_id: 1,
        });
        assert!(call.body.is_empty());
        assert_eq!(Reply::ok(5).code, ResponseCode::Success);
        assert_eq!(
            Reply::ok(5).with_code(ResponseCode::FlushDiskTimeout).code,
            ResponseCode::FlushDiskTimeout
        );
        assert_eq!(ServiceError::busy("x").code, ResponseCode::SystemBusy);
    }
}
