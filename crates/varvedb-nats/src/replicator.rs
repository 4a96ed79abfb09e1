//! The replicator: the store's log, in order, onto a JetStream stream whose sequence is the
//! store's global sequence.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind};
use async_nats::jetstream::{self as js};
use varvedb::{RetentionPolicy, Storage, StoredEvent, StreamRemoval};

use crate::{Error, ReplicatorConfig, check_stream_name, connect, keys_bucket, nats, wire};

/// Events read from the store and published between two cursor commits, at most (past one
/// commit group).
const CHUNK_EVENTS: usize = 4096;
/// Payload bytes read and published between two cursor commits, at most (past one group).
const CHUNK_BYTES: usize = 16 << 20;
/// The cursor is written at least this often while events keep coming.
const CURSOR_EVERY: Duration = Duration::from_millis(100);
/// Retries back off from this ...
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// ... up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What a replicator did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicationReport {
    /// Events the server stored on this run's publishes.
    pub published: u64,
    /// Publishes the server recognised as resends of a message it had (deduplicated).
    pub duplicates: u64,
    /// Events found already on the server past the cursor (published before a crash, not yet
    /// committed) and checked to be the store's: the cursor moved over them.
    pub adopted: u64,
    /// Failed attempts (lost connection, timeouts) retried after a back-off.
    pub retries: u64,
    /// The cursor: the last event the server acknowledged.
    pub position: u64,
}

/// Publishes a store's events to a JetStream stream, exactly once, in order. See the crate
/// documentation and `docs/design.md`, "Replication to NATS JetStream".
#[derive(Debug, Clone)]
pub struct Replicator {
    storage: Storage,
    config: ReplicatorConfig,
}

/// What a run remembers across its retries.
#[derive(Default)]
struct Known {
    /// Type ids with their (container, name, version): a store has few types, so a scan
    /// finds one without building a key per event.
    types: Vec<(String, String, u16, u32)>,
    /// The key entries published, by stream: the wrapped key, or `None` once shredded.
    keys: HashMap<u128, Option<Vec<u8>>>,
    format_and_check: bool,
    /// The master-key check published last.
    check: Option<Vec<u8>>,
    last_key_sync: Option<Instant>,
    /// The removals published (bounds entries written, the stream's messages purged), by
    /// stream.
    removals: HashMap<u128, StreamRemoval>,
    /// The store's removed count when its removals were last published.
    removed_seen: Option<u64>,
    /// The retention policies published: the default (`None`) and each stream's.
    policies: HashMap<Option<u128>, RetentionPolicy>,
    /// Whether the bucket's policy entries were compared with the store's this run (a
    /// policy dropped while the replicator was stopped is dropped in the bucket too).
    policies_listed: bool,
}

/// A chunk of the log: its events with their record links, and the last sequence it covers
/// (every sequence from the chunk's first to it is an event here or a removed one).
struct Chunk {
    events: Vec<(StoredEvent, (u64, u64))>,
    end: u64,
    /// The store's removals in the chunk's snapshot, when they changed since the last sync.
    removals: Option<(u64, Vec<StreamRemoval>)>,
}

impl Replicator {
    /// A replicator of `storage` as `config` says. Nothing is contacted until it runs.
    pub fn new(storage: Storage, config: ReplicatorConfig) -> Result<Self, Error> {
        check_stream_name(&config.stream)?;
        let prefix_ok = !config.subject_prefix.is_empty()
            && config.subject_prefix.split('.').all(|t| {
                !t.is_empty() && !t.contains(['*', '>', ' ', '\t', '\r', '\n']) && t.is_ascii()
            });
        if !prefix_ok {
            return Err(Error::InvalidConfig {
                field: "subject_prefix",
                reason: format!(
                    "{:?}: dot-separated ASCII tokens without wildcards or spaces",
                    config.subject_prefix
                ),
            });
        }
        if config.max_in_flight == 0 {
            return Err(Error::InvalidConfig {
                field: "max_in_flight",
                reason: "at least 1".into(),
            });
        }
        if config.consumer.is_empty() || config.consumer.contains('\0') {
            return Err(Error::InvalidConfig {
                field: "consumer",
                reason: "1 or more bytes, without NUL".into(),
            });
        }
        Ok(Replicator { storage, config })
    }

    /// The store it replicates.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Its settings.
    pub fn config(&self) -> &ReplicatorConfig {
        &self.config
    }

