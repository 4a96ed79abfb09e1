//! The history checker (`varvedb-crash history`): child processes, each with several threads,
//! make concurrent `Exact` and `Auto` appends and reads on a few shared streams and record
//! every operation's invocation and completion; the parent kills children with SIGKILL at
//! random moments and starts new ones; at the end [`check`] tests the history against the
//! final store.
//!
//! A stream's versions are its order: every append that took effect holds a range of versions,
//! so the checker does not search for a linearization, it tests the version order against
//! everything the history says (the conditions a linearizable per-stream log must meet):
//! - every acknowledged append is in the final store at the versions it was given, whole;
//!   an `Exact(e)` append was given `e + 1`; no version is given twice;
//! - nothing is in the store that was never invoked, or that was answered with a conflict;
//!   an append whose answer was lost (its process was killed) is in it whole or not at all;
//! - real time: an append that took effect after another one completed holds higher versions;
//! - a read's head, and a conflict's actual version, is the last version of an append that was
//!   invoked before the read completed (no reading from the future, never the middle of a
//!   batch), and no lower than any append completed before the read began (no stale read);
//! - a session (one thread of one process) never sees a stream's head go backwards.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use varvedb::{Append, Error, ExpectedVersion, Reader, Storage, StorageConfig, Writer};

use crate::{Entry, Rng};

/// What an operation did.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// An append of `events` events to `stream`, `Exact(e)` or `Auto` (`None`).
    Append {
        stream: u128,
        expected: Option<u32>,
        events: u32,
    },
    /// A read of `stream`'s head version.
    Read { stream: u128 },
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An append acknowledged at versions `first..=last`.
    Appended { first: u32, last: u32 },
    /// An append refused: the stream was at `actual`.
    Conflict { actual: u32 },
    /// A read that saw the head at `version`.
    Read { version: u32 },
    /// No answer: its process was killed first.
    Unknown,
}

/// One operation of the history.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Unique over the whole history; appends carry it in their events.
    pub id: u64,
    /// The thread of the process that made it: its operations run one after another.
    pub session: u64,
    pub kind: Kind,
    /// CLOCK_MONOTONIC, nanoseconds: when it was invoked, and when it was answered.
    pub invoked: u64,
    pub completed: Option<u64>,
    pub outcome: Outcome,
}

/// The final store, per stream: the operation id of each version, from version 1.
pub type Final = BTreeMap<u128, Vec<u64>>;

