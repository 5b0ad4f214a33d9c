//! The restart decision of a supervisor, as a plain struct (no runtime).
//!
//! A child may fail at most [`RestartPolicy::max_restarts`] times within
//! [`RestartPolicy::window`]; each restart waits a backoff that doubles from
//! [`RestartPolicy::backoff_initial`] up to [`RestartPolicy::backoff_max`].
//! One failure too many and the supervisor escalates instead.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How a supervisor treats a failing child (one-for-one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Most restarts allowed inside `window`. Default 5.
    pub max_restarts: u32,
    /// The sliding window the restarts are counted in. Default 60 s.
    pub window: Duration,
    /// Wait before the first restart. Default 10 ms.
    pub backoff_initial: Duration,
    /// Upper bound of the doubling backoff. Default 1 s.
    pub backoff_max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_secs(1),
        }
    }
}

/// What to do about a child that just died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Start a fresh instance from the factory after this delay.
    Restart {
        /// Backoff before the restart.
        after: Duration,
    },
    /// The restart budget is spent: stop the child for good and escalate.
    Escalate {
        /// Failures counted inside the window, this one included.
        failures_in_window: u32,
    },
}

/// Failure bookkeeping of one child.
#[derive(Debug, Clone)]
pub struct RestartBudget {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
    total_restarts: u64,
}

impl RestartBudget {
    /// A fresh budget under `policy`.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            recent: VecDeque::new(),
            total_restarts: 0,
        }
    }

    /// Record a failure at `now` and decide.
    pub fn on_failure(&mut self, now: Instant) -> RestartDecision {
        while let Some(&first) = self.recent.front() {
            if now.saturating_duration_since(first) > self.policy.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now);
        let failures = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
        if failures > self.policy.max_restarts {
            return RestartDecision::Escalate {
                failures_in_window: failures,
            };
        }
        self.total_restarts += 1;
        let shift = (failures - 1).min(30);
        let after = self
            .policy
            .backoff_initial
            .checked_mul(1u32 << shift)
            .unwrap_or(self.policy.backoff_max)
            .min(self.policy.backoff_max);
        RestartDecision::Restart { after }
    }

    /// Restarts granted since this budget was created.
    pub fn total_restarts(&self) -> u64 {
        self.total_restarts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: u32) -> RestartPolicy {
        RestartPolicy {
            max_restarts: max,
            window: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = RestartBudget::new(policy(10));
        let t = Instant::now();
        let afters: Vec<_> = (0..5)
            .map(|_| match b.on_failure(t) {
                RestartDecision::Restart { after } => after.as_millis(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(afters, vec![10, 20, 40, 50, 50]);
        assert_eq!(b.total_restarts(), 5);
    }

    #[test]
    fn escalates_past_the_budget_inside_the_window() {
        let mut b = RestartBudget::new(policy(2));
        let t = Instant::now();
        assert!(matches!(b.on_failure(t), RestartDecision::Restart { .. }));
        assert!(matches!(b.on_failure(t), RestartDecision::Restart { .. }));
        assert_eq!(
            b.on_failure(t),
            RestartDecision::Escalate {
                failures_in_window: 3
            }
        );
    }

    #[test]
    fn old_failures_leave_the_window() {
        let mut b = RestartBudget::new(policy(2));
        let t = Instant::now();
        b.on_failure(t);
        b.on_failure(t);
        let later = t + Duration::from_secs(11);
        assert_eq!(
            b.on_failure(later),
            RestartDecision::Restart {
                after: Duration::from_millis(10)
            }
        );
    }

    #[test]
    fn zero_budget_escalates_at_once() {
        let mut b = RestartBudget::new(policy(0));
        assert!(matches!(
            b.on_failure(Instant::now()),
            RestartDecision::Escalate { .. }
        ));
    }
}
