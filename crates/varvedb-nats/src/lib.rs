//! # varvedb-nats
//!
//! Replication of a VarveDB store to [NATS JetStream](https://docs.nats.io/nats-concepts/jetstream),
//! exactly once, and a store rebuilt from it.
//!
//! - A [`Replicator`] follows the store from a durable, named consumer cursor (`nats:<STREAM>`)
//!   and publishes every event to a JetStream stream, one message per event, in global order.
//!   The message's headers carry the record (sequence, stream, version, timestamp, type, ids,
//!   metadata, encryption flag, commit group); its payload is the stored bytes, so an
//!   encrypted event stays encrypted. Each publish carries a `Nats-Msg-Id` derived from the
//!   global sequence and expects the JetStream stream's last sequence to be the one before
//!   it: the JetStream sequence is the store's global sequence, and a resend after any outage
//!   is either deduplicated or refused, never stored twice. The cursor moves only after the
//!   server acknowledged.
//! - [`restore`] rebuilds a store from the JetStream stream, byte for byte, applying whole
//!   commit groups only, and can follow it to keep a replica up to date.
//!
//! Encrypted streams' keys, wrapped by the master key, go to a key-value bucket beside the
//! stream (`varve_<STREAM>`); shredding a stream replaces its entry there with an empty value,
//! and a following restorer shreds the replica's copy.
//!
//! ```no_run
//! # async fn run(storage: varvedb::Storage, replica: varvedb::Storage) -> Result<(), varvedb_nats::Error> {
//! use varvedb_nats::{Replicator, ReplicatorConfig, RestoreConfig};
//! let replicator = Replicator::new(storage, ReplicatorConfig::new("nats://127.0.0.1:4222", "ORDERS"))?;
//! let report = replicator.run_once().await?;   // publish everything, then return
//! println!("{} events published, up to {}", report.published, report.position);
//! // Follow the store, and keep a replica up to date.
//! tokio::spawn(async move { replicator.run_until(std::future::pending()).await });
//! let follow = RestoreConfig::new("nats://127.0.0.1:4222", "ORDERS").follow(true);
//! varvedb_nats::restore(&replica, &follow, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod replicator;
mod restorer;
mod wire;

use std::time::Duration;

pub use replicator::{ReplicationReport, Replicator};
pub use restorer::{RestoreConfig, RestoreReport, check_source, restore, restore_with_progress};
pub use wire::message_id;

/// What went wrong in replication or restore.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store refused (see [`varvedb::Error`]).
    #[error(transparent)]
    Store(#[from] varvedb::Error),
    /// A setting is unusable.
    #[error("invalid {field}: {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The NATS server could not be reached or refused a request. The replicator retries
    /// these itself; the restorer returns them.
    #[error("nats: {0}")]
    Nats(String),
    /// The server refused a request it will refuse again: a stream whose subjects overlap
    /// another stream's, a setting the server does not allow. Not retried.
    #[error("the server refused {what}: {reason}")]
    Refused {
        /// The request.
        what: String,
        /// The server's answer.
        reason: String,
    },
    /// The JetStream stream does not hold this store's log: a message where an event of the
    /// store should be differs from it, or the stream has more messages than the store has
    /// events. Nothing is published past it.
    #[error("the JetStream stream diverges from the store at sequence {seq}: {reason}")]
    Diverged {
        /// The sequence.
        seq: u64,
        /// What differs.
        reason: String,
    },
    /// An event is larger than the server accepts as one message (its `max_payload`).
    #[error("event {seq} takes {size} bytes as a message, over the server's max_payload of {max}")]
    EventTooLarge {
        /// The event.
        seq: u64,
        /// Its message's payload and headers.
        size: usize,
        /// The server's limit.
        max: usize,
    },
    /// The first connection to the server did not succeed within the connect timeout
    /// (`connect_timeout` of [`ReplicatorConfig`] and [`RestoreConfig`]). Once connected, a
    /// lost server is waited for instead.
    #[error("cannot reach the NATS server at {url} (tried for {waited:?}): {reason}")]
    Unreachable {
        /// The server's address as given.
        url: String,
        /// How long it was tried.
        waited: Duration,
        /// The last attempt's error.
        reason: String,
    },
    /// The server has no JetStream stream of that name: nothing was replicated there.
    #[error(
        "the server has no JetStream stream {stream:?}: nothing was replicated there (is the name right?)"
    )]
    NoSuchStream {
        /// The stream's name.
        stream: String,
    },
    /// A message of the stream is not an event in this crate's form.
    #[error("message {seq} of the JetStream stream: {reason}")]
    BadMessage {
        /// Its stream sequence.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Where and how to replicate.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReplicatorConfig {
    /// The server, `nats://HOST:PORT` (several, comma-separated, for a cluster).
    pub url: String,
    /// The JetStream stream; letters, digits, `-` and `_`. Created if missing.
    pub stream: String,
    /// Events go to the subject `<subject_prefix>.<stream id>`; the JetStream stream takes
    /// `<subject_prefix>.>`. Default `varve`.
    pub subject_prefix: String,
    /// The consumer cursor in the store; default `nats:<stream>`.
    pub consumer: String,
    /// Publishes awaiting their acknowledgement, at most. Default 512.
    pub max_in_flight: usize,
    /// How long a publish waits for its acknowledgement before it counts as lost (it is then
    /// sent again, and deduplicated if it had landed). Default 5 s.
    pub ack_timeout: Duration,
    /// How often a following replicator looks for shredded or new stream keys, removals
    /// (truncations, deletions, tombstones) and retention policies when no event asks for it.
    /// Default 2 s.
    pub key_sync_interval: Duration,
    /// How long the first connection to the server is tried before the replicator gives up
    /// with [`Error::Unreachable`]. Default 10 s.
    pub connect_timeout: Duration,
    /// Replicas of the JetStream stream when the replicator creates it. Default 1.
    pub replicas: usize,
    /// The JetStream stream's deduplication window when the replicator creates it. Default
    /// 2 minutes, the server's default.
    pub duplicate_window: Duration,
}

