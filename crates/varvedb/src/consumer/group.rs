//! A processor's membership in a consumer group: the partitions it holds, their cursors, and
//! the lease that lets it handle and commit them (see `storage/groups.rs` for the protocol).
//!
//! - **Leases.** A member renews its membership and leases every third of a lease, and checks
//!   the group (a read) before every batch: a member that joined or left, a partition that
//!   should change hands, is acted on at once, in one write transaction.
//! - **No overlap.** A member handles events only before its deadline: the moment of its last
//!   renewal plus the lease, less a fifth of it. Another member takes a partition only once
//!   the lease has expired by the store's clock, so two members never handle one partition at
//!   once (as long as one handler call takes less than a fifth of the lease).
//! - **Fencing.** A cursor is committed only while the lease names the member with the
//!   generation it took; a member that lost a partition drops it without writing.

use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use crate::error::{Error, Result};
use crate::storage::{
    GROUP_PARTITIONS_MAX, GroupConfig, Held, Storage, check_consumer_name, partition_of,
};

/// A member's state between batches.
#[derive(Debug)]
pub(crate) struct GroupRun {
    pub(crate) member: String,
    /// The member's identity in its leases: its name and this run's incarnation, so that a
    /// second processor started under the same name never takes its partitions.
    pub(crate) lease_id: String,
    pub(crate) wanted: GroupConfig,
    pub(crate) config: Option<GroupConfig>,
    /// The partitions held, with their positions in memory (ahead of the stored cursors
    /// between checkpoints).
    pub(crate) held: Vec<Held>,
    /// The positions last committed, by partition.
    pub(crate) committed: Vec<(u32, u64)>,
    /// The live members at the last step.
    pub(crate) live: Vec<String>,
    /// When the last step renewed the leases.
    pub(crate) renewed: Option<Instant>,
    /// Counts the partitions lost to another member (fenced): the member's
    /// `varvedb_group_fenced_total`.
    fenced: Counter,
}

impl GroupRun {
    /// The member `member`, with the group's settings if it creates the group, after checking
    /// both; `fenced` counts the partitions it loses.
    pub(crate) fn new(member: String, wanted: GroupConfig, fenced: Counter) -> Result<Self> {
        check_consumer_name(&member)?;
        if !(1..=GROUP_PARTITIONS_MAX).contains(&wanted.partitions) {
            return Err(Error::InvalidConfig {
                field: "group_partitions",
                reason: format!("1 to {GROUP_PARTITIONS_MAX}, not {}", wanted.partitions),
            });
        }
        if wanted.lease_ms < 100 {
            return Err(Error::InvalidConfig {
                field: "group_lease_ms",
                reason: format!("at least 100, not {}", wanted.lease_ms),
            });
        }
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let incarnation = nanos
            ^ (u64::from(std::process::id()) << 40)
            ^ RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(GroupRun {
            lease_id: format!("{member}\0{incarnation:016x}"),
            member,
            wanted,
            config: None,
            held: Vec::new(),
            committed: Vec::new(),
            live: Vec::new(),
            renewed: None,
            fenced,
        })
    }

    /// Drops the partitions `lost` to another member (fenced: nothing of them was written),
    /// and counts them.
    pub(crate) fn lose(&mut self, group: &str, lost: &[u32]) {
        if lost.is_empty() {
            return;
        }
        tracing::warn!(group, member = %self.member, ?lost, "fenced: partitions lost to another member; nothing of them was written");
        self.fenced.inc_by(lost.len() as u64);
        self.held.retain(|h| !lost.contains(&h.partition));
    }

    /// Records the held positions as committed.
    pub(crate) fn committed_all(&mut self) {
        self.committed = self
            .held
            .iter()
            .map(|h| (h.partition, h.position))
            .collect();
    }

    fn lease(&self) -> Duration {
        Duration::from_millis(self.config.unwrap_or(self.wanted).lease_ms)
    }

    /// Until when this member may handle events of its partitions.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let lease = self.lease();
        self.renewed.map(|t| t + lease - lease / 5)
    }

    /// The partition of a stream in this group.
    pub(crate) fn partition(&self, stream_id: u128) -> u32 {
        partition_of(stream_id, self.config.unwrap_or(self.wanted).partitions)
    }

    /// The held partition `partition`, if this member holds it.
    pub(crate) fn held_mut(&mut self, partition: u32) -> Option<&mut Held> {
        self.held.iter_mut().find(|h| h.partition == partition)
    }

    /// The lowest position among the held partitions (where a batch starts reading).
    pub(crate) fn low(&self) -> Option<u64> {
        self.held.iter().map(|h| h.position).min()
    }

    /// Whether any held position moved past what was committed.
    pub(crate) fn uncommitted(&self) -> u64 {
        self.held
            .iter()
            .map(|h| {
                let c = self
                    .committed
                    .iter()
                    .find(|(p, _)| *p == h.partition)
                    .map_or(0, |(_, c)| *c);
                h.position.saturating_sub(c)
            })
            .sum()
    }

    /// Renews, rebalances and hands back as the group needs: a write when the renewal is due
    /// or the group changed, a read otherwise.
    pub(crate) fn maintain(&mut self, storage: &Storage, group: &str) -> Result<()> {
        let due = self.renewed.is_none_or(|t| t.elapsed() >= self.lease() / 3);
        let changed = due || {
            let txn = storage.read_txn()?;
            storage.group_step_needed(&txn, group, &self.lease_id, &self.live, &self.held)?
        };
        if changed {
            self.step(storage, group, false)?;
        }
        Ok(())
    }

    /// One step in the store (see `storage::groups::member_step`).
    pub(crate) fn step(&mut self, storage: &Storage, group: &str, leaving: bool) -> Result<()> {
        let started = Instant::now();
        let step = storage.group_step(group, &self.lease_id, self.wanted, &self.held, leaving)?;
        let kept: Vec<u32> = step.held.iter().map(|h| h.partition).collect();
        for h in &self.held {
            if !kept.contains(&h.partition) && !leaving {
                tracing::debug!(group, member = %self.member, partition = h.partition, "partition handed over");
            }
        }
        // Newly taken partitions start at their stored cursor, which is also what is
        // committed; kept ones keep theirs.
        for h in &step.held {
            if !self.committed.iter().any(|(p, _)| *p == h.partition)
                || !self.held.iter().any(|o| o.partition == h.partition)
            {
                self.committed.retain(|(p, _)| *p != h.partition);
                self.committed.push((h.partition, h.position));
            }
        }
        self.committed.retain(|(p, _)| kept.contains(p));
        self.held = step.held;
        self.live = step.live;
        self.config = Some(step.config);
        self.renewed = Some(started);
        Ok(())
    }

    /// Commits the held partitions' cursors and parks `parked`; drops the partitions lost.
    pub(crate) fn checkpoint(
        &mut self,
        storage: &Storage,
        group: &str,
        parked: &[(u64, String)],
    ) -> Result<()> {
        let lost = storage.group_checkpoint(group, &self.lease_id, &self.held, parked)?;
        self.lose(group, &lost);
        self.committed_all();
        Ok(())
    }
}
