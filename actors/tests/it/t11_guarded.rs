//! A handler panic in the commit-log writer or the offset manager with
//! 1000+ requests queued behind it: every queued request is answered with
//! an error, none reaches the panicked instance, the process survives and
//! the supervisor re-creates the actor from its factory.

use std::time::Duration;

use actix::prelude::*;
use actormq_actors::broker::{
    BrokerStore, CommitLogActor, CommitLogConfig, OffsetManager, OffsetManagerConfig, TopicManager,
    TopicManagerConfig, TopicView,
};
use actormq_actors::runtime::guard::InjectPanic;
use actormq_actors::runtime::{
    Call, ChildRef, ChildSpec, Escalation, GetChildStatus, RestartPolicy, ServiceError, SpawnChild,
    StopSupervisor, Supervisor,
};
use actormq_protocol::request::{
    QueryConsumerOffsetRequest, SendMessageRequest, UpdateConsumerOffsetRequest,
};
use actormq_protocol::{Message, ResponseCode};
use actormq_store::StoreConfig;
use bytes::Bytes;
use futures_util::future::join_all;
use slog::{Logger, o};

const QUEUED: usize = 1200;

fn log() -> Logger {
    Logger::root(slog::Discard, o!())
}

fn supervisor() -> Addr<Supervisor> {
    let policy = RestartPolicy {
        max_restarts: 3,
        window: Duration::from_secs(60),
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
    };
    Supervisor::new("broker", &log(), policy, Escalation::StopSystem).start()
}

async fn restarted<A: Actor>(child: &ChildRef<A>, old: &Addr<A>) -> Addr<A> {
    let mut rx = child.subscribe();
    let fut = rx.wait_for(|a| matches!(a, Some(new) if new != old));
    let addr = actix_rt::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("not restarted in time")
        .expect("supervisor gone");
    addr.clone().unwrap()
}

/// The caller's view of a refused request: the mapping every session uses.
fn as_service_error<T>(
    r: Result<Result<T, ServiceError>, MailboxError>,
) -> Result<T, ServiceError> {
    r.map_err(ServiceError::from)?
}

#[actix_rt::test]
async fn offset_manager_panic_with_queued_calls() {
    let dir = tempfile::tempdir().unwrap();
    let config = OffsetManagerConfig {
        path: dir.path().join("config/consumer_offsets.msgpack"),
        persist_interval: Duration::from_secs(3600),
    };
    let sup = supervisor();
    let cfg = config.clone();
    let child = sup
        .send(SpawnChild(ChildSpec::new("offset-manager", move || {
            Ok(OffsetManager::load(cfg.clone(), &log())?)
        })))
        .await
        .unwrap();
    let first = child.addr().unwrap();
    let update = |offset| UpdateConsumerOffsetRequest {
        consumer_group: "g".into(),
        topic: "orders".into(),
        queue_id: 0,
        commit_offset: offset,
    };
    first.send(Call::new(update(7))).await.unwrap().unwrap();

    let crash = first.send(InjectPanic(
        "offset manager broke (expected in this test)".into(),
    ));
    // Each through its own clone of the address, so all are queued at once
    // (as from many sessions) rather than waiting for mailbox capacity.
    let queued: Vec<_> = (0..QUEUED)
        .map(|i| first.clone().send(Call::new(update(100 + i as u64))))
        .collect();
    assert!(crash.await.is_err());
    for reply in join_all(queued).await {
        let err = as_service_error(reply).expect_err("a queued call was served");
        assert_eq!(err.code, ResponseCode::SystemBusy, "{err}");
    }

    let second = restarted(&child, &first).await;
    // None of the queued updates landed: the stopped instance persisted 7.
    let query = QueryConsumerOffsetRequest {
        consumer_group: "g".into(),
        topic: "orders".into(),
        queue_id: 0,
    };
    let got = second.send(Call::new(query)).await.unwrap().unwrap();
    assert_eq!(got.fields.offset, 7);
    let status = sup.send(GetChildStatus).await.unwrap();
    assert_eq!(status[0].restarts, 1);
    sup.send(StopSupervisor).await.unwrap();
}

