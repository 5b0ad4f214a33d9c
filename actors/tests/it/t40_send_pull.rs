//! The data path as actors over a real store in a temp dir: send (single
//! and batch, async and sync flush), pull back, offsets, queries, errors,
//! restart. `Node` is the fixture the other `t4*` modules share.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use actormq_actors::broker::commit_log::GetCommitLogStats;
use actormq_actors::broker::dispatcher::{GetDispatchStats, MessagesStored, SubscribeStored};
use actormq_actors::broker::flush_service::{FlushAndCheckpoint, GetFlushLag, Shutdown};
use actormq_actors::broker::{
    BrokerActors, BrokerActorsConfig, BrokerStore, CommitLogActor, CommitLogConfig, Dispatcher,
    DispatcherConfig, FlushService, PullHold, PullHoldConfig, QueryService, RetentionCleaner,
    TopicManager, TopicView,
};
use actormq_actors::runtime::{
    Call, Escalation, Reply, RestartPolicy, Router, ServiceError, StopSupervisor, Supervisor,
};
use actormq_protocol::request::{
    CreateTopicRequest, GetMaxOffsetRequest, GetMinOffsetRequest, Perm, PullMessageRequest,
    PullMessageResponse, QueryMessageRequest, SearchOffsetByTimestampRequest,
    SendBatchMessageRequest, SendBatchMessageResponse, SendMessageRequest, SendMessageResponse,
    TopicConfig, ViewMessageByIdRequest,
};
use actormq_protocol::{Delay, Message, MessageId, ResponseCode, StoredMessage, batch};
use actormq_store::{FlushMode, StoreConfig};
use bytes::Bytes;
use slog::{Logger, o};
use tokio::sync::mpsc;

pub fn log() -> Logger {
    Logger::root(slog::Discard, o!())
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// How to build a [`Node`].
#[derive(Clone)]
pub struct Opts {
    pub flush: FlushMode,
    pub auto_create: bool,
    pub writer: CommitLogConfig,
    pub pull: PullHoldConfig,
    pub segment_size: u64,
    pub store: Option<fn(&mut StoreConfig)>,
    pub dispatcher: DispatcherConfig,
    /// The timer wheel's window in seconds (`None`: the default).
    pub timer_slots: Option<u64>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            flush: FlushMode::Async,
            auto_create: true,
            writer: CommitLogConfig::default(),
            pull: PullHoldConfig::default(),
            segment_size: 1 << 20,
            store: None,
            dispatcher: DispatcherConfig::default(),
            timer_slots: None,
        }
    }
}

/// The actors of one broker, started by the production wiring
/// ([`BrokerActors::start`]) under a supervisor of their own; the fields
/// are the addresses of the incarnations running at start.
pub struct Node {
    pub store: BrokerStore,
    pub view: TopicView,
    pub topics: Addr<TopicManager>,
    pub writer: Addr<CommitLogActor>,
    pub dispatcher: Addr<Dispatcher>,
    pub pull: Addr<PullHold>,
    pub query: Addr<QueryService>,
    pub flush: Addr<FlushService>,
    pub retention: Addr<RetentionCleaner>,
    pub router: Router,
    pub actors: BrokerActors,
    pub supervisor: Addr<Supervisor>,
}

impl Node {
    pub async fn start(dir: &Path, opts: Opts) -> Node {
        let mut cfg = StoreConfig::small(dir.join("store"), opts.segment_size);
        cfg.flush_mode = opts.flush;
        if let Some(tweak) = opts.store {
            tweak(&mut cfg);
        }
        let mut config = BrokerActorsConfig::new(cfg, dir, opts.writer.store_host);
        config.topics.auto_create = opts.auto_create;
        config.topics.default_queues = 4;
        config.writer = opts.writer;
        config.pull = opts.pull;
        config.dispatcher = opts.dispatcher;
        if let Some(slots) = opts.timer_slots {
            config.timer.slots = slots;
        }
        let supervisor = Supervisor::new(
            "broker",
            &log(),
            RestartPolicy::default(),
            Escalation::StopSystem,
        )
        .start();
        let actors = BrokerActors::start(&supervisor, config, &log())
            .await
            .expect("broker actors start");
        let mut router = Router::new();
        actors.route(&mut router);
        Node {
            store: actors.store.clone(),
            view: actors.view.clone(),
            topics: actors.topics.addr().unwrap(),
            writer: actors.writer.addr().unwrap(),
            dispatcher: actors.dispatcher.addr().unwrap(),
            pull: actors.pull.addr().unwrap(),
            query: actors.query.addr().unwrap(),
            flush: actors.flush.addr().unwrap(),
            retention: actors.retention.addr().unwrap(),
            router,
            actors,
            supervisor,
        }
    }

