//! The binaries' log drain: slog to stderr as text or JSON lines, filtered
//! by level, behind an async drain so logging never blocks an actor. When
//! the drain's channel is full, records below `Error` are dropped and
//! counted (reported as `log drain dropped N messages` every 10 s and at
//! exit); `Error` and `Critical` records wait for room instead.
//!
//! Only binaries and test helpers build drains; libraries take a `&Logger`.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use slog::{Drain, Level, Logger, o};

use crate::config::{LogFormat, LogSection};

/// Parses a level name as written in `[log] level`.
pub fn parse_level(name: &str) -> Option<Level> {
    match name {
        "trace" => Some(Level::Trace),
        "debug" => Some(Level::Debug),
        "info" => Some(Level::Info),
        "warn" => Some(Level::Warning),
        "error" => Some(Level::Error),
        "critical" => Some(Level::Critical),
        _ => None,
    }
}

/// Records waiting for the writer thread, per drain.
pub const CHANNEL_SIZE: usize = 4096;

/// How often [`LogGuard`] reports records dropped since its last report.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The tag of the "log drain dropped N messages" report (never dropped).
const REPORT_TAG: &str = "log-drops";

/// The async drain with our overflow rule: when the channel is full, a
/// record below `Error` is dropped and counted, an `Error` or `Critical`
/// record (and the drop report itself) waits for room, so errors are never
/// lost.
struct Overflow {
    core: slog_async::AsyncCore,
    dropped: Arc<AtomicU64>,
}

impl Drain for Overflow {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let must_keep = record.level().is_at_least(Level::Error) || record.tag() == REPORT_TAG;
        loop {
            match self.core.log(record, values) {
                Ok(()) => return Ok(()),
                Err(slog_async::AsyncError::Full) if must_keep => {
                    // Blocking overflow: the writer thread drains the channel.
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(_) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
    }
}

/// Keeps the log drain alive; keep it until exit. Every [`REPORT_EVERY`]
/// and when dropped it logs `log drain dropped N messages` (a warning) for
/// records dropped on overflow since the last report, then, when dropped,
/// flushes the queue.
pub struct LogGuard {
    dropped: Arc<AtomicU64>,
    log: Logger,
    stop: Option<std::sync::mpsc::Sender<()>>,
    reporter: Option<std::thread::JoinHandle<()>>,
    // Dropped last: flushes what is queued, the final report included.
    _flush: slog_async::AsyncGuard,
}

impl LogGuard {
    /// Records dropped on overflow and not reported yet.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn report(log: &Logger, dropped: &AtomicU64) {
    let n = dropped.swap(0, Ordering::Relaxed);
    if n > 0 {
        slog::warn!(log, #REPORT_TAG, "log drain dropped {} messages", n; "dropped" => n);
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(reporter) = self.reporter.take() {
            let _ = reporter.join();
        }
        report(&self.log, &self.dropped);
    }
}

/// A root logger writing to `out` per `section`; keep the returned guard
/// alive until exit so queued records are written and drops reported.
pub fn root_logger<W: Write + Send + 'static>(section: &LogSection, out: W) -> (Logger, LogGuard) {
    root_logger_with(section, out, CHANNEL_SIZE, REPORT_EVERY)
}

/// [`root_logger`] with a channel of `chan_size` records and drop reports
/// every `report_every` (tests use tiny ones).
pub fn root_logger_with<W: Write + Send + 'static>(
    section: &LogSection,
    out: W,
    chan_size: usize,
    report_every: Duration,
) -> (Logger, LogGuard) {
    let level = parse_level(&section.level).unwrap_or(Level::Info);
    fn builder<D>(drain: D, chan_size: usize) -> (slog_async::AsyncCore, slog_async::AsyncGuard)
    where
        D: Drain<Err = slog::Never, Ok = ()> + Send + 'static,
    {
        slog_async::AsyncCore::custom(drain)
            .chan_size(chan_size)
            .blocking(false)
            .build_with_guard()
    }
    let (core, flush) = match section.format {
        LogFormat::Text => {
            let decorator = slog_term::PlainDecorator::new(out);
            let drain = slog_term::FullFormat::new(decorator).build().fuse();
            builder(drain.filter_level(level).fuse(), chan_size)
        }
        LogFormat::Json => {
            let drain = slog_json::Json::new(out).add_default_keys().build().fuse();
            builder(drain.filter_level(level).fuse(), chan_size)
        }
    };
    let dropped = Arc::new(AtomicU64::new(0));
    let drain = Overflow {
        core,
        dropped: dropped.clone(),
    };
    let log = Logger::root(drain, o!("pid" => std::process::id()));
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let reporter = {
        let (log, dropped) = (log.clone(), dropped.clone());
        std::thread::Builder::new()
            .name("log-drops".into())
            .spawn(move || {
                // Wakes every `report_every` until the guard hangs up.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(report_every)
                {
                    report(&log, &dropped);
                }
            })
            .ok()
    };
    let guard = LogGuard {
        dropped,
        log: log.clone(),
        stop: Some(stop),
        reporter,
        _flush: flush,
    };
    (log, guard)
}

/// Forwards the `log` records of dependencies (actix-web, actix-server)
/// into a slog logger, with their target as the `module` key: one stream
/// holds everything. Installed once per process by
/// [`bridge_dependency_logs`], beside [`TracingBridge`] for the crates
/// that log through `tracing` (tonic, h2, hyper).
pub struct LogBridge {
    logger: Logger,
    max: log::LevelFilter,
}

impl LogBridge {
    /// A bridge into `logger` passing records up to `level`.
    pub fn new(logger: &Logger, level: Level) -> Self {
        Self {
            logger: logger.new(o!("source" => "dependency")),
            max: level_filter(level),
        }
    }
}

/// The `log` filter of a slog level.
pub fn level_filter(level: Level) -> log::LevelFilter {
    match level {
        Level::Critical | Level::Error => log::LevelFilter::Error,
        Level::Warning => log::LevelFilter::Warn,
        Level::Info => log::LevelFilter::Info,
        Level::Debug => log::LevelFilter::Debug,
        Level::Trace => log::LevelFilter::Trace,
    }
}

/// The slog level of a `log` level.
pub fn slog_level(level: log::Level) -> Level {
    match level {
        log::Level::Error => Level::Error,
        log::Level::Warn => Level::Warning,
        log::Level::Info => Level::Info,
        log::Level::Debug => Level::Debug,
        log::Level::Trace => Level::Trace,
    }
}

impl log::Log for LogBridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.max
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target = record.target().to_owned();
        let msg = record.args().to_string();
        match slog_level(record.level()) {
            Level::Error | Level::Critical => {
                slog::error!(self.logger, "{}", msg; "module" => target)
            }
            Level::Warning => slog::warn!(self.logger, "{}", msg; "module" => target),
            Level::Info => slog::info!(self.logger, "{}", msg; "module" => target),
            Level::Debug => slog::debug!(self.logger, "{}", msg; "module" => target),
            Level::Trace => slog::trace!(self.logger, "{}", msg; "module" => target),
        }
    }

    fn flush(&self) {}
}

