//! [`SimpleConsumer`]: the simple (pop) consumer of RocketMQ 5.
//!
//! No rebalance, no offsets, no long-lived actors: the broker hands out
//! messages ([`SimpleConsumer::receive`]) and keeps each invisible to
//! the group's other consumers for the invisible duration asked. A
//! message acked in that time ([`SimpleConsumer::ack`]) is done; one that
//! is not comes back (to any consumer of the group) with its
//! `reconsume_times` one higher, and after the group's max retries goes to
//! its dead-letter queue `%DLQ%<group>`. A consumer that needs longer
//! extends the time with [`SimpleConsumer::change_invisible_duration`],
//! which returns a new receipt: the old one is void.
//!
//! A receipt names one delivery: acking a stale receipt (acked already,
//! replaced by a change, or whose invisible time passed) fails with
//! `INVALID_RECEIPT_HANDLE` ([`ConsumerError::Service`]).
//!
//! An **orderly** simple consumer ([`SimpleConsumer::orderly`]) gets each
//! queue's messages in queue order, one batch per queue at a time: nothing
//! more of a queue until its batch is acked or its invisible time passed
//! (then its first unacked message comes first again). Changing the
//! invisible duration of one of its messages keeps the queue held while
//! that message is invisible. [`SimpleConsumer::with_tags`] and
//! [`SimpleConsumer::with_sql`] filter what the group receives (the broker
//! passes the other messages over for the group).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actormq_protocol::message::PROPERTY_POP_CK;
use actormq_protocol::request::{
    AckMessageRequest, BatchAckEntry, BatchAckMessageRequest, ChangeInvisibleTimeRequest,
    PopMessageRequest, ReceiptHandle,
};
use actormq_protocol::{ResponseCode, StoredMessage, batch};
use actormq_runtime::ServiceError;
use slog::Logger;

use super::ConsumerError;
use super::client::{ClusterClient, Pushes};

/// One delivery of a received message: where to ack it, and its handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    broker: SocketAddr,
    topic: String,
    raw: String,
    handle: ReceiptHandle,
}

impl Receipt {
    /// The broker's receipt handle.
    pub fn handle(&self) -> &ReceiptHandle {
        &self.handle
    }

    /// The handle as the broker sent it (`POP_CK`).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// When the message becomes visible again unless acked (broker
    /// time, ms since the epoch).
    pub fn visible_again_at_ms(&self) -> u64 {
        self.handle.visible_again_at_ms()
    }
}

/// A receipt [`SimpleConsumer::ack_batch`] could not ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRefused {
    /// Its index in the receipts given.
    pub index: usize,
    /// Why: `INVALID_RECEIPT_HANDLE` for a stale or malformed handle.
    pub code: ResponseCode,
    /// In words.
    pub remark: String,
}

/// A received message and its receipt.
#[derive(Debug, Clone)]
pub struct Received {
    /// The message (its topic is the subscribed one, also when it is
    /// delivered again).
    pub message: StoredMessage,
    /// What [`SimpleConsumer::ack`] and
    /// [`SimpleConsumer::change_invisible_duration`] take.
    pub receipt: Receipt,
}

/// A simple (pop) consumer of one topic for one group.
///
/// ```no_run
/// # use std::time::Duration;
/// # async fn run(logger: slog::Logger) -> Result<(), actormq_sdk::consumer::ConsumerError> {
/// use actormq_sdk::consumer::SimpleConsumer;
/// let consumer = SimpleConsumer::new("my-group", "127.0.0.1:9876", "orders", logger)?;
/// for r in consumer.receive(16, Duration::from_secs(30)).await? {
///     // ... handle r.message ...
///     consumer.ack(&r.receipt).await?;
/// }
/// # Ok(()) }
/// ```
pub struct SimpleConsumer {
    group: String,
    topic: String,
    client: ClusterClient,
    await_duration: Duration,
    orderly: bool,
    /// Filter expression and its type (`None`: every message).
    filter: Option<(String, &'static str)>,
    turn: AtomicUsize,
}

impl std::fmt::Debug for SimpleConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimpleConsumer")
            .field("group", &self.group)
            .field("topic", &self.topic)
            .finish()
    }
}

/// Longest time a receive waits for messages by default.
pub const DEFAULT_AWAIT: Duration = Duration::from_secs(5);