    /// Graceful stop as a node does it: final flush + checkpoint, stop
    /// every actor, close the store (every handle must be gone).
    pub async fn stop(self) {
        self.flush.send(Shutdown).await.unwrap().unwrap();
        let Node {
            store,
            actors,
            supervisor,
            ..
        } = self;
        supervisor.send(StopSupervisor).await.unwrap();
        drop(actors);
        store
            .close(Duration::from_secs(5))
            .await
            .map_err(|s| format!("store still shared by {} handles", s.handles()))
            .unwrap()
            .unwrap();
    }

    pub async fn create_topic(&self, topic: &str, queues: u32) {
        let config = TopicConfig {
            topic_name: topic.into(),
            read_queue_nums: queues,
            write_queue_nums: queues,
            perm: Perm::READ_WRITE,
            ..TopicConfig::default()
        };
        self.topics
            .send(Call::new(CreateTopicRequest { config }))
            .await
            .unwrap()
            .unwrap();
    }

    pub async fn send(
        &self,
        queue_id: u32,
        msg: &Message,
    ) -> Result<Reply<SendMessageResponse>, ServiceError> {
        let req = SendMessageRequest::new("pg", queue_id, now_ms(), msg);
        self.writer
            .send(Call::with_body(req, msg.body.clone()))
            .await
            .unwrap()
    }

    pub async fn send_batch(
        &self,
        topic: &str,
        queue_id: u32,
        msgs: &[Message],
    ) -> Result<Reply<SendBatchMessageResponse>, ServiceError> {
        let req = SendBatchMessageRequest {
            producer_group: "pg".into(),
            topic: topic.into(),
            queue_id,
            born_timestamp_ms: now_ms(),
            producer_id: None,
            sequence: None,
        };
        self.writer
            .send(Call::with_body(req, batch::messages_to_bytes(msgs)))
            .await
            .unwrap()
    }

    pub async fn pull(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        suspend_ms: u64,
        subscription: Option<&str>,
    ) -> Result<Reply<PullMessageResponse>, ServiceError> {
        self.pull
            .send(Call::new(pull_req(
                topic,
                queue_id,
                offset,
                suspend_ms,
                subscription,
            )))
            .await
            .unwrap()
    }

    /// Pulls from `offset` until `n` messages arrived (long polling; 5 s each).
    pub async fn pull_n(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        n: usize,
    ) -> Vec<StoredMessage> {
        let mut out = Vec::new();
        let mut next = offset;
        while out.len() < n {
            let r = self.pull(topic, queue_id, next, 5000, None).await.unwrap();
            assert_eq!(
                r.code,
                ResponseCode::Success,
                "pull at {next}: {:?}",
                r.fields
            );
            let got = batch::decode_stored(&r.body).unwrap();
            assert!(!got.is_empty());
            next = r.fields.next_begin_offset;
            out.extend(got);
        }
        out
    }

    /// Waits until the dispatcher made `topic`/`queue` reach `max`.
    pub async fn wait_dispatched(&self, topic: &str, queue_id: u32, max: u64) {
        for _ in 0..500 {
            if self.store.max_offset(topic, queue_id) >= max {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("queue {topic}/{queue_id} never reached {max}");
    }
}

pub fn pull_req(
    topic: &str,
    queue_id: u32,
    offset: u64,
    suspend_ms: u64,
    subscription: Option<&str>,
) -> PullMessageRequest {
    PullMessageRequest {
        consumer_group: "cg".into(),
        topic: topic.into(),
        queue_id,
        queue_offset: offset,
        max_msg_nums: 32,
        commit_offset: None,
        suspend_timeout_ms: suspend_ms,
        subscription: subscription.map(str::to_owned),
        expression_type: None,
        records: false,
    }
}

pub fn message(topic: &str, i: usize) -> Message {
    let mut m = Message::new(
        topic,
        Bytes::from(format!("body-{i}-{}", "x".repeat(i % 50))),
    );
    m.tags = Some(if i % 2 == 0 { "even" } else { "odd" }.into());
    m.keys = Some(format!("k{i} order-{}", i / 10));
    let mut props = BTreeMap::new();
    props.insert("n".to_owned(), i.to_string());
    props.insert("UNIQ_KEY".to_owned(), format!("U{i:08}"));
    m.properties = props;
    m
}

async fn round_trip(flush: FlushMode) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        Opts {
            flush,
            ..Opts::default()
        },
    )
    .await;
    let topic = "orders";
    let mut sent = Vec::new();
    // Singles (the first auto-creates the topic).
    for i in 0..20 {
        let m = message(topic, i);
        let r = node.send(1, &m).await.unwrap();
        assert_eq!(r.code, ResponseCode::Success);
        assert_eq!(r.fields.queue_id, 1);
        assert_eq!(r.fields.queue_offset, i as u64);
        let id = MessageId::decode(&r.fields.msg_id).unwrap();
        assert_eq!(id.store_host, CommitLogConfig::default().store_host);
        sent.push(m);
    }
    // Batches.
    for b in 0..5 {
        let msgs: Vec<Message> = (0..10).map(|j| message(topic, 20 + b * 10 + j)).collect();
        let r = node.send_batch(topic, 1, &msgs).await.unwrap();
        assert_eq!(r.code, ResponseCode::Success);
        assert_eq!(r.fields.queue_offset, 20 + b as u64 * 10);
        assert_eq!(r.fields.msg_ids().count(), 10);
        sent.extend(msgs);
    }
    // A delayed message is parked in the schedule topic (the schedule
    // service tests follow it to delivery): not in the topic yet, but the
    // reply names the queue it was sent to.
    let mut delayed = message(topic, 70);
    delayed.delay = Delay::Level(3);
    let r = node.send(1, &delayed).await.unwrap();
    assert_eq!(r.code, ResponseCode::Success);
    assert_eq!(r.fields.queue_id, 1);