    /// Events committed in the store and not yet acknowledged by the server, as the cursor
    /// says (it moves every 4,096 events or 100 ms, and when the replicator catches up). Also
    /// exported as the consumer's
    /// `varvedb_consumer_lag_events` gauge in [`Storage::metrics_text`].
    pub fn lag(&self) -> Result<u64, Error> {
        let position = self
            .storage
            .consumer_position(&self.config.consumer)?
            .unwrap_or(0);
        let last = self.storage.last_seq(&self.storage.read_txn()?)?;
        Ok(last.saturating_sub(position))
    }

    /// Publishes every event the store holds and returns once the server has acknowledged
    /// them all (the store's last sequence when it got there). Lost connections and
    /// timeouts are retried with a back-off; what cannot be retried (a diverged stream, an
    /// event over the server's `max_payload`, a store error) is returned.
    pub async fn run_once(&self) -> Result<ReplicationReport, Error> {
        self.run(std::future::pending(), true).await
    }

    /// Follows the store: publishes its events as they are committed, until `signal`
    /// completes. The cursor holds what the server acknowledged; the next run resumes there.
    pub async fn run_until(
        &self,
        signal: impl Future<Output = ()>,
    ) -> Result<ReplicationReport, Error> {
        self.run(signal, false).await
    }