/// Checks a history against the final store; every violation found, described.
pub fn check(history: &[Operation], store: &Final) -> Vec<String> {
    let mut violations = Vec::new();
    let by_id: HashMap<u64, &Operation> = history.iter().map(|o| (o.id, o)).collect();
    // Where each operation's events are in the final store: stream, first and last version.
    let mut placed: HashMap<u64, (u128, u32, u32, u32)> = HashMap::new();
    for (&stream, ids) in store {
        for (i, &id) in ids.iter().enumerate() {
            let version = i as u32 + 1;
            let entry = placed.entry(id).or_insert((stream, version, version, 0));
            if entry.0 != stream || entry.2 + 1 < version {
                violations.push(format!(
                    "operation {id}'s events are not one run: stream {stream} version {version}"
                ));
            }
            entry.2 = version;
            entry.3 += 1;
        }
    }
    for (&id, &(stream, first, last, count)) in &placed {
        let Some(op) = by_id.get(&id) else {
            violations.push(format!(
                "stream {stream} versions {first}..={last}: operation {id} was never invoked"
            ));
            continue;
        };
        match (&op.kind, &op.outcome) {
            (
                Kind::Append {
                    stream: s, events, ..
                },
                outcome,
            ) => {
                if *s != stream {
                    violations.push(format!(
                        "operation {id} for stream {s} is in stream {stream}"
                    ));
                }
                if count != *events || last + 1 - first != count {
                    violations.push(format!(
                        "operation {id} appended {events} events; {count} are in the store"
                    ));
                }
                match outcome {
                    Outcome::Appended { first: f, last: l } if (*f, *l) != (first, last) => {
                        violations.push(format!(
                            "operation {id} was acknowledged at versions {f}..={l} of stream \
                             {stream}, and is at {first}..={last}"
                        ))
                    }
                    Outcome::Conflict { actual } => violations.push(format!(
                        "operation {id} was refused (the stream at {actual}), and is in the \
                         store at {first}..={last}"
                    )),
                    _ => {}
                }
            }
            (Kind::Read { .. }, _) => {
                violations.push(format!("read {id} is in the store as an append"))
            }
        }
    }
    // Every acknowledged append is in the store, and an Exact one where it expected.
    let mut given: HashMap<(u128, u32), u64> = HashMap::new();
    for op in history {
        let Kind::Append {
            stream, expected, ..
        } = op.kind
        else {
            continue;
        };
        if let Outcome::Appended { first, last } = op.outcome {
            if !placed.contains_key(&op.id) {
                violations.push(format!(
                    "operation {} was acknowledged at versions {first}..={last} of stream \
                     {stream}, and is not in the store",
                    op.id
                ));
            }
            if let Some(e) = expected
                && first != e + 1
            {
                violations.push(format!(
                    "operation {} expected version {e} and was given {first}",
                    op.id
                ));
            }
            for v in first..=last {
                if let Some(other) = given.insert((stream, v), op.id) {
                    violations.push(format!(
                        "version {v} of stream {stream} was given to operations {other} and {}",
                        op.id
                    ));
                }
            }
        }
        if let (Outcome::Conflict { actual }, Some(e)) = (&op.outcome, expected)
            && *actual == e
        {
            violations.push(format!(
                "operation {} was refused as a conflict with the version it expected ({e})",
                op.id
            ));
        }
    }
    // Per stream, the appends that took effect, in version order.
    let mut effective: BTreeMap<u128, Vec<(u32, u32, &Operation)>> = BTreeMap::new();
    for (&id, &(stream, first, last, _)) in &placed {
        if let Some(op) = by_id.get(&id) {
            effective.entry(stream).or_default().push((first, last, op));
        }
    }
    for appends in effective.values_mut() {
        appends.sort_by_key(|a| a.0);
    }
    // Real time: an append that completed before another was invoked holds lower versions.
    for (stream, appends) in &effective {
        // The latest completion among the appends of lower versions, swept in version order,
        // against each append's invocation, would miss nothing but cost a sort; the pairwise
        // check over the few hundred appends of a stream is plain.
        for (i, a) in appends.iter().enumerate() {
            let Some(done) = a.2.completed else { continue };
            for b in &appends[..i] {
                if b.2.invoked > done {
                    violations.push(format!(
                        "stream {stream}: operation {} (versions {}..={}) was invoked after \
                         operation {} (versions {}..={}) completed, and holds lower versions",
                        b.2.id, b.0, b.1, a.2.id, a.0, a.1
                    ));
                }
            }
        }
    }
    // Reads and conflicts: the head they saw.
    let mut session_heads: HashMap<(u64, u128), (u32, u64)> = HashMap::new();
    let mut observed: Vec<&Operation> = history
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Read { .. } | Outcome::Conflict { .. }))
        .collect();
    observed.sort_by_key(|o| o.invoked);
    for op in observed {
        let (stream, head, what) = match (&op.kind, &op.outcome) {
            (Kind::Read { stream }, Outcome::Read { version }) => (*stream, *version, "read"),
            (Kind::Append { stream, .. }, Outcome::Conflict { actual }) => {
                (*stream, *actual, "conflict")
            }
            _ => {
                violations.push(format!(
                    "operation {} has an outcome of another kind",
                    op.id
                ));
                continue;
            }
        };
        let Some(completed) = op.completed else {
            continue;
        };
        let appends = effective.get(&stream).map(Vec::as_slice).unwrap_or(&[]);
        if head > 0 {
            match appends.iter().find(|a| a.0 <= head && head <= a.1) {
                None => violations.push(format!(
                    "{what} {} saw stream {stream} at version {head}, which no append holds",
                    op.id
                )),
                Some(a) if a.1 != head => violations.push(format!(
                    "{what} {} saw stream {stream} at version {head}, in the middle of \
                     operation {}'s batch ({}..={})",
                    op.id, a.2.id, a.0, a.1
                )),
                Some(a) if a.2.invoked > completed => violations.push(format!(
                    "{what} {} saw version {head} of stream {stream} before operation {} that \
                     wrote it was invoked",
                    op.id, a.2.id
                )),
                Some(_) => {}
            }
        }
        if let Some(stale) = appends
            .iter()
            .filter(|a| a.2.completed.is_some_and(|c| c < op.invoked) && a.1 > head)
            .max_by_key(|a| a.1)
        {
            violations.push(format!(
                "{what} {} saw stream {stream} at version {head}, after operation {} had \
                 completed at version {}",
                op.id, stale.2.id, stale.1
            ));
        }
        let key = (op.session, stream);
        if let Some(&(before, by)) = session_heads.get(&key)
            && head < before
        {
            violations.push(format!(
                "session {}: {what} {} saw stream {stream} at version {head} after operation \
                 {by} saw it at {before}",
                op.session, op.id
            ));
        }
        let seen = session_heads.entry(key).or_insert((head, op.id));
        if head >= seen.0 {
            *seen = (head, op.id);
        }
    }
    violations
}

