//! Transactions on the broker actors over a real store: a half message is
//! parked invisibly, `END_TRANSACTION` commits it (delivered once, same
//! unique key, transaction properties gone) or rolls it back (never
//! delivered), a second decision is refused, also after a restart, and the
//! sends that cannot be half messages are refused.

use actormq_actors::broker::end_transaction::{EndTransactionStats, GetEndTransactionStats};
use actormq_actors::runtime::{Call, Reply, ServiceError};
use actormq_protocol::request::{Empty, EndTransactionRequest, TransactionDecision};
use actormq_protocol::system_topic::{TRANS_HALF_TOPIC, TRANS_OP_HALF_TOPIC};
use actormq_protocol::{Message, MessageId, ResponseCode};

use super::t40_send_pull::{Node, Opts};

fn half(topic: &str, body: &str, key: &str) -> Message {
    let mut m = Message::new(topic, body.to_owned());
    m.properties.insert("TRAN_MSG".into(), "true".into());
    m.properties.insert("PGROUP".into(), "pg".into());
    m.properties.insert("UNIQ_KEY".into(), key.into());
    m.tags = Some("tx".into());
    m
}

/// The END_TRANSACTION of a half message stored with `reply`.
fn end_req(
    msg_id: &str,
    queue_offset: u64,
    key: &str,
    decision: TransactionDecision,
) -> EndTransactionRequest {
    EndTransactionRequest {
        producer_group: "pg".into(),
        tran_state_table_offset: queue_offset,
        commit_log_offset: MessageId::decode(msg_id).unwrap().commit_log_offset,
        decision,
        from_transaction_check: false,
        msg_id: msg_id.into(),
        transaction_id: Some(key.into()),
    }
}

async fn end(node: &Node, req: EndTransactionRequest) -> Result<Reply<Empty>, ServiceError> {
    node.actors
        .end_transaction
        .addr()
        .unwrap()
        .send(Call::new(req))
        .await
        .unwrap()
}

async fn stats(node: &Node) -> EndTransactionStats {
    node.actors
        .end_transaction
        .addr()
        .unwrap()
        .send(GetEndTransactionStats)
        .await
        .unwrap()
}

#[actix_rt::test]
async fn half_messages_are_invisible_until_committed_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    node.create_topic("tx", 2).await;

    let a = node.send(1, &half("tx", "a", "K-A")).await.unwrap();
    let b = node.send(1, &half("tx", "b", "K-B")).await.unwrap();
    // Answered for the queue asked; stored in the half topic.
    assert_eq!(a.fields.queue_id, 1);
    node.wait_dispatched(TRANS_HALF_TOPIC, 0, 2).await;
    assert_eq!(node.store.max_offset("tx", 1), 0, "invisible");

    end(
        &node,
        end_req(
            &a.fields.msg_id,
            a.fields.queue_offset,
            "K-A",
            TransactionDecision::Commit,
        ),
    )
    .await
    .unwrap();
    end(
        &node,
        end_req(
            &b.fields.msg_id,
            b.fields.queue_offset,
            "K-B",
            TransactionDecision::Rollback,
        ),
    )
    .await
    .unwrap();
    // Unknown: nothing happens.
    let c = node.send(1, &half("tx", "c", "K-C")).await.unwrap();
    end(
        &node,
        end_req(
            &c.fields.msg_id,
            c.fields.queue_offset,
            "K-C",
            TransactionDecision::Unknown,
        ),
    )
    .await
    .unwrap();
    node.wait_dispatched(TRANS_OP_HALF_TOPIC, 0, 2).await;
    let got = node.pull_n("tx", 1, 0, 1).await;
    assert_eq!(got.len(), 1);
    let m = &got[0].message;
    assert_eq!(&m.body[..], b"a");
    assert_eq!(m.unique_key(), Some("K-A"));
    assert_eq!(m.tags.as_deref(), Some("tx"));
    for gone in ["TRAN_MSG", "PGROUP", "REAL_TOPIC", "REAL_QID"] {
        assert!(!m.properties.contains_key(gone), "{gone} removed");
    }

    // Second decisions: refused, nothing more delivered.
    for (r, key, d) in [
        (&a, "K-A", TransactionDecision::Commit),
        (&a, "K-A", TransactionDecision::Rollback),
        (&b, "K-B", TransactionDecision::Commit),
    ] {
        let e = end(
            &node,
            end_req(&r.fields.msg_id, r.fields.queue_offset, key, d),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, ResponseCode::TransactionFailed, "{e}");
        assert!(e.remark.contains("already"), "{e}");
    }
    assert_eq!(
        stats(&node).await,
        EndTransactionStats {
            commits: 1,
            rollbacks: 1,
            duplicates: 3
        }
    );
    assert_eq!(node.store.max_offset("tx", 1), 1);
    assert_eq!(node.store.max_offset(TRANS_OP_HALF_TOPIC, 0), 2);

    // Bad requests are answered, not applied.
    let mut wrong_group = end_req(&c.fields.msg_id, 0, "K-C", TransactionDecision::Commit);
    wrong_group.producer_group = "other".into();
    let e = end(&node, wrong_group).await.unwrap_err();
    assert_eq!(e.code, ResponseCode::TransactionFailed);
    let e = end(
        &node,
        end_req(&c.fields.msg_id, 0, "K-X", TransactionDecision::Commit),
    )
    .await
    .unwrap_err();
    assert!(e.remark.contains("does not match"), "{e}");
    let mut not_half = end_req(&c.fields.msg_id, 0, "K-C", TransactionDecision::Commit);
    not_half.commit_log_offset = got[0].commit_log_offset;
    let e = end(&node, not_half).await.unwrap_err();
    assert!(e.remark.contains("not a half message"), "{e}");
    node.stop().await;
}

