//! `pack-probe`: the prototype that weighs packed log entries (performance round 2). It writes
//! the same 1M events in four layouts into LMDB through heed, then times a full scan (validated,
//! one field) and random point reads of each:
//!
//! - `raw`: one entry per event, the bare archive (the raw-heed floor of the harness);
//! - `records`: one entry per event, VarveDB's record (64-byte header with an xxh3 checksum of
//!   header and body, body padded to 16): what format 3 stores;
//! - `packs of K`: one entry per K consecutive events: `[u64 xxh3 of the rest][u32 count]
//!   [u32 0][u32 offset × count, padded to 16][records]`, each record as above. A scan checks
//!   the pack's checksum once and each record's header without its checksum; a point read finds
//!   the pack with one positioned lookup (`get_lower_than_or_equal_to`), then its record by the
//!   offset table, and checks that record's own checksum.
//!
//! It measures; it writes no format. `cargo run --release -p varvedb-bench --bin pack-probe`.

use std::path::Path;
use std::time::Instant;

use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions, PutFlags, WithoutTls};
use varvedb_bench::event::{ArchivedBenchEvent, event};

fn xxh3_64(bytes: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(bytes)
}

const EVENTS: u64 = 1_000_000;
const POINT_READS: usize = 200_000;
const HEADER: usize = 64;

type Db = Database<'static, Bytes, Bytes>;

fn open(dir: &Path) -> Result<(Env<WithoutTls>, Db), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(16 << 30).max_dbs(2);
    // SAFETY: a fresh directory, opened once by this process.
    let env = unsafe { options.open(dir) }?;
    let wtxn = env.write_txn()?;
    let created = env.create_databases_and_commit(wtxn, |opener, wtxn| {
        let db = opener.create_database::<Bytes, Bytes>(wtxn, Some("log"))?;
        Ok::<_, heed::Error>(heed::CommitOrAbort::<_, std::convert::Infallible>::Commit(
            db,
        ))
    })?;
    let heed::CommitOrAbort::Commit(db) = created;
    Ok((env, db))
}

/// A record of format 3's shape: header with a checksum, body, zero padding to 16.
fn record(seq: u64, body: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; (HEADER + body.len()).next_multiple_of(16)];
    r[0] = 3;
    r[4..8].copy_from_slice(&(body.len() as u32).to_le_bytes());
    r[8..24].copy_from_slice(&u128::from(seq % 1_000 + 1).to_le_bytes());
    r[24..28].copy_from_slice(&((seq / 1_000) as u32 + 1).to_le_bytes());
    r[HEADER..HEADER + body.len()].copy_from_slice(body);
    let digest = xxh3_64(body);
    let mut h = [0u8; 64];
    h[..56].copy_from_slice(&r[..56]);
    h[56..].copy_from_slice(&digest.to_le_bytes());
    r[56..64].copy_from_slice(&xxh3_64(&h).to_le_bytes());
    r
}

/// The body of a record after checking its checksum; `None` if it fails.
fn checked(r: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(r.get(4..8)?.try_into().ok()?) as usize;
    let body = r.get(HEADER..HEADER + len)?;
    let mut h = [0u8; 64];
    h[..56].copy_from_slice(&r[..56]);
    h[56..].copy_from_slice(&xxh3_64(body).to_le_bytes());
    (xxh3_64(&h).to_le_bytes() == r[56..64]).then_some(body)
}

/// The body of a record whose pack was checked: its length only.
fn body(r: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(r.get(4..8)?.try_into().ok()?) as usize;
    r.get(HEADER..HEADER + len)
}

fn amount(bytes: &[u8]) -> Option<i64> {
    rkyv::access::<ArchivedBenchEvent, rkyv::rancor::Error>(bytes)
        .ok()
        .map(|e| e.amount.to_native())
}

/// A pack of the records of `first..first + n`.
fn pack(first: u64, bodies: &[Vec<u8>]) -> Vec<u8> {
    let records: Vec<Vec<u8>> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| record(first + i as u64, b))
        .collect();
    let table = (16 + 4 * records.len()).next_multiple_of(16);
    let mut p = vec![0u8; table];
    p[8..12].copy_from_slice(&(records.len() as u32).to_le_bytes());
    let mut at = table;
    for (i, r) in records.iter().enumerate() {
        p[16 + 4 * i..20 + 4 * i].copy_from_slice(&(at as u32).to_le_bytes());
        at += r.len();
    }
    for r in &records {
        p.extend_from_slice(r);
    }
    let sum = xxh3_64(&p[8..]);
    p[..8].copy_from_slice(&sum.to_le_bytes());
    p
}

fn pack_record(p: &[u8], index: usize) -> Option<&[u8]> {
    let count = u32::from_le_bytes(p.get(8..12)?.try_into().ok()?) as usize;
    if index >= count {
        return None;
    }
    let at = |i: usize| -> Option<usize> {
        Some(u32::from_le_bytes(p.get(16 + 4 * i..20 + 4 * i)?.try_into().ok()?) as usize)
    };
    let start = at(index)?;
    let end = if index + 1 < count {
        at(index + 1)?
    } else {
        p.len()
    };
    p.get(start..end)
}

