//! `EndTransactionService`: serves `END_TRANSACTION` (37), a producer's
//! commit or rollback of a half message (also its answer to a broker
//! check, and the [`super::TransactionChecker`]'s rollback after the last
//! check).
//!
//! - **Commit**: the half message (read at the request's commit log
//!   offset, [`super::half_message`]) is re-put to its real topic and
//!   queue, transaction properties removed and the same `UNIQ_KEY`; then an
//!   op record is written to `RMQ_SYS_TRANS_OP_HALF_TOPIC`.
//! - **Rollback**: only the op record.
//! - **Unknown**: nothing; the checker asks again later.
//!
//! Each transaction is decided once. A second decision (the sender's late
//! commit racing a check-back's, a retry) is answered `TRANSACTION_FAILED`
//! "already committed/rolled back; nothing done" and delivers nothing.
//! What counts as decided is durable: an op record (found through the key
//! index by transaction id) or, for a commit whose op record a crash cut
//! off, the committed message itself in its real topic (same `UNIQ_KEY`);
//! [`Decisions`] covers the moment before the index has caught up.
//! Writes go through the commit log's [`PutInternal`].

use std::collections::{HashMap, VecDeque};

use actix::prelude::*;
use actormq_protocol::ResponseCode;
use actormq_protocol::request::{Empty, EndTransactionRequest, TransactionDecision};
use actormq_protocol::system_topic::TRANS_OP_HALF_TOPIC;
use slog::{Logger, debug, info, o, warn};

use super::broker_store::BrokerStore;
use super::commit_log::{CommitLogActor, InternalMessage, PutInternal};
use super::half_message::{self, HalfMessage, OpRecord};
use crate::runtime::guard::{Guarded, GuardedReply, Poison, guarded};
use crate::runtime::{Call, ChildRef, Reply, ServiceError};

/// Default of how many recent decisions [`Decisions`] remembers.
pub const DEFAULT_RECENT_DECISIONS: usize = 65_536;

/// What to do with a decision ([`Decisions::judge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Carry it out.
    Apply,
    /// Already decided so (or otherwise): nothing to do.
    AlreadyDecided(TransactionDecision),
    /// Unknown: nothing to do now (the checker asks later).
    Ignore,
}

/// Recent decisions by transaction id, so a second decision arriving
/// before the first one's op record is indexed is caught (bounded, oldest
/// forgotten first; older decisions are found in the store). Plain data.
#[derive(Debug, Clone)]
pub struct Decisions {
    by_id: HashMap<String, TransactionDecision>,
    order: VecDeque<String>,
    cap: usize,
}

