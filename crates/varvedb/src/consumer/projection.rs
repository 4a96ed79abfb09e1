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

use super::group::GroupRun;
use super::processor::HandlerError;
use super::subscription::{OwnedEvent, Subscription, SubscriptionItem};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::reader::{Reader, ValidateEvent};
use crate::storage::{
    GROUP_LEASE_MS_DEFAULT, GROUP_PARTITIONS_DEFAULT, GroupConfig, LmdbResultExt, Storage,
    check_consumer_name, set_consumer_position,
};

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
    /// The member name, in a consumer group, and the group's settings if it creates it.
    member: Option<String>,
    group: GroupConfig,
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
            member: None,
            group: GroupConfig {
                partitions: GROUP_PARTITIONS_DEFAULT,
                lease_ms: GROUP_LEASE_MS_DEFAULT,
            },
        }
    }

    /// Makes this projection the member `member` of the consumer group named by the
    /// projection's name (see [`Processor::in_group`](crate::Processor::in_group)): members
    /// share the partitions, and the model stays exactly-once, since each batch commits the
    /// model's writes with the cursors of the partitions it covers, in one transaction that
    /// first checks that the member still holds their leases. A member whose lease was taken
    /// over (it stalled past the lease) commits nothing: its batch is dropped, and the member
    /// that took the partition applies those events from the partition's cursor.
    pub fn in_group(mut self, member: impl Into<String>) -> Self {
        self.member = Some(member.into());
        self
    }

    /// The partitions of the group, if this member creates it (16 by default).
    pub fn group_partitions(mut self, partitions: u32) -> Self {
        self.group.partitions = partitions;
        self
    }

    /// How long a member's lease lasts without a renewal, if this member creates the group
    /// (5 s by default).
    pub fn group_lease(mut self, lease: Duration) -> Self {
        self.group.lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The most events applied in one transaction (1,000 by default).
    pub fn batch_events_max(mut self, events: usize) -> Self {
        self.batch_events_max = events.max(1);
        self
    }

    /// Runs until `signal` completes (then hands the handler back) or an `apply` fails.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<H> {
        check_consumer_name(&self.name)?;
        if self.member.is_some() {
            return self.run_group(signal).await;
        }
        let Projection {
            reader,
            handler,
            name,
            batch_events_max,
            ..
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

impl<E, H> Projection<E, H>
where
    E: ValidateEvent + Event + Send + 'static,
    H: ProjectionHandler<E>,
{
    /// A group member's loop: the group (renewals, hand-overs), then a batch of the held
    /// partitions' events, read from one snapshot and applied with their cursors in one
    /// transaction, fenced by the leases.
    async fn run_group(self, signal: impl Future<Output = ()>) -> Result<H> {
        let Projection {
            reader,
            handler,
            name,
            batch_events_max,
            member,
            group,
        } = self;
        let member = member.unwrap_or_default();
        let storage = reader.storage().clone();
        let fenced = storage.metrics().group_member(&name, &member).fenced;
        let run_group = GroupRun::new(member, group, fenced)?;
        let db = {
            let (storage, name) = (storage.clone(), name.clone());
            tokio::task::spawn_blocking(move || storage.projection_db(&name))
                .await
                .map_err(task_failed)??
        };
        let mut rx = storage.subscribe();
        struct Run<E, H> {
            reader: Reader<E>,
            handler: H,
            group: GroupRun,
        }
        let mut run = Some(Run {
            reader,
            handler,
            group: run_group,
        });
        tokio::pin!(signal);
        // Once the signal came: the log's end then, which the member still handles up to.
        let mut stopping: Option<u64> = None;
        loop {
            let mut r = run.take().ok_or_else(|| Error::TaskFailed {
                reason: "the projection lost its handler".into(),
            })?;
            let (storage2, name2) = (storage.clone(), name.clone());
            let (r, outcome) = tokio::task::spawn_blocking(move || {
                let outcome = group_batch(
                    &storage2,
                    db,
                    &name2,
                    &r.reader,
                    &mut r.handler,
                    &mut r.group,
                    batch_events_max,
                );
                (r, outcome)
            })
            .await
            .map_err(task_failed)?;
            let low = r.group.low();
            run = Some(r);
            let more = outcome?;
            if let Some(head) = stopping {
                if !more || low.is_none_or(|low| low >= head) {
                    break;
                }
                continue;
            }
            let signalled = if more {
                tokio::select! {
                    biased;
                    () = &mut signal => true,
                    () = std::future::ready(()) => false,
                }
            } else {
                tokio::select! {
                    biased;
                    () = &mut signal => true,
                    changed = rx.changed() => {
                        if changed.is_err() {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        false
                    }
                    () = tokio::time::sleep(Duration::from_millis(100)) => false,
                }
            };
            if signalled {
                let storage = storage.clone();
                let head =
                    tokio::task::spawn_blocking(move || storage.last_seq(&storage.read_txn()?))
                        .await
                        .map_err(task_failed)??;
                stopping = Some(head);
            }
        }
        let mut r = run.take().ok_or_else(|| Error::TaskFailed {
            reason: "the projection lost its handler".into(),
        })?;
        let r = tokio::task::spawn_blocking(move || {
            let left = r.group.step(&storage, &name, true);
            left.map(|()| r)
        })
        .await
        .map_err(task_failed)??;
        Ok(r.handler)
    }
}

/// One batch of a projection's group member; returns whether more may be waiting.
fn group_batch<E, H>(
    storage: &Storage,
    db: heed::Database<'static, heed::types::Bytes, heed::types::Bytes>,
    name: &str,
    reader: &Reader<E>,
    handler: &mut H,
    group: &mut GroupRun,
    batch_events_max: usize,
) -> Result<bool>
where
    E: ValidateEvent + Event,
    H: ProjectionHandler<E>,
{
    group.maintain(storage, name)?;
    let Some(low) = group.low() else {
        return Ok(false);
    };
    let deadline = group.deadline();
    let mut events = Vec::new();
    let mut scanned = low;
    let mut more = false;
    {
        let txn = storage.read_txn()?;
        for item in reader.read_all(&txn, low + 1) {
            if events.len() >= batch_events_max
                || deadline.is_none_or(|d| std::time::Instant::now() >= d)
            {
                more = true;
                break;
            }
            let event = match item {
                Ok(event) => event,
                Err(Error::TypeMismatch { seq, .. } | Error::Shredded { seq, .. }) => {
                    scanned = seq;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let seq = event.seq();
            let partition = group.partition(event.stream_id());
            if group.held_mut(partition).is_some_and(|h| seq > h.position) {
                events.push(super::subscription::owned(&event));
            }
            scanned = seq;
        }
    }
    if scanned == low {
        return Ok(false);
    }
    // The positions the batch moves the partitions to (every held partition has all of its
    // events up to `scanned` in the batch or before it).
    let mut moved = group.held.clone();
    for h in &mut moved {
        h.position = h.position.max(scanned);
    }
    let member = group.lease_id.clone();
    let lost = storage.write(storage.resize_wait(), |wtxn, dbs| {
        let lost = crate::storage::group_checkpoint_in(dbs, wtxn, name, &member, &moved)?;
        if !lost.is_empty() {
            // Fenced: nothing of the batch is written.
            return Ok((lost, false));
        }
        apply_all(handler, wtxn, db, name, &events)?;
        Ok((lost, true))
    })?;
    if lost.is_empty() {
        group.held = moved;
        group.committed_all();
    } else {
        // The whole batch was abandoned: the member that took the partitions applies it.
        group.lose(name, &lost);
        return Ok(true);
    }
    Ok(more)
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
        apply_all(handler, wtxn, db, name, events)?;
        set_consumer_position(dbs, wtxn, name, last)?;
        Ok(((), true))
    })
}

/// Applies `events` to the model in `wtxn`; the first failure is `Error::HandlerFailed`.
fn apply_all<E, H>(
    handler: &mut H,
    wtxn: &mut RwTxn<'_>,
    db: heed::Database<'static, heed::types::Bytes, heed::types::Bytes>,
    name: &str,
    events: &[OwnedEvent<E>],
) -> Result<()>
where
    E: ValidateEvent,
    H: ProjectionHandler<E>,
{
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
    Ok(())
}

fn task_failed(e: tokio::task::JoinError) -> Error {
    Error::TaskFailed {
        reason: format!("the projection's blocking task: {e}"),
    }
}
