//! Durability: every append acknowledged before the process is killed is there after a reopen.
//!
//! The test runs its own binary as a child that appends and prints each acknowledgement, kills it
//! with SIGKILL in the middle of the work, and checks the store against what was acknowledged.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;
use varvedb::{ExpectedVersion, Reader};

const CHILD_ENV: &str = "VARVEDB_CRASH_CHILD_DIR";

/// In the child: append forever, printing `seq stream version` after each acknowledgement.
#[test]
#[ignore = "a child process: its parent test runs it with --ignored"]
fn child_writer() {
    let Some(writer) = writer_for_child(CHILD_ENV) else {
        return;
    };
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let stream = u128::from(i % 7);
        if i % 5 == 0 {
            let batch: Vec<_> = (0..3).map(|k| deposit(i * 10 + k)).collect();
            for a in writer
                .append_batch(stream, ExpectedVersion::Auto, &batch)
                .unwrap()
            {
                writeln!(out, "{} {} {}", a.seq, stream, a.version).unwrap();
            }
        } else {
            let a = writer
                .append(stream, ExpectedVersion::Auto, &deposit(i))
                .unwrap();
            writeln!(out, "{} {} {}", a.seq, stream, a.version).unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "--ignored",
                "child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut acked = Vec::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while acked.len() < 200 + round * 50 {
            let line = lines.next().unwrap().unwrap();
            let parts: Vec<u128> = line.split(' ').filter_map(|p| p.parse().ok()).collect();
            if parts.len() == 3 {
                acked.push((parts[0] as u64, parts[1], parts[2] as u32));
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();

        let storage = open(&dir);
        let reader = Reader::<Deposited>::new(storage.clone());
        let txn = storage.read_txn().unwrap();
        for &(seq, stream, version) in &acked {
            let e = reader
                .get(&txn, seq)
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged seq {seq} lost"));
            assert_eq!((e.stream_id(), e.version()), (stream, version));
        }
        // The log is gap-free and every stream's versions run 1..=n.
        let last = reader.last_seq(&txn).unwrap();
        let seqs: Vec<u64> = reader.read_all(&txn, 1).map(|e| e.unwrap().seq()).collect();
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
        for stream in 0..7u128 {
            let versions: Vec<u32> = reader
                .read_stream(&txn, stream, 1)
                .map(|e| e.unwrap().version())
                .collect();
            assert_eq!(versions, (1..=versions.len() as u32).collect::<Vec<_>>());
        }
    }
}
