//! Group commit: the commit queue and its committer thread.
//!
//! Appenders (threads or tasks) prepare their records outside any lock, push them here as one
//! [`Request`] and wait for its answer. One committer thread per store takes every request that
//! is waiting, writes them all in one LMDB write transaction with one flush
//! ([`commit::commit_group`](super::commit::commit_group)) and answers each request with its own
//! result: a conflict fails only its own request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::{self, JoinHandle};

use super::Appended;
use super::commit::{self, StreamAppend};
use crate::error::{Error, Result};
use crate::storage::{Inner, Storage};

/// What a request's waiter receives.
pub(crate) type Outcome = Result<Vec<Appended>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutex here guards a value that is consistent between statements.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The condition that the sync appenders queued between two takes wait on: the committer wakes
/// a whole group with one `notify_all`, rather than with one wake-up call per appender.
#[derive(Default)]
pub(crate) struct Signal {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Signal {
    fn notify(&self) {
        *lock(&self.generation) += 1;
        self.changed.notify_all();
    }
}

/// The answer of one sync append.
pub(crate) struct SyncSlot {
    outcome: Mutex<Option<Outcome>>,
    answered: AtomicBool,
    signal: Arc<Signal>,
}

impl SyncSlot {
    fn fill(&self, outcome: Outcome) {
        *lock(&self.outcome) = Some(outcome);
        self.answered.store(true, Ordering::Release);
    }

