//! `QueryService`: the read-only queries of the data path.
//!
//! Serves `GET_MAX_OFFSET`, `GET_MIN_OFFSET`,
//! `SEARCH_OFFSET_BY_TIMESTAMP` (all answered with [`OffsetResponse`]),
//! `VIEW_MESSAGE_BY_ID` (the record at a commit log offset, as a
//! one-message stored batch body), `VIEW_MESSAGES_BY_QUEUE_OFFSET` (up to
//! [`MAX_QUERY_MESSAGES`] records of one queue from a queue offset, for
//! admin views, whatever the topic's permission) and `QUERY_MESSAGE` (messages of a topic
//! by key within a store-time range, from the key index, as a stored batch
//! body; `QUERY_NOT_FOUND` when none). Every read is lock-free or takes
//! only the store's short index lock, so the actor does no blocking work.

use super::error_map::StoreResultExt;
use actix::prelude::*;
use actormq_protocol::ResponseCode;
use actormq_protocol::request::{
    Empty, GetMaxOffsetRequest, GetMinOffsetRequest, OffsetResponse, QueryMessageRequest,
    QueryMessageResponse, SearchOffsetByTimestampRequest, ViewMessageByIdRequest,
    ViewMessagesByQueueOffsetRequest,
};

use super::broker_store::BrokerStore;
use super::stored_codec::encode_views;
use crate::runtime::guard::{Guarded, GuardedReply, Poison, guarded};
use crate::runtime::{Call, Reply, ServiceError};

/// Most messages one `QUERY_MESSAGE` returns, whatever it asks. RocketMQ: 32.
pub const MAX_QUERY_MESSAGES: usize = 32;

/// The query actor. See the module docs.
#[derive(Debug)]
pub struct QueryService {
    store: BrokerStore,
    poison: Poison,
}

impl QueryService {
    /// Queries over `store`.
    pub fn new(store: BrokerStore) -> Self {
        Self {
            store,
            poison: Poison::default(),
        }
    }
}

impl Actor for QueryService {
    type Context = Context<Self>;
}

// Every handler runs through `guarded`: a panic (say on a record the
// store cannot make sense of) poisons the instance, the queries queued
// behind it are refused (their callers get an error) and the supervisor
// starts a new one.
impl Guarded for QueryService {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::runtime::guard::InjectPanic> for QueryService {
    type Result = GuardedReply<()>;
    fn handle(
        &mut self,
        msg: crate::runtime::guard::InjectPanic,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |_, _| panic!("{}", msg.0))
    }
}

type OffsetReply = Result<Reply<OffsetResponse>, ServiceError>;

fn offset(offset: u64) -> OffsetReply {
    Ok(Reply::ok(OffsetResponse { offset }))
}

impl Handler<Call<GetMaxOffsetRequest>> for QueryService {
    type Result = GuardedReply<OffsetReply>;
    fn handle(&mut self, call: Call<GetMaxOffsetRequest>, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            offset(act.store.max_offset(&call.req.topic, call.req.queue_id))
        })
    }
}

impl Handler<Call<GetMinOffsetRequest>> for QueryService {
    type Result = GuardedReply<OffsetReply>;
    fn handle(&mut self, call: Call<GetMinOffsetRequest>, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            offset(act.store.min_offset(&call.req.topic, call.req.queue_id))
        })
    }
}

impl Handler<Call<SearchOffsetByTimestampRequest>> for QueryService {
    type Result = GuardedReply<OffsetReply>;
    fn handle(
        &mut self,
        call: Call<SearchOffsetByTimestampRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let r = call.req;
            offset(
                act.store
                    .offset_by_time(&r.topic, r.queue_id, r.timestamp_ms),
            )
        })
    }
}

impl Handler<Call<ViewMessageByIdRequest>> for QueryService {
    type Result = GuardedReply<Result<Reply<Empty>, ServiceError>>;
    fn handle(
        &mut self,
        call: Call<ViewMessageByIdRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| act.view_by_id(call))
    }
}

impl QueryService {
    fn view_by_id(
        &mut self,
        call: Call<ViewMessageByIdRequest>,
    ) -> Result<Reply<Empty>, ServiceError> {
        let off = call.req.commit_log_offset;
        match self.store.read_at(off) {
            Some(m) => Ok(Reply::with_body(Empty {}, encode_views(&[m]))),
            None => Err(ServiceError::new(
                ResponseCode::QueryNotFound,
                format!("no message at commit log offset {off}"),
            )),
        }
    }
}

impl Handler<Call<ViewMessagesByQueueOffsetRequest>> for QueryService {
    type Result = GuardedReply<Result<Reply<Empty>, ServiceError>>;
    fn handle(
        &mut self,
        call: Call<ViewMessagesByQueueOffsetRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let r = call.req;
            actormq_protocol::validate_topic(&r.topic)?;
            let count = (r.max_count as usize).clamp(1, MAX_QUERY_MESSAGES) as u64;
            let end = act.store.max_offset(&r.topic, r.queue_id);
            let from = r
                .queue_offset
                .max(act.store.min_offset(&r.topic, r.queue_id));
            let views: Vec<_> = (from..end.min(from.saturating_add(count)))
                .filter_map(|at| act.store.read_by_queue_offset(&r.topic, r.queue_id, at))
                .collect();
            Ok(Reply::with_body(Empty {}, encode_views(&views)))
        })
    }
}

impl Handler<Call<QueryMessageRequest>> for QueryService {
    type Result = GuardedReply<Result<Reply<QueryMessageResponse>, ServiceError>>;
    fn handle(&mut self, call: Call<QueryMessageRequest>, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| act.query_by_key(call))
    }
}

impl QueryService {
    fn query_by_key(
        &mut self,
        call: Call<QueryMessageRequest>,
    ) -> Result<Reply<QueryMessageResponse>, ServiceError> {
        let r = call.req;
        let max = (r.max_num as usize).clamp(1, MAX_QUERY_MESSAGES);
        let found = self
            .store
            .query_by_key(
                &r.topic,
                &r.key,
                r.begin_timestamp_ms,
                r.end_timestamp_ms,
                max,
            )
            .or_reply()?;
        if found.is_empty() {
            return Err(ServiceError::new(
                ResponseCode::QueryNotFound,
                format!("no message of topic {} with key {}", r.topic, r.key),
            ));
        }
        let fields = QueryMessageResponse {
            index_last_update_timestamp_ms: found
                .iter()
                .map(|m| m.store_timestamp_ms())
                .max()
                .unwrap_or(0),
            index_last_update_phy_offset: self.store.dispatched_offset(),
        };
        Ok(Reply::with_body(fields, encode_views(&found)))
    }
}
