//! The binaries' log drain: slog to stderr as text or JSON lines, filtered
//! by level, behind an async drain so logging never blocks an actor.
//!
//! Only binaries and test helpers build drains; libraries take a `&Logger`.

use std::io::Write;

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

/// A root logger writing to `out` per `section`; keep the returned guard
/// alive until exit so queued records are written.
pub fn root_logger<W: Write + Send + 'static>(
    section: &LogSection,
    out: W,
) -> (Logger, slog_async::AsyncGuard) {
    let level = parse_level(&section.level).unwrap_or(Level::Info);
    let (drain, guard) = match section.format {
        LogFormat::Text => {
            let decorator = slog_term::PlainDecorator::new(out);
            let drain = slog_term::FullFormat::new(decorator).build().fuse();
            slog_async::Async::new(drain.filter_level(level).fuse())
                .chan_size(4096)
                .build_with_guard()
        }
        LogFormat::Json => {
            let drain = slog_json::Json::new(out).add_default_keys().build().fuse();
            slog_async::Async::new(drain.filter_level(level).fuse())
                .chan_size(4096)
                .build_with_guard()
        }
    };
    (
        Logger::root(drain.fuse(), o!("pid" => std::process::id())),
        guard,
    )
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

    #[test]
    fn level_names() {
        assert_eq!(parse_level("warn"), Some(Level::Warning));
        assert_eq!(parse_level("loud"), None);
    }
}
