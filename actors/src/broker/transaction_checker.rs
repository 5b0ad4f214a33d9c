//! `TransactionChecker`: asks producers about half messages left
//! undecided, and rolls back those that stay so (RocketMQ's
//! `TransactionalMessageCheckService`).
//!
//! Every `check_interval` it walks `RMQ_SYS_TRANS_HALF_TOPIC` queue 0 from
//! its durable progress, with the op records
//! (`RMQ_SYS_TRANS_OP_HALF_TOPIC`) read from theirs; the decisions are
//! made by [`plan_pass`], a plain function:
//!
//! - a half message with an op record (by queue offset or transaction id,
//!   also found through the key index) is done;
//! - one superseded by a later copy of itself (an earlier check re-put
//!   it) is done: the copy carries on;
//! - the walk stops at the first half message younger than `timeout` (the
//!   ones after it are younger still) or stored after the pass began;
//! - one checked `check_max` times already is rolled back (through the
//!   [`super::EndTransactionService`], as a producer's rollback would be);
//! - any other is checked: re-put at the end of the half queue with its
//!   check count one higher (the count lives in the commit log), then
//!   `CHECK_TRANSACTION_STATE` is pushed, with the copy's offsets, to one
//!   live producer of its group (round robin over the group's
//!   connections: the sender, or any other member if it is gone). Its
//!   answer is an `END_TRANSACTION`.
//!
//! The progress (half and op queue offsets) is written to a state file
//! (`<data>/config/transaction_checker.msgpack`) after each pass, once the
//! pass's re-puts are stored: after a restart the walk goes on from there,
//! and a half message re-put before a crash is superseded by its copy, not
//! checked twice.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::ha::HaState;
use std::time::Duration;

use actix::prelude::*;
use actormq_protocol::request::{
    CheckTransactionStateRequest, EndTransactionRequest, TransactionDecision,
};
use actormq_protocol::system_topic::{TRANS_HALF_TOPIC, TRANS_OP_HALF_TOPIC};
use actormq_protocol::{MessageId, ResponseCode};
use serde::{Deserialize, Serialize};
use slog::{Logger, debug, info, o, warn};

use super::broker_store::BrokerStore;
use super::commit_log::{CommitLogActor, PutInternal};
use super::end_transaction::EndTransactionService;
use super::group_manager::{GetProducerConnections, GroupManager};
use super::group_notifier::{GroupNotifier, PushTransactionCheck};
use super::half_message::{self, HalfMessage, OpRecord};
use super::persist::{self, StateFile};
use super::stored_codec::encode_views;
use crate::runtime::guard::{Guarded, GuardedReply, Poison, guarded};
use crate::runtime::{Call, ChildRef, ServiceError};

/// Settings of the [`TransactionChecker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionConfig {
    /// Age of an undecided half message before it is checked
    /// (`transaction_timeout_ms`). Default 6 s.
    pub timeout: Duration,
    /// Time between two passes (`transaction_check_interval_ms`). Default
    /// 60 s.
    pub check_interval: Duration,
    /// Checks before a half message is rolled back
    /// (`transaction_check_max`). Default 15.
    pub check_max: u32,
    /// Most half messages one pass walks (the next pass follows at once
    /// when it stopped there). Default 2048.
    pub max_walk: usize,
    /// The progress state file
    /// (`<data>/config/transaction_checker.msgpack`).
    pub path: PathBuf,
    /// This broker's address (in the message ids of checks).
    pub store_host: std::net::SocketAddr,
}

impl TransactionConfig {
    /// Defaults, the state file at `path`.
    pub fn new(path: PathBuf, store_host: std::net::SocketAddr) -> Self {
        Self {
            timeout: Duration::from_millis(6_000),
            check_interval: Duration::from_millis(60_000),
            check_max: 15,
            max_walk: 2048,
            path,
            store_host,
        }
    }
}

/// The checker's durable progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Next half queue offset to look at.
    pub half: u64,
    /// Next op queue offset to read.
    pub op: u64,
}

/// What a pass does to one half message ([`plan_pass`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Re-put it with one more check and ask a producer.
    Check(HalfMessage),
    /// Checked `check_max` times: roll it back.
    RollBack(HalfMessage),
}

