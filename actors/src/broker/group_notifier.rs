//! `GroupNotifier`: turns consumer-group changes ([`ConsumerGroupChanged`])
//! into `NOTIFY_CONSUMER_IDS_CHANGED` pushes to every member's connection,
//! so clients rebalance at once, and pushes an offset reset
//! ([`PushReset`], `RESET_CONSUMER_CLIENT_OFFSET`) to a group's members.
//! Stateless; it reaches the listener through a [`ChildRef`], so a
//! restarted listener is used too.

use actix::prelude::*;
use std::collections::BTreeSet;

use actormq_protocol::request::{
    NotifyConsumerIdsChangedRequest, ResetConsumerClientOffsetRequest,
};

use super::group_manager::ConsumerGroupChanged;
use crate::runtime::net::{Listener, PushTo};
use crate::runtime::{Call, ChildRef};

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