impl SimpleConsumer {
    /// A simple consumer of `topic` for `group` using the name servers
    /// `namesrv` (`host:port[,host:port...]`); a receive waits up to 5 s
    /// for messages ([`Self::with_await_duration`]). Call inside an actix
    /// `System`.
    pub fn new(
        group: &str,
        namesrv: &str,
        topic: &str,
        logger: Logger,
    ) -> Result<SimpleConsumer, ConsumerError> {
        actormq_protocol::validate_topic(topic)
            .map_err(|e| ConsumerError::Config(e.to_string()))?;
        if group.is_empty() {
            return Err(ConsumerError::Config("empty consumer group".into()));
        }
        Ok(SimpleConsumer {
            group: group.to_string(),
            topic: topic.to_string(),
            client: ClusterClient::new(
                &[namesrv.to_string()],
                logger,
                Pushes::default(),
                Duration::from_secs(30),
            )?,
            await_duration: DEFAULT_AWAIT,
            orderly: false,
            filter: None,
            turn: AtomicUsize::new(0),
        })
    }

    /// How long a receive waits at most when nothing is there (the broker
    /// holds the request; at most 20 s). Zero: answer at once.
    pub fn with_await_duration(mut self, d: Duration) -> Self {
        self.await_duration = d.min(Duration::from_secs(20));
        self
    }

    /// Orderly (FIFO) receives: each queue in order, one batch at a time
    /// (see the module docs).
    pub fn orderly(mut self) -> Self {
        self.orderly = true;
        self
    }

    /// Receives only messages whose tag matches `expr` (`"paid ||
    /// shipped"`; `"*"`: every message). The broker passes the others
    /// over for the group. A bad expression fails the receives.
    pub fn with_tags(mut self, expr: &str) -> Self {
        self.filter = Some((expr.to_string(), crate::protocol::filter::TYPE_TAG));
        self
    }

