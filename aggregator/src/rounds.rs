//! Driving the rounds, each a table of contents: [`Aggregator::open`] (draw the cohort, send
//! the last consensus to its members that missed it, announce) →
//! [`Aggregator::collect`] (until everyone answered or declined, or the deadline passed with a
//! quorum, see [`crate::collect`]; then combine, off the runtime) → [`Aggregator::distil`] (the
//! student learns on its thread; late submissions are answered meanwhile) →
//! [`Aggregator::publish`] (deliver the consensus → checkpoint → one log line). A secure round
//! opens with [`Aggregator::open_secure`] and closes with [`Aggregator::unmask`] instead
//! ([`crate::secure`]).
//!
//! With `round.cohort`, a round asks only its cohort ([`crate::cohort`]): the announcement and
//! the consensus go to its members, and the quorum is counted among them. The other nodes stay
//! connected and idle (their connection is kept for an hour without traffic, and a node whose
//! connection closes joins again): joining costs a handshake, and an idle connection costs the
//! aggregator a few kilobytes. A member that missed consensus rounds is sent the last consensus
//! before its announcement, so it trains on the latest one, as if it had never been left out.

use std::sync::Arc;
use std::time::Duration;

use learning::consensus::Combined;
use protocol::seed::{Stream, derive};
use protocol::{Consensus, Message, ParticipantId, RoundAnnouncement, SampleSelection, SoftLabels};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::RoundMetrics;
use crate::collect::{Collected, Collection, Step};
use crate::error::Error;
use crate::round::RoundState;
use crate::state::Aggregator;
use crate::status::Phase;
use crate::student::Learnt;

/// Attempts at a round's checkpoint before the round goes on uncommitted.
const CHECKPOINT_ATTEMPTS: u32 = 3;
/// Pause before the second attempt; it doubles before each further one.
const CHECKPOINT_FIRST_PAUSE: Duration = Duration::from_millis(500);

/// A round being run: its state, the members it asks, when it opened, and the bytes (sent,
/// received) then.
struct Round {
    state: RoundState,
    members: Vec<ParticipantId>,
    started: std::time::Instant,
    traffic: (u64, u64),
}

/// A round after its collection (its state now refuses every submission as late), with the
/// consensus and the reference rows it covers.
struct Closed {
    round: Round,
    combined: Arc<Combined>,
    rows: Vec<u32>,
}

impl Aggregator {
    /// Runs the rounds not yet completed. `Ok(false)`: stopped by `shutdown`.
    pub(crate) async fn rounds(&mut self, shutdown: &CancellationToken) -> Result<bool, Error> {
        for round in self.completed + 1..=self.cfg.rounds {
            let members = self.cohort(round);
            let open = if self.cfg.round.secure_aggregation.is_some() {
                let Some((state, started, traffic)) = self.open_secure(round, &members, shutdown).await? else {
                    return Ok(false);
                };
                Round { state, members, started, traffic }
            } else {
                self.open(round, members)
            };
            let Some(mut closed) = self.collect(open, shutdown).await? else { return Ok(false) };
            let Some(learnt) = self.distil(&mut closed, shutdown).await? else { return Ok(false) };
            self.publish(closed, learnt, shutdown).await?;
        }
        Ok(true)
    }

    /// The roster members round `round` asks, in roster order: its cohort with `round.cohort`
    /// ([`crate::cohort`]), everyone without.
    pub(crate) fn cohort(&self, round: u64) -> Vec<ParticipantId> {
        let roster: Vec<ParticipantId> = self.cfg.roster.iter().map(|e| e.peer_id).collect();
        let size = self.cfg.round.cohort.map(|c| c.size(roster.len()));
        crate::cohort::draw(&roster, size, self.cfg.seed, round)
    }

    /// Sends the last consensus to the nodes of `members` that joined and have not acknowledged
    /// it in this run (they were left out of the rounds since, joined late, or the aggregator
    /// restarted), and waits for their receipts: they then train on it when announced. A secure
    /// round's announcement is a request it waits on ([`Aggregator::open_secure`]); a plain
    /// round's goes after the consensus in the same background task ([`Aggregator::announce`]).
    pub(crate) async fn catch_up(&mut self, members: &[ParticipantId]) {
        let Some(c) = self.consensus.clone() else { return };
        let behind: Vec<ParticipantId> = members
            .iter()
            .copied()
            .filter(|p| self.joined.contains(p) && self.taught.get(p).is_none_or(|&r| r < c.round))
            .collect();
        if behind.is_empty() {
            return;
        }
        tracing::info!(
            consensus = c.round,
            nodes = behind.len(),
            "sending the last consensus to members that missed it"
        );
        for peer in self.deliver(behind, &Message::Consensus(Consensus::clone(&c))).await {
            self.taught.insert(peer, c.round);
        }
    }

