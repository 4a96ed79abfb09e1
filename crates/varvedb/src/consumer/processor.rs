//! Durable processors: a [`Processor`] drives an [`EventHandler`] over the log, in sequence
//! order, from a cursor stored under its name in the store (`consumer_cursors`).
//!
//! Delivery is at-least-once: the cursor is checkpointed every `checkpoint_every_events`
//! events or `checkpoint_every_ms` milliseconds (whichever comes first, at the end of a batch)
//! and at a graceful stop, so a crash replays at most that many events. The log has no gaps (one
//! committer assigns sequences inside the commit), so no event is ever skipped: the cursor only
//! moves past an event once the handler has taken it, parked it, or the event is not the
//! processor's (another type, or a shredded stream).
//!
//! Processors, subscriptions and projections run on a tokio runtime with its time driver
//! (`#[tokio::main]`, or a builder with `enable_all()`/`enable_time()`): they wait with
//! `tokio::time`.
//!
//! Reading runs on tokio's blocking pool, a batch at a time (`batch_events_max`); the read
//! snapshot lives for one batch and is released between batches, so a slow processor neither
//! blocks map growth nor pins freed pages for long, and a processor far behind reads from disk at
//! its own pace: it never lags out.

use std::future::Future;
use std::time::{Duration, Instant};

use super::group::GroupRun;
use super::policy::{Decision, OnError};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::metrics::ConsumerCounters;
use crate::reader::{EventRef, Reader, ValidateEvent};
use crate::storage::{
    GROUP_LEASE_MS_DEFAULT, GROUP_PARTITIONS_DEFAULT, GroupConfig, Storage, check_consumer_name,
};

/// What a handler's `Err` carries.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Takes events of type `E`, one at a time, in sequence order. The event is zero-copy: it
/// borrows the processor's read snapshot for the duration of the call.
pub trait EventHandler<E: rkyv::Archive>: Send + 'static {
    /// Handles one event. An `Err` follows the processor's [`OnError`] policy.
    fn handle(&mut self, event: &EventRef<'_, E>) -> std::result::Result<(), HandlerError>;
}

/// A processor's settings (build them with `..Default::default()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorOptions {
    /// Checkpoint at least every this many events (the most a crash replays).
    pub checkpoint_every_events: u64,
    /// Checkpoint at least every this many milliseconds while events are handled.
    pub checkpoint_every_ms: u64,
    /// The most events read in one snapshot.
    pub batch_events_max: usize,
    /// The longest a batch keeps its read snapshot, in milliseconds: past it the batch ends
    /// after the current event, so that a slow handler does not hold back map growth or pin
    /// freed pages (a growth waits at most this plus one handler call).
    pub snapshot_ms_max: u64,
    /// How often, when caught up, the store is polled for appends of other processes (appends
    /// of this process wake the processor at once, through the bus).
    pub poll_interval_ms: u64,
    /// What a handler error does.
    pub on_error: OnError,
    /// The partitions of a consumer group this processor creates
    /// ([`in_group`](Processor::in_group)): 16 by default. A group keeps the count it was
    /// created with.
    pub group_partitions: u32,
    /// How long a group member's lease lasts without a renewal, in milliseconds, when this
    /// processor creates the group (5,000 by default): a member that dies loses its partitions
    /// this long after its last renewal. One handler call must take less than a fifth of it.
    pub group_lease_ms: u64,
}

impl Default for ProcessorOptions {
    fn default() -> Self {
        ProcessorOptions {
            checkpoint_every_events: 1000,
            checkpoint_every_ms: 1000,
            batch_events_max: 1000,
            snapshot_ms_max: 100,
            poll_interval_ms: 100,
            on_error: OnError::Stop,
            group_partitions: GROUP_PARTITIONS_DEFAULT,
            group_lease_ms: GROUP_LEASE_MS_DEFAULT,
        }
    }
}

