//! The round state machine: which submissions are accepted, and when a round may close.
//!
//! A round is ready to close when every roster member has submitted, or when the quorum is met
//! and the deadline has passed; never with fewer than [`MIN_PARTICIPANTS`] submissions (with
//! two, each node would learn the other's labels from the consensus). After it closes, every
//! submission is refused as late. Soft labels of the plain and sample-weighted means are
//! streamed into a running mean as they arrive; the other rules (confidence, median, trimmed
//! mean) keep each matrix until the round closes, and so does `weighted_by_samples` unless the
//! roster declares every node's count: a reported count is clipped to a multiple of the round's
//! median ([`crate::weights`]), known only at the close. A node's abstentions (its mask) weigh
//! its rows 0 on those samples: they count toward the quorum as answers, and an answer that
//! abstains on every sample is valid and counted, but adds to no sample's consensus.
//!
//! A submission goes through three steps: [`RoundState::admit`] (the cheap checks: roster,
//! round, duplicates, announcement), [`Answer::decode`] (the payload: CPU work, which the
//! aggregator runs off its async runtime) and [`RoundState::record`]; [`RoundState::submit`]
//! does the three on the calling thread. [`RoundState::close`] combines the answers (CPU work
//! too, run off the runtime).

use std::collections::{BTreeSet, HashSet};

use learning::consensus::{self, Combined, ConsensusConfig, MIN_PARTICIPANTS, MeanAccumulator, Rule};
use protocol::message::{Reply, SecureReply};
use protocol::secagg;
use protocol::{Limits, ParticipantId, RefusalReason, RoundAnnouncement, Submission};
use tokio::time::Instant;

use crate::error::Error;
use crate::weights::{self, Count, SampleCounts};

/// A kept submission: its probabilities, its count, and the samples it abstained on.
type Kept = (Vec<f32>, Count, Option<Vec<bool>>);

enum Collector {
    Stream(MeanAccumulator),
    Keep(Vec<Kept>),
    /// Secure aggregation: the masked vectors are summed by the protocol's server, which never
    /// holds one unmasked.
    Secure(Box<secagg::Server>),
}

/// A submission's payload, decoded: its probabilities (`samples × classes`) and the samples it
/// abstained on.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    probs: Vec<f32>,
    abstained: Option<Vec<bool>>,
}

impl Answer {
    /// Decodes `sub`'s soft labels (of `classes` classes) under `limits`, and its mask. CPU work
    /// proportional to the payload: the aggregator runs it off its async runtime.
    pub fn decode(sub: &Submission, limits: &Limits, classes: u32) -> Result<Self, protocol::Error> {
        let probs = sub.labels.decode(limits)?;
        let samples = probs.len() / classes.max(1) as usize;
        let abstained = sub.abstained.as_ref().map(|m| m.to_bools(samples)).transpose()?;
        Ok(Self { probs, abstained })
    }
}

/// A submission that passed [`RoundState::admit`]: its sender and where its count comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    from: ParticipantId,
    count: Count,
}

/// One round's state.
pub struct RoundState {
    /// The announcement that opened the round.
    pub announcement: RoundAnnouncement,
    deadline: Instant,
    roster: HashSet<ParticipantId>,
    quorum: usize,
    accepted: BTreeSet<ParticipantId>,
    /// Roster members that refused this round's question (spent budget, their policy): they
    /// will not answer, so the round need not wait for them.
    declined: BTreeSet<ParticipantId>,
    collector: Collector,
    cfg: ConsensusConfig,
    counts: SampleCounts,
    closed: bool,
}

fn refused(reason: RefusalReason, detail: impl Into<String>) -> protocol::Error {
    protocol::Error::Refused { reason, detail: detail.into() }
}

impl RoundState {
    /// Opens a round. `weighted_by_samples` weighs by reported counts, clipped, unless
    /// [`RoundState::with_sample_counts`] gives declared ones.
    pub fn new(
        announcement: RoundAnnouncement,
        roster: HashSet<ParticipantId>,
        quorum: usize,
        deadline: Instant,
        cfg: ConsensusConfig,
    ) -> Self {
        let mut st = Self {
            announcement,
            deadline,
            roster,
            quorum: quorum.max(MIN_PARTICIPANTS),
            accepted: BTreeSet::new(),
            declined: BTreeSet::new(),
            collector: Collector::Keep(Vec::new()),
            cfg,
            counts: SampleCounts::default(),
            closed: false,
        };
        st.collector = st.empty_collector();
        st
    }

