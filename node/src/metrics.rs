//! The node's Prometheus metrics: joins, rounds answered, submissions the aggregator accepted
//! and refused by reason, requests this node declined by reason, consensus messages received,
//! seconds of local work a round, (through [`net::metrics::Traffic`]) what it sent and received,
//! in bytes and messages per kind, and AutoNAT's verdict on its reachability. Always counted;
//! served only when `node.toml` names a `metrics` address.

use net::metrics::{ReachabilityGauge, ReasonLabel, Submissions, Traffic, reason_label, registered, seconds};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use protocol::{ParticipantId, RefusalReason};

/// Every series the node updates.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Times the node joined (reconnections included).
    pub joins: Counter,
    /// The last round whose submission the aggregator accepted.
    pub round: Gauge,
    /// This node's submissions the aggregator accepted, and refused by reason.
    pub submissions: Submissions,
    /// Requests and rounds this node declined (its policy, its budget, bad messages), by reason.
    pub declined: Family<ReasonLabel, Counter>,
    /// Consensus messages received and taken.
    pub consensus: Counter,
    /// Seconds of one round's local work (digest, training, soft labels).
    pub work_seconds: Histogram,
    /// Bytes and messages per kind; given to the network.
    pub traffic: Traffic,
    /// AutoNAT's verdict on this node (`fd_reachability{status}`).
    pub reachability: ReachabilityGauge,
}

impl Metrics {
    /// Registers every series in a new registry; the aggregator is labelled `aggregator`.
    pub fn new(aggregator: ParticipantId) -> (Self, Registry) {
        let mut registry = Registry::default();
        let r = &mut registry;
        let m = Self {
            joins: registered(r, "fd_joins", "Times the node joined the federation", Counter::default()),
            round: registered(
                r,
                "fd_round",
                "The last round whose submission the aggregator accepted",
                Gauge::default(),
            ),
            submissions: Submissions::register(r),
            declined: registered(
                r,
                "fd_requests_declined",
                "Requests and rounds this node declined, by reason",
                Family::default(),
            ),
            consensus: registered(r, "fd_consensus_received", "Consensus messages received", Counter::default()),
            work_seconds: registered(r, "fd_work_seconds", "Seconds of one round's local work", seconds()),
            traffic: Traffic::register(r, [(aggregator, "aggregator".to_owned())].into()),
            reachability: ReachabilityGauge::register(r),
        };
        (m, registry)
    }

    /// Counts a request or round this node declined.
    pub fn decline(&self, reason: RefusalReason) {
        self.declined.get_or_create(&reason_label(reason)).inc();
    }
}
