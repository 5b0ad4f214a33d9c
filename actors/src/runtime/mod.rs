//! The actor runtime every broker, name-server and custom actor is built
//! with: supervision today; location-transparent recipients and the
//! request-code registry arrive with the broker actors.

pub mod call;
pub mod guard;
pub mod net;
pub mod relay;
pub mod restart;
pub mod supervisor;

pub use call::{Call, Origin, Reply, Rpc, ServiceError, USER_CODES};
pub use guard::{Guarded, GuardedReply, Poison, guarded};
pub use net::{
    CloseConnection, ConnectionClosed, GetLinkState, GetSessionStats, LinkState, Listener,
    ListenerOptions, Oneway, RemoteClient, RemoteOptions, Router, SessionLimits, SessionStats,
    StopListener, SubscribeClosed,
};
pub use relay::{CallRelay, Relay, route_child};
pub use restart::{RestartBudget, RestartDecision, RestartPolicy};
pub use supervisor::{
    ChildEscalated, ChildRef, ChildSpec, ChildStatus, Escalation, FactoryError, GetChildStatus,
    SpawnChild, SpawnChildInto, StopChild, StopSupervisor, Supervisor, spawn_child,
};