    /// The round with these counts for `weighted_by_samples` (before any submission).
    pub fn with_sample_counts(mut self, counts: SampleCounts) -> Self {
        debug_assert!(self.accepted.is_empty(), "counts are set before the first submission");
        self.counts = counts;
        self.collector = self.empty_collector();
        self
    }

    /// The secure round whose masked vectors `server` sums (before any submission): plain
    /// submissions are refused from then on.
    pub fn with_secure(mut self, server: secagg::Server) -> Self {
        debug_assert!(self.accepted.is_empty(), "the server is set before the first submission");
        self.collector = Collector::Secure(Box::new(server));
        self
    }

    /// The secure round's server, if the round is secure.
    pub fn server_mut(&mut self) -> Option<&mut secagg::Server> {
        match &mut self.collector {
            Collector::Secure(s) => Some(s),
            _ => None,
        }
    }

    /// Takes a member's masked vector: the checks of [`RoundState::admit`] (roster, round,
    /// duplicate, announcement), then the server's; the error carries the reason code.
    pub fn submit_masked(&mut self, from: ParticipantId, reply: SecureReply) -> Result<(), protocol::Error> {
        let Reply::Masked(masked) = reply.reply else {
            return Err(refused(
                RefusalReason::Unavailable,
                format!("a {} reply is not a request", reply.reply.name()),
            ));
        };
        self.check_sender(from, reply.round)?;
        if reply.announcement != self.announcement.digest() || reply.federation != self.announcement.federation {
            return Err(refused(RefusalReason::WrongAnnouncement, "answers another announcement"));
        }
        let Collector::Secure(server) = &mut self.collector else {
            return Err(refused(RefusalReason::Policy, "this round is not secure: send a submission"));
        };
        server.receive_masked(&from, masked).map_err(|e| refused(RefusalReason::InvalidValues, e.to_string()))?;
        self.accepted.insert(from);
        self.declined.remove(&from);
        Ok(())
    }

    /// Closes a secure round and hands its server over for unmasking (`None`: not secure).
    pub fn close_secure(&mut self) -> Option<Box<secagg::Server>> {
        self.closed = true;
        match std::mem::replace(&mut self.collector, Collector::Keep(Vec::new())) {
            Collector::Secure(s) => Some(s),
            other => {
                self.collector = other;
                None
            }
        }
    }

    /// Streams the mean rules, except `weighted_by_samples` while a roster member has no
    /// declared count (its weight depends on the round's median).
    fn empty_collector(&self) -> Collector {
        let (samples, classes) = (self.announcement.selection.len(), self.announcement.classes as usize);
        let all_declared = self.roster.iter().all(|p| self.counts.declared.contains_key(p));
        if self.cfg.streams() && (self.cfg.rule != Rule::WeightedBySamples || all_declared) {
            Collector::Stream(MeanAccumulator::new(samples, classes))
        } else {
            Collector::Keep(Vec::new())
        }
    }

    /// Round number.
    pub fn round(&self) -> u64 {
        self.announcement.round
    }

    /// Validates and records a submission on the calling thread ([`RoundState::admit`], then
    /// [`Answer::decode`], then [`RoundState::record`]); the error carries the reason code for
    /// the receipt.
    pub fn submit(&mut self, from: ParticipantId, sub: &Submission, limits: &Limits) -> Result<(), protocol::Error> {
        let admitted = self.admit(from, sub)?;
        let answer = Answer::decode(sub, limits, self.announcement.classes)?;
        self.record(admitted, answer)
    }

    /// The checks that do not read the payload: `from` is on the roster and has not answered
    /// yet, the round is open, and `sub` answers its announcement. Cheap.
    pub fn admit(&self, from: ParticipantId, sub: &Submission) -> Result<Admitted, protocol::Error> {
        self.check_sender(from, sub.round)?;
        if matches!(self.collector, Collector::Secure(_)) {
            return Err(refused(
                RefusalReason::Policy,
                "this round is secure: soft labels are taken masked only, never in the clear",
            ));
        }
        sub.check_against(&self.announcement)?;
        Ok(Admitted { from, count: self.counts.count(&from, sub.local_samples) })
    }

