//! Consumer groups: processors that share the work of one name. The group splits the streams
//! into a fixed number of partitions by a stable hash of the stream id; each partition has its
//! own cursor and is held by at most one member at a time, under a lease kept in the store.
//!
//! ```text
//! consumer_groups  name ‖ 0x00 ‖ 'c'                  → [u32 partitions][u32 0][u64 lease ms]   (LE)
//!                  name ‖ 0x00 ‖ 'm' ‖ member          → [u64 expires, unix ms]                  (LE)
//!                  name ‖ 0x00 ‖ 'l' ‖ u32 BE part     → [u64 generation][u64 expires ms] ‖ member
//!                  name ‖ 0x00 ‖ 'p' ‖ u32 BE part     → [u64 position]                           (LE)
//! ```
//!
//! Every change is one LMDB write transaction, so members in several processes coordinate
//! through the store alone. A lease's generation grows each time the partition changes hands;
//! a member commits a partition's cursor (and a projection's model) only while the lease still
//! names it with the generation it took, checked inside the commit: a member whose lease
//! expired and was taken over is fenced.

use heed::{RoTxn, RwTxn};

use super::lmdb::LmdbResultExt;
use super::{Dbs, Storage};
use crate::error::{Error, Result};

/// Partitions of a group created without saying.
pub const GROUP_PARTITIONS_DEFAULT: u32 = 16;
/// How long a member's lease lasts without a renewal, by default.
pub const GROUP_LEASE_MS_DEFAULT: u64 = 5_000;
/// The most partitions a group may have.
pub const GROUP_PARTITIONS_MAX: u32 = 4096;

const CONFIG: u8 = b'c';
const MEMBER: u8 = b'm';
const LEASE: u8 = b'l';
const POSITION: u8 = b'p';

/// The partition of `stream_id` in a group of `partitions`: the xxh3 hash of the stream id's
/// 16 big-endian bytes, modulo the count. Stable across versions and machines.
pub fn partition_of(stream_id: u128, partitions: u32) -> u32 {
    let hash = twox_hash::XxHash3_64::oneshot(&stream_id.to_be_bytes());
    (hash % u64::from(partitions.max(1))) as u32
}

fn key(group: &str, kind: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(group.len() + 2 + rest.len());
    k.extend_from_slice(group.as_bytes());
    k.push(0);
    k.push(kind);
    k.extend_from_slice(rest);
    k
}

fn corrupt(group: &str, what: &str) -> Error {
    Error::CorruptIndex {
        stream_id: 0,
        version: 0,
        reason: format!("consumer group {group:?}: a malformed {what} entry"),
    }
}

fn u64_at(value: &[u8], at: usize) -> Option<u64> {
    value
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

/// A group's settings, fixed when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupConfig {
    pub(crate) partitions: u32,
    pub(crate) lease_ms: u64,
}

pub(crate) fn config(dbs: &Dbs, txn: &RoTxn<'_>, group: &str) -> Result<Option<GroupConfig>> {
    let Some(v) = dbs.groups.get(txn, &key(group, CONFIG, &[])).lmdb()? else {
        return Ok(None);
    };
    let partitions = v
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .filter(|p| (1..=GROUP_PARTITIONS_MAX).contains(p))
        .ok_or_else(|| corrupt(group, "settings"))?;
    let lease_ms = u64_at(v, 8).ok_or_else(|| corrupt(group, "settings"))?;
    Ok(Some(GroupConfig {
        partitions,
        lease_ms,
    }))
}

/// A partition's lease: who holds it, under which generation, until when.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) generation: u64,
    pub(crate) expires_ms: u64,
    /// Empty: free.
    pub(crate) member: String,
}

pub(crate) fn lease(dbs: &Dbs, txn: &RoTxn<'_>, group: &str, partition: u32) -> Result<Lease> {
    let Some(v) = dbs
        .groups
        .get(txn, &key(group, LEASE, &partition.to_be_bytes()))
        .lmdb()?
    else {
        return Ok(Lease::default());
    };
    let bad = || corrupt(group, "lease");
    Ok(Lease {
        generation: u64_at(v, 0).ok_or_else(bad)?,
        expires_ms: u64_at(v, 8).ok_or_else(bad)?,
        member: std::str::from_utf8(v.get(16..).ok_or_else(bad)?)
            .map_err(|_| bad())?
            .to_owned(),
    })
}

