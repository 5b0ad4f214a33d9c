//! Handler panics in the other request-serving broker actors, in the
//! production wiring (`BrokerActors::start`), with 1000+ requests queued
//! behind the poison one: every queued request gets an error, none is
//! served by the broken instance, the process survives and the supervisor
//! re-creates the actor, which serves again.

use std::time::{Duration, Instant};

use actix::prelude::*;
use actormq_actors::broker::pull_hold::GetPullStats;
use actormq_actors::broker::{PullHold, TopicManager};
use actormq_actors::runtime::guard::InjectPanic;
use actormq_actors::runtime::{Call, ChildRef, ServiceError};
use actormq_protocol::ResponseCode;
use actormq_protocol::request::{
    ConsumerData, CreateTopicRequest, GetAllTopicConfigRequest, GetConsumerListByGroupRequest,
    GetMaxOffsetRequest, HeartbeatRequest, Perm, TopicConfig,
};
use futures_util::future::join_all;

use crate::t40_send_pull::{Node, Opts, message, pull_req};

const QUEUED: usize = 1200;

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

fn topic(name: &str) -> CreateTopicRequest {
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

#[actix_rt::test]
async fn topic_manager_panic_with_queued_creates() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    node.create_topic("kept", 2).await;
    let first: Addr<TopicManager> = node.actors.topics.addr().unwrap();

    let crash = first.send(InjectPanic(
        "topic manager broke (expected in this test)".into(),
    ));
    let queued: Vec<_> = (0..QUEUED)
        .map(|i| first.clone().send(Call::new(topic(&format!("q{i}")))))
        .collect();
    assert!(crash.await.is_err());
    for reply in join_all(queued).await {
        let err = as_service_error(reply).expect_err("a queued create was served");
        assert_eq!(err.code, ResponseCode::SystemBusy, "{err}");
    }

    // The new incarnation reloaded the file: the topic created before the
    // panic is there, none of the refused ones is.
    let second = restarted(&node.actors.topics, &first).await;
    let all = second
        .send(Call::new(GetAllTopicConfigRequest {}))
        .await
        .unwrap()
        .unwrap();
    let names: Vec<&String> = all.fields.topic_config_table.keys().collect();
    assert!(names.iter().any(|n| *n == "kept"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with('q')), "{names:?}");
    second
        .send(Call::new(topic("after")))
        .await
        .unwrap()
        .unwrap();
    node.stop().await;
}

async fn until_holding(pull: &Addr<PullHold>, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = pull.send(GetPullStats).await.unwrap();
        if s.holding == n {
            return;
        }
        assert!(Instant::now() < deadline, "never held {n}: {s:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[actix_rt::test]
async fn pull_hold_panic_with_a_held_pull_and_queued_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    node.create_topic("lp", 1).await;
    let first = node.actors.pull.addr().unwrap();
    let held = actix_rt::spawn(first.send(Call::new(pull_req("lp", 0, 0, 10_000, None))));
    until_holding(&first, 1).await;

    let crash = first.send(InjectPanic(
        "pull holder broke (expected in this test)".into(),
    ));
    let queued: Vec<_> = (0..QUEUED)
        .map(|_| first.clone().send(Call::new(pull_req("lp", 0, 0, 0, None))))
        .collect();
    assert!(crash.await.is_err());
    for reply in join_all(queued).await {
        as_service_error(reply).expect_err("a queued pull was served");
    }
    let err = as_service_error(held.await.unwrap()).expect_err("the held pull was served");
    assert_eq!(err.code, ResponseCode::ServiceNotAvailable, "{err}");

    // The new incarnation holds pulls and is woken by stored messages (the
    // stored-event fan-out follows it).
    let second = restarted(&node.actors.pull, &first).await;
    let held = actix_rt::spawn(second.send(Call::new(pull_req("lp", 0, 0, 10_000, None))));
    until_holding(&second, 1).await;
    node.send(0, &message("lp", 0)).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the held pull was not woken")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.code, ResponseCode::Success);
    node.stop().await;
}

fn heartbeat(client: &str) -> HeartbeatRequest {
    HeartbeatRequest {
        client_id: client.into(),
        producer_data_set: vec![],
        consumer_data_set: vec![ConsumerData {
            group_name: "g".into(),
            ..ConsumerData::default()
        }],
        ..Default::default()
    }
}

#[actix_rt::test]
async fn group_manager_panic_with_queued_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    let first = node.actors.groups.addr().unwrap();
    first
        .send(Call::new(heartbeat("c0")))
        .await
        .unwrap()
        .unwrap();

    let crash = first.send(InjectPanic(
        "group manager broke (expected in this test)".into(),
    ));
    let queued: Vec<_> = (0..QUEUED)
        .map(|i| {
            first
                .clone()
                .send(Call::new(heartbeat(&format!("c{}", i + 1))))
        })
        .collect();
    assert!(crash.await.is_err());
    for reply in join_all(queued).await {
        as_service_error(reply).expect_err("a queued heartbeat was served");
    }

    // A fresh table, rebuilt from the next heartbeats.
    let second = restarted(&node.actors.groups, &first).await;
    let list = |s: &Addr<_>| {
        s.send(Call::new(GetConsumerListByGroupRequest {
            consumer_group: "g".into(),
        }))
    };
    let members = list(&second).await.unwrap().unwrap();
    assert!(members.fields.consumer_ids.is_empty(), "{members:?}");
    second
        .send(Call::new(heartbeat("again")))
        .await
        .unwrap()
        .unwrap();
    let members = list(&second).await.unwrap().unwrap();
    assert_eq!(members.fields.consumer_ids, vec!["again".to_owned()]);
    node.stop().await;
}

#[actix_rt::test]
async fn query_service_panic_with_queued_queries() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    node.create_topic("q", 1).await;
    node.send(0, &message("q", 0)).await.unwrap();
    node.wait_dispatched("q", 0, 1).await;
    let first = node.actors.query.addr().unwrap();
    let max = || {
        Call::new(GetMaxOffsetRequest {
            topic: "q".into(),
            queue_id: 0,
        })
    };
    assert_eq!(first.send(max()).await.unwrap().unwrap().fields.offset, 1);

    let crash = first.send(InjectPanic("query broke (expected in this test)".into()));
    let queued: Vec<_> = (0..QUEUED).map(|_| first.clone().send(max())).collect();
    assert!(crash.await.is_err());
    for reply in join_all(queued).await {
        as_service_error(reply).expect_err("a queued query was served");
    }
    let second = restarted(&node.actors.query, &first).await;
    assert_eq!(second.send(max()).await.unwrap().unwrap().fields.offset, 1);
    node.stop().await;
}
