//! The network half of the actor runtime: serving actors over TCP and
//! reaching remote actors as if they were local.
//!
//! - [`Router`] maps request codes to recipients; a [`Listener`] accepts
//!   connections and runs one [`Session`] actor per connection, which
//!   decodes frames, routes them and writes replies (pipelined, with an
//!   in-flight cap and a write-buffer cap per connection).
//! - [`ClientSession`] is the client side, and the only client transport:
//!   one supervised actor per remote address, reached through a
//!   [`ClientHandle`] (a pipelined send path with no actor round trip) or
//!   as a `Recipient<Call<R>>` that behaves like the serving actor's own.
//!   [`ClientSessions`] is a client's one table of them.
//! - Server push: [`PushTo`] (through the listener, by connection id) or
//!   [`Push`] (to a session) sends a request to a connected peer; a client
//!   session created with a [`Router`] serves such requests.
//! - [`reply`] holds the single rule mapping answers to reply frames and
//!   back, used by both sides.

pub mod accept;
pub mod client_session;
pub mod client_table;
pub mod listener;
mod outbox;
pub mod reply;
pub mod router;
pub mod session;

pub use client_session::{
    ClientHandle, ClientOptions, ClientSession, GetLinkState, LinkState, MAX_INBOUND, Oneway,
};
pub use client_table::{ClientSessions, Lane, resolve_addr};
#[cfg(feature = "fault-injection")]
pub use listener::InjectSessionPanic;
pub use listener::{
    CloseConnection, GetSessionStats, Listener, ListenerOptions, PushTo, StopListener,
    SubscribeClosed,
};
pub use listener::{
    DEFAULT_MAX_CONNECTION_MEMORY, DEFAULT_MAX_CONNECTIONS, GetListenerStats, ListenerStats,
};
pub use reply::{PULL_STATUSES, STORED_STATUSES, decode_reply, reply_frame};
pub use router::{ReplyFuture, Router};
pub use session::{CloseSession, ConnectionClosed, Push, Session, SessionLimits, SessionStats};
