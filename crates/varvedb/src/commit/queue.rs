//! The commit queue and the committer thread's loop.
//!
//! Appenders (threads or tasks) prepare their records outside any lock, push them here as one
//! [`Request`] and wait for its answer. One committer thread per store takes every request that
//! is waiting, writes them all in one LMDB write transaction with one flush
//! ([`group::commit_group`]) and answers each request with its own result: a conflict fails only
//! its own request.
//!
//! No append ever waits for a committer that is gone: a panic while committing a group poisons
//! the store and fails that group with [`Error::OutcomeUnknown`]; if the thread ends for any
//! reason, the queue refuses new requests and answers the queued ones (nothing of them was
//! written).

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::group;
use super::{Condition, Outcome, Request, StreamAppend, lock};
use crate::error::{Error, Result};
use crate::storage::{Storage, WRITES_REFUSED, WeakStorage};

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
        // Dropped unanswered (the committer panicked while it held the request): never leave a
        // thread waiting forever. An async waiter sees its sender dropped.
        if let Reply::Sync(slot) = self
            && !slot.answered.load(Ordering::Acquire)
        {
            slot.fill(Err(committer_gone()));
            slot.signal.notify();
        }
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
    /// Why the queue refuses requests: its committer is gone.
    dead: Option<String>,
}

impl State {
    fn refusal(&self) -> Option<Error> {
        if let Some(reason) = &self.dead {
            return Some(Error::Poisoned {
                reason: reason.clone(),
            });
        }
        self.shutdown.then_some(Error::Closed)
    }
}

/// The queue between appenders and the committer.
#[derive(Default)]
pub(crate) struct CommitQueue {
    state: Mutex<State>,
    wake: Condvar,
}

impl CommitQueue {
    /// Queues `appends` and blocks the calling thread until they are committed (or fail).
    /// `holds_snapshot`: the calling thread holds a snapshot of the store.
    pub(crate) fn submit(
        &self,
        appends: Vec<StreamAppend>,
        condition: Option<Condition>,
        holds_snapshot: bool,
    ) -> Outcome {
        let slot = {
            let mut state = lock(&self.state);
            if let Some(refusal) = state.refusal() {
                return Err(refusal);
            }
            let slot = Arc::new(SyncSlot {
                outcome: Mutex::new(None),
                answered: AtomicBool::new(false),
                signal: Arc::clone(&state.forming),
            });
            state.pending.push_back(Request {
                appends,
                condition,
                reply: Reply::Sync(Arc::clone(&slot)),
                holds_snapshot,
            });
            slot
        };
        self.wake.notify_one();
        slot.wait()
    }

    /// Blocks until every append queued before this call is answered and durable.
    pub(crate) fn submit_flush(&self) -> Outcome {
        self.submit(Vec::new(), None, false)
    }

