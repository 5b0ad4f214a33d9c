//! Topic and offset managers: changes are persisted and a fresh
//! incarnation (what the supervisor's factory builds) reloads them.

use std::time::Duration;

use actix::prelude::*;
use actormq_actors::broker::offset_manager::{GetGroupOffsets, PersistOffsets};
use actormq_actors::broker::topic_manager::{ResolveTopic, SubscribeTopics, TopicsChanged};
use actormq_actors::broker::{
    OffsetManager, OffsetManagerConfig, TopicManager, TopicManagerConfig, TopicView,
};
use actormq_actors::runtime::Call;
use actormq_protocol::ResponseCode;
use actormq_protocol::request::{
    CreateTopicRequest, DeleteTopicInBrokerRequest, Perm, QueryConsumerOffsetRequest, TopicConfig,
    UpdateConsumerOffsetRequest,
};
use slog::{Logger, o};
use tokio::sync::mpsc;

fn log() -> Logger {
    Logger::root(slog::Discard, o!())
}

struct Events(mpsc::UnboundedSender<TopicsChanged>);
impl Actor for Events {
    type Context = Context<Self>;
}
impl Handler<TopicsChanged> for Events {
    type Result = ();
    fn handle(&mut self, msg: TopicsChanged, _: &mut Context<Self>) {
        let _ = self.0.send(msg);
    }
}

#[actix_rt::test]
async fn topics_survive_a_restart_and_reach_the_view() {
    let dir = tempfile::tempdir().unwrap();
    let config = TopicManagerConfig {
        path: dir.path().join("config/topics.msgpack"),
        auto_create: true,
        default_queues: 4,
    };
    let view = TopicView::default();
    let tm = TopicManager::load(config.clone(), view.clone(), &log())
        .unwrap()
        .start();
    let (tx, mut events) = mpsc::unbounded_channel();
    tm.send(SubscribeTopics(Events(tx).start().recipient()))
        .await
        .unwrap();

    let create = CreateTopicRequest {
        config: TopicConfig {
            topic_name: "orders".into(),
            read_queue_nums: 8,
            write_queue_nums: 8,
            perm: Perm::READ_WRITE,
            ..TopicConfig::default()
        },
    };
    tm.send(Call::new(create)).await.unwrap().unwrap();
    let auto = tm.send(ResolveTopic::send("auto")).await.unwrap().unwrap();
    assert_eq!(auto.write_queue_nums, 4);
    let bad = tm.send(ResolveTopic::send("bad topic")).await.unwrap();
    assert!(bad.is_err());
    let gone = tm.send(Call::new(DeleteTopicInBrokerRequest {
        topic: "nope".into(),
    }));
    assert_eq!(
        gone.await.unwrap().unwrap_err().code,
        ResponseCode::TopicNotExist
    );

    let snap = view.snapshot();
    assert_eq!(snap.get("orders").unwrap().write_queue_nums, 8);
    assert!(snap.get("auto").is_some());
    let first = tokio_timeout(events.recv()).await.unwrap();
    assert!(first.table.get("orders").is_some());

    // A new incarnation reads what the acknowledged changes wrote.
    let view2 = TopicView::default();
    let _tm2 = TopicManager::load(config, view2.clone(), &log())
        .unwrap()
        .start();
    let reloaded = view2.snapshot();
    assert_eq!(
        reloaded.all().keys().collect::<Vec<_>>(),
        vec!["auto", "orders"]
    );
    assert_eq!(reloaded.data_version(), snap.data_version());
}

