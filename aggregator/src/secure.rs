//! A secure round ([`crate::config::SecureAggregation`]): the aggregator runs the server of
//! [`protocol::secagg`] and learns only the sum of the cohort's soft labels.
//!
//! [`Aggregator::open_secure`] gathers the round's cohort (the roster members that joined:
//! all of them, or at the deadline at least the quorum), announces the round with its secure
//! setup, and runs the two steps that need no training (keys, then shares). The round's masked
//! vectors then arrive as requests, like plain submissions, and the round closes by the same
//! rule (everyone, or the quorum at the deadline). [`Aggregator::unmask`] asks the survivors to
//! sign the survivor list and to reveal the shares that remove the masks, and turns the
//! checked sum into the consensus: each sample's mean over the members that answered it,
//! withheld (weight 0) where fewer than `consensus.min_count` did. A step that leaves fewer
//! than T members fails the round, and nothing is released.
//!
//! Each step is one request to each member, answered in the response ([`Aggregator::exchange`]);
//! the aggregator keeps serving the network's other events while it waits, at most
//! `stage_secs`.

use std::collections::HashSet;
use std::time::Duration;

use learning::consensus::{self, Combined};
use protocol::message::{Reply, SecureReply, SecureRound, SecureStep, Step};
use protocol::secagg::{self, Server};
use protocol::seed::{Stream, derive};
use protocol::{Message, ParticipantId, Receipt, ReceiptStatus};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::SecureAggregation;
use crate::error::Error;
use crate::round::RoundState;
use crate::state::Aggregator;

/// How a wait for the members ended early.
pub(crate) enum Stop {
    /// `shutdown` fired.
    Shutdown,
    /// The network is gone.
    Closed,
}

impl Stop {
    /// What the round's caller returns: `Ok(None)` when stopped on purpose, an error when the
    /// network is gone.
    fn ended<T>(self) -> Result<Option<T>, Error> {
        match self {
            Stop::Shutdown => Ok(None),
            Stop::Closed => Err(Error::Net(net::Error::Stopped)),
        }
    }
}

/// The secure round's server (a round that is not secure is a bug of the caller's).
fn server_of(state: &mut RoundState) -> Result<&mut Server, Error> {
    let round = state.round();
    state.server_mut().ok_or_else(|| Error::Round { round, detail: "not a secure round".into() })
}

impl Aggregator {
    fn secure_cfg(&self) -> Option<&SecureAggregation> {
        self.cfg.round.secure_aggregation.as_ref()
    }

    /// Roster members that may take part in a round: joined, and not withdrawn.
    fn available(&self) -> Vec<ParticipantId> {
        let mut v: Vec<ParticipantId> = self
            .joined
            .iter()
            .filter(|p| self.roster.contains_key(p) && !self.withdrawn.contains_key(p))
            .copied()
            .collect();
        v.sort_unstable();
        v
    }

    /// Waits until every roster member that has not withdrawn has joined, or the round's
    /// deadline has passed with at least `needed` joined; `gathering` (a closed round of the
    /// same number) answers the events meanwhile.
    async fn gather(
        &mut self,
        gathering: &mut RoundState,
        needed: usize,
        shutdown: &CancellationToken,
    ) -> Result<Vec<ParticipantId>, Stop> {
        let deadline = Instant::now() + Duration::from_secs_f64(self.cfg.round.deadline_secs);
        let mut past = false;
        loop {
            let available = self.available();
            let everyone = self.roster.len() - self.withdrawn.len();
            if available.len() >= everyone.max(1) || (past && available.len() >= needed) {
                return Ok(available);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Err(Stop::Shutdown),
                ev = self.events.recv() => match ev {
                    Some(ev) => self.on_event(ev, gathering).await,
                    None => return Err(Stop::Closed),
                },
                _ = tokio::time::sleep_until(deadline), if !past => {
                    past = true;
                    if self.available().len() < needed {
                        tracing::warn!(round = gathering.round(), joined = self.available().len(), needed, "secure round: too few nodes have joined to form a cohort; waiting");
                    }
                }
            }
        }
    }

