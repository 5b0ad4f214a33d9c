//! The simple (pop) consumer through the production wiring: receive and
//! ack; an unacked message comes back after its invisible time with its
//! reconsume times one higher; a change of invisible time postpones it and
//! voids the old handle; stale handles are refused with
//! `INVALID_RECEIPT_HANDLE`; retries end in the group's DLQ; in-flight
//! state and acks survive a restart.

use std::time::{Duration, Instant};

use actix::Addr;
use actormq_actors::broker::PopService;
use actormq_actors::runtime::{Call, Reply, ServiceError};
use actormq_protocol::message::PROPERTY_POP_CK;
use actormq_protocol::request::{
    AckMessageRequest, BatchAckEntry, BatchAckMessageRequest, ChangeInvisibleTimeRequest,
    ChangeInvisibleTimeResponse, CreateSubscriptionGroupRequest, Empty, PopMessageRequest,
    ReceiptHandle, SubscriptionGroupConfig,
};
use actormq_protocol::{Message, ResponseCode, StoredMessage, batch};

use crate::t40_send_pull::{Node, Opts, now_ms};

const TOPIC: &str = "popped";

async fn pop_addr(node: &Node) -> Addr<PopService> {
    let start = Instant::now();
    loop {
        if let Some(a) = node.actors.pop.addr() {
            return a;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "pop service not up"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One pop; the code and the messages.
async fn pop(
    node: &Node,
    group: &str,
    max: u32,
    invisible_ms: u64,
    poll_ms: u64,
) -> (ResponseCode, Vec<StoredMessage>) {
    let req = PopMessageRequest {
        consumer_group: group.into(),
        topic: TOPIC.into(),
        queue_id: None,
        max_msg_nums: max,
        invisible_time_ms: invisible_ms,
        poll_time_ms: poll_ms,
        born_time_ms: now_ms(),
        ..Default::default()
    };
    let r = pop_addr(node)
        .await
        .send(Call::new(req))
        .await
        .unwrap()
        .unwrap();
    let msgs = if r.code == ResponseCode::Success {
        batch::decode_stored(&r.body).unwrap()
    } else {
        Vec::new()
    };
    (r.code, msgs)
}

/// Pops until `n` messages came (bounded).
async fn pop_n(node: &Node, group: &str, n: usize, invisible_ms: u64) -> Vec<StoredMessage> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "only {} of {n} popped",
            out.len()
        );
        out.extend(pop(node, group, 32, invisible_ms, 1_000).await.1);
    }
    out
}

fn handle(m: &StoredMessage) -> String {
    m.message.properties[PROPERTY_POP_CK].clone()
}

async fn ack(node: &Node, group: &str, h: &str) -> Result<Reply<Empty>, ServiceError> {
    let p = ReceiptHandle::parse(h).unwrap();
    pop_addr(node)
        .await
        .send(Call::new(AckMessageRequest {
            consumer_group: group.into(),
            topic: TOPIC.into(),
            queue_id: p.queue_id,
            offset: p.queue_offset,
            extra_info: h.into(),
        }))
        .await
        .unwrap()
}

async fn change(
    node: &Node,
    group: &str,
    h: &str,
    invisible_ms: u64,
) -> Result<Reply<ChangeInvisibleTimeResponse>, ServiceError> {
    change_on(node, group, TOPIC, h, invisible_ms).await
}

async fn change_on(
    node: &Node,
    group: &str,
    topic: &str,
    h: &str,
    invisible_ms: u64,
) -> Result<Reply<ChangeInvisibleTimeResponse>, ServiceError> {
    let p = ReceiptHandle::parse(h).unwrap();
    pop_addr(node)
        .await
        .send(Call::new(ChangeInvisibleTimeRequest {
            consumer_group: group.into(),
            topic: topic.into(),
            queue_id: p.queue_id,
            offset: p.queue_offset,
            extra_info: h.into(),
            invisible_time_ms: invisible_ms,
        }))
        .await
        .unwrap()
}

