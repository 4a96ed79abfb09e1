//! Prometheus metrics, one registry per open [`Storage`](crate::Storage).
//!
//! Names are in the `varvedb_` namespace and follow Prometheus's conventions: counters end in
//! `_total`, durations in `_seconds`, sizes in `_bytes`. The hot path never takes a shared lock
//! per event: counters are atomics, and the histograms (whose `observe` takes a lock) are
//! observed once per commit group, on the committer's thread alone.
//!
//! Gauges that describe the file (map size and use, events, blobs) are read when the metrics
//! are encoded, from one snapshot, so appends pay nothing for them.

use prometheus_client::encoding::text::encode;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The store's metrics. Built once at open; everything below is shared by reference.
pub(crate) struct Metrics {
    registry: Registry,
    /// One encoding at a time: the consumer families are cleared and refilled for each.
    encoding: std::sync::Mutex<()>,
    /// Events appended (committed), idempotent replays excluded.
    pub(crate) append_events: Counter,
    /// Bytes of the records appended (header, envelope, payload or blob reference, padding).
    pub(crate) append_bytes: Counter,
    /// Appends refused because their expected version was wrong.
    pub(crate) append_conflicts: Counter,
    /// Appends answered from the store because every event id was already there (a retry).
    pub(crate) append_idempotent_hits: Counter,
    /// Events per append request.
    pub(crate) append_batch_events: Histogram,
    /// Append requests per commit group (one write transaction, one flush).
    pub(crate) commit_group_requests: Histogram,
    /// Time from the start of a commit group's write transaction to its commit (with
    /// `Durability::Sync`, the data pages' flush included).
    pub(crate) commit_seconds: Histogram,
    /// Time of one explicit flush of the data file.
    pub(crate) flush_seconds: Histogram,
    /// Records read by readers (typed, untyped, subscriptions, processors).
    pub(crate) read_events: Counter,
    /// Bytes of those records in the log (a blob's payload counts as its reference).
    pub(crate) read_bytes: Counter,
    /// Payloads written to the blob store (new blobs).
    pub(crate) blob_writes: Counter,
    /// Payloads over the blob threshold that were already stored, so only referenced again.
    pub(crate) blob_dedup_hits: Counter,
    /// Events sealed with their stream's key.
    pub(crate) encrypt_ops: Counter,
    /// Events opened with their stream's key.
    pub(crate) decrypt_ops: Counter,
    /// Sealed events whose authentication tag did not verify (tampering, damage, wrong key).
    pub(crate) decrypt_auth_failures: Counter,
    /// Streams crypto-shredded through this handle.
    pub(crate) shredded_streams: Counter,
    /// Events removed (truncated, deleted, tombstoned or past retention) through this handle.
    pub(crate) deleted_events: Counter,
    /// Bytes of records and blobs given back by those removals.
    pub(crate) reclaimed_bytes: Counter,
    /// Times this process grew the memory map.
    pub(crate) map_growths: Counter,
    map_size_bytes: Gauge,
    map_used_bytes: Gauge,
    events: Gauge,
    last_seq: Gauge,
    blobs: Gauge,
    blob_store_bytes: Gauge,
    consumer_position: Family<ConsumerLabel, Gauge>,
    consumer_lag_events: Family<ConsumerLabel, Gauge>,
    consumer_lag_seconds: Family<ConsumerLabel, Gauge<f64, AtomicU64>>,
    consumer_parked_events: Family<ConsumerLabel, Gauge>,
    consumer_handler_errors: Family<ConsumerLabel, Counter>,
    consumer_retries: Family<ConsumerLabel, Counter>,
    group_handler_errors: Family<MemberLabel, Counter>,
    group_retries: Family<MemberLabel, Counter>,
    group_fenced: Family<MemberLabel, Counter>,
    group_partitions_held: Family<MemberLabel, Gauge>,
    group_partition_lag_events: Family<PartitionLabel, Gauge>,
}

