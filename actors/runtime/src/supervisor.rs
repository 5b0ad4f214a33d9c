//! One-for-one supervision that also covers panicking children.
//!
//! actix's own `Supervisor` restarts an actor that stops itself, but not one
//! whose handler panicked: the task running the actor's context is dropped
//! and its mailbox closes. This supervisor therefore watches each child from
//! *inside* the child's context: it spawns a watch future into the child's
//! context that owns an exit guard. Whatever ends the context — the actor
//! stopping itself, a panic in a handler, the arbiter going away — drops
//! that future, and the guard's `Drop` tells the supervisor. The supervisor
//! then asks its [`RestartBudget`] and either re-creates the child from its
//! factory after a backoff, or escalates: it stops every child, logs the
//! reason and reports the escalation (to a parent, or by stopping the
//! actix `System` with exit code 1).
//!
//! Callers reach a child through a [`ChildRef`], which always points at the
//! current incarnation.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use slog::{Logger, crit, info, o, warn};
use tokio::sync::{oneshot, watch};

use super::restart::{RestartBudget, RestartDecision, RestartPolicy};

/// The error a child factory may return when it cannot (re)load its state.
pub type FactoryError = Box<dyn std::error::Error + Send + Sync>;

/// What a supervisor does once a child has spent its restart budget.
#[derive(Clone)]
pub enum Escalation {
    /// Stop the actix `System` with exit code 1 (a node's top supervisor).
    StopSystem,
    /// Tell a parent (for instance another supervisor) and stop.
    Notify(Recipient<ChildEscalated>),
}

/// Sent to the [`Escalation::Notify`] recipient when a supervisor gives up.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ChildEscalated {
    /// Name of the supervisor that gave up.
    pub supervisor: String,
    /// Name of the child that kept failing.
    pub child: String,
    /// Human-readable reason, also logged.
    pub reason: String,
}

/// A stable handle to a supervised child: after a restart it points at the
/// new incarnation, and [`ChildRef::subscribe`] lets a caller await that.
pub struct ChildRef<A: Actor> {
    current: Arc<watch::Sender<Option<Addr<A>>>>,
}

impl<A: Actor> Clone for ChildRef<A> {
    fn clone(&self) -> Self {
        Self {
            current: Arc::clone(&self.current),
        }
    }
}

impl<A: Actor> ChildRef<A> {
    /// A handle to no child yet (see [`SpawnChildInto`]).
    pub fn empty() -> Self {
        Self {
            current: Arc::new(watch::Sender::new(None)),
        }
    }

    fn set(&self, addr: Option<Addr<A>>) {
        self.current.send_replace(addr);
    }

    /// The address of the running incarnation, or `None` while the child is
    /// down (between a failure and its restart, or after escalation).
    pub fn addr(&self) -> Option<Addr<A>> {
        self.current.borrow().clone()
    }

    /// A receiver that sees every change of incarnation (`None` = down).
    pub fn subscribe(&self) -> watch::Receiver<Option<Addr<A>>> {
        self.current.subscribe()
    }
}

/// How to build one child: a name, a factory that (re)loads its state, and
/// optionally the arbiter (thread) it runs on.
pub struct ChildSpec<A: Actor<Context = Context<A>>> {
    name: String,
    factory: Arc<dyn Fn() -> Result<A, FactoryError> + Send + Sync>,
    arbiter: Option<ArbiterHandle>,
}

/// Code that sets the watch up inside a child's context.
type Install<A> = Box<dyn FnOnce(&mut Context<A>) + Send>;

impl<A: Actor<Context = Context<A>>> ChildSpec<A> {
    /// A child named `name`, built by `factory` at start and at each restart.
    pub fn new(
        name: impl Into<String>,
        factory: impl Fn() -> Result<A, FactoryError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            factory: Arc::new(factory),
            arbiter: None,
        }
    }
}

impl<A: Actor<Context = Context<A>>> ChildSpec<A> {
    /// Run the child on `arbiter` (another thread) instead of the
    /// supervisor's own. The factory then runs on that thread too, so the
    /// actor never crosses threads and need not be `Send`.
    pub fn on_arbiter(mut self, arbiter: ArbiterHandle) -> Self {
        self.arbiter = Some(arbiter);
        self
    }
}

