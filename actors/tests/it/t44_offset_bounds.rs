//! Offset commits are bounded, through the request path (a frame into the
//! broker's router, a frame back): an unknown topic is TOPIC_NOT_EXIST; a
//! queue id outside the topic's queues, or an offset beyond the queue's
//! max offset, is INVALID_PARAMETER and nothing is recorded.

use std::time::Duration;

use actix::prelude::*;
use actormq_actors::broker::offset_manager::GetGroupOffsets;
use actormq_actors::broker::{OffsetBounds, OffsetManager, OffsetManagerConfig};
use actormq_protocol::request::UpdateConsumerOffsetRequest;
use actormq_protocol::{Frame, Message, ResponseCode};
use bytes::Bytes;

use crate::t40_send_pull::{Node, Opts, log};

async fn commit(node: &Node, topic: &str, queue_id: u32, offset: u64) -> ResponseCode {
    let req = UpdateConsumerOffsetRequest {
        consumer_group: "g".into(),
        topic: topic.into(),
        queue_id,
        commit_offset: offset,
    };
    let frame = Frame::request(1, &req, Bytes::new()).unwrap();
    let reply = node.router.dispatch(frame, None).await.expect("a reply");
    reply.response_code().unwrap()
}

#[actix_rt::test]
async fn commits_outside_queues_or_beyond_max_offset_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), Opts::default()).await;
    let config = OffsetManagerConfig {
        path: dir.path().join("config/consumer_offsets.msgpack"),
        persist_interval: Duration::from_secs(5),
    };
    let bounds = OffsetBounds::new(node.view.clone(), node.store.clone());
    // On an arbiter of its own, stopped before the store is closed.
    let arbiter = Arbiter::new();
    let om = OffsetManager::start_in_arbiter(&arbiter.handle(), move |_| {
        OffsetManager::load(config, &log())
            .unwrap()
            .with_bounds(bounds)
    });
    node.router
        .route::<UpdateConsumerOffsetRequest>(om.clone().recipient());
    node.create_topic("ob", 2).await;
    for _ in 0..3 {
        node.send(1, &Message::new("ob", Bytes::from_static(b"m")))
            .await
            .unwrap();
    }
    node.pull_n("ob", 1, 0, 3).await;

    assert_eq!(commit(&node, "ob", 1, 2).await, ResponseCode::Success);
    assert_eq!(commit(&node, "ob", 1, 3).await, ResponseCode::Success);
    assert_eq!(commit(&node, "ob", 0, 0).await, ResponseCode::Success);
    assert_eq!(
        commit(&node, "ob", 1, 4).await,
        ResponseCode::InvalidParameter
    );
    assert_eq!(
        commit(&node, "ob", 1, u64::MAX).await,
        ResponseCode::InvalidParameter
    );
    assert_eq!(
        commit(&node, "ob", 2, 0).await,
        ResponseCode::InvalidParameter
    );
    assert_eq!(
        commit(&node, "ob", u32::MAX, 0).await,
        ResponseCode::InvalidParameter
    );
    assert_eq!(
        commit(&node, "nope", 0, 0).await,
        ResponseCode::TopicNotExist
    );
    let kept = om
        .send(GetGroupOffsets {
            group: "g".into(),
            topic: "ob".into(),
        })
        .await
        .unwrap();
    assert_eq!(kept.into_iter().collect::<Vec<_>>(), vec![(0, 0), (1, 3)]);
    arbiter.stop();
    actix_rt::task::spawn_blocking(move || arbiter.join().unwrap())
        .await
        .unwrap();
    node.stop().await;
}
