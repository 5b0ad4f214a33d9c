//! A combined node (`actormq-node`, name server + broker in one process).

use std::time::Duration;

use actormq_protocol::request::{
    ConsumerData, DeleteTopicInBrokerRequest, GetAllTopicConfigRequest,
    GetAllTopicListFromNamesrvRequest, GetConsumerListByGroupRequest, HeartbeatRequest,
    QueryConsumerOffsetRequest, SubscriptionData, UpdateConsumerOffsetRequest,
};
use actormq_protocol::{Bytes, ResponseCode};
use actormq_tests::client::Client;
use actormq_tests::eventually;

use crate::common::*;

async fn topic_configs(c: &mut Client) -> Vec<String> {
    c.call(&GetAllTopicConfigRequest {}, Bytes::new())
        .await
        .expect("GET_ALL_TOPIC_CONFIG")
        .ok()
        .expect("GET_ALL_TOPIC_CONFIG succeeds")
        .topic_config_table
        .into_keys()
        .collect()
}

#[tokio::test]
async fn t10_route_cluster_info_and_topic_round_trip() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, br) = (node.namesrv(), node.broker());
        assert_ne!(ns, br);

        // The broker registered with its own name server before the node
        // printed its ready line.
        assert_broker_listed(ns, "DefaultCluster", "broker-a", br).await;

        // Create: visible on the broker and, through registration, in the
        // route and topic list of the name server.
        create_topic(br, "t10-orders", 6).await;
        let mut b = connect(br).await;
        let topics = topic_configs(&mut b).await;
        assert!(topics.contains(&"t10-orders".to_string()), "{topics:?}");
        let r = wait_route(ns, "t10-orders", "broker-a", br, 6).await;
        assert_eq!(r.queue_datas.len(), 1, "{r:?}");
        let mut n = connect(ns).await;
        let list = n
            .call(&GetAllTopicListFromNamesrvRequest {}, Bytes::new())
            .await
            .unwrap()
            .ok()
            .unwrap();
        assert!(list.topics.contains(&"t10-orders".to_string()), "{list:?}");

        // Update: same create with another queue count.
        create_topic(br, "t10-orders", 3).await;
        wait_route(ns, "t10-orders", "broker-a", br, 3).await;

        // Unknown topic.
        assert_eq!(route(ns, "t10-never-created").await.unwrap(), None);

        // Delete: gone from the broker, then from the route.
        b.call(
            &DeleteTopicInBrokerRequest {
                topic: "t10-orders".into(),
            },
            Bytes::new(),
        )
        .await
        .unwrap()
        .ok()
        .expect("delete topic");
        let topics = topic_configs(&mut b).await;
        assert!(!topics.contains(&"t10-orders".to_string()), "{topics:?}");
        wait_no_route(ns, "t10-orders").await;
    })
    .await;
}