/// Ask a supervisor to start and watch a child; replies with its handle.
#[derive(Message)]
#[rtype(result = "ChildRef<A>")]
pub struct SpawnChild<A: Actor<Context = Context<A>>>(pub ChildSpec<A>);

/// Like [`SpawnChild`], without waiting: the supervisor fills `handle`
/// once the child runs. Use [`spawn_child`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct SpawnChildInto<A: Actor<Context = Context<A>>> {
    /// The child.
    pub spec: ChildSpec<A>,
    /// The handle the supervisor fills (from [`ChildRef::empty`]).
    pub handle: ChildRef<A>,
}

/// Starts `spec` under `supervisor` and returns its handle at once; the
/// handle points at the child as soon as it runs (usable from sync code,
/// e.g. a plugin's `install`).
pub fn spawn_child<A: Actor<Context = Context<A>>>(
    supervisor: &Addr<Supervisor>,
    spec: ChildSpec<A>,
) -> ChildRef<A> {
    let handle = ChildRef::empty();
    supervisor.do_send(SpawnChildInto {
        spec,
        handle: handle.clone(),
    });
    handle
}

/// Ask a supervisor for the state of its children.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<ChildStatus>")]
pub struct GetChildStatus;

/// One child as its supervisor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildStatus {
    /// The child's name.
    pub name: String,
    /// Whether an incarnation is running now.
    pub running: bool,
    /// Restarts so far (factory failures included).
    pub restarts: u64,
}

/// Stop every child and then the supervisor itself (graceful shutdown).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StopSupervisor;

/// Stop the named children for good (they are not restarted), e.g. the
/// listeners first in a graceful shutdown. Answers how many were running.
#[derive(Debug, Clone, Message)]
#[rtype(result = "usize")]
pub struct StopChild(pub String);

/// Sent by an [`ExitGuard`] when a child's context ends.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
struct ChildExited {
    index: usize,
    generation: u64,
}

/// Lives inside a child's context; its drop is the child's death notice.
struct ExitGuard {
    supervisor: Addr<Supervisor>,
    index: usize,
    generation: u64,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.supervisor.do_send(ChildExited {
            index: self.index,
            generation: self.generation,
        });
    }
}

/// The type-erased part of a child that the supervisor keeps.
trait Restartable {
    /// Start an incarnation; on success returns the sender that stops it.
    fn start(
        &self,
        supervisor: Addr<Supervisor>,
        index: usize,
        generation: u64,
    ) -> Result<oneshot::Sender<()>, FactoryError>;
    /// Forget the current incarnation's address.
    fn clear(&self);
}

struct Typed<A: Actor<Context = Context<A>>> {
    spec: ChildSpec<A>,
    handle: ChildRef<A>,
}

impl<A: Actor<Context = Context<A>>> Restartable for Typed<A> {
    fn start(
        &self,
        supervisor: Addr<Supervisor>,
        index: usize,
        generation: u64,
    ) -> Result<oneshot::Sender<()>, FactoryError> {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let guard = ExitGuard {
            supervisor: supervisor.clone(),
            index,
            generation,
        };
        let install: Install<A> = Box::new(move |ctx: &mut Context<A>| {
            let watch = async move {
                let _guard = guard;
                // Resolves on a stop request or when the supervisor is gone.
                let _ = stop_rx.await;
            };
            ctx.spawn(actix::fut::wrap_future::<_, A>(watch).map(|(), _act, ctx| ctx.stop()));
        });
        let factory = Arc::clone(&self.spec.factory);
        match &self.spec.arbiter {
            None => {
                let actor = build(&*factory)?;
                let addr = A::create(|ctx| {
                    install(ctx);
                    actor
                });
                self.handle.set(Some(addr));
            }
            Some(arbiter) => {
                // Build and start on the target thread. If the factory fails
                // there, `install` (and with it the exit guard) is dropped
                // unused, which reports the failed start like a death.
                let handle = self.handle.clone();
                let spawned = arbiter.spawn(async move {
                    match build(&*factory) {
                        Ok(actor) => {
                            let addr = A::create(|ctx| {
                                install(ctx);
                                actor
                            });
                            handle.set(Some(addr));
                        }
                        Err(error) => {
                            supervisor.do_send(ChildStartFailed {
                                index,
                                error: error.to_string(),
                            });
                            drop(install);
                        }
                    }
                });
                if !spawned {
                    return Err("child arbiter is not running".into());
                }
            }
        }
        Ok(stop_tx)
    }

