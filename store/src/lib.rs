//! # actormq-store
//!
//! The storage engine of actormq, a RocketMQ-style message broker: an
//! append-only **commit log** of fixed-size memory-mapped segments, per
//! topic-queue **consume queues** built by a dispatch step that follows the
//! log, async or sync (group commit) **flush**, crash **recovery** from a
//! checkpoint, and time/disk-based **retention**.
//!
//! Layering: `protocol <- store <- actors <- cluster`. This crate is plain
//! synchronous Rust with no async runtime: actors drive it (a writer actor
//! calls [`Store::append_batch`], a dispatcher actor calls
//! [`Store::dispatch`], pull handlers call [`Store::get_messages`]). It owns
//! two kinds of background threads: the segment pre-allocator and the flush
//! thread. Reads return zero-copy [`MessageView`]s whose bytes are
//! `bytes::Bytes` over the mapped segment.
//!
//! See `ARCHITECTURE.md` for the byte layouts and algorithms and `SAFETY.md`
//! for the memory-mapping rules.
//!
//! ```
//! use actormq_store::{AppendMessage, GetStatus, Store, StoreConfig};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(StoreConfig::small(dir.path(), 64 * 1024)).unwrap();
//! let batch = [
//!     AppendMessage { topic: "orders", queue_id: 0, body: b"first", ..Default::default() },
//!     AppendMessage { topic: "orders", queue_id: 0, body: b"second", ..Default::default() },
//! ];
//! let res = store.append_batch(&batch).unwrap();
//! assert_eq!(res.messages[1].queue_offset, 1);
//! store.dispatch(1000).unwrap();
//! let got = store.get_messages("orders", 0, 0, 32, 1 << 20, None);
//! assert_eq!(got.status, GetStatus::Found);
//! assert_eq!(&got.messages[1].body()[..], b"second");
//! store.close().unwrap();
//! ```

pub mod allocator;
pub mod checkpoint;
pub mod commit_log;
pub mod config;
pub mod consume_queue;
pub mod dir_lock;
pub mod disk;
pub mod dispatch;
pub mod error;
pub mod flush;
pub mod index_file;
pub mod mapped_file;
pub mod record;
pub mod recovery;
pub mod region;
pub mod replica;
pub mod retention;
pub mod store;
pub(crate) mod sync;

#[cfg(all(test, actormq_loom))]
mod loom_tests;

#[cfg(all(test, not(actormq_loom)))]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<crate::Store>();
        assert_send_sync::<crate::MessageView>();
        assert_send_sync::<crate::FlushTicket>();
        assert_send_sync::<crate::GetResult>();
    }
}

pub use commit_log::{Appended, MessageView};
pub use config::{FlushMode, Prefault, StoreConfig};
pub use consume_queue::Unit;
pub use dir_lock::DirLock;
pub use dispatch::{DispatchProgress, Dispatched};
pub use error::{Error, Result};
pub use flush::{FlushOutcome, FlushTicket};
pub use index_file::{IndexConfig, IndexError, IndexService};
pub use record::{AppendMessage, encode_properties, encode_properties_into, tag_hash};
pub use replica::ReplicaError;
pub use retention::{RetentionMode, RetentionPolicy};
pub use store::RawRead;
pub use store::{
    AppendResult, CleanReport, Clock, GetResult, GetStatus, ManualClock, RecoveryReport, Store,
    SystemClock,
};
