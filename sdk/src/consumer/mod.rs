//! Consumers: [`PullConsumer`] (explicit queues and offsets) and
//! [`PushConsumer`] (a consumer group; the SDK pulls, rebalances and
//! commits under the hood and calls a listener).
//!
//! Both must be created inside a running actix `System` (their broker
//! connections are supervised
//! [`ClientSession`](actormq_runtime::net::ClientSession) actors on the
//! current arbiter).

use actormq_runtime::ServiceError;

mod client;
pub mod offset_store;
pub mod orderly;
pub mod process_queue;
mod pull;
mod push;
mod simple;
mod tags;

pub use actormq_protocol::StoredView;
pub use pull::{PullConsumer, PullResult, PullStatus};
pub use push::{
    ConsumeFrom, ConsumeResult, ConsumerState, Listener, MessageModelConfig, PushConsumer,
    PushConsumerBuilder, PushConsumerConfig, ViewListener,
};
pub use simple::{AckRefused, Receipt, Received, SimpleConsumer};
pub use tags::TagFilter;

/// What can go wrong in a consumer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// A broker or name server answered with an error (or could not be
    /// reached).
    #[error("service: {0}")]
    Service(#[from] ServiceError),
    /// Bad configuration (addresses, expression, missing listener...).
    #[error("config: {0}")]
    Config(String),
    /// No route to a topic or broker.
    #[error("no route: {0}")]
    NoRoute(String),
    /// A feature that does not exist yet.
    #[error("not available yet: {0}")]
    NotAvailable(String),
    /// A client-level failure (routes, name servers).
    #[error("{0}")]
    Client(#[from] crate::error::ClientError),
    /// Local offset file I/O (broadcasting).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The consumer was shut down.
    #[error("consumer is shut down")]
    Shutdown,
    /// The consumer's services could not be (re)started: see
    /// [`ConsumerState::Failed`].
    #[error("{0}")]
    Failed(String),
}
