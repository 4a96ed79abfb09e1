//! `varvedb replicate` and `varvedb restore` against a real nats-server on loopback, started
//! by `scripts/nats.sh` (which installs it if missing) and stopped when the test ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Server(u32);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

fn start_server(dir: &Path) -> (Server, u16) {
    // Port 0: the server picks a free port itself and reports it.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/nats.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(["start", "0"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut fields = stdout.split_whitespace().map(|f| f.parse::<u32>().unwrap());
    let (pid, port) = (fields.next().unwrap(), fields.next().unwrap() as u16);
    let server = Server(pid);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, port)
}

fn varvedb(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_varvedb"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn replicate_once_then_restore_gives_the_same_events() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, port) = start_server(&tmp.path().join("nats"));
    let url = format!("nats://127.0.0.1:{port}");
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    let (src, dst) = (src.to_str().unwrap(), dst.to_str().unwrap());
    assert!(varvedb(&["--path", src, "demo"]).0);
    // The demo's store is encrypted under its published key: new streams need it.
    let key = tmp.path().join("demo.key");
    std::fs::write(&key, b"varvedb demo key, never use it!!").unwrap();
    let key = key.to_str().unwrap();
    for i in 0..5 {
        let json = format!("{{\"n\":{i}}}");
        let (ok, _, err) = varvedb(&[
            "--path",
            src,
            "--key-file",
            key,
            "append",
            "--stream",
            "77",
            "--expect",
            "any",
            "--type",
            "Noted",
            "--json",
            &json,
        ]);
        assert!(ok, "{err}");
    }
    let (ok, out, err) = varvedb(&[
        "--path",
        src,
        "replicate",
        "--to",
        &url,
        "--stream",
        "CLI",
        "--once",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("13 events published"), "{out}");
    let (ok, out, err) = varvedb(&["restore", "--from", &url, "--stream", "CLI", dst]);
    assert!(ok, "{err}");
    assert!(out.contains("restored 13 events"), "{out}");
    assert!(varvedb(&["--path", dst, "verify"]).0);
    // The same events, envelope and payload: the exports' event lines are equal.
    let events = |path: &str| -> Vec<String> {
        let (ok, out, err) = varvedb(&["--path", path, "export"]);
        assert!(ok, "{err}");
        out.lines().skip(1).map(str::to_owned).collect()
    };
    assert_eq!(events(src), events(dst));
    // A bad stream name is a clear error, exit 2.
    let (ok, _, err) = varvedb(&[
        "--path",
        src,
        "replicate",
        "--to",
        &url,
        "--stream",
        "a.b",
        "--once",
    ]);
    assert!(!ok && err.contains("stream"), "{err}");
}

#[test]
fn a_missing_stream_or_an_unreachable_server_fails_fast_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = start_server(&dir.path().join("nats"));
    let url = format!("nats://127.0.0.1:{port}");
    // A stream nobody replicated to: a message naming it, and no store at DEST.
    let dest = dir.path().join("replica");
    let (ok, _, stderr) = varvedb(&[
        "restore",
        "--from",
        &url,
        "--stream",
        "NOPE",
        dest.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("no JetStream stream \"NOPE\""), "{stderr}");
    assert!(!dest.exists(), "restore left a store at DEST");

    // A port where nothing listens: both commands give up after their connect timeout, with
    // a message, instead of waiting silently.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nobody = format!("nats://127.0.0.1:{closed}");
    let store = dir.path().join("store");
    let s = store.to_str().unwrap();
    let (ok, _, stderr) = varvedb(&[
        "--path", s, "append", "--stream", "1", "--expect", "none", "--type", "X", "--json", "1",
    ]);
    assert!(ok, "{stderr}");
    for args in [
        vec![
            "--path",
            s,
            "replicate",
            "--to",
            &nobody,
            "--stream",
            "S",
            "--once",
            "--connect-timeout",
            "2",
        ],
        vec![
            "restore",
            "--from",
            &nobody,
            "--stream",
            "S",
            "--connect-timeout",
            "2",
            dest.to_str().unwrap(),
        ],
    ] {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_varvedb"))
            .args(&args)
            .output()
            .unwrap();
        let took = started.elapsed();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cannot reach the NATS server"), "{stderr}");
        assert!(took < Duration::from_secs(15), "{args:?} took {took:?}");
        assert!(!dest.exists());
    }
}
