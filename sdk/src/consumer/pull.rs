//! [`PullConsumer`]: explicit queues and offsets.

use std::net::SocketAddr;
use std::time::Duration;

use actormq_protocol::request::{
    GetMaxOffsetRequest, GetMinOffsetRequest, PullMessageRequest, QueryConsumerOffsetRequest,
    ResetOffsetRequest, SearchOffsetByTimestampRequest, UpdateConsumerOffsetRequest,
};
use actormq_protocol::{MessageQueue, ResponseCode, StoredMessage, StoredView, records};
use slog::Logger;

use super::client::{ClusterClient, Pushes};
use super::{ConsumerError, TagFilter};

/// What a pull found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullStatus {
    /// Messages (possibly all dropped by the client-side tag recheck).
    Found,
    /// Nothing new at the offset (caught up).
    NoNewMsg,
    /// Only messages the filter rejects; continue at `next_begin_offset`.
    NoMatchedMsg,
    /// The offset is outside the queue; continue at `next_begin_offset`.
    OffsetIllegal,
}

/// The answer to [`PullConsumer::pull`].
#[derive(Debug, Clone)]
pub struct PullResult {
    /// What was found.
    pub status: PullStatus,
    /// Where to pull next.
    pub next_begin_offset: u64,
    /// Min offset of the queue (0 when the broker did not say).
    pub min_offset: u64,
    /// Max offset of the queue (0 when the broker did not say).
    pub max_offset: u64,
    /// The messages, in queue order.
    pub messages: Vec<StoredMessage>,
}

/// What a pull found, as views of the records the broker sent.
#[derive(Debug, Clone)]
pub(crate) struct PulledViews {
    pub status: PullStatus,
    pub next_begin_offset: u64,
    pub min_offset: u64,
    pub max_offset: u64,
    pub messages: Vec<StoredView>,
}

/// Pulls `mq` from `offset` through `client` ([`pull_views`]) and hands
/// the messages over owned.
pub(crate) async fn pull_queue(
    client: &ClusterClient,
    group: &str,
    mq: &MessageQueue,
    offset: u64,
    max: u32,
    filter: &TagFilter,
    suspend: Duration,
) -> Result<PullResult, ConsumerError> {
    let p = pull_views(client, group, mq, offset, max, filter, suspend).await?;
    Ok(PullResult {
        status: p.status,
        next_begin_offset: p.next_begin_offset,
        min_offset: p.min_offset,
        max_offset: p.max_offset,
        messages: p.messages.iter().map(StoredView::to_stored).collect(),
    })
}

