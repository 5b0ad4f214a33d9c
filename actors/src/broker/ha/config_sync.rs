//! Config sync from master to slave (RocketMQ's `SlaveSynchronize`): the
//! master sends a [`ConfigSnapshot`] over the HA link when a slave
//! connects, when its topic table changes, and every
//! [`super::HaConfig::config_sync`]; the slave applies
//! it to its own managers. Topic and subscription-group configs are
//! upserted (idempotent: unchanged ones cost nothing), consumer offsets
//! taken as the master has them, the delay levels' progress moved forward
//! (so a promoted slave does not deliver again what its master delivered
//! before the last sync). Deletions on the master are not
//! mirrored (a deleted topic stays known on the slave until it is deleted
//! there too).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actormq_protocol::request::{SubscriptionGroupConfig, TopicConfig};
use serde::{Deserialize, Serialize};

use crate::broker::offset_manager::OffsetTable;
use crate::broker::schedule_service::DelayProgress;

/// What a master shares with its slaves besides the commit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSnapshot {
    /// Every topic config.
    pub topics: Vec<TopicConfig>,
    /// Every consumer group config.
    pub subscription_groups: Vec<SubscriptionGroupConfig>,
    /// Every committed consumer offset.
    pub offsets: OffsetTable,
    /// How far the master moved each delay level's due messages.
    #[serde(default)]
    pub delay_progress: DelayProgress,
}

impl ConfigSnapshot {
    /// MessagePack (maps, so fields can be added).
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec_named(self)
    }

    /// From [`Self::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

/// A boxed future on the actor's thread.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// Takes a snapshot of the master's configs (`None`: a manager is down,
/// try again next time).
pub type SnapshotFn = Arc<dyn Fn() -> LocalFuture<Option<ConfigSnapshot>> + Send + Sync>;

/// Where a master's snapshots come from.
#[derive(Clone)]
pub struct SnapshotSource {
    /// Takes a snapshot.
    pub snapshot: SnapshotFn,
    /// The topic table's version: a change is sent at once (a slave must
    /// know a topic to serve its pulls), the rest with the interval.
    pub version: Arc<dyn Fn() -> u64 + Send + Sync>,
}

/// Applies a master's snapshot on a slave.
pub type SnapshotSink = Arc<dyn Fn(ConfigSnapshot) -> LocalFuture<()> + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip() {
        let mut offsets = OffsetTable::default();
        offsets.commit("g", "t", 2, 9);
        let s = ConfigSnapshot {
            topics: vec![TopicConfig {
                topic_name: "t".into(),
                read_queue_nums: 4,
                write_queue_nums: 4,
                ..TopicConfig::default()
            }],
            subscription_groups: Vec::new(),
            offsets,
            delay_progress: DelayProgress::default(),
        };
        let back = ConfigSnapshot::decode(&s.encode().unwrap()).unwrap();
        assert_eq!(back, s);
        assert!(ConfigSnapshot::decode(b"\xff\x00garbage").is_err());
    }
}
