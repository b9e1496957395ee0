//! The HTTP endpoint of node and aggregator: `GET /metrics` answers a Prometheus registry in the
//! OpenMetrics text format and, when the owner gives a [`LiveView`], `/` is its status page and
//! `/api/status` its data. axum routes the requests; hyper serves HTTP/1.1, one request a
//! connection, from our own accept loop, which bounds everything:
//!
//! - an address other than loopback is refused unless the config says `http.public = true`
//!   ([`HttpConfig::check`]);
//! - a request whose `Host` header names neither an IP address, `localhost` nor a name of
//!   `http.hosts` is answered 403 (DNS rebinding: [`host`]);
//! - at most [`MAX_CONNECTIONS`] connections at once, [`MAX_PER_IP`] from one address (IPv6 by
//!   its /64): more are closed unanswered, so a few slow clients hold their own slots, never a
//!   scraper's;
//! - a request head must arrive within [`HEADER_TIMEOUT`] and be at most [`MAX_HEAD`] bytes
//!   (hyper answers 431 past it), and a connection lasts at most [`CONNECTION_DEADLINE`].
//!
//! Every answer says `Cache-Control: no-store`, `X-Content-Type-Options: nosniff` and a content
//! security policy that lets a page load only its own scripts and styles and fetch only its own
//! endpoint. Layers: config/host/slots/view → (this module) the router and the accept loop.

pub mod config;
mod host;
mod slots;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub use self::config::HttpConfig;
use self::slots::Slots;
pub use self::view::{LiveView, Render};
use crate::error::Error;

/// Largest request head read (hyper's smallest buffer); a longer one is answered 431.
pub const MAX_HEAD: usize = 8 << 10;
/// Time allowed for a request head to arrive.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection lasts, answer included.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(15);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections served at once from one address (an IPv6 /64).
pub const MAX_PER_IP: usize = 4;

/// The content type of the OpenMetrics text exposition (what Prometheus asks for first).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// What a page may load: its own scripts, styles and data, nothing inline, no frames.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// A running endpoint; it stops when the token given to [`serve`] is cancelled or when
/// [`Server::shutdown`] is called.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The bound address (with the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets the connections being served finish (each bounded by
    /// [`CONNECTION_DEADLINE`]), and waits for the task.
    pub async fn shutdown(mut self) {
        self.token.cancel();
        if let Err(e) = (&mut self.task).await {
            tracing::error!(error = %e, "HTTP endpoint panicked");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// What an endpoint serves: a registry at `/metrics`, and a live view if there is one.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    config: HttpConfig,
    registry: Arc<Registry>,
    view: Option<LiveView>,
}

impl Endpoint {
    /// `registry` at `http://addr/metrics`, served as `config` says.
    pub fn new(addr: SocketAddr, config: HttpConfig, registry: Arc<Registry>) -> Self {
        Self { addr, config, registry, view: None }
    }

    /// Serves `view` too if the config's `status` asks for it (else it is dropped).
    pub fn with_view(mut self, view: impl FnOnce() -> LiveView) -> Self {
        if self.config.status {
            self.view = Some(view());
        }
        self
    }

    /// Checks the address, binds it and serves until `shutdown` is cancelled.
    pub async fn serve(self, shutdown: &CancellationToken) -> Result<Server, Error> {
        let addr = self.addr;
        self.config.check(addr)?;
        let listen = |e: std::io::Error| Error::Listen { addr: addr.to_string(), source: e.into() };
        let listener = TcpListener::bind(addr).await.map_err(listen)?;
        let bound = listener.local_addr().map_err(listen)?;
        let token = shutdown.child_token();
        let live = self.view.is_some();
        let router = router(self.registry, self.view, Arc::new(self.config.allowed_hosts()));
        let task = tokio::spawn(accept(listener, router, token.clone()));
        if live {
            tracing::info!(addr = %bound, "metrics at http://{bound}/metrics, the live view at http://{bound}/");
        } else {
            tracing::info!(addr = %bound, "metrics at http://{bound}/metrics");
        }
        Ok(Server { addr: bound, token, task })
    }
}

/// Binds `addr` (loopback unless `config.public`) and serves `registry` at `GET /metrics` until
/// `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    config: HttpConfig,
    registry: Arc<Registry>,
    shutdown: &CancellationToken,
) -> Result<Server, Error> {
    Endpoint::new(addr, config, registry).serve(shutdown).await
}

