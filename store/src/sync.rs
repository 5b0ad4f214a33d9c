//! Synchronisation primitives, switched to [loom] under `cfg(actormq_loom)`.
//!
//! Every piece of lock-free or lock-based shared state in this crate (segment
//! write/flush positions, the segment reference count, the group-commit queue)
//! imports its primitives from here, never from `std::sync` directly, so the
//! loom models in `loom_tests` explore the real code.

#[cfg(actormq_loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
    #[allow(unused_imports)]
    pub(crate) use loom::thread;
}

#[cfg(not(actormq_loom))]
mod imp {
    #[allow(unused_imports)]
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    #[allow(unused_imports)]
    pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
    #[allow(unused_imports)]
    pub(crate) use std::thread;

    /// `std::cell::UnsafeCell` with loom's closure-based API.
    #[derive(Debug)]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    #[allow(dead_code)]
    impl<T> UnsafeCell<T> {
        /// Wraps a value.
        pub(crate) const fn new(v: T) -> Self {
            Self(std::cell::UnsafeCell::new(v))
        }
        /// Runs `f` with a shared raw pointer to the value.
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
        /// Runs `f` with a mutable raw pointer to the value.
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

pub(crate) use imp::*;

/// Locks a mutex, ignoring poisoning (the protected state stays consistent
/// because every critical section in this crate is panic-free on its data).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Read-locks a `RwLock`, ignoring poisoning.
#[cfg(not(actormq_loom))]
pub(crate) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    match m.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Read-locks a `RwLock`, ignoring poisoning.
#[cfg(actormq_loom)]
pub(crate) fn read<T>(m: &RwLock<T>) -> loom::sync::RwLockReadGuard<'_, T> {
    match m.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Write-locks a `RwLock`, ignoring poisoning.
#[cfg(not(actormq_loom))]
pub(crate) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    match m.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Write-locks a `RwLock`, ignoring poisoning.
#[cfg(actormq_loom)]
pub(crate) fn write<T>(m: &RwLock<T>) -> loom::sync::RwLockWriteGuard<'_, T> {
    match m.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