/// Forwards the `tracing` events of dependencies (tonic, h2, hyper) into
/// a slog logger like [`LogBridge`]: each event at or above the level
/// becomes one record with its target as the `module` key and its fields
/// appended to the message. Spans are never enabled and every callsite
/// below the level is registered as uninteresting, so the many trace-level
/// spans and events on h2's hot path cost a cached check each (through
/// `tracing`'s `log` feature instead, each disabled span recorded its
/// fields on every call).
pub struct TracingBridge {
    logger: Logger,
    max: tracing::Level,
}

impl TracingBridge {
    /// A bridge into `logger` passing events up to `level`.
    pub fn new(logger: &Logger, level: Level) -> Self {
        Self {
            logger: logger.new(o!("source" => "dependency")),
            max: match level {
                Level::Critical | Level::Error => tracing::Level::ERROR,
                Level::Warning => tracing::Level::WARN,
                Level::Info => tracing::Level::INFO,
                Level::Debug => tracing::Level::DEBUG,
                Level::Trace => tracing::Level::TRACE,
            },
        }
    }

    fn wanted(&self, meta: &tracing::Metadata<'_>) -> bool {
        meta.is_event() && *meta.level() <= self.max
    }
}

/// An event's message and fields as one line: `message k=v k=v`.
#[derive(Default)]
struct EventText(String);