/// Drives an [`EventHandler`] from a durable, named cursor; see the module docs.
///
/// ```no_run
/// # use varvedb::{EventHandler, EventRef, HandlerError, Processor, Reader, Storage};
/// # #[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
/// # struct Deposited { amount: u64 }
/// struct Balance { total: u64 }
/// impl EventHandler<Deposited> for Balance {
///     fn handle(&mut self, event: &EventRef<'_, Deposited>) -> Result<(), HandlerError> {
///         self.total += event.amount.to_native();
///         Ok(())
///     }
/// }
/// # async fn run(storage: Storage) -> varvedb::Result<()> {
/// let rx = storage.subscribe();
/// let processor = Processor::new(Reader::<Deposited>::new(storage.clone()), Balance { total: 0 }, "balance", rx);
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let task = tokio::spawn(processor.run_until(async move { let _ = stopped.await; }));
/// // ... appends ...
/// let _ = stop.send(());
/// let balance: Balance = task.await.expect("the task ran")?;
/// # Ok(()) }
/// ```
pub struct Processor<E, H> {
    reader: Reader<E>,
    handler: H,
    name: String,
    rx: tokio::sync::watch::Receiver<u64>,
    options: ProcessorOptions,
    /// The member name, in a consumer group.
    member: Option<String>,
}

impl<E, H> std::fmt::Debug for Processor<E, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// How a batch ended.
enum Batch {
    /// More events may be waiting.
    More,
    /// The processor is at the head.
    CaughtUp,
    /// The handler failed on an event that is to be tried again after `wait`.
    Retry(Duration),
}

/// What a processor carries between batches.
struct State<E, H> {
    reader: Reader<E>,
    handler: H,
    name: String,
    options: ProcessorOptions,
    /// The seq of the last event taken (handled, parked or not ours).
    position: u64,
    /// The position last written to the store.
    checkpointed: u64,
    /// What the store's cursor holds, as far as this processor knows (read at its start, then
    /// written by it): a checkpoint that finds anything else stops the processor.
    stored: Option<u64>,
    last_checkpoint: Instant,
    /// The event being retried, and the calls made so far.
    retrying: Option<(u64, u32)>,
    counters: ConsumerCounters,
    /// The consumer group this processor is a member of (its name is `name`).
    group: Option<GroupRun>,
}