/// The outcome of [`plan_pass`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassPlan {
    /// What to do, in half queue order.
    pub actions: Vec<Action>,
    /// The progress once the actions are done.
    pub progress: Progress,
    /// Whether the walk stopped at `max_walk` (more may be due now).
    pub more: bool,
}

/// The inputs of a pass beside the half messages and op records.
#[derive(Debug, Clone, Copy)]
pub struct PassInput {
    /// Where the walk starts.
    pub progress: Progress,
    /// Now (ms).
    pub now_ms: u64,
    /// When the pass began (ms): messages stored since are left alone.
    pub pass_start_ms: u64,
    /// Age before a check (ms).
    pub timeout_ms: u64,
    /// Checks before a rollback.
    pub check_max: u32,
    /// Whether `halves` ended at `max_walk` rather than at the queue's end.
    pub truncated: bool,
}

/// Plans one pass over `halves` (consecutive half queue offsets from
/// `input.progress.half`; `None` = a record that is gone or malformed)
/// with the op records `ops` (consecutive from `input.progress.op`).
/// `decided_elsewhere(id)` says whether the key index knows a decision
/// for a transaction id; `latest_copy(id)` the highest half queue offset
/// holding transaction `id`. See the module docs.
pub fn plan_pass(
    input: PassInput,
    halves: &[(u64, Option<HalfMessage>)],
    ops: &[OpRecord],
    decided_elsewhere: impl Fn(&str) -> bool,
    latest_copy: impl Fn(&str) -> Option<u64>,
) -> PassPlan {
    let done_offsets: HashSet<u64> = ops.iter().map(|o| o.half_offset).collect();
    let done_ids: HashSet<&str> = ops.iter().map(|o| o.transaction_id.as_str()).collect();
    let mut last_in_walk: HashMap<&str, u64> = HashMap::new();
    for (q, h) in halves {
        if let Some(h) = h {
            let e = last_in_walk.entry(h.transaction_id.as_str()).or_insert(*q);
            *e = (*e).max(*q);
        }
    }
    let mut actions = Vec::new();
    let mut next = input.progress.half;
    let mut stopped = false;
    for (q, h) in halves {
        let Some(h) = h else {
            next = q + 1;
            continue;
        };
        let id = h.transaction_id.as_str();
        let decided = done_offsets.contains(q) || done_ids.contains(id);
        let superseded = last_in_walk.get(id).is_some_and(|&l| l > *q)
            || latest_copy(id).is_some_and(|l| l > *q);
        if decided || superseded || decided_elsewhere(id) {
            next = q + 1;
            continue;
        }
        if h.store_timestamp_ms >= input.pass_start_ms
            || input.now_ms.saturating_sub(h.store_timestamp_ms) < input.timeout_ms
        {
            stopped = true;
            break;
        }
        actions.push(if h.check_times >= input.check_max {
            Action::RollBack(h.clone())
        } else {
            Action::Check(h.clone())
        });
        next = q + 1;
    }
    // Op records are needed while the half messages they decide may
    // still be walked: keep the first one at or past the new progress.
    let op = ops
        .iter()
        .find(|o| o.half_offset >= next)
        .map_or(input.progress.op + ops.len() as u64, |o| o.op_offset);
    PassPlan {
        actions,
        progress: Progress { half: next, op },
        more: input.truncated && !stopped,
    }
}

/// Counters of the [`TransactionChecker`] ([`GetCheckerStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckerStats {
    /// Passes completed.
    pub passes: u64,
    /// Checks pushed to a producer.
    pub checks_sent: u64,
    /// Checks made while no producer of the group was online (counted).
    pub checks_unanswerable: u64,
    /// Half messages rolled back after the last check.
    pub rolled_back: u64,
    /// The progress.
    pub progress: Progress,
}

/// Ask the [`TransactionChecker`] for its counters.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "CheckerStats")]
pub struct GetCheckerStats;

/// Run a pass now (tests, tools); ignored while one runs.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct RunCheckPass;

/// The actor. See the module docs.
pub struct TransactionChecker {
    store: BrokerStore,
    writer: ChildRef<CommitLogActor>,
    /// Idle while this broker is a slave (its master does this work).
    ha: Option<Arc<HaState>>,
    end: ChildRef<EndTransactionService>,
    groups: ChildRef<GroupManager>,
    notifier: ChildRef<GroupNotifier>,
    config: TransactionConfig,
    state: Arc<StateFile>,
    progress: Progress,
    running: bool,
    round_robin: usize,
    stats: CheckerStats,
    logger: Logger,
    poison: Poison,
}

