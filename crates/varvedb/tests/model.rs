//! A model test: random appends (every `ExpectedVersion`, batches, multi-stream), reads and
//! reopens, checked against an in-memory model.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use varvedb::{Appended, Error, ExpectedVersion, Reader, Storage, Writer};

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: u128,
        expected: ExpectedVersion,
        amounts: Vec<u64>,
    },
    Multi {
        entries: Vec<(u128, ExpectedVersion, Vec<u64>)>,
    },
    CheckStream {
        stream: u128,
        from: u32,
    },
    CheckBackwards {
        stream: u128,
        from: u32,
    },
    CheckAll {
        from: u64,
    },
    CheckGet {
        seq: u64,
    },
    Reopen,
}

fn expected() -> impl Strategy<Value = ExpectedVersion> {
    prop_oneof![
        (0u32..6).prop_map(ExpectedVersion::Exact),
        Just(ExpectedVersion::NoStream),
        Just(ExpectedVersion::StreamExists),
        Just(ExpectedVersion::Auto),
    ]
}

fn amounts() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(0u64..1000, 1..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u128..4, expected(), amounts()).prop_map(|(stream, expected, amounts)| Op::Append { stream, expected, amounts }),
        2 => prop::collection::vec((0u128..4, expected(), amounts()), 1..4).prop_map(|entries| Op::Multi { entries }),
        1 => (0u128..4, 0u32..6).prop_map(|(stream, from)| Op::CheckStream { stream, from }),
        1 => (0u128..4, 0u32..8).prop_map(|(stream, from)| Op::CheckBackwards { stream, from }),
        1 => (0u64..20).prop_map(|from| Op::CheckAll { from }),
        1 => (0u64..30).prop_map(|seq| Op::CheckGet { seq }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    /// (stream, version, amount) by seq - 1.
    log: Vec<(u128, u32, u64)>,
    /// Seqs of each stream by version - 1.
    streams: BTreeMap<u128, Vec<u64>>,
}

impl Model {
    fn version(&self, stream: u128) -> u32 {
        self.streams.get(&stream).map_or(0, |s| s.len() as u32)
    }

    /// Applies an atomic append; on a conflict returns the error the store must report.
    fn apply(
        &mut self,
        entries: &[(u128, ExpectedVersion, Vec<u64>)],
    ) -> Result<Vec<Appended>, (u128, u32)> {
        let mut trial_versions: BTreeMap<u128, u32> = BTreeMap::new();
        for (stream, expected, amounts) in entries {
            let current = *trial_versions.get(stream).unwrap_or(&self.version(*stream));
            if !expected.accepts(current) {
                return Err((*stream, current));
            }
            trial_versions.insert(*stream, current + amounts.len() as u32);
        }
        let mut out = Vec::new();
        for (stream, _, amounts) in entries {
            for amount in amounts {
                let seq = self.log.len() as u64 + 1;
                let versions = self.streams.entry(*stream).or_default();
                versions.push(seq);
                let version = versions.len() as u32;
                self.log.push((*stream, version, *amount));
                out.push(Appended { seq, version });
            }
        }
        Ok(out)
    }
}

fn events(amounts: &[u64]) -> Vec<Deposited> {
    amounts.iter().map(|&a| deposit(a)).collect()
}