impl Decisions {
    /// Remembers at most `cap` decisions.
    pub fn new(cap: usize) -> Self {
        Self {
            by_id: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// The verdict on `decision` for `id`, given what the store says
    /// (`durable`: a decision found there).
    pub fn judge(
        &self,
        id: &str,
        decision: TransactionDecision,
        durable: Option<TransactionDecision>,
    ) -> Verdict {
        if let Some(d) = self.by_id.get(id).copied().or(durable) {
            return Verdict::AlreadyDecided(d);
        }
        match decision {
            TransactionDecision::Unknown => Verdict::Ignore,
            _ => Verdict::Apply,
        }
    }

    /// The decision made in this process, if remembered.
    pub fn get(&self, id: &str) -> Option<TransactionDecision> {
        self.by_id.get(id).copied()
    }

    /// `id` is being decided so.
    pub fn record(&mut self, id: &str, decision: TransactionDecision) {
        if self.by_id.insert(id.to_owned(), decision).is_none() {
            self.order.push_back(id.to_owned());
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    /// Carrying out the decision on `id` failed: it is undecided again.
    pub fn forget(&mut self, id: &str) {
        if self.by_id.remove(id).is_some() {
            self.order.retain(|k| k != id);
        }
    }

    /// Decisions remembered.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Counters of the [`EndTransactionService`] ([`GetEndTransactionStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndTransactionStats {
    /// Commits carried out.
    pub commits: u64,
    /// Rollbacks carried out.
    pub rollbacks: u64,
    /// Decisions refused because the transaction was already decided.
    pub duplicates: u64,
}

/// Ask the [`EndTransactionService`] for its counters.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "EndTransactionStats")]
pub struct GetEndTransactionStats;

/// The actor. See the module docs.
pub struct EndTransactionService {
    store: BrokerStore,
    writer: ChildRef<CommitLogActor>,
    decisions: Decisions,
    stats: EndTransactionStats,
    logger: Logger,
    poison: Poison,
}

impl EndTransactionService {
    /// Decisions on half messages of `store`, written through `writer`.
    pub fn new(store: BrokerStore, writer: ChildRef<CommitLogActor>, logger: &Logger) -> Self {
        Self {
            store,
            writer,
            decisions: Decisions::new(DEFAULT_RECENT_DECISIONS),
            stats: EndTransactionStats::default(),
            logger: logger.new(o!("actor" => "EndTransactionService")),
            poison: Poison::default(),
        }
    }

    /// The decision the store holds for `half`: its op record, or for a
    /// commit cut short by a crash (the message delivered, its op record
    /// not written), the committed message in its topic. A commit asked
    /// then is not refused: it completes the first one (op record only).
    fn durable_decision(
        &self,
        half: &HalfMessage,
        asked: TransactionDecision,
    ) -> Option<TransactionDecision> {
        let id = &half.transaction_id;
        let op = self
            .store
            .query_by_key(TRANS_OP_HALF_TOPIC, id, 0, u64::MAX, 4)
            .ok()
            .and_then(|views| {
                views
                    .iter()
                    .filter_map(OpRecord::from_view)
                    .find(|r| &r.transaction_id == id)
                    .map(|r| r.decision)
            });
        if op.is_some() {
            return op;
        }
        (asked != TransactionDecision::Commit && self.committed_exists(half))
            .then_some(TransactionDecision::Commit)
    }

    fn committed_exists(&self, half: &HalfMessage) -> bool {
        self.store
            .query_by_key(&half.real_topic, &half.transaction_id, 0, u64::MAX, 1)
            .is_ok_and(|v| !v.is_empty())
    }

    fn end(
        &mut self,
        req: EndTransactionRequest,
        origin: Option<std::net::SocketAddr>,
    ) -> ResponseActFuture<Self, Result<Reply<Empty>, ServiceError>> {
        let failed = |remark: String| -> ResponseActFuture<Self, _> {
            Box::pin(actix::fut::ready(Err(ServiceError::new(
                ResponseCode::TransactionFailed,
                remark,
            ))))
        };
        let Some(view) = self.store.read_at(req.commit_log_offset) else {
            return failed(format!(
                "no half message at commit log offset {}",
                req.commit_log_offset
            ));
        };
        let Some(half) = HalfMessage::from_view(&view) else {
            return failed(format!(
                "the message at commit log offset {} is not a half message",
                req.commit_log_offset
            ));
        };
        if half.producer_group != req.producer_group {
            return failed(format!(
                "half message of producer group {}, not {}",
                half.producer_group, req.producer_group
            ));
        }
        if let Some(id) = &req.transaction_id
            && !id.is_empty()
            && id != &half.transaction_id
        {
            return failed(format!(
                "transaction id {id} does not match the half message's {}",
                half.transaction_id
            ));
        }
        let durable = match self.decisions.get(&half.transaction_id) {
            Some(_) => None,
            None => self.durable_decision(&half, req.decision),
        };
        match self
            .decisions
            .judge(&half.transaction_id, req.decision, durable)
        {
            Verdict::Ignore => {
                debug!(self.logger, "transaction state unknown"; "transaction_id" => &half.transaction_id,
                    "from_check" => req.from_transaction_check);
                return Box::pin(actix::fut::ready(Ok(Reply::ok(Empty {}))));
            }
            Verdict::AlreadyDecided(d) => {
                self.stats.duplicates += 1;
                info!(self.logger, "second decision refused"; "transaction_id" => &half.transaction_id,
                    "decided" => half_message::decision_name(d), "asked" => half_message::decision_name(req.decision));
                let done = match d {
                    TransactionDecision::Commit => "committed",
                    _ => "rolled back",
                };
                return failed(format!(
                    "transaction {} was already {done}; nothing done",
                    half.transaction_id
                ));
            }
            Verdict::Apply => {}
        }
        let decision = req.decision;
        let commit = if decision == TransactionDecision::Commit && !self.committed_exists(&half) {
            match half_message::committed(&view, &half) {
                Ok(m) => Some(m),
                Err(e) => return Box::pin(actix::fut::ready(Err(e))),
            }
        } else {
            None
        };
        let op = match half_message::op_record(&half, decision, origin) {
            Ok(op) => op,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let Some(writer) = self.writer.addr() else {
            return Box::pin(actix::fut::ready(Err(ServiceError::busy(
                "the commit log is restarting",
            ))));
        };
        self.decisions.record(&half.transaction_id, decision);
        let id = half.transaction_id.clone();
        let work = async move {
            if let Some(m) = commit {
                put_one(&writer, m, None).await?;
            }
            put_one(
                &writer,
                op,
                Some(super::topic_manager::system_topic_config(
                    TRANS_OP_HALF_TOPIC,
                )),
            )
            .await
        };
        Box::pin(
            actix::fut::wrap_future::<_, Self>(work).map(move |res, act, _| match res {
                Ok(()) => {
                    match decision {
                        TransactionDecision::Commit => act.stats.commits += 1,
                        _ => act.stats.rollbacks += 1,
                    }
                    debug!(act.logger, "transaction decided"; "transaction_id" => &id,
                        "decision" => half_message::decision_name(decision));
                    Ok(Reply::ok(Empty {}))
                }
                Err(e) => {
                    warn!(act.logger, "transaction decision not stored"; "transaction_id" => &id, "error" => %e);
                    act.decisions.forget(&id);
                    Err(e)
                }
            }),
        )
    }
}

/// Appends one message through the writer.
pub async fn put_one(
    writer: &Addr<CommitLogActor>,
    message: InternalMessage,
    create_as: Option<actormq_protocol::request::TopicConfig>,
) -> Result<(), ServiceError> {
    let mut res = writer
        .send(PutInternal {
            messages: vec![message],
            create_as,
        })
        .await
        .map_err(ServiceError::from)?;
    match res.pop() {
        Some(r) => r.map(drop),
        None => Err(ServiceError::system("nothing appended")),
    }
}

impl Actor for EndTransactionService {
    type Context = Context<Self>;
}

impl Guarded for EndTransactionService {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

impl Handler<Call<EndTransactionRequest>> for EndTransactionService {
    type Result = GuardedReply<ResponseActFuture<Self, Result<Reply<Empty>, ServiceError>>>;
    fn handle(
        &mut self,
        call: Call<EndTransactionRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let origin = call.origin.map(|o| o.peer);
            act.end(call.req, origin)
        })
    }
}

impl Handler<GetEndTransactionStats> for EndTransactionService {
    type Result = GuardedReply<MessageResult<GetEndTransactionStats>>;
    fn handle(&mut self, _: GetEndTransactionStats, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| MessageResult(act.stats))
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::runtime::guard::InjectPanic> for EndTransactionService {
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
    use TransactionDecision::{Commit, Rollback, Unknown};

    #[test]
    fn a_transaction_is_decided_once() {
        let mut d = Decisions::new(8);
        assert_eq!(d.judge("a", Commit, None), Verdict::Apply);
        assert_eq!(d.judge("a", Unknown, None), Verdict::Ignore);
        d.record("a", Commit);
        assert_eq!(d.judge("a", Commit, None), Verdict::AlreadyDecided(Commit));
        assert_eq!(
            d.judge("a", Rollback, None),
            Verdict::AlreadyDecided(Commit)
        );
        assert_eq!(d.judge("a", Unknown, None), Verdict::AlreadyDecided(Commit));
        // The store's word counts when memory has none.
        assert_eq!(
            d.judge("b", Commit, Some(Rollback)),
            Verdict::AlreadyDecided(Rollback)
        );
        // A failed write makes it undecided again.
        d.forget("a");
        assert_eq!(d.judge("a", Rollback, None), Verdict::Apply);
        assert!(d.is_empty());
    }

    #[test]
    fn recent_decisions_are_bounded() {
        let mut d = Decisions::new(2);
        d.record("a", Commit);
        d.record("b", Rollback);
        d.record("b", Rollback);
        d.record("c", Commit);
        assert_eq!(d.len(), 2);
        assert_eq!(d.get("a"), None);
        assert_eq!(d.get("b"), Some(Rollback));
        assert_eq!(d.get("c"), Some(Commit));
    }
}
