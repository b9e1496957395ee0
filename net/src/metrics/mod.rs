//! Prometheus metrics, shared by node and aggregator: what crossed the wire ([`Traffic`], bytes
//! and messages per peer, kind and direction, counted where messages are sealed and read),
//! AutoNAT's verdict ([`ReachabilityGauge`]); the HTTP endpoint that serves a registry is
//! [`crate::http`] (also reachable as `metrics::http`).
//!
//! The owner (node or aggregator) builds one [`Registry`], registers its own metrics and a
//! [`Traffic`] in it, hands the `Traffic` to the network in [`crate::NetConfig::traffic`] and the
//! registry to [`http::Endpoint`]. The event loop never serves HTTP; it only counts.

pub use crate::http;

use std::collections::HashMap;
use std::sync::Arc;

use libp2p::PeerId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use protocol::{MessageKind, ParticipantId, RefusalReason};

use crate::ids::participant;
use crate::nat::Reachability;

/// Labels of one traffic series: the peer (its roster name, else its short id) and the kind.
type PeerKind = [(&'static str, String); 2];

/// A label set with one `reason` label (a [`RefusalReason`] in its `Debug` spelling).
pub type ReasonLabel = [(&'static str, String); 1];

/// The `reason` label of a refusal.
pub fn reason_label(reason: RefusalReason) -> ReasonLabel {
    [("reason", format!("{reason:?}"))]
}

/// Registers `metric` under `name` and returns it (its clones share its value).
pub fn registered<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

/// A histogram of durations in seconds, from 50 ms to about 7 minutes (doubling buckets).
pub fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

/// Submissions the aggregator accepted, and those it refused by reason: counted by the
/// aggregator as it decides, and by a node as it reads the receipts.
#[derive(Clone, Debug)]
pub struct Submissions {
    /// Accepted.
    pub accepted: Counter,
    /// Refused, by reason.
    pub refused: Family<ReasonLabel, Counter>,
}

impl Submissions {
    /// Registers `fd_submissions_accepted` and `fd_submissions_refused`.
    pub fn register(registry: &mut Registry) -> Self {
        Self {
            accepted: registered(
                registry,
                "fd_submissions_accepted",
                "Submissions the aggregator accepted",
                Counter::default(),
            ),
            refused: registered(
                registry,
                "fd_submissions_refused",
                "Submissions the aggregator refused, by reason",
                Family::default(),
            ),
        }
    }

    /// Counts a refused submission.
    pub fn refuse(&self, reason: RefusalReason) {
        self.refused.get_or_create(&reason_label(reason)).inc();
    }
}

/// Bytes and messages sent and received, per peer and message kind. Cheap to clone (the series
/// are shared). Peers are only those the allow-list admits, so the label sets stay bounded.
#[derive(Clone, Debug)]
pub struct Traffic {
    sent_bytes: Family<PeerKind, Counter>,
    received_bytes: Family<PeerKind, Counter>,
    sent_messages: Family<PeerKind, Counter>,
    received_messages: Family<PeerKind, Counter>,
    refused_connections: Counter,
    names: Arc<HashMap<ParticipantId, String>>,
}

impl Traffic {
    /// Registers the traffic series in `registry`; `names` label known peers by name.
    pub fn register(registry: &mut Registry, names: HashMap<ParticipantId, String>) -> Self {
        let r = registry;
        Self {
            sent_bytes: registered(
                r,
                "fd_sent_bytes",
                "Bytes of signed envelopes sent, by peer and message kind",
                Family::default(),
            ),
            received_bytes: registered(
                r,
                "fd_received_bytes",
                "Bytes of envelopes received, by peer and message kind",
                Family::default(),
            ),
            sent_messages: registered(
                r,
                "fd_sent_messages",
                "Messages sent, by peer and message kind",
                Family::default(),
            ),
            received_messages: registered(
                r,
                "fd_received_messages",
                "Messages received, by peer and message kind",
                Family::default(),
            ),
            refused_connections: registered(
                r,
                "fd_refused_connections",
                "Incoming connections refused by the allow-list or the connection limits, logged or not",
                Counter::default(),
            ),
            names: Arc::new(names),
        }
    }

    fn labels(&self, peer: &PeerId, kind: Option<MessageKind>) -> PeerKind {
        let name = match participant(peer) {
            Some(p) => self.names.get(&p).cloned().unwrap_or_else(|| p.short()),
            None => "unknown".to_owned(),
        };
        let kind = kind.map_or_else(|| "unknown".to_owned(), |k| format!("{k:?}"));
        [("peer", name), ("kind", kind)]
    }

    /// Counts one message of `bytes` sent to `peer`.
    pub fn sent(&self, peer: &PeerId, kind: MessageKind, bytes: usize) {
        let labels = self.labels(peer, Some(kind));
        self.sent_bytes.get_or_create(&labels).inc_by(bytes as u64);
        self.sent_messages.get_or_create(&labels).inc();
    }

    /// Counts an incoming connection refused by the allow-list or the connection limits.
    pub fn refused_connection(&self) {
        self.refused_connections.inc();
    }

    /// Counts one frame received from `peer` (its kind read from the envelope's header).
    pub fn received(&self, peer: &PeerId, frame: &[u8]) {
        let labels = self.labels(peer, protocol::codec::peek_kind(frame));
        self.received_bytes.get_or_create(&labels).inc_by(frame.len() as u64);
        self.received_messages.get_or_create(&labels).inc();
    }
}

/// AutoNAT's verdict as `fd_reachability{status}`: 1 for the current status, 0 for the others.
#[derive(Clone, Debug)]
pub struct ReachabilityGauge(Family<[(&'static str, String); 1], Gauge>);

impl ReachabilityGauge {
    /// Registers `fd_reachability`, at `unknown`.
    pub fn register(registry: &mut Registry) -> Self {
        let g = Self(registered(
            registry,
            "fd_reachability",
            "Whether AutoNAT found this peer reachable from outside (1 for the current status)",
            Family::default(),
        ));
        g.set(&Reachability::Unknown);
        g
    }

    /// Makes `now` the current status.
    pub fn set(&self, now: &Reachability) {
        for name in Reachability::NAMES {
            self.0.get_or_create(&[("status", name.to_owned())]).set(i64::from(name == now.name()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Identity, Message, Receipt, ReceiptStatus, SignedEnvelope};

    #[test]
    fn traffic_is_counted_by_peer_name_and_kind() {
        let me = Identity::from_seed([1; 32]).expect("seed");
        let other = Identity::from_seed([2; 32]).expect("seed");
        let mut registry = Registry::default();
        let t = Traffic::register(&mut registry, HashMap::from([(other.id(), "hospital-a".to_owned())]));
        let receipt = Message::Receipt(Receipt {
            federation: protocol::FederationId::new("f").expect("id"),
            round: 3,
            status: ReceiptStatus::Accepted,
            detail: String::new(),
        });
        let frame = SignedEnvelope::seal(&receipt, &me).expect("seal").to_bytes().expect("bytes");
        let peer = crate::peer_id(&other.id());
        t.sent(&peer, MessageKind::Submission, 100);
        t.sent(&peer, MessageKind::Submission, 20);
        t.received(&peer, &frame);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("fd_sent_bytes_total{peer=\"hospital-a\",kind=\"Submission\"} 120"), "{text}");
        assert!(text.contains("fd_sent_messages_total{peer=\"hospital-a\",kind=\"Submission\"} 2"), "{text}");
        assert!(
            text.contains(&format!("fd_received_bytes_total{{peer=\"hospital-a\",kind=\"Receipt\"}} {}", frame.len())),
            "{text}"
        );
    }

    #[test]
    fn reachability_is_one_status_at_a_time() {
        let mut registry = Registry::default();
        let g = ReachabilityGauge::register(&mut registry);
        g.set(&Reachability::Private);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("fd_reachability{status=\"private\"} 1"), "{text}");
        assert!(text.contains("fd_reachability{status=\"unknown\"} 0"), "{text}");
        assert!(text.contains("fd_reachability{status=\"public\"} 0"), "{text}");
    }
}
