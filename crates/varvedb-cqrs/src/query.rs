//! Queries with a durable cursor: cqrs-es queries fed from the store's log, not only from the
//! commands of this process.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use cqrs_es::{Aggregate, EventEnvelope, Query};
use varvedb::Storage;

use crate::{META_AGGREGATE_TYPE, SNAPSHOT_EVENT, to_serialized, unknown};

/// Log entries a runner reads per batch (one store snapshot), at most.
const BATCH: usize = 512;

/// Feeds cqrs-es [`Query`]s the events of aggregate type `A` from the store's log, in global
/// order, from a durable named cursor: the store's consumer `name` (listed by
/// `varvedb consumers`, with its lag among the store's metrics). The cursor moves after each
/// batch has been dispatched, so a crash replays at most one batch (at-least-once, as a
/// `Processor`); a runner started again resumes after its cursor, and a new one starts
/// from the first event, which rebuilds a view.
///
/// Unlike `CqrsFramework`'s own dispatch, which reaches the queries of the process that ran
/// the command, a runner sees every committed event, whichever process or replica wrote it.
/// Consecutive events of one aggregate instance in the log are dispatched together.
pub struct QueryRunner<A: Aggregate> {
    storage: Storage,
    name: String,
    queries: Vec<Box<dyn Query<A>>>,
    poll: Duration,
}

impl<A: Aggregate> std::fmt::Debug for QueryRunner<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRunner")
            .field("name", &self.name)
            .field("queries", &self.queries.len())
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> QueryRunner<A> {
    /// A runner named `name` (the consumer cursor's name) for `queries`.
    pub fn new(storage: Storage, name: impl Into<String>, queries: Vec<Box<dyn Query<A>>>) -> Self {
        QueryRunner {
            storage,
            name: name.into(),
            queries,
            poll: Duration::from_millis(100),
        }
    }

    /// How often a following runner looks for events written by other processes (those of
    /// this process wake it at once). Default 100 ms.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Dispatches every event after the cursor, then returns the cursor.
    pub async fn run_once(&self) -> Result<u64, PersistenceError> {
        self.run(std::future::pending(), true).await
    }

    /// Dispatches events as they are committed until `signal` completes; returns the cursor.
    pub async fn run_until(
        &self,
        signal: impl Future<Output = ()>,
    ) -> Result<u64, PersistenceError> {
        self.run(signal, false).await
    }

    async fn run(
        &self,
        signal: impl Future<Output = ()>,
        once: bool,
    ) -> Result<u64, PersistenceError> {
        let mut signal = std::pin::pin!(signal);
        let mut changes = self.storage.subscribe();
        let mut position = self
            .storage
            .consumer_position(&self.name)
            .map_err(unknown)?
            .unwrap_or(0);
        loop {
            changes.borrow_and_update();
            let (events, last) = self.read_batch(position + 1)?;
            if let Some(last) = last {
                for run in runs(events)? {
                    let aggregate_id = run[0].aggregate_id.clone();
                    for query in &self.queries {
                        query.dispatch(&aggregate_id, &run).await;
                    }
                }
                self.storage
                    .reset_consumer(&self.name, last)
                    .map_err(unknown)?;
                position = last;
                continue;
            }
            if once {
                return Ok(position);
            }
            tokio::select! {
                () = &mut signal => return Ok(position),
                _ = changes.changed() => {}
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// The events of `A` among up to [`BATCH`] log entries from `from`, and the last entry
    /// read (`None`: the log ends before `from`).
    fn read_batch(
        &self,
        from: u64,
    ) -> Result<(Vec<SerializedEvent>, Option<u64>), PersistenceError> {
        let txn = self.storage.read_txn().map_err(unknown)?;
        let raw = self.storage.raw_reader();
        let mut out = Vec::new();
        let mut last = None;
        for event in raw.read_all(&txn, from).take(BATCH) {
            let event = event.map_err(unknown)?;
            last = Some(event.seq());
            if event.event_container() != varvedb::JSON_CONTAINER
                || event.event_type() == SNAPSHOT_EVENT
                || event.metadata().get(META_AGGREGATE_TYPE) != Some(A::TYPE)
            {
                continue;
            }
            out.push(to_serialized(&event)?);
        }
        Ok((out, last))
    }
}

/// Consecutive events of one aggregate instance, as envelopes.
fn runs<A: Aggregate>(
    events: Vec<SerializedEvent>,
) -> Result<Vec<Vec<EventEnvelope<A>>>, PersistenceError> {
    let mut out: Vec<Vec<EventEnvelope<A>>> = Vec::new();
    for e in events {
        let payload: A::Event = serde_json::from_value(e.payload)
            .map_err(|err| PersistenceError::DeserializationError(Box::new(err)))?;
        let metadata: HashMap<String, String> = match e.metadata {
            serde_json::Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| {
                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    (k, v)
                })
                .collect(),
            _ => HashMap::new(),
        };
        let envelope = EventEnvelope {
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            payload,
            metadata,
        };
        match out.last_mut() {
            Some(run) if run[0].aggregate_id == envelope.aggregate_id => run.push(envelope),
            _ => out.push(vec![envelope]),
        }
    }
    Ok(out)
}