fn put_lease(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    group: &str,
    partition: u32,
    lease: &Lease,
) -> Result<()> {
    let mut v = Vec::with_capacity(16 + lease.member.len());
    v.extend_from_slice(&lease.generation.to_le_bytes());
    v.extend_from_slice(&lease.expires_ms.to_le_bytes());
    v.extend_from_slice(lease.member.as_bytes());
    dbs.groups
        .put(wtxn, &key(group, LEASE, &partition.to_be_bytes()), &v)
        .lmdb()
}

/// The cursor of a partition: the sequence of the last event of it handled (0: none).
pub(crate) fn position(dbs: &Dbs, txn: &RoTxn<'_>, group: &str, partition: u32) -> Result<u64> {
    match dbs
        .groups
        .get(txn, &key(group, POSITION, &partition.to_be_bytes()))
        .lmdb()?
    {
        None => Ok(0),
        Some(v) => u64_at(v, 0).ok_or_else(|| corrupt(group, "cursor")),
    }
}

fn set_position(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    group: &str,
    partition: u32,
    position: u64,
) -> Result<()> {
    dbs.groups
        .put(
            wtxn,
            &key(group, POSITION, &partition.to_be_bytes()),
            &position.to_le_bytes(),
        )
        .lmdb()
}

/// The group's members with the time their membership expires (unix ms), by name.
pub(crate) fn members(dbs: &Dbs, txn: &RoTxn<'_>, group: &str) -> Result<Vec<(String, u64)>> {
    let prefix = key(group, MEMBER, &[]);
    let mut out = Vec::new();
    for entry in dbs.groups.prefix_iter(txn, &prefix).lmdb()? {
        let (k, v) = entry.lmdb()?;
        let name = std::str::from_utf8(&k[prefix.len()..])
            .map_err(|_| corrupt(group, "member"))?
            .to_owned();
        out.push((name, u64_at(v, 0).ok_or_else(|| corrupt(group, "member"))?));
    }
    Ok(out)
}

/// Every group's name, in order.
pub(crate) fn names(dbs: &Dbs, txn: &RoTxn<'_>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in dbs.groups.iter(txn).lmdb()? {
        let (k, _) = entry.lmdb()?;
        if let Some(at) = k.iter().position(|&b| b == 0)
            && k.get(at + 1) == Some(&CONFIG)
            && k.len() == at + 2
        {
            out.push(String::from_utf8_lossy(&k[..at]).into_owned());
        }
    }
    Ok(out)
}

/// The name part of a member's lease identity, `name ‖ 0x00 ‖ incarnation` (a name alone is
/// its own identity).
pub(crate) fn member_name(id: &str) -> &str {
    id.split('\0').next().unwrap_or(id)
}

/// The time now, unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A partition a member holds: the lease's generation it took, and the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) partition: u32,
    pub(crate) generation: u64,
    pub(crate) position: u64,
}

/// The member that should hold `partition`, given the live members in name order: round
/// robin, so that each takes a fair share (`partitions / members`, one more for some).
fn desired(live: &[&str], partition: u32) -> Option<usize> {
    (!live.is_empty()).then(|| partition as usize % live.len())
}

/// What a member's step decided: the partitions it holds now (those it kept with the positions
/// it gave, those it took with the stored cursor), and the group's settings.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) config: GroupConfig,
    pub(crate) held: Vec<Held>,
    /// The live members (this one included), by name.
    pub(crate) live: Vec<String>,
}

