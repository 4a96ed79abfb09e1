//! `/metrics` over HTTP (the `metrics-http` feature), for applications with no server of their
//! own: hyper's HTTP/1 server on a thread of its own, answering scrapes with
//! [`Storage::metrics_text`].
//!
//! It runs inside the database's process, so everything a client can make it spend is bounded:
//! at most [`CONNECTIONS_MAX`] connections at once (the next ones are closed as soon as they are
//! accepted), a request head of at most [`HEAD_BYTES_MAX`] bytes (larger is `431`), the head
//! read within [`HEAD_TIMEOUT`], the whole exchange within [`EXCHANGE_TIMEOUT`], and one request
//! per connection (no keep-alive). Slow or oversized clients cost one task each, never a thread.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::error::{Error, Result};
use crate::storage::{Storage, WeakStorage};

/// The most connections served at once; more are accepted and closed at once.
pub const CONNECTIONS_MAX: usize = 32;
/// The longest request head (request line and headers) read, in bytes (hyper's smallest
/// buffer); a longer one is answered `431` or closed.
pub const HEAD_BYTES_MAX: usize = 8192;
/// The time a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The time a whole exchange may take, from accept to the last byte of the answer.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);

/// Where [`Storage::serve_metrics`] listens when told nothing: the loopback interface only.
pub const DEFAULT_METRICS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9477);

/// The content type of the OpenMetrics text exposition, which Prometheus scrapes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A running `/metrics` endpoint, from [`Storage::serve_metrics`]. Dropping it stops the server
/// and joins its thread.
///
/// It does not keep the store open: once every other handle is dropped, scrapes are answered
/// `503 Service Unavailable`.
pub struct MetricsServer {
    stop: Arc<tokio::sync::Notify>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// Connections served at once; more wait.
    pub const CONNECTIONS_MAX: usize = CONNECTIONS_MAX;
    /// The largest request head, in bytes.
    pub const HEAD_BYTES_MAX: usize = HEAD_BYTES_MAX;
    /// How long a client may take to send its head.
    pub const HEAD_TIMEOUT: Duration = HEAD_TIMEOUT;
    /// How long one request and its answer may take.
    pub const EXCHANGE_TIMEOUT: Duration = EXCHANGE_TIMEOUT;
    /// Where `/metrics` is served when no address is given.
    pub const DEFAULT_ADDR: SocketAddr = DEFAULT_METRICS_ADDR;

    /// The address it listens on (with the port the system chose, if asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// See [`Storage::serve_metrics`](crate::Storage::serve_metrics).
pub(crate) fn serve_metrics(storage: &Storage, addr: Option<SocketAddr>) -> Result<MetricsServer> {
    let asked = addr.unwrap_or(DEFAULT_METRICS_ADDR);
    let bind = |reason: String| Error::Bind {
        addr: asked.to_string(),
        reason,
    };
    let listener = std::net::TcpListener::bind(asked).map_err(|e| bind(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| bind(e.to_string()))?;
    let addr = listener.local_addr().unwrap_or(asked);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(2)
        .build()
        .map_err(|e| bind(format!("cannot start its runtime: {e}")))?;
    let stop = Arc::new(tokio::sync::Notify::new());
    let store = storage.downgrade();
    let thread = std::thread::Builder::new()
        .name("varvedb-metrics".into())
        .spawn({
            let stop = Arc::clone(&stop);
            move || runtime.block_on(serve(listener, store, stop))
        })
        .map_err(|e| bind(format!("cannot start its thread: {e}")))?;
    Ok(MetricsServer {
        stop,
        addr,
        thread: Some(thread),
    })
}

/// Accepts connections until `stop` is notified, each served on a task of its own within the
/// bounds of the module docs.
async fn serve(
    listener: std::net::TcpListener,
    store: WeakStorage,
    stop: Arc<tokio::sync::Notify>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(HEAD_BYTES_MAX)
        .max_headers(32)
        .keep_alive(false);
    loop {
        let (stream, _) = tokio::select! {
            () = stop.notified() => return,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                // Out of descriptors, or a connection reset before it was accepted: wait a
                // moment rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Full: the connection is closed at once (dropped), the server stays responsive.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let store = store.clone();
        let conn = http.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |request| answer(request, store.clone())),
        );
        tokio::spawn(async move {
            // A client that is too slow, or goes away, is not the server's problem.
            let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

/// The answer to one request.
async fn answer(
    request: Request<Incoming>,
    store: WeakStorage,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        ));
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET\n",
        ));
    }
    // Reading the store's gauges touches the file: off the accepting thread.
    let text = tokio::task::spawn_blocking(move || store.upgrade().map(|s| s.metrics_text())).await;
    Ok(match text {
        Ok(Some(text)) => {
            let mut response = Response::new(Full::new(Bytes::from(text)));
            if let Ok(value) = hyper::header::HeaderValue::from_str(CONTENT_TYPE) {
                response
                    .headers_mut()
                    .insert(hyper::header::CONTENT_TYPE, value);
            }
            response
        }
        Ok(None) => reply(StatusCode::SERVICE_UNAVAILABLE, "the store is closed\n"),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be read\n",
        ),
    })
}