impl TransactionChecker {
    /// Idles while `ha` says this broker is a slave (builder style): the
    /// master does this work, and its results reach the slave through
    /// the commit log.
    pub fn with_ha(mut self, ha: Arc<HaState>) -> Self {
        self.ha = Some(ha);
        self
    }

    fn is_slave(&self) -> bool {
        self.ha.as_ref().is_some_and(|h| !h.role().is_master())
    }

    /// Loads the progress from `config.path` (a missing file: from the
    /// start).
    pub fn load(
        config: TransactionConfig,
        store: BrokerStore,
        writer: ChildRef<CommitLogActor>,
        end: ChildRef<EndTransactionService>,
        groups: ChildRef<GroupManager>,
        notifier: ChildRef<GroupNotifier>,
        logger: &Logger,
    ) -> Result<Self, persist::PersistError> {
        let logger = logger.new(o!("actor" => "TransactionChecker"));
        let progress: Progress =
            persist::load_or_backup(&config.path, &logger)?.unwrap_or_default();
        Ok(Self {
            state: StateFile::for_path(&config.path),
            store,
            writer,
            end,
            groups,
            notifier,
            config,
            progress,
            running: false,
            round_robin: 0,
            stats: CheckerStats {
                progress,
                ..CheckerStats::default()
            },
            logger,
            ha: None,
            poison: Poison::default(),
        })
    }

    /// Reads the walk and plans it.
    fn plan(&self) -> PassPlan {
        let now = super::now_ms();
        let store = &self.store;
        let half_min = store.min_offset(TRANS_HALF_TOPIC, 0);
        let half_max = store.max_offset(TRANS_HALF_TOPIC, 0);
        let from = self.progress.half.max(half_min);
        let to = half_max.min(from + self.config.max_walk as u64);
        let halves: Vec<(u64, Option<HalfMessage>)> = (from..to)
            .map(|q| {
                let h = store
                    .read_by_queue_offset(TRANS_HALF_TOPIC, 0, q)
                    .and_then(|v| HalfMessage::from_view(&v));
                (q, h)
            })
            .collect();
        let op_from = self
            .progress
            .op
            .max(store.min_offset(TRANS_OP_HALF_TOPIC, 0));
        // Bounded too: op records past the cap are found through the key
        // index meanwhile, and read once the progress gets to them.
        let op_to = store
            .max_offset(TRANS_OP_HALF_TOPIC, 0)
            .min(op_from + 4 * self.config.max_walk as u64);
        let mut ops = Vec::new();
        for q in op_from..op_to {
            // Unreadable op records are skipped (they decide nothing).
            if let Some(op) = store
                .read_by_queue_offset(TRANS_OP_HALF_TOPIC, 0, q)
                .and_then(|v| OpRecord::from_view(&v))
            {
                ops.push(op);
            }
        }
        // Keep op offsets consecutive for the progress rule: a gap (an
        // unreadable record) ends the list there.
        let mut expect = op_from;
        let ops: Vec<OpRecord> = ops
            .into_iter()
            .take_while(|o| {
                let ok = o.op_offset == expect;
                expect += 1;
                ok
            })
            .collect();
        let input = PassInput {
            progress: Progress {
                half: from,
                op: op_from,
            },
            now_ms: now,
            pass_start_ms: now,
            timeout_ms: self.config.timeout.as_millis() as u64,
            check_max: self.config.check_max,
            truncated: to < half_max,
        };
        plan_pass(
            input,
            &halves,
            &ops,
            |id| {
                store
                    .query_by_key(TRANS_OP_HALF_TOPIC, id, 0, u64::MAX, 4)
                    .is_ok_and(|v| {
                        v.iter()
                            .filter_map(OpRecord::from_view)
                            .any(|o| o.transaction_id == id)
                    })
            },
            |id| {
                store
                    .query_by_key(TRANS_HALF_TOPIC, id, 0, u64::MAX, 64)
                    .ok()?
                    .iter()
                    .filter(|v| v.topic() == TRANS_HALF_TOPIC)
                    .map(|v| v.queue_offset())
                    .max()
            },
        )
    }