#[actix_rt::test]
async fn consumer_offsets_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = OffsetManagerConfig {
        path: dir.path().join("config/consumer_offsets.msgpack"),
        persist_interval: Duration::from_secs(5),
    };
    let om = OffsetManager::load(config.clone(), &log()).unwrap().start();
    let query = |queue_id| QueryConsumerOffsetRequest {
        consumer_group: "g".into(),
        topic: "orders".into(),
        queue_id,
    };
    let none = om.send(Call::new(query(0))).await.unwrap().unwrap_err();
    assert_eq!(none.code, ResponseCode::QueryNotFound);
    for (queue_id, commit_offset) in [(0, 10), (1, 20), (0, 12)] {
        let req = UpdateConsumerOffsetRequest {
            consumer_group: "g".into(),
            topic: "orders".into(),
            queue_id,
            commit_offset,
        };
        om.send(Call::new(req)).await.unwrap().unwrap();
    }
    assert_eq!(
        om.send(Call::new(query(0)))
            .await
            .unwrap()
            .unwrap()
            .fields
            .offset,
        12
    );
    om.send(PersistOffsets).await.unwrap().unwrap();

    let om2 = OffsetManager::load(config, &log()).unwrap().start();
    let offsets = om2
        .send(GetGroupOffsets {
            group: "g".into(),
            topic: "orders".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        offsets.into_iter().collect::<Vec<_>>(),
        vec![(0, 12), (1, 20)]
    );
    let bad = UpdateConsumerOffsetRequest {
        consumer_group: String::new(),
        ..Default::default()
    };
    assert_eq!(
        om2.send(Call::new(bad)).await.unwrap().unwrap_err().code,
        ResponseCode::InvalidParameter
    );
}

async fn tokio_timeout<F: std::future::Future>(f: F) -> F::Output {
    actix_rt::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out")
}

fn create(name: &str) -> CreateTopicRequest {
    CreateTopicRequest {
        config: TopicConfig {
            topic_name: name.into(),
            read_queue_nums: 2,
            write_queue_nums: 2,
            perm: Perm::READ_WRITE,
            ..TopicConfig::default()
        },
    }
}

/// A garbage topics file with a good backup: the manager starts with the
/// backup's state; without a backup, loading fails with one line naming
/// the file (the node exits with it instead of restarting in a loop).
#[actix_rt::test]
async fn a_garbage_topics_file_falls_back_to_the_last_good_copy() {
    let dir = tempfile::tempdir().unwrap();
    let config = TopicManagerConfig {
        path: dir.path().join("config/topics.msgpack"),
        auto_create: false,
        default_queues: 4,
    };
    let tm = TopicManager::load(config.clone(), TopicView::default(), &log())
        .unwrap()
        .start();
    tm.send(Call::new(create("first"))).await.unwrap().unwrap();
    tm.send(Call::new(create("second"))).await.unwrap().unwrap();
    // The backup holds the state before the last write.
    std::fs::write(&config.path, b"\xc1 torn").unwrap();

    let view = TopicView::default();
    let _tm2 = TopicManager::load(config.clone(), view.clone(), &log()).unwrap();
    let names: Vec<String> = view.snapshot().all().keys().cloned().collect();
    assert_eq!(names, vec!["first".to_string()]);

    std::fs::remove_file(actormq_actors::broker::persist::backup_path(&config.path)).unwrap();
    let err = TopicManager::load(config.clone(), TopicView::default(), &log())
        .err()
        .expect("garbage without a backup fails");
    let text = err.to_string();
    assert!(text.contains("topics.msgpack"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
}

/// Many changes in a row are written coalesced, the newest state last.
#[actix_rt::test]
async fn rapid_topic_changes_leave_the_latest_state_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = TopicManagerConfig {
        path: dir.path().join("config/topics.msgpack"),
        auto_create: false,
        default_queues: 4,
    };
    let tm = TopicManager::load(config.clone(), TopicView::default(), &log())
        .unwrap()
        .start();
    let sends: Vec<_> = (0..50)
        .map(|i| tm.send(Call::new(create(&format!("t{i:02}")))))
        .collect();
    for s in sends {
        s.await.unwrap().unwrap();
    }
    let view = TopicView::default();
    TopicManager::load(config, view.clone(), &log()).unwrap();
    assert_eq!(view.snapshot().all().len(), 50);
}
