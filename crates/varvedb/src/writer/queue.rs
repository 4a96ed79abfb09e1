//! Group commit: the commit queue and its committer thread.
//!
//! Appenders (threads or tasks) prepare their records outside any lock, push them here as one
//! [`Request`] and wait for its answer. One committer thread per store takes every request that
//! is waiting, writes them all in one LMDB write transaction with one flush
//! ([`commit::commit_group`](super::commit::commit_group)) and answers each request with its own
//! result: a conflict fails only its own request.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::{self, JoinHandle};

use super::Appended;
use super::commit::{self, StreamAppend};
use crate::error::{Error, Result};
use crate::storage::{Inner, Storage};

/// What a request's waiter receives.
pub(crate) type Outcome = Result<Vec<Appended>>;

/// Where the answer of a request goes.
pub(crate) enum Reply {
    /// A thread blocked in `recv`.
    Sync(std::sync::mpsc::SyncSender<Outcome>),
    /// A task awaiting the receiver.
    Async(tokio::sync::oneshot::Sender<Outcome>),
}

impl Reply {
    fn send(self, outcome: Outcome) {
        // A waiter that has gone away (a dropped future) no longer wants the answer; its append
        // committed or failed all the same.
        match self {
            Reply::Sync(tx) => drop(tx.send(outcome)),
            Reply::Async(tx) => drop(tx.send(outcome)),
        }
    }
}

/// One atomic append: every stream's events, or none.
pub(crate) struct Request {
    pub(crate) appends: Vec<StreamAppend>,
    pub(crate) reply: Reply,
}

impl Request {
    fn events(&self) -> usize {
        self.appends.iter().map(|a| a.events.len()).sum()
    }
}

#[derive(Default)]
struct State {
    pending: VecDeque<Request>,
    shutdown: bool,
}

/// The queue between appenders and the committer.
#[derive(Default)]
pub(crate) struct CommitQueue {
    state: Mutex<State>,
    wake: Condvar,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state is a queue and a flag, consistent between statements.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CommitQueue {
    /// Queues a request; the committer answers it through its reply.
    pub(crate) fn push(&self, request: Request) {
        let mut state = lock(&self.state);
        if state.shutdown {
            drop(state);
            request.reply.send(Err(Error::Poisoned {
                reason: "the store is closing".into(),
            }));
            return;
        }
        state.pending.push_back(request);
        drop(state);
        self.wake.notify_one();
    }

    /// Waits for requests and takes those waiting, up to `events_max` events (always at least
    /// one request). `None` once the queue shuts down and is empty.
    fn take(&self, events_max: usize) -> Option<Vec<Request>> {
        let mut state = lock(&self.state);
        while state.pending.is_empty() {
            if state.shutdown {
                return None;
            }
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let mut group = Vec::new();
        let mut events = 0;
        while let Some(next) = state.pending.front() {
            let n = next.events();
            if !group.is_empty() && events + n > events_max {
                break;
            }
            events += n;
            group.extend(state.pending.pop_front());
        }
        Some(group)
    }

    fn shutdown(&self) {
        lock(&self.state).shutdown = true;
        self.wake.notify_all();
    }
}

/// The committer thread of one store, stopped when the store closes.
#[derive(Default)]
pub(crate) struct Committer {
    queue: Arc<CommitQueue>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Committer {
    /// Starts the thread that commits for the store `inner` points to.
    pub(crate) fn start(&self, inner: Weak<Inner>, events_max: usize) -> Result<()> {
        let queue = Arc::clone(&self.queue);
        let thread = thread::Builder::new()
            .name("varvedb-commit".into())
            .spawn(move || run(&queue, &inner, events_max))
            .map_err(|source| Error::Io {
                path: "varvedb-commit thread".into(),
                source,
            })?;
        *self.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(thread);
        Ok(())
    }

    pub(crate) fn queue(&self) -> &CommitQueue {
        &self.queue
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.queue.shutdown();
        let handle = self
            .thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // The store may close on the committer itself (it held the last handle while it
        // answered); a thread cannot join itself, and it is about to return anyway.
        if let Some(handle) = handle
            && handle.thread().id() != thread::current().id()
        {
            // A panic of the committer was already reported to every waiter as a closed channel.
            drop(handle.join());
        }
    }
}

fn run(queue: &CommitQueue, inner: &Weak<Inner>, events_max: usize) {
    while let Some(mut group) = queue.take(events_max) {
        let Some(storage) = Storage::from_weak(inner) else {
            for request in group {
                request.reply.send(Err(Error::Poisoned {
                    reason: "the store is closed".into(),
                }));
            }
            return;
        };
        let outcomes = commit::commit_group(&storage, &mut group);
        for (request, outcome) in group.into_iter().zip(outcomes) {
            request.reply.send(outcome);
        }
        drop(storage);
    }
}
