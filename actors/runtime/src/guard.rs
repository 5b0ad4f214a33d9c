//! Handler bodies behind `catch_unwind`: a panicking handler poisons its
//! actor instead of unwinding through actix.
//!
//! Why: when a handler panics, actix 0.13 drops the actor's context while
//! the panic unwinds, and runs the instance's `stopping`/`stopped` hooks and
//! its `Drop` during that unwinding. Messages still queued are not handed to
//! it (their callers see the mailbox closed), but any second panic in those
//! hooks (a panic while panicking, say on state the first panic left half
//! changed) aborts the whole process.
//!
//! So an actor whose state a panic may leave half changed wraps each handler
//! body in [`guarded`]. A panic is caught there: the instance is marked
//! poisoned ([`Poison`]), asks its context to stop, and the message gets no
//! reply (its reply channel is dropped, so a caller's `send` fails with
//! `MailboxError::Closed`, which [`ServiceError`](super::ServiceError)
//! maps to an error response). Every message handled after that, the queued
//! ones included, is refused the same way without reaching the instance.
//! Once the context has stopped, the [`Supervisor`](super::Supervisor)
//! re-creates the actor from its factory.
//!
//! The decision (serve, or refuse because poisoned) is [`Poison`], a plain
//! struct.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use actix::dev::{MessageResponse, OneshotSender};
use actix::prelude::*;

/// Whether an actor instance panicked in a handler, and why.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Poison {
    reason: Option<String>,
    refused: u64,
}

impl Poison {
    /// The panic message, once poisoned.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// Whether a handler of this instance panicked.
    pub fn is_poisoned(&self) -> bool {
        self.reason.is_some()
    }

    /// Messages refused since the panic.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Called before a handler body: `true` = run it, `false` = refuse the
    /// message (the instance is poisoned; the refusal is counted).
    pub fn admit(&mut self) -> bool {
        if self.reason.is_some() {
            self.refused += 1;
            false
        } else {
            true
        }
    }

    /// Records a panic. Only the first reason is kept.
    pub fn poison(&mut self, reason: String) {
        if self.reason.is_none() {
            self.reason = Some(reason);
        }
    }
}

/// An actor whose handlers run through [`guarded`].
pub trait Guarded: Actor<Context = Context<Self>> {
    /// The instance's poison state.
    fn poison(&mut self) -> &mut Poison;
}

/// The reply of a guarded handler: the body's own reply, or none at all
/// (the caller sees its reply channel closed).
pub enum GuardedReply<R> {
    /// The handler body ran and returned this.
    Served(R),
    /// The instance is poisoned: the message was not handled.
    Refused,
}

impl<R> GuardedReply<R> {
    /// The body's reply, if it ran.
    pub fn served(self) -> Option<R> {
        match self {
            GuardedReply::Served(r) => Some(r),
            GuardedReply::Refused => None,
        }
    }
}

impl<A, M, R> MessageResponse<A, M> for GuardedReply<R>
where
    A: Actor,
    M: Message,
    R: MessageResponse<A, M>,
{
    fn handle(self, ctx: &mut A::Context, tx: Option<OneshotSender<M::Result>>) {
        match self {
            GuardedReply::Served(r) => r.handle(ctx, tx),
            // Dropping `tx` answers the caller with `MailboxError::Closed`.
            GuardedReply::Refused => drop(tx),
        }
    }
}

/// Runs a handler body behind `catch_unwind`. See the module docs.
pub fn guarded<A, R>(
    act: &mut A,
    ctx: &mut Context<A>,
    body: impl FnOnce(&mut A, &mut Context<A>) -> R,
) -> GuardedReply<R>
where
    A: Guarded,
{
    let was_poisoned = act.poison().is_poisoned();
    let reply = poison_on_panic(act, ctx, body);
    if !was_poisoned && act.poison().is_poisoned() {
        ctx.stop();
    }
    reply
}

/// [`guarded`] without the stop: a panic poisons the instance and the
/// message gets no reply, but stopping is left to the actor, which must
/// check [`Poison::is_poisoned`] before its next piece of work. For an
/// actor that winds down by itself after a panic, e.g. a connection's
/// [`Session`](crate::net::Session), which answers the requests it has in
/// flight with an error before it closes.
pub fn poison_on_panic<A, R>(
    act: &mut A,
    ctx: &mut Context<A>,
    body: impl FnOnce(&mut A, &mut Context<A>) -> R,
) -> GuardedReply<R>
where
    A: Guarded,
{
    if !act.poison().admit() {
        return GuardedReply::Refused;
    }
    match catch_unwind(AssertUnwindSafe(|| body(act, ctx))) {
        Ok(reply) => GuardedReply::Served(reply),
        Err(payload) => {
            act.poison().poison(panic_message(payload.as_ref()));
            GuardedReply::Refused
        }
    }
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Test hook: the receiving actor's handler panics with this text. Only
/// compiled with the `fault-injection` feature (the crate's own tests).
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct InjectPanic(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poison_refuses_everything_after_the_first_panic() {
        let mut p = Poison::default();
        assert!(p.admit());
        assert!(!p.is_poisoned());
        p.poison("boom".into());
        p.poison("second".into());
        assert_eq!(p.reason(), Some("boom"));
        assert!(!p.admit());
        assert!(!p.admit());
        assert_eq!(p.refused(), 2);
    }

    #[test]
    fn panic_messages() {
        let r = catch_unwind(|| panic!("static text")).unwrap_err();
        assert_eq!(panic_message(r.as_ref()), "static text");
        let n = 3;
        let r = catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(panic_message(r.as_ref()), "formatted 3");
        let r = catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(r.as_ref()), "panic with a non-string payload");
    }
}