    /// Opens round `round`: announces it to the members that have joined, each after the last
    /// consensus if it missed that one ([`Aggregator::announce`]).
    fn open(&mut self, round: u64, members: Vec<ParticipantId>) -> Round {
        let (started, traffic) = (std::time::Instant::now(), self.client.traffic());
        let ann = self.announcement(round);
        let deadline = Instant::now() + Duration::from_secs_f64(self.cfg.round.deadline_secs);
        let mut state = RoundState::new(
            ann.clone(),
            members.iter().copied().collect(),
            self.cfg.round.quorum(self.roster.len()),
            deadline,
            self.cfg.consensus.clone(),
        )
        .with_sample_counts(self.cfg.sample_counts());
        for (&peer, &reason) in &self.withdrawn {
            state.decline(peer, round, reason);
        }
        let asked: Vec<ParticipantId> = members.iter().copied().filter(|p| self.joined.contains(p)).collect();
        for &peer in &asked {
            self.announce(peer, &ann);
        }
        self.board.open(round, ann.deadline_unix_ms);
        tracing::info!(
            round,
            joined = self.joined.len(),
            asked = asked.len(),
            samples = ann.selection.len(),
            "round open"
        );
        while self.declines.try_recv().is_ok() {} // refusals of earlier rounds
        Round { state, members, started, traffic }
    }

    /// Collects the round's answers until it may close, then closes it and combines them off the
    /// runtime. `None`: stopped by `shutdown`.
    async fn collect(&mut self, open: Round, shutdown: &CancellationToken) -> Result<Option<Closed>, Error> {
        let Round { mut state, members, started, traffic } = open;
        let round = state.round();
        let mut collection = Collection::default();
        loop {
            match collection.next(&mut state, &mut self.events, &mut self.declines, shutdown).await {
                Step::Event(ev) => self.on_event(ev, &mut state).await,
                Step::End(Collected::Ready) => break,
                Step::End(Collected::Shutdown) => return Ok(None),
                Step::End(Collected::Closed) => return Err(Error::Net(net::Error::Stopped)),
                Step::End(Collected::Unreachable) => {
                    let detail = format!(
                        "{} of {} nodes answered and {} declined: the quorum of {} cannot be met",
                        state.participants().len(),
                        members.len(),
                        state.declined(),
                        self.cfg.round.quorum(self.roster.len())
                    );
                    return Err(Error::Round { round, detail });
                }
            }
        }
        self.board.phase(Phase::Distilling);
        let (state, combined) = if self.cfg.round.secure_aggregation.is_some() {
            let Some((combined, _survivors)) = self.unmask(&mut state, shutdown).await? else { return Ok(None) };
            (state, Ok(combined))
        } else {
            tokio::task::spawn_blocking(move || {
                let combined = state.close();
                (state, combined)
            })
            .await?
        };
        let ann = &state.announcement;
        let rows = ann.selection.resolve(ann.reference_samples)?;
        Ok(Some(Closed { round: Round { state, members, started, traffic }, combined: Arc::new(combined?), rows }))
    }

