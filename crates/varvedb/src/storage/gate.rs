//! The resize gate: counts open read transactions so that the map can be resized safely.
//!
//! LMDB's `mdb_env_set_mapsize` may only run while no transaction of this process is active,
//! because it may move the map and every zero-copy reference into it. Readers enter the gate when
//! they begin a transaction and leave when it ends; a resize closes the gate to new readers,
//! waits (bounded) until the last one leaves, resizes, and reopens it.
//!
//! A thread that already holds a snapshot is let in even while a resize waits: holding it back
//! would make it wait for itself (a thread that holds a `ReadTxn` and asks for another, or for
//! `stats`). The resize then waits for all of that thread's snapshots to end, or gives up.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    readers: usize,
    /// Open snapshots by the thread that began them.
    by_thread: HashMap<ThreadId, usize>,
    resizing: bool,
}

/// Readers stayed inside longer than a resize could wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocked {
    /// Readers still inside.
    pub(crate) read_txns: usize,
    /// How long the resize waited.
    pub(crate) waited_ms: u64,
}

#[derive(Default)]
pub(crate) struct Gate {
    state: Mutex<State>,
    changed: Condvar,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is updated completely under the lock; a panic elsewhere cannot leave it
        // half-written, so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a reader of the current thread, waiting while a resize is under way unless
    /// this thread is already inside. Returns the thread to hand back to [`leave`](Self::leave).
    pub(crate) fn enter(&self) -> ThreadId {
        let me = thread::current().id();
        let mut state = self.lock();
        while state.resizing && !state.by_thread.contains_key(&me) {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.readers += 1;
        *state.by_thread.entry(me).or_default() += 1;
        me
    }

    /// Unregisters a reader that `owner` registered (it may end on another thread).
    pub(crate) fn leave(&self, owner: ThreadId) {
        let mut state = self.lock();
        state.readers = state.readers.saturating_sub(1);
        if let Some(n) = state.by_thread.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                state.by_thread.remove(&owner);
            }
        }
        if state.readers == 0 {
            self.changed.notify_all();
        }
    }

    pub(crate) fn readers(&self) -> usize {
        self.lock().readers
    }

    /// Whether a resize waits for the readers inside (new readers are held back).
    #[cfg(feature = "__internals")]
    pub(crate) fn resize_waiting(&self) -> bool {
        self.lock().resizing
    }

    /// Whether the current thread holds a snapshot.
    pub(crate) fn held_by_current_thread(&self) -> bool {
        self.lock().by_thread.contains_key(&thread::current().id())
    }

    /// Runs `f` with no reader inside the gate and new readers held back. Gives up when readers
    /// stay longer than `wait`.
    pub(crate) fn exclusive<T>(&self, wait: Duration, f: impl FnOnce() -> T) -> Result<T, Blocked> {
        let started = Instant::now();
        let mut state = self.lock();
        state.resizing = true;
        let (mut state, _) = self
            .changed
            .wait_timeout_while(state, wait, |s| s.readers > 0)
            .unwrap_or_else(PoisonError::into_inner);
        let result = if state.readers > 0 {
            Err(Blocked {
                read_txns: state.readers,
                waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            })
        } else {
            Ok(f())
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