#[actix_rt::test]
async fn sends_that_cannot_be_half_messages_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    node.create_topic("tx", 1).await;
    let mut no_group = half("tx", "x", "K");
    no_group.properties.remove("PGROUP");
    let e = node.send(0, &no_group).await.unwrap_err();
    assert_eq!(e.code, ResponseCode::MessageIllegal);
    assert!(e.remark.contains("PGROUP"), "{e}");
    let e = node
        .send_batch("tx", 0, &[half("tx", "1", "K1"), half("tx", "2", "K2")])
        .await
        .unwrap_err();
    assert_eq!(e.code, ResponseCode::MessageIllegal);
    assert!(e.remark.contains("batch"), "{e}");
    // Nor may a client write the half topic itself.
    let e = node
        .send(0, &Message::new(TRANS_HALF_TOPIC, "x"))
        .await
        .unwrap_err();
    assert_eq!(e.code, ResponseCode::NoPermission);
    assert_eq!(node.store.max_offset("tx", 0), 0);
    assert_eq!(node.store.max_offset(TRANS_HALF_TOPIC, 0), 0);
    node.stop().await;
}

#[actix_rt::test]
async fn decisions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    node.create_topic("tx", 1).await;
    let a = node.send(0, &half("tx", "a", "K-A")).await.unwrap();
    let b = node.send(0, &half("tx", "b", "K-B")).await.unwrap();
    end(
        &node,
        end_req(
            &b.fields.msg_id,
            b.fields.queue_offset,
            "K-B",
            TransactionDecision::Commit,
        ),
    )
    .await
    .unwrap();
    node.wait_dispatched("tx", 0, 1).await;
    node.stop().await;

    // After the restart: "a" (pending) is committed once; "b" (decided
    // before) is refused, from the store alone.
    let node = Node::start(dir.path(), Opts::default()).await;
    end(
        &node,
        end_req(
            &a.fields.msg_id,
            a.fields.queue_offset,
            "K-A",
            TransactionDecision::Commit,
        ),
    )
    .await
    .unwrap();
    let e = end(
        &node,
        end_req(
            &b.fields.msg_id,
            b.fields.queue_offset,
            "K-B",
            TransactionDecision::Commit,
        ),
    )
    .await
    .unwrap_err();
    assert!(e.remark.contains("already committed"), "{e}");
    let got = node.pull_n("tx", 0, 0, 2).await;
    let bodies: Vec<&[u8]> = got.iter().map(|m| &m.message.body[..]).collect();
    assert_eq!(bodies, [&b"b"[..], &b"a"[..]]);
    node.wait_dispatched(TRANS_OP_HALF_TOPIC, 0, 2).await;
    let e = end(
        &node,
        end_req(
            &a.fields.msg_id,
            a.fields.queue_offset,
            "K-A",
            TransactionDecision::Commit,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ResponseCode::TransactionFailed);
    assert_eq!(node.store.max_offset("tx", 0), 2, "each delivered once");
    node.stop().await;
}

