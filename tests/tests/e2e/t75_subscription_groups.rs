//! Subscription groups end to end on real node processes: `actormq admin
//! group create | list | delete`, the configs surviving a node restart,
//! and a consumer's first heartbeat creating its group (the default) or
//! being refused (`broker.auto_create_subscription_group = false`).

use std::net::SocketAddr;

use actormq_protocol::Bytes;
use actormq_protocol::ResponseCode;
use actormq_protocol::request::{
    ConsumerData, HeartbeatRequest, HeartbeatResponse, SubscriptionGroupConfig,
};
use actormq_sdk::consumer::{ConsumeResult, PushConsumerBuilder};
use actormq_tests::node::{Bin, NodeProcess};

use crate::common::{
    NO_ARGS, actormq, bounded, combined, connect, create_topic, json_lines, wait_route,
};

/// `group list --json`: `(group, orderly, retry_max)` per line.
fn listed(namesrv: SocketAddr) -> Vec<(String, bool, u64)> {
    json_lines(&actormq(namesrv, &["admin", "group", "list", "--json"]))
        .iter()
        .map(|v| {
            assert_eq!(v["broker"], "broker-a", "{v}");
            (
                v["group"].as_str().expect("group").to_owned(),
                v["orderly"].as_bool().expect("orderly"),
                v["retry_max"].as_u64().expect("retry_max"),
            )
        })
        .collect()
}

fn heartbeat(group: &str) -> HeartbeatRequest {
    HeartbeatRequest {
        client_id: "127.0.0.1@t75".into(),
        producer_data_set: vec![],
        consumer_data_set: vec![ConsumerData {
            group_name: group.into(),
            ..ConsumerData::default()
        }],
        ..Default::default()
    }
}

#[actix_rt::test]
async fn t75_cli_create_list_delete_and_restart() {
    bounded(async {
        let mut node = combined(NO_ARGS);
        let ns = node.namesrv();
        assert!(listed(ns).is_empty(), "no group before any consumer");

        let created = json_lines(&actormq(
            ns,
            &["admin", "group", "create", "-g", "g1", "--json"],
        ));
        assert_eq!(created.len(), 1, "one line per broker: {created:?}");
        assert_eq!(created[0]["created"], true);
        assert_eq!(created[0]["orderly"], false);
        json_lines(&actormq(
            ns,
            &["admin", "group", "create", "-g", "g2", "--json"],
        ));
        assert_eq!(
            listed(ns),
            vec![("g1".into(), false, 16), ("g2".into(), false, 16)]
        );

        assert_eq!(
            listed(ns),
            vec![("g1".into(), false, 16), ("g2".into(), false, 16)]
        );
        let text = actormq(ns, &["admin", "group", "list"]);
        assert!(text.status.success());
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.lines()
                .next()
                .unwrap()
                .starts_with("g1\tbroker-a\torderly=false"),
            "{text}"
        );

        let deleted = json_lines(&actormq(
            ns,
            &["admin", "group", "delete", "-g", "g2", "--json"],
        ));
        assert_eq!(deleted.len(), 1);
        assert_eq!(deleted[0]["deleted"], true);
        let again = actormq(ns, &["admin", "group", "delete", "-g", "g2"]);
        assert!(!again.status.success(), "deleting an unknown group fails");
        let err = String::from_utf8_lossy(&again.stderr).into_owned();
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains("g2") && err.contains("does not exist"),
            "{err}"
        );
        assert!(again.stdout.is_empty());

        let bad = actormq(ns, &["admin", "group", "create", "-g", "bad group"]);
        assert!(!bad.status.success(), "an invalid name is refused");

        // Orderly groups are accepted and listed as such.
        let created = json_lines(&actormq(
            ns,
            &[
                "admin",
                "group",
                "create",
                "-g",
                "g3",
                "--orderly",
                "--json",
            ],
        ));
        assert_eq!(created[0]["orderly"], true);
        assert_eq!(
            listed(ns),
            vec![("g1".into(), false, 16), ("g3".into(), true, 16)]
        );
        let text = actormq(ns, &["admin", "group", "list"]);
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        assert!(
            text.lines()
                .any(|l| l.starts_with("g3\tbroker-a\torderly=true")),
            "{text}"
        );

        // The configs survive a restart (clean stop, then kill -9).
        node.terminate().expect("stop the node");
        node.restart().expect("restart the node");
        let kept = vec![("g1".into(), false, 16), ("g3".into(), true, 16)];
        assert_eq!(listed(node.namesrv()), kept);
        node.kill().expect("kill the node");
        node.restart().expect("restart the node");
        assert_eq!(listed(node.namesrv()), kept);
    })
    .await;
}

