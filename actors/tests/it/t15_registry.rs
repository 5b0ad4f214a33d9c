//! The name server's Registry actor, driven through `Recipient<Call<_>>`
//! exactly as a broker's registrar drives it.

use std::sync::atomic::{AtomicU64, Ordering};

use actix::prelude::*;
use actormq_actors::namesrv::{Registry, RegistryConfig, ScanInactiveBrokers};
use actormq_actors::runtime::net::ConnectionClosed;
use actormq_actors::runtime::{Call, Origin};
use actormq_protocol::ResponseCode;
use actormq_protocol::request::{
    GetBrokerClusterInfoRequest, GetRouteInfoByTopicRequest, Perm, RegisterBrokerRequest,
    TopicConfig,
};
use slog::{Logger, o};

static NOW_MS: AtomicU64 = AtomicU64::new(1_000);

fn clock() -> u64 {
    NOW_MS.load(Ordering::SeqCst)
}

fn registration(name: &str, addr: &str) -> RegisterBrokerRequest {
    RegisterBrokerRequest {
        cluster_name: "DefaultCluster".into(),
        broker_name: name.into(),
        broker_addr: addr.into(),
        broker_id: 0,
        ha_server_addr: String::new(),
        topic_configs: vec![TopicConfig {
            topic_name: "orders".into(),
            read_queue_nums: 4,
            write_queue_nums: 4,
            perm: Perm::READ_WRITE,
            ..TopicConfig::default()
        }],
        data_version: 1,
        heartbeat_timeout_ms: 0,
    }
}

#[actix_rt::test]
async fn registry_serves_routes_and_drops_silent_or_disconnected_brokers() {
    let log = Logger::root(slog::Discard, o!());
    let registry = Registry::with_clock(RegistryConfig::default(), &log, clock).start();
    let register: Recipient<Call<RegisterBrokerRequest>> = registry.clone().recipient();
    let route: Recipient<Call<GetRouteInfoByTopicRequest>> = registry.clone().recipient();

    let missing = route.send(Call::new(GetRouteInfoByTopicRequest {
        topic: "orders".into(),
    }));
    assert_eq!(
        missing.await.unwrap().unwrap_err().code,
        ResponseCode::TopicNotExist
    );

    register
        .send(Call::new(registration("a", "127.0.0.1:1")))
        .await
        .unwrap()
        .unwrap();
    let over_conn = Call::new(registration("b", "127.0.0.1:2")).with_origin(Origin {
        conn_id: 42,
        peer: "127.0.0.1:50000".parse().unwrap(),
    });
    register.send(over_conn).await.unwrap().unwrap();

    let got = route
        .send(Call::new(GetRouteInfoByTopicRequest {
            topic: "orders".into(),
        }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.code, ResponseCode::Success);
    assert_eq!(got.fields.broker_datas.len(), 2);

    // The connection broker b registered on closes: b leaves at once.
    registry
        .send(ConnectionClosed {
            conn_id: 42,
            peer: "127.0.0.1:50000".parse().unwrap(),
        })
        .await
        .unwrap();
    let info = registry
        .send(Call::new(GetBrokerClusterInfoRequest {}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.fields.cluster_addr_table["DefaultCluster"], vec!["a"]);

    // 120 s of silence is tolerated, a moment more is not.
    NOW_MS.fetch_add(120_000, Ordering::SeqCst);
    assert_eq!(registry.send(ScanInactiveBrokers).await.unwrap(), 0);
    NOW_MS.fetch_add(1, Ordering::SeqCst);
    assert_eq!(registry.send(ScanInactiveBrokers).await.unwrap(), 1);
    let gone = route.send(Call::new(GetRouteInfoByTopicRequest {
        topic: "orders".into(),
    }));
    assert_eq!(
        gone.await.unwrap().unwrap_err().code,
        ResponseCode::TopicNotExist
    );

    // Bad input gets a response code, not a crash.
    let mut bad = registration("", "");
    bad.cluster_name.clear();
    let err = register.send(Call::new(bad)).await.unwrap().unwrap_err();
    assert_eq!(err.code, ResponseCode::InvalidParameter);
}