#[actix_rt::test]
async fn a_restarted_checker_goes_on_from_its_progress() {
    use std::time::Duration;

    use actix::prelude::*;
    use actormq_actors::broker::transaction_checker::{GetCheckerStats, RunCheckPass};
    use actormq_actors::broker::{BrokerActors, BrokerActorsConfig};
    use actormq_actors::runtime::guard::InjectPanic;
    use actormq_actors::runtime::{Escalation, RestartPolicy, Supervisor};
    use actormq_protocol::request::SendMessageRequest;
    use actormq_store::StoreConfig;

    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerActorsConfig::new(
        StoreConfig::small(dir.path().join("store"), 1 << 20),
        dir.path(),
        "127.0.0.1:10911".parse().unwrap(),
    );
    config.transactions.timeout = Duration::from_millis(1);
    config.transactions.check_interval = Duration::from_secs(3600);
    config.transactions.check_max = 2;
    let log = super::t40_send_pull::log();
    let supervisor = Supervisor::new(
        "broker",
        &log,
        RestartPolicy::default(),
        Escalation::StopSystem,
    )
    .start();
    let actors = BrokerActors::start(&supervisor, config, &log)
        .await
        .unwrap();
    let msg = half("tx", "a", "K-A");
    let req = SendMessageRequest::new("pg", 0, super::t40_send_pull::now_ms(), &msg);
    actors
        .writer
        .addr()
        .unwrap()
        .send(Call::with_body(req, msg.body.clone()))
        .await
        .unwrap()
        .unwrap();
    let wait = |topic: &'static str, n: u64| {
        let store = actors.store.clone();
        async move {
            for _ in 0..500 {
                if store.max_offset(topic, 0) >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("{topic} never reached {n}");
        }
    };
    wait(TRANS_HALF_TOPIC, 1).await;
    tokio::time::sleep(Duration::from_millis(5)).await; // older than the 1 ms timeout
    // First check: a copy with one check.
    let checker = actors.transaction_checker.addr().unwrap();
    checker.send(RunCheckPass).await.unwrap();
    wait(TRANS_HALF_TOPIC, 2).await;
    // The progress is written once the pass's re-put is stored.
    let mut stats = checker.send(GetCheckerStats).await.unwrap();
    for _ in 0..1000 {
        if stats.progress.half == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        stats = checker.send(GetCheckerStats).await.unwrap();
    }
    assert_eq!(stats.progress.half, 1, "{stats:?}");
    assert_eq!(stats.checks_unanswerable, 1);

    // The checker dies; its successor starts from the persisted progress.
    checker.do_send(InjectPanic("test".into()));
    let mut rx = actors.transaction_checker.subscribe();
    let next = actix_rt::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|a| matches!(a, Some(new) if *new != checker)),
    )
    .await
    .expect("restarted")
    .unwrap()
    .clone()
    .unwrap();
    assert_eq!(next.send(GetCheckerStats).await.unwrap().progress.half, 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    next.send(RunCheckPass).await.unwrap();
    wait(TRANS_HALF_TOPIC, 3).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Checked twice: the next pass rolls it back.
    for _ in 0..500 {
        next.send(RunCheckPass).await.unwrap();
        if actors.store.max_offset(TRANS_OP_HALF_TOPIC, 0) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        actors.store.max_offset(TRANS_OP_HALF_TOPIC, 0),
        1,
        "rolled back"
    );
    // One copy per check, none made twice across the restart.
    assert_eq!(actors.store.max_offset(TRANS_HALF_TOPIC, 0), 3);
    assert_eq!(actors.store.max_offset("tx", 0), 0);
    supervisor
        .send(actormq_actors::runtime::StopSupervisor)
        .await
        .unwrap();
}

#[actix_rt::test]
async fn a_commit_cut_short_is_completed_not_repeated() {
    use actormq_actors::broker::commit_log::PutInternal;
    use actormq_actors::broker::half_message::{HalfMessage, committed};

    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    node.create_topic("tx", 1).await;
    let a = node.send(0, &half("tx", "a", "K-A")).await.unwrap();
    // A crash between the commit's re-put and its op record: the message
    // is in its topic, no op record exists.
    let offset = MessageId::decode(&a.fields.msg_id)
        .unwrap()
        .commit_log_offset;
    let view = node.store.read_at(offset).unwrap();
    let h = HalfMessage::from_view(&view).unwrap();
    let put = node
        .writer
        .send(PutInternal {
            messages: vec![committed(&view, &h).unwrap()],
            create_as: None,
        })
        .await
        .unwrap();
    assert!(put[0].is_ok());
    node.wait_dispatched("tx", 0, 1).await;

    // A rollback now is refused; a commit writes the op record only.
    let e = end(
        &node,
        end_req(
            &a.fields.msg_id,
            a.fields.queue_offset,
            "K-A",
            TransactionDecision::Rollback,
        ),
    )
    .await
    .unwrap_err();
    assert!(e.remark.contains("already committed"), "{e}");
    end(
        &node,
        end_req(
            &a.fields.msg_id,
            a.fields.queue_offset,
            "K-A",
            TransactionDecision::Commit,
        ),
    )
    .await
    .unwrap();
    node.wait_dispatched(TRANS_OP_HALF_TOPIC, 0, 1).await;
    assert_eq!(node.store.max_offset("tx", 0), 1, "not delivered again");
    node.stop().await;
}