    fn clear(&self) {
        self.handle.set(None);
    }
}

/// Runs user code: a panicking factory is a failed start, not a dead
/// supervisor.
fn build<A>(
    factory: &(dyn Fn() -> Result<A, FactoryError> + Send + Sync),
) -> Result<A, FactoryError> {
    match catch_unwind(AssertUnwindSafe(factory)) {
        Ok(result) => result,
        Err(_) => Err("child factory panicked".into()),
    }
}

/// Sent from another arbiter when a child's factory failed there (logged;
/// the dropped exit guard reports the failure itself).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
struct ChildStartFailed {
    index: usize,
    error: String,
}

struct ChildEntry {
    name: String,
    child: Box<dyn Restartable>,
    budget: RestartBudget,
    generation: u64,
    stop: Option<oneshot::Sender<()>>,
    /// Stopped on request ([`StopChild`]): never restarted.
    retired: bool,
}

/// A one-for-one supervisor actor. See the module docs.
pub struct Supervisor {
    name: String,
    logger: Logger,
    policy: RestartPolicy,
    escalation: Escalation,
    children: Vec<ChildEntry>,
    shutting_down: bool,
}

impl Supervisor {
    /// A supervisor named `name`; its log records carry `supervisor = name`.
    pub fn new(
        name: impl Into<String>,
        logger: &Logger,
        policy: RestartPolicy,
        escalation: Escalation,
    ) -> Self {
        let name = name.into();
        let logger = logger.new(o!("actor" => "Supervisor", "supervisor" => name.clone()));
        Self {
            name,
            logger,
            policy,
            escalation,
            children: Vec::new(),
            shutting_down: false,
        }
    }

    fn add_child<A: Actor<Context = Context<A>>>(
        &mut self,
        spec: ChildSpec<A>,
        handle: ChildRef<A>,
        ctx: &mut Context<Self>,
    ) {
        let name = spec.name.clone();
        info!(self.logger, "starting child"; "child" => &name);
        let mut entry = ChildEntry {
            name,
            child: Box::new(Typed { spec, handle }),
            budget: RestartBudget::new(self.policy),
            generation: 0,
            stop: None,
            retired: false,
        };
        // A slot of a child stopped for good is reused (children come and
        // go, e.g. a consumer's pull services as queues move), so the
        // table does not grow. Its generation goes on, so stale exit
        // notices and scheduled restarts of the old child are ignored.
        let index = match self
            .children
            .iter()
            .position(|c| c.retired && c.stop.is_none())
        {
            Some(index) => {
                entry.generation = self.children[index].generation;
                self.children[index] = entry;
                index
            }
            None => {
                self.children.push(entry);
                self.children.len() - 1
            }
        };
        self.start_child(index, ctx);
    }

    fn start_child(&mut self, index: usize, ctx: &mut Context<Self>) {
        let me = ctx.address();
        let entry = &mut self.children[index];
        entry.generation += 1;
        match entry.child.start(me, index, entry.generation) {
            Ok(stop) => entry.stop = Some(stop),
            Err(err) => {
                warn!(self.logger, "child failed to start"; "child" => &entry.name, "error" => %err);
                self.on_failure(index, ctx);
            }
        }
    }

