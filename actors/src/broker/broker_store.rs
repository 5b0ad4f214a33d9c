//! [`BrokerStore`]: the storage engine shared by the data-path actors.
//!
//! One [`Store`] per broker, behind an `Arc`. The [`super::CommitLogActor`]
//! is its single writer; [`super::Dispatcher`] follows the log; the pull
//! and query actors read lock-free; [`super::FlushService`] and
//! [`super::RetentionCleaner`] run their blocking work on
//! `spawn_blocking` threads. Store errors become response codes in
//! [`super::error_map`].

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actormq_store::{Store, StoreConfig};

/// A cheap, cloneable handle to the broker's [`Store`].
#[derive(Debug, Clone)]
pub struct BrokerStore(Arc<Store>);

impl BrokerStore {
    /// Opens (and recovers) the store at `cfg.root`.
    pub fn open(cfg: StoreConfig) -> actormq_store::Result<Self> {
        Store::open(cfg).map(Self::new)
    }

    /// Wraps an opened store.
    pub fn new(store: Store) -> Self {
        Self(Arc::new(store))
    }

    /// How many handles share the store (actors that have not stopped yet
    /// still hold one).
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// Closes the store cleanly (final flush, dispatch, checkpoint, abort
    /// marker removed) if this is the last handle; otherwise gives the
    /// handle back.
    pub fn try_close(self) -> Result<actormq_store::Result<()>, Self> {
        Arc::try_unwrap(self.0).map(Store::close).map_err(Self)
    }

    /// Waits (polling every 5 ms, up to `timeout`) until every other
    /// handle is dropped (the actors holding them stopped), then closes
    /// the store cleanly. The close itself runs on a blocking thread.
    /// Gives the handle back if others still hold it at the deadline.
    pub async fn close(self, timeout: Duration) -> Result<actormq_store::Result<()>, Self> {
        let deadline = Instant::now() + timeout;
        let mut me = self;
        loop {
            match Arc::try_unwrap(me.0) {
                Ok(store) => {
                    return Ok(actix_rt::task::spawn_blocking(move || store.close())
                        .await
                        .unwrap_or(Err(actormq_store::Error::Closed)));
                }
                Err(arc) => me = Self(arc),
            }
            if Instant::now() >= deadline {
                return Err(me);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Deref for BrokerStore {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.0
    }
}
