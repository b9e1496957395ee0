//! The node operator's live view: a [`Board`] that the session updates at a few points (joined,
//! a round's answer accepted or refused, a request declined, a consensus taken, the end) and
//! that the HTTP endpoint reads: a `tokio::sync::watch` snapshot, borrowed for the time of one
//! serialisation. ε spent and the byte totals are read at that moment from the trainer's
//! [`Privacy`] and the network's [`Meter`], both read-only.
//!
//! It shows what the data holder may want to watch: rounds answered, ε spent of the budget,
//! bytes sent and received, the last refusal. Never the key, the data, a soft label or a
//! consensus ([`Status`] has no field that could hold one).

use std::collections::BTreeMap;
use std::sync::Arc;

use net::client::Meter;
use protocol::RefusalReason;
use serde::Serialize;
use tokio::sync::watch;

use crate::trainer::Privacy;

const PAGE: &str = include_str!("../assets/status.html");
const SCRIPT: &str = include_str!("../assets/status.js");

/// The last refusal, by either side.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Refusal {
    /// The round it concerned (0: none).
    pub round: u64,
    /// `aggregator` (it refused this node's answer) or `node` (this node refused a request).
    pub by: &'static str,
    /// The reason code.
    pub reason: String,
    /// The receipt's short explanation.
    pub detail: String,
    /// When (Unix ms).
    pub unix_ms: u64,
}

/// One accepted answer, for the plot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answered {
    /// The round.
    pub round: u64,
    /// Bytes this node had sent in all when the receipt came.
    pub sent_bytes: u64,
}

/// The privacy budget as the view shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Budget {
    /// ε spent so far.
    pub spent: f64,
    /// The budget's ε.
    pub epsilon: f64,
    /// Its δ.
    pub delta: f64,
}

/// The node as the live view shows it (`/api/status`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    /// The federation's name.
    pub federation: String,
    /// The aggregator's short id.
    pub aggregator: String,
    /// Whether the node is joined now.
    pub joined: bool,
    /// Times it joined.
    pub joins: u64,
    /// The last round it heard of.
    pub round: u64,
    /// Rounds whose answer the aggregator accepted.
    pub answered: Vec<Answered>,
    /// Answers the aggregator refused, by reason.
    pub refused: BTreeMap<String, u64>,
    /// Requests this node declined (its policy, its budget), by reason.
    pub declined: BTreeMap<String, u64>,
    /// Consensus messages taken.
    pub consensus: u64,
    /// The last refusal, by either side.
    pub last_refusal: Option<Refusal>,
    /// The aggregator declared the federation finished.
    pub finished: bool,
    /// The privacy budget, if there is one.
    pub privacy: Option<Budget>,
    /// Bytes sent in all (what left the machine; the egress ledger has each message).
    pub sent_bytes: u64,
    /// Bytes received in all.
    pub received_bytes: u64,
    /// When the document was made (Unix ms).
    pub now_unix_ms: u64,
}

/// The node's side of the live view. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Board {
    tx: Arc<watch::Sender<Status>>,
    privacy: Privacy,
    meter: Option<Meter>,
}

impl Board {
    /// A board for a node of `federation` that answers `aggregator`.
    pub fn new(federation: &str, aggregator: &protocol::ParticipantId, privacy: Privacy) -> Self {
        let status = Status {
            federation: federation.to_owned(),
            aggregator: aggregator.short(),
            joined: false,
            joins: 0,
            round: 0,
            answered: Vec::new(),
            refused: BTreeMap::new(),
            declined: BTreeMap::new(),
            consensus: 0,
            last_refusal: None,
            finished: false,
            privacy: None,
            sent_bytes: 0,
            received_bytes: 0,
            now_unix_ms: 0,
        };
        Self { tx: Arc::new(watch::Sender::new(status)), privacy, meter: None }
    }

