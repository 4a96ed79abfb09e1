//! The resize gate: counts open read transactions so that the map can be resized safely.
//!
//! LMDB's `mdb_env_set_mapsize` may only run while no transaction of this process is active,
//! because it may move the map and every zero-copy reference into it. Readers enter the gate when
//! they begin a transaction and leave when it ends; a resize closes the gate to new readers,
//! waits (bounded) until the last one leaves, resizes, and reopens it.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

#[derive(Default)]
struct State {
    readers: usize,
    resizing: bool,
}

#[derive(Default)]
pub(crate) struct Gate {
    state: Mutex<State>,
    changed: Condvar,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two plain fields updated atomically under the lock; a panic elsewhere
        // cannot leave them half-written, so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a reader, waiting while a resize is under way.
    pub(crate) fn enter(&self) {
        let mut state = self.lock();
        while state.resizing {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.readers += 1;
    }

    pub(crate) fn leave(&self) {
        let mut state = self.lock();
        state.readers = state.readers.saturating_sub(1);
        if state.readers == 0 {
            self.changed.notify_all();
        }
    }

    pub(crate) fn readers(&self) -> usize {
        self.lock().readers
    }

    /// Runs `f` with no reader inside the gate and new readers held back. Gives up with
    /// [`Error::ResizeBlocked`] when readers stay longer than `wait`.
    pub(crate) fn exclusive<T>(&self, wait: Duration, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let mut state = self.lock();
        state.resizing = true;
        let (mut state, _) = self
            .changed
            .wait_timeout_while(state, wait, |s| s.readers > 0)
            .unwrap_or_else(PoisonError::into_inner);
        let result = if state.readers > 0 {
            Err(Error::ResizeBlocked {
                read_txns: state.readers,
                waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            })
        } else {
            f()
        };
        state.resizing = false;
        self.changed.notify_all();
        result
    }

    /// Runs `f` only if no reader is inside the gate right now, holding new readers back while
    /// it runs. Returns `None` without waiting when there is a reader.
    pub(crate) fn try_exclusive<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        let mut state = self.lock();
        if state.readers > 0 {
            return None;
        }
        state.resizing = true;
        let result = f();
        state.resizing = false;
        self.changed.notify_all();
        Some(result)
    }
}