    /// Blocks until the committer has answered.
    pub(crate) fn wait(&self) -> Outcome {
        let mut generation = lock(&self.signal.generation);
        loop {
            // Checked under the signal's lock: the committer fills the slot before it takes this
            // lock to notify, so an answer cannot slip between the check and the wait.
            if let Some(outcome) = lock(&self.outcome).take() {
                return outcome;
            }
            generation = self
                .signal
                .changed
                .wait(generation)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Where the answer of a request goes.
pub(crate) enum Reply {
    /// A thread blocked in [`SyncSlot::wait`].
    Sync(Arc<SyncSlot>),
    /// A task awaiting the receiver.
    Async(Option<tokio::sync::oneshot::Sender<Outcome>>),
}

impl Reply {
    /// Delivers the answer; a sync waiter wakes at the next [`wake`] of its signal.
    fn send(mut self, outcome: Outcome) {
        match &mut self {
            Reply::Sync(slot) => slot.fill(outcome),
            // A task that has gone away (a dropped future) no longer wants the answer; its
            // append committed or failed all the same.
            Reply::Async(tx) => {
                if let Some(tx) = tx.take() {
                    drop(tx.send(outcome));
                }
            }
        }
    }

    fn signal(&self) -> Option<&Arc<Signal>> {
        match self {
            Reply::Sync(slot) => Some(&slot.signal),
            Reply::Async(_) => None,
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        // Dropped unanswered (the committer panicked): never leave a thread waiting forever. An
        // async waiter sees its sender dropped.
        if let Reply::Sync(slot) = self
            && !slot.answered.load(Ordering::Acquire)
        {
            slot.fill(Err(committer_gone()));
            slot.signal.notify();
        }
    }
}

/// One atomic append: every stream's events, or none.
pub(crate) struct Request {
    pub(crate) appends: Vec<StreamAppend>,
    reply: Reply,
}

impl Request {
    fn events(&self) -> usize {
        self.appends.iter().map(|a| a.events.len()).sum()
    }
}

enum Take {
    Group(Vec<Request>),
    Empty,
    Closed,
}

#[derive(Default)]
struct State {
    pending: VecDeque<Request>,
    /// The signal of the sync requests queued since the last take.
    forming: Arc<Signal>,
    shutdown: bool,
}

/// The queue between appenders and the committer.
#[derive(Default)]
pub(crate) struct CommitQueue {
    state: Mutex<State>,
    wake: Condvar,
}

impl CommitQueue {
    /// Queues `appends` and blocks the calling thread until they are committed (or fail).
    pub(crate) fn submit(&self, appends: Vec<StreamAppend>) -> Outcome {
        let slot = {
            let mut state = lock(&self.state);
            if state.shutdown {
                return Err(closing());
            }
            let slot = Arc::new(SyncSlot {
                outcome: Mutex::new(None),
                answered: AtomicBool::new(false),
                signal: Arc::clone(&state.forming),
            });
            state.pending.push_back(Request {
                appends,
                reply: Reply::Sync(Arc::clone(&slot)),
            });
            slot
        };
        self.wake.notify_one();
        slot.wait()
    }

    /// Queues `appends` for a task; the answer arrives on the returned receiver.
    pub(crate) fn submit_async(
        &self,
        appends: Vec<StreamAppend>,
    ) -> Result<tokio::sync::oneshot::Receiver<Outcome>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut state = lock(&self.state);
            if state.shutdown {
                return Err(closing());
            }
            state.pending.push_back(Request {
                appends,
                reply: Reply::Async(Some(tx)),
            });
        }
        self.wake.notify_one();
        Ok(rx)
    }

    /// Takes the requests waiting, up to `events_max` events (always at least one request).
    /// With `wait`, blocks until there is one; without, returns [`Take::Empty`] at once.
    fn take(&self, events_max: usize, wait: bool) -> Take {
        let mut state = lock(&self.state);
        while state.pending.is_empty() {
            if state.shutdown {
                return Take::Closed;
            }
            if !wait {
                return Take::Empty;
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
        // Appenders that arrive from now on wait on a fresh signal, woken with their own group.
        state.forming = Arc::default();
        Take::Group(group)
    }

    fn shutdown(&self) {
        lock(&self.state).shutdown = true;
        self.wake.notify_all();
    }
}

/// The answer of an append whose committer stopped (panicked) before answering it.
pub(crate) fn committer_gone() -> Error {
    Error::Poisoned {
        reason: "the committer thread stopped without answering".into(),
    }
}

fn closing() -> Error {
    Error::Poisoned {
        reason: "the store is closing".into(),
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
        *lock(&self.thread) = Some(thread);
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
            // A panic of the committer was already reported to every waiter (see `Reply`).
            drop(handle.join());
        }
    }
}

/// Answers committed but not yet durable, waiting for the next flush.
///
/// With [`Durability::Sync`](crate::Durability::Sync) the environment runs with LMDB's
/// `MDB_NOMETASYNC`: a commit flushes its data pages once, and writes its meta page without a
/// flush. That meta page reaches the disk with the next flush of the file: the data flush of the
/// next commit, or an explicit `mdb_env_sync` when no commit follows. Answers wait for that
/// flush, so an acknowledged append is always durable, while a busy store pays one flush per
/// commit instead of two. See docs/design.md, "Group commit".
#[derive(Default)]
struct Answers {
    held: Vec<(Reply, Outcome)>,
    /// Answers decided, sent by [`deliver`](Self::deliver) once the committer has let go of
    /// its handle to the store.
    ready: Vec<(Reply, Outcome)>,
    signals: Vec<Arc<Signal>>,
}

impl Answers {
    fn hold(&mut self, answers: impl IntoIterator<Item = (Reply, Outcome)>) {
        self.held.extend(answers);
    }

    /// The answers held back are now true on disk: they may go out.
    fn release(&mut self) {
        self.ready.append(&mut self.held);
    }

    /// The flush failed: the appends' fate is unknown, so none may be acknowledged.
    fn fail(&mut self, reason: &str) {
        for (reply, outcome) in self.held.drain(..) {
            self.ready.push((
                reply,
                outcome.and(Err(Error::Poisoned {
                    reason: format!(
                        "the flush after this append's commit failed, so it may or may not be durable: {reason}"
                    ),
                })),
            ));
        }
    }

    /// Sends the answers that may go out. Called with no handle to the store held, so that a
    /// caller that drops its last handle on return closes the store at once (and may reopen the
    /// path with another configuration).
    fn deliver(&mut self) {
        for (reply, outcome) in self.ready.drain(..) {
            self.signals.extend(reply.signal().cloned());
            reply.send(outcome);
        }
        self.wake();
    }

    /// Wakes each group whose answers were delivered, once.
    fn wake(&mut self) {
        self.signals.sort_unstable_by_key(Arc::as_ptr);
        self.signals.dedup_by(|a, b| Arc::ptr_eq(a, b));
        for signal in self.signals.drain(..) {
            signal.notify();
        }
    }
}

fn run(queue: &CommitQueue, inner: &Weak<Inner>, events_max: usize) {
    let mut answers = Answers::default();
    let mut heads = commit::HeadCache::default();
    loop {
        let take = queue.take(events_max, answers.held.is_empty());
        // Reachable only while someone holds a handle: dropped requests answer themselves.
        let Some(storage) = Storage::from_weak(inner) else {
            return;
        };
        let closed = matches!(take, Take::Closed);
        match take {
            Take::Group(mut group) => {
                let (outcomes, wrote) = commit::commit_group(&storage, &mut heads, &mut group);
                let earlier_unflushed = !answers.held.is_empty();
                let poisoned = storage.poisoned();
                if let Some(reason) = &poisoned {
                    answers.fail(reason);
                } else if wrote {
                    // This commit's data flush also flushed the meta pages written before it.
                    answers.release();
                }
                answers.hold(group.into_iter().map(|r| r.reply).zip(outcomes));
                // This group's answers go out now if nothing of theirs awaits a flush: without
                // deferred meta flushes, after a failure, or when nothing was written and no
                // earlier commit is unflushed (conflicts decided on unflushed state wait).
                if !storage.defers_meta_flush()
                    || poisoned.is_some()
                    || (!wrote && !earlier_unflushed)
                {
                    answers.release();
                }
            }
            Take::Empty | Take::Closed => {
                if !answers.held.is_empty() {
                    match storage.flush() {
                        Ok(()) => answers.release(),
                        Err(e) => answers.fail(&e.to_string()),
                    }
                }
            }
        }
        drop(storage);
        answers.deliver();
        if closed {
            return;
        }
    }
}
