//! The round state machine: which submissions are accepted, and when a round may close.
//!
//! A round is ready to close when every roster member has submitted, or when the quorum is met
//! and the deadline has passed; never with fewer than [`MIN_PARTICIPANTS`] submissions (with
//! two, each node would learn the other's labels from the consensus). After it closes, every
//! submission is refused as late. Soft labels of the plain and sample-weighted means are
//! streamed into a running mean as they arrive; the other rules (confidence, median, trimmed
//! mean) keep each matrix until the round closes.

use std::collections::{BTreeMap, HashSet};

use learning::consensus::{self, Combined, ConsensusConfig, MeanAccumulator, Rule, MIN_PARTICIPANTS};
use protocol::{Limits, ParticipantId, RefusalReason, RoundAnnouncement, Submission};
use tokio::time::Instant;

enum Collector {
    Stream(MeanAccumulator),
    Keep(Vec<(Vec<f32>, u64)>),
}

/// One round's state.
pub struct RoundState {
    /// The announcement that opened the round.
    pub announcement: RoundAnnouncement,
    deadline: Instant,
    roster: HashSet<ParticipantId>,
    quorum: usize,
    accepted: BTreeMap<ParticipantId, u64>,
    collector: Collector,
    cfg: ConsensusConfig,
    closed: bool,
}

fn refused(reason: RefusalReason, detail: impl Into<String>) -> protocol::Error {
    protocol::Error::Refused { reason, detail: detail.into() }
}

impl RoundState {
    /// Opens a round.
    pub fn new(announcement: RoundAnnouncement, roster: HashSet<ParticipantId>, quorum: usize, deadline: Instant, cfg: ConsensusConfig) -> Self {
        let (samples, classes) = (announcement.selection.len(), announcement.classes as usize);
        let collector = if cfg.rule.streams() {
            Collector::Stream(MeanAccumulator::new(samples, classes))
        } else {
            Collector::Keep(Vec::new())
        };
        Self { announcement, deadline, roster, quorum: quorum.max(MIN_PARTICIPANTS), accepted: BTreeMap::new(), collector, cfg, closed: false }
    }

    /// Round number.
    pub fn round(&self) -> u64 {
        self.announcement.round
    }

    /// Validates and records a submission; the error carries the reason code for the receipt.
    pub fn submit(&mut self, from: ParticipantId, sub: &Submission, limits: &Limits) -> Result<(), protocol::Error> {
        if !self.roster.contains(&from) {
            return Err(refused(RefusalReason::NotOnRoster, "this key is not on the roster"));
        }
        if sub.round < self.round() || (sub.round == self.round() && self.closed) {
            return Err(refused(RefusalReason::Late, format!("round {} is closed", sub.round)));
        }
        if sub.round > self.round() {
            return Err(refused(RefusalReason::WrongRound, format!("round {} is open, not {}", self.round(), sub.round)));
        }
        if self.accepted.contains_key(&from) {
            return Err(refused(RefusalReason::Duplicate, format!("already submitted for round {}", sub.round)));
        }
        sub.check_against(&self.announcement)?;
        let probs = sub.labels.decode(limits)?;
        match &mut self.collector {
            Collector::Stream(acc) => {
                let w = if self.cfg.rule == Rule::WeightedBySamples { sub.local_samples as f64 } else { 1.0 };
                acc.add(&probs, w).map_err(|e| refused(RefusalReason::WrongShape, e.to_string()))?;
            }
            Collector::Keep(v) => v.push((probs, sub.local_samples)),
        }
        self.accepted.insert(from, sub.local_samples);
        Ok(())
    }

    /// Participants whose submission was accepted.
    pub fn participants(&self) -> Vec<ParticipantId> {
        self.accepted.keys().copied().collect()
    }

