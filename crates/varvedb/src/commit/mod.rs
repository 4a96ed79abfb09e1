//! Group commit, above the storage layer: prepared appends, the commit queue, the committer
//! thread and the commit of a group in one transaction.
//!
//! The writer prepares records and hands them to the store's [`Committer`], which the store
//! holds only as an [`Attached`](crate::storage::Attached) service: storage never sees a queue
//! or a typed event. The committer starts with the first append to a store, and stops (after
//! answering what is queued) when the store closes.

mod group;
mod queue;

use std::any::Any;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use rkyv::util::AlignedVec;

use crate::error::{Error, Result};
use crate::expected::{Appended, ExpectedVersion};
use crate::storage::{Attached, BlobRef, Storage, TypeKey, WeakStorage};
pub(crate) use queue::{CommitQueue, committer_gone};

/// What a request's waiter receives.
pub(crate) type Outcome = Result<Vec<Appended>>;

/// One atomic append (every stream's events, or none), or, with no appends, a flush request.
pub(crate) struct Request {
    pub(crate) appends: Vec<StreamAppend>,
    /// A conditional append's condition, checked in the commit.
    pub(crate) condition: Option<Condition>,
    pub(super) reply: queue::Reply,
    /// The appending thread holds a snapshot of the store while it waits: a growth of the map
    /// would wait for that snapshot, and so for this append's own answer.
    pub(super) holds_snapshot: bool,
}

impl Request {
    pub(super) fn events(&self) -> usize {
        self.appends.iter().map(|a| a.events.len()).sum()
    }

    /// A request to flush, answered once everything before it is durable.
    pub(crate) fn is_flush(&self) -> bool {
        self.appends.is_empty()
    }
}

/// A record whose payload is serialized and digested, waiting for its stream, version and seq.
pub(crate) struct Prepared {
    /// Header placeholder, body (envelope section, then payload or blob reference), zero
    /// padding: the exact bytes stored.
    pub(crate) record: AlignedVec,
    /// The body's length, as the header announces it.
    pub(crate) payload_len: u32,
    /// xxh3-64 of the body, which the record checksum folds in.
    pub(crate) digest: u64,
    /// xxh3-64 of the payload alone: what tells a retried event from another with its id.
    pub(crate) payload_digest: u64,
    /// The event id of the append's options, little-endian (bytes rather than a `u128`, whose
    /// 16-byte alignment would double the size of every prepared event).
    pub(crate) event_id: Option<[u8; 16]>,
    /// Record flags: [`FLAG_BLOB`](crate::storage::FLAG_BLOB) when the payload goes
    /// to the blob store.
    pub(crate) flags: u8,
    /// The payload of a blob record, which the record only references (boxed: most events are
    /// not blobs, and a prepared event is moved several times on its way to the commit).
    pub(crate) blob: Option<Box<Blob>>,
    /// The event's type, as the writer's `Event` says.
    pub(crate) event_type: TypeKey<'static>,
    /// Its id in the store, set by the commit.
    pub(crate) type_id: u32,
}

/// A payload bound for the blob store.
pub(crate) struct Blob {
    pub(crate) reference: BlobRef,
    /// The serialization buffer: a header placeholder and the envelope section, then from
    /// `offset` the payload zero-padded to 16 (the stored blob).
    pub(crate) buffer: AlignedVec,
    pub(crate) offset: usize,
}

impl Blob {
    /// The bytes stored in the `blobs` database.
    pub(crate) fn stored(&self) -> &[u8] {
        &self.buffer[self.offset..]
    }
}

/// The condition of a conditional append: no event after `after` matches `query`.
pub(crate) struct Condition {
    pub(crate) query: crate::storage::Query,
    pub(crate) after: Option<u64>,
}

/// The events of one stream inside an atomic append.
pub(crate) struct StreamAppend {
    pub(crate) stream_id: u128,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<Prepared>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every mutex here guards a value that is consistent between statements.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The committer thread of one store and its queue.
pub(crate) struct Committer {
    queue: Arc<CommitQueue>,
    thread: Mutex<Option<JoinHandle<()>>>,
    store: WeakStorage,
}

impl Committer {
    /// The committer of `storage`, started on first use.
    pub(crate) fn of(storage: &Storage) -> Result<&Committer> {
        let attached = storage.attached(|| Arc::new(Committer::start(storage)));
        attached
            .as_any()
            .downcast_ref::<Committer>()
            .ok_or_else(|| Error::Poisoned {
                reason: "the store has a service attached that is not a committer".into(),
            })
    }

    /// Starts the thread that commits for `storage`. If the thread cannot start, the committer
    /// refuses every append with that reason.
    fn start(storage: &Storage) -> Committer {
        let queue = Arc::new(CommitQueue::default());
        let store = storage.downgrade();
        let events_max = storage.config().batch_events_max;
        let spawned = {
            let queue = Arc::clone(&queue);
            let store = store.clone();
            thread::Builder::new()
                .name("varvedb-commit".into())
                .spawn(move || queue::run(&queue, &store, events_max))
        };
        let thread = match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                queue.kill(Some(format!("the committer thread could not start: {e}")));
                None
            }
        };
        Committer {
            queue,
            thread: Mutex::new(thread),
            store,
        }
    }

    pub(crate) fn queue(&self) -> &CommitQueue {
        &self.queue
    }
}

impl Attached for Committer {
    fn flush(&self) -> Result<()> {
        match self.queue.submit_flush() {
            Ok(_) => Ok(()),
            // No committer runs any more: flush the store directly.
            Err(Error::Closed | Error::Poisoned { .. }) => match self.store.upgrade() {
                Some(storage) => storage.sync(),
                None => Ok(()),
            },
            Err(e) => Err(e),
        }
    }

    fn stop(&self) {
        self.queue.shutdown();
        let handle = lock(&self.thread).take();
        // The store may close on the committer itself (it held the last handle while it
        // answered); a thread cannot join itself, and it is about to return anyway.
        if let Some(handle) = handle
            && handle.thread().id() != thread::current().id()
        {
            // A panic of the committer was already reported to every waiter (see `queue`).
            drop(handle.join());
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