/// One step of a member, in one write transaction: the group is created if missing (with
/// `wanted`), the member's membership and the leases it keeps are renewed, partitions that
/// should be another member's are handed back (their cursors written first), and free or
/// expired ones that should be its own are taken. With `leaving`, every partition is handed
/// back and the membership ends.
pub(crate) fn member_step(
    storage: &Storage,
    group: &str,
    member: &str,
    wanted: GroupConfig,
    held: &[Held],
    leaving: bool,
) -> Result<Step> {
    storage.write(storage.resize_wait(), |wtxn, dbs| {
        let now = now_ms();
        let config = match config(dbs, wtxn, group)? {
            Some(c) => c,
            None => {
                let mut v = Vec::with_capacity(16);
                v.extend_from_slice(&wanted.partitions.to_le_bytes());
                v.extend_from_slice(&0u32.to_le_bytes());
                v.extend_from_slice(&wanted.lease_ms.to_le_bytes());
                dbs.groups.put(wtxn, &key(group, CONFIG, &[]), &v).lmdb()?;
                wanted
            }
        };
        // Leases name the member's identity (its name and this run's incarnation), the
        // membership its name: two processors started under one name never share a lease.
        let name = member_name(member);
        let member_key = key(group, MEMBER, name.as_bytes());
        if leaving {
            dbs.groups.delete(wtxn, &member_key).lmdb()?;
        } else {
            let expires = now.saturating_add(config.lease_ms);
            dbs.groups
                .put(wtxn, &member_key, &expires.to_le_bytes())
                .lmdb()?;
        }
        let mut live = Vec::new();
        for (name, expires) in members(dbs, wtxn, group)? {
            if expires > now {
                live.push(name);
            } else if expires.saturating_add(config.lease_ms) < now {
                // Dead for a whole lease: gone from the list.
                dbs.groups
                    .delete(wtxn, &key(group, MEMBER, name.as_bytes()))
                    .lmdb()?;
            }
        }
        let live_refs: Vec<&str> = live.iter().map(String::as_str).collect();
        let me = live_refs.iter().position(|m| *m == name);
        let mut out = Vec::new();
        for partition in 0..config.partitions {
            let mut l = lease(dbs, wtxn, group, partition)?;
            let mine = held.iter().find(|h| {
                h.partition == partition && l.member == member && h.generation == l.generation
            });
            let want = !leaving && desired(&live_refs, partition) == me && me.is_some();
            if want {
                let takeable = l.member.is_empty() || l.member == member || l.expires_ms <= now;
                if !takeable {
                    continue;
                }
                let (generation, position) = match mine {
                    // Kept: the same generation, the member's own position.
                    Some(h) => (h.generation, h.position),
                    None => (
                        l.generation.saturating_add(1),
                        position(dbs, wtxn, group, partition)?,
                    ),
                };
                l = Lease {
                    generation,
                    expires_ms: now.saturating_add(config.lease_ms),
                    member: member.to_owned(),
                };
                put_lease(dbs, wtxn, group, partition, &l)?;
                out.push(Held {
                    partition,
                    generation,
                    position,
                });
            } else if l.member == member {
                // Handed back: the cursor first, if this member still holds it.
                if let Some(h) = mine
                    && h.position > position(dbs, wtxn, group, partition)?
                {
                    set_position(dbs, wtxn, group, partition, h.position)?;
                }
                l.member.clear();
                l.expires_ms = 0;
                put_lease(dbs, wtxn, group, partition, &l)?;
            }
        }
        Ok((
            Step {
                config,
                held: out,
                live,
            },
            true,
        ))
    })
}

