//! `RetentionCleaner`: deletes expired commit log segments (and the consume
//! queue and index files below them) every 10 s.
//!
//! Each pass measures the disk usage of the store's file system
//! ([`actormq_store::retention::disk_usage_ratio`], `statvfs`) and calls
//! [`Store::clean_expired`](actormq_store::Store::clean_expired), which
//! applies the policy (keep 72 h, delete at hour 04, at once past 75 % disk
//! use, force past 85 %). The pass deletes files, so it runs on a blocking
//! thread (`spawn_blocking`), never on the event loop; at most one pass runs
//! at a time.

use super::error_map::store_error;
use std::time::Duration;

use actix::prelude::*;
use actormq_store::CleanReport;
use actormq_store::retention::RetentionMode;
use slog::{Logger, error, info, o, warn};

use super::broker_store::BrokerStore;
use crate::runtime::ServiceError;

/// Settings of the [`RetentionCleaner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Period between passes. Default: 10 s.
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
        }
    }
}

/// Run one retention pass now; replies with what it did.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<CleanReport, ServiceError>")]
pub struct CleanNow;

/// The retention actor. See the module docs.
pub struct RetentionCleaner {
    store: BrokerStore,
    config: RetentionConfig,
    running: bool,
    logger: Logger,
}

impl RetentionCleaner {
    /// A cleaner of `store`.
    pub fn new(store: BrokerStore, config: RetentionConfig, logger: &Logger) -> Self {
        Self {
            store,
            config,
            running: false,
            logger: logger.new(o!("actor" => "RetentionCleaner")),
        }
    }

    fn pass(
        &mut self,
    ) -> impl ActorFuture<Self, Output = Result<CleanReport, ServiceError>> + use<> {
        self.running = true;
        let store = self.store.clone();
        let work = actix_rt::task::spawn_blocking(move || {
            let ratio =
                actormq_store::retention::disk_usage_ratio(&store.config().root).unwrap_or(0.0);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            store.clean_expired(now, ratio).map(|r| (r, ratio))
        });
        actix::fut::wrap_future::<_, Self>(work).map(|res, act, _| {
            act.running = false;
            match res {
                Ok(Ok((r, ratio))) => {
                    if r.segments_deleted > 0 && r.mode == RetentionMode::Force {
                        // Unexpired messages are gone: say so loudly.
                        warn!(act.logger, "disk nearly full: deleted unexpired commit log segments";
                            "segments" => r.segments_deleted,
                            "cq_files" => r.cq_files_deleted, "index_files" => r.index_files_deleted,
                            "min_offset" => r.min_offset, "disk_usage" => ratio);
                    } else if r.segments_deleted > 0 {
                        info!(act.logger, "retention deleted files";
                            "mode" => ?r.mode, "segments" => r.segments_deleted,
                            "cq_files" => r.cq_files_deleted, "index_files" => r.index_files_deleted,
                            "min_offset" => r.min_offset, "disk_usage" => ratio);
                    }
                    Ok(r)
                }
                Ok(Err(e)) => {
                    error!(act.logger, "retention pass failed"; "error" => %e);
                    Err(store_error(e))
                }
                Err(e) => Err(ServiceError::system(format!("retention pass panicked: {e}"))),
            }
        })
    }
}

impl Actor for RetentionCleaner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.interval, |act, ctx| {
            if !act.running {
                ctx.spawn(act.pass().map(|_, _, _| ()));
            }
        });
    }
}

impl Handler<CleanNow> for RetentionCleaner {
    type Result = ResponseActFuture<Self, Result<CleanReport, ServiceError>>;
    fn handle(&mut self, _: CleanNow, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.pass())
    }
}
