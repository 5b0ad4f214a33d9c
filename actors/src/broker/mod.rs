//! Broker actors, one concern per file. Each keeps its decision logic in
//! a plain struct beside it (tested without a runtime) and is a thin actor
//! shell around it.

pub mod broker_store;
pub mod commit_log;
pub mod dedup;
pub mod dispatcher;
pub mod end_transaction;
pub mod error_map;
pub mod flush_service;
pub mod group_manager;
pub mod group_notifier;
pub mod ha;
pub mod half_message;
pub mod metrics;
pub mod offset_manager;
pub mod offset_reset;
pub mod persist;
pub mod plugin;
pub mod pop_service;
pub mod pull_hold;
pub mod query_service;
pub mod queue_locks;
pub mod registrar;
pub mod retention_cleaner;
pub mod retry_service;
pub mod schedule_service;
pub mod status_service;
pub mod stored_codec;
pub mod stored_fanout;
pub mod subscription_group_manager;
pub mod timer_service;
pub mod timer_wheel;
pub mod topic_manager;
pub mod transaction_checker;
pub mod wiring;

/// Wall-clock time in ms since the Unix epoch (0 before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub use broker_store::BrokerStore;
pub use commit_log::{CommitLogActor, CommitLogConfig, Nudge, NudgeThrottle};
pub use dispatcher::{Dispatcher, DispatcherConfig, MessagesStored, SubscribeStored};
pub use end_transaction::EndTransactionService;
pub use flush_service::{FlushService, FlushServiceConfig};
pub use group_manager::{GroupManager, GroupManagerConfig, GroupTable};
pub use group_notifier::GroupNotifier;
pub use offset_manager::{OffsetBounds, OffsetManager, OffsetManagerConfig, OffsetTable};
pub use pop_service::{PopConfig, PopService};
pub use pull_hold::{PullHold, PullHoldConfig};
pub use query_service::QueryService;
pub use retention_cleaner::{RetentionCleaner, RetentionConfig};
pub use retry_service::RetryService;
pub use schedule_service::{ScheduleConfig, ScheduleService};
pub use stored_fanout::{StoredFanout, StoredSubscribers};
pub use subscription_group_manager::{
    SubscriptionGroupManager, SubscriptionGroupManagerConfig, SubscriptionGroupTable,
};
pub use timer_service::{TimerConfig, TimerService};
pub use topic_manager::{TopicManager, TopicManagerConfig, TopicTable, TopicView};
pub use transaction_checker::{TransactionChecker, TransactionConfig};
pub use wiring::{BrokerActors, BrokerActorsConfig, WiringError};