    /// `from` is on the roster (the cohort), has not answered `round` yet, and `round` is open.
    fn check_sender(&self, from: ParticipantId, round: u64) -> Result<(), protocol::Error> {
        if !self.roster.contains(&from) {
            return Err(refused(RefusalReason::NotOnRoster, "this key is not on the roster"));
        }
        if round < self.round() || (round == self.round() && self.closed) {
            return Err(refused(RefusalReason::Late, format!("round {round} is closed")));
        }
        if round > self.round() {
            return Err(refused(RefusalReason::WrongRound, format!("round {} is open, not {round}", self.round())));
        }
        if self.accepted.contains(&from) {
            return Err(refused(RefusalReason::Duplicate, format!("already submitted for round {round}")));
        }
        Ok(())
    }

    /// Records an admitted submission's decoded answer. Refused as late or duplicate if the
    /// round closed, or took another submission from the sender, since it was admitted.
    pub fn record(&mut self, admitted: Admitted, answer: Answer) -> Result<(), protocol::Error> {
        let Admitted { from, count } = admitted;
        if self.closed {
            return Err(refused(RefusalReason::Late, format!("round {} is closed", self.round())));
        }
        if self.accepted.contains(&from) {
            return Err(refused(RefusalReason::Duplicate, format!("already submitted for round {}", self.round())));
        }
        let Answer { probs, abstained } = answer;
        match &mut self.collector {
            Collector::Stream(acc) => {
                // Streaming `weighted_by_samples` means every roster member has a declared count.
                let w = match count {
                    Count::Declared(n) if self.cfg.rule == Rule::WeightedBySamples => n as f64,
                    _ => 1.0,
                };
                let rows = row_weights(w, abstained.as_deref(), probs.len() / self.announcement.classes as usize);
                acc.add_rows(&probs, &rows).map_err(|e| refused(RefusalReason::WrongShape, e.to_string()))?;
            }
            Collector::Keep(v) => v.push((probs, count, abstained)),
            Collector::Secure(_) => {
                return Err(refused(RefusalReason::Policy, "this round is secure: soft labels are taken masked only"));
            }
        }
        self.accepted.insert(from);
        self.declined.remove(&from);
        Ok(())
    }

    /// Whether `peer` is asked this round (a roster member; in a secure round, a cohort member).
    pub fn asks(&self, peer: &ParticipantId) -> bool {
        self.roster.contains(peer)
    }

    /// Participants whose submission was accepted.
    pub fn participants(&self) -> Vec<ParticipantId> {
        self.accepted.iter().copied().collect()
    }

    /// Records that roster member `from` refused this round's announcement for `reason`. A
    /// refusal that will not change within the round (a spent privacy budget, the node's query
    /// policy, another reference set, data that does not fit) means it will not answer: the round
    /// stops waiting for it.
    pub fn decline(&mut self, from: ParticipantId, round: u64, reason: RefusalReason) {
        let settled = matches!(
            reason,
            RefusalReason::BudgetSpent
                | RefusalReason::Policy
                | RefusalReason::WrongReferenceSet
                | RefusalReason::DataMismatch
        );
        if settled && round == self.round() && self.roster.contains(&from) && !self.accepted.contains(&from) {
            self.declined.insert(from);
        }
    }

    /// Whether the round may close at `now`: every roster member has answered or declined, or
    /// the quorum is met and the deadline has passed; never below [`MIN_PARTICIPANTS`].
    pub fn ready(&self, now: Instant) -> bool {
        let n = self.accepted.len();
        let enough = n >= MIN_PARTICIPANTS && n >= self.quorum.min(self.roster.len());
        enough && (self.all_settled() || now >= self.deadline)
    }

    /// Whether the round can no longer reach its quorum: every roster member has answered or
    /// declined, and too few answered.
    pub fn unreachable(&self) -> bool {
        self.all_settled() && !self.ready(self.deadline)
    }

    fn all_settled(&self) -> bool {
        self.accepted.len() + self.declined.len() >= self.roster.len()
    }

    /// Roster members that declined this round.
    pub fn declined(&self) -> usize {
        self.declined.len()
    }

