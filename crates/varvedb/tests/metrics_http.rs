//! `/metrics` over HTTP (the `metrics-http` feature): scraped on 127.0.0.1, it parses as a
//! Prometheus exposition and its counters move after appends.
#![cfg(feature = "metrics-http")]
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;
use varvedb::{Error, ExpectedVersion, Writer};

/// `GET path` with HTTP/1.0: `(status, body)`.
fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
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