#[derive(Clone, Copy)]
enum Layout {
    Raw,
    Records,
    Packs(u64),
}

impl Layout {
    fn name(self) -> String {
        match self {
            Layout::Raw => "raw (bare archives)".into(),
            Layout::Records => "records, one per entry (format 3)".into(),
            Layout::Packs(k) => format!("packs of {k}"),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args()
        .nth(1)
        .map_or_else(|| std::env::temp_dir().join("pack-probe"), Into::into);
    let bodies: Vec<Vec<u8>> = (0..EVENTS)
        .map(|i| rkyv::to_bytes::<rkyv::rancor::Error>(&event(i)).map(|b| b.to_vec()))
        .collect::<Result<_, _>>()?;
    let expected: i64 = (0..EVENTS).map(|i| event(i).amount).sum();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let seqs: Vec<u64> = (0..POINT_READS)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % EVENTS + 1
        })
        .collect();
    let expected_points: i64 = seqs.iter().map(|s| event(s - 1).amount).sum();
    println!("| layout | scan ev/s | point reads/s | file MiB |\n|---|---|---|---|");
    for layout in [
        Layout::Raw,
        Layout::Records,
        Layout::Packs(16),
        Layout::Packs(64),
        Layout::Packs(256),
        Layout::Packs(1024),
    ] {
        let dir = root.join(layout.name().replace([' ', '(', ')', ','], "-"));
        drop(std::fs::remove_dir_all(&dir));
        let (env, db) = open(&dir)?;
        // Write: transactions of 1,000 events, appended in key order.
        for chunk in 0..EVENTS / 1_000 {
            let mut wtxn = env.write_txn()?;
            let first = chunk * 1_000;
            match layout {
                Layout::Raw | Layout::Records => {
                    for i in first..first + 1_000 {
                        let seq = i + 1;
                        let value = match layout {
                            Layout::Raw => bodies[i as usize].clone(),
                            _ => record(seq, &bodies[i as usize]),
                        };
                        db.put_with_flags(&mut wtxn, PutFlags::APPEND, &seq.to_be_bytes(), &value)?;
                    }
                }
                Layout::Packs(k) => {
                    let mut i = first;
                    while i < first + 1_000 {
                        let n = k.min(first + 1_000 - i);
                        let p = pack(i + 1, &bodies[i as usize..(i + n) as usize]);
                        db.put_with_flags(&mut wtxn, PutFlags::APPEND, &(i + 1).to_be_bytes(), &p)?;
                        i += n;
                    }
                }
            }
            wtxn.commit()?;
        }
        let mut best_scan = 0f64;
        let mut best_points = 0f64;
        for _ in 0..5 {
            let rtxn = env.read_txn()?;
            let started = Instant::now();
            let (mut n, mut sum) = (0u64, 0i64);
            for entry in db.iter(&rtxn)? {
                let (_, value) = entry?;
                match layout {
                    Layout::Raw => {
                        sum += amount(value).ok_or("invalid")?;
                        n += 1;
                    }
                    Layout::Records => {
                        sum += amount(checked(value).ok_or("checksum")?).ok_or("invalid")?;
                        n += 1;
                    }
                    Layout::Packs(_) => {
                        let stored = u64::from_le_bytes(value[..8].try_into()?);
                        if xxh3_64(&value[8..]) != stored {
                            return Err("pack checksum".into());
                        }
                        let count = u32::from_le_bytes(value[8..12].try_into()?) as usize;
                        for index in 0..count {
                            let r = pack_record(value, index).ok_or("offset")?;
                            sum += amount(body(r).ok_or("length")?).ok_or("invalid")?;
                        }
                        n += count as u64;
                    }
                }
            }
            let scan = n as f64 / started.elapsed().as_secs_f64();
            if (n, sum) != (EVENTS, expected) {
                return Err(format!("{}: scan found {n} events", layout.name()).into());
            }
            best_scan = best_scan.max(scan);
            let started = Instant::now();
            let mut sum = 0i64;
            for &seq in &seqs {
                let key = seq.to_be_bytes();
                sum += match layout {
                    Layout::Raw => amount(db.get(&rtxn, &key)?.ok_or("missing")?),
                    Layout::Records => {
                        amount(checked(db.get(&rtxn, &key)?.ok_or("missing")?).ok_or("checksum")?)
                    }
                    Layout::Packs(_) => {
                        let (k, p) = db
                            .get_lower_than_or_equal_to(&rtxn, &key)?
                            .ok_or("missing")?;
                        let first = u64::from_be_bytes(k.try_into()?);
                        let r = pack_record(p, (seq - first) as usize).ok_or("offset")?;
                        amount(checked(r).ok_or("checksum")?)
                    }
                }
                .ok_or("invalid")?;
            }
            best_points = best_points.max(POINT_READS as f64 / started.elapsed().as_secs_f64());
            if sum != expected_points {
                return Err(format!("{}: point reads summed {sum}", layout.name()).into());
            }
        }
        let file = std::fs::metadata(dir.join("data.mdb"))?.len();
        println!(
            "| {} | {:.2}M | {:.0}K | {:.0} |",
            layout.name(),
            best_scan / 1e6,
            best_points / 1e3,
            file as f64 / f64::from(1u32 << 20)
        );
        drop(env);
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