    /// Queues `appends` for a task; the answer arrives on the returned receiver.
    pub(crate) fn submit_async(
        &self,
        appends: Vec<StreamAppend>,
        condition: Option<Condition>,
    ) -> Result<tokio::sync::oneshot::Receiver<Outcome>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut state = lock(&self.state);
            if let Some(refusal) = state.refusal() {
                return Err(refusal);
            }
            // A task may hold a snapshot, but not pinned to this thread: not flagged.
            state.pending.push_back(Request {
                appends,
                condition,
                reply: Reply::Async(Some(tx)),
                holds_snapshot: false,
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

    /// Puts requests back at the front of the queue, in their order, for the next group.
    fn requeue_front(&self, requests: Vec<Request>) {
        let mut state = lock(&self.state);
        for request in requests.into_iter().rev() {
            state.pending.push_front(request);
        }
    }

    pub(crate) fn shutdown(&self) {
        lock(&self.state).shutdown = true;
        self.wake.notify_all();
    }

    /// Refuses every later request (with `reason`, or as closed when it is `None`), and
    /// answers the queued ones: none of them was written.
    pub(crate) fn kill(&self, reason: Option<String>) {
        let (pending, refusal) = {
            let mut state = lock(&self.state);
            match reason {
                Some(reason) => drop(state.dead.get_or_insert(reason)),
                None => state.shutdown = true,
            }
            let refusal = state.refusal();
            (std::mem::take(&mut state.pending), refusal)
        };
        let mut answers = Answers::default();
        for request in pending {
            let refused = match &refusal {
                Some(Error::Poisoned { reason }) => Error::Poisoned {
                    reason: reason.clone(),
                },
                _ => Error::Closed,
            };
            answers.ready.push((request.reply, Err(refused)));
        }
        answers.deliver();
    }
}

/// The answer of an append whose committer stopped (panicked) while it held the append.
pub(crate) fn committer_gone() -> Error {
    Error::OutcomeUnknown {
        reason: "the committer thread stopped while it held this append".into(),
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

    /// Flushes the store and releases the held answers; if the flush fails, the appends were
    /// committed but may not be durable, and each says so.
    fn flush(&mut self, storage: &Storage) {
        match storage.sync() {
            Ok(()) => self.release(),
            Err(e) => {
                let reason = match e {
                    Error::NotDurable { reason, .. } => reason,
                    other => other.to_string(),
                };
                for (reply, outcome) in self.held.drain(..) {
                    let outcome = match outcome {
                        Ok(appended) => Err(Error::NotDurable {
                            appended,
                            reason: reason.clone(),
                        }),
                        failed => failed,
                    };
                    self.ready.push((reply, outcome));
                }
            }
        }
    }

    /// The last sequence among the answers about to go out.
    fn ready_head(&self) -> Option<u64> {
        self.ready
            .iter()
            .filter_map(|(_, o)| o.as_ref().ok())
            .flat_map(|appended| appended.iter().map(|a| a.seq))
            .max()
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

/// Kills the queue when the committer thread ends, however it ends (a panic outside the
/// guarded commit included), so that no append waits for it.
struct KillOnExit<'q>(&'q CommitQueue);

impl Drop for KillOnExit<'_> {
    fn drop(&mut self) {
        let reason = std::thread::panicking().then(|| {
            "the committer thread panicked; the store refuses appends until it is reopened"
                .to_string()
        });
        self.0.kill(reason);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "a panic without a message"
    }
}

/// Whether a group failed because the map could not grow while readers stayed.
fn blocked(outcomes: &[Outcome]) -> bool {
    matches!(outcomes.first(), Some(Err(Error::ResizeBlocked { .. })))
}

/// The committer thread's loop.
pub(crate) fn run(queue: &CommitQueue, store: &WeakStorage, events_max: usize) {
    let _kill = KillOnExit(queue);
    let mut answers = Answers::default();
    let mut heads = group::HeadCache::default();
    loop {
        let take = queue.take(events_max, answers.held.is_empty());
        // Closed, or no handle left: the store is closing, so whoever waited for a held answer
        // dropped it with its future. The store flushes what was committed once this thread
        // has stopped, before its environment closes.
        let group = match take {
            Take::Group(group) => Some(group),
            Take::Empty => None,
            Take::Closed => {
                answers.release();
                answers.deliver();
                return;
            }
        };
        let Some(storage) = store.upgrade() else {
            answers.release();
            answers.deliver();
            return;
        };
        match group {
            Some(mut group) => {
                let flush_requested = group.iter().any(Request::is_flush);
                // An appender that holds a snapshot cannot wait for a growth that waits for
                // that snapshot: when one is in the group, growth does not wait for readers.
                let holders = group.iter().any(|r| r.holds_snapshot);
                let resize_wait = if holders {
                    Duration::ZERO
                } else {
                    storage.resize_wait()
                };
                let committed = catch_unwind(AssertUnwindSafe(|| {
                    group::commit_group(&storage, &mut heads, &mut group, resize_wait)
                }));
                let (outcomes, wrote) = committed.unwrap_or_else(|panic| {
                    let reason = format!(
                        "the committer panicked while committing ({}); the store refuses appends until it is reopened",
                        panic_message(panic.as_ref())
                    );
                    storage.refuse(WRITES_REFUSED, reason.clone());
                    heads = group::HeadCache::default();
                    let unknown = group
                        .iter()
                        .map(|_| {
                            Err(Error::OutcomeUnknown {
                                reason: reason.clone(),
                            })
                        })
                        .collect();
                    (unknown, false)
                });
                let (group, outcomes) = if holders && blocked(&outcomes) {
                    // The holders get `ResizeBlocked` now, so that they can let go of their
                    // snapshots; the others go back to the queue and wait for the growth.
                    let (held, others): (Vec<_>, Vec<_>) = group
                        .into_iter()
                        .zip(outcomes)
                        .partition(|(r, _)| r.holds_snapshot);
                    queue.requeue_front(others.into_iter().map(|(r, _)| r).collect());
                    held.into_iter().unzip()
                } else {
                    (group, outcomes)
                };
                let earlier_unflushed = !answers.held.is_empty();
                if wrote {
                    // This commit's data flush also flushed the meta pages written before it.
                    answers.release();
                }
                answers.hold(group.into_iter().map(|r| r.reply).zip(outcomes));
                if flush_requested || storage.is_poisoned() {
                    // Asked for, or the last chance to make what was committed durable.
                    answers.flush(&storage);
                } else if !storage.defers_meta_flush() || (!wrote && !earlier_unflushed) {
                    // Nothing of these answers awaits a flush: without deferred meta flushes,
                    // or when nothing was written and no earlier commit is unflushed
                    // (conflicts decided on unflushed state wait).
                    answers.release();
                }
            }
            None => {
                if !answers.held.is_empty() {
                    answers.flush(&storage);
                }
            }
        }
        // Subscribers learn of the new head as the appends are acknowledged.
        if let Some(seq) = answers.ready_head() {
            storage.publish(seq);
        }
        drop(storage);
        answers.deliver();
    }
}
