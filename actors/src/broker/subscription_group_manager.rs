//! `SubscriptionGroupManager`: the broker's consumer group configs
//! (RocketMQ's `SubscriptionGroupManager`), persisted in
//! `<data>/config/subscription_groups.msgpack`, created by admins
//! (`UPDATE_AND_CREATE_SUBSCRIPTIONGROUP`), deleted
//! (`DELETE_SUBSCRIPTIONGROUP`), listed (`GET_ALL_SUBSCRIPTIONGROUP_CONFIG`),
//! and created with defaults on a group's first heartbeat when
//! `auto_create` is on ([`ResolveGroups`], asked by the group manager).
//! With it off, a heartbeat naming an unknown group is refused with
//! `SUBSCRIPTION_GROUP_NOT_EXIST`.
//!
//! The decision logic is [`SubscriptionGroupTable`] (no actors). The actor
//! owns the table and persists every change the way the topic manager
//! does: a change is acknowledged once the file is written, and a failed
//! write stops the actor so the supervisor reloads the last good state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use actormq_protocol::ResponseCode;
use actormq_protocol::request::{
    AllSubscriptionGroupConfig, CreateSubscriptionGroupRequest, DeleteSubscriptionGroupRequest,
    Empty, GetAllSubscriptionGroupRequest, SubscriptionGroupConfig,
};
use serde::{Deserialize, Serialize};
use slog::{Logger, info, o};

use super::error_map::subscription_group_not_exist;
use super::persist;
use crate::runtime::guard::{Guarded, GuardedReply, Poison, guarded};
use crate::runtime::{Call, Reply, ServiceError};

/// Longest group name, in chars (RocketMQ: 255).
pub const MAX_GROUP_LEN: usize = 255;

/// Checks a group name: non-empty, at most 255 chars of `[%|a-zA-Z0-9_-]`
/// (RocketMQ's rule for group names).
pub fn validate_group(group: &str) -> Result<(), ServiceError> {
    let bad = |reason: &str| {
        Err(ServiceError::new(
            ResponseCode::InvalidParameter,
            format!(
                "invalid group name {:?}: {reason}",
                group.chars().take(MAX_GROUP_LEN + 1).collect::<String>()
            ),
        ))
    };
    if group.is_empty() {
        return bad("empty");
    }
    if group.len() > MAX_GROUP_LEN {
        return bad("longer than 255 chars");
    }
    if !group
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-'))
    {
        return bad("only [%|a-zA-Z0-9_-] allowed");
    }
    Ok(())
}

/// Group configs and their version (what is persisted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionGroupTable {
    groups: BTreeMap<String, SubscriptionGroupConfig>,
    data_version: u64,
}

/// A config field whose behaviour is not built yet may only hold its
/// default: nothing would act on another value (a group switched off,
/// broadcasting refused, a start position set by the broker). Each lifts
/// its refusal as its feature lands.
pub fn refuse_what_does_not_work_yet(cfg: &SubscriptionGroupConfig) -> Result<(), ServiceError> {
    let d = SubscriptionGroupConfig::new(&cfg.group_name);
    let not_yet = [
        (
            cfg.consume_enable != d.consume_enable,
            "consume enable = false (switching a group off)",
        ),
        (
            cfg.consume_broadcast_enable != d.consume_broadcast_enable,
            "broadcast enable = false (refusing broadcast consumers)",
        ),
        (
            cfg.consume_from_where != d.consume_from_where
                || cfg.consume_timestamp_ms != d.consume_timestamp_ms,
            "consume from where (a start position set by the broker; consumers set their own)",
        ),
    ];
    match not_yet.iter().find(|(set, _)| *set) {
        Some((_, what)) => Err(ServiceError::new(
            ResponseCode::InvalidParameter,
            format!(
                "subscription group {}: {what} is not available yet",
                cfg.group_name
            ),
        )),
        None => Ok(()),
    }
}

impl SubscriptionGroupTable {
    /// The config of `group`.
    pub fn get(&self, group: &str) -> Option<&SubscriptionGroupConfig> {
        self.groups.get(group)
    }

