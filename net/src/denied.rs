//! Which refused connections are logged: one line per IP address (or, through a relay, per peer)
//! per interval, at most a fixed number of lines an interval in all, in bounded memory and
//! constant time per refusal; the rest are counted and summed up in one line an interval.
//!
//! Refusals come at the rate a flood makes them, on the swarm task. A host that holds silent
//! connections from one address is refused at every reconnection, each from another port: keyed by
//! the whole address, every refusal was new and logged (300 quick connects logged 300 WARN lines in
//! a second), and the table of keys, pruned by a scan of all of it on every refusal once it held
//! 4096, cost the swarm task most of its time (the flood test's aggregator spent 58% of it there).
//! A host with many addresses (an IPv6 /64, a botnet) or many keys still made a line per address
//! or key. Keys are now the IP address of a direct connection (whatever its port or key) and the
//! peer of a relayed one; they expire oldest first from a queue; and the lines of all keys share
//! one budget an interval. What is not logged is counted ([`DeniedLog::summary`]).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

/// Who a refused connection came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Who {
    /// The IP address of a direct connection (whatever its port, whatever key it shows; an IPv6
    /// address's /64).
    Ip(IpAddr),
    /// The key of a relayed connection, once the handshake has told it (its address is the relay's).
    Peer(PeerId),
    /// Its whole address, when it has neither (through a relay, before the handshake).
    Addr(Multiaddr),
}

impl Who {
    /// The IP address of a direct connection, else the peer if known, else the address.
    pub(crate) fn of(peer: Option<PeerId>, remote: &Multiaddr) -> Self {
        match (crate::pending::direct_ip(remote), peer) {
            (Some(ip), _) => Self::Ip(crate::pending::prefix(ip)),
            (None, Some(p)) => Self::Peer(p),
            (None, None) => Self::Addr(remote.clone()),
        }
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(f),
            Self::Peer(p) => p.fmt(f),
            Self::Addr(a) => a.fmt(f),
        }
    }
}

/// The keys logged within the last interval, and the lines left in this one.
#[derive(Debug)]
pub(crate) struct DeniedLog {
    interval: Duration,
    capacity: usize,
    /// Lines an interval, all keys together.
    budget: u32,
    /// The keys logged within the interval (each also once in `order`).
    logged: HashMap<Who, Instant>,
    /// The same keys, oldest first.
    order: VecDeque<(Instant, Who)>,
    /// When the budget's current interval began, and the lines logged in it.
    window: Option<(Instant, u32)>,
    /// Refusals not logged since the last summary.
    suppressed: u64,
}

impl DeniedLog {
    /// One line per key per `interval`, at most `capacity` keys at once and `budget` lines an
    /// interval in all.
    pub(crate) fn new(interval: Duration, capacity: usize, budget: u32) -> Self {
        Self { interval, capacity, budget, logged: HashMap::new(), order: VecDeque::new(), window: None, suppressed: 0 }
    }

    /// Whether a refusal of `who` at `now` is to be logged: not if `who` was logged within the
    /// interval, if the table is full of keys that were, or if this interval's lines are spent;
    /// then it is counted for the next [`DeniedLog::summary`].
    pub(crate) fn admit(&mut self, who: &Who, now: Instant) -> bool {
        while let Some((at, _)) = self.order.front()
            && now.saturating_duration_since(*at) >= self.interval
        {
            if let Some((_, old)) = self.order.pop_front() {
                self.logged.remove(&old);
            }
        }
        let lines = match self.window {
            Some((start, lines)) if now.saturating_duration_since(start) < self.interval => lines,
            _ => {
                self.window = Some((now, 0));
                0
            }
        };
        if self.logged.contains_key(who) || self.logged.len() >= self.capacity || lines >= self.budget {
            self.suppressed += 1;
            return false;
        }
        self.window = self.window.map(|(start, n)| (start, n + 1));
        self.logged.insert(who.clone(), now);
        self.order.push_back((now, who.clone()));
        true
    }