    /// When the deadline passes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Closes the round and combines what was accepted.
    pub fn close(&mut self) -> Result<Combined, Error> {
        self.closed = true;
        let round = self.round();
        let failed = |detail: String| Error::Round { round, detail };
        let (samples, classes) = (self.announcement.selection.len(), self.announcement.classes as usize);
        if self.accepted.len() < MIN_PARTICIPANTS {
            return Err(failed(format!(
                "{} submissions; a consensus needs at least {MIN_PARTICIPANTS}",
                self.accepted.len()
            )));
        }
        match &self.collector {
            Collector::Secure(_) => Err(failed("a secure round is closed by unmasking its sum".into())),
            Collector::Stream(acc) => {
                if acc.nodes() == 0 {
                    return Err(failed("no submissions".into()));
                }
                Ok(consensus::postprocess(acc.finish(), acc.counts().to_vec(), classes, &self.cfg))
            }
            Collector::Keep(v) if self.cfg.rule == Rule::WeightedBySamples => {
                if v.is_empty() {
                    return Err(failed("no submissions".into()));
                }
                let counts: Vec<Count> = v.iter().map(|(_, c, _)| *c).collect();
                let clipped = self.cfg.center_clip.map(|factor| {
                    let matrices: Vec<&[f32]> = v.iter().map(|(p, _, _)| p.as_slice()).collect();
                    let knows = |i: usize, s: usize| !v[i].2.as_ref().is_some_and(|m| m[s]);
                    consensus::center_clip(&matrices, &knows, samples, classes, factor)
                });
                let mut acc = MeanAccumulator::new(samples, classes);
                for (i, ((probs, _, abstained), w)) in
                    v.iter().zip(weights::sample_weights(&counts, self.counts.clip)).enumerate()
                {
                    let probs = clipped.as_ref().map_or(probs.as_slice(), |c| c[i].as_slice());
                    acc.add_rows(probs, &row_weights(w, abstained.as_deref(), samples))?;
                }
                Ok(consensus::postprocess(acc.finish(), acc.counts().to_vec(), classes, &self.cfg))
            }
            Collector::Keep(v) => {
                // The robust rules do not weigh by counts.
                let inputs: Vec<(&[f32], u64)> = v.iter().map(|(p, _, _)| (p.as_slice(), 1)).collect();
                let abstained: Vec<Option<&[bool]>> = v.iter().map(|(_, _, a)| a.as_deref()).collect();
                consensus::combine_abstaining(&inputs, &abstained, samples, classes, &self.cfg)
                    .map_err(|e| failed(e.to_string()))
            }
        }
    }

    /// Whether the round is closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

/// A node's weight `w` on each sample, 0 where it abstained.
fn row_weights(w: f64, abstained: Option<&[bool]>, samples: usize) -> Vec<f64> {
    (0..samples).map(|s| if abstained.is_some_and(|a| a[s]) { 0.0 } else { w }).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use protocol::{Encoding, FederationId, ReferenceSetId, SampleSelection, SoftLabels};
    use std::collections::HashMap;
    use std::time::Duration;

    /// A round of 2 samples and 2 classes (shared with `collect`'s tests).
    pub(crate) fn ann(round: u64) -> RoundAnnouncement {
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
            secure: None,
        }
    }

    /// A valid submission to [`ann`]`(round)`.
    pub(crate) fn sub(round: u64, p: f32) -> Submission {
        Submission {
            federation: FederationId::new("t").unwrap(),
            round,
            announcement: ann(round).digest(),
            reference_set: ReferenceSetId([1; 32]),
            temperature: 2.0,
            local_samples: None,
            labels: SoftLabels::encode(&[p, 1.0 - p, p, 1.0 - p], 2, 2, Encoding::F32).unwrap(),
            abstained: None,
        }
    }

    fn counted(round: u64, p: f32, n: Option<u64>) -> Submission {
        Submission { local_samples: n, ..sub(round, p) }
    }

