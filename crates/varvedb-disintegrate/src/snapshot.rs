//! Snapshots of decision states, as events of their own streams.

use disintegrate::{BoxDynError, StatePart, StateQuery, StateSnapshotter};
use serde::Serialize;
use serde::de::DeserializeOwned;
use varvedb::{ExpectedVersion, JsonEvent, Storage, Writer};

/// The type name of snapshot events (in the JSON container: never one of a disintegrate
/// event's names, which are Rust identifiers).
pub const SNAPSHOT_EVENT: &str = "disintegrate.snapshot";

/// Keeps the states of decisions so that loading one reads only the events after it: a
/// [`StateSnapshotter`] for `EventSourcedStateStore::new(store, WithSnapshot::new(..))`.
///
/// A state is kept once it has applied `every` events since it was loaded (from its last
/// snapshot, or from the start), as an event of its own stream (one per state query, named by
/// its `NAME` and its query), JSON-encoded. A snapshot that cannot be read (another layout
/// after a code change) is ignored, and the state is rebuilt from the events.
#[derive(Debug, Clone)]
pub struct VarveSnapshotter {
    storage: Storage,
    writer: Writer<JsonEvent>,
    every: u64,
}

impl VarveSnapshotter {
    /// A snapshotter that keeps a state after every `every` events it applied.
    pub fn new(storage: Storage, every: u64) -> Self {
        VarveSnapshotter {
            writer: Writer::new(storage.clone()),
            storage,
            every: every.max(1),
        }
    }

    /// The stream of a state query's snapshots.
    fn stream<S: StateQuery>(state: &S) -> u128 {
        let query = crate::snapshot_query(&state.query::<u64>());
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"varvedb-disintegrate-snapshot\0");
        hasher.update(S::NAME.as_bytes());
        hasher.update(&[0]);
        hasher.update(format!("{query:?}").as_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        u128::from_le_bytes(id) & !(1 << 127)
    }

    fn load<S: StateQuery + DeserializeOwned>(&self, stream: u128) -> Option<StatePart<u64, S>> {
        let txn = self.storage.read_txn().ok()?;
        let version = self.storage.stream_version(&txn, stream).ok()?;
        if version == 0 {
            return None;
        }
        let event = self
            .storage
            .raw_reader()
            .get_by_version(&txn, stream, version)
            .ok()??;
        let json = JsonEvent::data_of(&event)?;
        let stored: StatePart<u64, S> = serde_json::from_str(&json).ok()?;
        // A loaded state counts the events applied since itself, not since the start: its
        // next snapshot is due `every` events later (disintegrate-postgres does the same).
        Some(StatePart::new(stored.version(), (*stored).clone()))
    }
}

#[async_trait::async_trait]
impl StateSnapshotter<u64> for VarveSnapshotter {
    async fn load_snapshot<S>(&self, default: StatePart<u64, S>) -> StatePart<u64, S>
    where
        S: Send + Sync + DeserializeOwned + StateQuery + 'static,
    {
        let stream = Self::stream(&*default);
        self.load(stream).unwrap_or(default)
    }

    async fn store_snapshot<S>(&self, state: &StatePart<u64, S>) -> Result<(), BoxDynError>
    where
        S: Send + Sync + Serialize + StateQuery + 'static,
    {
        if state.applied_events() < self.every {
            return Ok(());
        }
        let json = serde_json::to_string(state)?;
        let event = JsonEvent::new(SNAPSHOT_EVENT, json);
        self.writer
            .append_async(Self::stream(&**state), ExpectedVersion::Auto, &event)
            .await?;
        Ok(())
    }
}