/// Whether a step would change anything for `member` but renew it: a member joined or left,
/// a partition that should be its own is free or expired, or it holds one that should be
/// another's. Read-only; cheap (the group's entries, a few dozen).
pub(crate) fn step_needed(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    group: &str,
    member: &str,
    live_known: &[String],
    held: &[Held],
) -> Result<bool> {
    let Some(config) = config(dbs, txn, group)? else {
        return Ok(true);
    };
    let now = now_ms();
    let live: Vec<String> = members(dbs, txn, group)?
        .into_iter()
        .filter(|(_, expires)| *expires > now)
        .map(|(name, _)| name)
        .collect();
    if live != live_known {
        return Ok(true);
    }
    let live_refs: Vec<&str> = live.iter().map(String::as_str).collect();
    let me = live_refs.iter().position(|m| *m == member_name(member));
    for partition in 0..config.partitions {
        let want = me.is_some() && desired(&live_refs, partition) == me;
        let holding = held.iter().any(|h| h.partition == partition);
        if want != holding {
            if !want {
                return Ok(true);
            }
            let l = lease(dbs, txn, group, partition)?;
            if l.member.is_empty() || l.member == member || l.expires_ms <= now {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Commits the cursors of the partitions `member` holds, and parks `parked`, in one
/// transaction, then runs `also` in it (a projection's model): only for the partitions whose
/// lease still names the member with the generation it took. Returns those that were lost
/// (taken over): their cursors are not written, and with `all_or_nothing` nothing is (the
/// transaction is abandoned, `also` never runs).
pub(crate) fn checkpoint(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    group: &str,
    member: &str,
    held: &[Held],
    parked: &[(u64, String)],
    all_or_nothing: bool,
) -> Result<Vec<u32>> {
    let mut lost = Vec::new();
    for h in held {
        let l = lease(dbs, wtxn, group, h.partition)?;
        if l.member != member || l.generation != h.generation {
            lost.push(h.partition);
        }
    }
    if all_or_nothing && !lost.is_empty() {
        return Ok(lost);
    }
    for h in held {
        if lost.contains(&h.partition) {
            continue;
        }
        if h.position > position(dbs, wtxn, group, h.partition)? {
            set_position(dbs, wtxn, group, h.partition, h.position)?;
        }
    }
    for (seq, reason) in parked {
        super::park(dbs, wtxn, group, *seq, reason)?;
    }
    Ok(lost)
}

/// Sets every partition's cursor of `group` to `position` (`varvedb consumers reset`).
pub(crate) fn reset(storage: &Storage, group: &str, position: u64) -> Result<bool> {
    storage.write_durable(|wtxn, dbs| {
        let Some(config) = config(dbs, wtxn, group)? else {
            return Ok((false, false));
        };
        for partition in 0..config.partitions {
            set_position(dbs, wtxn, group, partition, position)?;
        }
        Ok((true, true))
    })
}

/// Removes a group: its settings, members, leases and cursors.
pub(crate) fn delete(storage: &Storage, group: &str) -> Result<bool> {
    storage.write_durable(|wtxn, dbs| {
        let mut prefix = group.as_bytes().to_vec();
        prefix.push(0);
        let mut keys = Vec::new();
        for entry in dbs.groups.prefix_iter(wtxn, &prefix).lmdb()? {
            let (k, _) = entry.lmdb()?;
            keys.push(k.to_vec());
        }
        for k in &keys {
            dbs.groups.delete(wtxn, k).lmdb()?;
        }
        Ok((!keys.is_empty(), !keys.is_empty()))
    })
}

/// A member of a consumer group, as [`Storage::group_members`](crate::Storage::group_members)
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupMember {
    /// Its name (`Processor::in_group`).
    pub name: String,
    /// The partitions it holds, in order.
    pub partitions: Vec<u32>,
    /// When its membership lapses unless renewed (unix milliseconds).
    pub lease_expires_ms: u64,
    /// Whether its membership is current (not expired).
    pub alive: bool,
}

/// A partition of a consumer group, as [`Storage::consumer_groups`](crate::Storage::consumer_groups)
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupPartition {
    /// The partition.
    pub partition: u32,
    /// The member holding it (`None`: free, or its lease expired).
    pub member: Option<String>,
    /// The lease's generation: how many times the partition changed hands.
    pub generation: u64,
    /// When the lease lapses (unix milliseconds; 0 when free).
    pub lease_expires_ms: u64,
    /// Its cursor: the sequence of the last event of it handled.
    pub position: u64,
    /// Events committed after the cursor (of every partition: an upper bound of its own).
    pub lag_events: u64,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerGroup {
    /// Its name.
    pub name: String,
    /// How many partitions the streams are split into.
    pub partitions: u32,
    /// How long a lease lasts without a renewal, in milliseconds.
    pub lease_ms: u64,
    /// Its members, by name (those whose membership lapsed a whole lease ago are dropped).
    pub members: Vec<GroupMember>,
    /// Each partition.
    pub partition_states: Vec<GroupPartition>,
}

impl ConsumerGroup {
    /// The partition of `stream_id` in this group (see [`partition_of`]).
    pub fn partition_of(&self, stream_id: u128) -> u32 {
        partition_of(stream_id, self.partitions)
    }
}

/// The group `name` in `txn`'s snapshot.
pub(crate) fn group_in(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    name: &str,
    last_seq: u64,
) -> Result<Option<ConsumerGroup>> {
    let Some(config) = config(dbs, txn, name)? else {
        return Ok(None);
    };
    let now = now_ms();
    let mut partition_states = Vec::with_capacity(config.partitions as usize);
    for partition in 0..config.partitions {
        let l = lease(dbs, txn, name, partition)?;
        let position = position(dbs, txn, name, partition)?;
        let held = !l.member.is_empty() && l.expires_ms > now;
        partition_states.push(GroupPartition {
            partition,
            member: held.then(|| member_name(&l.member).to_owned()),
            generation: l.generation,
            lease_expires_ms: l.expires_ms,
            position,
            lag_events: last_seq.saturating_sub(position),
        });
    }
    let members = members(dbs, txn, name)?
        .into_iter()
        .map(|(member, expires)| GroupMember {
            partitions: partition_states
                .iter()
                .filter(|p| p.member.as_deref() == Some(member.as_str()))
                .map(|p| p.partition)
                .collect(),
            name: member,
            lease_expires_ms: expires,
            alive: expires > now,
        })
        .collect();
    Ok(Some(ConsumerGroup {
        name: name.to_owned(),
        partitions: config.partitions,
        lease_ms: config.lease_ms,
        members,
        partition_states,
    }))
}

impl Storage {
    /// A member's step (see [`member_step`]).
    pub(crate) fn group_step(
        &self,
        group: &str,
        member: &str,
        wanted: GroupConfig,
        held: &[Held],
        leaving: bool,
    ) -> Result<Step> {
        member_step(self, group, member, wanted, held, leaving)
    }

    /// Whether a member's step would change anything but renew it, in `txn` (see
    /// [`step_needed`]).
    pub(crate) fn group_step_needed(
        &self,
        txn: &super::ReadTxn,
        group: &str,
        member: &str,
        live_known: &[String],
        held: &[Held],
    ) -> Result<bool> {
        step_needed(self.dbs(), txn.raw(), group, member, live_known, held)
    }

    /// Commits a member's partition cursors and parks `parked` (see [`checkpoint`]); returns
    /// the partitions it lost.
    pub(crate) fn group_checkpoint(
        &self,
        group: &str,
        member: &str,
        held: &[Held],
        parked: &[(u64, String)],
    ) -> Result<Vec<u32>> {
        self.write(self.resize_wait(), |wtxn, dbs| {
            let lost = checkpoint(dbs, wtxn, group, member, held, parked, false)?;
            Ok((lost, true))
        })
    }
}

/// See [`Storage::consumer_groups`](crate::Storage::consumer_groups).
pub(crate) fn consumer_groups_in(
    storage: &Storage,
    txn: &super::ReadTxn,
) -> Result<Vec<ConsumerGroup>> {
    let dbs = storage.dbs();
    let last = super::last_seq(dbs, txn.raw())?;
    let mut out = Vec::new();
    for name in names(dbs, txn.raw())? {
        if let Some(g) = group_in(dbs, txn.raw(), &name, last)? {
            out.push(g);
        }
    }
    Ok(out)
}

/// The group `name`, if there is one.
pub(crate) fn consumer_group_in(
    storage: &Storage,
    txn: &super::ReadTxn,
    name: &str,
) -> Result<Option<ConsumerGroup>> {
    let dbs = storage.dbs();
    let last = super::last_seq(dbs, txn.raw())?;
    group_in(dbs, txn.raw(), name, last)
}

/// Checks the leases of `held` and, if the member holds them all, moves their cursors, in
/// `wtxn`; returns the partitions lost (nothing is written then).
pub(crate) fn checkpoint_in(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    group: &str,
    member: &str,
    held: &[Held],
) -> Result<Vec<u32>> {
    checkpoint(dbs, wtxn, group, member, held, &[], true)
}

/// Every group of processors in `txn`, as exported (`is_projection` names the groups of
/// projections, left out).
pub(crate) fn export_groups(
    dbs: &Dbs,
    txn: &RoTxn<'_>,
    is_projection: impl Fn(&str) -> bool,
) -> Result<Vec<crate::dump::ExportGroup>> {
    let mut out = Vec::new();
    for name in names(dbs, txn)? {
        if is_projection(&name) {
            continue;
        }
        let Some(c) = config(dbs, txn, &name)? else {
            continue;
        };
        let positions = (0..c.partitions)
            .map(|p| position(dbs, txn, &name, p))
            .collect::<Result<Vec<u64>>>()?;
        out.push(crate::dump::ExportGroup {
            parked: super::parked_of(dbs, txn, &name)?,
            name,
            partitions: c.partitions,
            lease_ms: c.lease_ms,
            positions,
        });
    }
    Ok(out)
}

/// Writes an exported group into a store: its settings if the store has none (the same
/// partition count if it has), and each partition's cursor where it moves forward (or
/// everywhere, with `overwrite`), with its parked events. A group the store lacks is created
/// only when the import `brought_events`. Returns (written, kept) as for consumers.
pub(crate) fn import_group(
    dbs: &Dbs,
    wtxn: &mut RwTxn<'_>,
    g: &crate::dump::ExportGroup,
    overwrite: bool,
    brought_events: bool,
) -> Result<(u64, u64)> {
    let bad = |reason: String| Error::InvalidImport { seq: 0, reason };
    if !(1..=GROUP_PARTITIONS_MAX).contains(&g.partitions)
        || g.positions.len() != g.partitions as usize
    {
        return Err(bad(format!(
            "consumer group {:?}: {} partitions with {} cursors",
            g.name,
            g.partitions,
            g.positions.len()
        )));
    }
    match config(dbs, wtxn, &g.name)? {
        Some(c) if c.partitions != g.partitions => {
            return Err(bad(format!(
                "consumer group {:?} has {} partitions in the store and {} in the export",
                g.name, c.partitions, g.partitions
            )));
        }
        Some(_) => {}
        None if !brought_events && !overwrite => return Ok((0, 1)),
        None => {
            let mut v = Vec::with_capacity(16);
            v.extend_from_slice(&g.partitions.to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes());
            v.extend_from_slice(&g.lease_ms.to_le_bytes());
            dbs.groups
                .put(wtxn, &key(&g.name, CONFIG, &[]), &v)
                .lmdb()?;
        }
    }
    let mut moved = false;
    let mut held_back = false;
    for (partition, &p) in (0u32..).zip(&g.positions) {
        let ours = position(dbs, wtxn, &g.name, partition)?;
        if overwrite || p > ours {
            set_position(dbs, wtxn, &g.name, partition, p)?;
            moved = true;
        } else if p < ours {
            held_back = true;
        }
    }
    for p in &g.parked {
        super::park(dbs, wtxn, &g.name, p.seq, &p.reason)?;
    }
    Ok((u64::from(moved), u64::from(held_back && !moved)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn open(dir: &tempfile::TempDir) -> Storage {
        Storage::open(crate::StorageConfig {
            path: dir.path().into(),
            ..Default::default()
        })
        .unwrap()
    }

    const PINNED: [u32; 5] = [11, 15, 3, 11, 3];

    #[test]
    fn partitions_are_stable_and_spread() {
        // The hash is part of the format: a group's partitions must not move between builds.
        let pinned: Vec<u32> = [1u128, 2, 3, 1 << 64, u128::MAX]
            .iter()
            .map(|&s| partition_of(s, 16))
            .collect();
        assert_eq!(pinned, PINNED);
        let mut seen = [0u32; 16];
        for s in 0..16_000u128 {
            seen[partition_of(s, 16) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        assert_eq!(partition_of(7, 1), 0);
    }

    /// A member whose lease expired and was taken over commits nothing: neither its cursors
    /// nor (all or nothing) anything else of its transaction.
    #[test]
    fn a_member_whose_lease_was_taken_over_is_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&dir);
        let wanted = GroupConfig {
            partitions: 2,
            lease_ms: 100,
        };
        let a = member_step(&storage, "g", "a", wanted, &[], false).unwrap();
        assert_eq!(a.held.len(), 2);
        let mut stale = a.held.clone();
        for h in &mut stale {
            h.position = 50;
        }
        // `a` stalls past its lease; `b` takes both partitions (a new generation each).
        std::thread::sleep(std::time::Duration::from_millis(150));
        let b = member_step(&storage, "g", "b", wanted, &[], false).unwrap();
        assert_eq!(b.held.len(), 2);
        assert!(b.held[0].generation > a.held[0].generation);
        // `a` comes back with positions it thinks it holds: refused, nothing written.
        let lost = storage
            .write(storage.resize_wait(), |wtxn, dbs| {
                Ok((checkpoint_in(dbs, wtxn, "g", "a", &stale)?, true))
            })
            .unwrap();
        assert_eq!(lost, [0, 1]);
        let lost = storage.group_checkpoint("g", "a", &stale, &[]).unwrap();
        assert_eq!(lost, [0, 1]);
        let txn = storage.read_txn().unwrap();
        for p in 0..2 {
            assert_eq!(position(storage.dbs(), txn.raw(), "g", p).unwrap(), 0);
        }
        drop(txn);
        // Its own step then hands nothing back over `b`'s leases, and takes nothing of them.
        let again = member_step(&storage, "g", "a", wanted, &stale, false).unwrap();
        assert!(again.held.is_empty(), "{:?}", again.held);
        let txn = storage.read_txn().unwrap();
        for p in 0..2 {
            let l = lease(storage.dbs(), txn.raw(), "g", p).unwrap();
            assert_eq!(l.member, "b");
            assert_eq!(position(storage.dbs(), txn.raw(), "g", p).unwrap(), 0);
        }
    }

    /// Joining and leaving: a fair share for each live member, hand-backs with their cursors.
    #[test]
    fn members_share_fairly_and_a_leaving_member_hands_back_its_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(&dir);
        let wanted = GroupConfig {
            partitions: 16,
            lease_ms: 5_000,
        };
        let mut a = member_step(&storage, "g", "a", wanted, &[], false).unwrap();
        assert_eq!(a.held.len(), 16);
        let b = member_step(&storage, "g", "b", wanted, &[], false).unwrap();
        // `a` holds everything until it steps again: `b` waits.
        assert!(b.held.is_empty());
        for h in &mut a.held {
            h.position = 10 + u64::from(h.partition);
        }
        let a2 = member_step(&storage, "g", "a", wanted, &a.held, false).unwrap();
        assert_eq!(a2.held.len(), 8);
        let b2 = member_step(&storage, "g", "b", wanted, &b.held, false).unwrap();
        assert_eq!(b2.held.len(), 8);
        // `b` starts each partition it took at the cursor `a` handed back.
        for h in &b2.held {
            assert_eq!(h.position, 10 + u64::from(h.partition));
        }
        let left = member_step(&storage, "g", "a", wanted, &a2.held, true).unwrap();
        assert!(left.held.is_empty());
        let b3 = member_step(&storage, "g", "b", wanted, &b2.held, false).unwrap();
        assert_eq!(b3.held.len(), 16);
        let txn = storage.read_txn().unwrap();
        let g = group_in(storage.dbs(), txn.raw(), "g", 100)
            .unwrap()
            .unwrap();
        assert_eq!(g.members.len(), 1);
        assert_eq!(g.members[0].partitions.len(), 16);
    }
}
