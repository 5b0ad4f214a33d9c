//! Subscription groups: `UPDATE_AND_CREATE_SUBSCRIPTIONGROUP` (200),
//! `GET_ALL_SUBSCRIPTIONGROUP_CONFIG` (201), `DELETE_SUBSCRIPTIONGROUP`
//! (207), and the config a broker keeps per consumer group (RocketMQ's
//! `SubscriptionGroupConfig`, the fields actormq has).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ConsumeFromWhere;

/// Default of [`SubscriptionGroupConfig::retry_max_times`] (RocketMQ: 16).
pub const DEFAULT_RETRY_MAX_TIMES: u32 = 16;

/// Default of [`RetryPolicy::first_delay_level`] (RocketMQ: level 3, 10 s
/// with the default level table).
pub const DEFAULT_FIRST_DELAY_LEVEL: u32 = 3;

/// When a failed message is redelivered: RocketMQ's delay-level policy.
/// The n-th retry (n from 0) waits delay level `first_delay_level + n`,
/// capped at the last level of the broker's `message_delay_level` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Delay level of the first retry. Default 3; at least 1.
    pub first_delay_level: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_delay_level: DEFAULT_FIRST_DELAY_LEVEL,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_retry_max() -> u32 {
    DEFAULT_RETRY_MAX_TIMES
}

/// A consumer group's config on one broker. Missing fields decode to
/// their defaults, so a peer may send only the ones it sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionGroupConfig {
    /// Consumer group name.
    pub group_name: String,
    /// Whether the group may consume at all. Default true.
    #[serde(default = "yes")]
    pub consume_enable: bool,
    /// Where a new consumer of the group starts. Default last offset.
    #[serde(default)]
    pub consume_from_where: ConsumeFromWhere,
    /// The time (ms) a [`ConsumeFromWhere::Timestamp`] start uses; 0 otherwise.
    #[serde(default)]
    pub consume_timestamp_ms: u64,
    /// Whether broadcast consumption is allowed. Default true.
    #[serde(default = "yes")]
    pub consume_broadcast_enable: bool,
    /// Orderly consumption. Default false.
    #[serde(default)]
    pub consume_message_orderly: bool,
    /// Retries before a message goes to the dead-letter queue. Default 16.
    #[serde(default = "default_retry_max")]
    pub retry_max_times: u32,
    /// When retries are redelivered.
    #[serde(default)]
    pub retry_policy: RetryPolicy,
}

impl SubscriptionGroupConfig {
    /// The defaults for `group_name` (what auto-creation makes).
    pub fn new(group_name: &str) -> Self {
        Self {
            group_name: group_name.to_owned(),
            consume_enable: true,
            consume_from_where: ConsumeFromWhere::LastOffset,
            consume_timestamp_ms: 0,
            consume_broadcast_enable: true,
            consume_message_orderly: false,
            retry_max_times: DEFAULT_RETRY_MAX_TIMES,
            retry_policy: RetryPolicy::default(),
        }
    }
}

/// Create or replace a group's config. Reply: [`Empty`](super::Empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSubscriptionGroupRequest {
    /// The config to apply.
    pub config: SubscriptionGroupConfig,
}

/// Delete a group's config. Reply: [`Empty`](super::Empty); an unknown
/// group is refused with `SUBSCRIPTION_GROUP_NOT_EXIST`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteSubscriptionGroupRequest {
    /// Consumer group name.
    pub group_name: String,
}

/// Every group config of a broker. Reply [`AllSubscriptionGroupConfig`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetAllSubscriptionGroupRequest {}

/// A broker's group configs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllSubscriptionGroupConfig {
    /// By group name.
    pub subscription_group_table: BTreeMap<String, SubscriptionGroupConfig>,
    /// Version of the table (bumped on every change).
    #[serde(default)]
    pub data_version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_decode_to_the_defaults() {
        #[derive(Serialize)]
        struct Only {
            group_name: &'static str,
        }
        let bytes = rmp_serde::to_vec_named(&Only { group_name: "g" }).unwrap();
        let cfg: SubscriptionGroupConfig = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(cfg, SubscriptionGroupConfig::new("g"));
        assert!(cfg.consume_enable && cfg.consume_broadcast_enable);
        assert_eq!(cfg.retry_max_times, 16);
        assert_eq!(cfg.retry_policy.first_delay_level, 3);
    }
}
