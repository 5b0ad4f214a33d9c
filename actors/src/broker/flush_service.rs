//! `FlushService`: owns durability of the commit log on the actor side.
//!
//! The store runs the flush itself on its own thread (`actormq-store-flush`,
//! started by `Store::open`, stopped by `Store::close`): async mode flushes
//! every `flush_interval_ms` (500 ms) when at least `flush_least_pages` (4)
//! pages are dirty, or everything after `flush_thorough_interval_ms`; sync
//! mode flushes as soon as a group-commit waiter is queued, and the
//! [`super::CommitLogActor`] registers one waiter per append batch
//! (`on_flushed`). The store also checkpoints every
//! `checkpoint_interval_ms`. What this actor adds:
//!
//! - [`FlushAndCheckpoint`] and [`Shutdown`]: flush everything written and
//!   write the checkpoint now, on a blocking thread (`spawn_blocking`);
//!   `Shutdown` then stops the actor. A node sends `Shutdown` on a graceful
//!   stop before it closes the store;
//! - its own periodic checkpoint (default every 10 s, off the event loop),
//!   so consume queues and the index are flushed even if the store's
//!   thread is configured with a long interval;
//! - flush lag: [`GetFlushLag`] (written, flushed, dispatched offsets), and
//!   a watchdog ([`StallDetector`]) that logs an error when dirty bytes stop
//!   being flushed for [`FlushServiceConfig::stall_after`].

use super::error_map::StoreResultExt;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actormq_store::FlushMode;
use slog::{Logger, error, info, o};

use super::broker_store::BrokerStore;
use crate::runtime::ServiceError;

/// Settings of the [`FlushService`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushServiceConfig {
    /// Period of this actor's own checkpoint (`None` = only the store's).
    /// Default: 10 s.
    pub checkpoint_interval: Option<Duration>,
    /// Period of the flush-lag watchdog. Default: 1 s.
    pub watch_interval: Duration,
    /// Dirty bytes not flushed for this long are reported. Default: 10 s.
    pub stall_after: Duration,
}

impl Default for FlushServiceConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval: Some(Duration::from_secs(10)),
            watch_interval: Duration::from_secs(1),
            stall_after: Duration::from_secs(10),
        }
    }
}

/// Where the commit log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushLag {
    /// Flush mode of the store.
    pub mode: FlushMode,
    /// End of the published commit log.
    pub written: u64,
    /// End of the flushed commit log.
    pub flushed: u64,
    /// Commit log offset below which everything is in the consume queues.
    pub dispatched: u64,
}

impl FlushLag {
    fn of(store: &BrokerStore) -> Self {
        Self {
            mode: store.config().flush_mode,
            written: store.commit_log_max_offset(),
            flushed: store.flushed_offset(),
            dispatched: store.dispatched_offset(),
        }
    }

    /// Bytes written but not yet flushed.
    pub fn flush_lag_bytes(&self) -> u64 {
        self.written.saturating_sub(self.flushed)
    }

    /// Bytes written but not yet dispatched.
    pub fn dispatch_lag_bytes(&self) -> u64 {
        self.written.saturating_sub(self.dispatched)
    }
}

/// Detects a flush that stopped making progress. Plain data.
#[derive(Debug, Default)]
pub struct StallDetector {
    last_flushed: u64,
    since: Option<Instant>,
    reported: bool,
}

impl StallDetector {
    /// Feeds an observation; returns how long the flush has been stuck
    /// when that first exceeds `after` (reported once per stall).
    pub fn observe(
        &mut self,
        now: Instant,
        written: u64,
        flushed: u64,
        after: Duration,
    ) -> Option<Duration> {
        if flushed != self.last_flushed || written <= flushed {
            self.last_flushed = flushed;
            self.since = (written > flushed).then_some(now);
            self.reported = false;
            return None;
        }
        let since = *self.since.get_or_insert(now);
        let stuck = now.saturating_duration_since(since);
        if stuck >= after && !self.reported {
            self.reported = true;
            return Some(stuck);
        }
        None
    }
}

/// Current offsets of the commit log.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "FlushLag")]
pub struct GetFlushLag;

/// Flush the commit log and write the checkpoint now; replies when done.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<FlushLag, ServiceError>")]
pub struct FlushAndCheckpoint;

/// Graceful stop: flush, checkpoint, reply, then stop the actor.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<FlushLag, ServiceError>")]
pub struct Shutdown;

