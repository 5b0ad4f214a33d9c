//! `StatsHistory`: the last minutes of the node's traffic, sampled every
//! 2 s, so a page shows history as soon as it loads (`GET /api/stats`).
//!
//! A plain struct behind a mutex: the sampler records totals, the HTTP
//! handlers copy it out. Rates are computed from consecutive totals.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// How often the node samples (2 s).
pub const SAMPLE_INTERVAL_MS: u64 = 2_000;
/// How much history is kept (5 min).
pub const KEEP_MS: u64 = 5 * 60 * 1_000;

/// One sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// When (ms since the epoch).
    pub ts_ms: u64,
    /// Messages stored per second since the previous sample.
    pub tps_in: f64,
    /// Messages delivered to consumers per second since the previous sample.
    pub tps_out: f64,
    /// Messages stored since the node started.
    pub messages_in_total: u64,
    /// Messages delivered since the node started.
    pub messages_out_total: u64,
    /// Sum of the consumer lag over every group and queue of this broker.
    pub total_lag: u64,
}

/// What `GET /api/stats` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// Now (ms since the epoch).
    pub now_ms: u64,
    /// Oldest first.
    pub samples: Vec<Sample>,
}

/// The samples of the last [`KEEP_MS`].
#[derive(Debug, Default)]
pub struct StatsHistory {
    samples: Mutex<VecDeque<Sample>>,
}

impl StatsHistory {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the totals at `ts_ms`; drops samples older than
    /// [`KEEP_MS`]. A sample at or before the previous one is ignored.
    pub fn record(
        &self,
        ts_ms: u64,
        messages_in_total: u64,
        messages_out_total: u64,
        total_lag: u64,
    ) {
        let mut s = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let (tps_in, tps_out) = match s.back() {
            Some(prev) if prev.ts_ms >= ts_ms => return,
            Some(prev) => {
                let secs = (ts_ms - prev.ts_ms) as f64 / 1000.0;
                (
                    messages_in_total.saturating_sub(prev.messages_in_total) as f64 / secs,
                    messages_out_total.saturating_sub(prev.messages_out_total) as f64 / secs,
                )
            }
            None => (0.0, 0.0),
        };
        s.push_back(Sample {
            ts_ms,
            tps_in,
            tps_out,
            messages_in_total,
            messages_out_total,
            total_lag,
        });
        while s
            .front()
            .is_some_and(|f| f.ts_ms.saturating_add(KEEP_MS) < ts_ms)
        {
            s.pop_front();
        }
    }

    /// A copy of the history.
    pub fn snapshot(&self) -> StatsSnapshot {
        let s = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        StatsSnapshot {
            now_ms: now_ms(),
            samples: s.iter().copied().collect(),
        }
    }

    /// The latest sample.
    pub fn latest(&self) -> Option<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .back()
            .copied()
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_consecutive_totals() {
        let h = StatsHistory::new();
        h.record(10_000, 0, 0, 0);
        h.record(12_000, 100, 50, 50);
        let s = h.snapshot().samples;
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].tps_in, 0.0);
        assert_eq!(s[1].tps_in, 50.0);
        assert_eq!(s[1].tps_out, 25.0);
        assert_eq!(s[1].total_lag, 50);
        // Not after the last one: ignored.
        h.record(12_000, 200, 50, 0);
        assert_eq!(h.snapshot().samples.len(), 2);
    }

    #[test]
    fn keeps_five_minutes() {
        let h = StatsHistory::new();
        for i in 0..400u64 {
            h.record(i * SAMPLE_INTERVAL_MS, i, i, 0);
        }
        let s = h.snapshot().samples;
        let span = s.last().unwrap().ts_ms - s[0].ts_ms;
        assert!(span <= KEEP_MS, "{span}");
        assert_eq!(s.len() as u64, KEEP_MS / SAMPLE_INTERVAL_MS + 1);
    }
}
