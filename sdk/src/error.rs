//! [`ClientError`]: every failure the SDK reports.

use actormq_protocol::ResponseCode;
use actormq_runtime::ServiceError;

/// A failed client operation (send, route lookup, admin call).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No reply within the timeout (send timeout or call timeout).
    #[error("timeout: {0}")]
    Timeout(String),
    /// No route for the topic: no name server knows it and no broker could
    /// auto-create it.
    #[error("no route for topic {topic}")]
    NoRoute {
        /// The topic.
        topic: String,
    },
    /// A broker or name server refused the request, or the connection to
    /// it failed (`code` is then `SYSTEM_ERROR`).
    #[error("{code}: {remark}")]
    Broker {
        /// The response code.
        code: ResponseCode,
        /// The server's (or the connection's) remark.
        remark: String,
    },
    /// The broker a send went to did not answer (down, restarting or
    /// unreachable), and no other broker could take the message.
    #[error("broker {broker} ({addr}) is unreachable: {cause}")]
    BrokerUnreachable {
        /// The broker name.
        broker: String,
        /// The address tried.
        addr: String,
        /// The last failure (connect refused, connection lost, timeout...).
        cause: String,
    },
    /// No name server answered.
    #[error("all name servers are down")]
    AllNamesrvsDown,
    /// An address given as a name server answered, but does not serve
    /// name-server requests (e.g. a broker port given to `-n`).
    #[error("{addr} is not a name server (it does not serve name-server requests; a broker port?)")]
    NotANameServer {
        /// The address.
        addr: String,
    },
    /// The message (body + properties) exceeds the max message size.
    #[error("message too large: {size} bytes > {max}")]
    MessageTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Bad input: an invalid topic, address, config or argument.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The client was shut down.
    #[error("client shut down")]
    Shutdown,
}

impl ClientError {
    /// The response code, for [`ClientError::Broker`].
    pub fn code(&self) -> Option<ResponseCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether this is a flow-control refusal (`SYSTEM_BUSY`), which a
    /// producer does not retry.
    pub fn is_flow_control(&self) -> bool {
        self.code() == Some(ResponseCode::SystemBusy)
    }
}

impl From<ServiceError> for ClientError {
    fn from(err: ServiceError) -> Self {
        if err.code == ResponseCode::SystemError && err.remark.starts_with("timeout") {
            return ClientError::Timeout(err.remark);
        }
        if err.code == ResponseCode::MessageIllegal {
            return ClientError::Invalid(err.remark);
        }
        ClientError::Broker {
            code: err.code,
            remark: err.remark,
        }
    }
}

impl From<actormq_protocol::Error> for ClientError {
    fn from(err: actormq_protocol::Error) -> Self {
        match err {
            actormq_protocol::Error::MessageTooLarge { size, max } => {
                ClientError::MessageTooLarge { size, max }
            }
            other => ClientError::Invalid(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_map_to_client_errors() {
        let t = ClientError::from(ServiceError::system("timeout after 3s"));
        assert!(matches!(t, ClientError::Timeout(_)));
        let busy = ClientError::from(ServiceError::busy("full"));
        assert!(busy.is_flow_control());
        let lost = ClientError::from(ServiceError::system("connection lost"));
        assert_eq!(lost.code(), Some(ResponseCode::SystemError));
        assert!(!lost.is_flow_control());
    }

    #[test]
    fn too_large_keeps_sizes() {
        let e = ClientError::from(actormq_protocol::Error::MessageTooLarge { size: 10, max: 5 });
        assert_eq!(e, ClientError::MessageTooLarge { size: 10, max: 5 });
    }
}