impl ReplicatorConfig {
    /// Replication of a store to the stream `stream` of the server at `url`, with defaults.
    pub fn new(url: impl Into<String>, stream: impl Into<String>) -> Self {
        let stream = stream.into();
        ReplicatorConfig {
            url: url.into(),
            consumer: format!("nats:{stream}"),
            stream,
            subject_prefix: "varve".into(),
            max_in_flight: 512,
            ack_timeout: Duration::from_secs(5),
            connect_timeout: CONNECT_TIMEOUT,
            key_sync_interval: Duration::from_secs(2),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
        }
    }

    /// Sets the subject prefix.
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = prefix.into();
        self
    }

    /// Sets the publishes in flight.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Sets how long the first connection is tried.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the acknowledgement timeout.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// Sets the JetStream stream's deduplication window (used when the replicator creates it).
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// Sets how often keys, removals and policies are looked for when no event asks for it.
    pub fn key_sync_interval(mut self, interval: Duration) -> Self {
        self.key_sync_interval = interval;
        self
    }

    /// Sets the consumer cursor's name.
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = name.into();
        self
    }
}

/// The key-value bucket that holds a replicated store's format, master-key check and wrapped
/// stream keys.
pub fn keys_bucket(stream: &str) -> String {
    format!("varve_{stream}")
}

pub(crate) fn check_stream_name(name: &str) -> Result<(), Error> {
    if name.is_empty()
        || name.len() > 200
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::InvalidConfig {
            field: "stream",
            reason: format!(
                "{name:?}: a JetStream stream name here is 1 to 200 letters, digits, '-' or '_'"
            ),
        });
    }
    Ok(())
}

pub(crate) fn nats(e: impl std::fmt::Display) -> Error {
    Error::Nats(e.to_string())
}

/// How long the first connection to a server is tried, by default.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the server at `url`, trying again for up to `connect_timeout` (a server that is
/// starting); then a lost connection is reconnected for as long as the client lives.
pub(crate) async fn connect(
    url: &str,
    request_timeout: Duration,
    connect_timeout: Duration,
) -> Result<async_nats::Client, Error> {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let attempt = async_nats::ConnectOptions::new()
            .max_reconnects(None)
            .request_timeout(Some(request_timeout))
            .connection_timeout(
                Duration::from_secs(2).min(connect_timeout.max(Duration::from_millis(100))),
            )
            .reconnect_delay_callback(|attempt| {
                Duration::from_millis(50u64.saturating_mul(1 << attempt.min(6) as u64))
                    .min(Duration::from_secs(2))
            })
            .connect(url)
            .await;
        match attempt {
            Ok(client) => return Ok(client),
            Err(e) if started.elapsed() + pause >= connect_timeout => {
                return Err(Error::Unreachable {
                    url: url.to_string(),
                    waited: started.elapsed(),
                    reason: e.to_string(),
                });
            }
            Err(e) => {
                tracing::debug!(%e, "connecting to {url}; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }
}