async fn send(node: &Node, n: usize) {
    node.create_topic(TOPIC, 2).await;
    for i in 0..n {
        let m = Message::new(TOPIC, format!("m{i}"));
        node.send((i % 2) as u32, &m).await.unwrap();
    }
    node.wait_dispatched(TOPIC, 0, n.div_ceil(2) as u64).await;
    node.wait_dispatched(TOPIC, 1, (n / 2) as u64).await;
}

fn body(m: &StoredMessage) -> String {
    String::from_utf8_lossy(&m.message.body).into_owned()
}

#[actix_rt::test]
async fn unacked_messages_come_back_after_their_invisible_time() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    send(&node, 4).await;
    let popped_at = Instant::now();
    let got = pop_n(&node, "g", 4, 1_000).await;
    let mut bodies: Vec<String> = got.iter().map(body).collect();
    bodies.sort();
    assert_eq!(bodies, ["m0", "m1", "m2", "m3"]);
    assert!(
        got.iter()
            .all(|m| m.reconsume_times == 0 && m.message.topic == TOPIC)
    );
    // Nothing more while they are invisible.
    assert_eq!(
        pop(&node, "g", 32, 1_000, 0).await.0,
        ResponseCode::NoMessage
    );
    let kept = got.iter().find(|m| body(m) == "m2").unwrap();
    for m in got.iter().filter(|m| body(m) != "m2") {
        ack(&node, "g", &handle(m)).await.unwrap();
    }
    // An ack of an acked delivery is refused.
    let again = ack(&node, "g", &handle(&got[0])).await.unwrap_err();
    assert_eq!(again.code, ResponseCode::InvalidReceiptHandle);
    assert!(again.remark.contains("stale"), "{}", again.remark);
    let junk = ack(&node, "g", "1 1 1 1 0 1 0 popped").await.unwrap_err();
    assert_eq!(junk.code, ResponseCode::InvalidReceiptHandle);

    let back = pop_n(&node, "g", 1, 1_000).await;
    assert!(popped_at.elapsed() >= Duration::from_millis(1_000));
    assert_eq!(body(&back[0]), "m2");
    assert_eq!(back[0].reconsume_times, 1);
    assert_eq!(back[0].message.topic, TOPIC);
    // The first handle is void now (expired).
    let late = ack(&node, "g", &handle(kept)).await.unwrap_err();
    assert_eq!(late.code, ResponseCode::InvalidReceiptHandle);
    assert!(late.remark.contains("expired"), "{}", late.remark);
    ack(&node, "g", &handle(&back[0])).await.unwrap();
    // Acked: never again.
    assert_eq!(
        pop(&node, "g", 32, 1_000, 1_500).await.0,
        ResponseCode::PollingTimeout
    );
    node.stop().await;
}

#[actix_rt::test]
async fn a_change_of_invisible_time_postpones_and_voids_the_old_handle() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    send(&node, 1).await;
    let got = pop_n(&node, "g", 1, 1_000).await;
    let old = handle(&got[0]);
    let changed_at = Instant::now();
    let new = change(&node, "g", &old, 3_000)
        .await
        .unwrap()
        .fields
        .extra_info;
    assert_ne!(new, old);
    let stale = ack(&node, "g", &old).await.unwrap_err();
    assert_eq!(stale.code, ResponseCode::InvalidReceiptHandle);
    assert!(
        change(&node, "g", &old, 3_000).await.is_err(),
        "a changed handle cannot be changed again"
    );
    // Not back at the old time (1 s).
    assert_eq!(
        pop(&node, "g", 32, 1_000, 1_800).await.0,
        ResponseCode::PollingTimeout
    );
    let back = pop_n(&node, "g", 1, 1_000).await;
    assert!(changed_at.elapsed() >= Duration::from_millis(3_000));
    assert_eq!(back[0].reconsume_times, 1);
    ack(&node, "g", &handle(&back[0])).await.unwrap();
    node.stop().await;
}