    /// Whether the round may close at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        let n = self.accepted.len();
        n >= MIN_PARTICIPANTS && (n >= self.roster.len() || (n >= self.quorum && now >= self.deadline))
    }

    /// When the deadline passes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Closes the round and combines what was accepted.
    pub fn close(&mut self) -> Result<Combined, crate::Error> {
        self.closed = true;
        let round = self.round();
        let failed = |detail: String| crate::Error::Round { round, detail };
        let (samples, classes) = (self.announcement.selection.len(), self.announcement.classes as usize);
        if self.accepted.len() < MIN_PARTICIPANTS {
            return Err(failed(format!("{} submissions; a consensus needs at least {MIN_PARTICIPANTS}", self.accepted.len())));
        }
        match &self.collector {
            Collector::Stream(acc) => {
                if acc.nodes() == 0 {
                    return Err(failed("no submissions".into()));
                }
                Ok(consensus::postprocess(acc.finish(), classes, &self.cfg))
            }
            Collector::Keep(v) => {
                let inputs: Vec<(&[f32], u64)> = v.iter().map(|(p, n)| (p.as_slice(), *n)).collect();
                consensus::combine(&inputs, samples, classes, &self.cfg).map_err(|e| failed(e.to_string()))
            }
        }
    }

    /// Whether the round is closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Encoding, FederationId, ReferenceSetId, SampleSelection, SoftLabels};
    use std::time::Duration;

    fn ann(round: u64) -> RoundAnnouncement {
        RoundAnnouncement {
            federation: FederationId::new("t").unwrap(),
            round,
            reference_set: ReferenceSetId([1; 32]),
            reference_samples: 10,
            selection: SampleSelection::Seeded { seed: 1, count: 2 },
            classes: 2,
            temperature: 2.0,
            deadline_unix_ms: 0,
            encoding: Encoding::F32,
        }
    }

    fn sub(round: u64, p: f32) -> Submission {
        Submission {
            federation: FederationId::new("t").unwrap(),
            round,
            reference_set: ReferenceSetId([1; 32]),
            temperature: 2.0,
            local_samples: 10,
            labels: SoftLabels::encode(&[p, 1.0 - p, p, 1.0 - p], 2, 2, Encoding::F32).unwrap(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn closes_when_everyone_answered_or_at_the_deadline_with_quorum() {
        let ids: Vec<ParticipantId> = (0..4).map(|i| ParticipantId([i; 32])).collect();
        let start = Instant::now();
        let mut st = RoundState::new(ann(4), ids.iter().copied().collect(), 3, start + Duration::from_secs(30), ConsensusConfig::default());
        let limits = Limits::default();
        st.submit(ids[0], &sub(4, 0.9), &limits).unwrap();
        st.submit(ids[1], &sub(4, 0.8), &limits).unwrap();
        assert!(!st.ready(Instant::now()), "two of four, before the deadline");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!st.ready(Instant::now()), "deadline passed but no quorum");
        st.submit(ids[2], &sub(4, 0.7), &limits).unwrap();
        assert!(st.ready(Instant::now()), "quorum after the deadline");
        let c = st.close().unwrap();
        assert!((c.probs[0] - 0.8).abs() < 1e-6);
        assert_eq!(st.participants(), vec![ids[0], ids[1], ids[2]]);
        let late = st.submit(ids[3], &sub(4, 0.5), &limits).unwrap_err();
        assert_eq!(late.refusal_reason(), RefusalReason::Late);
    }

    #[tokio::test(start_paused = true)]
    async fn no_consensus_from_fewer_than_three_even_when_everyone_answered() {
        // A roster of two (a config the aggregator refuses) and a quorum of one: everyone
        // answered and the deadline passed, and still the round does not close.
        let ids: Vec<ParticipantId> = (0..2).map(|i| ParticipantId([i; 32])).collect();
        let mut st = RoundState::new(ann(1), ids.iter().copied().collect(), 1, Instant::now(), ConsensusConfig::default());
        let limits = Limits::default();
        st.submit(ids[0], &sub(1, 0.9), &limits).unwrap();
        st.submit(ids[1], &sub(1, 0.8), &limits).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!st.ready(Instant::now()));
        assert!(matches!(st.close(), Err(crate::Error::Round { round: 1, .. })), "nothing is released");
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_duplicates_strangers_wrong_rounds_and_bad_values() {
        let ids: Vec<ParticipantId> = (0..3).map(|i| ParticipantId([i; 32])).collect();
        let mut st = RoundState::new(ann(2), ids.iter().copied().collect(), 1, Instant::now() + Duration::from_secs(5), ConsensusConfig::default());
        let limits = Limits::default();
        let code = |r: Result<(), protocol::Error>| r.unwrap_err().refusal_reason();
        assert_eq!(code(st.submit(ParticipantId([9; 32]), &sub(2, 0.5), &limits)), RefusalReason::NotOnRoster);
        assert_eq!(code(st.submit(ids[0], &sub(1, 0.5), &limits)), RefusalReason::Late);
        assert_eq!(code(st.submit(ids[0], &sub(3, 0.5), &limits)), RefusalReason::WrongRound);
        let mut nan = sub(2, 0.5);
        nan.labels.data[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(code(st.submit(ids[0], &nan, &limits)), RefusalReason::InvalidValues);
        st.submit(ids[0], &sub(2, 0.5), &limits).unwrap();
        assert_eq!(code(st.submit(ids[0], &sub(2, 0.6), &limits)), RefusalReason::Duplicate);
        assert!(!st.ready(Instant::now()));
        st.submit(ids[1], &sub(2, 0.5), &limits).unwrap();
        assert!(!st.ready(Instant::now()));
        st.submit(ids[2], &sub(2, 0.5), &limits).unwrap();
        assert!(st.ready(Instant::now()), "everyone answered: no need to wait for the deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn robust_rules_keep_matrices_and_outvote() {
        let ids: Vec<ParticipantId> = (0..3).map(|i| ParticipantId([i; 32])).collect();
        let cfg = ConsensusConfig { rule: Rule::Median, ..Default::default() };
        let mut st = RoundState::new(ann(1), ids.iter().copied().collect(), 3, Instant::now(), cfg);
        let limits = Limits::default();
        st.submit(ids[0], &sub(1, 0.9), &limits).unwrap();
        st.submit(ids[1], &sub(1, 0.8), &limits).unwrap();
        st.submit(ids[2], &sub(1, 0.0), &limits).unwrap();
        let c = st.close().unwrap();
        assert!((c.probs[0] - 0.8).abs() < 1e-5, "median, not the mean 0.57: {:?}", c.probs);
    }
}
