//! Delivery at a time through the production wiring: a message due
//! beyond the timer wheel's window is rolled (parked again) until its
//! second comes, delivered once and not early; a timer service that
//! panics while a message is parked is restarted from its durable state
//! and still delivers it once.

use std::time::{Duration, Instant};

use actormq_actors::broker::timer_service::{GetTimerStatus, TimerService};
use actormq_actors::runtime::guard::InjectPanic;
use actormq_protocol::{Delay, Message, ResponseCode};

use crate::t40_send_pull::{Node, Opts, now_ms};

const TOPIC: &str = "timed";

async fn timer_addr(node: &Node) -> actix::Addr<TimerService> {
    let start = Instant::now();
    loop {
        if let Some(a) = node.actors.timer.addr() {
            return a;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timer service not up"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

fn timed(body: &str, at_ms: u64) -> Message {
    let mut m = Message::new(TOPIC, body.to_owned());
    m.delay = Delay::DeliverAtMs(at_ms);
    m
}

#[actix_rt::test]
async fn a_message_beyond_the_window_is_rolled_then_delivered_once_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        Opts {
            timer_slots: Some(3),
            ..Opts::default()
        },
    )
    .await;
    // The topic exists (one plain message), then a timed one 5 s ahead:
    // more than the 3-second window, so it is rolled on the way.
    node.send(0, &Message::new(TOPIC, "first")).await.unwrap();
    let due = now_ms() + 5_000;
    let r = node.send(0, &timed("later", due)).await.unwrap();
    assert_eq!(r.code, ResponseCode::Success);
    assert_eq!(r.fields.queue_id, 0);
    // Not in the topic yet: its queue holds only the first message.
    assert_eq!(node.store.max_offset(TOPIC, 0), 1);
    let got = node.pull_n(TOPIC, 0, 1, 1).await;
    let arrived = now_ms();
    assert!(arrived >= due, "delivered {} ms early", due - arrived);
    assert!(arrived < due + 1_500, "delivered {} ms late", arrived - due);
    assert_eq!(&got[0].message.body[..], b"later");
    assert_eq!(got[0].message.topic, TOPIC);
    assert!(
        !got[0].message.properties.contains_key("REAL_TOPIC"),
        "{:?}",
        got[0].message.properties
    );
    let status = timer_addr(&node).await.send(GetTimerStatus).await.unwrap();
    assert!(status.rolled >= 1, "{status:?}");
    assert_eq!(status.wheel_bytes, 3 * 8);
    // Once: nothing else arrives in the topic.
    assert_eq!(node.store.max_offset(TOPIC, 0), 2);
    node.stop().await;
}

#[actix_rt::test]
async fn a_timer_service_panic_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    node.send(0, &Message::new(TOPIC, "first")).await.unwrap();
    let due = now_ms() + 2_500;
    node.send(0, &timed("parked", due)).await.unwrap();
    // Wait until the service has read it into the wheel, then break it.
    let timer = timer_addr(&node).await;
    let start = Instant::now();
    while timer.send(GetTimerStatus).await.unwrap().state.read_offset == 0 {
        assert!(start.elapsed() < Duration::from_secs(5));
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = timer
        .send(InjectPanic("timer broke (expected in this test)".into()))
        .await;
    let got = node.pull_n(TOPIC, 0, 1, 1).await;
    assert!(now_ms() >= due);
    assert_eq!(&got[0].message.body[..], b"parked");
    // Once: when its second counts as fired, the topic holds one copy.
    let timer = timer_addr(&node).await;
    let start = Instant::now();
    while timer.send(GetTimerStatus).await.unwrap().state.fired_sec < due / 1000 {
        assert!(start.elapsed() < Duration::from_secs(5));
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.store.max_offset(TOPIC, 0), 2);
    node.stop().await;
}