fn check_result(
    got: varvedb::Result<Vec<Appended>>,
    want: Result<Vec<Appended>, (u128, u32)>,
) -> Result<(), TestCaseError> {
    match (got, want) {
        (Ok(got), Ok(want)) => prop_assert_eq!(got, want),
        (
            Err(Error::ConcurrencyConflict {
                stream_id, actual, ..
            }),
            Err((stream, current)),
        ) => {
            prop_assert_eq!((stream_id, actual), (stream, current));
        }
        (got, want) => prop_assert!(false, "store gave {got:?}, model expects {want:?}"),
    }
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = open(&dir);
    let mut model = Model::default();
    for op in ops {
        let writer = Writer::<Deposited>::new(storage.clone());
        let reader = Reader::<Deposited>::new(storage.clone());
        match op {
            Op::Append {
                stream,
                expected,
                amounts,
            } => {
                let want = model.apply(&[(stream, expected, amounts.clone())]);
                let got = if amounts.len() == 1 {
                    writer
                        .append(stream, expected, &events(&amounts)[0])
                        .map(|a| vec![a])
                } else {
                    writer.append_batch(stream, expected, &events(&amounts))
                };
                check_result(got, want)?;
            }
            Op::Multi { entries } => {
                let want = model.apply(&entries);
                let owned: Vec<(u128, ExpectedVersion, Vec<Deposited>)> = entries
                    .iter()
                    .map(|(s, e, a)| (*s, *e, events(a)))
                    .collect();
                let borrowed: Vec<(u128, ExpectedVersion, &[Deposited])> = owned
                    .iter()
                    .map(|(s, e, v)| (*s, *e, v.as_slice()))
                    .collect();
                check_result(writer.append_multi(&borrowed), want)?;
            }
            Op::CheckStream { stream, from } => {
                let txn = storage.read_txn().unwrap();
                let got: Vec<(u64, u32, u64)> = reader
                    .read_stream(&txn, stream, from)
                    .map(|e| e.unwrap())
                    .map(|e| (e.seq(), e.version(), e.amount.to_native()))
                    .collect();
                let want: Vec<(u64, u32, u64)> =
                    model.streams.get(&stream).map_or(Vec::new(), |seqs| {
                        seqs.iter()
                            .map(|&s| (s, model.log[s as usize - 1].1, model.log[s as usize - 1].2))
                            .filter(|(_, v, _)| *v >= from)
                            .collect()
                    });
                prop_assert_eq!(got, want);
                prop_assert_eq!(
                    reader.stream_version(&txn, stream).unwrap(),
                    model.version(stream)
                );
                if from > 0 {
                    let by_version = reader
                        .get_by_version(&txn, stream, from)
                        .unwrap()
                        .map(|e| e.seq());
                    let want = model
                        .streams
                        .get(&stream)
                        .and_then(|s| s.get(from as usize - 1).copied());
                    prop_assert_eq!(by_version, want);
                }
            }
            Op::CheckBackwards { stream, from } => {
                let txn = storage.read_txn().unwrap();
                let got: Vec<u32> = reader
                    .read_stream_backwards(&txn, stream, from)
                    .map(|e| e.unwrap().version())
                    .collect();
                let want: Vec<u32> = (1..=model.version(stream).min(from)).rev().collect();
                prop_assert_eq!(got, want);
            }
            Op::CheckAll { from } => {
                let txn = storage.read_txn().unwrap();
                let got: Vec<(u64, u128, u32, u64)> = reader
                    .read_all(&txn, from)
                    .map(|e| e.unwrap())
                    .map(|e| (e.seq(), e.stream_id(), e.version(), e.amount.to_native()))
                    .collect();
                let want: Vec<(u64, u128, u32, u64)> = model
                    .log
                    .iter()
                    .enumerate()
                    .map(|(i, &(s, v, a))| (i as u64 + 1, s, v, a))
                    .filter(|(seq, ..)| *seq >= from)
                    .collect();
                prop_assert_eq!(got, want);
                prop_assert_eq!(reader.last_seq(&txn).unwrap(), model.log.len() as u64);
            }
            Op::CheckGet { seq } => {
                let txn = storage.read_txn().unwrap();
                let got = reader
                    .get(&txn, seq)
                    .unwrap()
                    .map(|e| (e.stream_id(), e.version(), e.amount.to_native()));
                let want = seq
                    .checked_sub(1)
                    .and_then(|i| model.log.get(i as usize))
                    .copied();
                prop_assert_eq!(got, want);
            }
            Op::Reopen => {
                drop((writer, reader));
                drop(storage);
                storage = Storage::open(config(&dir)).unwrap();
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
