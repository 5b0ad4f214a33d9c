//! The accept loop's decisions as plain structs: back off when the process
//! is out of descriptors, and log repeated conditions once per interval.
//!
//! Out of file descriptors (`EMFILE`/`ENFILE`), `accept` fails at once
//! again and again while the pending connection stays in the backlog; a
//! loop that retries immediately spins on the CPU and floods the log. So a
//! resource error pauses accepting for a backoff that doubles from
//! [`AcceptBackoff::INITIAL`] to [`AcceptBackoff::MAX`] and resets on the
//! next successful accept; other errors (a peer that reset before it was
//! accepted) are retried at once.

use std::io;
use std::time::{Duration, Instant};

/// Whether an accept error means the process or system ran out of a
/// resource (descriptors, buffers, memory): retrying at once cannot work.
pub fn is_resource_exhaustion(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The pause after accept errors. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct AcceptBackoff {
    current: Option<Duration>,
}

impl AcceptBackoff {
    /// First pause after a resource error.
    pub const INITIAL: Duration = Duration::from_millis(10);
    /// Longest pause.
    pub const MAX: Duration = Duration::from_secs(1);

    /// An accept failed; returns how long to pause (`None`: retry at once).
    pub fn on_error(&mut self, resource_exhausted: bool) -> Option<Duration> {
        if !resource_exhausted {
            return None;
        }
        let next = match self.current {
            None => Self::INITIAL,
            Some(d) => (d * 2).min(Self::MAX),
        };
        self.current = Some(next);
        Some(next)
    }

    /// An accept succeeded: the next resource error starts from
    /// [`Self::INITIAL`] again.
    pub fn on_accept(&mut self) {
        self.current = None;
    }
}

/// Lets a repeated log line through once per interval, with the number of
/// occurrences it stands for.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    interval: Duration,
    last: Option<Instant>,
    pending: u64,
}

impl LogThrottle {
    /// A throttle that logs at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            pending: 0,
        }
    }

    /// One more occurrence at `now`: `Some(n)` = log now, standing for `n`
    /// occurrences (this one included); `None` = stay quiet.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.pending += 1;
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.pending))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_errors_back_off_doubling_to_the_cap_and_reset() {
        let mut b = AcceptBackoff::default();
        let pauses: Vec<_> = (0..9)
            .map(|_| b.on_error(true).unwrap().as_millis())
            .collect();
        assert_eq!(pauses, vec![10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(b.on_error(false), None, "other errors retry at once");
        b.on_accept();
        assert_eq!(b.on_error(true), Some(AcceptBackoff::INITIAL));
    }

    #[test]
    fn descriptor_exhaustion_is_recognised() {
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(is_resource_exhaustion(&io::Error::from_raw_os_error(code)));
        }
        assert!(!is_resource_exhaustion(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
        assert!(!is_resource_exhaustion(&io::Error::other("x")));
    }

    #[test]
    fn throttle_logs_once_per_interval_with_a_count() {
        let mut t = LogThrottle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(t.hit(t0), Some(1));
        for i in 1..=99 {
            assert_eq!(t.hit(t0 + Duration::from_millis(i * 5)), None);
        }
        assert_eq!(t.hit(t0 + Duration::from_secs(1)), Some(100));
        assert_eq!(t.hit(t0 + Duration::from_secs(3)), Some(1));
    }
}
