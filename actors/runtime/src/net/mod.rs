//! The network half of the actor runtime: serving actors over TCP and
//! reaching remote actors as if they were local.
//!
//! - [`Router`] maps request codes to recipients; a [`Listener`] accepts
//!   connections and runs one [`Session`] actor per connection, which
//!   decodes frames, routes them and writes replies (pipelined, with an
//!   in-flight cap and a write-buffer cap per connection).
//! - [`RemoteClient`] is the proxy side: one actor per remote address whose
//!   `Recipient<Call<R>>` behaves like the serving actor's own.
//! - Server push: [`PushTo`] (through the listener, by connection id) or
//!   [`Push`] (to a session) sends a oneway request to a connected peer; a
//!   `RemoteClient` built [`with_router`](RemoteClient::with_router) serves
//!   such requests.
//! - [`reply`] holds the single rule mapping answers to reply frames and
//!   back, used by both sides.

pub mod accept;
pub mod listener;
mod outbox;
pub mod remote;
pub mod reply;
pub mod router;
pub mod session;

#[cfg(feature = "fault-injection")]
pub use listener::InjectSessionPanic;
pub use listener::{
    CloseConnection, GetSessionStats, Listener, ListenerOptions, PushTo, StopListener,
    SubscribeClosed,
};
pub use listener::{
    DEFAULT_MAX_CONNECTION_MEMORY, DEFAULT_MAX_CONNECTIONS, GetListenerStats, ListenerStats,
};
pub use remote::{GetLinkState, LinkState, MAX_INBOUND, Oneway, RemoteClient, RemoteOptions};
pub use reply::{PULL_STATUSES, STORED_STATUSES, decode_reply, reply_frame};
pub use router::{ReplyFuture, Router};
pub use session::{CloseSession, ConnectionClosed, Push, Session, SessionLimits, SessionStats};
