//! What consumer groups cost and how fast they share and take over work; figures in
//! docs/performance.md ("Consumer groups").
//!
//! ```sh
//! cargo run --release -p varvedb --example group_probe -- scale [events]      # default 20,000
//! cargo run --release -p varvedb --example group_probe -- takeover [lease_ms] # default 5,000
//! cargo run --release -p varvedb --example group_probe -- appenders [seconds] # default 3
//! ```
//! `scale` fills a store (1,000 streams) and times a group of 1, 2 and 4 members (in one
//! process) from the start to the head, with a handler that spends 50 µs per event: busy (CPU)
//! and asleep (waiting, as on a network call). `takeover` runs two members; one's handler
//! blocks for good (a dead member: it renews nothing), and the probe times how long until the
//! other holds every partition. `appenders` runs 4 threads of durable single appends for the
//! given time with no consumer, with 4 plain processors, and with a group of 4 members, all
//! caught up and following, and prints the three rates.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use varvedb::{
    Durability, EventHandler, EventRef, ExpectedVersion, HandlerError, Processor, ProcessorOptions,
    Reader, Storage, StorageConfig, Writer,
};

#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
struct Reading {
    value: u64,
}

/// Spends `work` per event, busy or asleep; blocks for good once `die` is set.
struct Work {
    work: Duration,
    busy: bool,
    die: Option<Arc<AtomicBool>>,
    died_at: Arc<std::sync::Mutex<Option<Instant>>>,
    handled: Arc<AtomicU64>,
}