    #[tokio::test(start_paused = true)]
    async fn closes_when_everyone_answered_or_at_the_deadline_with_quorum() {
        let ids: Vec<ParticipantId> = (0..4).map(|i| ParticipantId([i; 32])).collect();
        let start = Instant::now();
        let mut st = RoundState::new(
            ann(4),
            ids.iter().copied().collect(),
            3,
            start + Duration::from_secs(30),
            ConsensusConfig::default(),
        );
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
    async fn an_answer_admitted_before_a_duplicate_or_the_close_is_refused_when_recorded_after() {
        let ids: Vec<ParticipantId> = (0..3).map(|i| ParticipantId([i; 32])).collect();
        let mut st =
            RoundState::new(ann(1), ids.iter().copied().collect(), 3, Instant::now(), ConsensusConfig::default());
        let limits = Limits::default();
        let answer = |p| Answer::decode(&sub(1, p), &limits, 2).unwrap();
        let (first, again) = (st.admit(ids[0], &sub(1, 0.9)).unwrap(), st.admit(ids[0], &sub(1, 0.9)).unwrap());
        st.record(first, answer(0.9)).unwrap();
        assert_eq!(st.record(again, answer(0.9)).unwrap_err().refusal_reason(), RefusalReason::Duplicate);
        let late = st.admit(ids[1], &sub(1, 0.8)).unwrap();
        assert!(st.close().is_err(), "one answer: no consensus");
        assert_eq!(st.record(late, answer(0.8)).unwrap_err().refusal_reason(), RefusalReason::Late);
        assert_eq!(st.participants(), vec![ids[0]]);
    }

    #[tokio::test(start_paused = true)]
    async fn no_consensus_from_fewer_than_three_even_when_everyone_answered() {
        // A roster of two (a config the aggregator refuses) and a quorum of one: everyone
        // answered and the deadline passed, and still the round does not close.
        let ids: Vec<ParticipantId> = (0..2).map(|i| ParticipantId([i; 32])).collect();
        let mut st =
            RoundState::new(ann(1), ids.iter().copied().collect(), 1, Instant::now(), ConsensusConfig::default());
        let limits = Limits::default();
        st.submit(ids[0], &sub(1, 0.9), &limits).unwrap();
        st.submit(ids[1], &sub(1, 0.8), &limits).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!st.ready(Instant::now()));
        assert!(matches!(st.close(), Err(Error::Round { round: 1, .. })), "nothing is released");
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_duplicates_strangers_wrong_rounds_and_bad_values() {
        let ids: Vec<ParticipantId> = (0..3).map(|i| ParticipantId([i; 32])).collect();
        let mut st = RoundState::new(
            ann(2),
            ids.iter().copied().collect(),
            1,
            Instant::now() + Duration::from_secs(5),
            ConsensusConfig::default(),
        );
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

    fn weighted() -> ConsensusConfig {
        ConsensusConfig { rule: Rule::WeightedBySamples, ..Default::default() }
    }

    /// Three nodes, two honest (p = 0.9, 100 samples each) and one claiming 2²⁰ samples with the
    /// opposite labels.
    fn liar_round(counts: SampleCounts) -> f32 {
        let ids: Vec<ParticipantId> = (0..3).map(|i| ParticipantId([i; 32])).collect();
        let mut st = RoundState::new(ann(1), ids.iter().copied().collect(), 3, Instant::now(), weighted())
            .with_sample_counts(counts);
        let limits = Limits::default();
        st.submit(ids[2], &counted(1, 0.0, Some(1 << 20)), &limits).unwrap();
        st.submit(ids[0], &counted(1, 0.9, Some(100)), &limits).unwrap();
        st.submit(ids[1], &counted(1, 0.9, Some(100)), &limits).unwrap();
        st.close().unwrap().probs[0]
    }

    #[tokio::test(start_paused = true)]
    async fn a_claimed_sample_count_is_clipped_and_a_declared_one_is_taken() {
        // Clipped to the median (100), the default: weights 100, 100, 100, so p = 180 / 300.
        let p = liar_round(SampleCounts::default());
        assert!((p - 0.6).abs() < 1e-5, "{p}");
        // Clipped to 2 × the median: weights 100, 100, 200, so p = 180 / 400.
        let p = liar_round(SampleCounts { clip: 2.0, ..Default::default() });
        assert!((p - 0.45).abs() < 1e-5, "{p}");
        // Unclipped (as before the fix), the liar would hold 99.98 % of the weight.
        let p = liar_round(SampleCounts { clip: f64::INFINITY, ..Default::default() });
        assert!(p < 0.001, "the control: {p}");
        // The roster declares every count: the claims are ignored (and the mean streams).
        let declared = (0..3).map(|i| (ParticipantId([i; 32]), 100)).collect();
        let p = liar_round(SampleCounts { declared, clip: 2.0 });
        assert!((p - 0.6).abs() < 1e-5, "{p}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_count_is_refused_and_a_withheld_one_weighs_the_median() {
        let ids: Vec<ParticipantId> = (0..3).map(|i| ParticipantId([i; 32])).collect();
        let declared = HashMap::from([(ids[0], 300)]);
        let mut st = RoundState::new(ann(1), ids.iter().copied().collect(), 3, Instant::now(), weighted())
            .with_sample_counts(SampleCounts { declared, clip: 2.0 });
        let limits = Limits::default();
        let zero = st.submit(ids[1], &counted(1, 0.5, Some(0)), &limits).unwrap_err();
        assert_eq!(zero.refusal_reason(), RefusalReason::InvalidValues);
        // Declared 300 (whatever it reports), reported 100, withheld: the median 200.
        st.submit(ids[0], &counted(1, 1.0, Some(1)), &limits).unwrap();
        st.submit(ids[1], &counted(1, 0.0, Some(100)), &limits).unwrap();
        st.submit(ids[2], &counted(1, 0.0, None), &limits).unwrap();
        let p = st.close().unwrap().probs[0];
        assert!((p - 0.5).abs() < 1e-5, "300 / (300 + 100 + 200): {p}");
    }

    /// Node 3 says the opposite of the others and abstains on sample 1; node 2 abstains on all.
    #[tokio::test(start_paused = true)]
    async fn abstentions_weigh_zero_count_toward_the_quorum_and_are_counted() {
        let ids: Vec<ParticipantId> = (0..4).map(|i| ParticipantId([i; 32])).collect();
        let masked = |p, m: &[bool]| Submission { abstained: Some(protocol::Mask::from_bools(m)), ..sub(1, p) };
        for rule in [Rule::Mean, Rule::CONFIDENCE, Rule::Median] {
            let mut st = RoundState::new(
                ann(1),
                ids.iter().copied().collect(),
                4,
                Instant::now(),
                ConsensusConfig { rule: rule.clone(), ..Default::default() },
            );
            let limits = Limits::default();
            st.submit(ids[0], &sub(1, 0.9), &limits).unwrap();
            st.submit(ids[1], &sub(1, 0.9), &limits).unwrap();
            st.submit(ids[2], &masked(0.5, &[true, true]), &limits).unwrap();
            assert_eq!(
                st.submit(ids[3], &masked(0.0, &[false; 9]), &limits).unwrap_err().refusal_reason(),
                RefusalReason::WrongShape
            );
            st.submit(ids[3], &masked(0.0, &[false, true]), &limits).unwrap();
            assert!(st.ready(Instant::now()), "{rule:?}: an all-abstain answer counts toward the quorum");
            let c = st.close().unwrap();
            assert_eq!(c.counts, vec![3, 2], "{rule:?}");
            assert!((c.probs[2] - 0.9).abs() < 1e-5, "{rule:?}: only the two nodes that know sample 1: {:?}", c.probs);
            // The median of 0.9, 0.9, 0 is 0.9: only the averaging rules show node 3's answer.
            assert!(
                rule == Rule::Median || c.probs[0] < 0.85,
                "{rule:?}: node 3 answering sample 0 moves it: {:?}",
                c.probs
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_to_another_announcement_of_the_round_is_refused() {
        let ids = [ParticipantId([0; 32])];
        let mut st = RoundState::new(ann(1), ids.into_iter().collect(), 1, Instant::now(), ConsensusConfig::default());
        let reseeded = RoundAnnouncement { selection: SampleSelection::Seeded { seed: 2, count: 2 }, ..ann(1) };
        let stale = Submission { announcement: reseeded.digest(), ..sub(1, 0.5) };
        assert_eq!(
            st.submit(ids[0], &stale, &Limits::default()).unwrap_err().refusal_reason(),
            RefusalReason::WrongAnnouncement
        );
        st.submit(ids[0], &sub(1, 0.5), &Limits::default()).unwrap();
    }
}
