//! The aggregator's Prometheus metrics: rounds, participants, submissions accepted and refused
//! by reason, round and distillation seconds, validation accuracy, and (through
//! [`net::metrics::Traffic`]) bytes in and out per peer and kind. Always counted (it is cheap);
//! served only when the config names a `metrics` address.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use net::metrics::{ReasonLabel, Submissions, Traffic, reason_label, registered, seconds};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use protocol::{ParticipantId, RefusalReason};

/// Every series the aggregator updates.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Rounds completed since start-up.
    pub rounds: Counter,
    /// The last round completed (resumed rounds included).
    pub round: Gauge,
    /// Participants of the last completed round.
    pub participants: Gauge,
    /// Nodes joined now.
    pub joined: Gauge,
    /// Submissions accepted, and refused by reason.
    pub submissions: Submissions,
    /// Inbound messages refused by the network layer (signature, size, rate), by reason.
    pub messages_refused: Family<ReasonLabel, Counter>,
    /// Seconds from announcement to checkpoint, a round.
    pub round_seconds: Histogram,
    /// Seconds of the student's distillation, a round.
    pub distill_seconds: Histogram,
    /// The global student's validation accuracy after the last round (NaN until there is one).
    pub accuracy: Gauge<f64, AtomicU64>,
    /// Bytes and messages per peer and kind; given to the network.
    pub traffic: Traffic,
}

impl Metrics {
    /// Registers every series in a new registry; `roster` names peers in the traffic labels.
    pub fn new(roster: &HashMap<ParticipantId, String>) -> (Self, Registry) {
        let mut registry = Registry::default();
        let r = &mut registry;
        let m = Self {
            rounds: registered(r, "fd_rounds_completed", "Rounds completed since start-up", Counter::default()),
            round: registered(r, "fd_round", "The last round completed", Gauge::default()),
            participants: registered(
                r,
                "fd_round_participants",
                "Participants of the last completed round",
                Gauge::default(),
            ),
            joined: registered(r, "fd_nodes_joined", "Nodes joined now", Gauge::default()),
            submissions: Submissions::register(r),
            messages_refused: registered(
                r,
                "fd_messages_refused",
                "Inbound messages refused before they reached a round, by reason",
                Family::default(),
            ),
            round_seconds: registered(
                r,
                "fd_round_seconds",
                "Seconds from announcement to checkpoint, a round",
                seconds(),
            ),
            distill_seconds: registered(
                r,
                "fd_distill_seconds",
                "Seconds of the student's distillation, a round",
                seconds(),
            ),
            accuracy: registered(
                r,
                "fd_validation_accuracy",
                "The global student's validation accuracy after the last round",
                Gauge::default(),
            ),
            traffic: Traffic::register(r, roster.clone()),
        };
        m.accuracy.set(f64::NAN);
        (m, registry)
    }

    /// Counts an inbound message the network layer refused.
    pub fn refuse_message(&self, reason: RefusalReason) {
        self.messages_refused.get_or_create(&reason_label(reason)).inc();
    }
}