    let got = node.pull_n(topic, 1, 0, sent.len()).await;
    assert_eq!(got.len(), sent.len());
    for (i, (s, g)) in sent.iter().zip(&got).enumerate() {
        assert_eq!(&g.message, s, "message {i}");
        assert_eq!(g.queue_offset, i as u64);
        assert_eq!(g.queue_id, 1);
        assert_eq!(g.body_crc, crc32fast::hash(&s.body));
        assert!(g.store_timestamp_ms > 0);
        assert_eq!(g.store_host, CommitLogConfig::default().store_host);
    }
    if flush == FlushMode::Sync {
        let lag = node.flush.send(GetFlushLag).await.unwrap();
        assert!(lag.flushed >= got.last().unwrap().commit_log_offset);
    }
    let stats = node.writer.send(GetCommitLogStats).await.unwrap();
    assert_eq!(stats.messages, sent.len() as u64 + 1);
    assert_eq!(stats.flush_timeouts, 0);
    assert_eq!(node.store.max_offset(topic, 1), sent.len() as u64);
    node.stop().await;
}

#[actix_rt::test]
async fn send_and_pull_back_async_flush() {
    round_trip(FlushMode::Async).await;
}

#[actix_rt::test]
async fn send_and_pull_back_sync_flush() {
    round_trip(FlushMode::Sync).await;
}

#[actix_rt::test]
async fn unknown_topic_without_auto_create() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        Opts {
            auto_create: false,
            ..Opts::default()
        },
    )
    .await;
    let e = node.send(0, &message("nope", 0)).await.unwrap_err();
    assert_eq!(e.code, ResponseCode::TopicNotExist);
    let msgs = vec![message("nope", 0)];
    let e = node.send_batch("nope", 0, &msgs).await.unwrap_err();
    assert_eq!(e.code, ResponseCode::TopicNotExist);
    let e = node.pull("nope", 0, 0, 0, None).await.unwrap_err();
    assert_eq!(e.code, ResponseCode::TopicNotExist);
    // Once created, the same send goes through; a queue beyond the topic's is refused.
    node.create_topic("nope", 2).await;
    node.send(1, &message("nope", 0)).await.unwrap();
    let e = node.send(2, &message("nope", 0)).await.unwrap_err();
    assert_eq!(e.code, ResponseCode::InvalidParameter);
    let e = node.pull("nope", 5, 0, 0, None).await.unwrap_err();
    assert_eq!(e.code, ResponseCode::InvalidParameter);
    node.stop().await;
}

