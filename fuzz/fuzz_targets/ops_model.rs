// The operation-sequence target's body, shared with `crates/varvedb/tests/fuzz_corpus.rs`: the
// input bytes are read as a bounded sequence of operations (appends with every expectation,
// batches, multi-stream appends, appends with ids from a small pool, shreds, reads, reopens) on
// an encrypted store, each checked against an in-memory model.
//
// A `Session` runs many inputs on one store, each in its own namespace (its own streams and
// event ids, the log from the store's head on): building a fresh LMDB store per input was most
// of the cost. The fuzz target starts a fresh store every `INPUTS_PER_STORE` inputs, after a
// `verify` of the whole store; the corpus test runs each input on a fresh store.
use std::collections::BTreeMap;

use varvedb::{
    Append, AppendOptions, Appended, Durability, Error, EventId, ExpectedVersion, Reader, Storage,
    StorageConfig, Writer,
};

#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event, Debug, Clone, PartialEq)]
pub struct Op {
    pub amount: u64,
}

/// At most this many operations per input.
const OPS_MAX: usize = 64;

#[derive(Default)]
struct Model {
    /// The store's last sequence before this input: the model's log starts after it.
    seq0: u64,
    /// seq - seq0 - 1 -> (stream, version, amount)
    log: Vec<(u128, u32, u64)>,
    versions: BTreeMap<u128, u32>,
    shredded: BTreeMap<u128, ()>,
    /// id -> (answer, stream, amount)
    ids: BTreeMap<u128, (Appended, u128, u64)>,
}

impl Model {
    fn version(&self, s: u128) -> u32 {
        self.versions.get(&s).copied().unwrap_or(0)
    }

    fn accepts(&self, s: u128, e: ExpectedVersion) -> bool {
        let v = self.version(s);
        match e {
            ExpectedVersion::Auto => true,
            ExpectedVersion::NoStream => v == 0,
            ExpectedVersion::StreamExists => v > 0,
            ExpectedVersion::Exact(x) => x == v,
        }
    }

    fn push(&mut self, s: u128, amount: u64) -> Appended {
        let version = self.version(s) + 1;
        self.versions.insert(s, version);
        self.log.push((s, version, amount));
        Appended {
            seq: self.seq0 + self.log.len() as u64,
            version,
        }
    }
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
}

fn expected(b: u8, model: &Model, s: u128) -> ExpectedVersion {
    match b % 5 {
        0 => ExpectedVersion::Auto,
        1 => ExpectedVersion::Exact(model.version(s)),
        2 => ExpectedVersion::Exact(model.version(s) + 1 + u32::from(b >> 5)),
        3 => ExpectedVersion::NoStream,
        _ => ExpectedVersion::StreamExists,
    }
}

fn open(path: &std::path::Path) -> Storage {
    Storage::open(StorageConfig {
        path: path.into(),
        encryption_enabled: true,
        master_key: Some([1; 32]),
        durability: Durability::NoSync,
        ..Default::default()
    })
    .expect("open")
}

/// Checks the whole store against the model.
fn check(storage: &Storage, model: &Model) {
    let reader = Reader::<Op>::new(storage.clone());
    let txn = storage.read_txn().expect("snapshot");
    assert_eq!(
        storage.last_seq(&txn).expect("last_seq"),
        model.seq0 + model.log.len() as u64
    );
    for (i, &(s, v, amount)) in model.log.iter().enumerate() {
        let seq = model.seq0 + i as u64 + 1;
        match reader.get(&txn, seq) {
            Ok(Some(e)) => {
                assert!(
                    !model.shredded.contains_key(&s),
                    "seq {seq} of a shredded stream"
                );
                assert_eq!(
                    (e.stream_id(), e.version(), e.amount.to_native()),
                    (s, v, amount)
                );
            }
            Err(Error::Shredded { .. }) => assert!(model.shredded.contains_key(&s)),
            other => panic!("seq {seq}: {:?}", other.map(|o| o.map(|e| e.seq()))),
        }
    }
    for (&s, &v) in &model.versions {
        assert_eq!(storage.stream_version(&txn, s).expect("version"), v);
        if !model.shredded.contains_key(&s) {
            let got: Vec<u64> = reader
                .read_stream(&txn, s, 1)
                .map(|e| e.expect("stream read").amount.to_native())
                .collect();
            let want: Vec<u64> = model.log.iter().filter(|l| l.0 == s).map(|l| l.2).collect();
            assert_eq!(got, want, "stream {s}");
        }
    }
}

/// Runs the operations `data` encodes on a fresh store under `dir` (which must not exist), then
/// verifies the store.
#[allow(dead_code)] // the corpus test's entry; the fuzz target runs a `Session` of many inputs
pub fn run(dir: &std::path::Path, data: &[u8]) {
    let mut session = Session::open(dir);
    session.run(data);
    session.verify();
}

/// One store that hosts many inputs, each in a namespace of its own.
pub struct Session {
    dir: std::path::PathBuf,
    /// Taken while an input runs, which may reopen the store.
    handles: Option<(Storage, Writer<Op>)>,
    /// The inputs run so far: input `n` owns streams and event ids `n * 8 + 1 ..= n * 8 + 4`.
    inputs: u64,
}

impl Session {
    /// Creates the store under `dir` (which must not exist).
    pub fn open(dir: &std::path::Path) -> Self {
        let storage = open(dir);
        let writer = Writer::<Op>::new(storage.clone());
        Session {
            dir: dir.to_path_buf(),
            handles: Some((storage, writer)),
            inputs: 0,
        }
    }

