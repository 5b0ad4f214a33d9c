//! Split deployment: `actormq-namesrv` and `actormq-broker` as separate
//! processes; the broker registers through the remote proxy.

use std::time::Duration;

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
        wait_broker_listed(ns.namesrv(), "t20-cluster", "t20-b1", br.broker()).await;
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
        wait_broker_listed(ns.namesrv(), "t20-cluster", "t20-b2", br.broker()).await;
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
        for ns in [a1, a2] {
            wait_broker_listed(ns, "t20-cluster", "t20-b3", addr).await;
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
        wait_broker_listed(ns.namesrv(), "t20-cluster", "t20-b4", first).await;
        create_topic(first, "t20-kept", 3).await;
        wait_route(ns.namesrv(), "t20-kept", "t20-b4", first, 3).await;

        br.terminate().expect("broker SIGTERM exits 0");
        br.restart().expect("broker restart");
        let second = br.broker();
        // Fresh ephemeral port; the persisted topic is registered again,
        // now at the new address.
        wait_broker_listed(ns.namesrv(), "t20-cluster", "t20-b4", second).await;
        wait_route(ns.namesrv(), "t20-kept", "t20-b4", second, 3).await;
    })
    .await;
}

#[tokio::test]
async fn t20_combined_node_also_registers_with_extra_namesrvs() {
    bounded(async {
        let extra = namesrv();
        let node = NodeProcess::combined(&["--namesrv", &extra.namesrv().to_string()])
            .expect("start combined node");
        // Its own name server and the extra one both know the broker.
        for ns in [node.namesrv(), extra.namesrv()] {
            wait_broker_listed(ns, "DefaultCluster", "broker-a", node.broker()).await;
        }
        create_topic(node.broker(), "t20-both", 2).await;
        for ns in [node.namesrv(), extra.namesrv()] {
            wait_route(ns, "t20-both", "broker-a", node.broker(), 2).await;
        }
    })
    .await;
}