#[actix_rt::test]
async fn commit_log_panic_with_queued_sends() {
    let dir = tempfile::tempdir().unwrap();
    let store = BrokerStore::open(StoreConfig::small(dir.path().join("store"), 1 << 20)).unwrap();
    let view = TopicView::default();
    let tm_cfg = TopicManagerConfig {
        path: dir.path().join("config/topics.msgpack"),
        auto_create: true,
        default_queues: 4,
    };
    let v = view.clone();
    let topics = TopicManager::load(tm_cfg, v, &log()).unwrap().start();
    let sup = supervisor();
    let (s, v) = (store.clone(), view.clone());
    let resolver = topics.clone().recipient();
    let child = sup
        .send(SpawnChild(ChildSpec::new("commit-log", move || {
            Ok(CommitLogActor::new(
                s.clone(),
                v.clone(),
                resolver.clone(),
                CommitLogConfig::default(),
                &log(),
            ))
        })))
        .await
        .unwrap();
    let first = child.addr().unwrap();
    let msg = Message::new("t", Bytes::from_static(b"hello"));
    let send =
        |m: &Message| Call::with_body(SendMessageRequest::new("pg", 0, 1, m), m.body.clone());
    first.send(send(&msg)).await.unwrap().unwrap();

    let crash = first.send(InjectPanic("writer broke (expected in this test)".into()));
    let queued: Vec<_> = (0..QUEUED)
        .map(|_| first.clone().send(send(&msg)))
        .collect();
    assert!(crash.await.is_err());
    for reply in join_all(queued).await {
        as_service_error(reply).expect_err("a queued send was served");
    }

    let second = restarted(&child, &first).await;
    let stored = second.send(send(&msg)).await.unwrap().unwrap();
    assert_eq!(
        stored.fields.queue_offset, 1,
        "only the first send was stored before the panic"
    );
    sup.send(StopSupervisor).await.unwrap();
}

/// Receives stored events.
struct Sink(tokio::sync::mpsc::UnboundedSender<actormq_actors::broker::MessagesStored>);
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<actormq_actors::broker::MessagesStored> for Sink {
    type Result = ();
    fn handle(&mut self, msg: actormq_actors::broker::MessagesStored, _: &mut Context<Self>) {
        let _ = self.0.send(msg);
    }
}

#[actix_rt::test]
async fn a_restarted_stored_fanout_keeps_its_subscribers() {
    use actormq_actors::broker::{
        MessagesStored, StoredFanout, StoredSubscribers, SubscribeStored,
    };
    use actormq_actors::runtime::Relay;
    let sup = supervisor();
    let subscribers = StoredSubscribers::default();
    let child = sup
        .send(SpawnChild(ChildSpec::new("stored-fanout", move || {
            Ok(StoredFanout::new(subscribers.clone()))
        })))
        .await
        .unwrap();
    let relay = Relay::new(child.clone()).start();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Subscribed through the stable relay, before the failure.
    relay
        .send(SubscribeStored(Sink(tx).start().recipient()))
        .await
        .unwrap();
    let event = MessagesStored {
        topic: "t".into(),
        queue_id: 0,
        first_offset: 0,
        max_offset: 1,
        count: 1,
        last_store_timestamp_ms: 0,
    };
    let first = child.addr().unwrap();
    // The relay hands over asynchronously: wait for the subscription to land.
    first.send(event.clone()).await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), event);

    assert!(
        first
            .send(InjectPanic("fanout broke (expected in this test)".into()))
            .await
            .is_err()
    );
    let second = restarted(&child, &first).await;
    second.send(event.clone()).await.unwrap();
    let got = actix_rt::time::timeout(Duration::from_secs(10), rx.recv()).await;
    assert_eq!(got.expect("subscriber lost in the restart").unwrap(), event);
    sup.send(StopSupervisor).await.unwrap();
}
