//! `GroupNotifier`: turns consumer-group changes ([`ConsumerGroupChanged`])
//! into `NOTIFY_CONSUMER_IDS_CHANGED` pushes to every member's connection,
//! so clients rebalance at once. Stateless; it reaches the listener through
//! a [`ChildRef`], so a restarted listener is used too.

use actix::prelude::*;
use actormq_protocol::request::NotifyConsumerIdsChangedRequest;

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
