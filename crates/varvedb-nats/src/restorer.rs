//! The restorer: a store rebuilt from a JetStream stream the replicator wrote, whole commit
//! groups at a time, optionally following it.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self as js, kv};
use futures_util::StreamExt;
use varvedb::{ExportHeader, ExportKey, ExportType, Importer, Storage, StoredEvent, StreamRemoval};

use crate::{Error, check_stream_name, connect, keys_bucket, nats, wire};

/// How long the restorer waits for the next message before it commits what it holds.
const IDLE_COMMIT: Duration = Duration::from_millis(20);
/// How long whole groups wait for a commit at most while messages keep coming.
const COMMIT_AFTER: Duration = Duration::from_millis(50);

/// Where to restore from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RestoreConfig {
    /// The server, `nats://HOST:PORT`.
    pub url: String,
    /// The JetStream stream the replicator wrote.
    pub stream: String,
    /// Keep following the stream after catching up (until the signal).
    pub follow: bool,
    /// How long a request to the server may take. Default 5 s.
    pub timeout: Duration,
    /// How long the first connection to the server is tried before the restore gives up with
    /// [`Error::Unreachable`]. Default 10 s.
    pub connect_timeout: Duration,
}

impl RestoreConfig {
    /// A one-off restore of `stream` from the server at `url`.
    pub fn new(url: impl Into<String>, stream: impl Into<String>) -> Self {
        RestoreConfig {
            url: url.into(),
            stream: stream.into(),
            follow: false,
            timeout: Duration::from_secs(5),
            connect_timeout: crate::CONNECT_TIMEOUT,
        }
    }

    /// Sets how long the first connection is tried.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Follows the stream after catching up.
    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }
}

/// What a restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreReport {
    /// Events written to the store.
    pub applied: u64,
    /// Streams shredded in the store because they were shredded at the source.
    pub shredded: u64,
    /// Events of the source removed (truncations, deletions, tombstones, retention) that
    /// this restore removed from the store or never wrote.
    pub removed: u64,
    /// The store's last sequence when the restore returned.
    pub last_seq: u64,
    /// The JetStream stream's last sequence when the restore last looked.
    pub source_last_seq: u64,
}

struct Restore<'a> {
    storage: &'a Storage,
    bucket: kv::Store,
    importer: Importer,
    format: u32,
    types: HashSet<u32>,
    keyed: HashSet<u128>,
    group: Vec<StoredEvent>,
    /// The last sequence of the commit group being queued in `group`.
    group_last: u64,
    /// Events pushed to the importer and not yet counted as applied.
    pushed: u64,
    /// The last sequence accounted for: written, queued, or removed at the source.
    accounted: u64,
    /// The source's removals taken, by stream.
    removals: HashMap<u128, StreamRemoval>,
    /// Each stream's version as the store will have it once what is queued is written; read
    /// from the store the first time a stream comes after a commit.
    versions: HashMap<u128, u32>,
    report: RestoreReport,
    uncommitted: bool,
    /// When the oldest whole group not yet committed was queued.
    held_since: Option<std::time::Instant>,
}

/// Rebuilds `storage` from the JetStream stream of `config`, or brings it up to date: the
/// store must be empty or hold a prefix of the stream's events (an earlier restore, which
/// this continues). Events are written whole commit groups at a time, so a reader of the
/// store never sees part of an atomic append, and each write is durable before the next.
/// The records written are the source's, byte for byte (verify passes on the result).
///
/// Without `follow`, it returns once the store holds every message the stream had when it
/// started; with `follow`, it keeps applying new messages (and shreds) until `signal`
/// completes. Processors of the store (in this process or another) see the events as they
/// are committed.
pub async fn restore(
    storage: &Storage,
    config: &RestoreConfig,
    signal: impl Future<Output = ()>,
) -> Result<RestoreReport, Error> {
    restore_with_progress(storage, config, signal, |_| {}).await
}

