//! # actormq-runtime
//!
//! The actor runtime every broker, name-server, client and custom actor is
//! built with: supervision ([`Supervisor`], [`ChildRef`], restart budgets),
//! typed calls that may cross nodes ([`Call`], [`Rpc`]), request-code
//! routing ([`Router`]), the TCP [`Listener`] and its sessions, and the
//! client transport ([`ClientSession`], [`ClientSessions`]).
//!
//! **Place in the layering:** `protocol <- runtime`; the broker actors
//! (`actormq-actors`) and the client SDK (`actormq-sdk`) both build on it.
//! It never links the storage engine.
#![forbid(unsafe_code)]

pub mod call;
pub mod guard;
pub mod net;
pub mod relay;
pub mod restart;
pub mod supervisor;

pub use call::{Call, Origin, Reply, Rpc, ServiceError, USER_CODES};
pub use guard::{Guarded, GuardedReply, Poison, guarded};
pub use net::{
    ClientHandle, ClientOptions, ClientSession, ClientSessions, CloseConnection, ConnectionClosed,
    GetLinkState, GetSessionStats, Lane, LinkState, Listener, ListenerOptions, Oneway, Router,
    SessionLimits, SessionStats, StopListener, SubscribeClosed,
};
pub use relay::{CallRelay, Relay, route_child};
pub use restart::{RestartBudget, RestartDecision, RestartPolicy};
pub use supervisor::{
    ChildEscalated, ChildRef, ChildSpec, ChildStatus, Escalation, FactoryError, GetChildStatus,
    SpawnChild, SpawnChildInto, StopChild, StopSupervisor, Supervisor, spawn_child,
};
