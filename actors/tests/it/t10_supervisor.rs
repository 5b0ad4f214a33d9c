//! The supervisor restarts panicked and self-stopped children, keeps their
//! peers serving, counts and logs restarts, and escalates past its budget.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use actormq_actors::runtime::{
    ChildEscalated, ChildRef, ChildSpec, Escalation, GetChildStatus, Guarded, GuardedReply, Poison,
    RestartPolicy, SpawnChild, StopChild, StopSupervisor, Supervisor, guarded,
};
use slog::{Drain, Logger, o};
use tokio::sync::mpsc;

/// A slog drain that keeps every record's message and key-values as text.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

impl Drain for Capture {
    type Ok = ();
    type Err = slog::Never;
    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        struct Kv(String);
        impl slog::Serializer for Kv {
            fn emit_arguments(
                &mut self,
                key: slog::Key,
                val: &std::fmt::Arguments<'_>,
            ) -> slog::Result {
                self.0.push_str(&format!(" {key}={val}"));
                Ok(())
            }
        }
        let mut kv = Kv(format!("{}", record.msg()));
        let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
        let _ = slog::KV::serialize(values, record, &mut kv);
        self.0.lock().unwrap().push(kv.0);
        Ok(())
    }
}

impl Capture {
    fn logger(&self) -> Logger {
        Logger::root(self.clone().fuse(), o!())
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Counts what it served; panics on `Crash`, stops itself on `Quit`.
struct Worker {
    served: u32,
}

impl Actor for Worker {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "u32")]
struct Ping;

#[derive(Message)]
#[rtype(result = "()")]
struct Crash;

#[derive(Message)]
#[rtype(result = "()")]
struct Quit;

impl Handler<Ping> for Worker {
    type Result = u32;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> u32 {
        self.served += 1;
        self.served
    }
}

impl Handler<Crash> for Worker {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("worker asked to crash (expected in this test)");
    }
}