/// The flush owner. See the module docs.
pub struct FlushService {
    store: BrokerStore,
    config: FlushServiceConfig,
    stall: StallDetector,
    logger: Logger,
}

impl FlushService {
    /// The flush owner of `store`.
    pub fn new(store: BrokerStore, config: FlushServiceConfig, logger: &Logger) -> Self {
        Self {
            store,
            config,
            stall: StallDetector::default(),
            logger: logger.new(o!("actor" => "FlushService")),
        }
    }

    fn flush_and_checkpoint(
        &self,
    ) -> impl ActorFuture<Self, Output = Result<FlushLag, ServiceError>> + use<> {
        let store = self.store.clone();
        let work = actix_rt::task::spawn_blocking(move || -> Result<FlushLag, ServiceError> {
            store.flush_now().or_reply()?;
            store.checkpoint_now().or_reply()?;
            Ok(FlushLag::of(&store))
        });
        actix::fut::wrap_future::<_, Self>(work).map(|res, act, _| {
            let res =
                res.unwrap_or_else(|e| Err(ServiceError::system(format!("flush panicked: {e}"))));
            if let Err(e) = &res {
                error!(act.logger, "flush and checkpoint failed"; "error" => %e);
            }
            res
        })
    }

    fn watch(&mut self) {
        let lag = FlushLag::of(&self.store);
        if let Some(stuck) = self.stall.observe(
            Instant::now(),
            lag.written,
            lag.flushed,
            self.config.stall_after,
        ) {
            error!(self.logger, "commit log flush is not progressing";
                "stuck_ms" => stuck.as_millis() as u64, "dirty_bytes" => lag.flush_lag_bytes());
        }
    }
}

impl Actor for FlushService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.watch_interval, |act, _| act.watch());
        if let Some(every) = self.config.checkpoint_interval {
            ctx.run_interval(every, |act, ctx| {
                let store = act.store.clone();
                let work = actix_rt::task::spawn_blocking(move || store.checkpoint_now());
                ctx.spawn(actix::fut::wrap_future::<_, Self>(work).map(|res, act, _| {
                    if let Ok(Err(e)) = res {
                        error!(act.logger, "checkpoint failed"; "error" => %e);
                    }
                }));
            });
        }
    }
}

impl Handler<GetFlushLag> for FlushService {
    type Result = MessageResult<GetFlushLag>;
    fn handle(&mut self, _: GetFlushLag, _: &mut Context<Self>) -> Self::Result {
        MessageResult(FlushLag::of(&self.store))
    }
}

impl Handler<FlushAndCheckpoint> for FlushService {
    type Result = ResponseActFuture<Self, Result<FlushLag, ServiceError>>;
    fn handle(&mut self, _: FlushAndCheckpoint, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.flush_and_checkpoint())
    }
}

impl Handler<Shutdown> for FlushService {
    type Result = ResponseActFuture<Self, Result<FlushLag, ServiceError>>;
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.flush_and_checkpoint().map(|res, act, ctx| {
            if let Ok(lag) = &res {
                info!(act.logger, "flushed for shutdown"; "flushed" => lag.flushed, "written" => lag.written);
            }
            ctx.stop();
            res
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_is_reported_once_and_cleared_by_progress() {
        let t0 = Instant::now();
        let after = Duration::from_secs(5);
        let mut d = StallDetector::default();
        assert_eq!(d.observe(t0, 0, 0, after), None);
        // Dirty bytes appear; flushed does not move.
        assert_eq!(d.observe(t0, 100, 0, after), None);
        assert_eq!(d.observe(t0 + Duration::from_secs(4), 200, 0, after), None);
        assert_eq!(
            d.observe(t0 + Duration::from_secs(5), 200, 0, after),
            Some(Duration::from_secs(5))
        );
        assert_eq!(d.observe(t0 + Duration::from_secs(9), 200, 0, after), None);
        // Progress clears it.
        assert_eq!(
            d.observe(t0 + Duration::from_secs(10), 300, 200, after),
            None
        );
        assert_eq!(
            d.observe(t0 + Duration::from_secs(14), 300, 200, after),
            None
        );
        assert!(
            d.observe(t0 + Duration::from_secs(15), 300, 200, after)
                .is_some()
        );
        // Clean: nothing dirty, nothing reported.
        assert_eq!(
            d.observe(t0 + Duration::from_secs(30), 300, 300, after),
            None
        );
        assert_eq!(
            d.observe(t0 + Duration::from_secs(60), 300, 300, after),
            None
        );
    }
}