    /// How many inputs this store has hosted.
    #[allow(dead_code)] // the fuzz target's; the corpus test runs one input per store
    pub fn inputs(&self) -> u64 {
        self.inputs
    }

    /// Checks the whole store with `verify`.
    pub fn verify(&self) {
        let (storage, _) = self.handles.as_ref().expect("the store is open");
        let report = storage.verify().expect("verify");
        assert!(report.is_clean(), "{:?}", report.problems);
    }

    /// Runs the operations `data` encodes in a namespace of their own, checking each against
    /// the model, and the whole namespace at the end.
    pub fn run(&mut self, data: &[u8]) {
        let base = u128::from(self.inputs) * 8;
        self.inputs += 1;
        let (storage, writer) = self.handles.take().expect("the store is open");
        let seq0 = {
            let txn = storage.read_txn().expect("snapshot");
            storage.last_seq(&txn).expect("last_seq")
        };
        self.handles = Some(run_ops(&self.dir, storage, writer, base, seq0, data));
    }
}

fn run_ops(
    dir: &std::path::Path,
    mut storage: Storage,
    mut writer: Writer<Op>,
    base: u128,
    seq0: u64,
    data: &[u8],
) -> (Storage, Writer<Op>) {
    let mut bytes = Bytes(data);
    let mut model = Model {
        seq0,
        ..Model::default()
    };
    for _ in 0..OPS_MAX {
        let Some(code) = bytes.next() else { break };
        let a = bytes.next().unwrap_or(0);
        let b = bytes.next().unwrap_or(0);
        let s = base + u128::from(a % 4) + 1;
        let amount = u64::from(b);
        match code % 8 {
            // A single event, a batch, or a multi-stream append.
            0..=2 => {
                let entries: Vec<(u128, ExpectedVersion, Vec<Op>)> = match code % 8 {
                    0 => vec![(s, expected(b, &model, s), vec![Op { amount }])],
                    1 => vec![(
                        s,
                        expected(b, &model, s),
                        (0..u64::from(a % 4) + 1)
                            .map(|k| Op { amount: amount + k })
                            .collect(),
                    )],
                    _ => {
                        let t = base + (s - base) % 4 + 1;
                        vec![
                            (s, expected(b, &model, s), vec![Op { amount }]),
                            (t, expected(a, &model, t), vec![Op { amount: amount + 1 }]),
                        ]
                    }
                };
                let request = entries.iter().fold(Append::new(), |r, (s, e, ops)| {
                    r.and(*s, *e, ops.as_slice())
                });
                let result = writer.commit(request);
                let shredded = entries.iter().any(|e| model.shredded.contains_key(&e.0));
                let accepted = entries.iter().all(|(s, e, _)| model.accepts(*s, *e));
                match result {
                    Ok(answers) => {
                        assert!(
                            accepted && !shredded,
                            "an append the model refuses was taken"
                        );
                        let mine: Vec<Appended> = entries
                            .iter()
                            .flat_map(|(s, _, ops)| ops.iter().map(move |o| (*s, o.amount)))
                            .collect::<Vec<_>>()
                            .into_iter()
                            .map(|(s, amount)| model.push(s, amount))
                            .collect();
                        assert_eq!(answers, mine);
                    }
                    Err(Error::StreamShredded { .. }) => assert!(shredded),
                    Err(Error::ConcurrencyConflict { .. }) => assert!(!accepted),
                    Err(e) => panic!("append: {e}"),
                }
            }
            // An append with an id from a pool of 4: a retry or a clash.
            3 => {
                let id = base + u128::from(b % 4) + 1;
                let op = Op {
                    amount: u64::from(a),
                };
                let sent = writer
                    .commit(
                        Append::event(s, ExpectedVersion::Auto, &op)
                            .options(AppendOptions::new().event_id(EventId::from_u128(id))),
                    )
                    .map(|v| v[0]);
                match (model.ids.get(&id).copied(), sent) {
                    (Some((answer, st, am)), Ok(got)) => {
                        assert_eq!(
                            (st, am),
                            (s, u64::from(a)),
                            "a different append answered as a retry"
                        );
                        assert_eq!(got, answer);
                    }
                    (Some((_, st, am)), Err(Error::DuplicateEventId { .. })) => {
                        assert_ne!((st, am), (s, u64::from(a)), "a true retry was refused");
                    }
                    // A retry into a stream shredded since: its stored payload is gone.
                    (Some((_, st, _)), Err(_)) if model.shredded.contains_key(&st) => {}
                    (None, Ok(got)) => {
                        assert!(!model.shredded.contains_key(&s));
                        let answer = model.push(s, u64::from(a));
                        assert_eq!(got, answer);
                        model.ids.insert(id, (answer, s, u64::from(a)));
                    }
                    (None, Err(Error::StreamShredded { .. })) => {
                        assert!(model.shredded.contains_key(&s))
                    }
                    (known, other) => panic!("id {id} ({known:?}): {other:?}"),
                }
            }
            // A shred.
            4 => match storage.shred_stream(s) {
                Ok(_) => {
                    assert!(model.version(s) > 0);
                    model.shredded.insert(s, ());
                }
                Err(Error::StreamNotFound { .. }) => assert_eq!(model.version(s), 0),
                Err(e) => panic!("shred: {e}"),
            },
            // A reopen.
            5 => {
                drop(writer);
                drop(storage);
                storage = open(dir);
                writer = Writer::<Op>::new(storage.clone());
            }
            // Reads.
            _ => check(&storage, &model),
        }
    }
    check(&storage, &model);
    (storage, writer)
}