#[actix_rt::test]
async fn retries_end_in_the_dead_letter_queue() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    let mut cfg = SubscriptionGroupConfig::new("g1");
    cfg.retry_max_times = 1;
    node.actors
        .subscription_groups
        .addr()
        .unwrap()
        .send(Call::new(CreateSubscriptionGroupRequest { config: cfg }))
        .await
        .unwrap()
        .unwrap();
    send(&node, 1).await;
    let first = pop_n(&node, "g1", 1, 1_000).await;
    assert_eq!(first[0].reconsume_times, 0);
    let second = pop_n(&node, "g1", 1, 1_000).await;
    assert_eq!(second[0].reconsume_times, 1);
    // Past the max: the dead-letter queue, not delivered again.
    let start = Instant::now();
    while node.store.max_offset("%DLQ%g1", 0) < 1 {
        assert!(start.elapsed() < Duration::from_secs(10), "no dead letter");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = node.store.read_by_queue_offset("%DLQ%g1", 0, 0).unwrap();
    assert_eq!(dead.header().reconsume_times, 2);
    assert_eq!(dead.property("RETRY_TOPIC"), Some(TOPIC));
    assert_eq!(
        pop(&node, "g1", 32, 1_000, 1_500).await.0,
        ResponseCode::PollingTimeout
    );
    node.stop().await;
}

#[actix_rt::test]
async fn in_flight_state_and_acks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    send(&node, 2).await;
    let got = pop_n(&node, "g", 2, 2_000).await;
    let acked = got.iter().find(|m| body(m) == "m0").unwrap();
    ack(&node, "g", &handle(acked)).await.unwrap();
    let deadline = now_ms() + 2_000;
    node.stop().await;

    let node = Node::start(dir.path(), Opts::default()).await;
    // Still invisible right after the restart.
    if now_ms() + 300 < deadline {
        assert_eq!(
            pop(&node, "g", 32, 1_000, 0).await.0,
            ResponseCode::NoMessage
        );
    }
    let back = pop_n(&node, "g", 1, 1_000).await;
    assert_eq!(body(&back[0]), "m1");
    assert_eq!(back[0].reconsume_times, 1);
    ack(&node, "g", &handle(&back[0])).await.unwrap();
    // The acked one never comes back; nothing is popped twice.
    assert_eq!(
        pop(&node, "g", 32, 1_000, 2_500).await.0,
        ResponseCode::PollingTimeout
    );
    node.stop().await;
}

#[actix_rt::test]
async fn works_without_topic_auto_creation() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Opts {
        auto_create: false,
        ..Opts::default()
    };
    let node = Node::start(dir.path(), opts).await;
    send(&node, 1).await;
    let first = pop_n(&node, "g", 1, 1_000).await;
    assert_eq!(first[0].reconsume_times, 0);
    // The revive topic and the pop retry topic are the broker's own.
    let back = pop_n(&node, "g", 1, 1_000).await;
    assert_eq!(back[0].reconsume_times, 1);
    ack(&node, "g", &handle(&back[0])).await.unwrap();
    node.stop().await;
}

