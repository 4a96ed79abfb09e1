//! `/metrics` over HTTP (the `metrics-http` feature): scraped on 127.0.0.1, it parses as a
//! Prometheus exposition and its counters move after appends.
#![cfg(feature = "metrics-http")]
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;
use varvedb::{Error, ExpectedVersion, Writer};

/// `METHOD path` with HTTP/1.0: `(status, head, body)`.
fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    try_request(addr, method, path).expect("an answer from the metrics server")
}

/// `METHOD path`, or `None` when the server closed the connection without an answer.
fn try_request(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_owned(), body.to_owned()))
}

fn counter(body: &str, name: &str) -> f64 {
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name} is not a number"),
        })
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

#[test]
fn scraping_metrics_over_http_sees_the_counters_move() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let server = storage
        .serve_metrics(Some("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());

    let (status, head, body) = get(addr, "GET", "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert_eq!(counter(&body, "varvedb_append_events_total"), 0.0);

    let writer = Writer::<Deposited>::new(storage.clone());
    for _ in 0..7 {
        writer
            .append(3, ExpectedVersion::Auto, &deposit(1))
            .unwrap();
    }
    let (_, _, body) = get(addr, "GET", "/metrics");
    assert_eq!(counter(&body, "varvedb_append_events_total"), 7.0);
    assert_eq!(counter(&body, "varvedb_events"), 7.0);

    assert_eq!(get(addr, "GET", "/elsewhere").0, 404);
    assert_eq!(get(addr, "POST", "/metrics").0, 405);

    // An address already taken is a typed error.
    let taken = storage.serve_metrics(Some(addr));
    assert!(matches!(taken, Err(Error::Bind { .. })), "{taken:?}");

    // Dropping the server stops it: soon nothing answers there (its acceptor thread may take
    // one more connection on its way out).
    drop(server);
    let stopped = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        TcpStream::connect(addr).is_err()
    });
    assert!(stopped, "the server still listens after it was dropped");
}

#[test]
fn the_default_address_is_loopback() {
    assert!(varvedb::DEFAULT_METRICS_ADDR.ip().is_loopback());
}

/// The threads of this process (Linux; elsewhere the check is skipped).
fn threads() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(Iterator::count)
}

/// Clients that connect and send nothing, send a head that never ends, or send megabytes of
/// headers: the server spends no thread on any of them, stays responsive to a real scrape
/// while they hold on, and closes them within its bounds.
#[test]
fn slow_and_oversized_clients_cannot_exhaust_the_database_process() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let storage = open(&dir);
    let server = storage
        .serve_metrics(Some("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let addr = server.local_addr();
    let before = threads();

    // A head that starts and never ends (first, so that it holds a slot).
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    let started = Instant::now();
    // When the server cuts the slow client off, measured on a thread of its own.
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let cut_off = std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        started.elapsed()
    });
    // 200 idle connections, many more than the server serves at once.
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    if let (Some(before), Some(now)) = (before, threads()) {
        assert!(
            now <= before + 4,
            "{now} threads with 201 clients connected, {before} before"
        );
    }
    drop(idle);

    // Megabytes of header: refused (431) or closed, never buffered.
    let mut big = TcpStream::connect(addr).unwrap();
    big.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sent = 0usize;
    let _ = big.write_all(b"GET /metrics HTTP/1.1\r\n");
    let line = format!("X-Big: {}\r\n", "a".repeat(1000));
    while sent < 4 << 20 {
        if big.write_all(line.as_bytes()).is_err() {
            break;
        }
        sent += line.len();
    }
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let _ = big.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );

    // A real scrape is answered meanwhile (the slow one holds on). The server may still be
    // closing the idle clients' connections, and a connection past its bound is closed at once
    // (documented): the scrape is tried again until a slot is free, within seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, body) = loop {
        if let Some((status, _, body)) = try_request(addr, "GET", "/metrics") {
            break (status, body);
        }
        assert!(Instant::now() < deadline, "no scrape was answered in 20 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, 200);
    assert!(body.contains("varvedb_append_events_total"));

    // The slow client is cut off once its head is overdue, not before.
    let held = cut_off.join().unwrap();
    assert!(
        held < varvedb::HEAD_TIMEOUT + Duration::from_secs(5),
        "the slow client was held {held:?}"
    );
    assert!(
        held >= varvedb::HEAD_TIMEOUT - Duration::from_millis(500),
        "the slow client was cut off after {held:?} only"
    );
    drop(server);
}