    /// Distils the global student on its thread; late submissions are answered meanwhile.
    /// `None`: stopped by `shutdown`.
    async fn distil(&mut self, closed: &mut Closed, shutdown: &CancellationToken) -> Result<Option<Learnt>, Error> {
        let distill_started = std::time::Instant::now();
        let state = &mut closed.round.state;
        // A handle of its own: `self` stays free for the events handled meanwhile.
        let student = self.student.clone();
        let learn = student.learn(state.round(), closed.rows.clone(), closed.combined.clone());
        tokio::pin!(learn);
        let mut events_open = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                res = &mut learn => {
                    self.telemetry.distill_seconds.observe(distill_started.elapsed().as_secs_f64());
                    return res.map(Some);
                }
                ev = self.events.recv(), if events_open => match ev {
                    Some(ev) => self.on_event(ev, state).await,
                    None => events_open = false,
                },
            }
        }
    }

    /// Sends the consensus to the round's members (and waits for their receipts), checkpoints,
    /// and reports the round.
    async fn publish(&mut self, closed: Closed, learnt: Learnt, shutdown: &CancellationToken) -> Result<(), Error> {
        let Closed { round: Round { state, members, started, traffic: (sent0, recv0) }, combined, rows } = closed;
        let (round, ann, participants) = (state.round(), &state.announcement, state.participants());
        let Learnt { agreement, validation, labels: student } = learnt;
        let (teaching, classes) = (self.cfg.student.teaching, self.cfg.classes);
        let encoding = self.cfg.round.consensus_encoding.unwrap_or(self.cfg.round.encoding);
        let (selection, kept) =
            consensus_rows(round, &ann.selection, ann.reference_samples, &rows, self.cfg.round.consensus_samples)?;
        let (consensus_probs, kept_rows) = (combined.clone(), kept.clone());
        // Mixing and encoding the labels is CPU work proportional to the payload: off the runtime.
        let labels = tokio::task::spawn_blocking(move || {
            let taught = teaching.labels(&consensus_probs.probs, &student);
            let taught: Vec<f32> =
                kept_rows.iter().flat_map(|&i| taught[i * classes..(i + 1) * classes].iter().copied()).collect();
            SoftLabels::encode(&taught, kept_rows.len(), classes, encoding)
        })
        .await??;
        let consensus = Consensus {
            federation: self.federation().clone(),
            round,
            reference_set: self.reference_id,
            selection,
            temperature: ann.temperature,
            labels,
            weights: Consensus::quantise_weights(&kept.iter().map(|&i| combined.weights[i]).collect::<Vec<_>>()),
            participants: participants.len() as u32,
            counts: kept.iter().map(|&i| combined.counts[i].min(u16::MAX as u32) as u16).collect(),
        };
        let consensus = Arc::new(if self.cfg.round.compact_consensus { consensus.compact() } else { consensus });
        self.board.phase(Phase::Publishing);
        // Wait for the nodes' receipts so that every member holds this consensus before the
        // next round is announced: its digest step is then the same whatever the timing.
        let message = Message::Consensus(Consensus::clone(&consensus));
        for peer in self.deliver(members.iter().copied(), &message).await {
            self.taught.insert(peer, round);
        }
        self.consensus = Some(consensus.clone());
        let (sent1, recv1) = self.client.traffic();
        let mut names: Vec<String> = participants.iter().map(|p| self.name(p)).collect();
        names.sort();
        let m = RoundMetrics {
            round,
            participants: names,
            bytes_in: recv1 - recv0,
            bytes_out: sent1 - sent0,
            samples: rows.len(),
            masked: combined.weights.iter().filter(|w| **w == 0.0).count(),
            abstentions: combined.counts.iter().map(|&n| participants.len().saturating_sub(n as usize) as u64).sum(),
            accuracy: validation.as_ref().map(|v| v.accuracy),
            nll: validation.as_ref().map(|v| v.nll),
            agreement,
            seconds: started.elapsed().as_secs_f64(),
            cohort: match self.cfg.round.cohort {
                Some(_) => members.iter().map(|p| self.name(p)).collect(),
                None => Vec::new(),
            },
        };
        self.metrics.push(m.clone());
        self.checkpoint(round, Some(consensus), shutdown).await;
        self.completed = round;
        self.record(&m);
        self.board.completed(&m);
        tracing::info!(
            round,
            participants = m.participants.len(),
            bytes_in = m.bytes_in,
            bytes_out = m.bytes_out,
            accuracy = m.accuracy.map(|a| format!("{a:.4}")).unwrap_or_else(|| "-".into()),
            seconds = format!("{:.2}", m.seconds),
            "round complete"
        );
        if let Some(tx) = &self.progress {
            let _ = tx.try_send(m);
        }
        Ok(())
    }

    /// Checkpoints round `round`. The consensus has been sent, so a failure (disk full, too
    /// many open files) does not end the run: it is reported and retried a few times, and if it
    /// persists the last good checkpoint stays the commit point and the next round's
    /// checkpoint tries again. Returns whether this round is committed.
    pub(crate) async fn checkpoint(
        &mut self,
        round: u64,
        consensus: Option<Arc<Consensus>>,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut pause = CHECKPOINT_FIRST_PAUSE;
        for attempt in 1..=CHECKPOINT_ATTEMPTS {
            match self.student.checkpoint(self.metrics.clone(), consensus.clone()).await {
                Ok(()) => {
                    if attempt > 1 {
                        tracing::info!(round, attempt, "checkpoint written");
                    }
                    self.committed = round;
                    return true;
                }
                Err(e) => {
                    let error = net::error::Chain(&e);
                    tracing::error!(round, attempt, of = CHECKPOINT_ATTEMPTS, committed = self.committed, %error, "checkpoint failed; the last good checkpoint stays the commit point");
                }
            }
            if attempt < CHECKPOINT_ATTEMPTS {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause *= 2;
            }
        }
        tracing::error!(
            round,
            committed = self.committed,
            "round not checkpointed; the run goes on and the next round's checkpoint tries again"
        );
        false
    }

    /// Updates the Prometheus series with a completed round.
    fn record(&self, m: &RoundMetrics) {
        let t = &self.telemetry;
        t.rounds.inc();
        t.round.set(m.round as i64);
        t.participants.set(m.participants.len() as i64);
        t.round_seconds.observe(m.seconds);
        if let Some(a) = m.accuracy {
            t.accuracy.set(f64::from(a));
        }
    }

    pub(crate) fn announcement(&self, round: u64) -> RoundAnnouncement {
        let deadline_ms = net::clock::now_ms() + (self.cfg.round.deadline_secs * 1000.0) as u64;
        RoundAnnouncement {
            federation: self.federation().clone(),
            round,
            reference_set: self.reference_id,
            reference_samples: self.reference.samples as u32,
            selection: SampleSelection::Seeded {
                seed: derive(self.cfg.seed, Stream::Selection, round),
                count: self.cfg.round.samples,
            },
            classes: self.cfg.classes as u32,
            temperature: self.cfg.round.temperature,
            deadline_unix_ms: deadline_ms,
            encoding: self.cfg.round.encoding,
            secure: None,
        }
    }
}
/// The selection a consensus covers and, for each of its rows, its position in `rows` (the
/// round's resolved selection): the whole round, or with `samples` set, the first `samples`
/// draws of its selection (a seeded draw of fewer rows is a subset of the round's; explicit
/// indices keep their first ones).
fn consensus_rows(
    round: u64,
    selection: &SampleSelection,
    population: u32,
    rows: &[u32],
    samples: Option<u32>,
) -> Result<(SampleSelection, Vec<usize>), Error> {
    let sub = match (selection, samples) {
        (_, None) => return Ok((selection.clone(), (0..rows.len()).collect())),
        (SampleSelection::Seeded { seed, count }, Some(n)) => {
            SampleSelection::Seeded { seed: *seed, count: n.min(*count) }
        }
        (SampleSelection::Indices(v), Some(n)) => SampleSelection::Indices(v[..v.len().min(n as usize)].to_vec()),
    };
    let at: std::collections::HashMap<u32, usize> = rows.iter().enumerate().map(|(i, &r)| (r, i)).collect();
    let kept = sub
        .resolve(population)?
        .iter()
        .map(|r| at.get(r).copied().ok_or_else(|| Error::Round { round, detail: format!("row {r} was not drawn") }))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((sub, kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_seeded_consensus_of_fewer_samples_covers_rows_of_the_round(seed: u64, count in 1u32..300, n in 1u32..300) {
            let population = 400;
            let selection = SampleSelection::Seeded { seed, count };
            let rows = selection.resolve(population).unwrap();
            let (sub, kept) = consensus_rows(1, &selection, population, &rows, Some(n)).unwrap();
            let sub_rows = sub.resolve(population).unwrap();
            prop_assert_eq!(sub_rows.len(), n.min(count) as usize);
            prop_assert_eq!(kept.iter().map(|&i| rows[i]).collect::<Vec<_>>(), sub_rows);
            let (whole, all) = consensus_rows(1, &selection, population, &rows, None).unwrap();
            prop_assert_eq!(whole, selection);
            prop_assert_eq!(all, (0..rows.len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn explicit_indices_keep_their_first_ones() {
        let selection = SampleSelection::Indices(vec![7, 2, 9, 4]);
        let rows = selection.resolve(10).unwrap();
        let (sub, kept) = consensus_rows(1, &selection, 10, &rows, Some(2)).unwrap();
        assert_eq!(sub, SampleSelection::Indices(vec![7, 2]));
        assert_eq!(kept, vec![0, 1]);
        // Rows the round did not draw are refused rather than taught.
        assert!(consensus_rows(1, &selection, 10, &[7, 9], Some(2)).is_err());
    }
}
