//! The idempotent producer's dedup window in the commit-log writer: a
//! resent (producer id, sequence) is answered with the original reply and
//! stored once — across drains, within one drain, in sync flush mode,
//! after a writer panic and after a broker restart (snapshot + log scan).

use std::time::Duration;

use actormq_actors::broker::commit_log::GetCommitLogStats;
use actormq_actors::broker::dedup::DedupConfig;
use actormq_actors::runtime::guard::InjectPanic;
use actormq_actors::runtime::{Call, Reply, ServiceError};
use actormq_protocol::request::{
    SendBatchMessageRequest, SendBatchMessageResponse, SendMessageRequest, SendMessageResponse,
};
use actormq_protocol::{Message, ResponseCode, batch};
use actormq_store::FlushMode;
use futures_util::future::join_all;

use super::t40_send_pull::{Node, Opts, message, now_ms};

const PID: &str = "00112233445566778899aabbccddeeff";

fn single(
    node: &Node,
    queue_id: u32,
    seq: u64,
    msg: &Message,
) -> impl Future<Output = Result<Reply<SendMessageResponse>, ServiceError>> + use<> {
    let mut req = SendMessageRequest::new("pg", queue_id, now_ms(), msg);
    req.producer_id = Some(PID.into());
    req.sequence = Some(seq);
    let call = node.writer.send(Call::with_body(req, msg.body.clone()));
    async move { call.await.unwrap() }
}

async fn batch_send(
    node: &Node,
    topic: &str,
    seq: u64,
    msgs: &[Message],
) -> Result<Reply<SendBatchMessageResponse>, ServiceError> {
    let req = SendBatchMessageRequest {
        producer_group: "pg".into(),
        topic: topic.into(),
        queue_id: 0,
        born_timestamp_ms: now_ms(),
        producer_id: Some(PID.into()),
        sequence: Some(seq),
    };
    node.writer
        .send(Call::with_body(req, batch::messages_to_bytes(msgs)))
        .await
        .unwrap()
}

fn opts(dir: &std::path::Path, flush: FlushMode) -> Opts {
    let mut o = Opts {
        flush,
        ..Opts::default()
    };
    o.writer.dedup = DedupConfig {
        path: Some(dir.join("config/producer_dedup.msgpack")),
        window: 8,
        snapshot_interval: Duration::from_millis(50),
        ..DedupConfig::default()
    };
    o
}

async fn appended(node: &Node) -> u64 {
    node.writer.send(GetCommitLogStats).await.unwrap().messages
}

#[actix_rt::test]
async fn a_resent_send_gets_the_original_reply_and_is_stored_once() {
    for flush in [FlushMode::Async, FlushMode::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(dir.path(), opts(dir.path(), flush)).await;
        let t = "idem";
        node.create_topic(t, 2).await;
        let first = single(&node, 1, 1, &message(t, 1)).await.unwrap();
        assert_eq!(first.code, ResponseCode::Success);
        let again = single(&node, 1, 1, &message(t, 1)).await.unwrap();
        assert_eq!(again.code, ResponseCode::Success);
        assert_eq!(again.fields, first.fields, "{flush:?}");
        // Same sequence on another queue: another send.
        let other = single(&node, 0, 1, &message(t, 1)).await.unwrap();
        assert_eq!(other.fields.queue_offset, 0);
        assert_ne!(other.fields.msg_id, first.fields.msg_id);
        // Five copies in one drain: one append, five equal replies.
        let copies: Vec<_> = (0..5)
            .map(|_| single(&node, 1, 2, &message(t, 2)))
            .collect();
        let replies = join_all(copies).await;
        let want = replies[0].as_ref().unwrap().fields.clone();
        assert_eq!(want.queue_offset, 1);
        for r in &replies {
            assert_eq!(r.as_ref().unwrap().fields, want);
        }
        // A batch: one sequence for the whole, resent as a whole.
        let msgs: Vec<Message> = (10..13).map(|i| message(t, i)).collect();
        let b1 = batch_send(&node, t, 3, &msgs).await.unwrap();
        let b2 = batch_send(&node, t, 3, &msgs).await.unwrap();
        assert_eq!(b2.fields, b1.fields);
        assert_eq!(b1.fields.msg_ids().count(), 3);
        assert_eq!(appended(&node).await, 1 + 1 + 1 + 3);
        // Not idempotent: stored every time.
        node.send(1, &message(t, 20)).await.unwrap();
        node.send(1, &message(t, 20)).await.unwrap();
        assert_eq!(appended(&node).await, 8);
        let stats = node.writer.send(GetCommitLogStats).await.unwrap();
        assert_eq!(stats.duplicates, 1 + 4 + 1);
        // Queue 1 holds 1, 2 and the two plain sends; queue 0 the other
        // 1 and the batch: each idempotent send once.
        let bodies = |got: Vec<actormq_protocol::StoredMessage>| -> Vec<Message> {
            got.into_iter().map(|s| s.message).collect()
        };
        let q1 = bodies(node.pull_n(t, 1, 0, 4).await);
        let m20 = message(t, 20);
        assert_eq!(q1, vec![message(t, 1), message(t, 2), m20.clone(), m20]);
        let q0 = bodies(node.pull_n(t, 0, 0, 4).await);
        let mut want0 = vec![message(t, 1)];
        want0.extend(msgs.iter().cloned());
        assert_eq!(q0, want0);
        node.stop().await;
    }
}