    fn start_pass(&mut self, ctx: &mut Context<Self>) {
        if self.running || self.is_slave() {
            return;
        }
        let plan = self.plan();
        if plan.actions.is_empty() && plan.progress == self.progress {
            self.stats.passes += 1;
            return;
        }
        self.running = true;
        let work = self.carry_out(plan.actions, plan.progress);
        let more = plan.more;
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(work).map(move |res, act, ctx| {
                act.running = false;
                act.stats.passes += 1;
                let Outcome {
                    progress,
                    checks_sent,
                    unanswerable,
                    rolled_back,
                    round_robin,
                } = res;
                act.round_robin = round_robin;
                act.stats.checks_sent += checks_sent;
                act.stats.checks_unanswerable += unanswerable;
                act.stats.rolled_back += rolled_back;
                if progress != act.progress {
                    act.progress = progress;
                    act.stats.progress = progress;
                    let write = act.state.persist(&progress);
                    let logger = act.logger.clone();
                    ctx.spawn(
                        actix::fut::wrap_future::<_, Self>(write).map(move |res, _, ctx| {
                            if let Err(e) = res {
                                warn!(logger, "cannot persist the checker's progress"; "error" => %e);
                                // The supervisor restarts it from the last
                                // good file: some checks are made again.
                                ctx.stop();
                            }
                        }),
                    );
                }
                if more {
                    ctx.notify(RunCheckPass);
                }
            }),
        );
    }

    /// Carries out a pass's actions in order; the progress stops at the
    /// first action that could not be carried out.
    fn carry_out(
        &self,
        actions: Vec<Action>,
        planned: Progress,
    ) -> impl Future<Output = Outcome> + 'static {
        let store = self.store.clone();
        let writer = self.writer.clone();
        let end = self.end.clone();
        let groups = self.groups.clone();
        let notifier = self.notifier.clone();
        let store_host = self.config.store_host;
        let logger = self.logger.clone();
        let mut out = Outcome {
            progress: planned,
            round_robin: self.round_robin,
            ..Outcome::default()
        };
        async move {
            let mut conns_by_group: HashMap<String, BTreeSet<u64>> = HashMap::new();
            for action in actions {
                let (half, result) = match action {
                    Action::RollBack(h) => {
                        let r = roll_back(&end, &h).await;
                        if let Ok(true) = r {
                            out.rolled_back += 1;
                            warn!(logger, "half message rolled back after its last check";
                                "transaction_id" => &h.transaction_id, "checks" => h.check_times,
                                "topic" => &h.real_topic);
                        }
                        (h, r.map(drop))
                    }
                    Action::Check(h) => {
                        let r = check(
                            &store,
                            &writer,
                            &groups,
                            &notifier,
                            store_host,
                            &h,
                            &mut conns_by_group,
                            &mut out,
                            &logger,
                        )
                        .await;
                        (h, r)
                    }
                };
                if let Err(e) = result {
                    warn!(logger, "transaction check pass stopped"; "transaction_id" => &half.transaction_id,
                        "error" => %e);
                    out.progress.half = half.queue_offset;
                    out.progress.op = out.progress.op.min(planned.op);
                    break;
                }
            }
            out
        }
    }
}

#[derive(Debug, Default)]
struct Outcome {
    progress: Progress,
    checks_sent: u64,
    unanswerable: u64,
    rolled_back: u64,
    round_robin: usize,
}

/// Rolls `h` back; `Ok(false)` when it was decided meanwhile.
async fn roll_back(
    end: &ChildRef<EndTransactionService>,
    h: &HalfMessage,
) -> Result<bool, ServiceError> {
    let Some(end) = end.addr() else {
        return Err(ServiceError::busy(
            "the end-transaction service is restarting",
        ));
    };
    let req = EndTransactionRequest {
        producer_group: h.producer_group.clone(),
        tran_state_table_offset: h.queue_offset,
        commit_log_offset: h.commit_log_offset,
        decision: TransactionDecision::Rollback,
        from_transaction_check: true,
        msg_id: String::new(),
        transaction_id: Some(h.transaction_id.clone()),
    };
    match end.send(Call::new(req)).await.map_err(ServiceError::from)? {
        Ok(_) => Ok(true),
        // Decided meanwhile: nothing to roll back.
        Err(e) if e.code == ResponseCode::TransactionFailed => Ok(false),
        Err(e) => Err(e),
    }
}

