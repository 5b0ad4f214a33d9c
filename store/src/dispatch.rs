//! The dispatch step: follows the commit log and builds consume queues (and
//! the key index) from it.

/// Progress of one dispatch call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchProgress {
    /// Records dispatched by this call.
    pub dispatched: usize,
    /// Commit log offset the next dispatch starts from.
    pub next_offset: u64,
    /// Whether the dispatcher reached the end of the published log.
    pub caught_up: bool,
}

/// Dispatcher state (guarded by the store's dispatch mutex).
#[derive(Debug)]
pub(crate) struct Dispatcher {
    /// Next commit log offset to dispatch.
    pub(crate) reput: u64,
}