#[actix_rt::test]
async fn a_sequence_below_the_window_is_refused_and_gaps_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), opts(dir.path(), FlushMode::Async)).await;
    let t = "window";
    node.create_topic(t, 1).await;
    // Window of 8; gaps and reordering accepted.
    for seq in [100, 3, 50, 4, 7, 9, 200, 201, 202, 203] {
        let r = single(&node, 0, seq, &message(t, seq as usize)).await;
        assert_eq!(r.unwrap().code, ResponseCode::Success);
    }
    let err = single(&node, 0, 3, &message(t, 3)).await.unwrap_err();
    assert_eq!(err.code, ResponseCode::SequenceOutOfWindow, "{err}");
    // 5 is a gap above the window's floor: new.
    let r = single(&node, 0, 5, &message(t, 5)).await.unwrap();
    assert_eq!(r.fields.queue_offset, 10);
    assert_eq!(appended(&node).await, 11);
    // Half-given idempotence is refused.
    let mut req = SendMessageRequest::new("pg", 0, now_ms(), &message(t, 0));
    req.sequence = Some(1);
    let err = node
        .writer
        .send(Call::with_body(req, message(t, 0).body))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ResponseCode::MessageIllegal);
    node.stop().await;
}

#[actix_rt::test]
async fn the_window_survives_a_writer_panic_and_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t = "durable-idem";
    let (r1, r5, b) = {
        let node = Node::start(dir.path(), opts(dir.path(), FlushMode::Async)).await;
        node.create_topic(t, 1).await;
        let r1 = single(&node, 0, 1, &message(t, 1)).await.unwrap();
        let msgs: Vec<Message> = (2..5).map(|i| message(t, i)).collect();
        let b = batch_send(&node, t, 2, &msgs).await.unwrap();
        // Let a snapshot be written, then send more (found by the scan).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(dir.path().join("config/producer_dedup.msgpack").exists());
        let r5 = single(&node, 0, 5, &message(t, 5)).await.unwrap();

        // A writer panic: the new incarnation rebuilds the window.
        let first = node.actors.writer.addr().unwrap();
        let crash = first.send(InjectPanic("writer broke (expected in this test)".into()));
        assert!(crash.await.is_err());
        let mut rx = node.actors.writer.subscribe();
        let second = tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|a| matches!(a, Some(new) if *new != first)),
        )
        .await
        .expect("writer not restarted")
        .unwrap()
        .clone()
        .unwrap();
        let mut req = SendMessageRequest::new("pg", 0, now_ms(), &message(t, 5));
        req.producer_id = Some(PID.into());
        req.sequence = Some(5);
        let again = second
            .send(Call::with_body(req, message(t, 5).body))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.fields, r5.fields);
        node.stop().await;
        (r1, r5, b)
    };
    let node = Node::start(dir.path(), opts(dir.path(), FlushMode::Async)).await;
    let before = node.store.commit_log_max_offset();
    assert_eq!(
        single(&node, 0, 1, &message(t, 1)).await.unwrap().fields,
        r1.fields
    );
    assert_eq!(
        single(&node, 0, 5, &message(t, 5)).await.unwrap().fields,
        r5.fields
    );
    let msgs: Vec<Message> = (2..5).map(|i| message(t, i)).collect();
    assert_eq!(
        batch_send(&node, t, 2, &msgs).await.unwrap().fields,
        b.fields
    );
    assert_eq!(
        node.store.commit_log_max_offset(),
        before,
        "nothing appended"
    );
    // Without any snapshot the whole log is scanned: same answers.
    node.stop().await;
    std::fs::remove_file(dir.path().join("config/producer_dedup.msgpack")).unwrap();
    let _ = std::fs::remove_file(dir.path().join("config/producer_dedup.msgpack.bak"));
    let node = Node::start(dir.path(), opts(dir.path(), FlushMode::Async)).await;
    assert_eq!(
        single(&node, 0, 1, &message(t, 1)).await.unwrap().fields,
        r1.fields
    );
    assert_eq!(
        batch_send(&node, t, 2, &msgs).await.unwrap().fields,
        b.fields
    );
    let r6 = single(&node, 0, 6, &message(t, 6)).await.unwrap();
    assert_eq!(r6.fields.queue_offset, 5);
    node.stop().await;
}
