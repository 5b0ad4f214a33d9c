//! [`Router`]: the request-code registry every [`Session`](super::Session)
//! of a listener shares.
//!
//! A route turns a decoded request [`Frame`] into a [`Call<R>`], sends it to
//! the actor that serves `R::CODE`, and turns the answer into a reply frame
//! ([`reply_frame`]). Per request that is one
//! decode of the typed fields, one `send` to the serving actor and one boxed
//! reply future; the body is handed over as the same `Bytes`.

use std::collections::HashMap;
use std::future::{Future, ready};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix::Recipient;
use actormq_protocol::{Error as ProtocolError, Frame};

use super::reply::reply_frame;
use crate::call::{Call, Origin, Reply, Rpc, ServiceError};
use crate::guard::panic_message;

/// The pending reply of one routed request: `None` for a oneway request
/// (no reply is sent), else the reply frame.
pub type ReplyFuture = Pin<Box<dyn Future<Output = Option<Frame>>>>;

/// A type-erased handler of one request code.
trait Route: Send + Sync {
    fn dispatch(&self, frame: Frame, origin: Option<Origin>) -> ReplyFuture;
}

/// Decodes `R` from the frame's fields; on error, the ready error reply.
fn decode<R: Rpc>(frame: &Frame) -> Result<R, ReplyFuture> {
    frame.decode_fields::<R>().map_err(|err| {
        let reply = (!frame.is_oneway()).then(|| Frame::from_error(frame.header.request_id, &err));
        Box::pin(ready(reply)) as ReplyFuture
    })
}

struct RecipientRoute<R: Rpc>(Recipient<Call<R>>);

impl<R: Rpc> Route for RecipientRoute<R> {
    fn dispatch(&self, frame: Frame, origin: Option<Origin>) -> ReplyFuture {
        let req = match decode::<R>(&frame) {
            Ok(req) => req,
            Err(reply) => return reply,
        };
        let (id, oneway) = (frame.header.request_id, frame.is_oneway());
        let answer = self.0.send(Call {
            req,
            body: frame.body,
            origin,
            received_at: Some(std::time::Instant::now()),
        });
        Box::pin(async move {
            let answer = answer.await;
            (!oneway).then(|| reply_frame(id, answer))
        })
    }
}

type BoxedHandler<R> = Box<
    dyn Fn(
            Call<R>,
        )
            -> Pin<Box<dyn Future<Output = Result<Reply<<R as Rpc>::Response>, ServiceError>>>>
        + Send
        + Sync,
>;

struct FnRoute<R: Rpc>(BoxedHandler<R>);

fn panicked(payload: &(dyn std::any::Any + Send)) -> ServiceError {
    ServiceError::system(format!(
        "request handler panicked: {}",
        panic_message(payload)
    ))
}

/// A handler's future, polled behind `catch_unwind`.
struct CatchUnwind<T>(Pin<Box<dyn Future<Output = Result<T, ServiceError>>>>);

impl<T> Future for CatchUnwind<T> {
    type Output = Result<T, ServiceError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(panicked(payload.as_ref()))),
        }
    }
}

impl<R: Rpc> Route for FnRoute<R> {
    fn dispatch(&self, frame: Frame, origin: Option<Origin>) -> ReplyFuture {
        let req = match decode::<R>(&frame) {
            Ok(req) => req,
            Err(reply) => return reply,
        };
        let (id, oneway) = (frame.header.request_id, frame.is_oneway());
        let call = Call {
            req,
            body: frame.body,
            origin,
            received_at: Some(std::time::Instant::now()),
        };
        // User code: a panic (in the closure or its future) fails this
        // request with SYSTEM_ERROR instead of killing the session.
        let answer = match catch_unwind(AssertUnwindSafe(|| (self.0)(call))) {
            Ok(fut) => CatchUnwind(fut),
            Err(payload) => {
                let err = panicked(payload.as_ref());
                let reply = (!oneway).then(|| reply_frame::<R::Response>(id, Ok(Err(err))));
                return Box::pin(ready(reply));
            }
        };
        Box::pin(async move {
            let answer = answer.await;
            (!oneway).then(|| reply_frame(id, Ok(answer)))
        })
    }
}

/// Request code → handler. Cheap to clone (an `Arc`); all sessions of a
/// listener share one.
///
/// Routes are registered before the router is handed to a listener; a
/// route added to a clone after that is seen by that clone only
/// (copy-on-write).
#[derive(Clone, Default)]
pub struct Router {
    routes: Arc<HashMap<u32, Arc<dyn Route>>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut codes = self.codes();
        codes.sort_unstable();
        f.debug_struct("Router").field("codes", &codes).finish()
    }
}

impl Router {
    /// An empty router: every code is answered `REQUEST_CODE_NOT_SUPPORTED`.
    pub fn new() -> Router {
        Router::default()
    }

    fn insert(&mut self, code: u32, route: Arc<dyn Route>) -> &mut Router {
        Arc::make_mut(&mut self.routes).insert(code, route);
        self
    }

    /// Routes requests of code `R::CODE` to `recipient` (a local actor or a
    /// remote proxy), replacing an earlier route of that code.
    pub fn route<R: Rpc>(&mut self, recipient: Recipient<Call<R>>) -> &mut Router {
        self.insert(R::CODE, Arc::new(RecipientRoute(recipient)))
    }

    /// Routes requests of code `R::CODE` to an async function. It runs on
    /// the session's thread, so it should only hand work on (e.g. to an
    /// actor), not block.
    pub fn route_fn<R, F, Fut>(&mut self, handler: F) -> &mut Router
    where
        R: Rpc,
        F: Fn(Call<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Reply<R::Response>, ServiceError>> + 'static,
    {
        let boxed: BoxedHandler<R> = Box::new(move |call| Box::pin(handler(call)));
        self.insert(R::CODE, Arc::new(FnRoute(boxed)))
    }

    /// Whether `code` has a route.
    pub fn contains(&self, code: u32) -> bool {
        self.routes.contains_key(&code)
    }

    /// The routed codes, in no particular order.
    pub fn codes(&self) -> Vec<u32> {
        self.routes.keys().copied().collect()
    }

    /// Serves one request frame: the future resolves to the reply frame, or
    /// to `None` for a oneway request. An unknown code is answered
    /// `REQUEST_CODE_NOT_SUPPORTED`; undecodable fields with the decode
    /// error's response code.
    pub fn dispatch(&self, frame: Frame, origin: Option<Origin>) -> ReplyFuture {
        match self.routes.get(&frame.header.code) {
            Some(route) => route.dispatch(frame, origin),
            None => {
                let reply = (!frame.is_oneway()).then(|| {
                    Frame::from_error(
                        frame.header.request_id,
                        &ProtocolError::UnknownRequestCode(frame.header.code),
                    )
                });
                Box::pin(ready(reply))
            }
        }
    }
}