#[actix_rt::test]
async fn a_held_pop_is_answered_when_a_message_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    node.create_topic(TOPIC, 2).await;
    let addr = pop_addr(&node).await;
    let held = actix_rt::spawn(async move {
        let started = Instant::now();
        let r = addr
            .send(Call::new(PopMessageRequest {
                consumer_group: "g".into(),
                topic: TOPIC.into(),
                max_msg_nums: 32,
                invisible_time_ms: 1_000,
                poll_time_ms: 10_000,
                born_time_ms: now_ms(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .unwrap();
        (
            r.code,
            batch::decode_stored(&r.body).unwrap(),
            started.elapsed(),
        )
    });
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    node.send(1, &Message::new(TOPIC, "late")).await.unwrap();
    let (code, msgs, took) = held.await.unwrap();
    assert_eq!(code, ResponseCode::Success);
    assert_eq!(body(&msgs[0]), "late");
    // Woken by the stored message (about 200 ms here; bounded loosely
    // for loaded machines).
    assert!(took < Duration::from_secs(2), "held for {took:?}");
    node.stop().await;
}

/// An orderly pop of the one-queue topic `fifo`.
async fn pop_orderly(node: &Node, group: &str, max: u32, poll_ms: u64) -> Vec<StoredMessage> {
    let r = pop_addr(node)
        .await
        .send(Call::new(PopMessageRequest {
            consumer_group: group.into(),
            topic: "fifo".into(),
            max_msg_nums: max,
            invisible_time_ms: 1_000,
            poll_time_ms: poll_ms,
            born_time_ms: now_ms(),
            order: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .unwrap();
    if r.code == ResponseCode::Success {
        batch::decode_stored(&r.body).unwrap()
    } else {
        Vec::new()
    }
}

async fn ack_orderly(
    node: &Node,
    group: &str,
    m: &StoredMessage,
) -> Result<Reply<Empty>, ServiceError> {
    let h = handle(m);
    let p = ReceiptHandle::parse(&h).unwrap();
    pop_addr(node)
        .await
        .send(Call::new(AckMessageRequest {
            consumer_group: group.into(),
            topic: "fifo".into(),
            queue_id: p.queue_id,
            offset: p.queue_offset,
            extra_info: h,
        }))
        .await
        .unwrap()
}

#[actix_rt::test]
async fn orderly_pops_hand_out_a_queue_one_batch_at_a_time_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    let mut cfg = SubscriptionGroupConfig::new("fo");
    cfg.retry_max_times = 1;
    node.actors
        .subscription_groups
        .addr()
        .unwrap()
        .send(Call::new(CreateSubscriptionGroupRequest { config: cfg }))
        .await
        .unwrap()
        .unwrap();
    node.create_topic("fifo", 1).await;
    for b in ["m0", "m1", "m2", "m3"] {
        node.send(0, &Message::new("fifo", b)).await.unwrap();
    }
    node.wait_dispatched("fifo", 0, 4).await;
    let first = pop_orderly(&node, "fo", 2, 0).await;
    let bodies: Vec<String> = first.iter().map(body).collect();
    assert_eq!(bodies, ["m0", "m1"]);
    // The queue is held by that batch: nothing more, even with m0 acked.
    assert!(pop_orderly(&node, "fo", 32, 0).await.is_empty());
    ack_orderly(&node, "fo", &first[0]).await.unwrap();
    assert!(pop_orderly(&node, "fo", 32, 0).await.is_empty());
    // m1's invisible time changed to 2 s: the queue stays held past the
    // batch's 1 s (a pop held 1.2 s gets nothing), under a new handle.
    let changed = change_on(&node, "fo", "fifo", &handle(&first[1]), 2_000)
        .await
        .unwrap()
        .fields;
    let new = ReceiptHandle::parse(&changed.extra_info).unwrap();
    let old = ReceiptHandle::parse(&handle(&first[1])).unwrap();
    assert_eq!(new.checkpoint_id, old.checkpoint_id);
    assert_eq!(new.invisible_time_ms, 2_000);
    assert!(pop_orderly(&node, "fo", 32, 1_200).await.is_empty());
    // m1 not acked: after its 2 s it comes first again, then what follows.
    let start = Instant::now();
    let mut again = Vec::new();
    while again.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "m1 never came back"
        );
        again = pop_orderly(&node, "fo", 2, 1_000).await;
    }
    let got: Vec<(String, u32)> = again.iter().map(|m| (body(m), m.reconsume_times)).collect();
    assert_eq!(got, [("m1".to_string(), 1), ("m2".to_string(), 0)]);
    // The first delivery's receipt is void.
    assert!(ack_orderly(&node, "fo", &first[1]).await.is_err());
    // m1 fails again (past the max of 1): a dead letter; m2 acked, m3 next.
    ack_orderly(&node, "fo", &again[1]).await.unwrap();
    let start = Instant::now();
    let mut next = Vec::new();
    while next.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "m3 never came");
        next = pop_orderly(&node, "fo", 32, 1_000).await;
    }
    let got: Vec<(String, u32)> = next.iter().map(|m| (body(m), m.reconsume_times)).collect();
    assert_eq!(got, [("m3".to_string(), 0)]);
    let dead = node.store.read_by_queue_offset("%DLQ%fo", 0, 0).unwrap();
    assert_eq!(String::from_utf8_lossy(dead.body_slice()), "m1");
    assert_eq!(dead.header().reconsume_times, 2);
    ack_orderly(&node, "fo", &next[0]).await.unwrap();
    // A restart keeps the queue's place.
    node.stop().await;
    let node = Node::start(dir.path(), Opts::default()).await;
    assert!(pop_orderly(&node, "fo", 32, 1_500).await.is_empty());
    node.stop().await;
}

#[actix_rt::test]
async fn a_batch_ack_takes_the_good_handles_and_lists_the_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    send(&node, 10).await;
    let got = pop_n(&node, "g", 10, 1_000).await;
    let mut acks: Vec<BatchAckEntry> = got
        .iter()
        .filter(|m| body(m) != "m9")
        .map(|m| {
            let h = handle(m);
            let p = ReceiptHandle::parse(&h).unwrap();
            BatchAckEntry {
                queue_id: p.queue_id,
                offset: p.queue_offset,
                extra_info: h,
            }
        })
        .collect();
    let repeat = acks[0].clone();
    acks.push(repeat); // index 9: acked earlier in this batch, stale
    acks.push(BatchAckEntry {
        queue_id: 0,
        offset: 0,
        extra_info: "junk".into(),
    }); // index 10: malformed
    let r = pop_addr(&node)
        .await
        .send(Call::new(BatchAckMessageRequest {
            consumer_group: "g".into(),
            topic: TOPIC.into(),
            acks,
        }))
        .await
        .unwrap()
        .unwrap();
    let failed: Vec<(u32, ResponseCode)> = r
        .fields
        .failed
        .iter()
        .map(|f| (f.index, ResponseCode::try_from(f.code).unwrap()))
        .collect();
    assert_eq!(
        failed,
        [
            (9, ResponseCode::InvalidReceiptHandle),
            (10, ResponseCode::InvalidReceiptHandle)
        ]
    );
    // Only the one left out comes back, once its invisible time passed;
    // the acked ones never do, also not after a restart.
    let back = pop_n(&node, "g", 1, 5_000).await;
    assert_eq!(back.iter().map(body).collect::<Vec<_>>(), ["m9"]);
    assert_eq!(back[0].reconsume_times, 1);
    ack(&node, "g", &handle(&back[0])).await.unwrap();
    node.stop().await;
    let node = Node::start(dir.path(), Opts::default()).await;
    assert_eq!(
        pop(&node, "g", 32, 1_000, 2_500).await.0,
        ResponseCode::PollingTimeout
    );
    node.stop().await;
}