/// The label of a consumer's series: `consumer="<name>"`.
type ConsumerLabel = [(&'static str, String); 1];
/// The labels of a group member's series: `group="<name>",member="<name>"`.
type MemberLabel = [(&'static str, String); 2];
/// The labels of a group partition's series: `group="<name>",partition="<n>"`.
type PartitionLabel = [(&'static str, String); 2];

/// The counters one processor adds to, cloned out of their families once when it starts: its
/// batches take no lock to count.
#[derive(Clone, Debug)]
pub(crate) struct ConsumerCounters {
    pub(crate) handler_errors: Counter,
    pub(crate) retries: Counter,
    /// Partitions a group member lost to another while it held them (not registered for a
    /// plain consumer).
    pub(crate) fenced: Counter,
}

/// One consumer's cursor as the store holds it, when the metrics are encoded.
pub(crate) struct ConsumerGauges {
    pub(crate) name: String,
    pub(crate) position: u64,
    pub(crate) lag_events: u64,
    pub(crate) lag_seconds: f64,
    pub(crate) parked: u64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("append_events", &self.append_events.get())
            .finish_non_exhaustive()
    }
}

/// What the file looks like when the metrics are encoded.
pub(crate) struct FileGauges {
    pub(crate) map_size_bytes: u64,
    pub(crate) map_used_bytes: u64,
    pub(crate) events: u64,
    pub(crate) last_seq: u64,
    pub(crate) blobs: u64,
    pub(crate) blob_store_bytes: u64,
    pub(crate) consumers: Vec<ConsumerGauges>,
    pub(crate) groups: Vec<crate::storage::ConsumerGroup>,
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("varvedb");
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let counter_unit = |registry: &mut Registry, name: &str, help: &str, unit: Unit| {
            let c = Counter::default();
            registry.register_with_unit(name, help, unit, c.clone());
            c
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>| {
            let g = Gauge::default();
            match unit {
                Some(unit) => registry.register_with_unit(name, help, unit, g.clone()),
                None => registry.register(name, help, g.clone()),
            }
            g
        };
        let histogram =
            |registry: &mut Registry, name: &str, help: &str, unit: Option<Unit>, h: Histogram| {
                match unit {
                    Some(unit) => registry.register_with_unit(name, help, unit, h.clone()),
                    None => registry.register(name, help, h.clone()),
                }
                h
            };
        // Durations from 10 µs to about 5 s; counts from 1 to 65536.
        let seconds = || Histogram::new(exponential_buckets(0.000_01, 2.0, 20));
        let counts = || Histogram::new(exponential_buckets(1.0, 2.0, 17));
        fn family<L, M: prometheus_client::metrics::TypedMetric + Default + Clone>(
            registry: &mut Registry,
            name: &str,
            help: &str,
            unit: Option<Unit>,
        ) -> Family<L, M>
        where
            L: Clone + std::hash::Hash + Eq,
            Family<L, M>: prometheus_client::registry::Metric,
        {
            let f = Family::default();
            match unit {
                Some(unit) => registry.register_with_unit(name, help, unit, f.clone()),
                None => registry.register(name, help, f.clone()),
            }
            f
        }
        let r = &mut registry;
        Metrics {
            append_events: counter(r, "append_events", "Events appended and committed"),
            append_bytes: counter_unit(
                r,
                "append",
                "Bytes of the records appended and committed",
                Unit::Bytes,
            ),
            append_conflicts: counter(
                r,
                "append_conflicts",
                "Appends refused because their expected version was wrong",
            ),
            append_idempotent_hits: counter(
                r,
                "append_idempotent_hits",
                "Appends answered from the store because their event ids were already there",
            ),
            append_batch_events: histogram(
                r,
                "append_batch_events",
                "Events per append request",
                None,
                counts(),
            ),
            commit_group_requests: histogram(
                r,
                "commit_group_requests",
                "Append requests per commit group (one write transaction, one flush)",
                None,
                counts(),
            ),
            commit_seconds: histogram(
                r,
                "commit_duration",
                "Time to write and commit one commit group",
                Some(Unit::Seconds),
                seconds(),
            ),
            flush_seconds: histogram(
                r,
                "flush_duration",
                "Time of one explicit flush of the data file",
                Some(Unit::Seconds),
                seconds(),
            ),
            read_events: counter(r, "read_events", "Events read from the log by readers"),
            read_bytes: counter_unit(
                r,
                "read",
                "Bytes of the records read (a blob's payload counts as its reference)",
                Unit::Bytes,
            ),
            blob_writes: counter(r, "blob_writes", "Payloads written to the blob store"),
            blob_dedup_hits: counter(
                r,
                "blob_dedup_hits",
                "Large payloads already in the blob store, stored once and referenced again",
            ),
            encrypt_ops: counter(r, "encrypt_ops", "Events sealed with their stream's key"),
            decrypt_ops: counter(r, "decrypt_ops", "Events opened with their stream's key"),
            decrypt_auth_failures: counter(
                r,
                "decrypt_auth_failures",
                "Sealed events whose authentication tag did not verify",
            ),
            shredded_streams: counter(
                r,
                "shredded_streams",
                "Streams crypto-shredded (their key deleted)",
            ),
            deleted_events: counter(
                r,
                "deleted_events",
                "Events removed: truncated, deleted, tombstoned or past retention",
            ),
            reclaimed_bytes: counter_unit(
                r,
                "reclaimed",
                "Bytes of records and blobs given back by removals",
                Unit::Bytes,
            ),
            map_growths: counter(r, "map_growths", "Times the memory map grew"),
            map_size_bytes: gauge(r, "map_size", "Size of the memory map", Some(Unit::Bytes)),
            map_used_bytes: gauge(
                r,
                "map_used",
                "Bytes of the memory map in use (up to the last used page)",
                Some(Unit::Bytes),
            ),
            events: gauge(r, "events", "Events in the log", None),
            last_seq: gauge(r, "last_seq", "The last committed global sequence", None),
            blobs: gauge(r, "blobs", "Distinct payloads in the blob store", None),
            blob_store_bytes: gauge(
                r,
                "blob_store",
                "Bytes of pages holding the blob store",
                Some(Unit::Bytes),
            ),
            consumer_position: family(
                r,
                "consumer_position",
                "The last event a consumer checkpointed as handled (a global sequence)",
                None,
            ),
            consumer_lag_events: family(
                r,
                "consumer_lag_events",
                "Events committed after a consumer's checkpointed position",
                None,
            ),
            consumer_lag_seconds: family(
                r,
                "consumer_lag",
                "How long the oldest event a consumer has not handled has waited (0 when caught up)",
                Some(Unit::Seconds),
            ),
            consumer_parked_events: family(
                r,
                "consumer_parked_events",
                "Events a consumer's handler failed on and parked",
                None,
            ),
            consumer_handler_errors: family(
                r,
                "consumer_handler_errors",
                "Errors returned by a consumer's handler in this process",
                None,
            ),
            consumer_retries: family(
                r,
                "consumer_retries",
                "Events a consumer's handler was given again after an error, in this process",
                None,
            ),
            group_handler_errors: family(
                r,
                "group_handler_errors",
                "Errors returned by a consumer group member's handler in this process",
                None,
            ),
            group_retries: family(
                r,
                "group_retries",
                "Events a consumer group member's handler was given again after an error, in \
                 this process",
                None,
            ),
            group_fenced: family(
                r,
                "group_fenced",
                "Partitions a consumer group member lost to another while it held them \
                 (its lease expired): it committed nothing of them",
                None,
            ),
            group_partitions_held: family(
                r,
                "group_partitions_held",
                "Partitions each consumer group member holds under a current lease",
                None,
            ),
            group_partition_lag_events: family(
                r,
                "group_partition_lag_events",
                "Events committed after a consumer group partition's cursor (of every partition)",
                None,
            ),
            registry,
            encoding: std::sync::Mutex::new(()),
        }
    }

    /// The counters of the processor named `name`.
    pub(crate) fn consumer(&self, name: &str) -> ConsumerCounters {
        let label = [("consumer", name.to_owned())];
        ConsumerCounters {
            handler_errors: self.consumer_handler_errors.get_or_create_owned(&label),
            retries: self.consumer_retries.get_or_create_owned(&label),
            fenced: Counter::default(),
        }
    }

    /// The counters of the member `member` of the consumer group `group`.
    pub(crate) fn group_member(&self, group: &str, member: &str) -> ConsumerCounters {
        let label = [("group", group.to_owned()), ("member", member.to_owned())];
        ConsumerCounters {
            handler_errors: self.group_handler_errors.get_or_create_owned(&label),
            retries: self.group_retries.get_or_create_owned(&label),
            fenced: self.group_fenced.get_or_create_owned(&label),
        }
    }

    /// The text exposition (OpenMetrics, which Prometheus scrapes), with the file's gauges set
    /// from `file`.
    pub(crate) fn encode(&self, file: Option<FileGauges>) -> String {
        let _one = self
            .encoding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(file) = file {
            self.map_size_bytes.set(gauge_value(file.map_size_bytes));
            self.map_used_bytes.set(gauge_value(file.map_used_bytes));
            self.events.set(gauge_value(file.events));
            self.last_seq.set(gauge_value(file.last_seq));
            self.blobs.set(gauge_value(file.blobs));
            self.blob_store_bytes
                .set(gauge_value(file.blob_store_bytes));
            // From the store's cursors: consumers of every process, and none that was deleted.
            self.consumer_position.clear();
            self.consumer_lag_events.clear();
            self.consumer_lag_seconds.clear();
            self.consumer_parked_events.clear();
            for c in file.consumers {
                let label = [("consumer", c.name)];
                self.consumer_position
                    .get_or_create(&label)
                    .set(gauge_value(c.position));
                self.consumer_lag_events
                    .get_or_create(&label)
                    .set(gauge_value(c.lag_events));
                self.consumer_lag_seconds
                    .get_or_create(&label)
                    .set(c.lag_seconds);
                self.consumer_parked_events
                    .get_or_create(&label)
                    .set(gauge_value(c.parked));
            }
            self.group_partitions_held.clear();
            self.group_partition_lag_events.clear();
            for g in file.groups {
                for m in &g.members {
                    let label = [("group", g.name.clone()), ("member", m.name.clone())];
                    self.group_partitions_held
                        .get_or_create(&label)
                        .set(gauge_value(m.partitions.len() as u64));
                }
                for p in &g.partition_states {
                    let label = [
                        ("group", g.name.clone()),
                        ("partition", p.partition.to_string()),
                    ];
                    self.group_partition_lag_events
                        .get_or_create(&label)
                        .set(gauge_value(p.lag_events));
                }
            }
        }
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// What one commit group did, counted as it runs and recorded once it committed (the write
/// may run more than once when the map grows, so nothing is recorded before that).
#[derive(Default, Debug, Clone, Copy)]
pub(crate) struct CommitTally {
    pub(crate) events: u64,
    pub(crate) bytes: u64,
    pub(crate) conflicts: u64,
    pub(crate) idempotent_hits: u64,
    pub(crate) blob_writes: u64,
    pub(crate) blob_dedup_hits: u64,
    pub(crate) encrypted: u64,
}

impl Metrics {
    /// Records a committed group's tally.
    pub(crate) fn record_commit(&self, t: &CommitTally) {
        let add = |c: &Counter, v: u64| {
            if v > 0 {
                c.inc_by(v);
            }
        };
        add(&self.append_events, t.events);
        add(&self.append_bytes, t.bytes);
        add(&self.append_conflicts, t.conflicts);
        add(&self.append_idempotent_hits, t.idempotent_hits);
        add(&self.blob_writes, t.blob_writes);
        add(&self.blob_dedup_hits, t.blob_dedup_hits);
        add(&self.encrypt_ops, t.encrypted);
    }
}

impl Metrics {
    /// Counts one attempt to open a sealed event (its cost dwarfs the counter's).
    pub(crate) fn record_open<T>(&self, opened: &crate::error::Result<T>) {
        match opened {
            Ok(_) => {
                self.decrypt_ops.inc();
            }
            Err(crate::error::Error::AuthenticationFailed { .. }) => {
                self.decrypt_auth_failures.inc();
            }
            Err(_) => {}
        }
    }
}

/// Events a read iterator handed out, kept in the iterator and added to the shared counters
/// once, when it is dropped: a scan touches no shared cache line per event.
#[derive(Default, Debug)]
pub(crate) struct ReadTally {
    events: u64,
    bytes: u64,
}

impl ReadTally {
    pub(crate) fn count(&mut self, payload_bytes: usize) {
        self.events += 1;
        self.bytes += payload_bytes as u64;
    }

    pub(crate) fn record(&mut self, metrics: &Metrics) {
        if self.events > 0 {
            metrics.read_events.inc_by(self.events);
            metrics.read_bytes.inc_by(self.bytes);
            *self = ReadTally::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        let m = Metrics::new();
        m.append_events.inc_by(3);
        m.commit_seconds.observe(0.001);
        let text = m.encode(None);
        assert!(text.contains("varvedb_append_events_total 3"), "{text}");
        assert!(text.contains("varvedb_append_bytes_total"), "{text}");
        assert!(
            text.contains("varvedb_commit_duration_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("varvedb_map_size_bytes"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
