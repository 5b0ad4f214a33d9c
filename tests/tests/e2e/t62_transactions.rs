//! Transactional messages against child-process nodes: commit delivers
//! once, rollback never, an unknown state is resolved by the broker's
//! check-back, another member of the group answers when the sender is
//! gone, a broker restart between half message and decision (and between
//! two checks) still delivers exactly once, and a half message nobody
//! decides is rolled back after `transaction_check_max` checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actormq_protocol::request::{EndTransactionRequest, TransactionDecision};
use actormq_protocol::system_topic::TRANS_OP_HALF_TOPIC;
use actormq_protocol::{Bytes, Message, ResponseCode, StoredMessage};
use actormq_sdk::{
    ProducerBuilder, ProducerConfig, TransactionListener, TransactionProducer, TransactionState,
};
use actormq_tests::eventually;
use actormq_tests::node::{Bin, NodeProcess};

use crate::common::*;

/// Checks come quickly in these tests.
const FAST_CHECKS: [(&str, &str); 2] = [
    ("ACTORMQ_BROKER__TRANSACTION_TIMEOUT_MS", "300"),
    ("ACTORMQ_BROKER__TRANSACTION_CHECK_INTERVAL_MS", "200"),
];

/// A listener whose answers the test sets, counting its calls.
#[derive(Default)]
struct Script {
    /// Local transaction answers by body (default `Unknown`).
    execute: Mutex<BTreeMap<String, TransactionState>>,
    /// Check answer while `check_commit` is false.
    check_default: Mutex<Option<TransactionState>>,
    /// Checks answer `Commit` once set.
    check_commit: AtomicBool,
    /// Blocks the local transaction until set (restart tests).
    hold: AtomicBool,
    executed: AtomicUsize,
    checks: AtomicUsize,
}

#[derive(Clone, Default)]
struct Listener(Arc<Script>);