/// The streams the operations share.
pub const STREAMS: u64 = 3;

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn config(dir: &Path) -> StorageConfig {
    StorageConfig {
        path: dir.to_path_buf(),
        ..Default::default()
    }
}

/// The child: THREADS threads, each making OPS operations, writing a line before invoking
/// each and one with its answer. Operation ids: `process * 1e9 + thread * 1e6 + n`.
pub fn child(dir: &Path, process: u64, threads: u64, ops: u64) -> Result<(), String> {
    let storage = Storage::open(config(dir)).map_err(|e| format!("open: {e}"))?;
    let writer = Writer::<Entry>::new(storage.clone());
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let say = |out: &Mutex<std::io::Stdout>, line: String| {
        let mut out = crate::lock(out);
        // The parent may have killed us; then nobody listens.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            std::process::exit(0);
        }
    };
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (storage, writer, out) = (storage.clone(), writer.clone(), out.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let mut rng = Rng::new(process * 7_919 + t + 1);
                let session = process * 1_000 + t;
                let mut known: HashMap<u128, u32> = HashMap::new();
                for n in 0..ops {
                    let id = process * 1_000_000_000 + t * 1_000_000 + n;
                    let stream = u128::from(rng.below(STREAMS) + 1);
                    match rng.below(3) {
                        0 => {
                            say(
                                &out,
                                format!("I {id} {session} R {stream} - 0 {}", monotonic_ns()),
                            );
                            let txn = storage.read_txn().map_err(|e| e.to_string())?;
                            let v = storage
                                .stream_version(&txn, stream)
                                .map_err(|e| e.to_string())?;
                            drop(txn);
                            say(&out, format!("R {id} {v} {}", monotonic_ns()));
                            known.insert(stream, v);
                        }
                        kind => {
                            let events = 1 + rng.below(3) as u32;
                            let expected = match kind {
                                1 => {
                                    ExpectedVersion::Exact(known.get(&stream).copied().unwrap_or(0))
                                }
                                _ => ExpectedVersion::Auto,
                            };
                            let exp = match expected {
                                ExpectedVersion::Exact(e) => e.to_string(),
                                _ => "-".to_string(),
                            };
                            let entries: Vec<Entry> = (0..events)
                                .map(|k| Entry {
                                    run: process,
                                    op: id,
                                    k,
                                    body: Vec::new(),
                                })
                                .collect();
                            say(
                                &out,
                                format!(
                                    "I {id} {session} A {stream} {exp} {events} {}",
                                    monotonic_ns()
                                ),
                            );
                            match writer.commit(Append::stream(stream, expected, &entries)) {
                                Ok(answers) => {
                                    let first = answers.first().map_or(0, |a| a.version);
                                    let last = answers.last().map_or(0, |a| a.version);
                                    say(&out, format!("A {id} {first} {last} {}", monotonic_ns()));
                                    known.insert(stream, last);
                                }
                                Err(Error::ConcurrencyConflict { actual, .. }) => {
                                    say(&out, format!("C {id} {actual} {}", monotonic_ns()));
                                    known.insert(stream, actual);
                                }
                                Err(e) => return Err(format!("append {id}: {e}")),
                            }
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "a thread panicked".to_string())??;
    }
    Ok(())
}

/// Reads one line of a child into the history.
fn record(line: &str, ops: &mut HashMap<u64, Operation>) -> Result<(), String> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let n = |i: usize| -> Result<u64, String> {
        f.get(i)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("a bad line from a child: {line:?}"))
    };
    match f.first().copied() {
        Some("I") => {
            let kind = match f.get(3).copied() {
                Some("R") => Kind::Read {
                    stream: u128::from(n(4)?),
                },
                Some("A") => Kind::Append {
                    stream: u128::from(n(4)?),
                    expected: match f.get(5).copied() {
                        Some("-") => None,
                        _ => Some(n(5)? as u32),
                    },
                    events: n(6)? as u32,
                },
                _ => return Err(format!("a bad line from a child: {line:?}")),
            };
            ops.insert(
                n(1)?,
                Operation {
                    id: n(1)?,
                    session: n(2)?,
                    kind,
                    invoked: n(7)?,
                    completed: None,
                    outcome: Outcome::Unknown,
                },
            );
        }
        Some(tag @ ("A" | "C" | "R")) => {
            let op = ops
                .get_mut(&n(1)?)
                .ok_or_else(|| format!("an answer to an operation never invoked: {line:?}"))?;
            let (outcome, at) = match tag {
                "A" => (
                    Outcome::Appended {
                        first: n(2)? as u32,
                        last: n(3)? as u32,
                    },
                    n(4)?,
                ),
                "C" => (
                    Outcome::Conflict {
                        actual: n(2)? as u32,
                    },
                    n(3)?,
                ),
                _ => (
                    Outcome::Read {
                        version: n(2)? as u32,
                    },
                    n(3)?,
                ),
            };
            op.outcome = outcome;
            op.completed = Some(at);
        }
        _ => return Err(format!("a bad line from a child: {line:?}")),
    }
    Ok(())
}