    /// Every group config.
    pub fn all(&self) -> &BTreeMap<String, SubscriptionGroupConfig> {
        &self.groups
    }

    /// Version of the table; bumps on every change.
    pub fn data_version(&self) -> u64 {
        self.data_version
    }

    /// Creates or replaces `cfg`. Returns whether the table changed.
    pub fn upsert(&mut self, cfg: SubscriptionGroupConfig) -> Result<bool, ServiceError> {
        validate_group(&cfg.group_name)?;
        if cfg.retry_policy.first_delay_level == 0 {
            return Err(ServiceError::new(
                ResponseCode::InvalidParameter,
                "retry policy: the first delay level must be at least 1",
            ));
        }
        refuse_what_does_not_work_yet(&cfg)?;
        if self.groups.get(&cfg.group_name) == Some(&cfg) {
            return Ok(false);
        }
        self.groups.insert(cfg.group_name.clone(), cfg);
        self.data_version += 1;
        Ok(true)
    }

    /// Removes `group`. Returns whether it existed.
    pub fn remove(&mut self, group: &str) -> bool {
        let existed = self.groups.remove(group).is_some();
        if existed {
            self.data_version += 1;
        }
        existed
    }

    /// The configs of `groups` (a heartbeat's consumer groups), creating
    /// the unknown ones with defaults when `auto_create` allows; otherwise
    /// an unknown group refuses the lot with `SUBSCRIPTION_GROUP_NOT_EXIST`.
    /// `Ok((configs in the order asked, names created))`.
    pub fn resolve(
        &mut self,
        groups: &[String],
        auto_create: bool,
        retry_max: u32,
    ) -> Result<(Vec<SubscriptionGroupConfig>, Vec<String>), ServiceError> {
        for g in groups {
            validate_group(g)?;
            if !auto_create && !self.groups.contains_key(g) {
                return Err(subscription_group_not_exist(g));
            }
        }
        let mut created = Vec::new();
        let mut configs = Vec::with_capacity(groups.len());
        for g in groups {
            let cfg = match self.groups.get(g) {
                Some(cfg) => cfg.clone(),
                None => {
                    let mut cfg = SubscriptionGroupConfig::new(g);
                    cfg.retry_max_times = retry_max;
                    self.upsert(cfg.clone())?;
                    created.push(g.clone());
                    cfg
                }
            };
            configs.push(cfg);
        }
        Ok((configs, created))
    }
}

/// The configs of a heartbeat's consumer groups, created on first use
/// when allowed. Reply: one config per group, in the order asked.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<SubscriptionGroupConfig>, ServiceError>")]
pub struct ResolveGroups {
    /// Consumer group names.
    pub groups: Vec<String>,
}

/// Settings of the subscription group manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionGroupManagerConfig {
    /// State file (`<data>/config/subscription_groups.msgpack`).
    pub path: PathBuf,
    /// Create a group with defaults on its first heartbeat (RocketMQ's
    /// `autoCreateSubscriptionGroup`). Default true.
    pub auto_create: bool,
    /// `retry_max_times` of an auto-created group (the broker's
    /// `max_reconsume_times`). Default 16.
    pub default_retry_max: u32,
}

/// The subscription group manager actor. See the module docs.
pub struct SubscriptionGroupManager {
    table: SubscriptionGroupTable,
    state: Arc<persist::StateFile>,
    config: SubscriptionGroupManagerConfig,
    logger: Logger,
    poison: Poison,
}

impl SubscriptionGroupManager {
    /// Loads the table from disk (the supervisor's factory calls this on
    /// every restart). A torn or garbage file is logged and its `.bak` is
    /// used; with no good backup, loading fails with one line naming it.
    pub fn load(
        config: SubscriptionGroupManagerConfig,
        logger: &Logger,
    ) -> Result<Self, persist::PersistError> {
        let logger = logger.new(o!("actor" => "SubscriptionGroupManager"));
        let table: SubscriptionGroupTable =
            persist::load_or_backup(&config.path, &logger)?.unwrap_or_default();
        Ok(Self {
            table,
            state: persist::StateFile::for_path(&config.path),
            config,
            logger,
            poison: Poison::default(),
        })
    }

