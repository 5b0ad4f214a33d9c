//! `GroupNotifier`: turns consumer-group changes ([`ConsumerGroupChanged`])
//! into `NOTIFY_CONSUMER_IDS_CHANGED` pushes to every member's connection,
//! so clients rebalance at once, and pushes an offset reset
//! ([`PushReset`], `RESET_CONSUMER_CLIENT_OFFSET`) to a group's members,
//! and a transaction check ([`PushTransactionCheck`],
//! `CHECK_TRANSACTION_STATE`) to one producer.
//! Stateless; it reaches the listener through a [`ChildRef`], so a
//! restarted listener is used too.

use actix::prelude::*;
use std::collections::BTreeSet;

use actormq_protocol::request::{
    CheckTransactionStateRequest, NotifyConsumerIdsChangedRequest, ResetConsumerClientOffsetRequest,
};

use super::group_manager::ConsumerGroupChanged;
use crate::runtime::net::{Listener, PushTo};
use crate::runtime::{Call, ChildRef, ServiceError};

/// The notifier actor. See the module docs.
pub struct GroupNotifier {
    listener: ChildRef<Listener>,
}

impl GroupNotifier {
    /// A notifier pushing through the current incarnation of `listener`.
    pub fn new(listener: ChildRef<Listener>) -> Self {
        Self { listener }
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
        for conn_id in msg.connections {
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
        for &conn_id in &msg.connections {
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
