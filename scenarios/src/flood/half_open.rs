//! Half-open connections (a slowloris on handshakes): TCP connections to the aggregator that
//! never say a word, each reopened as soon as the aggregator drops it (at its handshake timeout).
//! They hold the aggregator's slots for connections in their handshake. Also the flooder's watch
//! on the aggregator's listener ([`watch_listener`]).

use std::net::SocketAddr;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How the half-open connections fared.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HalfOpen {
    /// TCP connections opened (and then left silent).
    pub opened: u64,
    /// Of those, closed by the aggregator.
    pub closed_by_aggregator: u64,
    /// Connection attempts that failed.
    pub failed: u64,
}

/// The TCP socket address of a `/ip4|ip6/…/tcp/PORT/…` multiaddr.
pub fn tcp_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut ip = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(port) => return ip.map(|ip| SocketAddr::new(ip, port)),
            _ => {}
        }
    }
    None
}

/// Fires `stop` once the aggregator's TCP port refuses connections three times in a row
/// (probed every 500 ms): it has exited.
pub async fn watch_listener(to: SocketAddr, stop: CancellationToken) {
    let mut refused = 0;
    while refused < 3 {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        match tokio::net::TcpStream::connect(to).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
            _ => refused = 0,
        }
    }
    stop.cancel();
}

/// Opens a TCP connection to `to`, from address `from` if given (on loopback, any of
/// 127.0.0.0/8: another host, as far as the aggregator can tell).
async fn connect(to: SocketAddr, from: Option<std::net::IpAddr>) -> std::io::Result<tokio::net::TcpStream> {
    let Some(ip) = from else { return tokio::net::TcpStream::connect(to).await };
    let socket = if ip.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(to).await
}

/// Keeps `count` silent connections to `to` (from `from`, if given) open until `stop` fires.
pub async fn run(to: SocketAddr, from: Option<std::net::IpAddr>, count: usize, stop: CancellationToken) -> HalfOpen {
    let mut held: JoinSet<Result<bool, ()>> = JoinSet::new();
    let mut report = HalfOpen::default();
    let hold = |stop: CancellationToken| async move {
        let Ok(mut socket) = connect(to, from).await else { return Err(()) };
        let mut byte = [0u8; 1];
        // Say nothing; read until the aggregator gives up on us (or we stop).
        tokio::select! {
            _ = stop.cancelled() => Ok(false),
            _ = async { while matches!(socket.read(&mut byte).await, Ok(n) if n > 0) {} } => Ok(true),
        }
    };
    for _ in 0..count {
        held.spawn(hold(stop.clone()));
    }
    while let Some(done) = held.join_next().await {
        match done {
            Ok(Ok(closed)) => {
                report.opened += 1;
                report.closed_by_aggregator += u64::from(closed);
            }
            _ => report.failed += 1,
        }
        if !stop.is_cancelled() {
            // Pace reconnections after a failure: the aggregator may be gone.
            if matches!(done, Ok(Err(()))) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            held.spawn(hold(stop.clone()));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tcp_address_of_a_multiaddr() {
        let a: Multiaddr =
            "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWMGT6qfXM3xi9opiUPTNBLczSqxihi5hzPoKKE3sBiF2H".parse().unwrap();
        assert_eq!(tcp_addr(&a), Some("127.0.0.1:4001".parse().unwrap()));
        assert_eq!(tcp_addr(&"/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap()), None);
    }

    #[tokio::test]
    async fn the_watch_fires_when_the_port_is_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = listener.local_addr().unwrap();
        drop(listener);
        let stop = CancellationToken::new();
        tokio::time::timeout(Duration::from_secs(30), watch_listener(to, stop.clone())).await.unwrap();
        assert!(stop.is_cancelled());
    }
}