    /// Persists the table off the event loop; resolves once the file is
    /// written. A failed write stops the actor (the supervisor reloads).
    fn changed(&mut self) -> impl ActorFuture<Self, Output = Result<(), ServiceError>> + use<> {
        let write = self.state.persist(&self.table);
        persist::written_or_stop(write, self.logger.clone(), "subscription groups")
    }
}

impl Actor for SubscriptionGroupManager {
    type Context = Context<Self>;
}

// Every handler runs through `guarded`: a panic poisons the instance, the
// messages queued behind it are refused and the supervisor reloads the
// table from its file.
impl Guarded for SubscriptionGroupManager {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

type GroupsReply =
    ResponseActFuture<SubscriptionGroupManager, Result<Vec<SubscriptionGroupConfig>, ServiceError>>;

impl Handler<ResolveGroups> for SubscriptionGroupManager {
    type Result = GuardedReply<GroupsReply>;
    fn handle(&mut self, msg: ResolveGroups, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| act.resolve(msg))
    }
}

impl SubscriptionGroupManager {
    fn resolve(&mut self, msg: ResolveGroups) -> GroupsReply {
        match self.table.resolve(
            &msg.groups,
            self.config.auto_create,
            self.config.default_retry_max,
        ) {
            Ok((configs, created)) if !created.is_empty() => {
                info!(self.logger, "subscription groups auto-created"; "groups" => ?created);
                Box::pin(self.changed().map(move |res, _, _| res.map(|()| configs)))
            }
            other => Box::pin(actix::fut::ready(other.map(|(configs, _)| configs))),
        }
    }
}

type EmptyReply = ResponseActFuture<SubscriptionGroupManager, Result<Reply<Empty>, ServiceError>>;

fn reply_when_persisted(
    fut: impl ActorFuture<SubscriptionGroupManager, Output = Result<(), ServiceError>> + 'static,
) -> EmptyReply {
    Box::pin(fut.map(|res, _, _| res.map(|()| Reply::ok(Empty {}))))
}

impl Handler<Call<CreateSubscriptionGroupRequest>> for SubscriptionGroupManager {
    type Result = GuardedReply<EmptyReply>;
    fn handle(
        &mut self,
        msg: Call<CreateSubscriptionGroupRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let name = msg.req.config.group_name.clone();
            match act.table.upsert(msg.req.config) {
                Ok(true) => {
                    info!(act.logger, "subscription group created or updated"; "group" => name);
                    reply_when_persisted(act.changed())
                }
                Ok(false) => Box::pin(actix::fut::ready(Ok(Reply::ok(Empty {})))),
                Err(e) => Box::pin(actix::fut::ready(Err(e))),
            }
        })
    }
}

impl Handler<Call<DeleteSubscriptionGroupRequest>> for SubscriptionGroupManager {
    type Result = GuardedReply<EmptyReply>;
    fn handle(
        &mut self,
        msg: Call<DeleteSubscriptionGroupRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let group = msg.req.group_name;
            if !act.table.remove(&group) {
                return Box::pin(actix::fut::ready(Err(subscription_group_not_exist(&group))))
                    as EmptyReply;
            }
            info!(act.logger, "subscription group deleted"; "group" => &group);
            reply_when_persisted(act.changed())
        })
    }
}