impl Handler<Quit> for Worker {
    type Result = ();
    fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

fn fast_policy(max_restarts: u32) -> RestartPolicy {
    RestartPolicy {
        max_restarts,
        window: Duration::from_secs(60),
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
    }
}

fn counting_spec(name: &str, starts: &Arc<AtomicU32>) -> ChildSpec<Worker> {
    let starts = Arc::clone(starts);
    ChildSpec::new(name, move || {
        starts.fetch_add(1, Ordering::SeqCst);
        Ok(Worker { served: 0 })
    })
}

/// Awaits the child's next running incarnation (the restart is
/// asynchronous; the handle publishes each change). Bounded by a timeout.
async fn next_incarnation(child: &ChildRef<Worker>, old: &Addr<Worker>) -> Addr<Worker> {
    next_incarnation_of(child, old).await
}

async fn next_incarnation_of<A: Actor>(child: &ChildRef<A>, old: &Addr<A>) -> Addr<A> {
    let mut rx = child.subscribe();
    let fut = rx.wait_for(|a| matches!(a, Some(new) if new != old));
    let addr = actix_rt::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("child was not restarted in time")
        .expect("supervisor gone");
    addr.clone().expect("matched Some")
}

#[actix_rt::test]
async fn panicking_child_is_restarted_and_peers_keep_serving() {
    let capture = Capture::default();
    let sup = Supervisor::new(
        "broker",
        &capture.logger(),
        fast_policy(3),
        Escalation::StopSystem,
    )
    .start();
    let starts = Arc::new(AtomicU32::new(0));
    let crashy = sup
        .send(SpawnChild(counting_spec("crashy", &starts)))
        .await
        .unwrap();
    let peer = sup
        .send(SpawnChild(counting_spec(
            "peer",
            &Arc::new(AtomicU32::new(0)),
        )))
        .await
        .unwrap();

    let first = crashy.addr().expect("running");
    assert_eq!(first.send(Ping).await.unwrap(), 1);
    assert_eq!(first.send(Ping).await.unwrap(), 2);
    let peer_addr = peer.addr().unwrap();
    assert_eq!(peer_addr.send(Ping).await.unwrap(), 1);

    // The panic kills that incarnation: its reply never comes.
    assert!(first.send(Crash).await.is_err());
    let second = next_incarnation(&crashy, &first).await;
    // State was rebuilt by the factory, so the count starts again.
    assert_eq!(second.send(Ping).await.unwrap(), 1);
    assert_eq!(starts.load(Ordering::SeqCst), 2);
    // The peer never noticed.
    assert_eq!(peer_addr.send(Ping).await.unwrap(), 2);

    let status = sup.send(GetChildStatus).await.unwrap();
    let crashy_status = status.iter().find(|s| s.name == "crashy").unwrap();
    assert_eq!(crashy_status.restarts, 1);
    assert!(crashy_status.running);
    assert_eq!(
        status.iter().find(|s| s.name == "peer").unwrap().restarts,
        0
    );
    assert!(
        capture
            .lines()
            .iter()
            .any(|l| l.contains("restarting") && l.contains("child=crashy")),
        "restart not logged: {:?}",
        capture.lines()
    );
    sup.send(StopSupervisor).await.unwrap();
}

#[actix_rt::test]
async fn self_stopped_child_is_restarted() {
    let capture = Capture::default();
    let sup = Supervisor::new(
        "s",
        &capture.logger(),
        fast_policy(3),
        Escalation::StopSystem,
    )
    .start();
    let starts = Arc::new(AtomicU32::new(0));
    let child = sup
        .send(SpawnChild(counting_spec("quitter", &starts)))
        .await
        .unwrap();
    let first = child.addr().unwrap();
    first.send(Quit).await.unwrap();
    let second = next_incarnation(&child, &first).await;
    assert_eq!(second.send(Ping).await.unwrap(), 1);
    assert_eq!(starts.load(Ordering::SeqCst), 2);
    sup.send(StopSupervisor).await.unwrap();
}

#[actix_rt::test]
async fn child_on_another_arbiter_is_restarted_after_a_panic() {
    let capture = Capture::default();
    let sup = Supervisor::new(
        "s",
        &capture.logger(),
        fast_policy(3),
        Escalation::StopSystem,
    )
    .start();
    let arbiter = Arbiter::new();
    let starts = Arc::new(AtomicU32::new(0));
    let spec = counting_spec("remote-thread", &starts).on_arbiter(arbiter.handle());
    let child = sup.send(SpawnChild(spec)).await.unwrap();
    let first = child.addr().unwrap();
    assert_eq!(first.send(Ping).await.unwrap(), 1);
    assert!(first.send(Crash).await.is_err());
    let second = next_incarnation(&child, &first).await;
    assert_eq!(second.send(Ping).await.unwrap(), 1);
    sup.send(StopSupervisor).await.unwrap();
    arbiter.stop();
}

/// Receives the escalation a supervisor sends to its parent.
struct Parent(mpsc::UnboundedSender<ChildEscalated>);
impl Actor for Parent {
    type Context = Context<Self>;
}
impl Handler<ChildEscalated> for Parent {
    type Result = ();
    fn handle(&mut self, msg: ChildEscalated, _: &mut Context<Self>) {
        let _ = self.0.send(msg);
    }
}

async fn recv_escalation(rx: &mut mpsc::UnboundedReceiver<ChildEscalated>) -> ChildEscalated {
    actix_rt::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no escalation in time")
        .expect("parent gone")
}

#[actix_rt::test]
async fn escalates_when_the_budget_is_spent() {
    let capture = Capture::default();
    let (tx, mut escalations) = mpsc::unbounded_channel();
    let parent = Parent(tx).start();
    let sup = Supervisor::new(
        "s",
        &capture.logger(),
        fast_policy(2),
        Escalation::Notify(parent.recipient()),
    )
    .start();
    let starts = Arc::new(AtomicU32::new(0));
    let child = sup
        .send(SpawnChild(counting_spec("doomed", &starts)))
        .await
        .unwrap();
    let mut addr = child.addr().unwrap();
    for _ in 0..2 {
        assert!(addr.send(Crash).await.is_err());
        addr = next_incarnation(&child, &addr).await;
    }
    assert!(addr.send(Crash).await.is_err());
    let escalated = recv_escalation(&mut escalations).await;
    assert_eq!(escalated.child, "doomed");
    assert!(escalated.reason.contains("3 times"), "{}", escalated.reason);
    assert!(escalations.try_recv().is_err(), "exactly one escalation");
    assert_eq!(starts.load(Ordering::SeqCst), 3);
    assert!(
        child.addr().is_none(),
        "an escalated child is not restarted"
    );
    assert!(capture.lines().iter().any(|l| l.contains("escalating")));
}

#[actix_rt::test]
async fn failing_factory_counts_against_the_budget() {
    let capture = Capture::default();
    let (tx, mut escalations) = mpsc::unbounded_channel();
    let parent = Parent(tx).start();
    let sup = Supervisor::new(
        "s",
        &capture.logger(),
        fast_policy(1),
        Escalation::Notify(parent.recipient()),
    )
    .start();
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let spec = ChildSpec::new("broken", move || -> Result<Worker, _> {
        c.fetch_add(1, Ordering::SeqCst);
        Err("state file unreadable".into())
    });
    let child = sup.send(SpawnChild(spec)).await.unwrap();
    let escalated = recv_escalation(&mut escalations).await;
    assert_eq!(escalated.child, "broken");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "initial start + one restart"
    );
    assert!(child.addr().is_none());
    assert!(
        capture
            .lines()
            .iter()
            .any(|l| l.contains("state file unreadable"))
    );
}