    async fn run(
        &self,
        signal: impl Future<Output = ()>,
        once: bool,
    ) -> Result<ReplicationReport, Error> {
        let mut signal = std::pin::pin!(signal);
        let mut report = ReplicationReport {
            position: self.position()?,
            ..Default::default()
        };
        let client = tokio::select! {
            c = connect(&self.config.url, self.config.ack_timeout, self.config.connect_timeout) => c?,
            () = &mut signal => return Ok(report),
        };
        let context = js::context::ContextBuilder::new()
            .timeout(self.config.ack_timeout)
            .ack_timeout(self.config.ack_timeout)
            .max_ack_inflight(self.config.max_in_flight.max(1))
            .backpressure_on_inflight(true)
            .build(client.clone());
        let mut known = Known::default();
        let mut backoff = BACKOFF_MIN;
        loop {
            let progress = report.published + report.duplicates + report.adopted;
            let step = tokio::select! {
                step = self.session(&client, &context, &mut known, &mut report, once) => step,
                () = &mut signal => {
                    report.position = self.position()?;
                    return Ok(report);
                }
            };
            match step {
                Ok(()) => {
                    report.position = self.position()?;
                    return Ok(report);
                }
                Err(Error::Nats(reason)) => {
                    report.retries += 1;
                    // A stretch that got somewhere starts the back-off over.
                    if report.published + report.duplicates + report.adopted > progress {
                        backoff = BACKOFF_MIN;
                    }
                    tracing::warn!(%reason, backoff_ms = backoff.as_millis() as u64, "replication interrupted; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut signal => {
                            report.position = self.position()?;
                            return Ok(report);
                        }
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn position(&self) -> Result<u64, Error> {
        Ok(self
            .storage
            .consumer_position(&self.config.consumer)?
            .unwrap_or(0))
    }

    /// One connected stretch: set up, reconcile the cursor with the server, then publish.
    async fn session(
        &self,
        client: &async_nats::Client,
        context: &js::Context,
        known: &mut Known,
        report: &mut ReplicationReport,
        once: bool,
    ) -> Result<(), Error> {
        let mut stream = self.ensure_stream(context).await?;
        let bucket = self.ensure_bucket(context).await?;
        let mut position = self.reconcile(&mut stream, report).await?;
        let mut changes = self.storage.subscribe();
        // The cursor is written every few thousand events or 100 ms, and whenever the
        // replicator catches up: a cursor behind the server costs a reconcile, never a copy.
        let mut committed = position;
        let mut committed_at = Instant::now();
        loop {
            let due = known
                .last_key_sync
                .is_none_or(|t| t.elapsed() >= self.config.key_sync_interval);
            if due {
                self.sync_meta(&bucket, known).await?;
                let (removed, removals) = {
                    let txn = self.storage.read_txn()?;
                    (
                        self.storage.removed_events(&txn)?,
                        self.storage.stream_removals(&txn)?,
                    )
                };
                self.sync_removals(&stream, &bucket, known, removed, removals)
                    .await?;
            }
            let mut chunk = self.read_chunk(position + 1, known)?;
            // The removals the chunk's gaps come from are in the bucket before any of it is
            // published: a restorer that meets a gap finds what explains it.
            if let Some((removed, removals)) = chunk.removals.take() {
                self.sync_removals(&stream, &bucket, known, removed, removals)
                    .await?;
            }
            if chunk.end <= position {
                if position > committed {
                    self.storage
                        .reset_consumer(&self.config.consumer, position)?;
                    (committed, committed_at) = (position, Instant::now());
                }
                if once {
                    return Ok(());
                }
                changes.borrow_and_update();
                if self.storage.last_seq(&self.storage.read_txn()?)? > position {
                    continue;
                }
                let _ =
                    tokio::time::timeout(self.config.key_sync_interval, changes.changed()).await;
                continue;
            }
            let needs_sync = chunk.events.iter().any(|(e, _)| {
                known.type_id(e).is_none()
                    || (e.encrypted && !known.keys.contains_key(&e.stream_id))
            });
            if needs_sync {
                self.sync_meta(&bucket, known).await?;
            }
            position = self
                .publish_chunk(client, context, position + 1, chunk, known, report)
                .await?;
            report.position = position;
            if position - committed >= CHUNK_EVENTS as u64 || committed_at.elapsed() >= CURSOR_EVERY
            {
                self.storage
                    .reset_consumer(&self.config.consumer, position)?;
                (committed, committed_at) = (position, Instant::now());
            }
        }
    }

    async fn ensure_stream(&self, context: &js::Context) -> Result<stream::Stream, Error> {
        let config = stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![format!("{}.>", self.config.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas.max(1),
            duplicate_window: self.config.duplicate_window,
            allow_direct: true,
            ..Default::default()
        };
        context
            .get_or_create_stream(config)
            .await
            .map_err(|e| created(format!("stream {}", self.config.stream), e))
    }

    async fn ensure_bucket(&self, context: &js::Context) -> Result<kv::Store, Error> {
        let name = keys_bucket(&self.config.stream);
        if let Ok(store) = context.get_key_value(&name).await {
            return Ok(store);
        }
        // The bucket's stream is created here, in the form a key-value bucket takes, rather
        // than by `create_key_value`: that asks for the account's info first, which async-nats
        // 0.50 cannot parse from nats-server 2.9 (Debian's), and the bucket is never made.
        let config = stream::Config {
            name: format!("KV_{name}"),
            description: Some("VarveDB: format, master-key check and wrapped stream keys".into()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas.max(1),
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        };
        context
            .get_or_create_stream(config)
            .await
            .map_err(|e| created(format!("key-value bucket {name}"), e))?;
        context
            .get_key_value(&name)
            .await
            .map_err(|e| nats(format!("key-value bucket {name}: {e}")))
    }

    /// Publishes the record format, the master-key check, the type ids and every stream key
    /// that changed (a new stream, or a shred) since the last sync.
    async fn sync_meta(&self, bucket: &kv::Store, known: &mut Known) -> Result<(), Error> {
        let header = {
            let txn = self.storage.read_txn()?;
            self.storage.export_header(&txn)?
        };
        if !known.format_and_check {
            put(bucket, "format", header.format.to_string().into_bytes()).await?;
            known.format_and_check = true;
        }
        // The check changes with a rotation of the master key: replicas follow it.
        if header.key_check.is_some() && known.check != header.key_check {
            if let Some(check) = &header.key_check {
                put(bucket, "check", check.clone()).await?;
            }
            known.check = header.key_check;
        }
        known.types = header
            .types
            .into_iter()
            .map(|t| (t.container, t.name, t.version, t.id))
            .collect();
        for k in header.keys {
            if known.keys.get(&k.stream_id) != Some(&k.wrapped) {
                let value = k.wrapped.clone().unwrap_or_default();
                put(bucket, &wire::key_entry(k.stream_id), value).await?;
                known.keys.insert(k.stream_id, k.wrapped);
            }
        }
        self.sync_policies(bucket, known).await?;
        known.last_key_sync = Some(Instant::now());
        Ok(())
    }

    /// Publishes the retention policies that changed, and drops from the bucket those the
    /// store no longer has.
    async fn sync_policies(&self, bucket: &kv::Store, known: &mut Known) -> Result<(), Error> {
        let now: HashMap<Option<u128>, RetentionPolicy> =
            self.storage.retention_policies()?.into_iter().collect();
        if !known.policies_listed {
            let mut keys = bucket
                .keys()
                .await
                .map_err(|e| nats(format!("key-value keys: {e}")))?;
            while let Some(key) = futures_util::StreamExt::next(&mut keys).await {
                let key = key.map_err(|e| nats(format!("key-value keys: {e}")))?;
                if let Some(stream) = wire::parse_policy_entry(&key) {
                    // What the bucket holds is compared below as if published.
                    known.policies.insert(stream, RetentionPolicy::default());
                }
            }
            known.policies_listed = true;
        }
        for (stream, policy) in &now {
            if known.policies.get(stream) != Some(policy) {
                put(
                    bucket,
                    &wire::policy_entry(*stream),
                    wire::encode_policy(policy),
                )
                .await?;
                known.policies.insert(*stream, *policy);
            }
        }
        let dropped: Vec<Option<u128>> = known
            .policies
            .keys()
            .filter(|s| !now.contains_key(s))
            .copied()
            .collect();
        for stream in dropped {
            put(bucket, &wire::policy_entry(stream), Vec::new()).await?;
            known.policies.remove(&stream);
        }
        Ok(())
    }

    /// Publishes the removals that changed since the last sync: each stream's bounds entry
    /// goes to the bucket first, then its removed messages leave the JetStream stream (a purge
    /// of its subject below its first kept event).
    async fn sync_removals(
        &self,
        stream: &stream::Stream,
        bucket: &kv::Store,
        known: &mut Known,
        removed: u64,
        removals: Vec<StreamRemoval>,
    ) -> Result<(), Error> {
        for r in removals {
            let before = known.removals.get(&r.stream_id).copied();
            if before == Some(r) {
                continue;
            }
            put(
                bucket,
                &wire::bounds_entry(r.stream_id),
                wire::encode_removal(&r),
            )
            .await?;
            let (_, last_removed_seq) = r.last_removed;
            if last_removed_seq > 0 {
                let subject = format!("{}.{}", self.config.subject_prefix, r.stream_id);
                stream
                    .purge()
                    .filter(subject)
                    .sequence(last_removed_seq + 1)
                    .await
                    .map_err(|e| {
                        nats(format!(
                            "purge of stream {}'s removed events: {e}",
                            r.stream_id
                        ))
                    })?;
            }
            known.removals.insert(r.stream_id, r);
        }
        known.removed_seen = Some(removed);
        Ok(())
    }

    /// Brings the cursor in line with the server's last sequence: over messages the server
    /// holds past it (each checked against the store), or back to it when the server lost
    /// what it had acknowledged.
    async fn reconcile(
        &self,
        stream: &mut stream::Stream,
        report: &mut ReplicationReport,
    ) -> Result<u64, Error> {
        let state = stream.info().await.map_err(nats)?.state.clone();
        let server_last = state.last_sequence;
        let position = self.position()?;
        let store_last = self.storage.last_seq(&self.storage.read_txn()?)?;
        if server_last > store_last {
            return Err(Error::Diverged {
                seq: store_last + 1,
                reason: format!(
                    "the JetStream stream {} has messages up to {server_last}, the store events \
                     up to {store_last}: it holds another log",
                    self.config.stream
                ),
            });
        }
        if server_last == position {
            return Ok(position);
        }
        if server_last < position {
            tracing::warn!(
                server_last,
                position,
                "the JetStream stream ends before what it acknowledged (recreated or restored \
                 from an older copy?); publishing again from {}",
                server_last + 1
            );
            self.storage
                .reset_consumer(&self.config.consumer, server_last)?;
            return Ok(server_last);
        }
        // Published before a crash or a lost acknowledgement, not yet committed: each must
        // be the store's event (or the place of one it removed), or the stream holds another
        // log.
        let ours: HashMap<u64, StoredEvent> = {
            let txn = self.storage.read_txn()?;
            self.storage
                .export_events(&txn, position + 1)
                .take_while(|e| e.as_ref().map_or(true, |e| e.seq <= server_last))
                .map(|e| e.map(|e| (e.seq, e)))
                .collect::<Result<_, _>>()?
        };
        for seq in position + 1..=server_last {
            let message = match stream.get_raw_message(seq).await {
                Ok(m) => m,
                // Purged (a removal) or removed by the stream's own limits: nothing to compare.
                Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => continue,
                Err(e) => return Err(nats(e)),
            };
            let theirs = wire::decode_message(seq, Some(&message.headers), &message.payload)
                .map_err(|e| Error::Diverged {
                    seq,
                    reason: e.to_string(),
                })?;
            match (theirs, ours.get(&seq)) {
                // The event removed since it was published: its purge follows.
                (wire::Message::Event(_), None) => {}
                (wire::Message::Event(theirs), Some(event)) => {
                    if !event.is_same_event_as(&theirs.event) {
                        return Err(Error::Diverged {
                            seq,
                            reason: "the message there is not this store's event".into(),
                        });
                    }
                }
                (wire::Message::Removed, None) => {}
                (wire::Message::Removed, Some(_)) => {
                    return Err(Error::Diverged {
                        seq,
                        reason: "the message there stands for a removed event, and the store \
                                 has this event"
                            .into(),
                    });
                }
            }
        }
        report.adopted += server_last - position;
        self.storage
            .reset_consumer(&self.config.consumer, server_last)?;
        Ok(server_last)
    }

    /// The log from `from` on, up to a chunk's size, ending at the end of a commit group, or
    /// inside a run of removed events between groups.
    fn read_chunk(&self, from: u64, known: &Known) -> Result<Chunk, Error> {
        let txn = self.storage.read_txn()?;
        let last = self.storage.last_seq(&txn)?;
        let removed = self.storage.removed_events(&txn)?;
        let removals = if known.removed_seen != Some(removed) {
            Some((removed, self.storage.stream_removals(&txn)?))
        } else {
            None
        };
        // A run of removed sequences becomes as many messages: at most a chunk's worth.
        let gap_end = |covered: u64| covered.max(from - 1 + CHUNK_EVENTS as u64);
        let mut events = Vec::new();
        let mut bytes = 0usize;
        // The last sequence covered, and whether it ends a commit group.
        let (mut covered, mut between_groups) = (from - 1, true);
        let mut end = None;
        for event in self.storage.export_events(&txn, from) {
            let event = event?;
            if between_groups && event.seq - 1 > gap_end(covered) {
                end = Some(gap_end(covered));
                break;
            }
            let links = self
                .storage
                .record_links(&txn, event.seq)?
                .unwrap_or((0, 0));
            bytes += event.payload.as_ref().map_or(0, Vec::len);
            (covered, between_groups) = (event.seq, event.ends_group);
            events.push((event, links));
            if between_groups && (events.len() >= CHUNK_EVENTS || bytes >= CHUNK_BYTES) {
                end = Some(covered);
                break;
            }
        }
        // Past the last event, the log's last sequences may be removed ones.
        let end = end.unwrap_or(if between_groups {
            last.min(gap_end(covered))
        } else {
            last
        });
        Ok(Chunk {
            events,
            end,
            removals,
        })
    }

    /// Publishes a chunk that starts at `from`, with up to `max_in_flight` acknowledgements
    /// outstanding: each event, and for each removed sequence a message that stands for it.
    /// Returns the last sequence acknowledged (the chunk's end).
    async fn publish_chunk(
        &self,
        client: &async_nats::Client,
        context: &js::Context,
        from: u64,
        chunk: Chunk,
        known: &Known,
        report: &mut ReplicationReport,
    ) -> Result<u64, Error> {
        // Each event's group ends at the next event that ends one (the chunk ends a group).
        let mut group_last = vec![0u64; chunk.events.len()];
        let mut end = chunk.events.last().map_or(0, |(e, _)| e.seq);
        for (i, (e, _)) in chunk.events.iter().enumerate().rev() {
            if e.ends_group {
                end = e.seq;
            }
            group_last[i] = end;
        }
        let max_payload = client.server_info().max_payload;
        let mut in_flight: VecDeque<(u64, PublishAckFuture)> = VecDeque::new();
        let mut last = 0;
        let mut next = from;
        let removed_subject = wire::removed_subject(&self.config.subject_prefix);
        let chunk_end = chunk.end;
        let mut events = chunk.events.into_iter().zip(group_last).peekable();
        while next <= chunk_end {
            let is_event = events.peek().is_some_and(|((e, _), _)| e.seq == next);
            if !is_event {
                // Removed before it was published: a message keeps its place.
                let message = PublishMessage::build()
                    .headers(wire::removed_headers(next))
                    .expected_last_sequence(next - 1);
                let ack = context
                    .send_publish(removed_subject.clone(), message)
                    .await
                    .map_err(|e| nats(format!("publish of removed event {next}: {e}")))?;
                in_flight.push_back((next, ack));
                while in_flight.len() >= self.config.max_in_flight {
                    if let Some((seq, ack)) = in_flight.pop_front() {
                        last = acknowledged(seq, ack, report).await?;
                    }
                }
                next += 1;
                continue;
            }
            let Some(((mut event, links), group_last)) = events.next() else {
                break;
            };
            next = event.seq + 1;
            let type_id = known.type_id(&event).ok_or_else(|| {
                Error::Store(varvedb::Error::CorruptType {
                    id: 0,
                    reason: format!("event {} names a type the store does not list", event.seq),
                })
            })?;
            let headers = wire::headers(&event, type_id, links, group_last);
            let payload = event.payload.take().unwrap_or_default();
            let size = payload.len() + header_len(&headers);
            if max_payload > 0 && size > max_payload {
                return Err(Error::EventTooLarge {
                    seq: event.seq,
                    size,
                    max: max_payload,
                });
            }
            let subject = format!("{}.{}", self.config.subject_prefix, event.stream_id);
            let message = PublishMessage::build()
                .payload(payload.into())
                .headers(headers)
                .expected_last_sequence(event.seq - 1);
            let ack = context
                .send_publish(subject, message)
                .await
                .map_err(|e| match e.kind() {
                    PublishErrorKind::MaxPayloadExceeded => Error::EventTooLarge {
                        seq: event.seq,
                        size,
                        max: max_payload,
                    },
                    _ => nats(format!("publish of event {}: {e}", event.seq)),
                })?;
            in_flight.push_back((event.seq, ack));
            while in_flight.len() >= self.config.max_in_flight {
                if let Some((seq, ack)) = in_flight.pop_front() {
                    last = acknowledged(seq, ack, report).await?;
                }
            }
        }
        while let Some((seq, ack)) = in_flight.pop_front() {
            last = acknowledged(seq, ack, report).await?;
        }
        Ok(last)
    }
}

/// A failed stream creation: refused for good when the server answered with an error (the
/// subjects overlap another stream's, a setting is not allowed), retried otherwise.
fn created(what: String, e: js::context::CreateStreamError) -> Error {
    use js::context::CreateStreamErrorKind as Kind;
    match e.kind() {
        Kind::JetStream(_)
        | Kind::EmptyStreamName
        | Kind::InvalidStreamName
        | Kind::DomainAndExternalSet => Error::Refused {
            what,
            reason: e.to_string(),
        },
        _ => nats(format!("{what}: {e}")),
    }
}

impl Known {
    fn type_id(&self, e: &StoredEvent) -> Option<u32> {
        self.types
            .iter()
            .find(|(container, name, version, _)| {
                *version == e.type_version && *name == e.type_name && *container == e.type_container
            })
            .map(|t| t.3)
    }
}

fn header_len(h: &async_nats::HeaderMap) -> usize {
    h.iter()
        .map(|(k, vs)| {
            vs.iter()
                .map(|v| AsRef::<str>::as_ref(k).len() + v.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum::<usize>()
        + 12
}

async fn put(bucket: &kv::Store, key: &str, value: Vec<u8>) -> Result<(), Error> {
    bucket
        .put(key, value.into())
        .await
        .map(drop)
        .map_err(|e| nats(format!("key-value put {key}: {e}")))
}

/// Waits for the acknowledgement of event `seq` and checks it names that sequence.
async fn acknowledged(
    seq: u64,
    ack: PublishAckFuture,
    report: &mut ReplicationReport,
) -> Result<u64, Error> {
    let ack = ack.await.map_err(|e| match e.kind() {
        PublishErrorKind::WrongLastSequence => nats(format!(
            "event {seq}: the stream's last sequence is not {} (another publisher, or a \
             resend after an outage; reconciling)",
            seq - 1
        )),
        _ => nats(format!("acknowledgement of event {seq}: {e}")),
    })?;
    if ack.sequence != seq {
        return Err(Error::Diverged {
            seq,
            reason: format!(
                "the server stored it at sequence {}{}",
                ack.sequence,
                if ack.duplicate {
                    " (a message with its id was already there)"
                } else {
                    ""
                }
            ),
        });
    }
    if ack.duplicate {
        report.duplicates += 1;
    } else {
        report.published += 1;
    }
    Ok(seq)
}
