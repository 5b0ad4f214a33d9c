//! Subscription group manager: changes are persisted and a fresh
//! incarnation (what the supervisor's factory builds) reloads them; a torn
//! file falls back to its backup or fails with one line naming it; a
//! heartbeat through the group manager creates an unknown group or is
//! refused, and its reply carries the group's config.

use actix::prelude::*;
use actormq_actors::broker::persist::backup_path;
use actormq_actors::broker::{
    GroupManager, GroupManagerConfig, SubscriptionGroupManager, SubscriptionGroupManagerConfig,
};
use actormq_actors::runtime::Call;
use actormq_protocol::ResponseCode;
use actormq_protocol::request::{
    ConsumerData, CreateSubscriptionGroupRequest, DeleteSubscriptionGroupRequest,
    GetAllSubscriptionGroupRequest, GetConsumerListByGroupRequest, HeartbeatRequest,
    SubscriptionGroupConfig,
};
use slog::{Logger, o};

fn log() -> Logger {
    Logger::root(slog::Discard, o!())
}

fn config(dir: &std::path::Path, auto_create: bool) -> SubscriptionGroupManagerConfig {
    SubscriptionGroupManagerConfig {
        path: dir.join("config/subscription_groups.msgpack"),
        auto_create,
        default_retry_max: 16,
    }
}

fn create(cfg: SubscriptionGroupConfig) -> Call<CreateSubscriptionGroupRequest> {
    Call::new(CreateSubscriptionGroupRequest { config: cfg })
}

async fn names(sgm: &Addr<SubscriptionGroupManager>) -> Vec<String> {
    let all = sgm
        .send(Call::new(GetAllSubscriptionGroupRequest {}))
        .await
        .unwrap()
        .unwrap();
    all.fields
        .subscription_group_table
        .keys()
        .cloned()
        .collect()
}

fn heartbeat(client: &str, group: &str) -> Call<HeartbeatRequest> {
    Call::new(HeartbeatRequest {
        client_id: client.into(),
        producer_data_set: vec![],
        consumer_data_set: vec![ConsumerData {
            group_name: group.into(),
            ..ConsumerData::default()
        }],
        ..Default::default()
    })
}

#[actix_rt::test]
async fn groups_survive_a_restart_and_values_not_built_yet_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), true);
    let sgm = SubscriptionGroupManager::load(cfg.clone(), &log())
        .unwrap()
        .start();
    let switched_off = SubscriptionGroupConfig {
        consume_enable: false,
        ..SubscriptionGroupConfig::new("orders")
    };
    sgm.send(create(SubscriptionGroupConfig::new("orders")))
        .await
        .unwrap()
        .unwrap();
    // Switching a group off does not exist yet: refused, and the group
    // keeps its config.
    let refused = sgm
        .send(create(switched_off.clone()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.code, ResponseCode::InvalidParameter);
    assert!(
        refused.remark.contains("not available yet"),
        "{}",
        refused.remark
    );
    sgm.send(create(SubscriptionGroupConfig::new("gone")))
        .await
        .unwrap()
        .unwrap();
    sgm.send(Call::new(DeleteSubscriptionGroupRequest {
        group_name: "gone".into(),
    }))
    .await
    .unwrap()
    .unwrap();
    let unknown = sgm
        .send(Call::new(DeleteSubscriptionGroupRequest {
            group_name: "gone".into(),
        }))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(unknown.code, ResponseCode::SubscriptionGroupNotExist);
    assert!(unknown.remark.contains("gone"), "{}", unknown.remark);
    let bad = sgm
        .send(create(SubscriptionGroupConfig::new("bad group")))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(bad.code, ResponseCode::InvalidParameter);

    // A new incarnation reads what the acknowledged changes wrote.
    let sgm2 = SubscriptionGroupManager::load(cfg, &log()).unwrap().start();
    let all = sgm2
        .send(Call::new(GetAllSubscriptionGroupRequest {}))
        .await
        .unwrap()
        .unwrap()
        .fields;
    assert_eq!(
        all.subscription_group_table.into_iter().collect::<Vec<_>>(),
        vec![("orders".to_string(), SubscriptionGroupConfig::new("orders"))]
    );
    assert_eq!(all.data_version, 3, "create, create, delete");
}

