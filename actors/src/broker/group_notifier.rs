//! `GroupNotifier`: turns consumer-group changes ([`ConsumerGroupChanged`])
//! into `NOTIFY_CONSUMER_IDS_CHANGED` pushes to every member's connection,
//! so clients rebalance at once, and pushes an offset reset
//! ([`PushReset`], `RESET_CONSUMER_CLIENT_OFFSET`) to a group's members,
//! and a transaction check ([`PushTransactionCheck`],
//! `CHECK_TRANSACTION_STATE`) to one producer.
//! Stateless; it reaches the listener through a [`ChildRef`], so a
//! restarted listener is used too.
//!
//! Clients of other front doors (the gRPC endpoint) are group members
//! too: their connection ids carry [`FOREIGN_CONN_BIT`], and a
//! transaction check for one goes to the [`ForeignSessions`] handler
//! their front door installed, not to the listener.

use actix::prelude::*;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use actormq_protocol::request::{
    CheckTransactionStateRequest, NotifyConsumerIdsChangedRequest, ResetConsumerClientOffsetRequest,
};

use super::group_manager::ConsumerGroupChanged;
use crate::runtime::net::{Listener, PushTo};
use crate::runtime::{Call, ChildRef, ServiceError};

/// The bit set in the connection ids of clients of other front doors
/// (gRPC sessions): they never collide with a listener's ids, which
/// count up from 1.
pub const FOREIGN_CONN_BIT: u64 = 1 << 62;

/// Whether `conn_id` names a client of another front door.
pub fn is_foreign_conn(conn_id: u64) -> bool {
    conn_id & FOREIGN_CONN_BIT != 0
}

/// Where transaction checks for clients of another front door go (one
/// slot, installed by that front door once it runs; shared, so a
/// restarted notifier keeps it).
#[derive(Clone, Default)]
pub struct ForeignSessions(Arc<RwLock<Option<Recipient<PushTransactionCheck>>>>);

impl ForeignSessions {
    /// Checks for foreign connection ids go to `to` from now on.
    pub fn install(&self, to: Recipient<PushTransactionCheck>) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(to);
        }
    }

    fn get(&self) -> Option<Recipient<PushTransactionCheck>> {
        self.0.read().ok().and_then(|slot| slot.clone())
    }
}

impl std::fmt::Debug for ForeignSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForeignSessions")
            .field("installed", &self.get().is_some())
            .finish()
    }
}

/// The notifier actor. See the module docs.
pub struct GroupNotifier {
    listener: ChildRef<Listener>,
    foreign: ForeignSessions,
}

impl GroupNotifier {
    /// A notifier pushing through the current incarnation of `listener`.
    pub fn new(listener: ChildRef<Listener>) -> Self {
        Self {
            listener,
            foreign: ForeignSessions::default(),
        }
    }

    /// Checks for clients of other front doors go through `foreign`
    /// (builder style).
    pub fn with_foreign(mut self, foreign: ForeignSessions) -> Self {
        self.foreign = foreign;
        self
    }
}

impl Actor for GroupNotifier {
    type Context = Context<Self>;
}

impl Handler<ConsumerGroupChanged> for GroupNotifier {
    type Result = ();
    fn handle(&mut self, msg: ConsumerGroupChanged, _: &mut Context<Self>) {
        let Some(listener) = self.listener.addr() else {
            return; // restarting: its connections were closed with it
        };
        for conn_id in msg.connections.into_iter().filter(|&c| !is_foreign_conn(c)) {
            let req = NotifyConsumerIdsChangedRequest {
                consumer_group: msg.group.clone(),
            };
            listener.do_send(PushTo {
                conn_id,
                call: Call::new(req),
            });
        }
    }
}

/// Push `req` (a group's new offsets) to each of `connections` (oneway).
/// Replies how many connections it was handed to.
#[derive(Debug, Clone, Message)]
#[rtype(result = "usize")]
pub struct PushReset {
    /// The group members' connections.
    pub connections: BTreeSet<u64>,
    /// The new offsets.
    pub req: ResetConsumerClientOffsetRequest,
}

impl Handler<PushReset> for GroupNotifier {
    type Result = usize;
    fn handle(&mut self, msg: PushReset, _: &mut Context<Self>) -> usize {
        let Some(listener) = self.listener.addr() else {
            return 0; // restarting: its connections were closed with it
        };
        for &conn_id in msg.connections.iter().filter(|&&c| !is_foreign_conn(c)) {
            listener.do_send(PushTo {
                conn_id,
                call: Call::new(msg.req.clone()),
            });
        }
        msg.connections.len()
    }
}

/// Push `req` (body: the half message as a one-message stored batch) to
/// the producer connection `conn_id` (oneway). Fails when the connection
/// is closed or the listener is restarting.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), ServiceError>")]
pub struct PushTransactionCheck {
    /// A producer's connection.
    pub conn_id: u64,
    /// The check.
    pub req: CheckTransactionStateRequest,
    /// The half message.
    pub body: bytes::Bytes,
}

impl Handler<PushTransactionCheck> for GroupNotifier {
    type Result = ResponseFuture<Result<(), ServiceError>>;
    fn handle(&mut self, msg: PushTransactionCheck, _: &mut Context<Self>) -> Self::Result {
        if is_foreign_conn(msg.conn_id) {
            let Some(to) = self.foreign.get() else {
                return Box::pin(std::future::ready(Err(ServiceError::busy(
                    "no front door serves this connection",
                ))));
            };
            let sent = to.send(msg);
            return Box::pin(async move { sent.await.map_err(ServiceError::from)? });
        }
        let Some(listener) = self.listener.addr() else {
            return Box::pin(std::future::ready(Err(ServiceError::busy(
                "the listener is restarting",
            ))));
        };
        let sent = listener.send(PushTo {
            conn_id: msg.conn_id,
            call: Call::with_body(msg.req, msg.body),
        });
        Box::pin(async move { sent.await.map_err(ServiceError::from)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_ids_are_apart_from_listener_ids() {
        assert!(!is_foreign_conn(1));
        assert!(!is_foreign_conn(FOREIGN_CONN_BIT - 1));
        assert!(is_foreign_conn(FOREIGN_CONN_BIT));
        assert!(is_foreign_conn(FOREIGN_CONN_BIT | 7));
    }
}