fn router(registry: Arc<Registry>, live: Option<LiveView>, hosts: Arc<Vec<String>>) -> Router {
    let mut r = Router::new().route("/metrics", get(move || metrics(registry.clone())));
    if let Some(LiveView { page, script, status }) = live {
        r = r
            .route("/", get(move || async move { typed("text/html; charset=utf-8", page) }))
            .route("/status.js", get(move || async move { typed("text/javascript; charset=utf-8", script) }))
            .route("/plot.js", get(|| async { typed("text/javascript; charset=utf-8", view::PLOT) }))
            .route("/view.css", get(|| async { typed("text/css; charset=utf-8", view::STYLE) }))
            .route("/api/status", get(move || async move { typed("application/json", status()) }));
    }
    r.fallback(|| async { (StatusCode::NOT_FOUND, "not found; metrics are at /metrics\n") })
        .layer(middleware::from_fn_with_state(hosts, guard))
}

fn typed(content_type: &'static str, body: impl Into<axum::body::Body>) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body.into()).into_response()
}

async fn metrics(registry: Arc<Registry>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &registry) {
        Ok(()) => typed(OPENMETRICS, body),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics\n").into_response(),
    }
}

/// Refuses a request whose `Host` is not one of ours, and adds the headers every answer carries.
async fn guard(State(hosts): State<Arc<Vec<String>>>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    let mut response = match host {
        Some(h) if host::allowed(h, &hosts) => next.run(req).await,
        Some(h) => {
            tracing::debug!(host = %h, "HTTP request for another host refused");
            (StatusCode::FORBIDDEN, "this Host is not served; the operator lists names in the config's http.hosts\n")
                .into_response()
        }
        None => (StatusCode::BAD_REQUEST, "a Host header is required\n").into_response(),
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    response
}

async fn accept(listener: TcpListener, router: Router, token: CancellationToken) {
    let slots = Slots::new(MAX_CONNECTIONS, MAX_PER_IP);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => break,
            a = listener.accept() => a,
        };
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "HTTP endpoint cannot accept");
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Some(slot) = slots.take(peer.ip()) else {
            tracing::debug!(%peer, "HTTP endpoint: no slot for this address; closing the connection");
            continue;
        };
        let (router, token) = (router.clone(), token.clone());
        connections.spawn(async move {
            let _slot = slot;
            connection(stream, router, token).await;
        });
    }
    while connections.join_next().await.is_some() {}
}

/// Serves one connection, for at most [`CONNECTION_DEADLINE`]; on shutdown, the request being
/// answered is finished first.
async fn connection(stream: TcpStream, router: Router, token: CancellationToken) {
    let service = TowerToHyperService::new(router);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(CONNECTION_DEADLINE);
    tokio::pin!(deadline);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HTTP connection failed");
            }
        }
        _ = &mut deadline => tracing::debug!("HTTP connection past its deadline; closed"),
        _ = token.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                _ = conn => {}
                _ = deadline => {}
            }
        }
    }
}

/// `GET path` from `addr` as a client does (with a `Host` header naming `addr`): the status
/// code and the body. For tests and health checks; bounded by [`HEADER_TIMEOUT`] for each step.
pub async fn fetch(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let timeout = |_| std::io::Error::from(std::io::ErrorKind::TimedOut);
    let mut stream = tokio::time::timeout(HEADER_TIMEOUT, TcpStream::connect(addr)).await.map_err(timeout)??;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {OPENMETRICS}\r\nConnection: close\r\n\r\n");
    tokio::time::timeout(HEADER_TIMEOUT, stream.write_all(request.as_bytes())).await.map_err(timeout)??;
    let mut raw = Vec::new();
    tokio::time::timeout(HEADER_TIMEOUT, (&mut stream).take(64 << 20).read_to_end(&mut raw))
        .await
        .map_err(timeout)??;
    let text = String::from_utf8(raw).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| invalid("no end of head"))?;
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| invalid("no status code"))?;
    Ok((code, body.to_owned()))
}

