//! The restorer: a store rebuilt from a JetStream stream the replicator wrote, whole commit
//! groups at a time, optionally following it.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self as js, kv};
use futures_util::StreamExt;
use varvedb::{ExportHeader, ExportKey, ExportType, Importer, Storage, StoredEvent};

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
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(nats)?;
    let mut messages = consumer.messages().await.map_err(nats)?;
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
                        let decoded = wire::decode_event(
                            at,
                            message.headers.as_ref(),
                            &message.payload,
                        )?;
                        let pending = info.pending;
                        if restore.apply(decoded).await? {
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
                        if !config.follow && at >= source_last {
                            restore.commit()?;
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
        };
        header.types = types;
        header.keys = keys;
        self.importer.begin(&header)?;
        Ok(())
    }

    /// Queues an event, writing its group when it is whole; returns whether that committed
    /// (a full batch).
    async fn apply(&mut self, decoded: wire::Decoded) -> Result<bool, Error> {
        let wire::Decoded {
            event,
            type_id,
            group_last,
        } = decoded;
        if event.seq != self.importer.next_seq() + self.group.len() as u64 {
            return Err(Error::BadMessage {
                seq: event.seq,
                reason: format!(
                    "expected event {} next (a message of the stream was removed?)",
                    self.importer.next_seq() + self.group.len() as u64
                ),
            });
        }
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
        let ends = event.seq == group_last;
        self.group.push(event);
        if ends {
            let group = std::mem::take(&mut self.group);
            self.uncommitted = true;
            self.held_since.get_or_insert_with(std::time::Instant::now);
            if self.importer.push_group(group)? {
                // A full batch: everything queued was written with it.
                self.mark_committed();
                return Ok(true);
            }
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
        let last = self.importer.next_seq() - 1;
        self.report.applied += last - self.report.last_seq;
        self.report.last_seq = last;
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
        let theirs = wire::decode_event(seq, Some(&message.headers), &message.payload)?;
        let txn = self.storage.read_txn()?;
        let mine = self
            .storage
            .export_events(&txn, seq)
            .next()
            .transpose()?
            .ok_or_else(|| Error::Diverged {
                seq,
                reason: "the store lost its last event".into(),
            })?;
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
