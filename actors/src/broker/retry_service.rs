//! `RetryService`: a consumer's failed messages (`CONSUMER_SEND_MSG_BACK`,
//! 36) and a group's dead letters (`RESEND_DEAD_LETTERS`, actormq's 10001).
//!
//! **Send-back.** A push consumer whose listener failed on a message
//! returns it by its commit-log offset. The broker reads the record and
//! writes it again ([`PutInternal`]) as a message of the group's retry
//! topic `%RETRY%<group>` (one queue, created on first use), its reconsume
//! times one higher, delayed by the group's retry policy: level
//! `first_delay_level + reconsume times` (3, 4, …: 10 s, 30 s, 1 m, … with
//! the default table), so the [`super::ScheduleService`] delivers it when
//! due. The group's consumers subscribe to their retry topic by
//! themselves. `RETRY_TOPIC` keeps the topic it was first consumed from
//! (consumers show the message under it again) and `ORIGIN_MESSAGE_ID` the
//! id of the message that first failed. Once its reconsume times reach
//! the group's `retry_max_times` (16) it goes to `%DLQ%<group>` instead
//! (one queue, write-only: never delivered to subscribers) at once.
//!
//! **Dead-letter resend.** The group's own consumer offset on its DLQ
//! topic marks what was resent: a resend puts up to `max_count` dead
//! letters from there back on their `RETRY_TOPIC` (reconsume times 0,
//! queues round robin) and commits past them.
//!
//! The message rebuilding is [`retry_message`] and [`resent_message`],
//! plain functions tested without a runtime.

use actix::prelude::*;
use actormq_protocol::request::{
    ConsumerSendMsgBackRequest, Empty, Perm, QueryConsumerOffsetRequest, ResendDeadLettersRequest,
    ResendDeadLettersResponse, ResentMessage, SubscriptionGroupConfig, TopicConfig,
    UpdateConsumerOffsetRequest,
};
use actormq_protocol::system_topic::{
    self, PROPERTY_ORIGIN_MESSAGE_ID, PROPERTY_REAL_QUEUE_ID, PROPERTY_REAL_TOPIC,
    PROPERTY_RETRY_TOPIC,
};
use actormq_protocol::{MessageId, ResponseCode};
use actormq_store::MessageView;
use actormq_store::record::properties_iter_bytes;
use slog::{Logger, info, o};

use super::broker_store::BrokerStore;
use super::commit_log::{CommitLogActor, InternalMessage, PutInternal};
use super::offset_manager::OffsetManager;
use super::stored_codec::{PROPERTY_DELAY, PROPERTY_TAGS, tag_hash_of};
use super::subscription_group_manager::{ResolveGroups, SubscriptionGroupManager};
use super::topic_manager::{TopicView, system_topic_config};
use crate::runtime::guard::{Guarded, GuardedReply, Poison, guarded};
use crate::runtime::{Call, ChildRef, Reply, ServiceError};

/// The config of a group's retry topic (RocketMQ: one queue, read-write).
pub fn retry_topic_config(group: &str) -> TopicConfig {
    system_topic_config(&system_topic::retry_topic(group))
}

/// The config of a group's dead-letter topic: one queue, write-only, so
/// no consumer is ever delivered a dead letter.
pub fn dlq_topic_config(group: &str) -> TopicConfig {
    TopicConfig {
        perm: Perm::WRITE,
        ..system_topic_config(&system_topic::dlq_topic(group))
    }
}

/// Where a returned message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `%RETRY%<group>` after this delay level.
    Retry {
        /// Delay level.
        delay_level: u8,
    },
    /// `%DLQ%<group>`, at once.
    DeadLetter,
}

/// Where a message returned with `req` goes, given its stored reconsume
/// times and the group's config.
pub fn destination(
    req: &ConsumerSendMsgBackRequest,
    stored_reconsume_times: u32,
    group: &SubscriptionGroupConfig,
) -> Destination {
    let times = stored_reconsume_times.max(req.reconsume_times.unwrap_or(0));
    let max = req.max_reconsume_times.unwrap_or(group.retry_max_times);
    if times >= max {
        return Destination::DeadLetter;
    }
    let delay_level = if req.delay_level > 0 {
        req.delay_level
    } else {
        let level = group.retry_policy.first_delay_level.saturating_add(times);
        u8::try_from(level).unwrap_or(u8::MAX)
    };
    Destination::Retry { delay_level }
}

