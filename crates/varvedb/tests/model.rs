//! A model test: random appends (every `ExpectedVersion`, batches, multi-stream, event ids with
//! retries and duplicates, events of another type), reads and reopens, checked against an
//! in-memory model.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use varvedb::{
    Append, AppendOptions, Appended, Error, EventId, ExpectedVersion, Reader, Storage, Writer,
};

/// Another event type in the same log: a `Reader<Deposited>` must refuse it.
#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
struct Other {
    x: u64,
}

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
    /// One event with an id from a small pool, so that retries and clashes happen.
    AppendWithId {
        stream: u128,
        expected: ExpectedVersion,
        amount: u64,
        id: u128,
    },
    AppendOther {
        stream: u128,
        expected: ExpectedVersion,
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
        3 => (0u128..4, expected(), 0u64..3, 0u128..5).prop_map(|(stream, expected, amount, id)| Op::AppendWithId { stream, expected, amount, id }),
        1 => (0u128..4, expected()).prop_map(|(stream, expected)| Op::AppendOther { stream, expected }),
        1 => (0u128..4, 0u32..6).prop_map(|(stream, from)| Op::CheckStream { stream, from }),
        1 => (0u128..4, 0u32..8).prop_map(|(stream, from)| Op::CheckBackwards { stream, from }),
        1 => (0u64..20).prop_map(|from| Op::CheckAll { from }),
        1 => (0u64..30).prop_map(|seq| Op::CheckGet { seq }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    /// (stream, version, amount) by seq - 1; no amount for an `Other` event.
    log: Vec<(u128, u32, Option<u64>)>,
    /// Seqs of each stream by version - 1.
    streams: BTreeMap<u128, Vec<u64>>,
    /// Event id → its event's seq.
    ids: BTreeMap<u128, u64>,
}

/// What the store must answer.
#[derive(Debug)]
enum Want {
    Ok(Vec<Appended>),
    Conflict(u128, u32),
    Duplicate(u64),
}

impl Model {
    fn version(&self, stream: u128) -> u32 {
        self.streams.get(&stream).map_or(0, |s| s.len() as u32)
    }

    /// An append of one event with an id.
    fn apply_with_id(
        &mut self,
        stream: u128,
        expected: ExpectedVersion,
        amount: u64,
        id: u128,
    ) -> Want {
        if let Some(&seq) = self.ids.get(&id) {
            let (s, version, a) = self.log[seq as usize - 1];
            return if s == stream && a == Some(amount) {
                Want::Ok(vec![Appended { seq, version }])
            } else {
                Want::Duplicate(seq)
            };
        }
        match self.apply(&[(stream, expected, vec![amount])]) {
            Ok(out) => {
                self.ids.insert(id, out[0].seq);
                Want::Ok(out)
            }
            Err((s, v)) => Want::Conflict(s, v),
        }
    }

    /// An append of one `Other` event.
    fn apply_other(&mut self, stream: u128, expected: ExpectedVersion) -> Want {
        match self.apply(&[(stream, expected, vec![0])]) {
            Ok(out) => {
                self.log[out[0].seq as usize - 1].2 = None;
                Want::Ok(out)
            }
            Err((s, v)) => Want::Conflict(s, v),
        }
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
                self.log.push((*stream, version, Some(*amount)));
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
    check_want(
        got,
        match want {
            Ok(a) => Want::Ok(a),
            Err((s, v)) => Want::Conflict(s, v),
        },
    )
}

fn check_want(got: varvedb::Result<Vec<Appended>>, want: Want) -> Result<(), TestCaseError> {
    match (got, want) {
        (Ok(got), Want::Ok(want)) => prop_assert_eq!(got, want),
        (
            Err(Error::ConcurrencyConflict {
                stream_id, actual, ..
            }),
            Want::Conflict(stream, current),
        ) => {
            prop_assert_eq!((stream_id, actual), (stream, current));
        }
        (Err(Error::DuplicateEventId { seq, .. }), Want::Duplicate(want)) => {
            prop_assert_eq!(seq, want);
        }
        (got, want) => prop_assert!(false, "store gave {got:?}, model expects {want:?}"),
    }
    Ok(())
}

/// A read's item as the model sees it: the seq and the amount, none for an event of the other
/// type (which the reader reports as a type mismatch).
fn seen(e: varvedb::Result<varvedb::EventRef<'_, Deposited>>) -> (u64, Option<u64>) {
    match e {
        Ok(e) => (e.seq(), Some(e.amount.to_native())),
        Err(Error::TypeMismatch { seq, .. }) => (seq, None),
        Err(other) => panic!("{other:?}"),
    }
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
            Op::AppendWithId {
                stream,
                expected,
                amount,
                id,
            } => {
                let want = model.apply_with_id(stream, expected, amount, id);
                let got = writer
                    .commit(
                        Append::event(stream, expected, &deposit(amount))
                            .options(AppendOptions::new().event_id(EventId::from_u128(id))),
                    )
                    .map(|v| v[0])
                    .map(|a| vec![a]);
                check_want(got, want)?;
            }
            Op::AppendOther { stream, expected } => {
                let want = model.apply_other(stream, expected);
                let got = Writer::<Other>::new(storage.clone())
                    .append(stream, expected, &Other { x: 1 })
                    .map(|a| vec![a]);
                check_want(got, want)?;
            }
            Op::Multi { entries } => {
                let want = model.apply(&entries);
                let owned: Vec<(u128, ExpectedVersion, Vec<Deposited>)> = entries
                    .iter()
                    .map(|(s, e, a)| (*s, *e, events(a)))
                    .collect();
                let append = owned
                    .iter()
                    .fold(Append::new(), |a, (s, e, v)| a.and(*s, *e, v.as_slice()));
                check_result(writer.commit(append), want)?;
            }
            Op::CheckStream { stream, from } => {
                let txn = storage.read_txn().unwrap();
                let got: Vec<(u64, Option<u64>)> =
                    reader.read_stream(&txn, stream, from).map(seen).collect();
                let want: Vec<(u64, Option<u64>)> =
                    model.streams.get(&stream).map_or(Vec::new(), |seqs| {
                        seqs.iter()
                            .filter(|&&s| model.log[s as usize - 1].1 >= from)
                            .map(|&s| (s, model.log[s as usize - 1].2))
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
                        .transpose()
                        .map(|e| seen(e).0);
                    let want = model
                        .streams
                        .get(&stream)
                        .and_then(|s| s.get(from as usize - 1).copied());
                    prop_assert_eq!(by_version, want);
                }
            }
            Op::CheckBackwards { stream, from } => {
                let txn = storage.read_txn().unwrap();
                let got: Vec<u64> = reader
                    .read_stream_backwards(&txn, stream, from)
                    .map(|e| seen(e).0)
                    .collect();
                let want: Vec<u64> = (1..=model.version(stream).min(from))
                    .rev()
                    .map(|v| model.streams[&stream][v as usize - 1])
                    .collect();
                prop_assert_eq!(got, want);
            }
            Op::CheckAll { from } => {
                let txn = storage.read_txn().unwrap();
                let got: Vec<(u64, Option<u64>)> = reader.read_all(&txn, from).map(seen).collect();
                let want: Vec<(u64, Option<u64>)> = model
                    .log
                    .iter()
                    .enumerate()
                    .map(|(i, &(_, _, a))| (i as u64 + 1, a))
                    .filter(|(seq, _)| *seq >= from)
                    .collect();
                prop_assert_eq!(got, want);
                prop_assert_eq!(reader.last_seq(&txn).unwrap(), model.log.len() as u64);
            }
            Op::CheckGet { seq } => {
                let txn = storage.read_txn().unwrap();
                let got = reader.get(&txn, seq).transpose().map(seen);
                let want = seq
                    .checked_sub(1)
                    .and_then(|i| model.log.get(i as usize))
                    .map(|&(_, _, a)| (seq, a));
                for (id, &at) in &model.ids {
                    prop_assert_eq!(
                        storage.seq_of_event_id(EventId::from_u128(*id)).unwrap(),
                        Some(at)
                    );
                }
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