/// A garbage file with a good backup: the manager starts with the
/// backup's state; without a backup, loading fails with one line naming
/// the file.
#[actix_rt::test]
async fn a_torn_groups_file_falls_back_to_the_last_good_copy() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), false);
    let sgm = SubscriptionGroupManager::load(cfg.clone(), &log())
        .unwrap()
        .start();
    for g in ["first", "second"] {
        sgm.send(create(SubscriptionGroupConfig::new(g)))
            .await
            .unwrap()
            .unwrap();
    }
    // Torn: the first bytes of the real file; the backup holds the state
    // before the last write.
    let good = std::fs::read(&cfg.path).unwrap();
    std::fs::write(&cfg.path, &good[..good.len() / 2]).unwrap();

    let sgm2 = SubscriptionGroupManager::load(cfg.clone(), &log())
        .unwrap()
        .start();
    assert_eq!(names(&sgm2).await, vec!["first"]);

    std::fs::remove_file(backup_path(&cfg.path)).unwrap();
    let err = SubscriptionGroupManager::load(cfg.clone(), &log())
        .err()
        .expect("a torn file without a backup fails");
    let text = err.to_string();
    assert!(text.contains("subscription_groups.msgpack"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
}

async fn members(gm: &Addr<GroupManager>, group: &str) -> Vec<String> {
    gm.send(Call::new(GetConsumerListByGroupRequest {
        consumer_group: group.into(),
    }))
    .await
    .unwrap()
    .unwrap()
    .fields
    .consumer_ids
}

#[actix_rt::test]
async fn a_heartbeat_creates_its_group_or_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Auto-creation on: the unknown group is created with defaults, the
    // reply carries its config, and the creation is persisted.
    let on = config(&dir.path().join("on"), true);
    let sgm = SubscriptionGroupManager::load(on.clone(), &log())
        .unwrap()
        .start();
    let gm = GroupManager::new(GroupManagerConfig::default(), &log())
        .with_subscription_groups(sgm.clone().recipient())
        .start();
    let reply = gm
        .send(heartbeat("c1", "fresh"))
        .await
        .unwrap()
        .unwrap()
        .fields;
    assert_eq!(
        reply.subscription_groups,
        vec![SubscriptionGroupConfig::new("fresh")]
    );
    assert_eq!(members(&gm, "fresh").await, vec!["c1"]);
    let reloaded = SubscriptionGroupManager::load(on, &log()).unwrap().start();
    assert_eq!(names(&reloaded).await, vec!["fresh"]);

    // Off: refused with SUBSCRIPTION_GROUP_NOT_EXIST, the client is not a
    // member; once an admin creates the group, its config comes back.
    let off = config(&dir.path().join("off"), false);
    let sgm = SubscriptionGroupManager::load(off, &log()).unwrap().start();
    let gm = GroupManager::new(GroupManagerConfig::default(), &log())
        .with_subscription_groups(sgm.clone().recipient())
        .start();
    let err = gm
        .send(heartbeat("c1", "unknown"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code, ResponseCode::SubscriptionGroupNotExist);
    assert!(err.remark.contains("unknown"), "{}", err.remark);
    assert!(members(&gm, "unknown").await.is_empty());
    assert!(names(&sgm).await.is_empty(), "nothing created");

    // Once an admin created it, the heartbeat is served with its config.
    let created = SubscriptionGroupConfig::new("unknown");
    sgm.send(create(created.clone())).await.unwrap().unwrap();
    let reply = gm
        .send(heartbeat("c1", "unknown"))
        .await
        .unwrap()
        .unwrap()
        .fields;
    assert_eq!(reply.subscription_groups, vec![created]);
    assert_eq!(members(&gm, "unknown").await, vec!["c1"]);
}