/// Holds an `Rc`, so it is not `Send`: it must be built on its arbiter.
struct Local {
    served: std::rc::Rc<std::cell::Cell<u32>>,
}

impl Actor for Local {
    type Context = Context<Self>;
}

impl Handler<Ping> for Local {
    type Result = u32;
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> u32 {
        self.served.set(self.served.get() + 1);
        self.served.get()
    }
}

impl Handler<Crash> for Local {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("local worker asked to crash (expected in this test)");
    }
}

#[actix_rt::test]
async fn non_send_child_runs_and_restarts_on_another_arbiter() {
    let capture = Capture::default();
    let sup = Supervisor::new(
        "s",
        &capture.logger(),
        fast_policy(3),
        Escalation::StopSystem,
    )
    .start();
    let arbiter = Arbiter::new();
    let main_thread = std::thread::current().id();
    let spec = ChildSpec::new("local", move || {
        assert_ne!(
            std::thread::current().id(),
            main_thread,
            "built on the child's arbiter"
        );
        Ok(Local {
            served: Default::default(),
        })
    })
    .on_arbiter(arbiter.handle());
    let child = sup.send(SpawnChild(spec)).await.unwrap();
    let mut rx = child.subscribe();
    let first = actix_rt::time::timeout(Duration::from_secs(10), rx.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(first.send(Ping).await.unwrap(), 1);
    assert!(first.send(Crash).await.is_err());
    let second = actix_rt::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|a| matches!(a, Some(new) if *new != first)),
    )
    .await
    .unwrap()
    .unwrap()
    .clone()
    .unwrap();
    assert_eq!(second.send(Ping).await.unwrap(), 1);
    sup.send(StopSupervisor).await.unwrap();
    arbiter.stop();
}

#[actix_rt::test]
async fn factory_failing_on_another_arbiter_counts_and_escalates() {
    let capture = Capture::default();
    let (tx, mut escalations) = mpsc::unbounded_channel();
    let parent = Parent(tx).start();
    let sup = Supervisor::new(
        "s",
        &capture.logger(),
        fast_policy(1),
        Escalation::Notify(parent.recipient()),
    )
    .start();
    let arbiter = Arbiter::new();
    let calls = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&calls);
    let spec = ChildSpec::new("broken-remote", move || -> Result<Local, _> {
        c.fetch_add(1, Ordering::SeqCst);
        Err("segment file unreadable".into())
    })
    .on_arbiter(arbiter.handle());
    sup.send(SpawnChild(spec)).await.unwrap();
    let escalated = recv_escalation(&mut escalations).await;
    assert_eq!(escalated.child, "broken-remote");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "initial start + one restart"
    );
    assert!(
        capture
            .lines()
            .iter()
            .any(|l| l.contains("segment file unreadable"))
    );
    arbiter.stop();
}

/// Like [`Worker`], but every handler runs through `guarded`. Each
/// incarnation counts what it served in its own counter. `Crash` panics
/// while holding the journal's lock, so the journal is poisoned and
/// `stopped` (which reads it, as a real actor would flush its state)
/// panics too: without the guard that second panic happens while the
/// first one unwinds (actix stops the dropped context in its `Drop`) and
/// aborts the process.
struct Sturdy {
    served: Arc<AtomicU32>,
    journal: Mutex<u32>,
    poison: Poison,
}

impl Actor for Sturdy {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        let _last = *self.journal.lock().expect("journal intact");
    }
}

impl Guarded for Sturdy {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

impl Handler<Ping> for Sturdy {
    type Result = GuardedReply<u32>;
    fn handle(&mut self, _: Ping, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            act.served.fetch_add(1, Ordering::SeqCst) + 1
        })
    }
}

impl Handler<Crash> for Sturdy {
    type Result = GuardedReply<()>;
    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let mut journal = act.journal.lock().unwrap();
            *journal += 1;
            panic!("sturdy worker asked to crash (expected in this test)")
        })
    }
}