    /// Opens secure round `round`: gathers its cohort, announces it, and runs the keys and
    /// shares steps. `Ok(None)`: stopped by `shutdown`.
    pub(crate) async fn open_secure(
        &mut self,
        round: u64,
        shutdown: &CancellationToken,
    ) -> Result<Option<(RoundState, std::time::Instant, (u64, u64))>, Error> {
        let secure = self.secure_cfg().cloned().ok_or_else(|| Error::config("round.secure_aggregation", "off"))?;
        let quorum = self.cfg.round.quorum(self.roster.len());
        let mut gathering = RoundState::new(
            self.announcement(round),
            HashSet::new(),
            quorum,
            Instant::now(),
            self.cfg.consensus.clone(),
        );
        gathering.close_secure();
        let cohort = match self.gather(&mut gathering, quorum, shutdown).await {
            Ok(c) => c,
            Err(s) => return s.ended(),
        };
        let (started, traffic) = (std::time::Instant::now(), self.client.traffic());
        let params = secure.params(cohort.len())?;
        let mut ann = self.announcement(round);
        ann.secure = Some(SecureRound {
            cohort: cohort.clone(),
            params,
            graph_seed: derive(self.cfg.seed, Stream::SecureGraph, round),
            scale: secure.scale,
        });
        let failed = |detail: String| Error::Round { round, detail };
        let setup = ann
            .secure
            .as_ref()
            .map(|s| s.setup(&ann))
            .transpose()
            .map_err(|e| failed(format!("secure aggregation: {e}")))?
            .ok_or_else(|| failed("no secure setup".into()))?;
        let (threshold, degree) = (setup.threshold(), setup.degree());
        let deadline = Instant::now() + Duration::from_secs_f64(self.cfg.round.deadline_secs);
        let members: HashSet<ParticipantId> = cohort.iter().copied().collect();
        let mut state =
            RoundState::new(ann.clone(), members, quorum.min(cohort.len()), deadline, self.cfg.consensus.clone())
                .with_secure(Server::new(setup));
        for (&peer, &reason) in &self.withdrawn {
            state.decline(peer, round, reason);
        }
        tracing::info!(
            round,
            cohort = cohort.len(),
            threshold,
            degree,
            samples = ann.selection.len(),
            "secure round open"
        );
        while self.declines.try_recv().is_ok() {}
        // The announcement first, acknowledged: a member takes the steps of an announcement it holds.
        let wait = Duration::from_secs_f64(secure.stage_secs);
        let asks = cohort.iter().map(|&p| (p, Message::RoundAnnouncement(ann.clone()))).collect();
        let acknowledged = match self.ask(&mut state, asks, wait, shutdown).await {
            Ok(a) => a,
            Err(s) => return s.ended(),
        };

        // Keys.
        let asks = acknowledged.iter().map(|&(p, _)| (p, Step::Keys)).collect();
        let replies = match self.exchange(&mut state, asks, wait, shutdown).await {
            Ok(r) => r,
            Err(s) => return s.ended(),
        };
        let server = server_of(&mut state)?;
        for (peer, reply) in replies {
            if let Reply::Keys(ad) = reply
                && let Err(e) = server.receive_keys(&peer, ad)
            {
                tracing::warn!(round, node = %self.name(&peer), error = %e, "secure round: keys refused");
            }
        }
        let server = server_of(&mut state)?;
        let neighbours = server.close_keys().map_err(|e| failed(format!("secure aggregation, keys: {e}")))?;

        // Shares.
        let asks = neighbours.into_iter().map(|(p, ad)| (p, Step::Neighbours(ad))).collect();
        let replies = match self.exchange(&mut state, asks, wait, shutdown).await {
            Ok(r) => r,
            Err(s) => return s.ended(),
        };
        let server = server_of(&mut state)?;
        for (peer, reply) in replies {
            if let Reply::Shares(bundle) = reply
                && let Err(e) = server.receive_shares(&peer, bundle)
            {
                tracing::warn!(round, node = %self.name(&peer), error = %e, "secure round: shares refused");
            }
        }
        let server = server_of(&mut state)?;
        let deliveries = server.close_shares().map_err(|e| failed(format!("secure aggregation, shares: {e}")))?;
        // Members out of the protocol now cannot send a masked vector: the round stops waiting.
        let alive: HashSet<ParticipantId> = deliveries.iter().map(|(p, _)| *p).collect();
        for &p in cohort.iter().filter(|p| !alive.contains(p)) {
            tracing::warn!(round, node = %self.name(&p), "secure round: dropped out before its masked vector");
            state.drop_out(p);
        }
        let asks = deliveries.into_iter().map(|(p, d)| (p, Step::Shares(d))).collect();
        if let Err(s) = self.exchange(&mut state, asks, wait, shutdown).await {
            return s.ended();
        }
        Ok(Some((state, started, traffic)))
    }

