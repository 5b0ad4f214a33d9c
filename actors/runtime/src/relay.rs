//! `Relay<A>`: a stable address for events to a supervised child.
//!
//! Subscriptions (connection closed, topics changed, message stored) hold a
//! `Recipient`, which would go stale when the supervisor restarts the
//! child. A relay holds the child's [`ChildRef`] instead and forwards each
//! fire-and-forget message to whichever incarnation runs now; while the
//! child is down the event is dropped (the restarted child reloads its
//! state anyway). Requests with replies are routed the same way by
//! [`route_child`].

use actix::dev::ToEnvelope;
use actix::prelude::*;

use super::call::{Call, Rpc, ServiceError};
use super::net::Router;
use super::supervisor::ChildRef;

/// Forwards `Message<Result = ()>`s to the current incarnation of a child.
pub struct Relay<A: Actor> {
    child: ChildRef<A>,
}

impl<A: Actor> Relay<A> {
    /// A relay to `child`; start it with `.start()`.
    pub fn new(child: ChildRef<A>) -> Self {
        Self { child }
    }
}

impl<A: Actor> Actor for Relay<A> {
    type Context = Context<Self>;
}

impl<A, M> Handler<M> for Relay<A>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message<Result = ()> + Send + 'static,
{
    type Result = ();

    fn handle(&mut self, msg: M, _: &mut Context<Self>) {
        if let Some(addr) = self.child.addr() {
            addr.do_send(msg);
        }
    }
}

/// Routes request code `R::CODE` of `router` to the current incarnation of
/// `child`; while it is down (restarting) callers get `SYSTEM_BUSY`.
pub fn route_child<R, A>(router: &mut Router, child: &ChildRef<A>)
where
    R: Rpc,
    A: Actor + Handler<Call<R>>,
    A::Context: ToEnvelope<A, Call<R>>,
{
    let child = child.clone();
    router.route_fn::<R, _, _>(move |call| {
        let addr = child.addr();
        async move {
            match addr {
                Some(addr) => addr.send(call).await?,
                None => Err(ServiceError::busy("service restarting")),
            }
        }
    });
}

/// Like [`Relay`], for requests with replies: a recipient (e.g. a
/// `Recipient<Call<R>>`) that stays valid across restarts of the child.
/// It forwards any message whose reply is `Result<T, ServiceError>`;
/// while the child is down, requests fail with `SYSTEM_BUSY`.
pub struct CallRelay<A: Actor> {
    child: ChildRef<A>,
}

impl<A: Actor> CallRelay<A> {
    /// A call relay to `child`; start it with `.start()`.
    pub fn new(child: ChildRef<A>) -> Self {
        Self { child }
    }
}

impl<A: Actor> Actor for CallRelay<A> {
    type Context = Context<Self>;
}

impl<A, M, T> Handler<M> for CallRelay<A>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message<Result = Result<T, ServiceError>> + Send + 'static,
    T: Send + 'static,
{
    type Result = ResponseFuture<Result<T, ServiceError>>;

    fn handle(&mut self, msg: M, _: &mut Context<Self>) -> Self::Result {
        let addr = self.child.addr();
        Box::pin(async move {
            match addr {
                Some(addr) => addr.send(msg).await?,
                None => Err(ServiceError::busy("service restarting")),
            }
        })
    }
}
