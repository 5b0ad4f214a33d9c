//! Long polling: a pull that finds nothing is held and answered as soon as
//! a message lands in its queue, or at its suspend timeout.

use std::time::{Duration, Instant};

use actormq_actors::broker::PullHoldConfig;
use actormq_actors::broker::pull_hold::{GetPullStats, PullStats};
use actormq_actors::runtime::Call;
use actormq_protocol::{ResponseCode, batch};

use crate::t40_send_pull::{Node, Opts, message, pull_req};

/// Waits (without sleeping as synchronisation: polling a condition) until
/// the holder's stats satisfy `f`.
async fn until(node: &Node, f: impl Fn(&PullStats) -> bool) -> PullStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = node.pull.send(GetPullStats).await.unwrap();
        if f(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "condition never held: {s:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[actix_rt::test]
async fn held_pull_is_answered_when_a_message_lands() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    node.create_topic("lp", 2).await;
    let started = Instant::now();
    let pull = actix_rt::spawn(
        node.pull
            .send(Call::new(pull_req("lp", 1, 0, 10_000, None))),
    );
    until(&node, |s| s.holding == 1).await;
    node.send(1, &message("lp", 0)).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), pull)
        .await
        .expect("the held pull was not answered")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.code, ResponseCode::Success);
    let got = batch::decode_stored(&r.body).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, message("lp", 0));
    assert_eq!(r.fields.next_begin_offset, 1);
    assert!(started.elapsed() < Duration::from_secs(5));
    let s = until(&node, |s| s.woken == 1).await;
    assert_eq!((s.held, s.holding, s.expired), (1, 0, 0));

    // A message in another queue does not wake a pull on this one.
    let pull = actix_rt::spawn(
        node.pull
            .send(Call::new(pull_req("lp", 1, 1, 10_000, None))),
    );
    until(&node, |s| s.holding == 1).await;
    node.send(0, &message("lp", 1)).await.unwrap();
    node.wait_dispatched("lp", 0, 1).await;
    node.send(1, &message("lp", 2)).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), pull)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap();
    let got = batch::decode_stored(&r.body).unwrap();
    assert_eq!(got[0].message, message("lp", 2));
    node.stop().await;
}

#[actix_rt::test]
async fn held_pull_times_out_with_pull_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    node.create_topic("lp", 1).await;
    node.send(0, &message("lp", 0)).await.unwrap();
    node.wait_dispatched("lp", 0, 1).await;
    let started = Instant::now();
    let r = node.pull("lp", 0, 1, 300, None).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(r.code, ResponseCode::PullNotFound);
    assert_eq!(r.fields.next_begin_offset, 1);
    assert_eq!(r.fields.max_offset, 1);
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    let s = node.pull.send(GetPullStats).await.unwrap();
    assert_eq!((s.expired, s.holding), (1, 0));
    node.stop().await;
}

#[actix_rt::test]
async fn long_polling_max_caps_the_hold_and_disabled_means_no_hold() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        Opts {
            pull: PullHoldConfig {
                long_polling_max: Duration::from_millis(100),
                ..PullHoldConfig::default()
            },
            ..Opts::default()
        },
    )
    .await;
    node.create_topic("lp", 1).await;
    let started = Instant::now();
    let r = node.pull("lp", 0, 0, 60_000, None).await.unwrap();
    assert_eq!(r.code, ResponseCode::PullNotFound);
    assert!(started.elapsed() < Duration::from_secs(3));
    node.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        Opts {
            pull: PullHoldConfig {
                long_polling_enabled: false,
                ..PullHoldConfig::default()
            },
            ..Opts::default()
        },
    )
    .await;
    node.create_topic("lp", 1).await;
    let r = node.pull("lp", 0, 0, 60_000, None).await.unwrap();
    assert_eq!(r.code, ResponseCode::PullNotFound);
    assert_eq!(node.pull.send(GetPullStats).await.unwrap().held, 0);
    node.stop().await;
}

#[actix_rt::test]
async fn held_pulls_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        Opts {
            pull: PullHoldConfig {
                max_held: 2,
                ..PullHoldConfig::default()
            },
            ..Opts::default()
        },
    )
    .await;
    node.create_topic("lp", 4).await;
    let a = actix_rt::spawn(
        node.pull
            .send(Call::new(pull_req("lp", 0, 0, 10_000, None))),
    );
    let b = actix_rt::spawn(
        node.pull
            .send(Call::new(pull_req("lp", 1, 0, 10_000, None))),
    );
    until(&node, |s| s.holding == 2).await;
    let e = node.pull("lp", 2, 0, 10_000, None).await.unwrap_err();
    assert_eq!(e.code, ResponseCode::PollingFull);
    // Pulls that need no hold are still served.
    let r = node.pull("lp", 2, 0, 0, None).await.unwrap();
    assert_eq!(r.code, ResponseCode::PullNotFound);
    node.send(0, &message("lp", 0)).await.unwrap();
    node.send(1, &message("lp", 1)).await.unwrap();
    for h in [a, b] {
        let r = tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(r.code, ResponseCode::Success);
    }
    assert_eq!(node.pull.send(GetPullStats).await.unwrap().polling_full, 1);
    node.stop().await;
}

#[actix_rt::test]
async fn held_pull_with_a_tag_filter_waits_for_a_matching_message() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    node.create_topic("lp", 1).await;
    let pull =
        actix_rt::spawn(
            node.pull
                .send(Call::new(pull_req("lp", 0, 0, 10_000, Some("odd")))),
        );
    until(&node, |s| s.holding == 1).await;
    // message(_, 0) is tagged "even": the pull stays held, past it.
    node.send(0, &message("lp", 0)).await.unwrap();
    node.wait_dispatched("lp", 0, 1).await;
    // Let the holder see the event (it re-holds at the advanced offset).
    let s = node.pull.send(GetPullStats).await.unwrap();
    assert_eq!(s.woken, 0);
    node.send(0, &message("lp", 1)).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), pull)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.code, ResponseCode::Success);
    let got = batch::decode_stored(&r.body).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].queue_offset, 1);
    assert_eq!(got[0].message.tags.as_deref(), Some("odd"));
    assert_eq!(r.fields.next_begin_offset, 2);
    node.stop().await;
}