    /// Unmasks a closed secure round's sum: the survivors sign the survivor list, then reveal
    /// the shares that remove the masks; the checked sum becomes the consensus. The CPU work
    /// (expanding the masks) runs off the runtime. `Ok(None)`: stopped by `shutdown`.
    pub(crate) async fn unmask(
        &mut self,
        state: &mut RoundState,
        shutdown: &CancellationToken,
    ) -> Result<Option<(Combined, Vec<ParticipantId>)>, Error> {
        let round = state.round();
        let failed = |detail: String| Error::Round { round, detail };
        let secure = self.secure_cfg().cloned().ok_or_else(|| Error::config("round.secure_aggregation", "off"))?;
        let wait = Duration::from_secs_f64(secure.stage_secs);
        let mut server = state.close_secure().ok_or_else(|| failed("not secure".into()))?;
        let list = server.close_masked().map_err(|e| failed(format!("secure aggregation, masked vectors: {e}")))?;
        let survivors = server.alive();
        let asks = survivors.iter().map(|&p| (p, Step::Survivors(list.clone()))).collect();
        let replies = match self.exchange(state, asks, wait, shutdown).await {
            Ok(r) => r,
            Err(s) => return s.ended(),
        };
        for (peer, reply) in replies {
            if let Reply::Signature(sig) = reply
                && let Err(e) = server.receive_signature(&peer, sig)
            {
                tracing::warn!(round, node = %self.name(&peer), error = %e, "secure round: signature refused");
            }
        }
        let request = server.close_signatures().map_err(|e| failed(format!("secure aggregation, signatures: {e}")))?;
        let asks = survivors.iter().map(|&p| (p, Step::Unmask(server.request_for(&request, &p)))).collect();
        let replies = match self.exchange(state, asks, wait, shutdown).await {
            Ok(r) => r,
            Err(s) => return s.ended(),
        };
        for (peer, reply) in replies {
            if let Reply::Unmask(resp) = reply
                && let Err(e) = server.receive_unmask(&peer, resp)
            {
                tracing::warn!(round, node = %self.name(&peer), error = %e, "secure round: unmasking shares refused");
            }
        }
        let ann = state.announcement.clone();
        let (classes, cfg) = (ann.classes as usize, self.cfg.consensus.clone());
        let fixed = secagg::FixedPoint::new(secure.scale).map_err(|e| failed(e.to_string()))?;
        let done = tokio::task::spawn_blocking(move || {
            let aggregate = server.finish()?;
            let tally = fixed.tally(&aggregate.sum, classes, aggregate.survivors.len())?;
            Ok::<_, secagg::Error>((consensus_of(&tally, classes, &cfg), aggregate.survivors))
        })
        .await?;
        match done {
            Ok((combined, survivors)) => {
                tracing::info!(round, survivors = survivors.len(), "secure round: sum unmasked and checked");
                Ok(Some((combined, survivors)))
            }
            Err(e) => {
                tracing::error!(round, error = %e, "secure round: the sum cannot be released; nothing is released this round");
                Err(failed(format!("secure aggregation, unmasking: {e}")))
            }
        }
    }

    /// Sends each member its step and waits, at most `wait`, for the replies (see
    /// [`Aggregator::ask`]).
    pub(crate) async fn exchange(
        &mut self,
        state: &mut RoundState,
        asks: Vec<(ParticipantId, Step)>,
        wait: Duration,
        shutdown: &CancellationToken,
    ) -> Result<Vec<(ParticipantId, Reply)>, Stop> {
        let (round, digest) = (state.round(), state.announcement.digest());
        let federation = self.federation().clone();
        let asks = asks
            .into_iter()
            .map(|(p, step)| {
                let m = SecureStep { federation: federation.clone(), round, announcement: digest, step };
                (p, Message::SecureStep(m))
            })
            .collect();
        let answers = self.ask(state, asks, wait, shutdown).await?;
        let mut replies = Vec::new();
        for (peer, answer) in answers {
            match answer {
                Message::SecureReply(SecureReply { round: r, announcement, reply, .. })
                    if r == round && announcement == digest =>
                {
                    replies.push((peer, reply))
                }
                // The delivery of the shares is acknowledged by a receipt.
                Message::Receipt(Receipt { status: ReceiptStatus::Accepted, .. }) => {}
                other => {
                    tracing::warn!(round, node = %self.name(&peer), kind = ?other.kind(), "secure round: unexpected answer to a step")
                }
            }
        }
        Ok(replies)
    }