impl tracing::field::Visit for EventText {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let sep = if self.0.is_empty() { "" } else { " " };
        // Writing to a String cannot fail.
        let _ = if field.name() == "message" {
            write!(self.0, "{sep}{value:?}")
        } else {
            write!(self.0, "{sep}{}={value:?}", field.name())
        };
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            let sep = if self.0.is_empty() { "" } else { " " };
            self.0.push_str(sep);
            self.0.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

impl tracing::Subscriber for TracingBridge {
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if self.wanted(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        self.wanted(meta)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::from_level(self.max))
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        // Never called: no span is enabled. An id is still required.
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let meta = event.metadata();
        if !self.wanted(meta) {
            return;
        }
        let mut text = EventText::default();
        event.record(&mut text);
        let (msg, target) = (text.0, meta.target());
        match *meta.level() {
            tracing::Level::ERROR => slog::error!(self.logger, "{}", msg; "module" => target),
            tracing::Level::WARN => slog::warn!(self.logger, "{}", msg; "module" => target),
            tracing::Level::INFO => slog::info!(self.logger, "{}", msg; "module" => target),
            tracing::Level::DEBUG => slog::debug!(self.logger, "{}", msg; "module" => target),
            tracing::Level::TRACE => slog::trace!(self.logger, "{}", msg; "module" => target),
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Sends every `log` record and `tracing` event of this process's
/// dependencies to `logger` (up to `level`). The first call wins; later
/// ones (a second node in one test process) keep the first bridges.
pub fn bridge_dependency_logs(logger: &Logger, level: &str) {
    let level = parse_level(level).unwrap_or(Level::Info);
    if log::set_boxed_logger(Box::new(LogBridge::new(logger, level))).is_ok() {
        log::set_max_level(level_filter(level));
    }
    // Err: a dispatcher is set already (an earlier node in this process).
    let _ = tracing::subscriber::set_global_default(TracingBridge::new(logger, level));
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use slog::{debug, info};

    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn run(format: LogFormat, level: &str) -> String {
        let out = Shared::default();
        let section = LogSection {
            format,
            level: level.into(),
        };
        let (log, guard) = root_logger(&section, out.clone());
        info!(log, "node ready"; "broker" => "127.0.0.1:10911");
        debug!(log, "hidden at info");
        drop(log);
        drop(guard); // flushes the async queue
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_lines_carry_message_and_keys() {
        let text = run(LogFormat::Json, "info");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(lines[0].starts_with('{') && lines[0].ends_with('}'));
        assert!(lines[0].contains("\"msg\":\"node ready\""), "{text}");
        assert!(
            lines[0].contains("\"broker\":\"127.0.0.1:10911\""),
            "{text}"
        );
    }

    #[test]
    fn text_respects_level() {
        let text = run(LogFormat::Text, "debug");
        assert!(
            text.contains("node ready") && text.contains("hidden at info"),
            "{text}"
        );
        let text = run(LogFormat::Text, "warn");
        assert!(text.is_empty(), "{text}");
    }

    /// A writer that blocks until released, so the channel fills up.
    #[derive(Clone)]
    struct Gate {
        out: Shared,
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
    }
    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cvar) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cvar.wait(open).unwrap();
            }
            self.out.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn overflow_is_counted_reported_and_never_drops_errors() {
        let out = Shared::default();
        let open = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let gate = Gate {
            out: out.clone(),
            open: open.clone(),
        };
        let section = LogSection {
            format: LogFormat::Text,
            level: "info".into(),
        };
        // A 4-record channel, no periodic report during the test.
        let (log, guard) = root_logger_with(&section, gate, 4, Duration::from_secs(3600));
        for i in 0..100 {
            info!(log, "filler {}", i);
        }
        assert!(guard.dropped() >= 90, "dropped {}", guard.dropped());
        // An error waits for room: release the writer from another thread
        // once this thread is blocked in the error's send.
        let releaser = {
            let open = open.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                *open.0.lock().unwrap() = true;
                open.1.notify_all();
            })
        };
        for i in 0..20 {
            slog::error!(log, "important {}", i);
        }
        releaser.join().unwrap();
        let dropped = guard.dropped();
        drop(log);
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        for i in 0..20 {
            assert!(
                text.contains(&format!("important {i}")),
                "error {i} kept: {text}"
            );
        }
        assert!(
            text.contains(&format!("log drain dropped {dropped} messages")),
            "{text}"
        );
    }

    #[test]
    fn dependency_records_reach_the_drain() {
        use log::Log as _;
        let buf = Shared::default();
        let section = LogSection {
            format: LogFormat::Json,
            level: "info".into(),
        };
        let (log, guard) = root_logger(&section, buf.clone());
        let bridge = LogBridge::new(&log, Level::Info);
        bridge.log(
            &log::Record::builder()
                .level(log::Level::Warn)
                .target("actix_server::worker")
                .args(format_args!("worker stopped"))
                .build(),
        );
        bridge.log(
            &log::Record::builder()
                .level(log::Level::Debug)
                .target("h2::codec")
                .args(format_args!("too detailed"))
                .build(),
        );
        drop(bridge);
        drop(log);
        drop(guard);
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(out.contains("worker stopped"), "{out}");
        assert!(out.contains("actix_server::worker"), "{out}");
        assert!(!out.contains("too detailed"), "{out}");
    }

    #[test]
    fn dependency_tracing_events_reach_the_drain() {
        let buf = Shared::default();
        let section = LogSection {
            format: LogFormat::Json,
            level: "info".into(),
        };
        let (log, guard) = root_logger(&section, buf.clone());
        let bridge = TracingBridge::new(&log, Level::Info);
        tracing::subscriber::with_default(bridge, || {
            tracing::warn!(target: "h2::proto", peer = 7, "connection error");
            tracing::debug!(target: "h2::codec", "too detailed");
            let span = tracing::info_span!("poll");
            assert!(span.is_disabled(), "spans are never enabled");
        });
        drop(log);
        drop(guard);
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(out.contains("connection error peer=7"), "{out}");
        assert!(out.contains("h2::proto"), "{out}");
        assert!(out.contains("dependency"), "{out}");
        assert!(!out.contains("too detailed"), "{out}");
    }

    #[test]
    fn level_names() {
        assert_eq!(parse_level("warn"), Some(Level::Warning));
        assert_eq!(parse_level("loud"), None);
    }
}