    /// The refusals not logged since the last call, if there were any (the event loop calls it
    /// once an interval and logs one line with the number).
    pub(crate) fn summary(&mut self) -> Option<u64> {
        Some(std::mem::take(&mut self.suppressed)).filter(|n| *n > 0)
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
    fn one_address_is_one_key_whatever_its_port_or_key() {
        let (a, b) = (addr("/ip4/127.0.0.2/tcp/40001"), addr("/ip4/127.0.0.2/tcp/40002"));
        assert_eq!(Who::of(None, &a), Who::of(None, &b));
        assert_eq!(Who::of(None, &a).to_string(), "127.0.0.2");
        assert_eq!(Who::of(Some(PeerId::random()), &a), Who::of(Some(PeerId::random()), &b), "fresh keys");
        let peer = PeerId::random();
        let relayed =
            addr("/ip4/10.0.0.9/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit");
        assert_eq!(Who::of(None, &relayed), Who::Addr(relayed.clone()));
        assert_eq!(Who::of(Some(peer), &relayed), Who::Peer(peer), "through a relay, the key names it");
    }

    /// The half-open flood: one address reconnecting from every port logs one line a minute,
    /// and the summaries count the rest.
    #[test]
    fn a_flood_from_one_address_logs_once_an_interval() {
        let mut log = DeniedLog::new(MINUTE, 4096, 20);
        let t0 = Instant::now();
        let mut summaries = Vec::new();
        let logged: Vec<u64> = (0..30_000u64)
            .filter(|i| {
                let who = Who::of(None, &addr(&format!("/ip4/127.0.0.2/tcp/{}", 30_000 + i)));
                let logged = log.admit(&who, t0 + Duration::from_millis(10 * i));
                if i % 6000 == 5999 {
                    summaries.extend(log.summary());
                }
                logged
            })
            .collect();
        // 300 s of refusals, 100 a second: at 0, 60, 120, 180 and 240 s.
        assert_eq!(logged, vec![0, 6000, 12_000, 18_000, 24_000]);
        assert_eq!(summaries, vec![5999; 5]);
        assert_eq!(log.summary(), None, "nothing since the last summary");
    }

    /// Many addresses (one each) share the budget: 20 lines a minute whatever their number.
    #[test]
    fn many_addresses_share_one_budget() {
        let mut log = DeniedLog::new(MINUTE, 4096, 20);
        let t0 = Instant::now();
        let ip = |i: u32| Who::Ip(IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
        let logged = (0..3000).filter(|&i| log.admit(&ip(i), t0 + Duration::from_millis(u64::from(i)))).count();
        assert_eq!(logged, 20);
        assert_eq!(log.summary(), Some(2980));
        // A new interval, a new budget.
        assert!(log.admit(&ip(5000), t0 + MINUTE));
    }

    #[test]
    fn keys_expire_oldest_first_and_a_full_table_counts_new_keys() {
        let mut log = DeniedLog::new(MINUTE, 2, 100);
        let t0 = Instant::now();
        let ip = |i: u8| Who::Ip(IpAddr::from([10, 0, 0, i]));
        assert!(log.admit(&ip(1), t0));
        assert!(log.admit(&ip(2), t0 + Duration::from_secs(30)));
        assert!(!log.admit(&ip(1), t0 + Duration::from_secs(59)), "within its interval");
        assert!(!log.admit(&ip(3), t0 + Duration::from_secs(59)), "the table is full");
        // ip(1) has expired; ip(2) has not.
        assert!(log.admit(&ip(3), t0 + MINUTE));
        assert!(!log.admit(&ip(2), t0 + MINUTE));
        assert_eq!((log.logged.len(), log.order.len()), (2, 2));
        assert!(log.admit(&ip(2), t0 + Duration::from_secs(90)));
        assert_eq!(log.summary(), Some(3));
    }
}
