//! Replication figures against a real nats-server on loopback (`docs/performance.md`,
//! "Replication to NATS JetStream"):
//!
//! 1. throughput: a store of N events (batches of 100, 100-byte payloads) published with
//!    `run_once`, then rebuilt with `restore`, in events per second;
//! 2. lag under load: a writer appends 10K events/s (a batch of 10 every millisecond) for
//!    D seconds while a replicator and a following restorer run; the lag of the server and of
//!    the replica behind the source is sampled every 2 ms, as time since the source committed
//!    the event the follower has reached.
//!
//! `cargo run --release -p varvedb-nats --example replication_bench -- [EVENTS] [SECONDS] [RATE]`
//! (defaults 200000, 10 and 10000). It starts its own nats-server with `scripts/nats.sh`.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use varvedb::{ExpectedVersion, Storage, StorageConfig, Writer};
use varvedb_nats::{Replicator, ReplicatorConfig, RestoreConfig, restore};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
struct Reading {
    sensor: u64,
    body: Vec<u8>,
}

fn reading(i: u64) -> Reading {
    Reading {
        sensor: i,
        body: vec![(i % 251) as u8; 84],
    }
}

struct Server(u32);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let events: u64 = args.first().map_or(Ok(200_000), |a| a.parse())?;
    let seconds: u64 = args.get(1).map_or(Ok(10), |a| a.parse())?;
    let rate: u64 = args.get(2).map_or(Ok(10_000), |a| a.parse())?;

    let tmp = tempfile::tempdir()?;
    // Port 0: the server picks a free port itself and reports it ("PID PORT").
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/nats.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(["start", "0"])
        .arg(tmp.path().join("nats"))
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    let mut fields = stdout.split_whitespace();
    let _server = Server(fields.next().ok_or("nats.sh printed no pid")?.parse()?);
    let port: u16 = fields.next().ok_or("nats.sh printed no port")?.parse()?;
    let url = format!("nats://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("nats-server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let open = |name: &str| {
        Storage::open(StorageConfig {
            path: tmp.path().join(name),
            ..Default::default()
        })
    };

    // 1. Throughput.
    let src = open("src")?;
    let w = Writer::<Reading>::new(src.clone());
    let mut i = 0;
    while i < events {
        let batch: Vec<_> = (i..i + 100).map(reading).collect();
        w.append_batch(
            1 + u128::from(i / 100 % 1000),
            ExpectedVersion::Auto,
            &batch,
        )?;
        i += 100;
    }
    let replicator = Replicator::new(src.clone(), ReplicatorConfig::new(&url, "BENCH"))?;
    let t = Instant::now();
    let report = rt.block_on(replicator.run_once())?;
    let publish_secs = t.elapsed().as_secs_f64();
    let dst = open("dst")?;
    let t = Instant::now();
    let restored = rt.block_on(restore(
        &dst,
        &RestoreConfig::new(&url, "BENCH"),
        std::future::pending(),
    ))?;
    let restore_secs = t.elapsed().as_secs_f64();
    println!(
        "throughput: {} events replicated in {:.2} s = {:.0} events/s; {} restored in {:.2} s = {:.0} events/s",
        report.published,
        publish_secs,
        report.published as f64 / publish_secs,
        restored.applied,
        restore_secs,
        restored.applied as f64 / restore_secs
    );

    // The floor in the same run: async-nats alone publishing as many messages of the same
    // payload size, each with a message id and an expected last sequence, 512 in flight.
    let floor_secs = rt.block_on(async {
        let client = async_nats::connect(&url).await?;
        let js = async_nats::jetstream::new(client);
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "FLOOR".into(),
            subjects: vec!["floor.>".into()],
            ..Default::default()
        })
        .await?;
        let t = Instant::now();
        let mut acks = std::collections::VecDeque::new();
        for seq in 1..=events {
            let message = async_nats::jetstream::message::PublishMessage::build()
                .payload(vec![(seq % 251) as u8; 100].into())
                .message_id(format!("floor-{seq}"))
                .expected_last_sequence(seq - 1);
            acks.push_back(
                js.send_publish(format!("floor.{}", seq % 1000), message)
                    .await?,
            );
            if acks.len() >= 512
                && let Some(ack) = acks.pop_front()
            {
                ack.await?;
            }
        }
        for ack in acks {
            ack.await?;
        }
        Ok::<_, Box<dyn std::error::Error>>(t.elapsed().as_secs_f64())
    })?;
    println!(
        "floor: async-nats alone publishes {events} messages in {floor_secs:.2} s = {:.0} messages/s; the replicator runs at {:.2}x that",
        events as f64 / floor_secs,
        floor_secs / publish_secs
    );

    // 2. Lag under a steady load.
    let src = open("live")?;
    let replica = open("live-replica")?;
    let replicator = Replicator::new(
        src.clone(),
        ReplicatorConfig::new(&url, "LIVE").subject_prefix("live"),
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // Prime the stream so that the restorer finds it.
    Writer::<Reading>::new(src.clone()).append(1, ExpectedVersion::Auto, &reading(0))?;
    rt.block_on(replicator.run_once())?;
    let replicating = rt.spawn({
        let replicator = replicator.clone();
        let stop = stopped(stop_rx.clone());
        async move { replicator.run_until(stop).await }
    });
    let restoring = rt.spawn({
        let replica = replica.clone();
        let url = url.clone();
        let stop = stopped(stop_rx.clone());
        async move {
            restore(
                &replica,
                &RestoreConfig::new(url, "LIVE").follow(true),
                stop,
            )
            .await
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    // (time since start, source last seq) after each append.
    let writer = std::thread::spawn({
        let src = src.clone();
        let stop = stop.clone();
        move || -> Result<Vec<(f64, u64)>, varvedb::Error> {
            let w = Writer::<Reading>::new(src);
            let per_tick = (rate / 1000).max(1);
            let mut commits = Vec::new();
            let mut tick = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = start + Duration::from_micros(tick * 1000 * per_tick * 1000 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let batch: Vec<_> = (0..per_tick)
                    .map(|k| reading(tick * per_tick + k))
                    .collect();
                let a =
                    w.append_batch(2 + u128::from(tick % 500), ExpectedVersion::Auto, &batch)?;
                commits.push((start.elapsed().as_secs_f64(), a[a.len() - 1].seq));
                tick += 1;
            }
            Ok(commits)
        }
    });
    // Samples of (time, replica last seq) and (time, server last seq).
    let mut replica_samples = Vec::new();
    let mut server_samples = Vec::new();
    let mut stream = rt.block_on(async {
        let client = async_nats::connect(&url).await?;
        let js = async_nats::jetstream::new(client);
        Ok::<_, Box<dyn std::error::Error>>(js.get_stream("LIVE").await?)
    })?;
    let end = start + Duration::from_secs(seconds);
    let mut n = 0u64;
    while Instant::now() < end {
        let r = replica.last_seq(&replica.read_txn()?)?;
        replica_samples.push((start.elapsed().as_secs_f64(), r));
        if n.is_multiple_of(10) {
            let s = rt.block_on(stream.info())?.state.last_sequence;
            server_samples.push((start.elapsed().as_secs_f64(), s));
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    let commits = writer.join().map_err(|_| "the writer panicked")??;
    stop_tx.send(true)?;
    rt.block_on(replicating)??;
    rt.block_on(restoring)??;
    let appended = commits.last().map_or(0, |c| c.1);
    let elapsed = commits.last().map_or(1.0, |c| c.0);
    // The lag of a sample (t, seq): t minus the time the source committed the first event
    // past `seq` (the oldest event the follower does not have yet); 0 when it has them all.
    let lag = |samples: &[(f64, u64)]| -> Vec<f64> {
        let mut lags: Vec<f64> = samples
            .iter()
            .filter(|(t, _)| *t > 1.0)
            .map(|&(t, seq)| {
                let missing = commits.partition_point(|c| c.1 <= seq);
                match commits.get(missing) {
                    Some(&(committed, _)) if committed <= t => (t - committed) * 1000.0,
                    _ => 0.0,
                }
            })
            .collect();
        lags.sort_by(f64::total_cmp);
        lags
    };
    let (rl, sl) = (lag(&replica_samples), lag(&server_samples));
    println!(
        "load: {} events appended in {:.1} s = {:.0} events/s (batches of {})",
        appended,
        elapsed,
        appended as f64 / elapsed,
        (rate / 1000).max(1)
    );
    println!(
        "lag of the JetStream stream: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
        percentile(&sl, 0.5),
        percentile(&sl, 0.99),
        sl.last().copied().unwrap_or(f64::NAN),
        sl.len()
    );
    println!(
        "lag of the following replica: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
        percentile(&rl, 0.5),
        percentile(&rl, 0.99),
        rl.last().copied().unwrap_or(f64::NAN),
        rl.len()
    );
    Ok(())
}