#[allow(clippy::too_many_arguments)]
async fn check(
    store: &BrokerStore,
    writer: &ChildRef<CommitLogActor>,
    groups: &ChildRef<GroupManager>,
    notifier: &ChildRef<GroupNotifier>,
    store_host: std::net::SocketAddr,
    h: &HalfMessage,
    conns_by_group: &mut HashMap<String, BTreeSet<u64>>,
    out: &mut Outcome,
    logger: &Logger,
) -> Result<(), ServiceError> {
    let view = store
        .read_at(h.commit_log_offset)
        .ok_or_else(|| ServiceError::system("half message gone"))?;
    let copy = half_message::checked_copy(&view, h.check_times + 1)?;
    let writer = writer
        .addr()
        .ok_or_else(|| ServiceError::busy("the commit log is restarting"))?;
    let appended = writer
        .send(PutInternal {
            messages: vec![copy],
            create_as: Some(super::topic_manager::system_topic_config(TRANS_HALF_TOPIC)),
        })
        .await
        .map_err(ServiceError::from)?
        .pop()
        .ok_or_else(|| ServiceError::system("nothing appended"))??;
    if !conns_by_group.contains_key(&h.producer_group) {
        let conns = match groups.addr() {
            Some(g) => g
                .send(GetProducerConnections {
                    group: h.producer_group.clone(),
                })
                .await
                .unwrap_or_default(),
            None => BTreeSet::new(),
        };
        conns_by_group.insert(h.producer_group.clone(), conns);
    }
    let conns: Vec<u64> = conns_by_group[&h.producer_group].iter().copied().collect();
    let copy_view = store.read_at(appended.commit_log_offset);
    let req = CheckTransactionStateRequest {
        producer_group: h.producer_group.clone(),
        tran_state_table_offset: appended.queue_offset,
        commit_log_offset: appended.commit_log_offset,
        msg_id: MessageId {
            store_host,
            commit_log_offset: appended.commit_log_offset,
        }
        .encode(),
        transaction_id: Some(h.transaction_id.clone()),
    };
    let body = copy_view.map_or_else(bytes::Bytes::new, |v| encode_views(&[v]));
    // Round robin over the group's connections; one that is closed is
    // skipped for the next.
    let Some(notifier) = notifier.addr() else {
        out.unanswerable += 1;
        return Ok(());
    };
    for i in 0..conns.len() {
        let conn_id = conns[(out.round_robin + i) % conns.len()];
        let pushed = notifier
            .send(PushTransactionCheck {
                conn_id,
                req: req.clone(),
                body: body.clone(),
            })
            .await
            .map_err(ServiceError::from)
            .and_then(|r| r);
        match pushed {
            Ok(()) => {
                out.round_robin = out.round_robin.wrapping_add(i + 1);
                out.checks_sent += 1;
                debug!(logger, "transaction check sent"; "transaction_id" => &h.transaction_id,
                    "conn" => conn_id, "check" => h.check_times + 1);
                return Ok(());
            }
            Err(e) => {
                debug!(logger, "transaction check not pushed"; "conn" => conn_id, "error" => %e);
            }
        }
    }
    out.unanswerable += 1;
    info!(logger, "no producer online to check a half message"; "group" => &h.producer_group,
        "transaction_id" => &h.transaction_id, "check" => h.check_times + 1);
    Ok(())
}

impl Actor for TransactionChecker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.check_interval, |act, ctx| act.start_pass(ctx));
    }
}

impl Guarded for TransactionChecker {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

impl Handler<RunCheckPass> for TransactionChecker {
    type Result = GuardedReply<()>;
    fn handle(&mut self, _: RunCheckPass, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, ctx| act.start_pass(ctx))
    }
}

