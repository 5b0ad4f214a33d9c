//! Broker actors, one concern per file. Each keeps its decision logic in
//! a plain struct beside it (tested without a runtime) and is a thin actor
//! shell around it.

pub mod group_manager;
pub mod offset_manager;
pub mod persist;
pub mod registrar;
pub mod topic_manager;

pub use group_manager::{GroupManager, GroupManagerConfig, GroupTable};
pub use offset_manager::{OffsetManager, OffsetManagerConfig, OffsetTable};
pub use topic_manager::{TopicManager, TopicManagerConfig, TopicTable, TopicView};