impl Handler<Call<GetAllSubscriptionGroupRequest>> for SubscriptionGroupManager {
    type Result = GuardedReply<Result<Reply<AllSubscriptionGroupConfig>, ServiceError>>;
    fn handle(
        &mut self,
        _: Call<GetAllSubscriptionGroupRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| {
            Ok(Reply::ok(AllSubscriptionGroupConfig {
                subscription_group_table: act.table.all().clone(),
                data_version: act.table.data_version(),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn upsert_validates_and_versions() {
        let mut t = SubscriptionGroupTable::default();
        assert!(t.upsert(SubscriptionGroupConfig::new("g")).unwrap());
        assert!(!t.upsert(SubscriptionGroupConfig::new("g")).unwrap());
        assert_eq!(t.data_version(), 1);
        // Values whose feature is not built yet are refused, each named.
        let not_yet = [
            (
                "consume enable",
                SubscriptionGroupConfig {
                    consume_enable: false,
                    ..SubscriptionGroupConfig::new("g")
                },
            ),
            (
                "broadcast enable",
                SubscriptionGroupConfig {
                    consume_broadcast_enable: false,
                    ..SubscriptionGroupConfig::new("g")
                },
            ),
        ];
        for (what, cfg) in not_yet {
            let err = t.upsert(cfg).unwrap_err();
            assert_eq!(err.code, ResponseCode::InvalidParameter);
            assert!(
                err.remark.contains(what) && err.remark.contains("not available yet"),
                "{err}"
            );
        }
        assert_eq!(t.get("g"), Some(&SubscriptionGroupConfig::new("g")));
        assert_eq!(t.data_version(), 1);
        assert!(t.upsert(SubscriptionGroupConfig::new("h")).unwrap());
        assert_eq!(t.data_version(), 2);
        // Retries exist: a group's max and policy are its own.
        let mut retry = SubscriptionGroupConfig::new("r");
        retry.retry_max_times = 3;
        retry.retry_policy.first_delay_level = 1;
        assert!(t.upsert(retry.clone()).unwrap());
        assert_eq!(t.get("r"), Some(&retry));
        for bad in ["", "bad name", &"x".repeat(MAX_GROUP_LEN + 1)] {
            let err = t.upsert(SubscriptionGroupConfig::new(bad)).unwrap_err();
            assert_eq!(err.code, ResponseCode::InvalidParameter, "{bad:?}");
        }
        let mut zero = SubscriptionGroupConfig::new("z");
        zero.retry_policy.first_delay_level = 0;
        assert_eq!(
            t.upsert(zero).unwrap_err().code,
            ResponseCode::InvalidParameter
        );
        assert!(t.remove("g"));
        assert!(!t.remove("g"));
        assert_eq!(t.data_version(), 4);
        // Orderly groups exist (the SDK's orderly push consumer).
        let orderly = SubscriptionGroupConfig {
            consume_message_orderly: true,
            ..SubscriptionGroupConfig::new("o")
        };
        assert!(t.upsert(orderly.clone()).unwrap());
        assert_eq!(t.get("o"), Some(&orderly));
    }

    #[test]
    fn resolution_creates_with_defaults_only_when_allowed() {
        let mut t = SubscriptionGroupTable::default();
        let err = t.resolve(&names(&["new"]), false, 16).unwrap_err();
        assert_eq!(err.code, ResponseCode::SubscriptionGroupNotExist);
        assert!(err.remark.contains("new"), "{}", err.remark);
        assert!(t.all().is_empty());

        let (cfgs, created) = t.resolve(&names(&["new"]), true, 16).unwrap();
        assert_eq!(created, names(&["new"]));
        assert_eq!(cfgs, vec![SubscriptionGroupConfig::new("new")]);
        assert_eq!(cfgs[0].retry_max_times, 16);
        assert!(cfgs[0].consume_broadcast_enable && cfgs[0].consume_enable);

        // Known groups resolve without auto-creation; one unknown refuses all.
        let (_, created) = t.resolve(&names(&["new"]), false, 16).unwrap();
        assert!(created.is_empty());
        assert!(t.resolve(&names(&["new", "other"]), false, 16).is_err());
        assert!(t.get("other").is_none());
        assert!(t.resolve(&names(&["bad group"]), true, 16).is_err());
        assert!(t.get("bad group").is_none());
    }

    #[test]
    fn the_table_round_trips_through_messagepack() {
        let mut t = SubscriptionGroupTable::default();
        t.upsert(SubscriptionGroupConfig::new("a")).unwrap();
        t.upsert(SubscriptionGroupConfig::new("b")).unwrap();
        let bytes = rmp_serde::to_vec_named(&t).unwrap();
        let back: SubscriptionGroupTable = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, t);
    }
}