/// Sends each message through its own clone of `addr`: a clone's first
/// `send` is queued even past the mailbox capacity, so all of them sit in
/// the mailbox before the actor runs again (as with many sessions).
fn queue<A, M>(addr: &Addr<A>, n: usize, msg: impl Fn() -> M) -> Vec<actix::dev::Request<A, M>>
where
    A: Actor<Context = Context<A>> + Handler<M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    (0..n).map(|_| addr.clone().send(msg())).collect()
}

#[actix_rt::test]
async fn queued_messages_behind_a_panic_are_refused_and_the_child_restarts() {
    let capture = Capture::default();
    let sup = Supervisor::new(
        "s",
        &capture.logger(),
        fast_policy(3),
        Escalation::StopSystem,
    )
    .start();
    let incarnations: Arc<Mutex<Vec<Arc<AtomicU32>>>> = Arc::default();
    let inc = Arc::clone(&incarnations);
    let spec = ChildSpec::new("sturdy", move || {
        let served = Arc::new(AtomicU32::new(0));
        inc.lock().unwrap().push(Arc::clone(&served));
        Ok(Sturdy {
            served,
            journal: Mutex::new(0),
            poison: Poison::default(),
        })
    });
    let child = sup.send(SpawnChild(spec)).await.unwrap();
    let first = child.addr().unwrap();
    assert_eq!(first.send(Ping).await.unwrap(), 1);

    // A panic with 1000 requests queued behind it, a second `Crash` among
    // them and 500 more requests: every one is answered with an error (the
    // reply channel closes), none reaches the panicked instance, and the
    // process survives the panic in `stopped`.
    let crash = first.send(Crash);
    let before = queue(&first, 1000, || Ping);
    let second_crash = queue(&first, 1, || Crash);
    let after = queue(&first, 500, || Ping);
    assert!(crash.await.is_err(), "the panicking request gets no reply");
    for reply in futures_util::future::join_all(before.into_iter().chain(after)).await {
        assert!(reply.is_err(), "a queued request was served: {reply:?}");
    }
    for reply in futures_util::future::join_all(second_crash).await {
        assert!(reply.is_err());
    }
    assert_eq!(
        incarnations.lock().unwrap()[0].load(Ordering::SeqCst),
        1,
        "no queued request reached the panicked instance"
    );

    let second = next_incarnation_of(&child, &first).await;
    assert_eq!(
        second.send(Ping).await.unwrap(),
        1,
        "fresh from the factory"
    );
    assert_eq!(incarnations.lock().unwrap().len(), 2);
    let status = sup.send(GetChildStatus).await.unwrap();
    assert_eq!(status[0].restarts, 1);
    assert!(status[0].running);
    sup.send(StopSupervisor).await.unwrap();
}

#[actix_rt::test]
async fn children_stopped_for_good_leave_no_entries_behind() {
    let capture = Capture::default();
    let sup = Supervisor::new(
        "s",
        &capture.logger(),
        fast_policy(3),
        Escalation::StopSystem,
    )
    .start();
    let keep_starts = Arc::new(AtomicU32::new(0));
    let keeper = sup
        .send(SpawnChild(counting_spec("keeper", &keep_starts)))
        .await
        .unwrap();
    // 100 children come and go (as a consumer's pull services do).
    for i in 0..100 {
        let starts = Arc::new(AtomicU32::new(0));
        let name = format!("passing-{i}");
        let child = sup
            .send(SpawnChild(counting_spec(&name, &starts)))
            .await
            .unwrap();
        assert_eq!(child.addr().unwrap().send(Ping).await.unwrap(), 1);
        assert_eq!(sup.send(StopChild(name)).await.unwrap(), 1);
    }
    let status = sup.send(GetChildStatus).await.unwrap();
    assert!(status.len() <= 2, "{status:?}");
    // A child in a reused slot is supervised like any other: a panic
    // restarts it, and only it.
    let starts = Arc::new(AtomicU32::new(0));
    let last = sup
        .send(SpawnChild(counting_spec("last", &starts)))
        .await
        .unwrap();
    let first = last.addr().unwrap();
    let _ = first.send(Crash).await;
    let second = next_incarnation(&last, &first).await;
    assert_eq!(second.send(Ping).await.unwrap(), 1);
    assert_eq!(starts.load(Ordering::SeqCst), 2);
    assert_eq!(keep_starts.load(Ordering::SeqCst), 1);
    assert_eq!(keeper.addr().unwrap().send(Ping).await.unwrap(), 1);
    sup.send(StopSupervisor).await.unwrap();
}
