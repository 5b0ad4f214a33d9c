//! Split deployment: `actormq-namesrv` and `actormq-broker` as separate
//! processes; the broker registers through the remote proxy.

use std::time::{Duration, Instant};

use actormq_tests::eventually;
use actormq_tests::node::{Bin, NodeProcess};

use crate::common::*;

fn namesrv() -> NodeProcess {
    NodeProcess::start(Bin::Namesrv, NO_ARGS).expect("start actormq-namesrv")
}

fn broker(namesrvs: &str, name: &str) -> NodeProcess {
    NodeProcess::start(
        Bin::Broker,
        &[
            "--namesrv",
            namesrvs,
            "--broker-name",
            name,
            "--cluster",
            "t20-cluster",
        ],
    )
    .expect("start actormq-broker")
}

#[tokio::test]
async fn t20_broker_registers_with_a_remote_namesrv() {
    bounded(async {
        let ns = namesrv();
        let mut br = broker(&ns.namesrv().to_string(), "t20-b1");
        // Registered through the remote proxy before its ready line.
        assert_broker_listed(ns.namesrv(), "t20-cluster", "t20-b1", br.broker()).await;
        create_topic(br.broker(), "t20-topic", 2).await;
        wait_route(ns.namesrv(), "t20-topic", "t20-b1", br.broker(), 2).await;

        // A clean stop unregisters: the name server forgets the broker
        // and its routes.
        br.terminate().expect("broker SIGTERM exits 0");
        eventually(CONVERGE, || async {
            let info = cluster_info(ns.namesrv()).await?;
            if info.broker_addr_table.contains_key("t20-b1") {
                Err(format!("still listed: {info:?}"))
            } else {
                Ok(())
            }
        })
        .await
        .expect("stopped broker unregistered");
        wait_no_route(ns.namesrv(), "t20-topic").await;
    })
    .await;
}

#[tokio::test]
async fn t20_killed_broker_is_dropped_when_its_connection_closes() {
    bounded(async {
        let ns = namesrv();
        let mut br = broker(&ns.namesrv().to_string(), "t20-b2");
        assert_broker_listed(ns.namesrv(), "t20-cluster", "t20-b2", br.broker()).await;
        br.kill().expect("SIGKILL broker");
        // No unregister was sent; the closed connection is the signal (far
        // sooner than the 120 s silence scan).
        eventually(Duration::from_secs(10), || async {
            let info = cluster_info(ns.namesrv()).await?;
            if info.broker_addr_table.contains_key("t20-b2") {
                Err(format!("still listed: {info:?}"))
            } else {
                Ok(())
            }
        })
        .await
        .expect("killed broker dropped by its closed connection");
    })
    .await;
}