#[actix_rt::test]
async fn illegal_messages_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        Opts {
            writer: CommitLogConfig {
                max_message_size: 64 * 1024,
                ..CommitLogConfig::default()
            },
            ..Opts::default()
        },
    )
    .await;
    // Over the broker's message size.
    let big = Message::new("t", Bytes::from(vec![7u8; 64 * 1024 + 1]));
    assert_eq!(
        node.send(0, &big).await.unwrap_err().code,
        ResponseCode::MessageIllegal
    );
    // A batch whose total is over it.
    let parts: Vec<Message> = (0..3)
        .map(|_| Message::new("t", Bytes::from(vec![1u8; 30 * 1024])))
        .collect();
    assert_eq!(
        node.send_batch("t", 0, &parts).await.unwrap_err().code,
        ResponseCode::MessageIllegal
    );
    // A batch mixing topics, a malformed batch body, a bad topic name.
    let mixed = vec![message("t", 0), message("u", 1)];
    assert_eq!(
        node.send_batch("t", 0, &mixed).await.unwrap_err().code,
        ResponseCode::MessageIllegal
    );
    let req = SendBatchMessageRequest {
        topic: "t".into(),
        ..SendBatchMessageRequest::default()
    };
    let e = node
        .writer
        .send(Call::with_body(
            req,
            Bytes::from_static(b"\0\0\0\x09garbage"),
        ))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code, ResponseCode::InvalidParameter);
    assert_eq!(
        node.send(0, &message("bad topic!", 0))
            .await
            .unwrap_err()
            .code,
        ResponseCode::InvalidParameter
    );
    // A batch entry whose property value, or topic, is not UTF-8: the
    // whole batch is refused.
    let mut good = message("t", 1);
    good.properties.insert("p".into(), "v~~~".into());
    let cases: [(&[u8], &[u8], ResponseCode); 2] = [
        (b"v~~~", b"v\xff~~", ResponseCode::InvalidParameter),
        (b"\xa1t", b"\xa1\xff", ResponseCode::MessageIllegal),
    ];
    for (from, to, code) in cases {
        let mut raw =
            actormq_protocol::batch::messages_to_bytes(&[message("t", 0), good.clone()]).to_vec();
        let at = raw
            .windows(from.len())
            .rposition(|w| w == from)
            .expect("marker in the encoding");
        raw[at..at + to.len()].copy_from_slice(to);
        let req = SendBatchMessageRequest {
            topic: "t".into(),
            ..SendBatchMessageRequest::default()
        };
        let e = node
            .writer
            .send(Call::with_body(req, Bytes::from(raw)))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code, code, "{e:?}");
    }
    // A property with a separator byte cannot be stored.
    let mut m = message("t", 0);
    m.properties.insert("a\u{2}b".into(), "v".into());
    assert_eq!(
        node.send(0, &m).await.unwrap_err().code,
        ResponseCode::MessageIllegal
    );
    // Nothing of that reached the store; a good message still does.
    assert_eq!(
        node.send(0, &message("t", 0))
            .await
            .unwrap()
            .fields
            .queue_offset,
        0
    );
    node.stop().await;
}

#[actix_rt::test]
async fn record_over_the_store_limit_is_illegal() {
    let dir = tempfile::tempdir().unwrap();
    // 64 KiB segments: records over ~64 KiB cannot be stored, although the
    // broker's message limit (4 MiB) allows them.
    let node = Node::start(
        dir.path(),
        Opts {
            segment_size: 64 * 1024,
            ..Opts::default()
        },
    )
    .await;
    let big = Message::new("t", Bytes::from(vec![7u8; 70 * 1024]));
    assert_eq!(
        node.send(0, &big).await.unwrap_err().code,
        ResponseCode::MessageIllegal
    );
    node.stop().await;
}