    /// Reads the byte totals from `meter`.
    pub fn with_meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Joined at round `round`.
    pub fn joined(&self, round: u64) {
        self.tx.send_modify(|s| {
            s.joined = true;
            s.joins += 1;
            s.round = s.round.max(round);
        });
    }

    /// The connection to the aggregator is lost.
    pub fn left(&self) {
        self.tx.send_modify(|s| s.joined = false);
    }

    /// Round `round` was announced (and taken).
    pub fn announced(&self, round: u64) {
        self.tx.send_modify(|s| s.round = s.round.max(round));
    }

    /// The aggregator accepted the answer to `round`.
    pub fn answered(&self, round: u64) {
        let sent_bytes = self.meter.as_ref().map_or(0, |m| m.traffic().0);
        self.tx.send_modify(|s| s.answered.push(Answered { round, sent_bytes }));
    }

    /// The aggregator refused the answer to `round`.
    pub fn refused(&self, round: u64, reason: RefusalReason, detail: &str) {
        self.refusal("aggregator", round, reason, detail);
    }

    /// This node declined a request about `round`.
    pub fn declined(&self, round: u64, reason: RefusalReason, detail: &str) {
        self.refusal("node", round, reason, detail);
    }

    fn refusal(&self, by: &'static str, round: u64, reason: RefusalReason, detail: &str) {
        let code = format!("{reason:?}");
        self.tx.send_modify(|s| {
            let counts = if by == "node" { &mut s.declined } else { &mut s.refused };
            *counts.entry(code.clone()).or_default() += 1;
            let detail = protocol::message::short_detail(detail);
            s.last_refusal = Some(Refusal { round, by, reason: code, detail, unix_ms: net::clock::now_ms() });
        });
    }

    /// A consensus was taken.
    pub fn consensus(&self) {
        self.tx.send_modify(|s| s.consensus += 1);
    }

    /// The aggregator declared the federation finished.
    pub fn finished(&self) {
        self.tx.send_modify(|s| s.finished = true);
    }

    /// The snapshot now, with ε spent and the byte totals read at this moment.
    pub fn snapshot(&self) -> Status {
        let mut s = self.tx.borrow().clone();
        s.now_unix_ms = net::clock::now_ms();
        s.privacy = self.privacy.budget.map(|(epsilon, delta)| Budget { spent: self.privacy.spent(), epsilon, delta });
        if let Some(m) = &self.meter {
            (s.sent_bytes, s.received_bytes) = m.traffic();
        }
        s
    }

    /// The live view to serve: the page, its script and the snapshot as JSON.
    pub fn view(&self) -> net::http::LiveView {
        let board = self.clone();
        net::http::LiveView::new(
            PAGE,
            SCRIPT,
            Arc::new(move || {
                serde_json::to_string(&board.snapshot()).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_by_either_side_and_answers_are_shown() {
        let b = Board::new("f", &protocol::ParticipantId([1; 32]), Privacy::default());
        b.joined(2);
        b.answered(2);
        b.declined(3, RefusalReason::BudgetSpent, "no budget left");
        b.refused(4, RefusalReason::Late, "round 4 is closed");
        let s = b.snapshot();
        assert_eq!((s.joined, s.joins, s.round), (true, 1, 2));
        assert_eq!(s.answered, [Answered { round: 2, sent_bytes: 0 }]);
        assert_eq!(s.declined.get("BudgetSpent"), Some(&1));
        let last = s.last_refusal.expect("a refusal");
        assert_eq!((last.round, last.by, last.reason.as_str()), (4, "aggregator", "Late"));
        assert!(s.privacy.is_none(), "no budget, no ε");
        let doc: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&b.snapshot()).expect("json")).expect("json");
        let keys: Vec<&String> = doc.as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            [
                "aggregator",
                "answered",
                "consensus",
                "declined",
                "federation",
                "finished",
                "joined",
                "joins",
                "last_refusal",
                "now_unix_ms",
                "privacy",
                "received_bytes",
                "refused",
                "round",
                "sent_bytes"
            ]
        );
    }
}
