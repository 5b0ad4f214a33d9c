//! Transactional messages: [`TransactionProducer`] and
//! [`TransactionListener`].
//!
//! [`TransactionProducer::send_in_transaction`] sends a **half message**
//! (stored by the broker, invisible to consumers), then runs the
//! listener's local transaction and ends the transaction with its answer:
//! [`TransactionState::Commit`] makes the message deliverable,
//! [`TransactionState::Rollback`] discards it, [`TransactionState::Unknown`]
//! leaves it to the broker's checker. A half message left undecided for
//! `transaction_timeout_ms` is **checked**: the broker asks a live producer
//! of the same group (any instance: the sender may be gone) with
//! `CHECK_TRANSACTION_STATE`, every `transaction_check_interval_ms`, at
//! most `transaction_check_max` times, then rolls it back. The producer
//! answers with [`TransactionListener::check_local_transaction`], sent back
//! as `END_TRANSACTION` (`from_transaction_check`).
//!
//! Both callbacks run on blocking threads (they may query a database); a
//! callback that panics counts as [`TransactionState::Unknown`] and is
//! logged. The check service is a child of the producer's supervisor.
//!
//! ```rust,ignore
//! struct Ledger;
//! impl TransactionListener for Ledger {
//!     fn execute_local_transaction(&self, msg: &Message) -> TransactionState {
//!         TransactionState::Commit
//!     }
//!     fn check_local_transaction(&self, msg: &StoredMessage) -> TransactionState {
//!         TransactionState::Commit
//!     }
//! }
//! let producer = ProducerBuilder::new("transfers").namesrv([ns]).build_transactional(Ledger).await?;
//! let res = producer.send_in_transaction(Message::new("transfers", "a->b 10")).await?;
//! ```

use std::sync::{Arc, Weak};

use actix::prelude::*;
use actormq_protocol::request::{
    CheckTransactionStateRequest, Empty, EndTransactionRequest, TransactionDecision,
};
use actormq_protocol::system_topic::{
    PROPERTY_PRODUCER_GROUP, PROPERTY_REAL_QUEUE_ID, PROPERTY_REAL_TOPIC,
    PROPERTY_TRANSACTION_CHECK_TIMES, PROPERTY_TRANSACTION_PREPARED,
};
use actormq_protocol::{Message, MessageId, StoredMessage, batch};
use actormq_runtime::net::Router;
use actormq_runtime::{Call, ChildRef, Reply};
use slog::{Logger, debug, error, info, warn};

use crate::error::ClientError;
use crate::producer::{Inner, Producer, SendResult, SendStatus, stamp};
use crate::route::is_unreachable;

/// The state of a local transaction, as the listener reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionState {
    /// Done: deliver the message.
    Commit,
    /// Failed: discard the message.
    Rollback,
    /// Not known yet: the broker will ask again
    /// ([`TransactionListener::check_local_transaction`]).
    Unknown,
}

impl TransactionState {
    /// The wire decision.
    pub fn decision(self) -> TransactionDecision {
        match self {
            TransactionState::Commit => TransactionDecision::Commit,
            TransactionState::Rollback => TransactionDecision::Rollback,
            TransactionState::Unknown => TransactionDecision::Unknown,
        }
    }
}

/// The producer's side of a transaction.
pub trait TransactionListener: Send + Sync + 'static {
    /// Runs the local transaction of `msg`, once its half message is
    /// stored. Runs on a blocking thread; a panic counts as `Unknown`.
    fn execute_local_transaction(&self, msg: &Message) -> TransactionState;

    /// Answers the broker's check of a half message left undecided (`msg`
    /// as stored, its topic the one it was sent to; its unique key is the
    /// transaction id). Runs on a blocking thread; a panic counts as
    /// `Unknown`.
    fn check_local_transaction(&self, msg: &StoredMessage) -> TransactionState;
}

/// The outcome of [`TransactionProducer::send_in_transaction`].
#[derive(Debug, Clone)]
pub struct TransactionSendResult {
    /// The half message's send.
    pub send: SendResult,
    /// The transaction id (the message's unique key).
    pub transaction_id: String,
    /// What the local transaction answered (`Rollback` without running it
    /// when the half message was not stored cleanly).
    pub state: TransactionState,
    /// Why ending the transaction failed, if it did (the broker's checker
    /// then asks again).
    pub end_error: Option<ClientError>,
}

/// A producer of transactional messages. Cheap to clone. See the module
/// docs.
#[derive(Clone)]
pub struct TransactionProducer {
    producer: Producer,
    listener: Arc<dyn TransactionListener>,
}

impl std::fmt::Debug for TransactionProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionProducer")
            .field("producer", &self.producer)
            .finish()
    }
}

