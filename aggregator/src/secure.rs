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
        let stopped = |s: Stop| match s {
            Stop::Shutdown => Ok(None),
            Stop::Closed => Err(Error::Net(net::Error::Stopped)),
        };
        let cohort = match self.gather(&mut gathering, quorum, shutdown).await {
            Ok(c) => c,
            Err(s) => return stopped(s),
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
            Err(s) => return stopped(s).map(|_| None),
        };

        // Keys.
        let asks = acknowledged.iter().map(|&(p, _)| (p, Step::Keys)).collect();
        let replies = match self.exchange(&mut state, asks, wait, shutdown).await {
            Ok(r) => r,
            Err(s) => return stopped(s).map(|_| None),
        };
        let server = state.server_mut().ok_or_else(|| failed("not secure".into()))?;
        for (peer, reply) in replies {
            if let Reply::Keys(ad) = reply
                && let Err(e) = server.receive_keys(&peer, ad)
            {
                tracing::warn!(round, node = %self.name(&peer), error = %e, "secure round: keys refused");
            }
        }
        let server = state.server_mut().ok_or_else(|| failed("not secure".into()))?;
        let neighbours = server.close_keys().map_err(|e| failed(format!("secure aggregation, keys: {e}")))?;

        // Shares.
        let asks = neighbours.into_iter().map(|(p, ad)| (p, Step::Neighbours(ad))).collect();
        let replies = match self.exchange(&mut state, asks, wait, shutdown).await {
            Ok(r) => r,
            Err(s) => return stopped(s).map(|_| None),
        };
        let server = state.server_mut().ok_or_else(|| failed("not secure".into()))?;
        for (peer, reply) in replies {
            if let Reply::Shares(bundle) = reply
                && let Err(e) = server.receive_shares(&peer, bundle)
            {
                tracing::warn!(round, node = %self.name(&peer), error = %e, "secure round: shares refused");
            }
        }
        let server = state.server_mut().ok_or_else(|| failed("not secure".into()))?;
        let deliveries = server.close_shares().map_err(|e| failed(format!("secure aggregation, shares: {e}")))?;
        let asks = deliveries.into_iter().map(|(p, d)| (p, Step::Shares(d))).collect();
        if let Err(s) = self.exchange(&mut state, asks, wait, shutdown).await {
            return stopped(s).map(|_| None);
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
            Err(Stop::Shutdown) => return Ok(None),
            Err(Stop::Closed) => return Err(Error::Net(net::Error::Stopped)),
        };
        for (peer, reply) in replies {
            if let Reply::Signature(sig) = reply
                && let Err(e) = server.receive_signature(&peer, sig)
            {
                tracing::warn!(round, node = %self.name(&peer), error = %e, "secure round: signature refused");
            }
        }
        let request = server.close_signatures().map_err(|e| failed(format!("secure aggregation, signatures: {e}")))?;
        let asks = survivors.iter().map(|&p| (p, Step::Unmask(request.clone()))).collect();
        let replies = match self.exchange(state, asks, wait, shutdown).await {
            Ok(r) => r,
            Err(Stop::Shutdown) => return Ok(None),
            Err(Stop::Closed) => return Err(Error::Net(net::Error::Stopped)),
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