#[actix_rt::test]
async fn offsets_and_offset_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    let topic = "offs";
    node.create_topic(topic, 2).await;
    // Empty queue: offset 0 is "not found", any other offset "moved".
    let r = node.pull(topic, 0, 0, 0, None).await.unwrap();
    assert_eq!(r.code, ResponseCode::PullNotFound);
    let r = node.pull(topic, 0, 5, 0, None).await.unwrap();
    assert_eq!(r.code, ResponseCode::PullOffsetMoved);
    assert_eq!(r.fields.next_begin_offset, 0);

    let t_before = now_ms();
    for i in 0..10 {
        node.send(0, &message(topic, i)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t_mid = now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 10..15 {
        node.send(0, &message(topic, i)).await.unwrap();
    }
    node.wait_dispatched(topic, 0, 15).await;

    let max = node
        .query
        .send(Call::new(GetMaxOffsetRequest {
            topic: topic.into(),
            queue_id: 0,
        }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(max.fields.offset, 15);
    let min = node
        .query
        .send(Call::new(GetMinOffsetRequest {
            topic: topic.into(),
            queue_id: 0,
        }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(min.fields.offset, 0);
    let search = |ts| {
        node.query.send(Call::new(SearchOffsetByTimestampRequest {
            topic: topic.into(),
            queue_id: 0,
            timestamp_ms: ts,
        }))
    };
    assert_eq!(search(t_before).await.unwrap().unwrap().fields.offset, 0);
    assert_eq!(search(t_mid).await.unwrap().unwrap().fields.offset, 10);
    assert_eq!(
        search(now_ms() + 60_000)
            .await
            .unwrap()
            .unwrap()
            .fields
            .offset,
        15
    );

    // At the max: not found (caught up); past it: moved; inside: found.
    let r = node.pull(topic, 0, 15, 0, None).await.unwrap();
    assert_eq!(r.code, ResponseCode::PullNotFound);
    assert_eq!((r.fields.next_begin_offset, r.fields.max_offset), (15, 15));
    let r = node.pull(topic, 0, 100, 0, None).await.unwrap();
    assert_eq!(r.code, ResponseCode::PullOffsetMoved);
    let r = node.pull(topic, 0, 12, 0, None).await.unwrap();
    assert_eq!(r.code, ResponseCode::Success);
    assert_eq!(r.fields.next_begin_offset, 15);
    assert_eq!(batch::decode_stored(&r.body).unwrap().len(), 3);
    // The other queue is untouched.
    let r = node.pull(topic, 1, 0, 0, None).await.unwrap();
    assert_eq!(r.code, ResponseCode::PullNotFound);
    node.stop().await;
}

#[actix_rt::test]
async fn tag_filtering() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    let topic = "tags";
    for i in 0..30 {
        node.send(2, &message(topic, i)).await.unwrap();
    }
    node.wait_dispatched(topic, 2, 30).await;
    let r = node.pull(topic, 2, 0, 0, Some("odd")).await.unwrap();
    assert_eq!(r.code, ResponseCode::Success);
    let got = batch::decode_stored(&r.body).unwrap();
    assert_eq!(got.len(), 15);
    assert!(got.iter().all(|m| m.message.tags.as_deref() == Some("odd")));
    assert!(got.iter().all(|m| m.queue_offset % 2 == 1));
    assert_eq!(r.fields.next_begin_offset, 30);
    let r = node
        .pull(topic, 2, 0, 0, Some("even || odd"))
        .await
        .unwrap();
    assert_eq!(batch::decode_stored(&r.body).unwrap().len(), 30);
    let r = node.pull(topic, 2, 0, 0, Some("*")).await.unwrap();
    assert_eq!(batch::decode_stored(&r.body).unwrap().len(), 30);
    // Nothing matches: retry immediately from past the scanned range.
    let r = node.pull(topic, 2, 0, 0, Some("none")).await.unwrap();
    assert_eq!(r.code, ResponseCode::PullRetryImmediately);
    assert_eq!(r.fields.next_begin_offset, 30);
    // A bad SQL92 expression is refused; a good one filters by property
    // (these messages have none: nothing matches, retry from past them).
    let mut req = pull_req(topic, 2, 0, 0, Some("a > 1;"));
    req.expression_type = Some("SQL92".into());
    let e = node
        .pull
        .send(Call::new(req.clone()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code, ResponseCode::SubscriptionParseFailed);
    req.subscription = Some("a > 1".into());
    let r = node.pull.send(Call::new(req)).await.unwrap().unwrap();
    assert_eq!(r.code, ResponseCode::PullRetryImmediately);
    assert_eq!(r.fields.next_begin_offset, 30);
    let mut req = pull_req(topic, 2, 0, 0, Some("TAGS = 'odd'"));
    req.expression_type = Some("SQL92".into());
    let r = node.pull.send(Call::new(req)).await.unwrap().unwrap();
    let got = batch::decode_stored(&r.body).unwrap();
    assert_eq!(got.len(), 15);
    assert!(got.iter().all(|m| m.message.tags.as_deref() == Some("odd")));
    node.stop().await;
}

#[actix_rt::test]
async fn records_replies_read_back_as_the_batch_replies() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    let topic = "records";
    for i in 0..40 {
        node.send(1, &message(topic, i)).await.unwrap();
    }
    node.wait_dispatched(topic, 1, 40).await;
    for filter in [None, Some("odd")] {
        let batch_reply = node.pull(topic, 1, 3, 0, filter).await.unwrap();
        let mut req = pull_req(topic, 1, 3, 0, filter);
        req.records = true;
        let rec_reply = node.pull.send(Call::new(req)).await.unwrap().unwrap();
        assert_eq!(rec_reply.code, ResponseCode::Success);
        assert!(rec_reply.fields.records && !batch_reply.fields.records);
        assert_eq!(
            rec_reply.fields.next_begin_offset,
            batch_reply.fields.next_begin_offset
        );
        let owned = batch::decode_stored(&batch_reply.body).unwrap();
        let views = actormq_protocol::records::decode_records(&rec_reply.body).unwrap();
        assert!(!views.is_empty());
        let read: Vec<StoredMessage> = views.iter().map(|v| v.to_stored()).collect();
        assert_eq!(read, owned, "filter {filter:?}");
    }
    // Nothing found: no body either way.
    let mut req = pull_req(topic, 1, 40, 0, None);
    req.records = true;
    let r = node.pull.send(Call::new(req)).await.unwrap().unwrap();
    assert_eq!(r.code, ResponseCode::PullNotFound);
    assert!(r.body.is_empty());
}

#[actix_rt::test]
async fn view_by_id_and_query_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    let topic = "q";
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(
            node.send(0, &message(topic, i))
                .await
                .unwrap()
                .fields
                .msg_id,
        );
    }
    node.wait_dispatched(topic, 0, 25).await;
    let id = MessageId::decode(&ids[7]).unwrap();
    let r = node
        .query
        .send(Call::new(ViewMessageByIdRequest::from(id)))
        .await
        .unwrap()
        .unwrap();
    let got = batch::decode_stored(&r.body).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, message(topic, 7));
    assert_eq!(got[0].msg_id(), id);
    let e = node
        .query
        .send(Call::new(ViewMessageByIdRequest {
            commit_log_offset: u64::MAX / 2,
        }))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code, ResponseCode::QueryNotFound);

    let query = |key: &str| {
        node.query.send(Call::new(QueryMessageRequest {
            topic: topic.into(),
            key: key.into(),
            max_num: 32,
            begin_timestamp_ms: 0,
            end_timestamp_ms: u64::MAX,
        }))
    };
    let r = query("order-1").await.unwrap().unwrap();
    let mut got: Vec<u64> = batch::decode_stored(&r.body)
        .unwrap()
        .iter()
        .map(|m| m.queue_offset)
        .collect();
    got.sort_unstable();
    assert_eq!(got, (10..20).collect::<Vec<u64>>());
    let r = query("U00000003").await.unwrap().unwrap();
    assert_eq!(batch::decode_stored(&r.body).unwrap()[0].queue_offset, 3);
    assert_eq!(
        query("missing").await.unwrap().unwrap_err().code,
        ResponseCode::QueryNotFound
    );
    node.stop().await;
}