/// What a history run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub operations: u64,
    pub acknowledged: u64,
    pub conflicts: u64,
    pub reads: u64,
    /// Operations whose answer was lost to a kill.
    pub unknown: u64,
    /// Of those, the appends that took effect anyway.
    pub unknown_applied: u64,
    pub kills: u64,
    pub processes: u64,
    pub violations: Vec<String>,
}

/// Runs `processes` children at once, each with `threads` threads of `ops` operations, and
/// kills one at random `kills` times (starting a new one each time), then checks.
pub fn run(
    exe: &Path,
    dir: &Path,
    processes: u64,
    threads: u64,
    ops: u64,
    kills: u64,
    seed: u64,
) -> Result<Report, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let store = dir.join("store");
    drop(Storage::open(config(&store)).map_err(|e| format!("open: {e}"))?);
    let history: Arc<Mutex<HashMap<u64, Operation>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut rng = Rng::new(seed);
    let mut next_id = 1u64;
    let spawn = |id: u64| -> Result<(std::process::Child, std::thread::JoinHandle<()>), String> {
        let mut child = Command::new(exe)
            .args([
                "history-child",
                &id.to_string(),
                &threads.to_string(),
                &ops.to_string(),
            ])
            .arg(&store)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (history, errors) = (history.clone(), errors.clone());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Err(e) = record(&line, &mut crate::lock(&history)) {
                    crate::lock_push(&errors, e);
                }
            }
        });
        Ok((child, reader))
    };
    let mut running = Vec::new();
    for _ in 0..processes {
        running.push(spawn(next_id)?);
        next_id += 1;
    }
    let mut report = Report {
        processes,
        ..Report::default()
    };
    while report.kills < kills {
        std::thread::sleep(Duration::from_millis(20 + rng.below(180)));
        let i = rng.below(running.len() as u64) as usize;
        let (mut child, reader) = running.swap_remove(i);
        let _ = child.kill();
        let _ = child.wait();
        let _ = reader.join();
        report.kills += 1;
        running.push(spawn(next_id)?);
        next_id += 1;
        report.processes += 1;
    }
    for (mut child, reader) in running {
        let status = child.wait().map_err(|e| format!("wait: {e}"))?;
        let _ = reader.join();
        if !status.success() {
            crate::lock_push(&errors, format!("a child ended with {status}"));
        }
    }
    // The final store.
    let storage = Storage::open(config(&store)).map_err(|e| format!("reopen: {e}"))?;
    let reader = Reader::<Entry>::new(storage.clone());
    let txn = storage.read_txn().map_err(|e| e.to_string())?;
    let mut store_ids = Final::new();
    for s in 1..=STREAMS {
        let stream = u128::from(s);
        let mut ids = Vec::new();
        for (i, e) in reader.read_stream(&txn, stream, 1).enumerate() {
            let e = e.map_err(|e| format!("stream {stream}: {e}"))?;
            if e.version() != i as u32 + 1 {
                crate::lock_push(
                    &errors,
                    format!(
                        "stream {stream}: version {} at place {}",
                        e.version(),
                        i + 1
                    ),
                );
            }
            ids.push(e.op.to_native());
        }
        store_ids.insert(stream, ids);
    }
    let history: Vec<Operation> = crate::lock(&history).values().cloned().collect();
    for op in &history {
        report.operations += 1;
        match op.outcome {
            Outcome::Appended { .. } => report.acknowledged += 1,
            Outcome::Conflict { .. } => report.conflicts += 1,
            Outcome::Read { .. } => report.reads += 1,
            Outcome::Unknown => {
                report.unknown += 1;
                if store_ids.values().any(|ids| ids.contains(&op.id)) {
                    report.unknown_applied += 1;
                }
            }
        }
    }
    report.violations = crate::lock(&errors).clone();
    report.violations.extend(check(&history, &store_ids));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(
        id: u64,
        stream: u128,
        expected: Option<u32>,
        events: u32,
        span: (u64, u64),
        outcome: Outcome,
    ) -> Operation {
        Operation {
            id,
            session: id,
            kind: Kind::Append {
                stream,
                expected,
                events,
            },
            invoked: span.0,
            completed: (outcome != Outcome::Unknown).then_some(span.1),
            outcome,
        }
    }

    fn read(id: u64, session: u64, stream: u128, span: (u64, u64), version: u32) -> Operation {
        Operation {
            id,
            session,
            kind: Kind::Read { stream },
            invoked: span.0,
            completed: Some(span.1),
            outcome: Outcome::Read { version },
        }
    }

    /// A valid history: two appends to stream 1 (the second a batch of 2, `Exact(1)`), a
    /// conflict, reads, and an append whose answer was lost but which took effect.
    fn valid() -> (Vec<Operation>, Final) {
        let history = vec![
            append(
                1,
                1,
                None,
                1,
                (0, 10),
                Outcome::Appended { first: 1, last: 1 },
            ),
            append(
                2,
                1,
                Some(1),
                2,
                (20, 30),
                Outcome::Appended { first: 2, last: 3 },
            ),
            append(3, 1, Some(0), 1, (25, 35), Outcome::Conflict { actual: 3 }),
            read(4, 100, 1, (5, 15), 1),
            read(5, 100, 1, (40, 45), 3),
            append(6, 1, None, 1, (50, 0), Outcome::Unknown),
            read(7, 101, 1, (60, 65), 4),
            append(8, 2, None, 1, (70, 0), Outcome::Unknown),
        ];
        let store = Final::from([(1, vec![1, 2, 2, 6]), (2, vec![])]);
        (history, store)
    }

    #[test]
    fn a_valid_history_passes() {
        let (history, store) = valid();
        assert_eq!(check(&history, &store), Vec::<String>::new());
    }

    /// Each planted violation is found, and named.
    #[test]
    fn planted_violations_are_found() {
        type Plant = Box<dyn Fn(&mut Vec<Operation>, &mut Final)>;
        let cases: Vec<(&str, Plant)> = vec![
            (
                "is not in the store",
                Box::new(|_, s| {
                    s.insert(1, vec![1]);
                }),
            ),
            (
                "was given to operations",
                Box::new(|h, _| {
                    h.push(append(
                        9,
                        1,
                        None,
                        1,
                        (80, 90),
                        Outcome::Appended { first: 1, last: 1 },
                    ));
                }),
            ),
            (
                "expected version 1 and was given 1",
                Box::new(|h, s| {
                    h.push(append(
                        9,
                        2,
                        Some(1),
                        1,
                        (80, 90),
                        Outcome::Appended { first: 1, last: 1 },
                    ));
                    s.insert(2, vec![9]);
                }),
            ),
            (
                "was refused (the stream at",
                Box::new(|_, s| {
                    s.get_mut(&1).unwrap().push(3);
                }),
            ),
            (
                "was never invoked",
                Box::new(|_, s| {
                    s.get_mut(&2).unwrap().push(77);
                }),
            ),
            (
                "in the middle of",
                Box::new(|h, _| {
                    h[4] = read(5, 100, 1, (40, 45), 2);
                }),
            ),
            (
                "after operation 2 had completed at version 3",
                Box::new(|h, _| {
                    h[6] = read(7, 101, 1, (60, 65), 1);
                }),
            ),
            (
                "before operation 6 that wrote it was invoked",
                Box::new(|h, _| {
                    h[4] = read(5, 100, 1, (40, 45), 4);
                }),
            ),
            (
                "holds lower versions",
                Box::new(|h, _| {
                    // Operation 2 invoked after operation 6 completed, yet holds lower versions.
                    h[5] = append(
                        6,
                        1,
                        None,
                        1,
                        (11, 12),
                        Outcome::Appended { first: 4, last: 4 },
                    );
                }),
            ),
            (
                "which no append holds",
                Box::new(|h, _| {
                    h[6] = read(7, 101, 1, (60, 65), 9);
                }),
            ),
            (
                "2 are in the store",
                Box::new(|_, s| {
                    s.insert(2, vec![8, 8]);
                }),
            ),
            (
                "refused as a conflict with the version it expected",
                Box::new(|h, _| {
                    h[2] = append(3, 1, Some(3), 1, (25, 35), Outcome::Conflict { actual: 3 });
                }),
            ),
        ];
        for (want, plant) in cases {
            let (mut history, mut store) = valid();
            plant(&mut history, &mut store);
            let found = check(&history, &store);
            assert!(
                found.iter().any(|v| v.contains(want)),
                "planted {want:?}, found {found:#?}"
            );
        }
    }

    #[test]
    fn a_session_that_sees_a_head_go_back_is_a_violation() {
        let (mut history, store) = valid();
        // Session 100 saw 3, then 1 (a read that is also stale, but the session rule names it).
        history.push(read(10, 100, 1, (46, 47), 1));
        let found = check(&history, &store);
        assert!(
            found.iter().any(|v| v.contains("session 100")),
            "{found:#?}"
        );
    }
}