impl<E, H> State<E, H>
where
    E: ValidateEvent + Event,
    H: EventHandler<E>,
{
    fn storage(&self) -> &Storage {
        self.reader.storage()
    }

    /// The error policy applied to the handler's `result` for event `seq`.
    fn after(&mut self, seq: u64, result: std::result::Result<(), HandlerError>) -> After {
        after(
            &mut self.retrying,
            &self.counters,
            self.options.on_error,
            &self.name,
            seq,
            result,
        )
    }

    /// Handles the events after `position`, up to a batch, in one snapshot; then checkpoints
    /// (with the events parked in the batch, in one transaction) if it is due.
    fn batch(&mut self) -> Result<Batch> {
        if self.group.is_some() {
            return self.group_batch();
        }
        let _span = tracing::debug_span!(
            "varvedb.processor_batch",
            consumer = %self.name,
            from = self.position + 1
        )
        .entered();
        let storage = self.storage().clone();
        let limit = self
            .options
            .batch_events_max
            .min(usize::try_from(self.options.checkpoint_every_events).unwrap_or(usize::MAX))
            .max(1);
        let mut parked: Vec<(u64, String)> = Vec::new();
        let mut outcome = Batch::CaughtUp;
        let mut failure = None;
        {
            let txn = storage.read_txn()?;
            if storage.replay_requested_in(&txn, &self.name)? {
                drop(txn);
                self.replay_parked()?;
                return Ok(Batch::More);
            }
            let opened = Instant::now();
            let held_max = Duration::from_millis(self.options.snapshot_ms_max);
            for (taken, item) in self.reader.read_all(&txn, self.position + 1).enumerate() {
                if taken == limit || (taken > 0 && opened.elapsed() >= held_max) {
                    outcome = Batch::More;
                    break;
                }
                let event = match item {
                    Ok(event) => event,
                    // Not this processor's: another type in the log, or a shredded stream.
                    Err(Error::TypeMismatch { seq, .. } | Error::Shredded { seq, .. }) => {
                        self.position = seq;
                        continue;
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                };
                let seq = event.seq();
                let handled = self.handler.handle(&event);
                match self.after(seq, handled) {
                    After::Taken(park) => {
                        parked.extend(park.map(|reason| (seq, reason)));
                        self.position = seq;
                    }
                    After::Retry(wait) => {
                        outcome = Batch::Retry(wait);
                        break;
                    }
                    After::Stop(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
        }
        // The snapshot is released: checkpoint (and park) in a transaction of its own.
        let due = self.position.saturating_sub(self.checkpointed)
            >= self.options.checkpoint_every_events
            || self.last_checkpoint.elapsed()
                >= Duration::from_millis(self.options.checkpoint_every_ms);
        if !parked.is_empty() || failure.is_some() || (due && self.position > self.checkpointed) {
            self.checkpoint(&parked)?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }

    /// A batch of a group member: the group first (renewals, hand-overs), then the events of
    /// the partitions it holds, each after its partition's cursor, until its deadline; then a
    /// checkpoint of those cursors, fenced by the leases.
    fn group_batch(&mut self) -> Result<Batch> {
        let storage = self.storage().clone();
        let name = self.name.clone();
        let Some(group) = self.group.as_mut() else {
            return Ok(Batch::CaughtUp);
        };
        group.maintain(&storage, &name)?;
        let Some(low) = group.low() else {
            // Nothing held: wait for a partition to be free.
            return Ok(Batch::CaughtUp);
        };
        let deadline = group.deadline();
        let limit = self
            .options
            .batch_events_max
            .min(usize::try_from(self.options.checkpoint_every_events).unwrap_or(usize::MAX))
            .max(1);
        let mut parked: Vec<(u64, String)> = Vec::new();
        let mut outcome = Batch::CaughtUp;
        let mut failure = None;
        // Every event up to here was handled or is not this member's.
        let mut scanned = low;
        {
            let txn = storage.read_txn()?;
            if storage.replay_requested_in(&txn, &name)? {
                drop(txn);
                self.replay_parked()?;
                return Ok(Batch::More);
            }
            let opened = Instant::now();
            let held_max = Duration::from_millis(self.options.snapshot_ms_max);
            let mut handled = 0usize;
            for item in self.reader.read_all(&txn, low + 1) {
                let past_deadline = deadline.is_none_or(|d| Instant::now() >= d);
                if handled == limit
                    || (handled > 0 && opened.elapsed() >= held_max)
                    || past_deadline
                {
                    outcome = Batch::More;
                    break;
                }
                let event = match item {
                    Ok(event) => event,
                    Err(Error::TypeMismatch { seq, .. } | Error::Shredded { seq, .. }) => {
                        scanned = seq;
                        continue;
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                };
                let seq = event.seq();
                let partition = group.partition(event.stream_id());
                let Some(held) = group.held_mut(partition) else {
                    scanned = seq;
                    continue;
                };
                if seq <= held.position {
                    scanned = seq;
                    continue;
                }
                handled += 1;
                let result = self.handler.handle(&event);
                match after(
                    &mut self.retrying,
                    &self.counters,
                    self.options.on_error,
                    &name,
                    seq,
                    result,
                ) {
                    After::Taken(park) => {
                        parked.extend(park.map(|reason| (seq, reason)));
                        held.position = seq;
                    }
                    After::Retry(wait) => {
                        outcome = Batch::Retry(wait);
                        break;
                    }
                    After::Stop(e) => {
                        failure = Some(e);
                        break;
                    }
                }
                scanned = seq;
            }
        }
        // Every held partition has handled everything of it up to `scanned`.
        for h in &mut group.held {
            h.position = h.position.max(scanned);
        }
        self.position = scanned;
        let due = group.uncommitted() >= self.options.checkpoint_every_events
            || self.last_checkpoint.elapsed()
                >= Duration::from_millis(self.options.checkpoint_every_ms);
        if !parked.is_empty() || failure.is_some() || (due && group.uncommitted() > 0) {
            group.checkpoint(&storage, &name, &parked)?;
            self.last_checkpoint = Instant::now();
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }

    /// Hands the parked events to the handler again, in seq order; those it takes leave the
    /// parked list, in one transaction that also withdraws any replay request. The cursor does
    /// not move. Returns how many were taken.
    fn replay_parked(&mut self) -> Result<u64> {
        let storage = self.storage().clone();
        let parked = storage.parked_events(&self.name)?;
        let mut taken = Vec::new();
        {
            let txn = storage.read_txn()?;
            for p in parked {
                // Gone, shredded since, or unreadable (`varvedb verify` names the damage): it
                // stays parked, and the others are replayed.
                let Ok(Some(event)) = self.reader.get(&txn, p.seq) else {
                    continue;
                };
                match self.handler.handle(&event) {
                    Ok(()) => taken.push(p.seq),
                    Err(_) => {
                        self.counters.handler_errors.inc();
                    }
                }
            }
        }
        storage.finish_replay(&self.name, &taken)?;
        Ok(taken.len() as u64)
    }

    /// Writes the position (and parks `parked`) in one transaction.
    fn checkpoint(&mut self, parked: &[(u64, String)]) -> Result<()> {
        let position = self.position;
        self.storage()
            .checkpoint_consumer(&self.name, self.stored, position, parked)?;
        self.checkpointed = position;
        self.stored = Some(position);
        self.last_checkpoint = Instant::now();
        Ok(())
    }
}

/// What became of an event handed to a sync handler, per the error policy.
enum After {
    /// The cursor moves past it: handled, or parked with this reason.
    Taken(Option<String>),
    /// It is handed over again after the wait.
    Retry(Duration),
    /// The processor stops with this error.
    Stop(Error),
}

/// Applies the error policy to the handler's `result` for event `seq` (counting the calls made
/// for it in `retrying`).
fn after(
    retrying: &mut Option<(u64, u32)>,
    counters: &ConsumerCounters,
    on_error: OnError,
    name: &str,
    seq: u64,
    result: std::result::Result<(), HandlerError>,
) -> After {
    let Err(e) = result else {
        *retrying = None;
        return After::Taken(None);
    };
    counters.handler_errors.inc();
    let calls = match *retrying {
        Some((s, n)) if s == seq => n + 1,
        _ => 1,
    };
    match on_error.decide(calls) {
        Decision::Stop => After::Stop(handler_failed(name, seq, &*e)),
        Decision::Park => {
            *retrying = None;
            After::Taken(Some(e.to_string()))
        }
        Decision::Retry(wait) => {
            counters.retries.inc();
            *retrying = Some((seq, calls));
            After::Retry(wait)
        }
    }
}

fn handler_failed(name: &str, seq: u64, e: &(dyn std::error::Error + Send + Sync)) -> Error {
    Error::HandlerFailed {
        consumer: name.to_string(),
        seq,
        reason: e.to_string(),
    }
}

/// If someone asked (`consumers replay`), hands the consumer's parked events to an async
/// handler again, in seq order; those it takes leave the parked list, in one transaction that
/// withdraws the request.
async fn replay_if_requested<E, H>(
    reader: &Reader<E>,
    name: &str,
    handler: &mut H,
    counters: &ConsumerCounters,
) -> Result<()>
where
    E: ValidateEvent + Event + Send + 'static,
    H: AsyncEventHandler<E>,
{
    let (for_read, owned_name) = (reader.clone(), name.to_owned());
    let parked =
        tokio::task::spawn_blocking(move || -> Result<Option<Vec<crate::OwnedEvent<E>>>> {
            let reader = for_read;
            let storage = reader.storage().clone();
            let txn = storage.read_txn()?;
            if !storage.replay_requested_in(&txn, &owned_name)? {
                return Ok(None);
            }
            let mut events = Vec::new();
            for p in storage.parked_events(&owned_name)? {
                // As in `State::replay_parked`: an event that cannot be read stays parked.
                if let Ok(Some(event)) = reader.get(&txn, p.seq) {
                    events.push(super::subscription::owned(&event));
                }
            }
            Ok(Some(events))
        })
        .await
        .map_err(|e| Error::TaskFailed {
            reason: format!("the processor's blocking task: {e}"),
        })??;
    let Some(parked) = parked else {
        return Ok(());
    };
    let mut taken = Vec::new();
    for event in &parked {
        match handler.handle(event).await {
            Ok(()) => taken.push(event.seq),
            Err(_) => {
                counters.handler_errors.inc();
            }
        }
    }
    let (storage, name) = (reader.storage().clone(), name.to_owned());
    tokio::task::spawn_blocking(move || storage.finish_replay(&name, &taken))
        .await
        .map_err(|e| Error::TaskFailed {
            reason: format!("the processor's blocking task: {e}"),
        })?
}

/// Runs `f` on tokio's blocking pool, handing the state over and back.
async fn blocking<T, S, F>(state: S, f: F) -> Result<(S, Result<T>)>
where
    S: Send + 'static,
    T: Send + 'static,
    F: FnOnce(&mut S) -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut state = state;
        let out = f(&mut state);
        (state, out)
    })
    .await
    .map_err(|e| Error::TaskFailed {
        reason: format!("the processor's blocking task: {e}"),
    })
}

impl<E, H> Processor<E, H>
where
    E: ValidateEvent + Event + Send + 'static,
    H: EventHandler<E>,
{
    /// A processor named `name` (1 to 255 bytes of UTF-8) that feeds `handler` the events
    /// `reader` reads, woken by `rx` (from [`Storage::subscribe`]).
    pub fn new(
        reader: Reader<E>,
        handler: H,
        name: impl Into<String>,
        rx: tokio::sync::watch::Receiver<u64>,
    ) -> Self {
        Processor {
            reader,
            handler,
            name: name.into(),
            rx,
            options: ProcessorOptions::default(),
            member: None,
        }
    }

    /// Replaces the processor's settings.
    pub fn with_options(mut self, options: ProcessorOptions) -> Self {
        self.options = options;
        self
    }

    /// Makes this processor the member `member` (1 to 255 bytes of UTF-8) of the consumer
    /// group named by the processor's name: members, in this process or others on the same
    /// store, share the group's work. The streams are split into partitions (by a stable hash
    /// of the stream id; [`ProcessorOptions::group_partitions`] when the group is created);
    /// each partition has its own cursor and is handled by one member at a time, under a
    /// lease kept in the store, in sequence order (so a stream's events in version order).
    /// A member that joins takes a fair share; one that stops gracefully hands its partitions
    /// back at once, after checkpointing; one that dies loses them when its lease expires
    /// ([`ProcessorOptions::group_lease_ms`]). A member whose lease was taken over while it
    /// stalled is fenced: it commits none of that partition's cursor.
    /// See [`Storage::consumer_groups`] and [`Storage::group_members`].
    pub fn in_group(mut self, member: impl Into<String>) -> Self {
        self.member = Some(member.into());
        self
    }

    /// Runs until the handler fails (per [`OnError`]) or the store does; never returns
    /// otherwise. See [`run_until`](Self::run_until) for a graceful stop.
    pub async fn run(self) -> Result<H> {
        self.run_until(std::future::pending()).await
    }

    /// Runs until `signal` completes; then handles what was committed up to that moment
    /// (so that a stop right after an append sees it handled), checkpoints, and hands the
    /// handler back.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<H> {
        check_consumer_name(&self.name)?;
        let Processor {
            reader,
            handler,
            name,
            mut rx,
            options,
            member,
        } = self;
        let counters = match &member {
            Some(m) => reader.storage().metrics().group_member(&name, m),
            None => reader.storage().metrics().consumer(&name),
        };
        let group = match member {
            Some(member) => Some(GroupRun::new(
                member,
                GroupConfig {
                    partitions: options.group_partitions,
                    lease_ms: options.group_lease_ms,
                },
                counters.fenced.clone(),
            )?),
            None => None,
        };
        let poll = Duration::from_millis(options.poll_interval_ms.max(1));
        let stored = {
            let (storage, name) = (reader.storage().clone(), name.clone());
            tokio::task::spawn_blocking(move || storage.consumer_position(&name))
                .await
                .map_err(|e| Error::TaskFailed {
                    reason: format!("the processor's blocking task: {e}"),
                })??
        };
        let position = stored.unwrap_or(0);
        let mut state = State {
            reader,
            handler,
            name,
            options,
            position,
            checkpointed: position,
            stored,
            last_checkpoint: Instant::now(),
            retrying: None,
            counters,
            group,
        };
        tokio::pin!(signal);
        loop {
            let (back, outcome) = blocking(state, State::batch).await?;
            state = back;
            let outcome = outcome?;
            let wait = match outcome {
                Batch::More => Duration::ZERO,
                Batch::CaughtUp => poll,
                Batch::Retry(wait) => wait,
            };
            tokio::select! {
                biased;
                () = &mut signal => break,
                changed = rx.changed(), if matches!(outcome, Batch::CaughtUp) => {
                    // The bus is gone with the store's last handle but ours: poll only.
                    if changed.is_err() {
                        tokio::time::sleep(poll).await;
                    }
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
        // The graceful stop: first everything committed when the signal came (so that a stop
        // right after an append sees it handled), then the checkpoint.
        let (mut state, head) = blocking(state, |s: &mut State<E, H>| {
            let storage = s.storage().clone();
            let txn = storage.read_txn()?;
            storage.last_seq(&txn)
        })
        .await?;
        let head = head?;
        while state.position < head {
            let (back, outcome) = blocking(state, State::batch).await?;
            state = back;
            match outcome? {
                Batch::Retry(wait) => tokio::time::sleep(wait).await,
                Batch::More => {}
                // Nothing more to read: the rest up to the head is not ours.
                Batch::CaughtUp => break,
            }
        }
        let (state, done) = blocking(state, |s: &mut State<E, H>| {
            if let Some(group) = s.group.as_mut() {
                // Hands every partition back with its cursor, and leaves.
                let storage = s.reader.storage().clone();
                group.step(&storage, &s.name, true)?;
                return Ok(());
            }
            if s.position > s.checkpointed {
                s.checkpoint(&[])?;
            }
            Ok(())
        })
        .await?;
        done?;
        Ok(state.handler)
    }

    /// Hands the events this processor parked to its handler again, in seq order; each one it
    /// takes leaves the parked list. The main cursor does not move. Returns how many were taken.
    pub async fn replay_parked(self) -> Result<(Self, u64)> {
        let Processor {
            reader,
            handler,
            name,
            rx,
            options,
            member,
        } = self;
        let counters = reader.storage().metrics().consumer(&name);
        let state = State {
            reader,
            handler,
            name,
            options,
            position: 0,
            checkpointed: 0,
            // A replay moves no cursor.
            stored: None,
            last_checkpoint: Instant::now(),
            retrying: None,
            counters,
            group: None,
        };
        let (state, taken) = blocking(state, State::replay_parked).await?;
        Ok((
            Processor {
                reader: state.reader,
                handler: state.handler,
                name: state.name,
                rx,
                options: state.options,
                member,
            },
            taken?,
        ))
    }

    /// The processor's handler (for example to read its state between runs).
    pub fn handler(&self) -> &H {
        &self.handler
    }
}

/// What became of an event handed to an async handler.
enum Delivery {
    Handled,
    /// Park it, with this reason.
    Park(String),
    /// Stop with this error.
    Stop(HandlerError),
}

/// Hands `event` to `handler`, retrying per `on_error`.
async fn deliver<E: rkyv::Archive, H: AsyncEventHandler<E>>(
    handler: &mut H,
    event: &crate::OwnedEvent<E>,
    on_error: OnError,
    counters: &ConsumerCounters,
) -> Delivery {
    let mut calls = 0u32;
    loop {
        calls += 1;
        let Err(e) = handler.handle(event).await else {
            return Delivery::Handled;
        };
        counters.handler_errors.inc();
        match on_error.decide(calls) {
            Decision::Retry(wait) => {
                counters.retries.inc();
                tokio::time::sleep(wait).await;
            }
            Decision::Park => return Delivery::Park(e.to_string()),
            Decision::Stop => return Delivery::Stop(e),
        }
    }
}

/// Work on the store, sent to the blocking pool.
type StoreTask = Box<dyn FnOnce(&Storage) -> Result<()> + Send>;

/// An async handler, for handlers that call out (HTTP, another database). It receives an owned
/// copy of each event ([`OwnedEvent`](crate::OwnedEvent)), read by a [`Subscription`](crate::Subscription); the
/// sync [`EventHandler`] stays zero-copy.
pub trait AsyncEventHandler<E: rkyv::Archive>: Send + 'static {
    /// Handles one event. An `Err` follows the processor's [`OnError`] policy.
    fn handle(
        &mut self,
        event: &crate::OwnedEvent<E>,
    ) -> impl Future<Output = std::result::Result<(), HandlerError>> + Send;
}

/// A [`Processor`] for an [`AsyncEventHandler`]: the same cursor, checkpoints and error
/// policies; events come from a catch-up subscription, so the handler's awaits hold no read
/// snapshot.
pub struct AsyncProcessor<E, H> {
    reader: Reader<E>,
    handler: H,
    name: String,
    options: ProcessorOptions,
}

impl<E, H> std::fmt::Debug for AsyncProcessor<E, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncProcessor")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<E, H> AsyncProcessor<E, H>
where
    E: ValidateEvent + Event + Send + 'static,
    H: AsyncEventHandler<E>,
{
    /// An async processor named `name` that feeds `handler` the events `reader` reads.
    pub fn new(reader: Reader<E>, handler: H, name: impl Into<String>) -> Self {
        AsyncProcessor {
            reader,
            handler,
            name: name.into(),
            options: ProcessorOptions::default(),
        }
    }

    /// Replaces the processor's settings.
    pub fn with_options(mut self, options: ProcessorOptions) -> Self {
        self.options = options;
        self
    }

    /// Runs until `signal` completes (then handles what was committed up to that moment,
    /// checkpoints and hands the handler back), or until the handler fails and its policy says
    /// stop.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<H> {
        check_consumer_name(&self.name)?;
        let AsyncProcessor {
            reader,
            mut handler,
            name,
            options,
        } = self;
        let storage = reader.storage().clone();
        let run = |f: StoreTask| {
            let storage = storage.clone();
            async move {
                tokio::task::spawn_blocking(move || f(&storage))
                    .await
                    .map_err(|e| Error::TaskFailed {
                        reason: format!("the processor's blocking task: {e}"),
                    })?
            }
        };
        let stored = {
            let (storage, name) = (storage.clone(), name.clone());
            tokio::task::spawn_blocking(move || storage.consumer_position(&name))
                .await
                .map_err(|e| Error::TaskFailed {
                    reason: format!("the processor's blocking task: {e}"),
                })??
        };
        let position = stored.unwrap_or(0);
        // What the store's cursor holds as far as this processor knows: a checkpoint that
        // finds anything else stops it (`Error::ConsumerMoved`).
        let stored = std::sync::Arc::new(std::sync::Mutex::new(stored));
        let counters = storage.metrics().consumer(&name);
        let parked_reader = reader.clone();
        // How often an idle processor looks for a replay request (`consumers replay`).
        let mut replay_poll =
            tokio::time::interval(Duration::from_millis(options.poll_interval_ms.max(1)));
        replay_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut subscription = crate::Subscription::all(reader, position + 1)
            .poll_interval(Duration::from_millis(options.poll_interval_ms));
        let (mut position, mut checkpointed, mut last) = (position, position, Instant::now());
        let checkpoint = |name: String, position: u64, parked: Vec<(u64, String)>| {
            let stored = stored.clone();
            run(Box::new(move |storage: &Storage| {
                let mut stored = stored
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                storage.checkpoint_consumer(&name, *stored, position, &parked)?;
                *stored = Some(position);
                Ok(())
            }))
        };
        tokio::pin!(signal);
        loop {
            let every = Duration::from_millis(options.checkpoint_every_ms);
            let item = tokio::select! {
                biased;
                () = &mut signal => break,
                // Idle with events handled since the last checkpoint: write it when it is due.
                () = tokio::time::sleep(every.saturating_sub(last.elapsed())), if position > checkpointed => {
                    checkpoint(name.clone(), position, Vec::new()).await?;
                    (checkpointed, last) = (position, Instant::now());
                    continue;
                }
                item = subscription.next() => item?,
                _ = replay_poll.tick() => {
                    replay_if_requested(&parked_reader, &name, &mut handler, &counters).await?;
                    continue;
                }
            };
            let event = match item {
                crate::SubscriptionItem::Event(event) => event,
                crate::SubscriptionItem::CaughtUp => continue,
            };
            let mut parked = Vec::new();
            match deliver(&mut handler, &event, options.on_error, &counters).await {
                Delivery::Handled => {}
                Delivery::Park(reason) => parked.push((event.seq, reason)),
                Delivery::Stop(e) => {
                    // Stop: checkpoint before the failed event.
                    if position > checkpointed {
                        checkpoint(name.clone(), position, Vec::new()).await?;
                    }
                    return Err(handler_failed(&name, event.seq, &*e));
                }
            }
            position = event.seq;
            let due = position.saturating_sub(checkpointed) >= options.checkpoint_every_events
                || last.elapsed() >= Duration::from_millis(options.checkpoint_every_ms);
            if due || !parked.is_empty() {
                checkpoint(name.clone(), position, parked).await?;
                (checkpointed, last) = (position, Instant::now());
            }
        }
        // The graceful stop: first everything committed when the signal came, then the
        // checkpoint.
        let head = {
            let storage = storage.clone();
            tokio::task::spawn_blocking(move || storage.last_seq(&storage.read_txn()?))
                .await
                .map_err(|e| Error::TaskFailed {
                    reason: format!("the processor's blocking task: {e}"),
                })??
        };
        while subscription.has_queued() || subscription.read_position() < head {
            let crate::SubscriptionItem::Event(event) = subscription.next().await? else {
                continue;
            };
            match deliver(&mut handler, &event, options.on_error, &counters).await {
                Delivery::Handled => {}
                Delivery::Park(reason) => {
                    checkpoint(name.clone(), position, vec![(event.seq, reason)]).await?;
                }
                Delivery::Stop(e) => {
                    if position > checkpointed {
                        checkpoint(name.clone(), position, Vec::new()).await?;
                    }
                    return Err(handler_failed(&name, event.seq, &*e));
                }
            }
            position = event.seq;
        }
        if position > checkpointed {
            checkpoint(name.clone(), position, Vec::new()).await?;
        }
        Ok(handler)
    }
}
