//! `/metrics` over HTTP (the `metrics-http` feature), for applications with no server of their
//! own. One thread answers scrapes with [`Storage::metrics_text`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::storage::{Storage, WeakStorage};

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
    server: Arc<tiny_http::Server>,
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
    /// The address it listens on (with the port the system chose, if asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Storage {
    /// Serves this store's metrics at `http://ADDR/metrics` on a thread of its own, until the
    /// returned [`MetricsServer`] is dropped. `None` listens on [`DEFAULT_METRICS_ADDR`]
    /// (127.0.0.1:9477): other machines cannot scrape it unless you pass an address that they
    /// can reach, such as `0.0.0.0:9477`.
    ///
    /// `GET /metrics` answers the exposition of [`metrics_text`](Self::metrics_text); other
    /// paths are `404`, other methods `405`. An address that cannot be bound is
    /// [`Error::Bind`].
    pub fn serve_metrics(&self, addr: Option<SocketAddr>) -> Result<MetricsServer> {
        let asked = addr.unwrap_or(DEFAULT_METRICS_ADDR);
        let server = tiny_http::Server::http(asked).map_err(|e| Error::Bind {
            addr: asked.to_string(),
            reason: e.to_string(),
        })?;
        let addr = server.server_addr().to_ip().unwrap_or(asked);
        let server = Arc::new(server);
        let store = self.downgrade();
        let thread = std::thread::Builder::new()
            .name("varvedb-metrics".into())
            .spawn({
                let server = Arc::clone(&server);
                move || serve(&server, &store)
            })
            .map_err(|e| Error::Bind {
                addr: addr.to_string(),
                reason: format!("cannot start its thread: {e}"),
            })?;
        Ok(MetricsServer {
            server,
            addr,
            thread: Some(thread),
        })
    }
}

/// Answers requests until the server is unblocked.
fn serve(server: &tiny_http::Server, store: &WeakStorage) {
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("");
        let response = if path != "/metrics" {
            tiny_http::Response::from_string("not found: the metrics are at /metrics\n")
                .with_status_code(404)
        } else if !matches!(
            request.method(),
            tiny_http::Method::Get | tiny_http::Method::Head
        ) {
            tiny_http::Response::from_string("method not allowed: use GET\n").with_status_code(405)
        } else {
            match store.upgrade() {
                Some(storage) => {
                    let text = storage.metrics_text();
                    drop(storage);
                    let mut response = tiny_http::Response::from_string(text);
                    if let Ok(header) =
                        tiny_http::Header::from_bytes(&b"Content-Type"[..], CONTENT_TYPE)
                    {
                        response.add_header(header);
                    }
                    response
                }
                None => {
                    tiny_http::Response::from_string("the store is closed\n").with_status_code(503)
                }
            }
        };
        // A client that went away is not the server's problem.
        let _ = request.respond(response);
    }
}