/// The message a failed record is returned as: `group`'s retry or
/// dead-letter topic, reconsume times one higher, `RETRY_TOPIC` and
/// `ORIGIN_MESSAGE_ID` set unless the record has them already (a retried
/// message failing again keeps the first ones), the broker's delay
/// properties dropped.
pub fn retry_message(
    view: &MessageView,
    group: &str,
    to: &Destination,
    origin_msg_id: &str,
    client_reconsume_times: u32,
) -> Result<InternalMessage, ServiceError> {
    let h = view.header();
    let mut has_retry_topic = false;
    let mut has_origin = false;
    let mut kept: Vec<(&[u8], &[u8])> = Vec::new();
    for (k, v) in properties_iter_bytes(view.properties()) {
        if k == PROPERTY_DELAY.as_bytes()
            || k == PROPERTY_REAL_TOPIC.as_bytes()
            || k == PROPERTY_REAL_QUEUE_ID.as_bytes()
        {
            continue;
        }
        has_retry_topic |= k == PROPERTY_RETRY_TOPIC.as_bytes();
        has_origin |= k == PROPERTY_ORIGIN_MESSAGE_ID.as_bytes();
        kept.push((k, v));
    }
    let topic = view.topic().to_owned();
    if !has_retry_topic {
        kept.push((PROPERTY_RETRY_TOPIC.as_bytes(), topic.as_bytes()));
    }
    if !has_origin {
        kept.push((
            PROPERTY_ORIGIN_MESSAGE_ID.as_bytes(),
            origin_msg_id.as_bytes(),
        ));
    }
    let mut properties = Vec::with_capacity(view.properties().len() + 64);
    actormq_store::encode_properties_into(kept, &mut properties)
        .map_err(|e| ServiceError::new(ResponseCode::MessageIllegal, e.to_string()))?;
    let (topic, delay_level) = match to {
        Destination::Retry { delay_level } => (system_topic::retry_topic(group), *delay_level),
        Destination::DeadLetter => (system_topic::dlq_topic(group), 0),
    };
    Ok(InternalMessage {
        topic,
        queue_id: 0,
        body: view.body(),
        properties,
        tag_hash: tag_hash_of(view.property(PROPERTY_TAGS)),
        flags: h.flags,
        born_timestamp_ms: h.born_timestamp_ms,
        born_host: h.born_host,
        reconsume_times: h.reconsume_times.max(client_reconsume_times) + 1,
        delay_level,
    })
}

/// The message a dead letter is resent as: its `RETRY_TOPIC`, queue
/// `queue_id`, reconsume times 0, `RETRY_TOPIC` dropped (it is a message
/// of that topic again; `ORIGIN_MESSAGE_ID` stays). `None` without a
/// `RETRY_TOPIC`.
pub fn resent_message(view: &MessageView, queue_id: u32) -> Option<InternalMessage> {
    let h = view.header();
    let topic = view.property(PROPERTY_RETRY_TOPIC)?.to_owned();
    let kept = properties_iter_bytes(view.properties())
        .filter(|(k, _)| *k != PROPERTY_RETRY_TOPIC.as_bytes());
    let mut properties = Vec::with_capacity(view.properties().len());
    actormq_store::encode_properties_into(kept, &mut properties).ok()?;
    Some(InternalMessage {
        topic,
        queue_id,
        body: view.body(),
        properties,
        tag_hash: tag_hash_of(view.property(PROPERTY_TAGS)),
        flags: h.flags,
        born_timestamp_ms: h.born_timestamp_ms,
        born_host: h.born_host,
        reconsume_times: 0,
        delay_level: 0,
    })
}

/// The retry service actor. See the module docs.
pub struct RetryService {
    store: BrokerStore,
    view: TopicView,
    writer: ChildRef<CommitLogActor>,
    groups: ChildRef<SubscriptionGroupManager>,
    offsets: ChildRef<OffsetManager>,
    logger: Logger,
    poison: Poison,
}

fn down(what: &str) -> ServiceError {
    ServiceError::busy(format!("{what} restarting"))
}

impl RetryService {
    /// A retry service writing through `writer`.
    pub fn new(
        store: BrokerStore,
        view: TopicView,
        writer: ChildRef<CommitLogActor>,
        groups: ChildRef<SubscriptionGroupManager>,
        offsets: ChildRef<OffsetManager>,
        logger: &Logger,
    ) -> Self {
        Self {
            store,
            view,
            writer,
            groups,
            offsets,
            logger: logger.new(o!("actor" => "RetryService")),
            poison: Poison::default(),
        }
    }
}

impl Actor for RetryService {
    type Context = Context<Self>;
}

impl Guarded for RetryService {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

type EmptyReply = ResponseFuture<Result<Reply<Empty>, ServiceError>>;

impl Handler<Call<ConsumerSendMsgBackRequest>> for RetryService {
    type Result = GuardedReply<EmptyReply>;