    /// Sends each member its request and waits, at most `wait`, for the answers, answering the
    /// network's other events meanwhile. A member that refuses (a receipt that refuses; a
    /// refusal of the announcement counts as declining the round) or does not answer in time
    /// is left out: the protocol's server counts it as dropped.
    pub(crate) async fn ask(
        &mut self,
        state: &mut RoundState,
        asks: Vec<(ParticipantId, Message)>,
        wait: Duration,
        shutdown: &CancellationToken,
    ) -> Result<Vec<(ParticipantId, Message)>, Stop> {
        let round = state.round();
        let mut pending = tokio::task::JoinSet::new();
        for (peer, message) in asks {
            let client = self.client.clone();
            pending.spawn(async move { (peer, client.request(&peer, &message).await) });
        }
        let deadline = Instant::now() + wait;
        let mut answers = Vec::new();
        while !pending.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return Err(Stop::Shutdown),
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(round, missing = pending.len(), "secure round: members did not answer in time; they drop out");
                    break;
                }
                Some(done) = pending.join_next() => match done {
                    Ok((peer, Ok(Message::Receipt(Receipt { status: ReceiptStatus::Refused(reason), detail, .. })))) => {
                        tracing::warn!(round, node = %self.name(&peer), ?reason, %detail, "secure round: refused");
                        state.decline(peer, round, reason);
                    }
                    Ok((peer, Ok(answer))) => answers.push((peer, answer)),
                    Ok((peer, Err(e))) => {
                        tracing::warn!(round, node = %self.name(&peer), error = %net::error::Chain(&e), "secure round: not answered");
                    }
                    Err(e) => tracing::error!(error = %e, "secure round: a request's task failed"),
                },
                ev = self.events.recv() => match ev {
                    Some(ev) => self.on_event(ev, state).await,
                    None => return Err(Stop::Closed),
                },
            }
        }
        pending.abort_all();
        Ok(answers)
    }
}

