//! Wiring of the data path: which actor serves which request code, and a
//! one-call start for a node.
//!
//! | request code | served by |
//! |---|---|
//! | `SEND_MESSAGE`, `SEND_BATCH_MESSAGE` | [`CommitLogActor`] (own arbiter) |
//! | `PULL_MESSAGE` | [`PullHold`] |
//! | `GET_MAX_OFFSET`, `GET_MIN_OFFSET`, `SEARCH_OFFSET_BY_TIMESTAMP`, `VIEW_MESSAGE_BY_ID`, `QUERY_MESSAGE` | [`QueryService`] |
//!
//! Internal links: the writer nudges the [`Dispatcher`] after each append
//! ([`super::dispatcher::LogAppended`]); the [`PullHold`] subscribes to the
//! dispatcher's [`super::MessagesStored`] events (custom actors may too,
//! with [`super::SubscribeStored`]); the writer resolves topic misses with
//! the [`super::TopicManager`]; the pull handler forwards piggybacked
//! commit offsets to the [`super::OffsetManager`]. [`FlushService`] and
//! [`RetentionCleaner`] only need the store.

use actix::prelude::*;
use actormq_protocol::request::{
    GetMaxOffsetRequest, GetMinOffsetRequest, PullMessageRequest, QueryMessageRequest,
    SearchOffsetByTimestampRequest, SendBatchMessageRequest, SendMessageRequest,
    UpdateConsumerOffsetRequest, ViewMessageByIdRequest,
};
use slog::Logger;

use super::broker_store::BrokerStore;
use super::commit_log::{CommitLogActor, CommitLogConfig};
use super::dispatcher::{Dispatcher, DispatcherConfig, SubscribeStored};
use super::flush_service::{FlushService, FlushServiceConfig};
use super::pull_hold::{PullHold, PullHoldConfig};
use super::query_service::QueryService;
use super::retention_cleaner::{RetentionCleaner, RetentionConfig};
use super::topic_manager::{ResolveTopic, TopicView};
use crate::runtime::{Call, Router};

/// Settings of every data-path actor (each field documents its defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataPathConfig {
    /// The writer.
    pub writer: CommitLogConfig,
    /// The dispatcher.
    pub dispatcher: DispatcherConfig,
    /// Pulls and long polling.
    pub pull: PullHoldConfig,
    /// Flush ownership.
    pub flush: FlushServiceConfig,
    /// Retention.
    pub retention: RetentionConfig,
}

/// What the data path needs from the rest of the broker.
#[derive(Clone)]
pub struct DataPathLinks {
    /// The shared topic snapshot.
    pub topics: TopicView,
    /// Resolves (auto-creates) topics on a send miss.
    pub topic_manager: Recipient<ResolveTopic>,
    /// Receives commit offsets piggybacked on pulls, if any.
    pub offsets: Option<Recipient<Call<UpdateConsumerOffsetRequest>>>,
}

/// The started data-path actors.
#[derive(Clone)]
pub struct DataPath {
    /// The shared store.
    pub store: BrokerStore,
    /// The single writer.
    pub writer: Addr<CommitLogActor>,
    /// The dispatcher.
    pub dispatcher: Addr<Dispatcher>,
    /// Pulls and long polling.
    pub pull: Addr<PullHold>,
    /// Offset and message queries.
    pub query: Addr<QueryService>,
    /// Flush ownership (send `Shutdown` before closing the store).
    pub flush: Addr<FlushService>,
    /// Retention.
    pub retention: Addr<RetentionCleaner>,
}

impl DataPath {
    /// Starts the actors: the writer on `writer_arbiter` (its own thread,
    /// it memcpys into the mapped log), the others on `arbiter`.
    pub fn start(
        store: BrokerStore,
        links: DataPathLinks,
        config: DataPathConfig,
        writer_arbiter: &ArbiterHandle,
        arbiter: &ArbiterHandle,
        logger: &Logger,
    ) -> Self {
        let (s, c, l) = (store.clone(), config.dispatcher.clone(), logger.clone());
        let dispatcher = Dispatcher::start_in_arbiter(arbiter, move |_| Dispatcher::new(s, c, &l));
        let (s, c, l, ln, d) = (
            store.clone(),
            config.writer.clone(),
            logger.clone(),
            links.clone(),
            dispatcher.clone().recipient(),
        );
        let writer = CommitLogActor::start_in_arbiter(writer_arbiter, move |_| {
            CommitLogActor::new(s, ln.topics, ln.topic_manager, c, &l).with_dispatcher(d)
        });
        let (s, c, l, ln) = (store.clone(), config.pull.clone(), logger.clone(), links);
        let pull = PullHold::start_in_arbiter(arbiter, move |_| {
            let p = PullHold::new(s, ln.topics, c, &l);
            match ln.offsets {
                Some(o) => p.with_offset_manager(o),
                None => p,
            }
        });
        // Subscribed before any send can reach the writer (the caller
        // registers the routes after `start`), so no event is missed; the
        // store dispatched everything older while it opened.
        dispatcher.do_send(SubscribeStored(pull.clone().recipient()));
        let s = store.clone();
        let query = QueryService::start_in_arbiter(arbiter, move |_| QueryService::new(s));
        let (s, c, l) = (store.clone(), config.flush.clone(), logger.clone());
        let flush = FlushService::start_in_arbiter(arbiter, move |_| FlushService::new(s, c, &l));
        let (s, c, l) = (store.clone(), config.retention.clone(), logger.clone());
        let retention =
            RetentionCleaner::start_in_arbiter(arbiter, move |_| RetentionCleaner::new(s, c, &l));
        Self {
            store,
            writer,
            dispatcher,
            pull,
            query,
            flush,
            retention,
        }
    }

    /// Registers the request codes this data path serves (table above).
    pub fn route(&self, router: &mut Router) {
        router
            .route::<SendMessageRequest>(self.writer.clone().recipient())
            .route::<SendBatchMessageRequest>(self.writer.clone().recipient())
            .route::<PullMessageRequest>(self.pull.clone().recipient())
            .route::<GetMaxOffsetRequest>(self.query.clone().recipient())
            .route::<GetMinOffsetRequest>(self.query.clone().recipient())
            .route::<SearchOffsetByTimestampRequest>(self.query.clone().recipient())
            .route::<ViewMessageByIdRequest>(self.query.clone().recipient())
            .route::<QueryMessageRequest>(self.query.clone().recipient());
    }
}