impl TransactionListener for Listener {
    fn execute_local_transaction(&self, msg: &Message) -> TransactionState {
        self.0.executed.fetch_add(1, Ordering::SeqCst);
        // Bounded: a test that forgets to release fails by its own limit.
        for _ in 0..6_000 {
            if !self.0.hold.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let body = String::from_utf8_lossy(&msg.body).into_owned();
        self.0
            .execute
            .lock()
            .unwrap()
            .get(&body)
            .copied()
            .unwrap_or(TransactionState::Unknown)
    }

    fn check_local_transaction(&self, _: &StoredMessage) -> TransactionState {
        self.0.checks.fetch_add(1, Ordering::SeqCst);
        if self.0.check_commit.load(Ordering::SeqCst) {
            return TransactionState::Commit;
        }
        self.0
            .check_default
            .lock()
            .unwrap()
            .unwrap_or(TransactionState::Unknown)
    }
}

async fn tx_producer(
    namesrv: SocketAddr,
    group: &str,
    instance: &str,
    l: &Listener,
) -> TransactionProducer {
    let config = ProducerConfig {
        group: group.into(),
        namesrv: vec![namesrv.to_string()],
        send_timeout_ms: 10_000,
        heartbeat_interval_ms: 200,
        route_refresh_interval_ms: 200,
        instance_name: Some(instance.into()),
        ..ProducerConfig::default()
    };
    ProducerBuilder::from_config(config)
        .build_transactional(l.clone())
        .await
        .expect("transactional producer starts")
}

fn bodies(msgs: &[StoredMessage]) -> Vec<String> {
    let mut v: Vec<String> = msgs
        .iter()
        .map(|m| String::from_utf8_lossy(&m.message.body).into_owned())
        .collect();
    v.sort();
    v
}

/// Waits until `topic` queue 0 on `broker` holds `n` messages and returns
/// them all.
async fn delivered(broker: SocketAddr, topic: &str, n: u64) -> Vec<StoredMessage> {
    let mut c = connect(broker).await;
    pull_all_at_least(&mut c, topic, 0, n).await
}

/// The op records (decisions) stored so far, as (transaction id, decision).
async fn decisions(broker: SocketAddr, at_least: u64) -> Vec<(String, String)> {
    let mut c = connect(broker).await;
    pull_all_at_least(&mut c, TRANS_OP_HALF_TOPIC, 0, at_least)
        .await
        .into_iter()
        .map(|m| {
            (
                m.message.keys.clone().unwrap_or_default(),
                m.message
                    .properties
                    .get("TRAN_DECISION")
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn combined_with(env: &[(&str, &str)]) -> NodeProcess {
    NodeProcess::start_with_env(Bin::Node, NO_ARGS, env).expect("start a combined node")
}

#[actix_rt::test]
async fn t62_commit_delivers_once_rollback_never() {
    bounded(async {
        let node = combined(NO_ARGS);
        let topic = "t62-commit";
        create_topic(node.broker(), topic, 1).await;
        wait_route(node.namesrv(), topic, "broker-a", node.broker(), 1).await;
        let l = Listener::default();
        {
            let mut e = l.0.execute.lock().unwrap();
            for i in 0..3 {
                e.insert(format!("commit-{i}"), TransactionState::Commit);
                e.insert(format!("rollback-{i}"), TransactionState::Rollback);
            }
        }
        let p = tx_producer(node.namesrv(), "t62-g1", "a", &l).await;
        let mut committed = Vec::new();
        for i in 0..3 {
            for kind in ["commit", "rollback"] {
                let r = p
                    .send_in_transaction(Message::new(topic, format!("{kind}-{i}")))
                    .await
                    .expect("transactional send");
                assert!(r.end_error.is_none(), "{:?}", r.end_error);
                if kind == "commit" {
                    assert_eq!(r.state, TransactionState::Commit);
                    committed.push(r);
                } else {
                    assert_eq!(r.state, TransactionState::Rollback);
                }
            }
        }
        assert_eq!(l.0.executed.load(Ordering::SeqCst), 6);
        // A local transaction of its own for one send (the listener is
        // not asked).
        let r = p
            .send_in_transaction_with(Message::new(topic, "own"), |m| {
                assert_eq!(&m.body[..], b"own");
                TransactionState::Commit
            })
            .await
            .expect("transactional send");
        assert_eq!(r.state, TransactionState::Commit);
        committed.push(r);
        assert_eq!(l.0.executed.load(Ordering::SeqCst), 6);
        // Seven decisions, then exactly the committed four in the topic,
        // each under its transaction id.
        let ops = decisions(node.broker(), 7).await;
        assert_eq!(ops.len(), 7);
        assert_eq!(ops.iter().filter(|(_, d)| d == "commit").count(), 4);
        let msgs = delivered(node.broker(), topic, 4).await;
        assert_eq!(bodies(&msgs), ["commit-0", "commit-1", "commit-2", "own"]);
        for (m, r) in msgs.iter().zip(&committed) {
            assert_eq!(m.message.unique_key(), Some(r.transaction_id.as_str()));
            assert!(!m.message.properties.contains_key("TRAN_MSG"));
            assert!(!m.message.properties.contains_key("REAL_TOPIC"));
        }

        // A second decision is refused and delivers nothing.
        let r = &committed[0];
        let id = actormq_protocol::MessageId::decode(&r.send.msg_id).unwrap();
        let mut c = connect(node.broker()).await;
        for decision in [TransactionDecision::Commit, TransactionDecision::Rollback] {
            let reply = c
                .call(
                    &EndTransactionRequest {
                        producer_group: "t62-g1".into(),
                        tran_state_table_offset: r.send.queue_offset,
                        commit_log_offset: id.commit_log_offset,
                        decision,
                        from_transaction_check: false,
                        msg_id: r.send.msg_id.clone(),
                        transaction_id: Some(r.transaction_id.clone()),
                    },
                    Bytes::new(),
                )
                .await
                .expect("END_TRANSACTION");
            assert_eq!(reply.code, ResponseCode::TransactionFailed);
            let remark = reply.remark.unwrap_or_default();
            assert!(remark.contains("already committed"), "{remark:?}");
        }
        // A plain send after the refusals: once it is there, nothing else
        // arrived in between.
        p.producer()
            .send(Message::new(topic, "marker"))
            .await
            .expect("plain send");
        let msgs = delivered(node.broker(), topic, 5).await;
        assert_eq!(
            bodies(&msgs),
            ["commit-0", "commit-1", "commit-2", "marker", "own"]
        );
        assert_eq!(l.0.checks.load(Ordering::SeqCst), 0, "nothing checked");
        p.shutdown().await;
    })
    .await;
}

#[actix_rt::test]
async fn t62_unknown_is_committed_by_the_check_back() {
    bounded(async {
        let node = combined_with(&FAST_CHECKS);
        let topic = "t62-unknown";
        create_topic(node.broker(), topic, 1).await;
        wait_route(node.namesrv(), topic, "broker-a", node.broker(), 1).await;
        let l = Listener::default();
        let p = tx_producer(node.namesrv(), "t62-g2", "a", &l).await;
        let r = p
            .send_in_transaction(Message::new(topic, "first"))
            .await
            .expect("transactional send");
        assert_eq!(r.state, TransactionState::Unknown);
        // Checked and answered unknown: still invisible.
        eventually(CONVERGE, || {
            let n = l.0.checks.load(Ordering::SeqCst);
            async move {
                if n >= 1 {
                    Ok(())
                } else {
                    Err("no check yet".to_string())
                }
            }
        })
        .await
        .expect("checked");
        let mut c = connect(node.broker()).await;
        assert_eq!(max_offset(&mut c, topic, 0).await, 0);
        // The next check commits it.
        l.0.check_commit.store(true, Ordering::SeqCst);
        let msgs = delivered(node.broker(), topic, 1).await;
        assert_eq!(bodies(&msgs), ["first"]);
        // A second transaction resolved the same way: once it is there,
        // the checker made further passes, and "first" is still there once.
        p.send_in_transaction(Message::new(topic, "second"))
            .await
            .expect("transactional send");
        let msgs = delivered(node.broker(), topic, 2).await;
        assert_eq!(bodies(&msgs), ["first", "second"]);
        p.shutdown().await;
    })
    .await;
}

#[actix_rt::test]
async fn t62_another_member_answers_when_the_sender_is_gone() {
    bounded(async {
        let node = combined_with(&FAST_CHECKS);
        let topic = "t62-member";
        create_topic(node.broker(), topic, 1).await;
        wait_route(node.namesrv(), topic, "broker-a", node.broker(), 1).await;
        // The sender leaves the transaction unknown and goes away.
        let sender_l = Listener::default();
        let sender = tx_producer(node.namesrv(), "t62-g3", "sender", &sender_l).await;
        let r = sender
            .send_in_transaction(Message::new(topic, "orphan"))
            .await
            .expect("transactional send");
        assert_eq!(r.state, TransactionState::Unknown);
        sender.shutdown().await;
        drop(sender);
        // Another member of the group, which never sent, answers.
        let other_l = Listener::default();
        other_l.0.check_commit.store(true, Ordering::SeqCst);
        let other = tx_producer(node.namesrv(), "t62-g3", "other", &other_l).await;
        other.serve_checks_for(topic).await.expect("announced");
        let msgs = delivered(node.broker(), topic, 1).await;
        assert_eq!(bodies(&msgs), ["orphan"]);
        assert_eq!(sender_l.0.checks.load(Ordering::SeqCst), 0);
        assert!(other_l.0.checks.load(Ordering::SeqCst) >= 1);
        other.shutdown().await;
    })
    .await;
}

fn split_broker(namesrv: SocketAddr, env: &[(&str, &str)]) -> NodeProcess {
    NodeProcess::start_with_env(
        Bin::Broker,
        &[
            "--namesrv",
            &namesrv.to_string(),
            "--broker-name",
            "t62-b",
            "--cluster",
            "t62-cluster",
        ],
        env,
    )
    .expect("start actormq-broker")
}

/// Restarts `br` (SIGKILL, then a new process) on a blocking thread.
async fn restart(br: NodeProcess) -> NodeProcess {
    actix_rt::task::spawn_blocking(move || {
        let mut br = br;
        br.restart().expect("broker restarts");
        br
    })
    .await
    .expect("restart thread")
}

#[actix_rt::test]
async fn t62_a_decision_after_a_broker_restart_delivers_once() {
    bounded(async {
        let ns = NodeProcess::start(Bin::Namesrv, NO_ARGS).expect("start actormq-namesrv");
        // Default timing: no check interferes within the test.
        let br = split_broker(ns.namesrv(), &[]);
        let topic = "t62-restart";
        create_topic(br.broker(), topic, 1).await;
        wait_route(ns.namesrv(), topic, "t62-b", br.broker(), 1).await;
        let l = Listener::default();
        l.0.execute
            .lock()
            .unwrap()
            .insert("across".into(), TransactionState::Commit);
        l.0.hold.store(true, Ordering::SeqCst);
        let p = tx_producer(ns.namesrv(), "t62-g4", "a", &l).await;
        let sending = {
            let p = p.clone();
            actix_rt::spawn(
                async move { p.send_in_transaction(Message::new(topic, "across")).await },
            )
        };
        // The half message is stored once the local transaction runs.
        eventually(CONVERGE, || {
            let n = l.0.executed.load(Ordering::SeqCst);
            async move {
                if n == 1 {
                    Ok(())
                } else {
                    Err("not yet".to_string())
                }
            }
        })
        .await
        .expect("local transaction started");
        let br = restart(br).await;
        wait_route(ns.namesrv(), topic, "t62-b", br.broker(), 1).await;
        l.0.hold.store(false, Ordering::SeqCst);
        let r = sending
            .await
            .expect("send task")
            .expect("transactional send");
        assert_eq!(r.state, TransactionState::Commit);
        assert!(r.end_error.is_none(), "{:?}", r.end_error);
        p.producer()
            .send(Message::new(topic, "marker"))
            .await
            .expect("plain send");
        let msgs = delivered(br.broker(), topic, 2).await;
        assert_eq!(bodies(&msgs), ["across", "marker"]);
        p.shutdown().await;
    })
    .await;
}

#[actix_rt::test]
async fn t62_a_pending_check_goes_on_after_a_broker_restart() {
    bounded(async {
        let ns = NodeProcess::start(Bin::Namesrv, NO_ARGS).expect("start actormq-namesrv");
        let br = split_broker(ns.namesrv(), &FAST_CHECKS);
        let topic = "t62-pending";
        create_topic(br.broker(), topic, 1).await;
        wait_route(ns.namesrv(), topic, "t62-b", br.broker(), 1).await;
        let l = Listener::default();
        let p = tx_producer(ns.namesrv(), "t62-g5", "a", &l).await;
        let r = p
            .send_in_transaction(Message::new(topic, "pending"))
            .await
            .expect("transactional send");
        assert_eq!(r.state, TransactionState::Unknown);
        // Checked (and answered unknown) before the restart.
        eventually(CONVERGE, || {
            let n = l.0.checks.load(Ordering::SeqCst);
            async move {
                if n >= 1 {
                    Ok(())
                } else {
                    Err("no check yet".to_string())
                }
            }
        })
        .await
        .expect("checked before the restart");
        let br = restart(br).await;
        l.0.check_commit.store(true, Ordering::SeqCst);
        let before = l.0.checks.load(Ordering::SeqCst);
        let msgs = delivered(br.broker(), topic, 1).await;
        assert_eq!(bodies(&msgs), ["pending"]);
        assert!(
            l.0.checks.load(Ordering::SeqCst) > before,
            "checked after the restart"
        );
        // Once a later transaction is through, "pending" is still there once.
        l.0.execute
            .lock()
            .unwrap()
            .insert("later".into(), TransactionState::Commit);
        p.send_in_transaction(Message::new(topic, "later"))
            .await
            .expect("transactional send");
        let msgs = delivered(br.broker(), topic, 2).await;
        assert_eq!(bodies(&msgs), ["later", "pending"]);
        p.shutdown().await;
    })
    .await;
}

#[actix_rt::test]
async fn t62_rolled_back_after_the_last_check() {
    bounded(async {
        let mut env = FAST_CHECKS.to_vec();
        env.push(("ACTORMQ_BROKER__TRANSACTION_CHECK_MAX", "2"));
        let node = combined_with(&env);
        let topic = "t62-max";
        create_topic(node.broker(), topic, 1).await;
        wait_route(node.namesrv(), topic, "broker-a", node.broker(), 1).await;
        let l = Listener::default();
        let p = tx_producer(node.namesrv(), "t62-g6", "a", &l).await;
        let r = p
            .send_in_transaction(Message::new(topic, "undecided"))
            .await
            .expect("transactional send");
        let ops = decisions(node.broker(), 1).await;
        assert_eq!(ops, [(r.transaction_id.clone(), "rollback".to_string())]);
        assert_eq!(
            l.0.checks.load(Ordering::SeqCst),
            2,
            "checked twice, then rolled back"
        );
        let mut c = connect(node.broker()).await;
        assert_eq!(max_offset(&mut c, topic, 0).await, 0, "never delivered");
        // The producer's late commit is refused.
        let id = actormq_protocol::MessageId::decode(&r.send.msg_id).unwrap();
        let reply = c
            .call(
                &EndTransactionRequest {
                    producer_group: "t62-g6".into(),
                    tran_state_table_offset: r.send.queue_offset,
                    commit_log_offset: id.commit_log_offset,
                    decision: TransactionDecision::Commit,
                    from_transaction_check: false,
                    msg_id: r.send.msg_id.clone(),
                    transaction_id: Some(r.transaction_id.clone()),
                },
                Bytes::new(),
            )
            .await
            .expect("END_TRANSACTION");
        assert_eq!(reply.code, ResponseCode::TransactionFailed);
        let remark = reply.remark.unwrap_or_default();
        assert!(remark.contains("rolled back"), "{remark:?}");
        p.shutdown().await;
    })
    .await;
}
