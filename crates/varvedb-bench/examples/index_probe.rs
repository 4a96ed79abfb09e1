//! The raw-heed probe behind docs/design.md, "The stream chain": what a commit of 1,000 events
//! over random streams costs when each event also writes a stream head, a full
//! `[stream][version]` index entry, or a sparse one.
//!
//! `cargo run --release -p varvedb-bench --example index_probe -- <mode> [streams] [--sorted] [--nosync]`
//! with mode `log`, `heads`, `full`, `sparse16`, `sparse32` or `sparse64`. It fills 1M events,
//! then times 200 commits of 1,000 events.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use heed::types::Bytes;
use heed::{CommitOrAbort, EnvFlags, EnvOpenOptions, PutFlags};

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map_or("full", String::as_str).to_string();
    let streams: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let sorted = args.iter().any(|a| a == "--sorted");
    let nosync = args.iter().any(|a| a == "--nosync");
    let every: u32 = match mode.as_str() {
        "sparse16" => 16,
        "sparse32" => 32,
        "sparse64" => 64,
        _ => 1,
    };
    let dir = std::path::Path::new("target/index-probe").join(&mode);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(8 << 30).max_dbs(4);
    if nosync {
        // SAFETY: a throwaway store; losing it on a crash is fine.
        unsafe { options.flags(EnvFlags::NO_SYNC) };
    }
    // SAFETY: a fresh directory opened once.
    let env = unsafe { options.open(&dir) }.unwrap();
    let wtxn = env.write_txn().unwrap();
    let CommitOrAbort::Commit((log, index, heads)) = env
        .create_databases_and_commit(wtxn, |opener, wtxn| {
            let log = opener.create_database::<Bytes, Bytes>(wtxn, Some("log"))?;
            let index = opener.create_database::<Bytes, Bytes>(wtxn, Some("index"))?;
            let heads = opener.create_database::<Bytes, Bytes>(wtxn, Some("heads"))?;
            Ok::<_, heed::Error>(CommitOrAbort::<_, std::convert::Infallible>::Commit((
                log, index, heads,
            )))
        })
        .unwrap();
    let ids: Vec<u128> = {
        let mut s = 7;
        (0..streams)
            .map(|_| (u128::from(xorshift(&mut s)) << 64) | u128::from(xorshift(&mut s)))
            .collect()
    };
    let mut versions = vec![0u32; streams as usize];
    let record = [0x5au8; 192];
    let (mut seq, mut rng) = (0u64, 99u64);
    let mut run = |commits: usize| {
        let start = Instant::now();
        for _ in 0..commits {
            let mut wtxn = env.write_txn().unwrap();
            let mut head_puts: Vec<([u8; 16], [u8; 16])> = Vec::new();
            let mut index_puts: Vec<([u8; 20], [u8; 8])> = Vec::new();
            for _ in 0..1_000 {
                seq += 1;
                let i = (xorshift(&mut rng) % streams) as usize;
                versions[i] += 1;
                log.put_with_flags(&mut wtxn, PutFlags::APPEND, &seq.to_be_bytes(), &record)
                    .unwrap();
                if mode == "log" {
                    continue;
                }
                let key = ids[i].to_be_bytes();
                let mut head = [0u8; 16];
                head[..4].copy_from_slice(&versions[i].to_le_bytes());
                head[8..].copy_from_slice(&seq.to_le_bytes());
                if sorted {
                    head_puts.push((key, head));
                } else {
                    let _ = heads.get(&wtxn, &key).unwrap();
                    heads.put(&mut wtxn, &key, &head).unwrap();
                }
                if mode != "heads" && versions[i].is_multiple_of(every) {
                    let mut ikey = [0u8; 20];
                    ikey[..16].copy_from_slice(&key);
                    ikey[16..].copy_from_slice(&versions[i].to_be_bytes());
                    if sorted {
                        index_puts.push((ikey, seq.to_be_bytes()));
                    } else {
                        index
                            .put_with_flags(
                                &mut wtxn,
                                PutFlags::NO_OVERWRITE,
                                &ikey,
                                &seq.to_be_bytes(),
                            )
                            .unwrap();
                    }
                }
            }
            // Sorted: one put per stream (its last head), all in key order.
            head_puts.reverse();
            head_puts.sort_by_key(|a| a.0);
            head_puts.dedup_by(|a, b| a.0 == b.0);
            for (k, v) in &head_puts {
                heads.put(&mut wtxn, k, v).unwrap();
            }
            index_puts.sort();
            for (k, v) in &index_puts {
                index
                    .put_with_flags(&mut wtxn, PutFlags::NO_OVERWRITE, k, v)
                    .unwrap();
            }
            wtxn.commit().unwrap();
        }
        start.elapsed().as_secs_f64()
    };
    run(1_000);
    let secs = run(200);
    println!(
        "{mode} streams={streams} sorted={sorted} nosync={nosync}: {:.0} ev/s",
        200_000.0 / secs
    );
    drop(env);
    let _ = std::fs::remove_dir_all(&dir);
}