    fn handle(
        &mut self,
        call: Call<ConsumerSendMsgBackRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let (store, groups, writer) = (act.store.clone(), act.groups.addr(), act.writer.addr());
            Box::pin(async move {
                let req = call.req;
                actormq_protocol::validate_topic(&system_topic::retry_topic(&req.consumer_group))?;
                let groups = groups.ok_or_else(|| down("subscription group manager"))?;
                let group = groups
                    .send(ResolveGroups {
                        groups: vec![req.consumer_group.clone()],
                    })
                    .await??
                    .pop()
                    .ok_or_else(|| ServiceError::system("group not resolved"))?;
                // The message and any sent back with it: retries and dead
                // letters, each stored with one put.
                let (mut retries, mut dead) = (Vec::new(), Vec::new());
                for one in req.each() {
                    let view = store.read_at(one.commit_log_offset).ok_or_else(|| {
                        ServiceError::new(
                            ResponseCode::SystemError,
                            format!("no message at commit log offset {}", one.commit_log_offset),
                        )
                    })?;
                    let to = destination(&one, view.header().reconsume_times, &group);
                    let origin = if one.origin_msg_id.is_empty() {
                        MessageId {
                            store_host: view
                                .header()
                                .store_host
                                .unwrap_or(super::stored_codec::UNKNOWN_HOST),
                            commit_log_offset: one.commit_log_offset,
                        }
                        .encode()
                    } else {
                        one.origin_msg_id.clone()
                    };
                    let msg = retry_message(
                        &view,
                        &one.consumer_group,
                        &to,
                        &origin,
                        one.reconsume_times.unwrap_or(0),
                    )?;
                    match to {
                        Destination::Retry { .. } => retries.push(msg),
                        Destination::DeadLetter => dead.push(msg),
                    }
                }
                let writer = writer.ok_or_else(|| down("commit log"))?;
                for (messages, create_as) in [
                    (retries, retry_topic_config(&req.consumer_group)),
                    (dead, dlq_topic_config(&req.consumer_group)),
                ] {
                    if messages.is_empty() {
                        continue;
                    }
                    let n = messages.len();
                    let answers = writer
                        .send(PutInternal {
                            messages,
                            create_as: Some(create_as),
                        })
                        .await?;
                    if answers.len() != n {
                        return Err(ServiceError::system("no answer from the commit log"));
                    }
                    for a in answers {
                        a?;
                    }
                }
                Ok(Reply::ok(Empty {}))
            }) as EmptyReply
        })
    }
}

type ResendReply = ResponseFuture<Result<Reply<ResendDeadLettersResponse>, ServiceError>>;

impl Handler<Call<ResendDeadLettersRequest>> for RetryService {
    type Result = GuardedReply<ResendReply>;

    fn handle(
        &mut self,
        call: Call<ResendDeadLettersRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let (store, view, writer, offsets, logger) = (
                act.store.clone(),
                act.view.clone(),
                act.writer.addr(),
                act.offsets.addr(),
                act.logger.clone(),
            );
            Box::pin(async move {
                let group = call.req.consumer_group;
                let dlq = system_topic::dlq_topic(&group);
                actormq_protocol::validate_topic(&dlq)?;
                let offsets = offsets.ok_or_else(|| down("offset manager"))?;
                let (min, max) = (store.min_offset(&dlq, 0), store.max_offset(&dlq, 0));
                let committed = match offsets
                    .send(Call::new(QueryConsumerOffsetRequest {
                        consumer_group: group.clone(),
                        topic: dlq.clone(),
                        queue_id: 0,
                    }))
                    .await?
                {
                    Ok(r) => r.fields.offset,
                    Err(e) if e.code == ResponseCode::QueryNotFound => 0,
                    Err(e) => return Err(e),
                };
                let from = committed.max(min);
                let limit = match call.req.max_count {
                    0 => u64::MAX,
                    n => u64::from(n),
                };
                let until = max.min(from.saturating_add(limit));
                let snapshot = view.snapshot();
                let mut messages = Vec::new();
                let mut origins = Vec::new();
                // The DLQ offset of each message resent (a failure commits
                // only up to the first one not stored).
                let mut at_offsets = Vec::new();
                let mut next_queue: std::collections::BTreeMap<String, u32> = Default::default();
                for at in from..until {
                    let Some(v) = store.read_by_queue_offset(&dlq, 0, at) else {
                        continue;
                    };
                    let Some(topic) = v.property(PROPERTY_RETRY_TOPIC) else {
                        continue;
                    };
                    let Some(cfg) = snapshot.get(topic) else {
                        info!(logger, "dead letter's topic is gone; not resent";
                            "group" => &group, "topic" => topic, "offset" => at);
                        continue;
                    };
                    let queues = cfg.write_queue_nums.max(1);
                    let n = next_queue.entry(topic.to_owned()).or_insert(at as u32);
                    let queue_id = *n % queues;
                    *n = n.wrapping_add(1);
                    if let Some(m) = resent_message(&v, queue_id) {
                        origins.push(
                            v.property(PROPERTY_ORIGIN_MESSAGE_ID)
                                .unwrap_or_default()
                                .to_owned(),
                        );
                        messages.push(m);
                        at_offsets.push(at);
                    }
                }
                let targets: Vec<(String, u32)> = messages
                    .iter()
                    .map(|m| (m.topic.clone(), m.queue_id))
                    .collect();
                let mut resent = Vec::new();
                let mut commit_to = until;
                let mut failure = None;
                if !messages.is_empty() {
                    let writer = writer.ok_or_else(|| down("commit log"))?;
                    let answers = writer
                        .send(PutInternal {
                            messages,
                            create_as: None,
                        })
                        .await?;
                    for (((answer, (topic, queue_id)), origin), at) in answers
                        .into_iter()
                        .zip(targets)
                        .zip(origins)
                        .zip(at_offsets)
                    {
                        // Stop at the first failure: the offset commits
                        // only up to it, so the next resend starts there
                        // (what was stored before it is not resent again).
                        let a = match answer {
                            Ok(a) => a,
                            Err(e) => {
                                commit_to = at;
                                failure = Some(e);
                                break;
                            }
                        };
                        resent.push(ResentMessage {
                            msg_id: MessageId {
                                store_host: store_host(&store, a.commit_log_offset),
                                commit_log_offset: a.commit_log_offset,
                            }
                            .encode(),
                            origin_msg_id: origin,
                            topic,
                            queue_id,
                            queue_offset: a.queue_offset,
                        });
                    }
                }
                if commit_to > committed {
                    offsets
                        .send(Call::new(UpdateConsumerOffsetRequest {
                            consumer_group: group.clone(),
                            topic: dlq.clone(),
                            queue_id: 0,
                            commit_offset: commit_to,
                        }))
                        .await??;
                }
                if let Some(e) = failure {
                    let mut e = e;
                    e.remark = format!(
                        "{} resent, then: {} (run it again to go on)",
                        resent.len(),
                        e.remark
                    );
                    return Err(e);
                }
                info!(logger, "dead letters resent"; "group" => &group, "count" => resent.len(),
                    "from" => from, "to" => until);
                Ok(Reply::ok(ResendDeadLettersResponse {
                    resent,
                    remaining: max.saturating_sub(until),
                }))
            }) as ResendReply
        })
    }
}