/// The consensus of a checked sum: each sample's mean over the members that answered it
/// (uniform where none did), then the configured post-processing (`min_count`, sharpening,
/// entropy mask), as the plain mean's.
fn consensus_of(tally: &secagg::Tally, classes: usize, cfg: &consensus::ConsensusConfig) -> Combined {
    let mut probs = Vec::with_capacity(tally.samples() * classes);
    for s in 0..tally.samples() {
        match tally.mean(s) {
            Some(row) => {
                let total: f32 = row.iter().sum();
                probs.extend(row.iter().map(|p| p / total.max(f32::MIN_POSITIVE)));
            }
            None => probs.extend(std::iter::repeat_n(1.0 / classes as f32, classes)),
        }
    }
    consensus::postprocess(probs, tally.counts().to_vec(), classes, cfg)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use learning::consensus::ConsensusConfig;
    use proptest::prelude::*;
    use protocol::secagg::{Client, FixedPoint, Params, Server, Setup};
    use protocol::{
        Encoding, FederationId, Identity, Limits, Mask, ReferenceSetId, RoundAnnouncement, SampleSelection,
    };
    use protocol::{SoftLabels, Submission};

    use super::consensus_of;
    use crate::round::{Answer, RoundState};

    const CLASSES: usize = 3;
    const SAMPLES: usize = 6;

    fn ann() -> RoundAnnouncement {
        RoundAnnouncement {
            federation: FederationId::new("t").unwrap(),
            round: 1,
            reference_set: ReferenceSetId([1; 32]),
            reference_samples: 10,
            selection: SampleSelection::Seeded { seed: 1, count: SAMPLES as u32 },
            classes: CLASSES as u32,
            temperature: 2.0,
            deadline_unix_ms: 0,
            encoding: Encoding::Q8,
            secure: None,
        }
    }

    /// A `q8` submission of `rows` (each normalised) abstaining where `abstain` says.
    fn submission(rows: &[f32], abstain: &[bool]) -> Submission {
        Submission {
            federation: FederationId::new("t").unwrap(),
            round: 1,
            announcement: ann().digest(),
            reference_set: ReferenceSetId([1; 32]),
            temperature: 2.0,
            local_samples: None,
            labels: SoftLabels::encode(rows, SAMPLES, CLASSES, Encoding::Q8).unwrap(),
            abstained: abstain.iter().any(|&a| a).then(|| Mask::from_bools(abstain)),
        }
    }

    fn rows() -> impl Strategy<Value = Vec<f32>> {
        proptest::collection::vec(proptest::collection::vec(0.01f32..1.0, CLASSES), SAMPLES).prop_map(|rows| {
            rows.into_iter()
                .flat_map(|r| {
                    let s: f32 = r.iter().sum();
                    r.into_iter().map(move |p| p / s)
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The consensus a secure round releases is the plain mean's, on the same answers, up to
        /// the fixed-point scale (here 2¹⁶), with the same per-sample counts and withheld samples.
        #[test]
        fn the_secure_consensus_is_the_plain_mean(
            answers in proptest::collection::vec((rows(), proptest::collection::vec(proptest::bool::weighted(0.2), SAMPLES)), 4..7),
            min_count in 0u32..4,
        ) {
            let cfg = ConsensusConfig { min_count, ..ConsensusConfig::default() };
            // Sorted as the cohort is, so that a member's index is its place here.
            let mut ids: Vec<Identity> = (0..answers.len()).map(|i| Identity::from_seed([i as u8 + 1; 32]).unwrap()).collect();
            ids.sort_by_key(Identity::id);
            let subs: Vec<Submission> = answers.iter().map(|(r, a)| submission(r, a)).collect();

            // In the clear.
            let roster: HashSet<_> = ids.iter().map(Identity::id).collect();
            let mut plain = RoundState::new(ann(), roster, 3, tokio::time::Instant::now(), cfg.clone());
            for (id, sub) in ids.iter().zip(&subs) {
                plain.submit(id.id(), sub, &Limits::default()).unwrap();
            }
            let plain = plain.close().unwrap();

            // Masked, every member a survivor.
            let fixed = FixedPoint::FINE;
            let cohort = ids.iter().map(Identity::id).collect();
            let params = Params { threshold: 2, degree: None, bits: fixed.bits_for(ids.len()).unwrap() };
            let setup = Setup::new(ann().federation, 1, ann().digest().0, cohort, params, 7, FixedPoint::words(SAMPLES, CLASSES)).unwrap();
            let mut server = Server::new(setup.clone());
            let mut clients = Vec::new();
            for id in &ids {
                let (c, ad) = Client::start(setup.clone(), id).unwrap();
                server.receive_keys(&id.id(), ad).unwrap();
                clients.push(c);
            }
            let member = |p: &protocol::ParticipantId| usize::from(setup.member(p).unwrap());
            for (p, keys) in server.close_keys().unwrap() {
                let bundle = clients[member(&p)].share(&keys).unwrap();
                server.receive_shares(&p, bundle).unwrap();
            }
            for (p, delivery) in server.close_shares().unwrap() {
                let i = member(&p);
                let id = ids.iter().position(|x| x.id() == p).unwrap();
                let answer = Answer::decode(&subs[id], &Limits::default(), CLASSES as u32).unwrap();
                let (probs, abstained) = answer.parts();
                let x = fixed.encode(probs, CLASSES, &abstained.unwrap_or_else(|| vec![false; SAMPLES])).unwrap();
                server.receive_masked(&p, clients[i].mask(&delivery, &x, &ids[id]).unwrap()).unwrap();
            }
            let list = server.close_masked().unwrap();
            for id in &ids {
                let sig = clients[member(&id.id())].sign_survivors(&list, id).unwrap();
                server.receive_signature(&id.id(), sig).unwrap();
            }
            let request = server.close_signatures().unwrap();
            for id in &ids {
                let resp = clients[member(&id.id())].unmask(&server.request_for(&request, &id.id())).unwrap();
                server.receive_unmask(&id.id(), resp).unwrap();
            }
            let sum = server.finish().unwrap();
            let tally = fixed.tally(&sum.sum, CLASSES, ids.len()).unwrap();
            let secure = consensus_of(&tally, CLASSES, &cfg);

            prop_assert_eq!(&secure.counts, &plain.counts);
            prop_assert_eq!(&secure.weights, &plain.weights);
            for (s, p) in secure.probs.iter().zip(&plain.probs) {
                prop_assert!((s - p).abs() < 1e-4, "{} against {}", s, p);
            }
        }
    }
}
