//! `TimerService`: delivery at a time (`deliver_at_ms`, `actormq produce
//! --deliver-at-ms / --delay-ms`).
//!
//! The [`super::CommitLogActor`] parks a message sent with a deliver-at
//! time later than now in the system topic `rmq_sys_wheel_timer` (queue 0;
//! its consume-queue tag hash holds the time, `REAL_TOPIC`/`REAL_QID` its
//! destination). This actor
//!
//! 1. **reads** that queue from where it stopped into the durable
//!    [`TimerWheel`] (one 32-byte entry on disk per message, nothing per
//!    message in memory);
//! 2. **fires** the wheel second by second: at the start of second `s`,
//!    every message of `s`'s slot that is due goes back to the writer
//!    ([`PutInternal`]) as a message of its real topic (the parking
//!    properties removed), the ones due later within `s` on a timer of
//!    their own (so none is delivered early, and lateness is the writer's
//!    time plus up to `tick`), and the ones due beyond the wheel's window
//!    are **rolled**: parked again in the timer topic (a fresh commit-log
//!    record, so retention never removes a message that waits longer than
//!    the log is kept) and read into a later slot;
//! 3. **checkpoints** every `checkpoint_interval`: the new log entries are
//!    fsynced, then the wheel's state (entries, last fired second, read
//!    offset) is written to `<data>/config/timer_state.msgpack`.
//!
//! A second counts as fired only once every message of it was stored by
//! the writer, so a crash or restart never loses a due message; it may
//! deliver the messages of the last seconds before it again (at least
//! once). After a downtime the missed seconds are fired at once, in order.
//! A message whose topic is gone is logged at `ERROR` and skipped.
//!
//! The wheel is [`TimerWheel`] (plain data and files, tested without a
//! runtime).

use std::path::PathBuf;
use std::sync::Arc;

use super::ha::HaState;
use std::time::Duration;

use actix::prelude::*;
use actormq_protocol::system_topic::TIMER_TOPIC;
use slog::{Logger, error, info, o, warn};

use super::broker_store::BrokerStore;
use super::commit_log::{CommitLogActor, InternalMessage, PutInternal};
use super::error_map::put_failed_for_good;
use super::persist;
use super::schedule_service::unparked;
use super::timer_wheel::{TimerEntry, TimerError, TimerState, TimerWheel};
use crate::runtime::guard::{Guarded, GuardedReply, Poison, guarded};
use crate::runtime::{ChildRef, FactoryError};

/// Settings of the [`TimerService`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerConfig {
    /// The wheel's log directory (`<data>/timer`).
    pub dir: PathBuf,
    /// The wheel's state (`<data>/config/timer_state.msgpack`).
    pub state_path: PathBuf,
    /// Seconds of the wheel's window (one slot each). Default one day:
    /// a message due later is rolled once a day. 8 bytes of memory each.
    pub slots: u64,
    /// Time between passes. Default 100 ms.
    pub tick: Duration,
    /// Time between checkpoints. Default 1 s.
    pub checkpoint_interval: Duration,
    /// Most parked messages read into the wheel per pass. Default 50 000.
    pub read_batch: usize,
}

impl TimerConfig {
    /// Defaults under `data_dir`.
    pub fn new(data_dir: &std::path::Path) -> Self {
        Self {
            dir: data_dir.join("timer"),
            state_path: data_dir.join("config/timer_state.msgpack"),
            slots: 86_400,
            tick: Duration::from_millis(100),
            checkpoint_interval: Duration::from_secs(1),
            read_batch: 50_000,
        }
    }
}

/// Ask the [`TimerService`] for its numbers (tests, status).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "TimerStatus")]
pub struct GetTimerStatus;

/// What [`GetTimerStatus`] answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, MessageResponse)]
pub struct TimerStatus {
    /// The wheel's state.
    pub state: TimerState,
    /// Memory the wheel holds (its slots), bytes.
    pub wheel_bytes: usize,
    /// Messages delivered since start.
    pub delivered: u64,
    /// Messages rolled since start.
    pub rolled: u64,
}

/// Internal: one pass.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
struct Tick;

/// The second being fired: what is left of it.
#[derive(Debug)]
struct Firing {
    sec: u64,
    /// Entries not handled yet (timers running or puts in flight).
    open: usize,
    /// A put failed for a reason that may pass: retry the second.
    failed: bool,
}

/// The timer service actor. See the module docs.
pub struct TimerService {
    store: BrokerStore,
    writer: ChildRef<CommitLogActor>,
    /// Idle while this broker is a slave (its master does this work).
    ha: Option<Arc<HaState>>,
    config: TimerConfig,
    wheel: TimerWheel,
    state_file: Arc<persist::StateFile>,
    firing: Option<Firing>,
    dirty: bool,
    status: TimerStatus,
    logger: Logger,
    poison: Poison,
}