/// Runs a callback on a blocking thread; a panic (or a lost thread) is
/// `Unknown`, logged.
async fn run_callback<F>(logger: &Logger, what: &'static str, f: F) -> TransactionState
where
    F: FnOnce() -> TransactionState + Send + 'static,
{
    match actix_rt::task::spawn_blocking(f).await {
        Ok(state) => state,
        Err(e) => {
            error!(logger, "transaction callback panicked: treated as unknown"; "callback" => what, "error" => %e);
            TransactionState::Unknown
        }
    }
}

impl TransactionProducer {
    pub(crate) fn new(producer: Producer, listener: Arc<dyn TransactionListener>) -> Self {
        Self { producer, listener }
    }

    /// The underlying producer (plain sends, client id, shutdown).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Sends `msg` as a half message, runs the listener's local
    /// transaction and ends the transaction with its answer. See the
    /// module docs.
    pub async fn send_in_transaction(
        &self,
        msg: Message,
    ) -> Result<TransactionSendResult, ClientError> {
        let listener = Arc::clone(&self.listener);
        self.send_with_local(msg, move |m: &Message| {
            listener.execute_local_transaction(m)
        })
        .await
    }

    /// As [`Self::send_in_transaction`], with `local` as this send's local
    /// transaction instead of the listener's (RocketMQ's per-send `arg`:
    /// capture what it needs). Checks still go to the listener. Runs on a
    /// blocking thread; a panic counts as `Unknown`.
    pub async fn send_in_transaction_with<F>(
        &self,
        msg: Message,
        local: F,
    ) -> Result<TransactionSendResult, ClientError>
    where
        F: FnOnce(&Message) -> TransactionState + Send + 'static,
    {
        self.send_with_local(msg, local).await
    }

    async fn send_with_local<F>(
        &self,
        mut msg: Message,
        local: F,
    ) -> Result<TransactionSendResult, ClientError>
    where
        F: FnOnce(&Message) -> TransactionState + Send + 'static,
    {
        let group = self.producer.config().group.clone();
        msg.properties
            .insert(PROPERTY_TRANSACTION_PREPARED.into(), "true".into());
        msg.properties.insert(PROPERTY_PRODUCER_GROUP.into(), group);
        stamp(&mut msg);
        let transaction_id = msg.unique_key().unwrap_or_default().to_owned();
        self.producer.announce(&msg.topic);
        let send = self.producer.send(msg.clone()).await?;
        let state = if send.status == SendStatus::SendOk {
            let sent = msg.clone();
            run_callback(
                self.producer.logger(),
                "execute_local_transaction",
                move || local(&sent),
            )
            .await
        } else {
            warn!(self.producer.logger(), "half message not stored cleanly: rolled back";
                "status" => %send.status, "transaction_id" => &transaction_id);
            TransactionState::Rollback
        };
        let end_error = self
            .end_transaction(&send, &transaction_id, state)
            .await
            .err();
        if let Some(e) = &end_error {
            warn!(self.producer.logger(), "end of transaction not delivered: the broker will check";
                "transaction_id" => &transaction_id, "error" => %e);
        }
        Ok(TransactionSendResult {
            send,
            transaction_id,
            state,
            end_error,
        })
    }

    async fn end_transaction(
        &self,
        send: &SendResult,
        transaction_id: &str,
        state: TransactionState,
    ) -> Result<(), ClientError> {
        let id = MessageId::decode(&send.msg_id)
            .map_err(|e| ClientError::Invalid(format!("half message id: {e}")))?;
        let addr = self
            .producer
            .broker_addr(&send.broker)
            .ok_or_else(|| ClientError::Invalid(format!("unknown broker {}", send.broker)))?;
        let req = EndTransactionRequest {
            producer_group: self.producer.config().group.clone(),
            tran_state_table_offset: send.queue_offset,
            commit_log_offset: id.commit_log_offset,
            decision: state.decision(),
            from_transaction_check: false,
            msg_id: send.msg_id.clone(),
            transaction_id: Some(transaction_id.to_owned()),
        };
        match self.producer.call_broker(&addr, req.clone()).await {
            // The broker may have restarted elsewhere meanwhile: ask the
            // name servers where it is now and try once more.
            Err(e) if is_unreachable(&e) => {
                let route = self.producer.routes().refresh(&send.topic).await?;
                let Some(now) = route.master_addr(&send.broker) else {
                    return Err(e);
                };
                self.producer.call_broker(now, req).await.map(drop)
            }
            other => other.map(drop),
        }
    }

    /// Announces this producer to the brokers of `topic` (route fetched,
    /// heartbeat sent), so a member of the group that has not sent yet
    /// answers checks of transactions other members began. Heartbeats then
    /// go on every `heartbeat_interval_ms`.
    pub async fn serve_checks_for(&self, topic: &str) -> Result<(), ClientError> {
        self.producer.announce(topic);
        self.producer.routes().refresh(topic).await?;
        self.producer.heartbeat().await;
        Ok(())
    }

    /// Stops the producer (its check service too).
    pub async fn shutdown(&self) {
        self.producer.shutdown().await;
    }
}

/// The router of a transactional producer's connections: checks go to the
/// current incarnation of the check service (dropped while it restarts;
/// the broker asks again).
pub(crate) fn check_router(service: ChildRef<CheckService>) -> Router {
    let mut router = Router::new();
    router.route_fn::<CheckTransactionStateRequest, _, _>(move |call| {
        if let Some(s) = service.addr() {
            s.do_send(CheckArrived(call));
        }
        async { Ok(Reply::ok(Empty {})) }
    });
    router
}

/// A check pushed by a broker.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct CheckArrived(Call<CheckTransactionStateRequest>);

/// Serves the broker's checks: runs the listener's check on a blocking
/// thread and answers with `END_TRANSACTION` to the broker that asked.
#[derive(Clone)]
pub(crate) struct CheckService {
    producer: Weak<Inner>,
    listener: Arc<dyn TransactionListener>,
}

impl CheckService {
    pub(crate) fn new(producer: Weak<Inner>, listener: Arc<dyn TransactionListener>) -> Self {
        Self { producer, listener }
    }
}

impl Actor for CheckService {
    type Context = Context<Self>;
}

/// The checked message as the listener sees it: its real topic and
/// queue, the broker's bookkeeping properties removed.
pub fn checked_message(body: &bytes::Bytes) -> Option<StoredMessage> {
    let mut m = batch::decode_stored(body).ok()?.into_iter().next()?;
    let props = &mut m.message.properties;
    if let Some(t) = props.remove(PROPERTY_REAL_TOPIC) {
        m.message.topic = t;
    }
    if let Some(q) = props
        .remove(PROPERTY_REAL_QUEUE_ID)
        .and_then(|q| q.parse().ok())
    {
        m.queue_id = q;
    }
    props.remove(PROPERTY_TRANSACTION_CHECK_TIMES);
    Some(m)
}

impl Handler<CheckArrived> for CheckService {
    type Result = ();
    fn handle(&mut self, CheckArrived(call): CheckArrived, ctx: &mut Context<Self>) {
        let Some(inner) = self.producer.upgrade() else {
            return;
        };
        let producer = Producer::from_inner(inner);
        let logger = producer.logger().clone();
        let Some(origin) = call.origin else {
            debug!(logger, "transaction check without origin dropped");
            return;
        };
        if call.req.producer_group != producer.config().group {
            info!(logger, "transaction check for another group ignored"; "group" => &call.req.producer_group);
            return;
        }
        let Some(msg) = checked_message(&call.body) else {
            warn!(logger, "transaction check without its message ignored";
                "transaction_id" => ?call.req.transaction_id);
            return;
        };
        let listener = Arc::clone(&self.listener);
        let req = call.req;
        let addr = origin.peer.to_string();
        ctx.spawn(
            async move {
                let state = run_callback(&logger, "check_local_transaction", move || {
                    listener.check_local_transaction(&msg)
                })
                .await;
                let end = EndTransactionRequest {
                    producer_group: req.producer_group,
                    tran_state_table_offset: req.tran_state_table_offset,
                    commit_log_offset: req.commit_log_offset,
                    decision: state.decision(),
                    from_transaction_check: true,
                    msg_id: req.msg_id,
                    transaction_id: req.transaction_id.clone(),
                };
                match producer.call_broker(&addr, end).await {
                    Ok(_) => debug!(logger, "transaction check answered";
                        "transaction_id" => ?req.transaction_id, "state" => ?state),
                    Err(e) => info!(logger, "transaction check answer refused";
                        "transaction_id" => ?req.transaction_id, "state" => ?state, "error" => %e),
                }
            }
            .into_actor(self),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_to_decisions() {
        assert_eq!(
            TransactionState::Commit.decision(),
            TransactionDecision::Commit
        );
        assert_eq!(
            TransactionState::Rollback.decision(),
            TransactionDecision::Rollback
        );
        assert_eq!(
            TransactionState::Unknown.decision(),
            TransactionDecision::Unknown
        );
    }

    #[actix_rt::test]
    async fn a_panicking_callback_is_unknown() {
        let log = Logger::root(slog::Discard, slog::o!());
        let s = run_callback(&log, "t", || panic!("boom")).await;
        assert_eq!(s, TransactionState::Unknown);
        let s = run_callback(&log, "t", || TransactionState::Commit).await;
        assert_eq!(s, TransactionState::Commit);
    }

    #[test]
    fn a_checked_message_shows_its_real_topic() {
        let mut m = Message::new("RMQ_SYS_TRANS_HALF_TOPIC", "b");
        m.properties.insert("REAL_TOPIC".into(), "orders".into());
        m.properties.insert("REAL_QID".into(), "3".into());
        m.properties
            .insert("TRANSACTION_CHECK_TIMES".into(), "2".into());
        m.properties.insert("UNIQ_KEY".into(), "K".into());
        let stored = StoredMessage {
            message: m,
            queue_id: 0,
            queue_offset: 7,
            commit_log_offset: 100,
            store_size: 10,
            born_timestamp_ms: 1,
            store_timestamp_ms: 2,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_host: "127.0.0.1:2".parse().unwrap(),
            body_crc: 0,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
        };
        let body = batch::stored_to_bytes(&[stored]);
        let m = checked_message(&body).unwrap();
        assert_eq!(m.message.topic, "orders");
        assert_eq!(m.queue_id, 3);
        assert_eq!(m.message.unique_key(), Some("K"));
        assert!(!m.message.properties.contains_key("REAL_TOPIC"));
        assert!(checked_message(&bytes::Bytes::new()).is_none());
    }
}
