//! [`MessageQuery`]: looks messages up without consuming them — by id, by
//! key (through the brokers' key index) and by queue and offset.
//!
//! - **By id**: a message id names the broker that stored the message and
//!   its commit-log offset ([`MessageId`]), so the lookup asks that broker
//!   (`VIEW_MESSAGE_BY_ID`, code 33) directly; no route is needed.
//! - **By key**: asks every master broker of the topic's route
//!   (`QUERY_MESSAGE`, code 12) for the messages whose `KEYS` (or unique
//!   key) is the key, stored within a time range; the answers are merged
//!   and sorted by store time.
//! - **By queue and offset**: one message read at a queue offset (a pull of
//!   one, answered at once, committing nothing).
//!
//! ```rust,ignore
//! let q = MessageQuery::new(&["127.0.0.1:9876".into()], &log)?;
//! let m = q.by_id("7F00000100002A9F0000000000000000").await?;
//! let found = q.by_key("orders", "order-42", 0, u64::MAX, 32).await?;
//! ```

use std::time::Duration;

use actormq_protocol::batch::decode_stored;
use actormq_protocol::request::{
    QueryMessageRequest, ViewMessageByIdRequest, ViewMessagesByQueueOffsetRequest,
};
use actormq_protocol::{MessageId, MessageQueue, ResponseCode, StoredMessage};
use actormq_runtime::{Reply, Rpc};
use bytes::Bytes;
use slog::Logger;

use crate::connections::Connections;
use crate::error::ClientError;
use crate::route::RouteCache;

/// Most messages a key lookup returns by default (RocketMQ: 32 per broker).
pub const DEFAULT_MAX_PER_KEY: u32 = 32;

/// Message lookups. See the module docs.
#[derive(Debug, Clone)]
pub struct MessageQuery {
    routes: RouteCache,
    timeout: Duration,
}

impl MessageQuery {
    /// Lookups through the name servers `namesrv` (for key and offset
    /// lookups; an id names its broker itself). Must be used inside an
    /// actix `System`.
    pub fn new(namesrv: &[String], logger: &Logger) -> Result<MessageQuery, ClientError> {
        let timeout = Duration::from_secs(5);
        let routes = RouteCache::new(namesrv.to_vec(), Connections::new(logger), timeout, logger)?;
        Ok(MessageQuery { routes, timeout })
    }

    async fn call<R: Rpc>(&self, addr: &str, req: R) -> Result<Reply<R::Response>, ClientError> {
        self.routes
            .connections()
            .call(addr, req, Bytes::new(), self.timeout)
            .await
    }

    /// The message with id `id`; `Ok(None)` when its broker has no such
    /// record (`QUERY_NOT_FOUND`).
    pub async fn by_id(&self, id: &str) -> Result<Option<StoredMessage>, ClientError> {
        let id = MessageId::decode(id).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let addr = id.store_host.to_string();
        match self.call(&addr, ViewMessageByIdRequest::from(id)).await {
            Ok(reply) => Ok(decode_stored(&reply.body)?.into_iter().next()),
            Err(ClientError::Broker {
                code: ResponseCode::QueryNotFound,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The messages of `topic` with key `key` stored within
    /// `begin_ms..=end_ms` (ms since the epoch), at most `max_per_broker`
    /// from each broker, sorted by store time.
    pub async fn by_key(
        &self,
        topic: &str,
        key: &str,
        begin_ms: u64,
        end_ms: u64,
        max_per_broker: u32,
    ) -> Result<Vec<StoredMessage>, ClientError> {
        if begin_ms > end_ms {
            return Err(ClientError::Invalid(format!(
                "--begin-ms {begin_ms} is after --end-ms {end_ms}"
            )));
        }
        let route = self.routes.refresh(topic).await?;
        let mut found = Vec::new();
        for broker in route.broker_names() {
            let Some(addr) = route.master_addr(broker) else {
                continue;
            };
            let req = QueryMessageRequest {
                topic: topic.to_owned(),
                key: key.to_owned(),
                max_num: max_per_broker,
                begin_timestamp_ms: begin_ms,
                end_timestamp_ms: end_ms,
            };
            match self.call(addr, req).await {
                Ok(reply) => found.extend(decode_stored(&reply.body)?),
                Err(ClientError::Broker {
                    code: ResponseCode::QueryNotFound,
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        found.sort_by_key(|m| (m.store_timestamp_ms, m.queue_id, m.queue_offset));
        Ok(found)
    }

    /// The message at `offset` of queue `mq`; `Ok(None)` when the queue has
    /// no message there (past its end, or already deleted).
    pub async fn by_offset(
        &self,
        mq: &MessageQueue,
        offset: u64,
    ) -> Result<Option<StoredMessage>, ClientError> {
        Ok(self
            .from_offset(mq, offset, 1)
            .await?
            .into_iter()
            .find(|m| m.queue_offset == offset))
    }

    /// Up to `max` messages of queue `mq` from `offset` on (the broker caps
    /// one answer at 32), in queue order; empty past the queue's end. An
    /// admin read (`VIEW_MESSAGES_BY_QUEUE_OFFSET`): it reads topics that
    /// consumers may not, such as a group's `%DLQ%` topic.
    pub async fn from_offset(
        &self,
        mq: &MessageQueue,
        offset: u64,
        max: u32,
    ) -> Result<Vec<StoredMessage>, ClientError> {
        let route = self.routes.route(&mq.topic).await?;
        let addr = route
            .master_addr(&mq.broker_name)
            .ok_or_else(|| ClientError::NoRoute {
                topic: format!("{} on {}", mq.topic, mq.broker_name),
            })?
            .to_owned();
        let req = ViewMessagesByQueueOffsetRequest {
            topic: mq.topic.clone(),
            queue_id: mq.queue_id,
            queue_offset: offset,
            max_count: max,
        };
        let reply = self.call(&addr, req).await?;
        Ok(decode_stored(&reply.body)?)
    }
}