struct Audit(mpsc::UnboundedSender<MessagesStored>);
impl Actor for Audit {
    type Context = Context<Self>;
}
impl Handler<MessagesStored> for Audit {
    type Result = ();
    fn handle(&mut self, msg: MessagesStored, _: &mut Context<Self>) {
        let _ = self.0.send(msg);
    }
}

#[actix_rt::test]
async fn custom_actor_sees_messages_stored_events() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    node.dispatcher
        .send(SubscribeStored(Audit(tx).start().recipient()))
        .await
        .unwrap();
    let msgs: Vec<Message> = (0..7).map(|i| message("audit", i)).collect();
    node.send_batch("audit", 3, &msgs).await.unwrap();
    node.send(1, &message("audit", 9)).await.unwrap();
    let mut seen: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    while seen.values().map(|v| v.0).sum::<u64>() < 8 {
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ev.topic, "audit");
        let e = seen.entry(ev.queue_id).or_default();
        e.0 += ev.count;
        e.1 = e.1.max(ev.max_offset);
        assert!(ev.last_store_timestamp_ms > 0);
    }
    assert_eq!(seen.get(&3), Some(&(7, 7)));
    assert_eq!(seen.get(&1), Some(&(1, 1)));
    let stats = node.dispatcher.send(GetDispatchStats).await.unwrap();
    assert_eq!(stats.records, 8);
    // Small backlogs are dispatched in place.
    assert_eq!(stats.offloaded_rounds, 0);
    node.stop().await;
}

