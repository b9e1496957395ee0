//! Which refused connections are logged: one line per peer (or, before its key is known, per IP
//! address) per interval, in bounded memory and constant time per refusal.
//!
//! Refusals come at the rate a flood makes them, on the swarm task. A host that holds silent
//! connections from one address is refused at every reconnection, each from another port: keyed by
//! the whole address, every refusal was new and logged (tens of thousands of lines a minute), and
//! the table of keys, pruned by a scan of all of it on every refusal once it held 4096, cost the
//! swarm task most of its time (the flood test's aggregator spent 58% of it there). Keys are now
//! the peer or the IP address; they expire oldest first from a queue, and while the table is full
//! a new key is counted, not logged.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

/// Who a refused connection came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Who {
    /// Its key, once the handshake has told it.
    Peer(PeerId),
    /// Its IP address, before that (whatever the port).
    Ip(IpAddr),
    /// Its whole address, when it has no IP address of its own (through a relay).
    Addr(Multiaddr),
}

impl Who {
    /// The peer if known, else the IP address of a direct connection, else the address.
    pub(crate) fn of(peer: Option<PeerId>, remote: &Multiaddr) -> Self {
        match (peer, crate::pending::direct_ip(remote)) {
            (Some(p), _) => Self::Peer(p),
            (None, Some(ip)) => Self::Ip(ip),
            (None, None) => Self::Addr(remote.clone()),
        }
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Peer(p) => p.fmt(f),
            Self::Ip(ip) => ip.fmt(f),
            Self::Addr(a) => a.fmt(f),
        }
    }
}

/// The keys logged within the last interval.
#[derive(Debug)]
pub(crate) struct DeniedLog {
    interval: Duration,
    capacity: usize,
    /// The keys logged within the interval (each also once in `order`).
    logged: HashMap<Who, Instant>,
    /// The same keys, oldest first.
    order: VecDeque<(Instant, Who)>,
    /// Refusals not logged since the last line that was.
    suppressed: u64,
}

impl DeniedLog {
    /// One line per key per `interval`, at most `capacity` keys at once.
    pub(crate) fn new(interval: Duration, capacity: usize) -> Self {
        Self { interval, capacity, logged: HashMap::new(), order: VecDeque::new(), suppressed: 0 }
    }

    /// Whether a refusal of `who` at `now` is to be logged: `Some(n)` with the refusals left
    /// unlogged since the last line, `None` if `who` was logged within the interval or the table
    /// is full of keys that were.
    pub(crate) fn admit(&mut self, who: &Who, now: Instant) -> Option<u64> {
        while let Some((at, _)) = self.order.front()
            && now.saturating_duration_since(*at) >= self.interval
        {
            if let Some((_, old)) = self.order.pop_front() {
                self.logged.remove(&old);
            }
        }
        if self.logged.contains_key(who) || self.logged.len() >= self.capacity {
            self.suppressed += 1;
            return None;
        }
        self.logged.insert(who.clone(), now);
        self.order.push_back((now, who.clone()));
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn one_address_is_one_key_whatever_its_port() {
        let (a, b) = (addr("/ip4/127.0.0.2/tcp/40001"), addr("/ip4/127.0.0.2/tcp/40002"));
        assert_eq!(Who::of(None, &a), Who::of(None, &b));
        assert_eq!(Who::of(None, &a).to_string(), "127.0.0.2");
        let peer = PeerId::random();
        assert_eq!(Who::of(Some(peer), &a), Who::Peer(peer), "the key, once known, names the peer");
        let relayed =
            addr("/ip4/10.0.0.9/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit");
        assert_eq!(Who::of(None, &relayed), Who::Addr(relayed.clone()));
    }

    /// The half-open flood: one address reconnecting from every port logs one line a minute,
    /// and the lines say how many refusals they stand for.
    #[test]
    fn a_flood_from_one_address_logs_once_an_interval() {
        let mut log = DeniedLog::new(MINUTE, 4096);
        let t0 = Instant::now();
        let logged: Vec<(u64, u64)> = (0..30_000u64)
            .filter_map(|i| {
                let who = Who::of(None, &addr(&format!("/ip4/127.0.0.2/tcp/{}", 30_000 + i)));
                log.admit(&who, t0 + Duration::from_millis(10 * i)).map(|n| (i, n))
            })
            .collect();
        // 300 s of refusals, 100 a second: at 0, 60, 120, 180 and 240 s.
        assert_eq!(logged, vec![(0, 0), (6000, 5999), (12_000, 5999), (18_000, 5999), (24_000, 5999)]);
    }

    #[test]
    fn keys_expire_oldest_first_and_a_full_table_counts_new_keys() {
        let mut log = DeniedLog::new(MINUTE, 2);
        let t0 = Instant::now();
        let ip = |i: u8| Who::Ip(IpAddr::from([10, 0, 0, i]));
        assert_eq!(log.admit(&ip(1), t0), Some(0));
        assert_eq!(log.admit(&ip(2), t0 + Duration::from_secs(30)), Some(0));
        assert_eq!(log.admit(&ip(1), t0 + Duration::from_secs(59)), None, "within its interval");
        assert_eq!(log.admit(&ip(3), t0 + Duration::from_secs(59)), None, "the table is full");
        // ip(1) has expired; ip(2) has not.
        assert_eq!(log.admit(&ip(3), t0 + MINUTE), Some(2));
        assert_eq!(log.admit(&ip(2), t0 + MINUTE), None);
        assert_eq!((log.logged.len(), log.order.len()), (2, 2));
        assert_eq!(log.admit(&ip(2), t0 + Duration::from_secs(90)), Some(1));
    }
}