#[actix_rt::test]
async fn t75_first_heartbeat_creates_the_group_by_default() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let mut c = connect(broker).await;
        let reply = c
            .call(&heartbeat("auto-g"), Bytes::new())
            .await
            .expect("heartbeat call")
            .ok()
            .expect("heartbeat accepted");
        let cfgs = reply.subscription_groups;
        assert_eq!(cfgs.len(), 1);
        assert_eq!(cfgs[0].group_name, "auto-g");
        assert_eq!(cfgs[0].retry_max_times, 16);
        assert!(!cfgs[0].consume_message_orderly);
        assert!(cfgs[0].consume_broadcast_enable && cfgs[0].consume_enable);
        assert_eq!(listed(ns), vec![("auto-g".into(), false, 16)]);

        // A push consumer sees the config of a group an admin created.
        json_lines(&actormq(
            ns,
            &["admin", "group", "create", "-g", "sdk-g", "--json"],
        ));
        let topic = "t75-sdk";
        create_topic(broker, topic, 1).await;
        wait_route(ns, topic, "broker-a", broker, 1).await;
        let consumer = PushConsumerBuilder::new("sdk-g")
            .namesrv(&ns.to_string())
            .subscribe(topic, "*")
            .listener(|_| ConsumeResult::Success)
            .start()
            .await
            .expect("start push consumer");
        let cfg = consumer
            .group_config()
            .expect("the heartbeat reply carried it");
        assert_eq!(cfg, SubscriptionGroupConfig::new("sdk-g"));
        consumer.shutdown().await;
    })
    .await;
}

#[actix_rt::test]
async fn t75_without_auto_create_an_unknown_group_is_refused() {
    bounded(async {
        let node = NodeProcess::start_with_env(
            Bin::Node,
            NO_ARGS,
            &[("ACTORMQ_BROKER__AUTO_CREATE_SUBSCRIPTION_GROUP", "false")],
        )
        .expect("start a combined node");
        let (ns, broker) = (node.namesrv(), node.broker());
        let mut c = connect(broker).await;
        let reply = c
            .call(&heartbeat("unknown-g"), Bytes::new())
            .await
            .expect("heartbeat call");
        assert_eq!(reply.code, ResponseCode::SubscriptionGroupNotExist);
        let remark = reply.remark.unwrap_or_default();
        assert!(remark.contains("unknown-g"), "{remark}");
        assert!(listed(ns).is_empty(), "nothing was created");

        // The CLI consumer fails with that one line instead of idling.
        let topic = "t75-off";
        create_topic(broker, topic, 1).await;
        wait_route(ns, topic, "broker-a", broker, 1).await;
        let out = actormq(
            ns,
            &[
                "consume",
                "-t",
                topic,
                "-g",
                "unknown-g",
                "--idle-exit-ms",
                "200",
            ],
        );
        assert!(!out.status.success(), "a refused consumer exits non-zero");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            err.contains("unknown-g") && err.contains("does not exist"),
            "{err}"
        );

        // Once an admin created it, the heartbeat is served with its config.
        json_lines(&actormq(
            ns,
            &["admin", "group", "create", "-g", "unknown-g", "--json"],
        ));
        let reply: HeartbeatResponse = c
            .call(&heartbeat("unknown-g"), Bytes::new())
            .await
            .expect("heartbeat call")
            .ok()
            .expect("heartbeat accepted");
        assert_eq!(reply.subscription_groups[0].group_name, "unknown-g");
    })
    .await;
}