#[actix_rt::test]
async fn big_backlogs_are_dispatched_on_a_pool_thread() {
    let dir = tempfile::tempdir().unwrap();
    // Every backlog counts as big; small rounds keep it busy.
    let node = Node::start(
        dir.path(),
        Opts {
            dispatcher: DispatcherConfig {
                offload_bytes: 1,
                max_per_round: 64,
                ..DispatcherConfig::default()
            },
            ..Opts::default()
        },
    )
    .await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    node.dispatcher
        .send(SubscribeStored(Audit(tx).start().recipient()))
        .await
        .unwrap();
    let topic = "offload";
    let sent: Vec<Message> = (0..500).map(|i| message(topic, i)).collect();
    for chunk in sent.chunks(100) {
        node.send_batch(topic, 2, chunk).await.unwrap();
    }
    node.wait_dispatched(topic, 2, 500).await;
    // A pool round's records reach the store before the dispatcher counts
    // them (when the round's result comes back): wait for the count.
    let began = std::time::Instant::now();
    let stats = loop {
        let stats = node.dispatcher.send(GetDispatchStats).await.unwrap();
        if stats.records >= 500 {
            break stats;
        }
        assert!(began.elapsed() < Duration::from_secs(10), "{stats:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert_eq!(stats.records, 500);
    assert!(stats.offloaded_rounds >= 500 / 64, "{stats:?}");
    // The events of the pool rounds reach subscribers: 500 messages in all.
    let mut count = 0;
    while count < 500 {
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((ev.topic.as_str(), ev.queue_id), (topic, 2));
        count += ev.count;
    }
    assert_eq!(count, 500);
    // And the queue reads back in order.
    let got = node.pull_n(topic, 2, 0, 500).await;
    let bodies: Vec<&Message> = got.iter().map(|g| &g.message).collect();
    assert_eq!(bodies, sent.iter().collect::<Vec<_>>());
    node.stop().await;
}

#[actix_rt::test]
async fn restart_reads_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "durable";
    let sent: Vec<Message> = (0..300).map(|i| message(topic, i)).collect();
    {
        let node = Node::start(dir.path(), Opts::default()).await;
        for chunk in sent.chunks(50) {
            node.send_batch(topic, 0, chunk).await.unwrap();
        }
        node.wait_dispatched(topic, 0, 300).await;
        let lag = node.flush.send(FlushAndCheckpoint).await.unwrap().unwrap();
        assert_eq!(lag.flushed, lag.written);
        node.stop().await;
    }
    let node = Node::start(dir.path(), Opts::default()).await;
    assert!(node.store.recovery_report().clean);
    let got = node.pull_n(topic, 0, 0, 300).await;
    let bodies: Vec<&Message> = got.iter().map(|g| &g.message).collect();
    assert_eq!(bodies, sent.iter().collect::<Vec<_>>());
    // Appends continue after the recovered offsets.
    let r = node.send(0, &message(topic, 300)).await.unwrap();
    assert_eq!(r.fields.queue_offset, 300);
    node.stop().await;
}

#[actix_rt::test]
async fn the_broker_wiring_serves_its_request_codes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    let mut codes = node.router.codes();
    codes.sort_unstable();
    use actormq_protocol::RequestCode as C;
    let mut want: Vec<u32> = [
        C::SendMessage,
        C::SendBatchMessage,
        C::PullMessage,
        C::QueryMessage,
        C::SearchOffsetByTimestamp,
        C::GetMaxOffset,
        C::GetMinOffset,
        C::ViewMessageById,
        C::ViewMessagesByQueueOffset,
        C::UpdateAndCreateTopic,
        C::DeleteTopicInBroker,
        C::GetAllTopicConfig,
        C::QueryConsumerOffset,
        C::UpdateConsumerOffset,
        C::HeartBeat,
        C::GetConsumerListByGroup,
        C::LockBatchMq,
        C::UnlockBatchMq,
        C::UpdateAndCreateSubscriptionGroup,
        C::GetAllSubscriptionGroupConfig,
        C::DeleteSubscriptionGroup,
        C::InvokeBrokerToResetOffset,
        C::ConsumerSendMsgBack,
        C::ResendDeadLetters,
        C::EndTransaction,
        C::PopMessage,
        C::AckMessage,
        C::ChangeMessageInvisibleTime,
        C::BatchAckMessage,
        C::PromoteBroker,
        C::GetBrokerConfig,
        C::GetBrokerRuntimeInfo,
        C::GetConsumerConnectionList,
        C::GetProducerConnectionList,
    ]
    .iter()
    .map(|c| c.as_u32())
    .collect();
    want.sort_unstable();
    assert_eq!(codes, want);
    node.stop().await;
}

#[actix_rt::test]
async fn retention_removes_expired_segments_and_pulls_move_on() {
    use actormq_actors::broker::retention_cleaner::CleanNow;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        Opts {
            segment_size: 64 * 1024,
            // Keep nothing, and clean at any hour (any disk use is "high").
            store: Some(|c| {
                c.file_reserved_hours = 0;
                c.disk_warn_ratio = 0.0;
                c.disk_force_ratio = 1.0;
            }),
            ..Opts::default()
        },
    )
    .await;
    let topic = "old";
    node.create_topic(topic, 1).await;
    let body = Bytes::from(vec![9u8; 4000]);
    for _ in 0..60 {
        node.send(0, &Message::new(topic, body.clone()))
            .await
            .unwrap();
    }
    node.wait_dispatched(topic, 0, 60).await;
    let report = node.retention.send(CleanNow).await.unwrap().unwrap();
    assert!(report.segments_deleted >= 2, "{report:?}");
    let min = node.store.min_offset(topic, 0);
    assert!(min > 0);
    // A pull below the kept range is told where to go.
    let r = node.pull(topic, 0, 0, 0, None).await.unwrap();
    assert_eq!(r.code, ResponseCode::PullOffsetMoved);
    assert_eq!(r.fields.next_begin_offset, min);
    let got = node.pull_n(topic, 0, min, (60 - min) as usize).await;
    assert_eq!(got.last().unwrap().queue_offset, 59);
    node.stop().await;
}