#[tokio::test]
async fn t10_consumer_offsets_survive_sigterm_restart() {
    bounded(async {
        let mut node = combined(NO_ARGS);
        create_topic(node.broker(), "t10-offsets", 4).await;
        let mut b = connect(node.broker()).await;
        // Commits must lie within each queue: four messages per queue.
        for q in 0..4u32 {
            for i in 0..4 {
                b.call(
                    &send_request("t10-offsets", q, "o", &format!("k{q}-{i}")),
                    Bytes::from_static(b"offsets"),
                )
                .await
                .unwrap()
                .ok()
                .expect("send");
            }
            wait_max_offset(&mut b, "t10-offsets", q, 4).await;
        }
        for q in 0..4u32 {
            b.call(
                &UpdateConsumerOffsetRequest {
                    consumer_group: "t10-group".into(),
                    topic: "t10-offsets".into(),
                    queue_id: q,
                    commit_offset: 1 + u64::from(q),
                },
                Bytes::new(),
            )
            .await
            .unwrap()
            .ok()
            .expect("update offset");
        }
        // Overwrite one: the last commit wins.
        b.call(
            &UpdateConsumerOffsetRequest {
                consumer_group: "t10-group".into(),
                topic: "t10-offsets".into(),
                queue_id: 0,
                commit_offset: 4,
            },
            Bytes::new(),
        )
        .await
        .unwrap()
        .ok()
        .expect("update offset");
        let expected = |q: u32| if q == 0 { 4 } else { 1 + u64::from(q) };

        async fn query(c: &mut Client, group: &str, q: u32) -> (ResponseCode, Option<u64>) {
            let r = c
                .call(
                    &QueryConsumerOffsetRequest {
                        consumer_group: group.into(),
                        topic: "t10-offsets".into(),
                        queue_id: q,
                    },
                    Bytes::new(),
                )
                .await
                .expect("QUERY_CONSUMER_OFFSET");
            (r.code, r.fields.map(|f| f.offset))
        }
        for q in 0..4 {
            assert_eq!(
                query(&mut b, "t10-group", q).await,
                (ResponseCode::Success, Some(expected(q)))
            );
        }
        let (code, _) = query(&mut b, "t10-nobody", 0).await;
        assert_eq!(code, ResponseCode::QueryNotFound);
        drop(b);

        node.terminate().expect("SIGTERM exits 0");
        node.restart().expect("restart on the same data dir");

        let mut b = connect(node.broker()).await;
        for q in 0..4 {
            assert_eq!(
                query(&mut b, "t10-group", q).await,
                (ResponseCode::Success, Some(expected(q))),
                "queue {q} after restart"
            );
        }
        // The topic came back too, and the new name server learns it.
        let topics = topic_configs(&mut b).await;
        assert!(topics.contains(&"t10-offsets".to_string()), "{topics:?}");
        wait_route(node.namesrv(), "t10-offsets", "broker-a", node.broker(), 4).await;
        node.terminate().expect("second SIGTERM exits 0");
    })
    .await;
}

async fn consumer_list(
    c: &mut Client,
) -> Result<
    actormq_tests::client::Reply<actormq_protocol::request::GetConsumerListByGroupResponse>,
    String,
> {
    c.call(
        &GetConsumerListByGroupRequest {
            consumer_group: "t10-hb".into(),
        },
        Bytes::new(),
    )
    .await
    .map_err(|e| e.to_string())
}

#[tokio::test]
async fn t10_heartbeat_and_consumer_list() {
    bounded(async {
        let node = combined(NO_ARGS);
        let br = node.broker();
        let heartbeat = |client_id: &str| HeartbeatRequest {
            client_id: client_id.into(),
            producer_data_set: vec![],
            consumer_data_set: vec![ConsumerData {
                group_name: "t10-hb".into(),
                subscription_data_set: vec![SubscriptionData {
                    topic: "t10-hb-topic".into(),
                    sub_string: "*".into(),
                    expression_type: "TAG".into(),
                    ..SubscriptionData::default()
                }],
                ..ConsumerData::default()
            }],
            ..Default::default()
        };
        let mut c1 = connect(br).await;
        let mut c2 = connect(br).await;
        // A group nobody joined: an empty member list, not an error.
        let none = consumer_list(&mut c1).await.unwrap();
        assert_eq!(none.code, ResponseCode::Success, "{none:?}");
        assert!(none.ok().expect("empty list").consumer_ids.is_empty());
        c1.call(&heartbeat("10.0.0.1@1"), Bytes::new())
            .await
            .unwrap()
            .ok()
            .expect("heartbeat 1");
        c2.call(&heartbeat("10.0.0.2@1"), Bytes::new())
            .await
            .unwrap()
            .ok()
            .expect("heartbeat 2");
        let ids = consumer_list(&mut c1)
            .await
            .unwrap()
            .ok()
            .expect("consumer list");
        assert_eq!(ids.consumer_ids, ["10.0.0.1@1", "10.0.0.2@1"]);

        // A member whose connection closes leaves the group.
        drop(c2);
        eventually(Duration::from_secs(10), || async {
            let mut c = Client::connect(br).await.map_err(|e| e.to_string())?;
            let ids = consumer_list(&mut c)
                .await?
                .ok()
                .map_err(|e| e.to_string())?
                .consumer_ids;
            if ids == ["10.0.0.1@1"] {
                Ok(())
            } else {
                Err(format!("{ids:?}"))
            }
        })
        .await
        .expect("closed member dropped");
    })
    .await;
}