impl Handler<GetCheckerStats> for TransactionChecker {
    type Result = GuardedReply<MessageResult<GetCheckerStats>>;
    fn handle(&mut self, _: GetCheckerStats, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| MessageResult(act.stats))
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::runtime::guard::InjectPanic> for TransactionChecker {
    type Result = GuardedReply<()>;
    fn handle(
        &mut self,
        msg: crate::runtime::guard::InjectPanic,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |_, _| panic!("{}", msg.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half(q: u64, id: &str, stored: u64, checks: u32) -> (u64, Option<HalfMessage>) {
        (
            q,
            Some(HalfMessage {
                queue_offset: q,
                commit_log_offset: q * 100,
                store_timestamp_ms: stored,
                transaction_id: id.into(),
                producer_group: "pg".into(),
                real_topic: "t".into(),
                real_queue: 0,
                check_times: checks,
            }),
        )
    }

    fn op(op_offset: u64, half_offset: u64, id: &str) -> OpRecord {
        OpRecord {
            op_offset,
            half_offset,
            transaction_id: id.into(),
            decision: TransactionDecision::Commit,
        }
    }

    fn input(half: u64, op: u64, now: u64) -> PassInput {
        PassInput {
            progress: Progress { half, op },
            now_ms: now,
            pass_start_ms: now,
            timeout_ms: 1_000,
            check_max: 3,
            truncated: false,
        }
    }

    fn ids(p: &PassPlan) -> Vec<(String, bool)> {
        p.actions
            .iter()
            .map(|a| match a {
                Action::Check(h) => (h.transaction_id.clone(), true),
                Action::RollBack(h) => (h.transaction_id.clone(), false),
            })
            .collect()
    }

    #[test]
    fn decided_ones_are_skipped_and_due_ones_checked() {
        let halves = [
            half(0, "a", 100, 0),
            half(1, "b", 200, 0),
            half(2, "c", 300, 0),
        ];
        let ops = [op(0, 0, "a")];
        let p = plan_pass(input(0, 0, 5_000), &halves, &ops, |_| false, |_| None);
        assert_eq!(ids(&p), [("b".into(), true), ("c".into(), true)]);
        assert_eq!(p.progress, Progress { half: 3, op: 1 });
        // Decided through the index (an op record read earlier).
        let p = plan_pass(input(0, 0, 5_000), &halves, &[], |id| id == "b", |_| None);
        assert_eq!(ids(&p), [("a".into(), true), ("c".into(), true)]);
    }

    #[test]
    fn the_walk_stops_at_the_first_young_message() {
        let halves = [
            half(5, "a", 100, 0),
            half(6, "b", 4_500, 0),
            half(7, "c", 100, 0),
        ];
        let p = plan_pass(input(5, 0, 5_000), &halves, &[], |_| false, |_| None);
        assert_eq!(ids(&p), [("a".into(), true)]);
        assert_eq!(p.progress.half, 6);
        // Stored after the pass began: left for the next one.
        let mut i = input(5, 0, 5_000);
        i.pass_start_ms = 50;
        let p = plan_pass(i, &halves, &[], |_| false, |_| None);
        assert!(p.actions.is_empty());
        assert_eq!(p.progress.half, 5);
    }

    #[test]
    fn a_copy_supersedes_the_original_and_counts_checks() {
        // "a" was checked once: its copy at 3 carries the count.
        let halves = [
            half(0, "a", 100, 0),
            half(1, "b", 100, 3),
            (2, None),
            half(3, "a", 200, 1),
        ];
        let p = plan_pass(input(0, 0, 5_000), &halves, &[], |_| false, |_| None);
        assert_eq!(ids(&p), [("b".into(), false), ("a".into(), true)]);
        assert_eq!(p.progress.half, 4);
        // A copy beyond the walk (known to the index) supersedes too.
        let p = plan_pass(
            input(0, 0, 5_000),
            &halves[..1],
            &[],
            |_| false,
            |id| (id == "a").then_some(9),
        );
        assert!(p.actions.is_empty());
        assert_eq!(p.progress.half, 1);
    }

    #[test]
    fn op_progress_keeps_records_still_needed() {
        let halves = [half(0, "a", 100, 0), half(1, "b", 4_900, 0)];
        // The op of "c" (half offset 5) is still needed: progress stops at it.
        let ops = [op(10, 0, "a"), op(11, 5, "c"), op(12, 0, "z")];
        let p = plan_pass(input(0, 10, 5_000), &halves, &ops, |_| false, |_| None);
        assert!(p.actions.is_empty());
        assert_eq!(p.progress, Progress { half: 1, op: 11 });
        // Nothing to read: unchanged.
        let p = plan_pass(input(2, 13, 5_000), &[], &[], |_| false, |_| None);
        assert_eq!(p.progress, Progress { half: 2, op: 13 });
        assert!(!p.more);
    }

    #[test]
    fn a_truncated_walk_asks_for_more() {
        let halves = [half(0, "a", 100, 0)];
        let mut i = input(0, 0, 5_000);
        i.truncated = true;
        assert!(plan_pass(i, &halves, &[], |_| false, |_| None).more);
    }
}
