//! What a processor costs and how fast it follows, figures in docs/performance.md.
//!
//! ```sh
//! cargo run --release -p varvedb --example processor_probe -- catchup [events]   # default 1,000,000
//! cargo run --release -p varvedb --example processor_probe -- latency [appends]  # default 2,000
//! cargo run --release -p varvedb --example processor_probe -- projection [events] # default 1,000,000
//! cargo run --release -p varvedb --example processor_probe -- appenders [seconds] # default 3
//! ```
//! `projection` times an exactly-once projection (a total per stream in its model) from the
//! start to the head. `appenders` runs 8 threads of durable single appends for the given time,
//! without and then with a projection following them, and prints both rates.
//! `catchup` fills a store (`NoSync`, batches of 1,000) and times a processor from its start to
//! the head. `latency` makes durable single appends one after the other and measures, in the
//! handler, the time from just before each `append` call to the handler seeing the event; it
//! prints p50, p99 and the maximum.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use varvedb::{
    Durability, EventHandler, EventRef, ExpectedVersion, HandlerError, Model, OwnedEvent,
    Processor, ProcessorOptions, Projection, ProjectionHandler, Reader, Storage, StorageConfig,
    Writer,
};

/// A total per stream, in the model.
struct Totals;

impl ProjectionHandler<Tick> for Totals {
    fn apply(
        &mut self,
        event: &OwnedEvent<Tick>,
        model: &mut Model<'_, '_>,
    ) -> Result<(), HandlerError> {
        let key = event.stream_id.to_be_bytes();
        let sum = model
            .get(&key)?
            .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap_or([0; 8])));
        model.put(&key, &(sum + event.sent_ns.to_native()).to_le_bytes())?;
        Ok(())
    }
}

/// Appends `n` events in batches of 1,000 over 64 streams; returns the head.
fn fill(writer: &Writer<Tick>, n: u64) -> u64 {
    for b in 0..n / 1000 {
        let batch: Vec<Tick> = (0..1000)
            .map(|i| Tick {
                sent_ns: b * 1000 + i + 1,
                note: "x".repeat(100),
            })
            .collect();
        writer
            .append_batch((b % 64) as u128, ExpectedVersion::Auto, &batch)
            .unwrap();
    }
    let storage = writer.storage();
    storage.last_seq(&storage.read_txn().unwrap()).unwrap()
}

/// 8 threads of durable single appends for `seconds`; returns appends per second.
fn appenders(storage: &Storage, seconds: u64) -> f64 {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8u128)
        .map(|t| {
            let writer = Writer::<Tick>::new(storage.clone());
            let (stop, count) = (Arc::clone(&stop), Arc::clone(&count));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let tick = Tick {
                        sent_ns: 1,
                        note: "x".repeat(100),
                    };
                    writer
                        .append(1000 + t, ExpectedVersion::Auto, &tick)
                        .unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

#[derive(rkyv::Archive, rkyv::Serialize, varvedb::Event)]
struct Tick {
    sent_ns: u64,
    note: String,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

struct Count(u64);

impl EventHandler<Tick> for Count {
    fn handle(&mut self, event: &EventRef<'_, Tick>) -> Result<(), HandlerError> {
        self.0 += u64::from(event.sent_ns.to_native() > 0);
        Ok(())
    }
}

struct Latency(Arc<Mutex<Vec<u64>>>);

impl EventHandler<Tick> for Latency {
    fn handle(&mut self, event: &EventRef<'_, Tick>) -> Result<(), HandlerError> {
        let took = now_ns().saturating_sub(event.sent_ns.to_native());
        self.0.lock().unwrap().push(took);
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map_or("catchup", String::as_str).to_string();
    let n: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(match mode.as_str() {
            "latency" => 2_000,
            _ => 1_000_000,
        });
    let dir = tempfile::tempdir_in(".").unwrap();
    let storage = Storage::open(StorageConfig {
        path: dir.path().into(),
        durability: if mode == "catchup" || mode == "projection" {
            Durability::NoSync
        } else {
            Durability::Sync
        },
        ..Default::default()
    })
    .unwrap();
    let writer = Writer::<Tick>::new(storage.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let options = ProcessorOptions {
        checkpoint_every_events: 10_000,
        checkpoint_every_ms: 1_000,
        batch_events_max: 10_000,
        ..Default::default()
    };
    match mode.as_str() {
        "projection" => {
            let head = fill(&writer, n);
            let p = Projection::new(Reader::<Tick>::new(storage.clone()), Totals, "totals");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let start = Instant::now();
            let task = rt.spawn(p.run_until(async move {
                let _ = stopped.await;
            }));
            rt.block_on(async {
                while storage.consumer_position("totals").unwrap() != Some(head) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
            let took = start.elapsed();
            stop.send(()).unwrap();
            rt.block_on(task).unwrap().unwrap();
            println!(
                "exactly-once projection: {head} events in {:.2} s: {:.0} events/s",
                took.as_secs_f64(),
                head as f64 / took.as_secs_f64()
            );
        }
        "appenders" => {
            let without = appenders(&storage, n);
            let p = Projection::new(Reader::<Tick>::new(storage.clone()), Totals, "totals");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = rt.spawn(p.run_until(async move {
                let _ = stopped.await;
            }));
            let with = appenders(&storage, n);
            stop.send(()).unwrap();
            rt.block_on(task).unwrap().unwrap();
            println!(
                "8 durable appenders: {without:.0} appends/s alone, {with:.0} with a projection following ({:.2}x)",
                with / without
            );
        }
        "catchup" => {
            let head = fill(&writer, n);
            let p = Processor::new(
                Reader::<Tick>::new(storage.clone()),
                Count(0),
                "probe",
                storage.subscribe(),
            )
            .with_options(options);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let start = Instant::now();
            let task = rt.spawn(p.run_until(async move {
                let _ = stopped.await;
            }));
            rt.block_on(async {
                while storage.consumer_position("probe").unwrap() != Some(head) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
            let took = start.elapsed();
            stop.send(()).unwrap();
            let counted = rt.block_on(task).unwrap().unwrap().0;
            assert_eq!(counted, head);
            println!(
                "catch-up: {head} events in {:.2} s: {:.0} events/s",
                took.as_secs_f64(),
                head as f64 / took.as_secs_f64()
            );
        }
        _ => {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let p = Processor::new(
                Reader::<Tick>::new(storage.clone()),
                Latency(Arc::clone(&seen)),
                "probe",
                storage.subscribe(),
            )
            .with_options(options);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = rt.spawn(p.run_until(async move {
                let _ = stopped.await;
            }));
            for _ in 0..n {
                let tick = Tick {
                    sent_ns: now_ns(),
                    note: String::new(),
                };
                writer.append(1, ExpectedVersion::Auto, &tick).unwrap();
                std::thread::sleep(Duration::from_micros(500));
            }
            while (seen.lock().unwrap().len() as u64) < n {
                std::thread::sleep(Duration::from_millis(1));
            }
            stop.send(()).unwrap();
            rt.block_on(task).unwrap().unwrap();
            let mut all = seen.lock().unwrap().clone();
            all.sort_unstable();
            let at =
                |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)] as f64 / 1e6;
            println!(
                "append to handler over {n} durable appends: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                at(0.5),
                at(0.99),
                at(1.0)
            );
        }
    }
}