/// `GET /metrics` from `addr`, as a scraper does: the body of a 200 answer, or the status code
/// of any other.
pub async fn scrape(addr: SocketAddr) -> std::io::Result<Result<String, String>> {
    let (code, body) = fetch(addr, "/metrics").await?;
    Ok(if code == 200 { Ok(body) } else { Err(format!("HTTP {code}")) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::net::TcpSocket;

    fn registry() -> Arc<Registry> {
        let mut registry = Registry::default();
        let c = Counter::<u64>::default();
        registry.register("fd_test", "A test counter", c.clone());
        c.inc_by(7);
        Arc::new(registry)
    }

    async fn start(config: HttpConfig, view: Option<LiveView>) -> (Server, CancellationToken) {
        let token = CancellationToken::new();
        let mut e = Endpoint::new("127.0.0.1:0".parse().expect("addr"), config, registry());
        if let Some(v) = view {
            e = e.with_view(|| v);
        }
        (e.serve(&token).await.expect("bind"), token)
    }

    /// Sends `request` as it is and reads the whole answer.
    async fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        let mut out = String::new();
        tokio::time::timeout(HEADER_TIMEOUT * 2, s.read_to_string(&mut out))
            .await
            .expect("answered in time")
            .expect("read");
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_the_rest() {
        let (server, _token) = start(HttpConfig::default(), None).await;
        let addr = server.local_addr();
        let body = scrape(addr).await.expect("scrape").expect("200");
        assert!(body.lines().any(|l| l == "fd_test_total 7"), "{body}");
        assert!(body.ends_with("# EOF\n"));
        assert_eq!(fetch(addr, "/").await.expect("get").0, 404, "no live view unless asked");
        assert_eq!(fetch(addr, "/api/status").await.expect("get").0, 404);
        assert!(raw(addr, b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.starts_with("HTTP/1.1 405"));
        assert!(raw(addr, b"hello\r\n\r\n").await.starts_with("HTTP/1.1 400"));
        let long = format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(raw(addr, long.as_bytes()).await.starts_with("HTTP/1.1 431"));
        server.shutdown().await;
        assert!(TcpStream::connect(addr).await.is_err(), "the port is closed after the shutdown");
    }

    /// DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1.
    #[tokio::test]
    async fn a_host_that_is_not_ours_is_refused() {
        let config = HttpConfig { hosts: vec!["metrics.example.org".into()], ..Default::default() };
        let (server, _token) = start(config, None).await;
        let addr = server.local_addr();
        let ask = |host: &str| format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let evil = raw(addr, ask(&format!("evil.example:{}", addr.port())).as_bytes()).await;
        assert!(evil.starts_with("HTTP/1.1 403"), "{evil}");
        assert!(!evil.contains("fd_test"), "{evil}");
        assert!(raw(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 400"), "no Host");
        for ours in [addr.to_string(), "localhost".into(), "metrics.example.org:9464".into()] {
            assert!(raw(addr, ask(&ours).as_bytes()).await.starts_with("HTTP/1.1 200"), "{ours}");
        }
    }

    /// Eight clients (from 127.0.0.2) that connect and say nothing: a scraper from another
    /// address is answered at once, and a ninth connection beyond their address's share is
    /// closed without holding anyone's slot.
    #[tokio::test]
    async fn slow_clients_do_not_block_a_scrape() {
        let (server, _token) = start(HttpConfig::default(), None).await;
        let addr = server.local_addr();
        let mut slow = Vec::new();
        for _ in 0..8 {
            let socket = TcpSocket::new_v4().expect("socket");
            socket.bind("127.0.0.2:0".parse().expect("addr")).expect("bind 127.0.0.2");
            slow.push(socket.connect(addr).await.expect("connect"));
        }
        let body = tokio::time::timeout(Duration::from_secs(2), scrape(addr))
            .await
            .expect("answered while eight clients hang")
            .expect("scrape")
            .expect("200");
        assert!(body.contains("fd_test_total 7"));
        // The fifth and later of 127.0.0.2 were closed at once: reading them ends (EOF or reset).
        let mut closed = 0;
        for s in &mut slow {
            let mut b = [0u8; 1];
            if let Ok(r) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await {
                assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
                closed += 1;
            }
        }
        assert_eq!(closed, 8 - MAX_PER_IP, "the connections beyond the share of their address");
    }

    #[tokio::test]
    async fn a_public_address_needs_public() {
        let token = CancellationToken::new();
        let e = Endpoint::new("0.0.0.0:0".parse().expect("addr"), HttpConfig::default(), registry());
        assert!(matches!(e.serve(&token).await, Err(Error::NotLoopback { .. })));
    }

    #[tokio::test]
    async fn the_live_view_is_served_when_asked() {
        let render: Render = Arc::new(|| r#"{"round":3}"#.to_owned());
        let view = LiveView::new("<html>page</html>", "// script", render);
        let (server, _token) = start(HttpConfig { status: true, ..Default::default() }, Some(view.clone())).await;
        let addr = server.local_addr();
        assert_eq!(fetch(addr, "/").await.expect("get"), (200, "<html>page</html>".into()));
        assert_eq!(fetch(addr, "/api/status").await.expect("get"), (200, r#"{"round":3}"#.into()));
        assert_eq!(fetch(addr, "/plot.js").await.expect("get").1, view::PLOT);
        let head = raw(addr, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.to_ascii_lowercase();
        assert!(head.contains("content-security-policy: default-src 'none'"), "{head}");
        assert!(head.contains("cache-control: no-store"), "{head}");
        // Off by default: the same view is not served.
        let (off, _token) = start(HttpConfig::default(), Some(view)).await;
        assert_eq!(fetch(off.local_addr(), "/").await.expect("get").0, 404);
    }
}
