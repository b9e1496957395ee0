//! Per-peer rate limits on inbound requests of chosen message kinds: a token bucket per (peer,
//! kind), checked on the swarm task from the kind in the frame's first bytes, before the
//! envelope is verified. The buckets are bounded by the allow-list: only its peers connect.
//!
//! A hand-written bucket rather than `governor`: the one needed here is a few lines, runs on
//! tokio's clock (so paused-time tests drive it), and its keyed store is bounded by the roster
//! instead of growing until pruned.

use std::collections::HashMap;

use libp2p::PeerId;
use protocol::MessageKind;
use tokio::time::Instant;

/// At most `burst` requests at once, then `per_second` on average.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Requests allowed back to back.
    pub burst: u32,
    /// Requests regained per second.
    pub per_second: f64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every (peer, kind) with a limit.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    limits: HashMap<MessageKind, RateLimit>,
    buckets: HashMap<(PeerId, MessageKind), Bucket>,
}

impl Limiter {
    pub(crate) fn new(limits: &[(MessageKind, RateLimit)]) -> Self {
        Self { limits: limits.iter().copied().collect(), buckets: HashMap::new() }
    }

    /// Whether `peer` may send one more request of `kind` at `now` (and takes a token if so).
    /// Kinds without a limit, and frames whose kind cannot be read, always may.
    pub(crate) fn allow(&mut self, peer: PeerId, kind: Option<MessageKind>, now: Instant) -> Result<(), RateLimit> {
        let Some(kind) = kind else { return Ok(()) };
        let Some(&limit) = self.limits.get(&kind) else { return Ok(()) };
        let burst = f64::from(limit.burst);
        let b = self.buckets.entry((peer, kind)).or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * limit.per_second).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(limit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_refill_rate_per_peer_and_kind() {
        let mut l = Limiter::new(&[(MessageKind::Hello, RateLimit { burst: 3, per_second: 0.5 })]);
        let (a, b) = (PeerId::random(), PeerId::random());
        let hello = Some(MessageKind::Hello);
        for _ in 0..3 {
            assert!(l.allow(a, hello, Instant::now()).is_ok());
        }
        assert!(l.allow(a, hello, Instant::now()).is_err(), "the burst is spent");
        assert!(l.allow(b, hello, Instant::now()).is_ok(), "another peer has its own bucket");
        assert!(l.allow(a, Some(MessageKind::Submission), Instant::now()).is_ok(), "kinds without a limit pass");
        assert!(l.allow(a, None, Instant::now()).is_ok());
        tokio::time::advance(Duration::from_millis(1900)).await;
        assert!(l.allow(a, hello, Instant::now()).is_err(), "0.95 of a token after 1.9 s");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(l.allow(a, hello, Instant::now()).is_ok(), "one token after 2 s");
        assert!(l.allow(a, hello, Instant::now()).is_err());
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..3 {
            assert!(l.allow(a, hello, Instant::now()).is_ok(), "refilled up to the burst");
        }
        assert!(l.allow(a, hello, Instant::now()).is_err(), "and no further");
    }
}
