//! A real nats-server on a loopback port, with JetStream and a temporary store directory,
//! started and stopped by the test (installed by `scripts/nats.sh install` if missing).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use varvedb::{Append, AppendOptions, EventId, ExpectedVersion, Storage, StorageConfig, Writer};

pub const KEY: [u8; 32] = [42; 32];

/// The nats-server binary, installed from Debian's packages by the project's script if the
/// machine has none.
fn server_binary() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/nats.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("install")
        .output()
        .expect("run scripts/nats.sh");
    assert!(
        out.status.success(),
        "scripts/nats.sh install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub struct NatsServer {
    binary: PathBuf,
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let mut server = NatsServer {
            binary: server_binary(),
            // Chosen by the server at its first start, and kept for its restarts.
            port: 0,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server: on the port it had, or, the first time, on one it picks itself and
    /// reports in its ports file (a port chosen here and released could be taken by another
    /// process before the server binds it).
    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("nats-server.log")).unwrap();
        let ports = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports).unwrap();
        let port = match self.port {
            0 => "-1".to_string(),
            p => p.to_string(),
        };
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "--ports_file_dir"])
            .arg(&ports)
            .arg("-sd")
            .arg(self.dir.path().join("js"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        let ports_file = ports.join(format!("nats-server_{}.ports", child.id()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let reported = loop {
            let text = std::fs::read_to_string(&ports_file).unwrap_or_default();
            let port = text
                .split("nats://")
                .nth(1)
                .and_then(|url| url.split(['"', ']']).next())
                .and_then(|hostport| hostport.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok());
            if let Some(port) = port {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not report its port: {}",
                std::fs::read_to_string(self.dir.path().join("nats-server.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            self.port == 0 || self.port == reported,
            "restarted on another port"
        );
        self.port = reported;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the server dies at once, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `f` to completion on `rt`, or fails the test after two minutes: every test here is
/// bounded in time, whatever the server does.
pub fn bounded<F: std::future::Future>(rt: &tokio::runtime::Runtime, f: F) -> F::Output {
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), f)
            .await
            .expect("the test took more than two minutes")
    })
}

/// A TCP proxy on loopback in front of the server, whose network can be cut: every open
/// connection is dropped and new ones are closed at once, until it is healed.
pub struct Proxy {
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    pub fn start(rt: &tokio::runtime::Runtime, target: u16) -> Proxy {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy {
            port,
            cut: Default::default(),
            connections: Default::default(),
        };
        let (cut, connections) = (proxy.cut.clone(), proxy.connections.clone());
        rt.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if cut.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections.lock().unwrap().push(task.abort_handle());
            }
        });
        proxy
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Cuts the network: open connections drop, new ones are closed.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, varvedb::Event)]
pub struct Doc {
    pub n: u64,
    pub body: Vec<u8>,
}

pub fn doc(n: u64, len: usize) -> Doc {
    Doc {
        n,
        body: (0..len)
            .map(|i| (n as usize).wrapping_mul(31).wrapping_add(i) as u8)
            .collect(),
    }
}

pub fn config(dir: &Path, key: Option<[u8; 32]>) -> StorageConfig {
    StorageConfig {
        path: dir.into(),
        encryption_enabled: key.is_some(),
        master_key: key,
        ..Default::default()
    }
}

/// Appends `n` events of every kind to `storage`: lone appends, batches (one of 600 events,
/// across three packs), atomic appends to several streams, event ids with metadata and
/// correlation, and blobs.
pub fn fill(storage: &Storage, n: u64) {
    let w = Writer::<Doc>::new(storage.clone());
    let mut written = storage.last_seq(&storage.read_txn().unwrap()).unwrap();
    let target = written + n;
    let mut round = 0u64;
    while written < target {
        let left = target - written;
        round += 1;
        let stream = 1 + u128::from(round % 97);
        let landed = match round % 5 {
            0 if left >= 600 => {
                let batch: Vec<_> = (0..600).map(|i| doc(round + i, 24)).collect();
                w.append_batch(stream, ExpectedVersion::Auto, &batch)
                    .unwrap()
                    .len()
            }
            1 if left >= 30 => {
                let a: Vec<_> = (0..10).map(|i| doc(i, 16)).collect();
                let b: Vec<_> = (0..20).map(|i| doc(i, 16)).collect();
                w.commit(Append::stream(stream, ExpectedVersion::Auto, &a[..]).and(
                    stream + 1000,
                    ExpectedVersion::Auto,
                    &b[..],
                ))
                .unwrap()
                .len()
            }
            2 => {
                let options = AppendOptions::new()
                    .event_id(EventId::from_u128(u128::from(round) << 64 | 1))
                    .correlation_id(EventId::from_u128(7))
                    .metadata("tenant", format!("t{}", round % 7))
                    .metadata("note", "a&b=c ü");
                w.commit(
                    Append::event(stream, ExpectedVersion::Auto, &doc(round, 40)).options(options),
                )
                .map(|v| v[0])
                .unwrap();
                1
            }
            3 if round % 50 == 3 => {
                // A blob (over the 1 KiB threshold), sometimes the same content again.
                w.append(stream, ExpectedVersion::Auto, &doc(round % 3, 3000))
                    .unwrap();
                1
            }
            _ if left >= 100 => {
                let batch: Vec<_> = (0..100).map(|i| doc(round * 100 + i, 32)).collect();
                w.append_batch(stream, ExpectedVersion::Auto, &batch)
                    .unwrap()
                    .len()
            }
            _ => {
                w.append(stream, ExpectedVersion::Auto, &doc(round, 8))
                    .unwrap();
                1
            }
        };
        written += landed as u64;
    }
}

/// Asserts that `restored` holds `source`'s log: every record byte for byte, the same export,
/// and a clean verify.
pub fn assert_same_log(source: &Storage, restored: &Storage) {
    let a = varvedb::__bench::records(source).unwrap();
    let b = varvedb::__bench::records(restored).unwrap();
    assert_eq!(a.len(), b.len(), "event counts differ");
    for ((sa, ra), (sb, rb)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert!(ra == rb, "record {sa} differs");
    }
    let ta = source.read_txn().unwrap();
    let tb = restored.read_txn().unwrap();
    let ea: Vec<_> = source.export_events(&ta, 1).map(|e| e.unwrap()).collect();
    let eb: Vec<_> = restored.export_events(&tb, 1).map(|e| e.unwrap()).collect();
    for (x, y) in ea.iter().zip(&eb) {
        assert_eq!(
            (x.seq, &x.payload, &x.blob_ref, x.encrypted),
            (y.seq, &y.payload, &y.blob_ref, y.encrypted)
        );
    }
    let verified = restored.verify().unwrap();
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
}

/// The JetStream stream's message count and last sequence; (0, 0) while it does not exist.
/// Retries for a while if the server is not answering (just restarted).
pub async fn stream_state(url: &str, name: &str) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = async {
            let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
            let js = async_nats::jetstream::new(client);
            match js.get_stream(name).await {
                Ok(mut stream) => {
                    let info = stream.info().await.map_err(|e| e.to_string())?;
                    Ok((info.state.messages, info.state.last_sequence))
                }
                Err(e) => match e.kind() {
                    async_nats::jetstream::context::GetStreamErrorKind::JetStream(j)
                        if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND =>
                    {
                        Ok((0, 0))
                    }
                    _ => Err(e.to_string()),
                },
            }
        };
        match attempt.await {
            Ok(state) => return state,
            Err(e) => {
                assert!(Instant::now() < deadline, "the server does not answer: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
