//! `OffsetResetService`: serves `INVOKE_BROKER_TO_RESET_OFFSET` (222), a
//! group's offsets on every queue of a topic moved to the first message
//! stored at or after a time, forward or back, while its consumers run.
//!
//! 1. the topic must exist here (`TOPIC_NOT_EXIST`);
//! 2. the store gives each queue's [`QueueSpan`] (offset by time, min,
//!    max; lock-free reads);
//! 3. the [`OffsetManager`] applies [`reset_target`](super::offset_manager::reset_target)
//!    to each queue and persists the table (`SUBSCRIPTION_GROUP_NOT_EXIST`
//!    for a group with no member online that never committed here), so a
//!    consumer that starts later begins at the new offsets;
//! 4. the [`PopService`] moves the group's pop positions there (when it
//!    popped the topic: a RocketMQ 5 gRPC or simple consumer group);
//! 5. the group's members online get `RESET_CONSUMER_CLIENT_OFFSET` (220)
//!    with the new offsets through the [`GroupNotifier`]; they drop what
//!    they cached of those queues and pull from there.
//!
//! The reply lists the new offset of every queue.

use std::collections::BTreeMap;

use actix::prelude::*;
use actormq_protocol::MessageQueue;
use actormq_protocol::request::{
    QueueOffset, ResetConsumerClientOffsetRequest, ResetOffsetRequest, ResetOffsetResponse,
};
use slog::{Logger, info, o};

use super::broker_store::BrokerStore;
use super::group_manager::{GetConsumerConnections, GroupManager};
use super::group_notifier::{GroupNotifier, PushReset};
use super::offset_manager::{OffsetManager, QueueSpan, ResetOffsets};
use super::pop_service::{PopService, ResetPopPositions};
use super::topic_manager::TopicView;
use crate::runtime::guard::{Guarded, GuardedReply, Poison, guarded};
use crate::runtime::{Call, ChildRef, Reply, ServiceError};

/// The reset actor. See the module docs.
pub struct OffsetResetService {
    store: BrokerStore,
    view: TopicView,
    offsets: ChildRef<OffsetManager>,
    groups: ChildRef<GroupManager>,
    notifier: ChildRef<GroupNotifier>,
    pop: ChildRef<PopService>,
    broker_name: String,
    logger: Logger,
    poison: Poison,
}

impl OffsetResetService {
    /// A reset service of the broker `broker_name` (named in the queues it
    /// pushes), pushing through `notifier` once that runs.
    pub fn new(
        store: BrokerStore,
        view: TopicView,
        offsets: ChildRef<OffsetManager>,
        groups: ChildRef<GroupManager>,
        notifier: ChildRef<GroupNotifier>,
        broker_name: &str,
        logger: &Logger,
    ) -> Self {
        Self {
            store,
            view,
            offsets,
            groups,
            notifier,
            pop: ChildRef::empty(),
            broker_name: broker_name.to_string(),
            logger: logger.new(o!("actor" => "OffsetResetService")),
            poison: Poison::default(),
        }
    }

    /// Moves pop positions too, through `pop` (builder style).
    pub fn with_pop(mut self, pop: ChildRef<PopService>) -> Self {
        self.pop = pop;
        self
    }

    fn spans(&self, req: &ResetOffsetRequest) -> Result<Vec<QueueSpan>, ServiceError> {
        actormq_protocol::validate_topic(&req.topic)?;
        let table = self.view.snapshot();
        let Some(cfg) = table.get(&req.topic) else {
            return Err(ServiceError::topic_not_exist(&req.topic));
        };
        let queues = cfg.read_queue_nums.max(cfg.write_queue_nums);
        Ok((0..queues)
            .map(|queue_id| QueueSpan {
                queue_id,
                by_time: self
                    .store
                    .offset_by_time(&req.topic, queue_id, req.timestamp_ms),
                min: self.store.min_offset(&req.topic, queue_id),
                max: self.store.max_offset(&req.topic, queue_id),
            })
            .collect())
    }
}

impl Actor for OffsetResetService {
    type Context = Context<Self>;
}

impl Guarded for OffsetResetService {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

type ResetReply = Result<Reply<ResetOffsetResponse>, ServiceError>;

impl Handler<Call<ResetOffsetRequest>> for OffsetResetService {
    type Result = GuardedReply<ResponseFuture<ResetReply>>;
    fn handle(&mut self, call: Call<ResetOffsetRequest>, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| act.reset(call.req))
    }
}

impl OffsetResetService {
    fn reset(&mut self, req: ResetOffsetRequest) -> ResponseFuture<ResetReply> {
        let spans = self.spans(&req);
        let (offsets, groups, notifier, pop) = (
            self.offsets.addr(),
            self.groups.addr(),
            self.notifier.clone(),
            self.pop.addr(),
        );
        let (broker_name, logger) = (self.broker_name.clone(), self.logger.clone());
        Box::pin(async move {
            let queues = spans?;
            let busy = || ServiceError::busy("offset or group manager restarting");
            let connections = groups
                .ok_or_else(busy)?
                .send(GetConsumerConnections {
                    group: req.consumer_group.clone(),
                })
                .await?;
            let applied: BTreeMap<u32, u64> = offsets
                .ok_or_else(busy)?
                .send(ResetOffsets {
                    group: req.consumer_group.clone(),
                    topic: req.topic.clone(),
                    queues,
                    force: req.force,
                    online: !connections.is_empty(),
                })
                .await??;
            if let Some(pop) = pop {
                pop.send(ResetPopPositions {
                    group: req.consumer_group.clone(),
                    topic: req.topic.clone(),
                    offsets: applied.clone(),
                })
                .await?;
            }
            let offsets: Vec<QueueOffset> = applied
                .iter()
                .map(|(&queue_id, &offset)| QueueOffset {
                    queue: MessageQueue {
                        topic: req.topic.clone(),
                        broker_name: broker_name.clone(),
                        queue_id,
                    },
                    offset,
                })
                .collect();
            let pushed = match notifier.addr() {
                Some(n) if !connections.is_empty() => {
                    n.send(PushReset {
                        connections,
                        req: ResetConsumerClientOffsetRequest {
                            consumer_group: req.consumer_group.clone(),
                            topic: req.topic.clone(),
                            timestamp_ms: req.timestamp_ms,
                            offsets: offsets.clone(),
                        },
                    })
                    .await?
                }
                _ => 0,
            };
            info!(logger, "offsets reset"; "group" => &req.consumer_group, "topic" => &req.topic,
                "timestamp_ms" => req.timestamp_ms, "force" => req.force,
                "offsets" => ?applied, "consumers_notified" => pushed);
            Ok(Reply::ok(ResetOffsetResponse { offsets }))
        })
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::runtime::guard::InjectPanic> for OffsetResetService {
    type Result = GuardedReply<()>;
    fn handle(
        &mut self,
        msg: crate::runtime::guard::InjectPanic,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |_, _| panic!("{}", msg.0))
    }
}
