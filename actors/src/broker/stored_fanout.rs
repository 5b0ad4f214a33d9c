//! `StoredFanout`: forwards "message stored" events ([`MessagesStored`])
//! to every subscriber, at one address that outlives dispatcher restarts.
//!
//! It runs under the broker's supervisor. Its subscriber list is a
//! [`StoredSubscribers`] shared with its factory, so an incarnation
//! re-created after a failure still serves everyone who subscribed before.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use actix::prelude::*;

use super::dispatcher::{MessagesStored, SubscribeStored};

/// The subscriber list every incarnation of a [`StoredFanout`] shares.
#[derive(Clone, Default)]
pub struct StoredSubscribers(Arc<Mutex<Vec<Recipient<MessagesStored>>>>);

impl StoredSubscribers {
    /// A list starting with `initial`.
    pub fn new(initial: Vec<Recipient<MessagesStored>>) -> Self {
        Self(Arc::new(Mutex::new(initial)))
    }

    fn list(&self) -> MutexGuard<'_, Vec<Recipient<MessagesStored>>> {
        // A panic elsewhere never loses the list.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a subscriber.
    pub fn add(&self, subscriber: Recipient<MessagesStored>) {
        self.list().push(subscriber);
    }

    /// Sends `msg` to every live subscriber (dead ones are dropped from the
    /// list), without copying the list: this runs once per dispatch round.
    pub fn send(&self, msg: &MessagesStored) {
        let mut list = self.list();
        list.retain(Recipient::connected);
        for s in list.iter() {
            s.do_send(msg.clone());
        }
    }
}

/// The fan-out actor. See the module docs.
pub struct StoredFanout {
    subscribers: StoredSubscribers,
}

impl StoredFanout {
    /// An incarnation over the shared `subscribers`.
    pub fn new(subscribers: StoredSubscribers) -> Self {
        Self { subscribers }
    }
}

impl Actor for StoredFanout {
    type Context = Context<Self>;
}

impl Handler<MessagesStored> for StoredFanout {
    type Result = ();
    fn handle(&mut self, msg: MessagesStored, _: &mut Context<Self>) {
        self.subscribers.send(&msg);
    }
}

impl Handler<SubscribeStored> for StoredFanout {
    type Result = ();
    fn handle(&mut self, msg: SubscribeStored, _: &mut Context<Self>) {
        self.subscribers.add(msg.0);
    }
}

/// Test hook: the fan-out's handler panics (its incarnation dies).
#[cfg(feature = "fault-injection")]
impl Handler<crate::runtime::guard::InjectPanic> for StoredFanout {
    type Result = ();
    fn handle(&mut self, msg: crate::runtime::guard::InjectPanic, _: &mut Context<Self>) {
        panic!("{}", msg.0);
    }
}