/// Sends `req` through the broker's router, as a connection would.
async fn through_router<R: actormq_protocol::Request>(
    node: &Node,
    req: &R,
) -> Result<actormq_actors::runtime::Reply<R::Response>, actormq_actors::runtime::ServiceError> {
    let frame = actormq_protocol::Frame::request(1, req, actormq_protocol::Bytes::new()).unwrap();
    let reply = node.router.dispatch(frame, None).await.expect("a reply");
    actormq_actors::runtime::net::decode_reply::<R::Response>(&reply)
}

#[actix_rt::test]
async fn orderly_consumers_lock_queues_one_holder_at_a_time() {
    use actormq_protocol::MessageQueue;
    use actormq_protocol::request::{LockBatchMqRequest, UnlockBatchMqRequest};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    let mqs: Vec<MessageQueue> = (0..4)
        .map(|q| MessageQueue {
            topic: "orders".into(),
            broker_name: "broker-a".into(),
            queue_id: q,
        })
        .collect();
    let lock = |client: &str, mqs: &[MessageQueue]| LockBatchMqRequest {
        consumer_group: "g".into(),
        client_id: client.into(),
        mq_set: mqs.to_vec(),
    };
    // a takes queues 0 and 1; b asks for all four and gets only 2 and 3.
    let a = through_router(&node, &lock("a", &mqs[..2])).await.unwrap();
    assert_eq!(a.fields.lock_ok_mq_set, mqs[..2].to_vec());
    let b = through_router(&node, &lock("b", &mqs)).await.unwrap();
    assert_eq!(b.fields.lock_ok_mq_set, mqs[2..].to_vec());
    // a renews its own; a rebalance moves queue 1: a unlocks it, b locks it.
    let a = through_router(&node, &lock("a", &mqs[..2])).await.unwrap();
    assert_eq!(a.fields.lock_ok_mq_set, mqs[..2].to_vec());
    let unlock = UnlockBatchMqRequest {
        consumer_group: "g".into(),
        client_id: "a".into(),
        mq_set: vec![mqs[1].clone()],
    };
    through_router(&node, &unlock).await.unwrap();
    let b = through_router(&node, &lock("b", &mqs)).await.unwrap();
    assert_eq!(b.fields.lock_ok_mq_set, mqs[1..].to_vec());
    node.stop().await;
}

#[actix_rt::test]
async fn one_send_back_returns_many_messages_to_retry_and_dead_letter_topics() {
    use actormq_protocol::request::{ConsumerSendMsgBackRequest, SendBackEntry};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    let topic = "sendback";
    for i in 0..4 {
        node.send(0, &message(topic, i)).await.unwrap();
    }
    node.wait_dispatched(topic, 0, 4).await;
    let got = node.pull_n(topic, 0, 0, 4).await;
    let entry = |m: &StoredMessage, times: Option<u32>| SendBackEntry {
        commit_log_offset: m.commit_log_offset,
        origin_msg_id: m.msg_id().encode(),
        origin_topic: topic.into(),
        reconsume_times: times,
    };
    // Max 2: messages 0 and 1 are retried, 2 and 3 (counted twice
    // already by the client) are dead letters.
    let req = ConsumerSendMsgBackRequest {
        consumer_group: "sb".into(),
        commit_log_offset: got[0].commit_log_offset,
        delay_level: 0,
        origin_msg_id: got[0].msg_id().encode(),
        origin_topic: topic.into(),
        max_reconsume_times: Some(2),
        reconsume_times: None,
        more: vec![
            entry(&got[1], None),
            entry(&got[2], Some(2)),
            entry(&got[3], Some(2)),
        ],
    };
    through_router(&node, &req).await.unwrap();
    node.wait_dispatched("%DLQ%sb", 0, 2).await;
    let dead: Vec<String> = (0..2)
        .map(|o| {
            let v = node.store.read_by_queue_offset("%DLQ%sb", 0, o).unwrap();
            String::from_utf8_lossy(&v.body()).into_owned()
        })
        .collect();
    assert_eq!(
        dead,
        [&got[2], &got[3]].map(|m| String::from_utf8_lossy(&m.message.body).into_owned())
    );
    // The retried two are parked for their delay level (the first level
    // of the group's policy, 3) in the schedule topic.
    node.wait_dispatched("SCHEDULE_TOPIC_XXXX", 2, 2).await;
    // A message that does not exist fails the whole request, nothing stored.
    let mut bad = req.clone();
    bad.more.push(SendBackEntry {
        commit_log_offset: u64::MAX / 2,
        ..SendBackEntry::default()
    });
    assert!(through_router(&node, &bad).await.is_err());
    assert_eq!(node.store.max_offset("%DLQ%sb", 0), 2);
    node.stop().await;
}