/// The committed offsets of `group` on [`TOPIC`], once they equal
/// `want` (the pop service commits its positions with its next state
/// write, within a revive interval).
async fn offsets_become(node: &Node, group: &str, want: &[(u32, u64)]) {
    use actormq_actors::broker::offset_manager::GetGroupOffsets;
    let want: std::collections::BTreeMap<u32, u64> = want.iter().copied().collect();
    let start = Instant::now();
    loop {
        let got = node
            .actors
            .offsets
            .addr()
            .unwrap()
            .send(GetGroupOffsets {
                group: group.into(),
                topic: TOPIC.into(),
            })
            .await
            .unwrap();
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "offsets of {group}: {got:?}, want {want:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn pop_positions_are_the_groups_offsets() {
    use actormq_protocol::request::{ResetOffsetRequest, UpdateConsumerOffsetRequest};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    // m0, m2, m4 on queue 0; m1, m3, m5 on queue 1.
    send(&node, 6).await;
    let bodies = |ms: &[StoredMessage]| {
        let mut b: Vec<String> = ms.iter().map(body).collect();
        b.sort();
        b
    };

    // Popped: committed as the group's offsets.
    assert_eq!(pop_n(&node, "gp", 6, 30_000).await.len(), 6);
    offsets_become(&node, "gp", &[(0, 3), (1, 3)]).await;

    // A group with committed offsets (a native consumer's) pops from them.
    let offsets = node.actors.offsets.addr().unwrap();
    for (queue_id, commit_offset) in [(0, 2), (1, 3)] {
        offsets
            .send(Call::new(UpdateConsumerOffsetRequest {
                consumer_group: "gs".into(),
                topic: TOPIC.into(),
                queue_id,
                commit_offset,
            }))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(bodies(&pop_n(&node, "gs", 1, 30_000).await), ["m4"]);
    assert!(pop(&node, "gs", 32, 30_000, 0).await.1.is_empty());

    // An offset reset to the start moves gp's positions: all again.
    node.actors
        .offset_reset
        .addr()
        .unwrap()
        .send(Call::new(ResetOffsetRequest {
            consumer_group: "gp".into(),
            topic: TOPIC.into(),
            timestamp_ms: 0,
            force: true,
        }))
        .await
        .unwrap()
        .unwrap();
    offsets_become(&node, "gp", &[(0, 0), (1, 0)]).await;
    assert_eq!(
        bodies(&pop_n(&node, "gp", 6, 30_000).await),
        ["m0", "m1", "m2", "m3", "m4", "m5"]
    );
    node.stop().await;
}

#[actix_rt::test]
async fn pops_filter_by_tag_and_sql92() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    node.create_topic(TOPIC, 1).await;
    for (i, tag) in ["created", "paid", "shipped", "paid"].iter().enumerate() {
        let mut m = Message::new(TOPIC, format!("m{i}"));
        m.tags = Some((*tag).into());
        m.properties.insert("amount".into(), format!("{}", i * 100));
        node.send(0, &m).await.unwrap();
    }
    node.wait_dispatched(TOPIC, 0, 4).await;
    let filtered = |group: &str, expr: &str, kind: &str| PopMessageRequest {
        consumer_group: group.into(),
        topic: TOPIC.into(),
        max_msg_nums: 32,
        invisible_time_ms: 30_000,
        born_time_ms: now_ms(),
        expression: Some(expr.into()),
        expression_type: Some(kind.into()),
        ..Default::default()
    };
    let pop_with = |req: PopMessageRequest| async {
        let r = pop_addr(&node).await.send(Call::new(req)).await.unwrap();
        r.map(|r| {
            if r.code == ResponseCode::Success {
                batch::decode_stored(&r.body).unwrap()
            } else {
                Vec::new()
            }
        })
    };
    let tags = pop_with(filtered("gt", "paid", "TAG")).await.unwrap();
    assert_eq!(tags.iter().map(body).collect::<Vec<_>>(), ["m1", "m3"]);
    // The others were passed over.
    assert!(
        pop_with(filtered("gt", "paid", "TAG"))
            .await
            .unwrap()
            .is_empty()
    );
    let sql = pop_with(filtered("gq", "amount >= 200", "SQL92"))
        .await
        .unwrap();
    assert_eq!(sql.iter().map(body).collect::<Vec<_>>(), ["m2", "m3"]);
    // An expression that does not compile is refused.
    let bad = pop_with(filtered("gb", "amount >", "SQL92")).await;
    assert!(bad.is_err());
    node.stop().await;
}