#[tokio::test]
async fn t20_two_namesrvs_one_killed() {
    bounded(async {
        let mut ns1 = namesrv();
        let ns2 = namesrv();
        let (a1, a2) = (ns1.namesrv(), ns2.namesrv());
        let br = broker(&format!("{a1},{a2}"), "t20-b3");
        let addr = br.broker();
        // Registered with both before its ready line.
        for ns in [a1, a2] {
            assert_broker_listed(ns, "t20-cluster", "t20-b3", addr).await;
        }
        create_topic(addr, "t20-before", 2).await;
        for ns in [a1, a2] {
            wait_route(ns, "t20-before", "t20-b3", addr, 2).await;
        }

        ns1.kill().expect("SIGKILL name server 1");

        // The survivor keeps the broker and its route...
        let info = cluster_info(a2).await.expect("cluster info from survivor");
        assert!(
            lists_broker(&info, "t20-cluster", "t20-b3", addr),
            "{info:?}"
        );
        wait_route(a2, "t20-before", "t20-b3", addr, 2).await;
        // ...and still hears from it: a topic created after the kill shows
        // up there, although registering with the dead one fails.
        create_topic(addr, "t20-after", 5).await;
        wait_route(a2, "t20-after", "t20-b3", addr, 5).await;
        let info = cluster_info(a2).await.expect("cluster info from survivor");
        assert!(
            lists_broker(&info, "t20-cluster", "t20-b3", addr),
            "{info:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn t20_restarted_broker_reregisters_its_new_address() {
    bounded(async {
        let ns = namesrv();
        let mut br = broker(&ns.namesrv().to_string(), "t20-b4");
        let first = br.broker();
        assert_broker_listed(ns.namesrv(), "t20-cluster", "t20-b4", first).await;
        create_topic(first, "t20-kept", 3).await;
        wait_route(ns.namesrv(), "t20-kept", "t20-b4", first, 3).await;

        br.terminate().expect("broker SIGTERM exits 0");
        br.restart().expect("broker restart");
        let second = br.broker();
        // Fresh ephemeral port; the persisted topic is registered again,
        // now at the new address, before the ready line.
        assert_broker_listed(ns.namesrv(), "t20-cluster", "t20-b4", second).await;
        assert_route(ns.namesrv(), "t20-kept", "t20-b4", second, 3).await;
    })
    .await;
}

#[tokio::test]
async fn t20_combined_node_also_registers_with_extra_namesrvs() {
    bounded(async {
        let extra = namesrv();
        let node = NodeProcess::combined(&["--namesrv", &extra.namesrv().to_string()])
            .expect("start combined node");
        // Its own name server and the extra one both knew the broker when
        // it printed its ready line.
        for ns in [node.namesrv(), extra.namesrv()] {
            assert_broker_listed(ns, "DefaultCluster", "broker-a", node.broker()).await;
        }
        create_topic(node.broker(), "t20-both", 2).await;
        for ns in [node.namesrv(), extra.namesrv()] {
            wait_route(ns, "t20-both", "broker-a", node.broker(), 2).await;
        }
    })
    .await;
}

// ------------------------------------------------ the ready line's meaning

/// How long the fake name server holds each `REGISTER_BROKER` reply.
const HOLD: Duration = Duration::from_millis(800);

/// A fake name server on `127.0.0.1:0`: it answers every request with
/// `SUCCESS`, each `REGISTER_BROKER` only after holding it for [`HOLD`],
/// and reports the instant it wrote each registration reply.
async fn slow_namesrv() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Instant>,
    tokio::task::JoinHandle<()>,
) {
    use actormq_protocol::request::{RegisterBrokerRequest, RegisterBrokerResponse, Request};
    use actormq_protocol::{Bytes, Frame, FrameCodec};
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the fake name server");
    let addr = listener.local_addr().expect("its address");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = sock.into_split();
                let mut frames = tokio_util::codec::FramedRead::new(rd, FrameCodec::new());
                while let Some(Ok(frame)) = frames.next().await {
                    if frame.is_response() || frame.is_oneway() {
                        continue;
                    }
                    let id = frame.header.request_id;
                    let register = frame.header.code == RegisterBrokerRequest::CODE.as_u32();
                    if register {
                        // The delay is what is tested: the broker must not
                        // report ready while its registration is pending.
                        tokio::time::sleep(HOLD).await;
                    }
                    let reply =
                        Frame::success(id, &RegisterBrokerResponse::default(), Bytes::new())
                            .expect("encode a reply");
                    let bytes = actormq_tests::client::encode(&reply).expect("frame bytes");
                    // Taken before the write: the broker cannot have read
                    // this reply earlier.
                    let at = Instant::now();
                    if wr.write_all(&bytes).await.is_err() {
                        return;
                    }
                    if register {
                        let _ = tx.send(at);
                    }
                }
            });
        }
    });
    (addr, rx, server)
}

#[tokio::test]
async fn t20_ready_line_follows_the_first_registration() {
    bounded(async {
        let (fake, mut replied, server) = slow_namesrv().await;
        let br = tokio::task::spawn_blocking(move || broker(&fake.to_string(), "t20-b5"))
            .await
            .expect("start thread");
        let ready = Instant::now();
        // The first registration reply was written before the ready line
        // was read: the node waited for it. A node that printed its line
        // as soon as it listened would be read about HOLD before any reply.
        let first = replied
            .try_recv()
            .expect("a registration was answered before the ready line");
        assert!(first <= ready, "reply at {first:?}, ready at {ready:?}");
        drop(br);
        server.abort();
    })
    .await;
}

#[tokio::test]
async fn t20_broker_gets_ready_when_its_namesrv_is_down() {
    bounded(async {
        // A port nobody listens on (bound, then released).
        let down = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let mut br = broker(&down.to_string(), "t20-b6");
        assert!(br.is_alive());
        // The failed first registration is logged (asynchronously).
        br.wait_log("not registered with every name server", 200, CONVERGE)
            .await;
        br.terminate().expect("clean stop");
    })
    .await;
}