/// The store host stamped on the record at `offset` (its message id's).
fn store_host(store: &BrokerStore, offset: u64) -> std::net::SocketAddr {
    store
        .read_at(offset)
        .and_then(|v| v.header().store_host)
        .unwrap_or(super::stored_codec::UNKNOWN_HOST)
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::runtime::guard::InjectPanic> for RetryService {
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

    fn req(delay_level: u8, max: Option<u32>, client: Option<u32>) -> ConsumerSendMsgBackRequest {
        ConsumerSendMsgBackRequest {
            consumer_group: "g".into(),
            delay_level,
            max_reconsume_times: max,
            reconsume_times: client,
            ..Default::default()
        }
    }

    #[test]
    fn retries_back_off_by_level_then_die() {
        let g = SubscriptionGroupConfig::new("g");
        // 3 + reconsume times: 10 s, 30 s, 1 m, ...
        assert_eq!(
            destination(&req(0, None, None), 0, &g),
            Destination::Retry { delay_level: 3 }
        );
        assert_eq!(
            destination(&req(0, None, None), 5, &g),
            Destination::Retry { delay_level: 8 }
        );
        assert_eq!(
            destination(&req(0, None, None), 15, &g),
            Destination::Retry { delay_level: 18 }
        );
        assert_eq!(
            destination(&req(0, None, None), 16, &g),
            Destination::DeadLetter
        );
        // The client's level and max win; an orderly consumer's own count.
        assert_eq!(
            destination(&req(1, None, None), 0, &g),
            Destination::Retry { delay_level: 1 }
        );
        assert_eq!(
            destination(&req(0, Some(2), None), 2, &g),
            Destination::DeadLetter
        );
        assert_eq!(
            destination(&req(0, None, Some(16)), 0, &g),
            Destination::DeadLetter
        );
        // The group's policy.
        let mut g2 = SubscriptionGroupConfig::new("g");
        g2.retry_max_times = 1;
        g2.retry_policy.first_delay_level = 1;
        assert_eq!(
            destination(&req(0, None, None), 0, &g2),
            Destination::Retry { delay_level: 1 }
        );
        assert_eq!(
            destination(&req(0, None, None), 1, &g2),
            Destination::DeadLetter
        );
    }

    #[test]
    fn dead_letters_are_write_only() {
        assert!(!dlq_topic_config("g").perm.is_readable());
        assert!(dlq_topic_config("g").perm.is_writable());
        assert!(retry_topic_config("g").perm.is_readable());
        assert_eq!(retry_topic_config("g").topic_name, "%RETRY%g");
    }
}