/// Pulls `mq` from `offset` through `client`; shared by every consumer.
/// The broker answers with its stored records as they are on disk
/// ([`actormq_protocol::records`]); the messages are views of that reply
/// (no string or map per message).
///
/// A non-`SUCCESS` pull status arrives as an `Ok` reply with its fields
/// (`next_begin_offset`, `min_offset`, `max_offset`): `PULL_NOT_FOUND`
/// means caught up, `PULL_OFFSET_MOVED` says where to go on, and
/// `PULL_RETRY_IMMEDIATELY` (only filtered-out messages) is followed by
/// one unfiltered pull whose messages the client filters. An old peer
/// that answers those codes without fields is handled as before (the
/// offset kept, a min/max query after `PULL_OFFSET_MOVED`).
pub(crate) async fn pull_views(
    client: &ClusterClient,
    group: &str,
    mq: &MessageQueue,
    offset: u64,
    max: u32,
    filter: &TagFilter,
    suspend: Duration,
) -> Result<PulledViews, ConsumerError> {
    let addr = client.pull_addr(mq).await?;
    let mut req = PullMessageRequest {
        consumer_group: group.to_string(),
        topic: mq.topic.clone(),
        queue_id: mq.queue_id,
        queue_offset: offset,
        max_msg_nums: max.max(1),
        commit_offset: None,
        suspend_timeout_ms: suspend.as_millis() as u64,
        subscription: (!filter.is_all()).then(|| filter.expression().to_string()),
        expression_type: (!filter.is_all()).then(|| filter.expression_type().to_string()),
        records: true,
    };
    let mut reply = client.call_pull(addr, req.clone()).await;
    let retry = match &reply {
        Ok(r) => r.code == ResponseCode::PullRetryImmediately,
        Err(e) => e.code == ResponseCode::PullRetryImmediately,
    };
    if retry {
        req.subscription = None;
        req.expression_type = None;
        req.suspend_timeout_ms = 0;
        reply = client.call(addr, req).await;
    }
    if let Ok(r) = &reply {
        client.suggest_pull_from(mq, r.fields.suggest_which_broker_id);
    }
    let empty = |status, f: &actormq_protocol::request::PullMessageResponse| PulledViews {
        status,
        next_begin_offset: f.next_begin_offset,
        min_offset: f.min_offset,
        max_offset: f.max_offset,
        messages: Vec::new(),
    };
    match reply {
        Ok(r) if r.code == ResponseCode::PullNotFound => Ok(empty(PullStatus::NoNewMsg, &r.fields)),
        Ok(r) if r.code == ResponseCode::PullOffsetMoved => {
            Ok(empty(PullStatus::OffsetIllegal, &r.fields))
        }
        Ok(r) if r.code == ResponseCode::PullRetryImmediately => {
            // Even the unfiltered pull found nothing to hand over.
            Ok(empty(PullStatus::NoMatchedMsg, &r.fields))
        }
        Ok(r) => {
            if !r.fields.records && !r.body.is_empty() {
                let e = actormq_protocol::Error::BadBatchEntry {
                    index: 0,
                    reason: "the broker answered a pull without stored records (an older broker?)"
                        .into(),
                };
                return Err(actormq_runtime::ServiceError::from(e).into());
            }
            let mut messages =
                records::decode_records(&r.body).map_err(actormq_runtime::ServiceError::from)?;
            let total = messages.len();
            if !filter.is_all() {
                messages.retain(|m| filter.matches_view(m));
            }
            let status = if messages.is_empty() && total > 0 {
                PullStatus::NoMatchedMsg
            } else {
                PullStatus::Found
            };
            Ok(PulledViews {
                status,
                next_begin_offset: r.fields.next_begin_offset,
                min_offset: r.fields.min_offset,
                max_offset: r.fields.max_offset,
                messages,
            })
        }
        Err(e) if e.code == ResponseCode::PullNotFound => Ok(PulledViews {
            status: PullStatus::NoNewMsg,
            next_begin_offset: offset,
            min_offset: 0,
            max_offset: 0,
            messages: Vec::new(),
        }),
        Err(e) if e.code == ResponseCode::PullOffsetMoved => {
            let (min, max) = min_max(client, addr, mq).await?;
            Ok(PulledViews {
                status: PullStatus::OffsetIllegal,
                next_begin_offset: offset.clamp(min, max),
                min_offset: min,
                max_offset: max,
                messages: Vec::new(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

async fn min_max(
    client: &ClusterClient,
    addr: SocketAddr,
    mq: &MessageQueue,
) -> Result<(u64, u64), ConsumerError> {
    let min = client
        .call(
            addr,
            GetMinOffsetRequest {
                topic: mq.topic.clone(),
                queue_id: mq.queue_id,
            },
        )
        .await?
        .fields
        .offset;
    let max = client
        .call(
            addr,
            GetMaxOffsetRequest {
                topic: mq.topic.clone(),
                queue_id: mq.queue_id,
            },
        )
        .await?
        .fields
        .offset;
    Ok((min, max.max(min)))
}

/// Offset queries shared by both consumers.
pub(crate) async fn query_offset(
    client: &ClusterClient,
    group: &str,
    mq: &MessageQueue,
) -> Result<Option<u64>, ConsumerError> {
    let addr = client.broker_addr(&mq.topic, &mq.broker_name).await?;
    let req = QueryConsumerOffsetRequest {
        consumer_group: group.to_string(),
        topic: mq.topic.clone(),
        queue_id: mq.queue_id,
    };
    match client.call(addr, req).await {
        Ok(r) => Ok(Some(r.fields.offset)),
        Err(e) if e.code == ResponseCode::QueryNotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn commit_offset(
    client: &ClusterClient,
    group: &str,
    mq: &MessageQueue,
    offset: u64,
) -> Result<(), ConsumerError> {
    let addr = client.broker_addr(&mq.topic, &mq.broker_name).await?;
    let req = UpdateConsumerOffsetRequest {
        consumer_group: group.to_string(),
        topic: mq.topic.clone(),
        queue_id: mq.queue_id,
        commit_offset: offset,
    };
    client.call(addr, req).await?;
    Ok(())
}

/// Which end of a queue, or a time.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Position {
    Min,
    Max,
    Time(u64),
}

pub(crate) async fn offset_at(
    client: &ClusterClient,
    mq: &MessageQueue,
    pos: Position,
) -> Result<u64, ConsumerError> {
    let addr = client.broker_addr(&mq.topic, &mq.broker_name).await?;
    let (topic, queue_id) = (mq.topic.clone(), mq.queue_id);
    let r = match pos {
        Position::Min => {
            client
                .call(addr, GetMinOffsetRequest { topic, queue_id })
                .await?
        }
        Position::Max => {
            client
                .call(addr, GetMaxOffsetRequest { topic, queue_id })
                .await?
        }
        Position::Time(timestamp_ms) => {
            client
                .call(
                    addr,
                    SearchOffsetByTimestampRequest {
                        topic,
                        queue_id,
                        timestamp_ms,
                    },
                )
                .await?
        }
    };
    Ok(r.fields.offset)
}

/// A consumer that pulls explicit queues at explicit offsets; the caller
/// keeps track of offsets and may commit them for its group.
///
/// ```rust,ignore
/// let consumer = PullConsumer::new("my-group", "127.0.0.1:9876", logger)?;
/// for mq in consumer.fetch_queues("orders").await? {
///     let r = consumer.pull(&mq, 0, 32).await?;
///     consumer.commit(&mq, r.next_begin_offset).await?;
/// }
/// ```
#[derive(Clone)]
pub struct PullConsumer {
    group: String,
    client: ClusterClient,
}

impl std::fmt::Debug for PullConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullConsumer")
            .field("group", &self.group)
            .finish()
    }
}

impl PullConsumer {
    /// A pull consumer of `group` using the name servers `namesrv`
    /// (`host:port[,host:port...]`). Call inside an actix `System`.
    pub fn new(group: &str, namesrv: &str, logger: Logger) -> Result<PullConsumer, ConsumerError> {
        Ok(PullConsumer {
            group: group.to_string(),
            client: ClusterClient::new(
                &[namesrv.to_string()],
                logger,
                Pushes::default(),
                Duration::from_secs(20),
            )?,
        })
    }

    /// The readable queues of `topic`, sorted.
    pub async fn fetch_queues(&self, topic: &str) -> Result<Vec<MessageQueue>, ConsumerError> {
        self.client.queues(topic).await
    }

    /// Up to `max` messages of `mq` from `offset`, answered at once.
    pub async fn pull(
        &self,
        mq: &MessageQueue,
        offset: u64,
        max: u32,
    ) -> Result<PullResult, ConsumerError> {
        self.pull_with(mq, offset, max, "*", Duration::ZERO).await
    }

    /// [`pull`](Self::pull) with a tag expression and a long-polling hold
    /// (the broker answers as soon as a message arrives, at most after
    /// `suspend`, capped at 15 s by the broker).
    pub async fn pull_with(
        &self,
        mq: &MessageQueue,
        offset: u64,
        max: u32,
        tag_expr: &str,
        suspend: Duration,
    ) -> Result<PullResult, ConsumerError> {
        let filter = TagFilter::parse(tag_expr)?;
        pull_queue(&self.client, &self.group, mq, offset, max, &filter, suspend).await
    }

    /// Commits `offset` (the next offset to consume) of `mq` for the group.
    pub async fn commit(&self, mq: &MessageQueue, offset: u64) -> Result<(), ConsumerError> {
        commit_offset(&self.client, &self.group, mq, offset).await
    }

    /// The group's committed offset of `mq`, if it ever committed.
    pub async fn committed(&self, mq: &MessageQueue) -> Result<Option<u64>, ConsumerError> {
        query_offset(&self.client, &self.group, mq).await
    }

    /// The first kept offset of `mq`.
    pub async fn min_offset(&self, mq: &MessageQueue) -> Result<u64, ConsumerError> {
        offset_at(&self.client, mq, Position::Min).await
    }

    /// One past the last offset of `mq`.
    pub async fn max_offset(&self, mq: &MessageQueue) -> Result<u64, ConsumerError> {
        offset_at(&self.client, mq, Position::Max).await
    }

    /// The offset of the first message of `mq` stored at or after
    /// `timestamp_ms`.
    pub async fn search_offset(
        &self,
        mq: &MessageQueue,
        timestamp_ms: u64,
    ) -> Result<u64, ConsumerError> {
        offset_at(&self.client, mq, Position::Time(timestamp_ms)).await
    }

    /// Resets the group's offsets on every queue of `topic` (every master
    /// broker of its route) to the first message stored at or after
    /// `timestamp_ms`, forward or back (`actormq admin offset reset`). The
    /// group's push consumers online continue from there without a
    /// restart; with none online, the next one starts there. Returns each
    /// queue's new offset. Fails for a topic or group the broker does not
    /// know (a group is known while a member is online or once it
    /// committed an offset there).
    pub async fn reset_offsets_to_time(
        &self,
        topic: &str,
        timestamp_ms: u64,
    ) -> Result<Vec<(MessageQueue, u64)>, ConsumerError> {
        let route = self.client.refresh(topic).await?;
        let mut out = Vec::new();
        for broker in route.broker_names() {
            let addr = route
                .master_addr(broker)
                .ok_or_else(|| ConsumerError::NoRoute(format!("{topic} on {broker}")))?;
            let addr: SocketAddr = addr
                .parse()
                .map_err(|_| ConsumerError::Config(format!("bad broker address {addr:?}")))?;
            let req = ResetOffsetRequest {
                consumer_group: self.group.clone(),
                topic: topic.to_string(),
                timestamp_ms,
                force: true,
            };
            let reply = self.client.call(addr, req).await?;
            out.extend(
                reply
                    .fields
                    .offsets
                    .into_iter()
                    .map(|q| (q.queue, q.offset)),
            );
        }
        out.sort();
        Ok(out)
    }

    /// The group this consumer commits for.
    pub fn group(&self) -> &str {
        &self.group
    }
}
