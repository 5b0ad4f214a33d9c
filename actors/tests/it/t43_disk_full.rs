//! A full disk through the real send path: producers get
//! SERVICE_NOT_AVAILABLE "disk full", pulls go on, and the dispatcher
//! survives a consume-queue file it cannot create, catching up once there
//! is space. The full disk is the store's reservation fault hook (the
//! real-tmpfs case is in the store's tests).

use actormq_actors::broker::dispatcher::GetDispatchStats;
use actormq_protocol::{Message, ResponseCode};
use actormq_store::disk::fail_reservations_under;
use bytes::Bytes;

use crate::t40_send_pull::{Node, Opts};

#[actix_rt::test]
async fn full_disk_answers_disk_full_and_reads_and_dispatch_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        Opts {
            segment_size: 64 * 1024,
            ..Opts::default()
        },
    )
    .await;
    node.create_topic("df", 1).await;
    let body = Bytes::from(vec![5u8; 4000]);
    let first = node
        .send(0, &Message::new("df", body.clone()))
        .await
        .unwrap();
    assert_eq!(first.fields.queue_offset, 0);
    // Its consume-queue file exists before the disk fills.
    node.pull_n("df", 0, 0, 1).await;

    let fault = fail_reservations_under(&dir.path().join("store"));
    let mut acked = 1u64;
    let err = loop {
        match node.send(0, &Message::new("df", body.clone())).await {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 100, "sends never failed");
    };
    assert_eq!(err.code, ResponseCode::ServiceNotAvailable, "{err:?}");
    assert!(err.remark.contains("disk full"), "{}", err.remark);

    // Reads of what was stored go on.
    let got = node.pull_n("df", 0, 0, acked as usize).await;
    assert_eq!(got.len() as u64, acked);

    // A small message still fits the active segment, but its new queue
    // needs a consume-queue file the full disk refuses: the dispatcher
    // keeps running and catches up once space is back.
    node.send(0, &Message::new("df-new", Bytes::from_static(b"x")))
        .await
        .unwrap();
    // Bounded wait for a failed round (the tick runs every 100 ms).
    let mut polls = 0;
    loop {
        let stats = node.dispatcher.send(GetDispatchStats).await;
        let stats = stats.expect("the dispatcher must survive a full disk");
        if stats.disk_full_rounds > 0 {
            break;
        }
        polls += 1;
        assert!(polls < 500, "no dispatch round hit the full disk");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Still alive after failing (a stopped actor would not answer).
    node.dispatcher.send(GetDispatchStats).await.unwrap();
    drop(fault);
    let got = node.pull_n("df-new", 0, 0, 1).await;
    assert_eq!(&got[0].message.body[..], b"x");
    let r = node
        .send(0, &Message::new("df", body.clone()))
        .await
        .unwrap();
    assert_eq!(r.fields.queue_offset, acked);
    assert!(node.dispatcher.connected());
    node.stop().await;
}