    fn on_failure(&mut self, index: usize, ctx: &mut Context<Self>) {
        let entry = &mut self.children[index];
        entry.stop = None;
        entry.child.clear();
        match entry.budget.on_failure(Instant::now()) {
            RestartDecision::Restart { after } => {
                warn!(self.logger, "child exited; restarting";
                    "child" => &entry.name,
                    "restarts" => entry.budget.total_restarts(),
                    "backoff_ms" => after.as_millis() as u64);
                let generation = entry.generation;
                ctx.run_later(after, move |act, ctx| {
                    let entry = &act.children[index];
                    // Not if the child was stopped for good meanwhile, or
                    // its slot went to another child.
                    if !act.shutting_down && !entry.retired && entry.generation == generation {
                        act.start_child(index, ctx);
                    }
                });
            }
            RestartDecision::Escalate { failures_in_window } => {
                let reason = format!(
                    "child {} failed {failures_in_window} times within {:?} (budget {})",
                    entry.name, self.policy.window, self.policy.max_restarts
                );
                crit!(self.logger, "restart budget spent; escalating"; "child" => &entry.name, "reason" => &reason);
                let child = entry.name.clone();
                self.stop_all_children();
                match &self.escalation {
                    Escalation::StopSystem => System::current().stop_with_code(1),
                    Escalation::Notify(parent) => parent.do_send(ChildEscalated {
                        supervisor: self.name.clone(),
                        child,
                        reason,
                    }),
                }
                ctx.stop();
            }
        }
    }

    fn stop_all_children(&mut self) {
        self.shutting_down = true;
        for entry in &mut self.children {
            if let Some(stop) = entry.stop.take() {
                let _ = stop.send(());
            }
            entry.child.clear();
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        info!(self.logger, "supervisor started"; "max_restarts" => self.policy.max_restarts);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.stop_all_children();
        info!(self.logger, "supervisor stopped");
    }
}

/// How long [`SpawnChild`] waits for a child on another arbiter to come up.
const FIRST_START_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl<A: Actor<Context = Context<A>>> Handler<SpawnChild<A>> for Supervisor {
    /// Replies once the first incarnation runs (a child on another arbiter
    /// starts asynchronously), or after its start failed and 5 s passed.
    type Result = ResponseFuture<ChildRef<A>>;

    fn handle(&mut self, msg: SpawnChild<A>, ctx: &mut Context<Self>) -> Self::Result {
        let handle = ChildRef::empty();
        self.add_child(msg.0, handle.clone(), ctx);
        let mut running = handle.subscribe();
        Box::pin(async move {
            let up = running.wait_for(Option::is_some);
            let _ = actix_rt::time::timeout(FIRST_START_WAIT, up).await;
            handle
        })
    }
}

impl<A: Actor<Context = Context<A>>> Handler<SpawnChildInto<A>> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: SpawnChildInto<A>, ctx: &mut Context<Self>) {
        self.add_child(msg.spec, msg.handle, ctx);
    }
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        let Some(entry) = self.children.get(msg.index) else {
            return;
        };
        if self.shutting_down || entry.generation != msg.generation || entry.stop.is_none() {
            return; // a stop we asked for, or a stale incarnation
        }
        self.on_failure(msg.index, ctx);
    }
}

impl Handler<ChildStartFailed> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildStartFailed, _ctx: &mut Context<Self>) {
        if let Some(entry) = self.children.get(msg.index) {
            warn!(self.logger, "child failed to start"; "child" => &entry.name, "error" => &msg.error);
        }
    }
}

impl Handler<GetChildStatus> for Supervisor {
    type Result = MessageResult<GetChildStatus>;

    fn handle(&mut self, _msg: GetChildStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.children
                .iter()
                .map(|c| ChildStatus {
                    name: c.name.clone(),
                    running: c.stop.is_some(),
                    restarts: c.budget.total_restarts(),
                })
                .collect(),
        )
    }
}

impl Handler<StopChild> for Supervisor {
    type Result = usize;

    fn handle(&mut self, msg: StopChild, _ctx: &mut Context<Self>) -> usize {
        let mut running = 0;
        for entry in self.children.iter_mut().filter(|c| c.name == msg.0) {
            entry.retired = true;
            if let Some(stop) = entry.stop.take() {
                let _ = stop.send(());
                running += 1;
            }
            entry.child.clear();
        }
        info!(self.logger, "child stopped on request"; "child" => &msg.0, "running" => running);
        running
    }
}

impl Handler<StopSupervisor> for Supervisor {
    type Result = ();

    fn handle(&mut self, _msg: StopSupervisor, ctx: &mut Context<Self>) {
        info!(self.logger, "stopping children");
        self.stop_all_children();
        ctx.stop();
    }
}