impl TimerService {
    /// Idles while `ha` says this broker is a slave (builder style): the
    /// master does this work, and its results reach the slave through
    /// the commit log.
    pub fn with_ha(mut self, ha: Arc<HaState>) -> Self {
        self.ha = Some(ha);
        self
    }

    fn is_slave(&self) -> bool {
        self.ha.as_ref().is_some_and(|h| !h.role().is_master())
    }

    /// Opens the wheel from its state (the supervisor's factory calls this
    /// on every restart).
    pub fn load(
        store: BrokerStore,
        writer: ChildRef<CommitLogActor>,
        config: TimerConfig,
        logger: &Logger,
    ) -> Result<Self, FactoryError> {
        let logger = logger.new(o!("actor" => "TimerService"));
        let state: Option<TimerState> = persist::load_or_backup(&config.state_path, &logger)?;
        let wheel = TimerWheel::open(&config.dir, config.slots, state, super::now_ms() / 1000)?;
        Ok(Self {
            store,
            writer,
            state_file: persist::StateFile::for_path(&config.state_path),
            config,
            wheel,
            firing: None,
            dirty: false,
            status: TimerStatus::default(),
            logger,
            ha: None,
            poison: Poison::default(),
        })
    }

    /// The second fired or being fired (new entries go after it).
    fn firing_sec(&self) -> u64 {
        self.firing
            .as_ref()
            .map_or(self.wheel.fired_sec(), |f| f.sec)
    }

    /// Reads newly parked messages into the wheel.
    fn read_parked(&mut self) -> Result<(), TimerError> {
        let (min, max) = (
            self.store.min_offset(TIMER_TOPIC, 0),
            self.store.max_offset(TIMER_TOPIC, 0),
        );
        let mut at = self.wheel.read_offset();
        if at < min {
            error!(self.logger, "parked timed messages were removed by retention";
                "from" => at, "to" => min);
            at = min;
        }
        let firing = self.firing_sec();
        let end = max.min(at.saturating_add(self.config.read_batch as u64));
        while at < end {
            let Some(u) = self.store.unit(TIMER_TOPIC, 0, at) else {
                break;
            };
            self.wheel
                .add(at, u64::try_from(u.tag_hash).unwrap_or(0), firing)?;
            self.dirty = true;
            at += 1;
        }
        Ok(())
    }

    /// Starts firing the next second when it has begun; empty seconds are
    /// fired at once (a downtime's worth in one pass, bounded).
    fn fire_next(&mut self, ctx: &mut Context<Self>) -> Result<(), TimerError> {
        let now = super::now_ms();
        for _ in 0..10_000 {
            if self.firing.is_some() {
                return Ok(());
            }
            let sec = self.wheel.fired_sec() + 1;
            if sec * 1000 > now {
                return Ok(());
            }
            let entries = self.wheel.take(sec)?;
            if entries.is_empty() {
                self.wheel.fired(sec)?;
                self.dirty = true;
                continue;
            }
            self.firing = Some(Firing {
                sec,
                open: entries.len(),
                failed: false,
            });
            let mut due_now = Vec::new();
            for e in entries {
                if e.due_ms <= now {
                    due_now.push(e);
                } else if e.due_ms / 1000 <= sec {
                    // Later within this second: on time, not early.
                    ctx.run_later(Duration::from_millis(e.due_ms - now), move |act, ctx| {
                        act.handle_entries(vec![e], ctx);
                    });
                } else {
                    due_now.push(e); // beyond the window: rolled
                }
            }
            if !due_now.is_empty() {
                self.handle_entries(due_now, ctx);
            }
        }
        Ok(())
    }