/// [`restore`], calling `progress` after each commit with what it did so far: the store's
/// last sequence and the stream's, whose difference is the replica's lag in events.
pub async fn restore_with_progress(
    storage: &Storage,
    config: &RestoreConfig,
    signal: impl Future<Output = ()>,
    mut progress: impl FnMut(&RestoreReport),
) -> Result<RestoreReport, Error> {
    check_stream_name(&config.stream)?;
    let mut signal = std::pin::pin!(signal);
    let mut report = RestoreReport::default();
    let mut backoff = Duration::from_millis(50);
    let mut connected = false;
    loop {
        let session = session(
            storage,
            config,
            signal.as_mut(),
            &mut report,
            &mut progress,
            &mut connected,
        );
        match session.await {
            Ok(()) => return Ok(report),
            // A follower rides out a server restart or a lost network: it starts over from
            // what it committed. A server never reached at all is an error at once.
            Err(e)
                if config.follow
                    // (A stream not made yet is waited for: its replicator may start later.)
                    && (matches!(e, Error::Nats(_) | Error::NoSuchStream { .. })
                        || connected && matches!(e, Error::Unreachable { .. })) =>
            {
                tracing::warn!(reason = %e, "restore interrupted; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = signal.as_mut() => return Ok(report),
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The JetStream stream a restore reads: [`Error::NoSuchStream`] when the server has none.
async fn source_stream(context: &js::Context, name: &str) -> Result<js::stream::Stream, Error> {
    context.get_stream(name).await.map_err(|e| {
        let missing = matches!(
            e.kind(),
            js::context::GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == js::ErrorCode::STREAM_NOT_FOUND
        );
        if missing {
            Error::NoSuchStream {
                stream: name.to_string(),
            }
        } else {
            nats(format!("stream {name}: {e}"))
        }
    })
}

/// Checks, before a restore creates anything, that the server at `config.url` can be reached
/// and holds the stream `config.stream` that a replicator wrote: [`Error::Unreachable`],
/// [`Error::NoSuchStream`], or [`Error::Nats`] naming what is missing. Returns the stream's
/// last sequence.
pub async fn check_source(config: &RestoreConfig) -> Result<u64, Error> {
    check_stream_name(&config.stream)?;
    let (mut stream, bucket, bucket_name) = open_source(config, &mut false).await?;
    if bucket.get("format").await.map_err(nats)?.is_none() {
        return Err(nats(format!(
            "{bucket_name} has no format entry: nothing was replicated to {}",
            config.stream
        )));
    }
    Ok(stream.info().await.map_err(nats)?.state.last_sequence)
}

/// Connects to the source (setting `connected` once it has), and opens its JetStream stream and
/// key-value bucket (with the bucket's name).
async fn open_source(
    config: &RestoreConfig,
    connected: &mut bool,
) -> Result<(js::stream::Stream, kv::Store, String), Error> {
    let client = connect(&config.url, config.timeout, config.connect_timeout).await?;
    *connected = true;
    let context = js::context::ContextBuilder::new()
        .timeout(config.timeout)
        .build(client);
    let stream = source_stream(&context, &config.stream).await?;
    let bucket_name = keys_bucket(&config.stream);
    let bucket = context
        .get_key_value(&bucket_name)
        .await
        .map_err(|e| nats(format!("key-value bucket {bucket_name}: {e}")))?;
    Ok((stream, bucket, bucket_name))
}

/// One connected stretch of a restore.
async fn session(
    storage: &Storage,
    config: &RestoreConfig,
    mut signal: std::pin::Pin<&mut impl Future<Output = ()>>,
    total: &mut RestoreReport,
    progress: &mut impl FnMut(&RestoreReport),
    connected: &mut bool,
) -> Result<(), Error> {
    let (mut stream, bucket, bucket_name) = open_source(config, connected).await?;
    let format = match bucket.get("format").await.map_err(nats)? {
        Some(v) => std::str::from_utf8(&v)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| nats(format!("{bucket_name}: a malformed format entry")))?,
        None => {
            return Err(nats(format!(
                "{bucket_name} has no format entry: nothing was replicated to {}",
                config.stream
            )));
        }
    };
    let mut importer = storage.importer();
    let last = importer.resume()?;
    // The source's removals leave gaps in its sequences; the restore explains each one.
    importer.take_gaps();
    let header = {
        let txn = storage.read_txn()?;
        storage.export_header(&txn)?
    };
    let mut restore = Restore {
        storage,
        bucket,
        importer,
        format,
        types: header.types.iter().map(|t| t.id).collect(),
        keyed: header.keys.iter().map(|k| k.stream_id).collect(),
        group: Vec::new(),
        group_last: 0,
        pushed: 0,
        accounted: last,
        removals: HashMap::new(),
        versions: HashMap::new(),
        report: RestoreReport {
            last_seq: last,
            ..*total
        },
        uncommitted: false,
        held_since: None,
    };
    // Shreds and rotations made while this replica was not watching (stopped, or cut off):
    // the watch starts first, so that nothing changed during the comparison is missed.
    let mut watch = if config.follow {
        Some(restore.bucket.watch_all().await.map_err(nats)?)
    } else {
        None
    };
    restore.reconcile_keys().await?;
    restore.begin(Vec::new(), Vec::new(), true).await?;
    // Removals and policies made at the source since the last run (or ever, on a new replica).
    restore.reconcile_removals().await?;
    let source_last = stream.info().await.map_err(nats)?.state.last_sequence;
    restore.report.source_last_seq = source_last;
    if last > source_last {
        return Err(Error::Diverged {
            seq: source_last + 1,
            reason: format!(
                "the store holds events up to {last}, the JetStream stream messages up to \
                 {source_last}"
            ),
        });
    }
    if last > 0 {
        restore.check_same(&stream, last).await?;
    }
    *total = restore.report;
    if last == source_last && !config.follow {
        return Ok(());
    }
    // Without `follow` the restore ends at the stream's last sequence, whose message may have
    // been purged (the source removed its last events): once nothing is pending, the rest of
    // the sequences up to it are removed ones.
    let finish_removed = |restore: &mut Restore<'_>| -> Result<(), Error> {
        restore.removed_through(source_last)?;
        restore.commit()?;
        Ok(())
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(nats)?;
    let nothing_pending = consumer.cached_info().num_pending == 0;
    let mut messages = consumer.messages().await.map_err(nats)?;
    if !config.follow && nothing_pending {
        finish_removed(&mut restore)?;
        *total = restore.report;
        return Ok(());
    }
    loop {
        let waited = async {
            match &mut watch {
                Some(w) => w.next().await,
                None => std::future::pending().await,
            }
        };
        *total = restore.report;
        tokio::select! {
            biased;
            () = signal.as_mut() => break,
            entry = waited => {
                let entry = entry
                    .ok_or_else(|| nats("the key watch ended"))?
                    .map_err(nats)?;
                restore.key_changed(&entry).await?;
            }
            next = tokio::time::timeout(IDLE_COMMIT, messages.next()) => {
                match next {
                    Err(_idle) => {
                        if restore.commit()? {
                            progress(&restore.report);
                        }
                    }
                    Ok(None) => return Err(nats("the consumer ended")),
                    Ok(Some(message)) => {
                        let message = message.map_err(nats)?;
                        let info = message.info().map_err(nats)?;
                        let at = info.stream_sequence;
                        restore.report.source_last_seq =
                            restore.report.source_last_seq.max(at + info.pending);
                        let decoded = wire::decode_message(
                            at,
                            message.headers.as_ref(),
                            &message.payload,
                        )?;
                        let pending = info.pending;
                        if restore.apply(at, decoded).await? {
                            progress(&restore.report);
                        }
                        // Caught up with the stream, or holding groups for long enough: they
                        // go in now, so a following replica lags by a flush, not a batch.
                        let caught_up = pending == 0 && restore.group.is_empty();
                        let held = restore
                            .held_since
                            .is_some_and(|t| t.elapsed() >= COMMIT_AFTER);
                        if (caught_up || held) && restore.commit()? {
                            progress(&restore.report);
                        }
                        if !config.follow && (at >= source_last || pending == 0) {
                            finish_removed(&mut restore)?;
                            break;
                        }
                    }
                }
            }
        }
    }
    restore.commit()?;
    *total = restore.report;
    Ok(())
}

impl Restore<'_> {
    /// Applies types, keys and the master-key check through the importer's header.
    async fn begin(
        &mut self,
        types: Vec<ExportType>,
        keys: Vec<ExportKey>,
        with_check: bool,
    ) -> Result<(), Error> {
        let key_check = if with_check {
            self.bucket
                .get("check")
                .await
                .map_err(nats)?
                .map(|v| v.to_vec())
        } else {
            None
        };
        if types.is_empty() && keys.is_empty() && key_check.is_none() {
            return Ok(());
        }
        // Types and keys go in with the events after them: what is queued is written first.
        self.commit()?;
        let mut header = ExportHeader {
            format: self.format,
            // A replica follows its source: no last event.
            last_seq: u64::MAX,
            origin: None,
            types: Vec::new(),
            keys: Vec::new(),
            key_check,
            consumers: Vec::new(),
            removed_events: 0,
            bounds: Vec::new(),
            groups: Vec::new(),
        };
        header.types = types;
        header.keys = keys;
        self.importer.begin(&header)?;
        Ok(())
    }

    /// Takes the message at stream sequence `at`: the sequences before it that did not come
    /// were removed at the source (purged from the stream); a removed event's place, or an
    /// event of a stream below its first kept version, is a removed one too; any other event
    /// is queued, and its group written when it is whole. Returns whether that committed (a
    /// full batch).
    async fn apply(&mut self, at: u64, message: wire::Message) -> Result<bool, Error> {
        if at <= self.accounted {
            return Err(Error::BadMessage {
                seq: at,
                reason: format!("it comes after event {}", self.accounted),
            });
        }
        let committed = self.removed_through(at - 1)?;
        let decoded = match message {
            wire::Message::Removed => return Ok(self.removed_through(at)? || committed),
            wire::Message::Event(decoded) => decoded,
        };
        let wire::Decoded {
            mut event,
            type_id,
            links,
            group_last,
        } = *decoded;
        let stream_id = event.stream_id;
        let version = self.version_of(stream_id)?;
        if event.version > version.saturating_add(1) {
            // Versions the store never had: the source removed them, and says so in the
            // bucket before their messages left the stream.
            self.refresh_removal(stream_id).await?;
        }
        let first_kept = self.removals.get(&stream_id).map_or(1, |r| r.first_kept);
        if event.version < first_kept {
            // Removed since it was published; its purge has not reached the stream yet.
            return Ok(self.removed_through(at)? || committed);
        }
        let version = self.version_of(stream_id)?;
        if event.version != version.saturating_add(1) {
            return Err(Error::BadMessage {
                seq: at,
                reason: format!(
                    "it is version {} of stream {stream_id}, which is at version {version}, and \
                     the source removed none of the versions between (a message of the \
                     stream was removed?)",
                    event.version
                ),
            });
        }
        // The source's links, as its record has them: in a stream whose first events were
        // removed (here or there) they name records this store never had, which only the
        // source can place.
        event.links = links;
        let mut types = Vec::new();
        if self.types.insert(type_id) {
            types.push(ExportType {
                id: type_id,
                container: event.type_container.clone(),
                name: event.type_name.clone(),
                version: event.type_version,
            });
        }
        let mut keys = Vec::new();
        if event.encrypted && !self.keyed.contains(&event.stream_id) {
            let entry = wire::key_entry(event.stream_id);
            let value = self
                .bucket
                .get(&entry)
                .await
                .map_err(nats)?
                .ok_or_else(|| Error::BadMessage {
                    seq: event.seq,
                    reason: format!(
                        "an encrypted event of stream {}, whose key was never published",
                        event.stream_id
                    ),
                })?;
            keys.push(ExportKey {
                stream_id: event.stream_id,
                wrapped: (!value.is_empty()).then(|| value.to_vec()),
            });
            self.keyed.insert(event.stream_id);
        }
        if !types.is_empty() || !keys.is_empty() {
            self.begin(types, keys, false).await?;
        }
        if self.group.is_empty() {
            self.group_last = group_last;
        }
        self.accounted = event.seq;
        self.versions.insert(stream_id, event.version);
        self.group.push(event);
        if self.accounted >= self.group_last {
            return Ok(self.close_group()? || committed);
        }
        Ok(committed)
    }

    /// Queues the commit group in hand, whole; returns whether that committed (a full batch).
    fn close_group(&mut self) -> Result<bool, Error> {
        let group = std::mem::take(&mut self.group);
        let last_event = group.last().map_or(0, |e| e.seq);
        self.pushed += group.len() as u64;
        self.uncommitted = true;
        self.held_since.get_or_insert_with(std::time::Instant::now);
        // A full batch: everything queued was written with it.
        let full = self.importer.push_group(group)?;
        if full {
            self.mark_committed();
        }
        // Removed events at the group's end (after its last kept one) count after it.
        if self.accounted > last_event {
            self.importer.skip_to(self.accounted)?;
            self.uncommitted = true;
            self.held_since.get_or_insert_with(std::time::Instant::now);
        }
        Ok(full)
    }

    /// The sequences up to `seq` not yet accounted for were removed at the source. Returns
    /// whether a group written on the way committed.
    fn removed_through(&mut self, seq: u64) -> Result<bool, Error> {
        if seq <= self.accounted {
            return Ok(false);
        }
        self.report.removed += seq - self.accounted;
        self.accounted = seq;
        if !self.group.is_empty() {
            // Inside the group in hand, or past its end.
            if self.accounted >= self.group_last {
                return self.close_group();
            }
            return Ok(false);
        }
        self.importer.skip_to(seq)?;
        self.uncommitted = true;
        self.held_since.get_or_insert_with(std::time::Instant::now);
        Ok(false)
    }

    /// A stream's version as the store will have it once what is queued is written.
    fn version_of(&mut self, stream_id: u128) -> Result<u32, Error> {
        if let Some(&v) = self.versions.get(&stream_id) {
            return Ok(v);
        }
        let v = self
            .storage
            .stream_version(&self.storage.read_txn()?, stream_id)?;
        self.versions.insert(stream_id, v);
        Ok(v)
    }

    /// Reads a stream's removal from the bucket and takes it.
    async fn refresh_removal(&mut self, stream_id: u128) -> Result<(), Error> {
        let entry = wire::bounds_entry(stream_id);
        if let Some(value) = self.bucket.get(&entry).await.map_err(nats)? {
            let removal = wire::decode_removal(stream_id, &value)
                .ok_or_else(|| nats(format!("a malformed bucket entry {entry}")))?;
            self.take_removal(removal)?;
        }
        Ok(())
    }

    /// Takes a source's removal: what is queued is written first, then the store's own
    /// events of the stream below its first kept version go, and it takes the bounds and the
    /// tombstone. A removal already taken does nothing.
    fn take_removal(&mut self, removal: StreamRemoval) -> Result<(), Error> {
        if self.removals.get(&removal.stream_id) == Some(&removal) {
            return Ok(());
        }
        // The group in hand stays queued here (a removal never splits it), without the
        // stream's events that the removal takes: their sequences are removed ones.
        self.commit()?;
        let removed = self.importer.adopt_removal(&removal)?;
        self.report.removed += removed;
        let before = self.group.len();
        self.group
            .retain(|e| e.stream_id != removal.stream_id || e.version >= removal.first_kept);
        self.report.removed += (before - self.group.len()) as u64;
        match self
            .group
            .iter()
            .rev()
            .find(|e| e.stream_id == removal.stream_id)
        {
            Some(e) => {
                self.versions.insert(removal.stream_id, e.version);
            }
            None => {
                self.versions.remove(&removal.stream_id);
            }
        }
        self.removals.insert(removal.stream_id, removal);
        Ok(())
    }

    /// Takes every removal and retention policy the bucket holds (at each connection: what
    /// changed while this replica was not watching).
    async fn reconcile_removals(&mut self) -> Result<(), Error> {
        let mut keys = self.bucket.keys().await.map_err(nats)?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(nats)?;
            if wire::parse_bounds_entry(&key).is_some() || wire::parse_policy_entry(&key).is_some()
            {
                names.push(key);
            }
        }
        for key in names {
            if let Some(value) = self.bucket.get(&key).await.map_err(nats)? {
                self.entry_changed(&key, &value)?;
            }
        }
        Ok(())
    }

    /// A removal or a policy entry of the bucket: taken. Other entries: `false`.
    fn entry_changed(&mut self, key: &str, value: &[u8]) -> Result<bool, Error> {
        if let Some(stream_id) = wire::parse_bounds_entry(key) {
            let removal = wire::decode_removal(stream_id, value)
                .ok_or_else(|| nats(format!("a malformed bucket entry {key}")))?;
            self.take_removal(removal)?;
            return Ok(true);
        }
        if let Some(stream) = wire::parse_policy_entry(key) {
            let policy = wire::decode_policy(value)
                .ok_or_else(|| nats(format!("a malformed bucket entry {key}")))?;
            match stream {
                None => self.storage.set_default_retention(policy)?,
                Some(id) => self.storage.set_stream_retention(id, policy)?,
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes what is queued; returns whether there was anything.
    fn commit(&mut self) -> Result<bool, Error> {
        if !self.uncommitted {
            return Ok(false);
        }
        {
            self.importer.commit()?;
            self.mark_committed();
        }
        Ok(true)
    }

    /// Everything pushed is in the store: the report moves to it.
    fn mark_committed(&mut self) {
        self.uncommitted = false;
        self.held_since = None;
        // Versions are read again from the store (which keeps this map bounded), but for the
        // group in hand, not written yet.
        self.versions.clear();
        for e in &self.group {
            self.versions.insert(e.stream_id, e.version);
        }
        self.report.applied += std::mem::take(&mut self.pushed);
        self.report.last_seq = self.importer.next_seq() - 1;
    }

    /// The store's event `seq` is the stream's message `seq`.
    async fn check_same(&self, stream: &js::stream::Stream, seq: u64) -> Result<(), Error> {
        let message = match stream.get_raw_message(seq).await {
            Ok(m) => m,
            Err(e)
                if matches!(
                    e.kind(),
                    js::stream::LastRawMessageErrorKind::NoMessageFound
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(nats(e)),
        };
        let theirs = wire::decode_message(seq, Some(&message.headers), &message.payload)?;
        let txn = self.storage.read_txn()?;
        let mine = self
            .storage
            .export_events(&txn, seq)
            .next()
            .transpose()?
            .filter(|e| e.seq == seq);
        let (theirs, mine) = match (theirs, mine) {
            (wire::Message::Event(theirs), Some(mine)) => (theirs, mine),
            // Removed here (and perhaps not yet purged there), or a removed event's place.
            (_, None) => return Ok(()),
            (wire::Message::Removed, Some(_)) => {
                return Err(Error::Diverged {
                    seq,
                    reason: "the stream's message there stands for a removed event, and the \
                             store has an event there"
                        .into(),
                });
            }
        };
        if !theirs.event.is_same_event_as(&mine) {
            return Err(Error::Diverged {
                seq,
                reason: "the store's last event is not the stream's message at its sequence".into(),
            });
        }
        Ok(())
    }

    /// Compares every key this replica holds, and the master-key check, with the source's
    /// bucket, and adopts what changed there: shreds, and keys rewrapped by a rotation. Run at
    /// every connection (one read of the bucket per encrypted stream of the replica).
    async fn reconcile_keys(&mut self) -> Result<(), Error> {
        let check = self.bucket.get("check").await.map_err(nats)?;
        let mut keys = Vec::with_capacity(self.keyed.len());
        for &stream_id in &self.keyed {
            if let Some(value) = self
                .bucket
                .get(wire::key_entry(stream_id))
                .await
                .map_err(nats)?
            {
                keys.push(ExportKey {
                    stream_id,
                    wrapped: (!value.is_empty()).then(|| value.to_vec()),
                });
            }
        }
        self.adopt(check.as_deref(), &keys)
    }

    /// Adopts a source's keystore changes (see [`Importer::adopt_keys`]).
    fn adopt(&mut self, check: Option<&[u8]>, keys: &[ExportKey]) -> Result<(), Error> {
        self.commit()?;
        let (shredded, _rewrapped) = self.importer.adopt_keys(check, keys)?;
        self.report.shredded += shredded;
        Ok(())
    }

    /// An entry of the bucket changed at the source: a key (empty: a shred; another wrapped
    /// key: a rotation) or the master-key check (a rotation).
    async fn key_changed(&mut self, entry: &kv::Entry) -> Result<(), Error> {
        if !matches!(entry.operation, kv::Operation::Put) {
            return Ok(());
        }
        if self.entry_changed(&entry.key, &entry.value)? {
            return Ok(());
        }
        if entry.key == "check" {
            return self.adopt(Some(&entry.value), &[]);
        }
        let Some(stream_id) = wire::parse_key_entry(&entry.key) else {
            return Ok(());
        };
        if !self.keyed.contains(&stream_id) {
            // A new stream's key is taken when its first event comes.
            return Ok(());
        }
        let key = ExportKey {
            stream_id,
            wrapped: (!entry.value.is_empty()).then(|| entry.value.to_vec()),
        };
        self.adopt(None, &[key])
    }
}
