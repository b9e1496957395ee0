//! A minimal HTTP/1.1 responder for Prometheus: `GET /metrics` answers the registry in the
//! OpenMetrics text format; any other path is 404, any other method 405. One request per
//! connection (`Connection: close`). Bounded: a request head is read up to [`MAX_HEAD`] bytes
//! within [`IO_TIMEOUT`], the answer written within the same timeout, and at most
//! [`MAX_CONNECTIONS`] are served at once (more are closed unanswered).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::Error;

/// Largest request head read; a longer one is answered 431.
pub const MAX_HEAD: usize = 8 << 10;
/// Time allowed to read a request head, and again to write the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 8;

/// The content type of the OpenMetrics text exposition (what Prometheus asks for first).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A running metrics endpoint; it stops when the token given to [`serve`] is cancelled or when
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
    /// [`IO_TIMEOUT`]), and waits for the task.
    pub async fn shutdown(mut self) {
        self.token.cancel();
        if let Err(e) = (&mut self.task).await {
            tracing::error!(error = %e, "metrics endpoint panicked");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Binds `addr` and serves `registry` at `GET /metrics` until `shutdown` is cancelled.
pub async fn serve(addr: SocketAddr, registry: Arc<Registry>, shutdown: &CancellationToken) -> Result<Server, Error> {
    let listen = |e: std::io::Error| Error::Listen { addr: addr.to_string(), source: e.into() };
    let listener = TcpListener::bind(addr).await.map_err(listen)?;
    let bound = listener.local_addr().map_err(listen)?;
    let token = shutdown.child_token();
    let task = tokio::spawn(accept(listener, registry, token.clone()));
    tracing::info!(addr = %bound, "metrics at http://{bound}/metrics");
    Ok(Server { addr: bound, token, task })
}

async fn accept(listener: TcpListener, registry: Arc<Registry>, token: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
                tracing::warn!(error = %e, "metrics endpoint cannot accept");
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics endpoint busy; closing a connection");
            continue;
        };
        let registry = registry.clone();
        connections.spawn(async move {
            let _permit = permit;
            if let Err(e) = answer(stream, &registry).await {
                tracing::debug!(%peer, error = %e, "metrics request failed");
            }
        });
    }
    while connections.join_next().await.is_some() {}
}

/// Reads one request head and writes the answer.
async fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let head =
        tokio::time::timeout(IO_TIMEOUT, read_head(&mut stream)).await.map_err(|_| std::io::ErrorKind::TimedOut)??;
    let response = respond(head.as_deref(), registry);
    tokio::time::timeout(IO_TIMEOUT, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| std::io::ErrorKind::TimedOut)?
}

/// The request head up to the blank line, or `None` if it is longer than [`MAX_HEAD`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

/// The whole HTTP response to a request head (`None`: the head was too long).
fn respond(head: Option<&[u8]>, registry: &Registry) -> Vec<u8> {
    let Some(head) = head else {
        return response("431 Request Header Fields Too Large", "text/plain", "request head too long\n");
    };
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = std::str::from_utf8(line).unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return response("400 Bad Request", "text/plain", "not an HTTP/1 request\n");
    }
    if method != "GET" {
        return response("405 Method Not Allowed", "text/plain", "only GET\n");
    }
    if target.split('?').next() != Some("/metrics") {
        return response("404 Not Found", "text/plain", "metrics are at /metrics\n");
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => response("200 OK", CONTENT_TYPE, &body),
        Err(_) => response("500 Internal Server Error", "text/plain", "cannot encode the metrics\n"),
    }
}

fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    let allow = if status.starts_with("405") { "Allow: GET\r\n" } else { "" };
    format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n{body}", body.len()).into_bytes()
}

/// `GET /metrics` from `addr`, as a scraper does: the body of a 200 answer, or the status line
/// of any other. For tests and health checks; bounded by [`IO_TIMEOUT`] for each step.
pub async fn scrape(addr: SocketAddr) -> std::io::Result<Result<String, String>> {
    let timeout = |_| std::io::Error::from(std::io::ErrorKind::TimedOut);
    let mut stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr)).await.map_err(timeout)??;
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: {CONTENT_TYPE}\r\nConnection: close\r\n\r\n");
    tokio::time::timeout(IO_TIMEOUT, stream.write_all(request.as_bytes())).await.map_err(timeout)??;
    let mut raw = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, (&mut stream).take(64 << 20).read_to_end(&mut raw)).await.map_err(timeout)??;
    let text = String::from_utf8(raw).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no end of head"))?;
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok(if status.split(' ').nth(1) == Some("200") { Ok(body.to_owned()) } else { Err(status) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    async fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request).await.expect("write");
        let mut out = String::new();
        tokio::time::timeout(IO_TIMEOUT * 2, s.read_to_string(&mut out))
            .await
            .expect("answered in time")
            .expect("read");
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_the_rest() {
        let mut registry = Registry::default();
        let c = Counter::<u64>::default();
        registry.register("fd_test", "A test counter", c.clone());
        c.inc_by(7);
        let token = CancellationToken::new();
        let server = serve("127.0.0.1:0".parse().expect("addr"), Arc::new(registry), &token).await.expect("bind");
        let addr = server.local_addr();
        let body = scrape(addr).await.expect("scrape").expect("200");
        assert!(body.lines().any(|l| l == "fd_test_total 7"), "{body}");
        assert!(body.ends_with("# EOF\n"));
        assert!(raw(addr, b"GET / HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 404"));
        assert!(raw(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 405"));
        assert!(raw(addr, b"hello\r\n\r\n").await.starts_with("HTTP/1.1 400"));
        server.shutdown().await;
        assert!(TcpStream::connect(addr).await.is_err(), "the port is closed after the shutdown");
    }
}
