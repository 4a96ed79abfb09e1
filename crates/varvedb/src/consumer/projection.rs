//! Exactly-once projections: a handler that keeps its read model in a named database of the
//! store (`projection/<name>`) and writes it in the same transaction that advances its cursor.
//! A crash can then never apply an event twice, nor lose one: the model and the cursor commit
//! together or not at all.
//!
//! A batch (up to `batch_events_max` events) is read first, copied out of a snapshot that is
//! then released, and applied in one write transaction through [`Storage::write`]: under the
//! store's write lock, so it takes its turn with the committer's groups (LMDB has one writer).
//! Appenders wait for a projection batch as they wait for another group; `docs/performance.md`
//! measures what a running projection costs them.
//!
//! The handler's own fields must not hold state: a batch's transaction may run again (after the
//! map grows) or abort (a failed `apply`), and only the model is rolled back with it.

use std::future::Future;
use std::time::Duration;

use heed::RwTxn;

use super::processor::HandlerError;
use super::subscription::{OwnedEvent, Subscription, SubscriptionItem};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::reader::{Reader, ValidateEvent};
use crate::storage::{LmdbResultExt, Storage, check_consumer_name, set_consumer_position};

/// A projection's read model, inside the batch's write transaction.
pub struct Model<'a, 't> {
    wtxn: &'a mut RwTxn<'t>,
    db: heed::Database<'static, heed::types::Bytes, heed::types::Bytes>,
}

impl std::fmt::Debug for Model<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").finish_non_exhaustive()
    }
}

impl Model<'_, '_> {
    /// The value under `key`, as this transaction sees it.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        self.db.get(self.wtxn, key).lmdb()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.put(self.wtxn, key, value).lmdb()
    }

    /// Removes `key`; returns whether it was there.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool> {
        self.db.delete(self.wtxn, key).lmdb()
    }
}

/// Applies events to a read model kept in the store (see the module docs).
pub trait ProjectionHandler<E: rkyv::Archive>: Send + 'static {
    /// Applies one event to the model. An `Err` aborts the whole batch (the model and the
    /// cursor stay as they were) and stops the projection with [`Error::HandlerFailed`].
    fn apply(
        &mut self,
        event: &OwnedEvent<E>,
        model: &mut Model<'_, '_>,
    ) -> std::result::Result<(), HandlerError>;
}

/// Runs a [`ProjectionHandler`] exactly once per event; see the module docs.
pub struct Projection<E, H> {
    reader: Reader<E>,
    handler: H,
    name: String,
    batch_events_max: usize,
}

impl<E, H> std::fmt::Debug for Projection<E, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projection")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<E, H> Projection<E, H>
where
    E: ValidateEvent + Event + Send + 'static,
    H: ProjectionHandler<E>,
{
    /// A projection named `name`; its model is the database `projection/<name>`, read with
    /// [`Storage::projection_get`].
    pub fn new(reader: Reader<E>, handler: H, name: impl Into<String>) -> Self {
        Projection {
            reader,
            handler,
            name: name.into(),
            batch_events_max: 1000,
        }
    }

    /// The most events applied in one transaction (1,000 by default).
    pub fn batch_events_max(mut self, events: usize) -> Self {
        self.batch_events_max = events.max(1);
        self
    }

    /// Runs until `signal` completes (then hands the handler back) or an `apply` fails.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<H> {
        check_consumer_name(&self.name)?;
        let Projection {
            reader,
            handler,
            name,
            batch_events_max,
        } = self;
        let storage = reader.storage().clone();
        let (db, position) = {
            let (storage, name) = (storage.clone(), name.clone());
            tokio::task::spawn_blocking(move || {
                let db = storage.projection_db(&name)?;
                Ok::<_, Error>((db, storage.consumer_position(&name)?.unwrap_or(0)))
            })
            .await
            .map_err(task_failed)??
        };
        let mut subscription = Subscription::all(reader, position + 1);
        let mut handler = Some(handler);
        tokio::pin!(signal);
        let mut batch: Vec<OwnedEvent<E>> = Vec::new();
        loop {
            // Gather what is there, up to a batch; apply it when caught up or full.
            let item = tokio::select! {
                biased;
                () = &mut signal => break,
                item = subscription.next() => item?,
                () = tokio::time::sleep(Duration::from_millis(1)), if !batch.is_empty() => {
                    SubscriptionItem::CaughtUp
                }
            };
            match item {
                SubscriptionItem::Event(event) => {
                    batch.push(event);
                    if batch.len() < batch_events_max {
                        continue;
                    }
                }
                SubscriptionItem::CaughtUp if batch.is_empty() => continue,
                SubscriptionItem::CaughtUp => {}
            }
            let events = std::mem::take(&mut batch);
            let (storage, name) = (storage.clone(), name.clone());
            let mut h = handler.take().ok_or_else(|| Error::TaskFailed {
                reason: "the projection lost its handler".into(),
            })?;
            let (h, applied) = tokio::task::spawn_blocking(move || {
                let applied = apply(&storage, db, &name, &mut h, &events);
                (h, applied)
            })
            .await
            .map_err(task_failed)?;
            handler = Some(h);
            applied?;
        }
        handler.ok_or_else(|| Error::TaskFailed {
            reason: "the projection lost its handler".into(),
        })
    }
}

/// Applies `events` and moves the cursor past them, in one transaction.
fn apply<E, H>(
    storage: &Storage,
    db: heed::Database<'static, heed::types::Bytes, heed::types::Bytes>,
    name: &str,
    handler: &mut H,
    events: &[OwnedEvent<E>],
) -> Result<()>
where
    E: ValidateEvent,
    H: ProjectionHandler<E>,
{
    let Some(last) = events.last().map(|e| e.seq) else {
        return Ok(());
    };
    storage.write(storage.resize_wait(), |wtxn, dbs| {
        for event in events {
            let mut model = Model { wtxn, db };
            handler
                .apply(event, &mut model)
                .map_err(|e| Error::HandlerFailed {
                    consumer: name.to_string(),
                    seq: event.seq,
                    reason: e.to_string(),
                })?;
        }
        set_consumer_position(dbs, wtxn, name, last)?;
        Ok(((), true))
    })
}

fn task_failed(e: tokio::task::JoinError) -> Error {
    Error::TaskFailed {
        reason: format!("the projection's blocking task: {e}"),
    }
}