impl EventHandler<Reading> for Work {
    fn handle(&mut self, _event: &EventRef<'_, Reading>) -> Result<(), HandlerError> {
        if let Some(die) = &self.die
            && die.load(Ordering::SeqCst)
        {
            *self.died_at.lock().unwrap() = Some(Instant::now());
            loop {
                std::thread::park();
            }
        }
        if self.busy {
            let until = Instant::now() + self.work;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        } else if !self.work.is_zero() {
            std::thread::sleep(self.work);
        }
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn open(dir: &std::path::Path, durability: Durability) -> Storage {
    Storage::open(StorageConfig {
        path: dir.into(),
        durability,
        ..Default::default()
    })
    .unwrap()
}

fn fill(storage: &Storage, n: u64) -> u64 {
    let writer = Writer::<Reading>::new(storage.clone());
    for b in 0..n / 1000 {
        let events: Vec<Reading> = (0..1000)
            .map(|i| Reading {
                value: b * 1000 + i,
            })
            .collect();
        for (i, e) in events.iter().enumerate() {
            writer
                .append((i % 1000) as u128 + 1, ExpectedVersion::Auto, e)
                .unwrap();
        }
    }
    storage.last_seq(&storage.read_txn().unwrap()).unwrap()
}

type Member = tokio::task::JoinHandle<varvedb::Result<Work>>;

fn member(
    rt: &tokio::runtime::Runtime,
    storage: &Storage,
    name: &str,
    handler: Work,
    options: ProcessorOptions,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Member {
    let mut stop = stop.clone();
    let p = Processor::new(
        Reader::<Reading>::new(storage.clone()),
        handler,
        "probe",
        storage.subscribe(),
    )
    .with_options(options)
    .in_group(name);
    rt.spawn(p.run_until(async move {
        let _ = stop.wait_for(|s| *s).await;
    }))
}

fn work(work: Duration, busy: bool, handled: &Arc<AtomicU64>) -> Work {
    Work {
        work,
        busy,
        die: None,
        died_at: Arc::default(),
        handled: handled.clone(),
    }
}

fn scale(events: u64) {
    for busy in [true, false] {
        for members in [1usize, 2, 4] {
            let dir = tempfile::tempdir().unwrap();
            let storage = open(dir.path(), Durability::NoSync);
            let head = fill(&storage, events);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .max_blocking_threads(16)
                .enable_all()
                .build()
                .unwrap();
            let handled = Arc::new(AtomicU64::new(0));
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let started = Instant::now();
            let tasks: Vec<Member> = (0..members)
                .map(|i| {
                    member(
                        &rt,
                        &storage,
                        &format!("m{i}"),
                        work(Duration::from_micros(50), busy, &handled),
                        ProcessorOptions::default(),
                        &stop_rx,
                    )
                })
                .collect();
            while handled.load(Ordering::Relaxed) < head {
                std::thread::sleep(Duration::from_millis(2));
            }
            let secs = started.elapsed().as_secs_f64();
            stop_tx.send(true).unwrap();
            for t in tasks {
                rt.block_on(t).unwrap().unwrap();
            }
            println!(
                "scale {} members {members}: {head} events in {secs:.2} s: {:.0} events/s",
                if busy { "busy" } else { "asleep" },
                head as f64 / secs
            );
        }
    }
}

fn takeover(lease_ms: u64) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path(), Durability::NoSync);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let options = ProcessorOptions {
        group_lease_ms: lease_ms,
        ..Default::default()
    };
    let die = Arc::new(AtomicBool::new(false));
    let died_at = Arc::new(std::sync::Mutex::new(None));
    let mut dying = work(Duration::ZERO, false, &handled);
    dying.die = Some(die.clone());
    dying.died_at = died_at.clone();
    let _a = member(&rt, &storage, "dying", dying, options.clone(), &stop_rx);
    let _b = member(
        &rt,
        &storage,
        "survivor",
        work(Duration::ZERO, false, &handled),
        options,
        &stop_rx,
    );
    while storage.group_members("probe").unwrap().len() < 2
        || storage
            .group_members("probe")
            .unwrap()
            .iter()
            .any(|m| m.partitions.len() != 8)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    die.store(true, Ordering::SeqCst);
    // Events in every stream, so that the dying member meets one.
    let writer = Writer::<Reading>::new(storage.clone());
    for s in 0..64u128 {
        writer
            .append(s + 1, ExpectedVersion::Auto, &Reading { value: 1 })
            .unwrap();
    }
    let died = loop {
        if let Some(t) = *died_at.lock().unwrap() {
            break t;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    loop {
        let m = storage.group_members("probe").unwrap();
        if m.iter()
            .any(|m| m.name == "survivor" && m.partitions.len() == 16)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "takeover with a lease of {lease_ms} ms: every partition held by the survivor {:.0} ms \
         after the other member stopped renewing",
        died.elapsed().as_secs_f64() * 1000.0
    );
    // The dead member's task never ends: leave without waiting for it.
    std::process::exit(0);
}

fn appenders(seconds: u64) {
    for consumers in ["none", "processors", "group"] {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path(), Durability::Sync);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handled = Arc::new(AtomicU64::new(0));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks: Vec<Member> = Vec::new();
        for i in 0..4 {
            match consumers {
                "processors" => {
                    let mut stop = stop_rx.clone();
                    let p = Processor::new(
                        Reader::<Reading>::new(storage.clone()),
                        work(Duration::ZERO, false, &handled),
                        format!("plain-{i}"),
                        storage.subscribe(),
                    );
                    tasks.push(rt.spawn(p.run_until(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })));
                }
                "group" => tasks.push(member(
                    &rt,
                    &storage,
                    &format!("m{i}"),
                    work(Duration::ZERO, false, &handled),
                    ProcessorOptions::default(),
                    &stop_rx,
                )),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let appended = AtomicU64::new(0);
        let until = Instant::now() + Duration::from_secs(seconds);
        std::thread::scope(|s| {
            for t in 0..4u128 {
                let storage = storage.clone();
                let appended = &appended;
                s.spawn(move || {
                    let writer = Writer::<Reading>::new(storage);
                    let mut i = 0u64;
                    while Instant::now() < until {
                        writer
                            .append(
                                t * 1000 + u128::from(i % 100) + 1,
                                ExpectedVersion::Auto,
                                &Reading { value: i },
                            )
                            .unwrap();
                        i += 1;
                        appended.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        stop_tx.send(true).unwrap();
        for t in tasks {
            rt.block_on(t).unwrap().unwrap();
        }
        println!(
            "appenders with {consumers}: {:.0} durable appends/s",
            appended.load(Ordering::Relaxed) as f64 / seconds as f64
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |d: u64| args.get(1).and_then(|a| a.parse().ok()).unwrap_or(d);
    match args.first().map(String::as_str) {
        Some("scale") => scale(n(20_000)),
        Some("takeover") => takeover(n(5_000)),
        Some("appenders") => appenders(n(3)),
        _ => eprintln!(
            "usage: group_probe scale [events] | takeover [lease_ms] | appenders [seconds]"
        ),
    }
}