    /// Delivers (or rolls) `entries` of the second being fired.
    fn handle_entries(&mut self, entries: Vec<TimerEntry>, ctx: &mut Context<Self>) {
        let Some(sec) = self.firing.as_ref().map(|f| f.sec) else {
            return;
        };
        let mut puts = Vec::with_capacity(entries.len());
        let mut rolled = 0u64;
        let mut skipped = 0usize;
        for e in &entries {
            let Some(view) = self
                .store
                .unit(TIMER_TOPIC, 0, e.queue_offset)
                .and_then(|u| self.store.read_at(u.commit_log_offset))
            else {
                error!(self.logger, "timed message is gone (retention); skipped";
                    "offset" => e.queue_offset, "due_ms" => e.due_ms);
                skipped += 1;
                continue;
            };
            if e.due_ms / 1000 > sec {
                // Park it again: a fresh record, read into a later slot.
                let h = view.header();
                puts.push(InternalMessage {
                    topic: TIMER_TOPIC.to_owned(),
                    queue_id: 0,
                    body: view.body(),
                    properties: view.properties().to_vec(),
                    tag_hash: e.due_ms as i64,
                    flags: h.flags,
                    born_timestamp_ms: h.born_timestamp_ms,
                    born_host: h.born_host,
                    reconsume_times: h.reconsume_times,
                    delay_level: 0,
                });
                rolled += 1;
                continue;
            }
            match unparked(&view) {
                Ok(m) => puts.push(m),
                Err(why) => {
                    error!(self.logger, "timed message cannot be delivered; skipped";
                        "offset" => e.queue_offset, "why" => why);
                    skipped += 1;
                }
            }
        }
        self.entries_done(skipped, ctx);
        if puts.is_empty() {
            return;
        }
        let Some(writer) = self.writer.addr() else {
            self.put_failed(puts.len(), "commit log restarting", ctx);
            return;
        };
        let n = puts.len();
        let ask = writer.send(PutInternal {
            messages: puts,
            create_as: None,
        });
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(ask).map(move |res, act, ctx| {
                let answers = match res {
                    Ok(a) => a,
                    Err(e) => return act.put_failed(n, &e.to_string(), ctx),
                };
                let (mut ok, mut retry) = (0, 0);
                for a in answers {
                    match a {
                        Ok(_) => ok += 1,
                        Err(e) if put_failed_for_good(&e) => {
                            error!(act.logger, "timed message cannot be delivered; skipped";
                                "error" => %e);
                            ok += 1;
                        }
                        Err(e) => {
                            warn!(act.logger, "delivering timed messages failed; retrying the second";
                                "error" => %e);
                            retry += 1;
                        }
                    }
                }
                act.status.delivered += ok as u64 - rolled.min(ok as u64);
                act.status.rolled += rolled;
                if retry > 0 {
                    act.put_failed(retry, "the writer refused", ctx);
                }
                act.entries_done(ok, ctx);
            }),
        );
    }

    fn put_failed(&mut self, n: usize, why: &str, ctx: &mut Context<Self>) {
        warn!(self.logger, "timed messages not stored; the second is fired again"; "why" => why, "count" => n);
        if let Some(f) = &mut self.firing {
            f.failed = true;
        }
        self.entries_done(n, ctx);
    }

    /// `n` entries of the second being fired are handled.
    fn entries_done(&mut self, n: usize, ctx: &mut Context<Self>) {
        let Some(f) = &mut self.firing else {
            return;
        };
        f.open = f.open.saturating_sub(n);
        if f.open > 0 {
            return;
        }
        let (sec, failed) = (f.sec, f.failed);
        self.firing = None;
        if failed {
            // Fired again from the start on the next tick (at least once).
            return;
        }
        if let Err(e) = self.wheel.fired(sec) {
            self.fail(e, ctx);
            return;
        }
        self.dirty = true;
        ctx.notify(Tick);
    }

    fn checkpoint(&mut self, ctx: &mut Context<Self>) {
        if !self.dirty {
            return;
        }
        let state = match self.wheel.sync() {
            Ok(s) => s,
            Err(e) => return self.fail(e, ctx),
        };
        self.dirty = false;
        let logger = self.logger.clone();
        let write = self.state_file.persist(&state);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(write).map(move |res, act, _| {
                if let Err(e) = res {
                    error!(logger, "cannot persist the timer state; will retry"; "error" => %e);
                    act.dirty = true;
                }
            }),
        );
    }

    /// A wheel file failed: stop; the supervisor reopens it from its last
    /// durable state.
    fn fail(&mut self, e: TimerError, ctx: &mut Context<Self>) {
        error!(self.logger, "timer wheel failed; restarting"; "error" => %e);
        ctx.stop();
    }
}

impl Actor for TimerService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(self.logger, "timer service started"; "slots" => self.wheel.slots(),
            "state" => ?self.wheel.state());
        ctx.run_interval(self.config.tick, |_, ctx| ctx.notify(Tick));
        ctx.run_interval(self.config.checkpoint_interval, |act, ctx| {
            act.checkpoint(ctx)
        });
        ctx.notify(Tick);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // A clean stop keeps what was read and fired (nothing in flight
        // counts: a second being fired is fired again after the restart).
        if let Ok(state) = self.wheel.sync() {
            let res = self
                .state_file
                .stage(&state)
                .and_then(|seq| self.state_file.wait(seq));
            if let Err(e) = res {
                error!(self.logger, "cannot persist the timer state at stop"; "error" => %e);
            }
        }
    }
}

impl Guarded for TimerService {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

impl Handler<Tick> for TimerService {
    type Result = GuardedReply<()>;
    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, ctx| {
            if act.is_slave() {
                return;
            }
            if let Err(e) = act.read_parked().and_then(|()| act.fire_next(ctx)) {
                act.fail(e, ctx);
            }
        })
    }
}

impl Handler<GetTimerStatus> for TimerService {
    type Result = GuardedReply<TimerStatus>;
    fn handle(&mut self, _: GetTimerStatus, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| TimerStatus {
            state: act.wheel.state(),
            wheel_bytes: act.wheel.memory_bytes(),
            ..act.status
        })
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::runtime::guard::InjectPanic> for TimerService {
    type Result = GuardedReply<()>;
    fn handle(
        &mut self,
        msg: crate::runtime::guard::InjectPanic,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |_, _| panic!("{}", msg.0))
    }
}