    /// Receives only messages whose properties match the SQL92 `expr`
    /// (`"amount > 100"`; the broker needs `enable_property_filter`). The
    /// broker passes the others over for the group.
    pub fn with_sql(mut self, expr: &str) -> Self {
        self.filter = Some((expr.to_string(), crate::protocol::filter::TYPE_SQL92));
        self
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Up to `max` (1..=32) messages, each invisible to the group for
    /// `invisible` (at least 1 s) unless acked; waits up to the await
    /// duration when none is there, then returns none. The topic's brokers
    /// are asked in turn.
    pub async fn receive(
        &self,
        max: u32,
        invisible: Duration,
    ) -> Result<Vec<Received>, ConsumerError> {
        let route = self.client.route(&self.topic).await?;
        let mut brokers: Vec<SocketAddr> = route
            .broker_names()
            .into_iter()
            .filter(|b| route.read_queues.iter().any(|q| q.broker_name == *b))
            .filter_map(|b| route.master_addr(b).and_then(|a| a.parse().ok()))
            .collect();
        brokers.sort();
        brokers.dedup();
        if brokers.is_empty() {
            self.client.refresh(&self.topic).await?;
            return Err(ConsumerError::NoRoute(self.topic.clone()));
        }
        let first = self.turn.fetch_add(1, Ordering::Relaxed);
        for i in 0..brokers.len() {
            let broker = brokers[(first + i) % brokers.len()];
            // Only the last broker asked holds the request.
            let poll = if i + 1 == brokers.len() {
                self.await_duration
            } else {
                Duration::ZERO
            };
            let got = self.pop(broker, max, invisible, poll).await?;
            if !got.is_empty() {
                return Ok(got);
            }
        }
        Ok(Vec::new())
    }

    async fn pop(
        &self,
        broker: SocketAddr,
        max: u32,
        invisible: Duration,
        poll: Duration,
    ) -> Result<Vec<Received>, ConsumerError> {
        let req = PopMessageRequest {
            consumer_group: self.group.clone(),
            topic: self.topic.clone(),
            queue_id: None,
            max_msg_nums: max,
            invisible_time_ms: invisible.as_millis() as u64,
            poll_time_ms: poll.as_millis() as u64,
            born_time_ms: now_ms(),
            expression: self.filter.as_ref().map(|(e, _)| e.clone()),
            expression_type: self.filter.as_ref().map(|(_, t)| t.to_string()),
            order: self.orderly,
        };
        let empty = |code| matches!(code, ResponseCode::NoMessage | ResponseCode::PollingTimeout);
        let reply = match self.client.call_pull(broker, req).await {
            Ok(r) if empty(r.code) => return Ok(Vec::new()),
            Ok(r) => r,
            Err(e) if empty(e.code) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let msgs = batch::decode_stored(&reply.body).map_err(ServiceError::from)?;
        msgs.into_iter()
            .map(|message| {
                let raw = message
                    .message
                    .properties
                    .get(PROPERTY_POP_CK)
                    .cloned()
                    .unwrap_or_default();
                let handle = ReceiptHandle::parse(&raw).ok_or_else(|| {
                    ConsumerError::Service(ServiceError::new(
                        ResponseCode::InvalidReceiptHandle,
                        format!("broker {broker} sent a message without a valid handle ({raw:?})"),
                    ))
                })?;
                Ok(Received {
                    message,
                    receipt: Receipt {
                        broker,
                        topic: self.topic.clone(),
                        raw,
                        handle,
                    },
                })
            })
            .collect()
    }

    /// Acks a delivery: the message is done for the group.
    pub async fn ack(&self, receipt: &Receipt) -> Result<(), ConsumerError> {
        let req = AckMessageRequest {
            consumer_group: self.group.clone(),
            topic: receipt.topic.clone(),
            queue_id: receipt.handle.queue_id,
            offset: receipt.handle.queue_offset,
            extra_info: receipt.raw.clone(),
        };
        self.client.call(receipt.broker, req).await?;
        Ok(())
    }

    /// Acks many deliveries with one request per broker
    /// (`BATCH_ACK_MESSAGE`, one record in the broker's ack topic for
    /// all): the fast way to ack what one [`receive`](Self::receive)
    /// returned. Returns the receipts refused (stale or malformed
    /// handles), by index into `receipts`; every other one is acked. An
    /// `Err` means a broker could not be asked: the acks sent to it may
    /// or may not be stored (acking them again is refused as stale if
    /// they were).
    pub async fn ack_batch(&self, receipts: &[Receipt]) -> Result<Vec<AckRefused>, ConsumerError> {
        let mut by_broker: BTreeMap<(SocketAddr, &str), Vec<usize>> = BTreeMap::new();
        for (i, r) in receipts.iter().enumerate() {
            by_broker.entry((r.broker, &r.topic)).or_default().push(i);
        }
        let mut refused = Vec::new();
        for ((broker, topic), idx) in by_broker {
            let req = BatchAckMessageRequest {
                consumer_group: self.group.clone(),
                topic: topic.to_owned(),
                acks: idx
                    .iter()
                    .map(|&i| BatchAckEntry {
                        queue_id: receipts[i].handle.queue_id,
                        offset: receipts[i].handle.queue_offset,
                        extra_info: receipts[i].raw.clone(),
                    })
                    .collect(),
            };
            let reply = self.client.call(broker, req).await?;
            for f in reply.fields.failed {
                let Some(&index) = idx.get(f.index as usize) else {
                    continue;
                };
                refused.push(AckRefused {
                    index,
                    code: ResponseCode::try_from(f.code).unwrap_or(ResponseCode::SystemError),
                    remark: f.remark,
                });
            }
        }
        refused.sort_by_key(|r| r.index);
        Ok(refused)
    }

    /// Makes a delivery invisible for `invisible` from now instead; the
    /// returned receipt replaces `receipt` (which is void).
    pub async fn change_invisible_duration(
        &self,
        receipt: &Receipt,
        invisible: Duration,
    ) -> Result<Receipt, ConsumerError> {
        let req = ChangeInvisibleTimeRequest {
            consumer_group: self.group.clone(),
            topic: receipt.topic.clone(),
            queue_id: receipt.handle.queue_id,
            offset: receipt.handle.queue_offset,
            extra_info: receipt.raw.clone(),
            invisible_time_ms: invisible.as_millis() as u64,
        };
        let reply = self.client.call(receipt.broker, req).await?;
        let raw = reply.fields.extra_info;
        let handle = ReceiptHandle::parse(&raw).ok_or_else(|| {
            ConsumerError::Service(ServiceError::new(
                ResponseCode::InvalidReceiptHandle,
                format!("broker sent an invalid handle ({raw:?})"),
            ))
        })?;
        Ok(Receipt {
            broker: receipt.broker,
            topic: receipt.topic.clone(),
            raw,
            handle,
        })
    }

    /// Closes the consumer's connections (a held receive fails at once).
    pub fn shutdown(&self) {
        self.client.close();
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
