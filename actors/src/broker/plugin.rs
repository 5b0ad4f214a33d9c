//! Plugging your own actors into a broker.
//!
//! A [`BrokerPlugin`] is installed while the broker starts, before its
//! listener accepts connections. Through the [`BrokerContext`] it may:
//!
//! - **spawn** actors under the broker's supervisor (same restart policy
//!   and escalation as the broker's own actors);
//! - **route** a request code — a built-in one or its own, from
//!   [`USER_CODES`](crate::runtime::USER_CODES) — to one of them, so
//!   clients reach it over the broker's port;
//! - **subscribe** one of them to "message stored" events
//!   ([`MessagesStored`]);
//! - reach other nodes through a
//!   [`ClientSession`](crate::runtime::net::ClientSession) as usual.
//!
//! The broker's own actors are wired with the same calls.

use std::panic::{AssertUnwindSafe, catch_unwind};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use slog::Logger;

use super::dispatcher::{MessagesStored, SubscribeStored};
use crate::runtime::guard::panic_message;
use crate::runtime::net::Router;
use crate::runtime::{Call, ChildRef, ChildSpec, Relay, Rpc, Supervisor, route_child, spawn_child};

/// What a plugin may do to the broker it is installed in.
pub struct BrokerContext {
    supervisor: Addr<Supervisor>,
    router: Router,
    stored: Recipient<SubscribeStored>,
    logger: Logger,
}

impl BrokerContext {
    /// A context over the broker's supervisor, the router its listener will
    /// serve, and the subscription point of its stored events.
    pub fn new(
        supervisor: Addr<Supervisor>,
        router: Router,
        stored: Recipient<SubscribeStored>,
        logger: &Logger,
    ) -> Self {
        Self {
            supervisor,
            router,
            stored,
            logger: logger.clone(),
        }
    }

    /// Starts `spec` under the broker's supervisor; the handle follows the
    /// child across restarts.
    pub fn spawn<A: Actor<Context = Context<A>>>(&self, spec: ChildSpec<A>) -> ChildRef<A> {
        spawn_child(&self.supervisor, spec)
    }

    /// Serves request code `R::CODE` on the broker's port with `child`.
    pub fn route<R, A>(&mut self, child: &ChildRef<A>)
    where
        R: Rpc,
        A: Actor + Handler<Call<R>>,
        A::Context: ToEnvelope<A, Call<R>>,
    {
        route_child::<R, A>(&mut self.router, child);
    }

    /// Delivers every [`MessagesStored`] event of the broker to `child`.
    pub fn subscribe_stored<A>(&self, child: &ChildRef<A>)
    where
        A: Actor + Handler<MessagesStored>,
        A::Context: ToEnvelope<A, MessagesStored>,
    {
        let relay = Relay::new(child.clone()).start();
        self.stored.do_send(SubscribeStored(relay.recipient()));
    }

    /// The broker's logger (make a child with your own context).
    pub fn logger(&self) -> &Logger {
        &self.logger
    }

    /// The router with every route added so far (the broker takes it back).
    pub fn into_router(self) -> Router {
        self.router
    }
}

/// An extension of a broker: installs its actors, routes and subscriptions.
pub trait BrokerPlugin: Send + 'static {
    /// A short name for logs.
    fn name(&self) -> &str;

    /// Called once while the broker starts.
    fn install(self: Box<Self>, broker: &mut BrokerContext);
}

/// A plugin could not be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// `install` panicked; the routes it added are dropped.
    #[error("plugin {plugin} panicked while installing: {reason}")]
    InstallPanicked {
        /// The plugin's name.
        plugin: String,
        /// The panic message.
        reason: String,
    },
}

/// Runs `plugin.install` behind `catch_unwind`: a panicking plugin is an
/// error for the caller, not a dead node. On a panic the router is put back
/// as it was before the install (actors the plugin spawned before panicking
/// stay under the supervisor).
pub fn install_plugin(
    plugin: Box<dyn BrokerPlugin>,
    broker: &mut BrokerContext,
) -> Result<(), PluginError> {
    let name = plugin.name().to_owned();
    let before = broker.router.clone();
    match catch_unwind(AssertUnwindSafe(|| plugin.install(broker))) {
        Ok(()) => Ok(()),
        Err(payload) => {
            broker.router = before;
            Err(PluginError::InstallPanicked {
                plugin: name,
                reason: panic_message(payload.as_ref()),
            })
        }
    }
}
