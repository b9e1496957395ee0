//! The node's conversation with the aggregator: connect and join (with backoff), make sure the
//! pinned reference set is present, then answer requests until the federation is finished, the
//! connection is lost (then join again), or the node is shut down. Every announcement goes
//! through the node's [`QueryPolicy`] when it arrives (a refusal goes back in the receipt),
//! when its work starts and when its answer is ready; an answer is recorded in the state folder
//! before it is sent. A node whose data or model does not fit the federation (another feature
//! count than the reference set's, another class count) tells the aggregator so at its join
//! (a receipt refusing with `DataMismatch`) and stops with the error: retrying cannot mend it.
//!
//! One `select!` drives the session: the shutdown, the round's work (a task on the trainer's
//! thread), the submissions being sent (each a task that resends until acknowledged or the
//! round's deadline, see [`crate::submit`]) and the network's events. Nothing waits behind a
//! resend: an announcement or a lost connection is handled as it comes. The federation's end
//! (`Finished`) while a round is being trained waits for it: its training is paid for, so its
//! answer is recorded and sent; no new round starts, and the final training does not learn again
//! from a consensus that round's training learnt from.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use net::multiaddr::Multiaddr;
use net::{Event, Responder};
use protocol::message::{Reply, SecureReply, SecureStep};
use protocol::{
    FederationId, Hello, Identity, Message, ParticipantId, Receipt, ReceiptStatus, ReferenceSet, ReferenceSetId,
    RefusalReason, RoundAnnouncement, Submission,
};
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::faults::Faults;
use crate::local::{self, Answer, Teacher};
use crate::policy::{Answers, Decision, QueryPolicy};
use crate::reference;
use crate::refusal::Refusal;
use crate::secure::Member;
use crate::trainer::Trainer;

/// How long a finished node waits for the aggregator to close the connection (so that the
/// receipt it just sent is read before the connection goes).
const LINGER: Duration = Duration::from_secs(5);

/// What a node did before it stopped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSummary {
    /// Rounds whose submission the aggregator accepted.
    pub accepted_rounds: Vec<u64>,
    /// Rounds whose submission was refused, with the reason.
    pub refused_rounds: Vec<(u64, RefusalReason)>,
    /// Consensus messages received.
    pub consensus_received: usize,
    /// Times the node (re)joined.
    pub joins: usize,
    /// The round at which the node left on purpose (a simulated fault).
    pub left_at: Option<u64>,
    /// The aggregator declared the federation finished after this many rounds.
    pub finished_after: Option<u64>,
}

/// Why the session ended.
#[derive(Debug)]
pub(crate) enum Exit {
    Shutdown,
    Finished,
    Left,
    NetworkStopped,
    /// A failure that retrying cannot mend.
    Failed(Error),
}

/// The node's side of the federation: what it was configured with, what it learnt from the
/// aggregator, and what it is doing now.
pub(crate) struct Session {
    pub(crate) federation: FederationId,
    pub(crate) aggregator: ParticipantId,
    pub(crate) aggregator_addr: Multiaddr,
    pub(crate) client: net::Client,
    pub(crate) events: mpsc::Receiver<Event>,
    pub(crate) trainer: Trainer,
    pub(crate) faults: Arc<dyn Faults>,
    pub(crate) reference_path: PathBuf,
    /// Rows of private data.
    pub(crate) local_samples: u64,
    /// Features a row of the private data: a fetched reference set must have as many.
    pub(crate) features: usize,
    /// Whether the aggregator asked for this node's sample count when it joined.
    pub(crate) sample_count_wanted: bool,
    pub(crate) policy: QueryPolicy,
    /// What this node has answered, as recorded at `answers_path`.
    pub(crate) answers: Answers,
    pub(crate) answers_path: PathBuf,
    /// The pinned reference set, once present.
    pub(crate) reference: Option<(ReferenceSetId, Arc<ReferenceSet>)>,
    /// The last consensus, with its round.
    pub(crate) teacher: Option<(Arc<Teacher>, u64)>,
    /// The round of the consensus the last completed round's training learnt from: the final
    /// training at the federation's end does not learn (nor pay for) the same one again.
    pub(crate) learnt: Option<u64>,
    /// The newest announcement not yet worked on.
    pub(crate) pending: Option<RoundAnnouncement>,
    pub(crate) summary: NodeSummary,
    pub(crate) telemetry: crate::metrics::Metrics,
    /// The live view's snapshot ([`crate::status`]).
    pub(crate) board: crate::status::Board,
    pub(crate) in_flight: InFlight,
    /// The node's signing key: it signs its pair keys and survivor lists in secure rounds.
    pub(crate) identity: Arc<Identity>,
    /// This node's side of the secure round under way, if any.
    pub(crate) secure: Option<Member>,
}

/// The tasks a session runs beside its `select!`.
#[derive(Default)]
pub(crate) struct InFlight {
    /// A round's work. It outlives a lost connection and the federation's end: its training is
    /// paid for (privacy budget, time), so its answer is recorded and sent after the reconnection
    /// rather than trained again, or dropped unrecorded.
    work: Option<Work>,
    /// The round of the consensus `work` learns from.
    teacher: Option<u64>,
    /// Submissions being sent, each until acknowledged or its round's deadline (they too
    /// outlive a lost connection: a resend redials).
    sends: JoinSet<Sent>,
    /// The rounds of `sends`.
    sending: BTreeSet<u64>,
}

type Work = JoinHandle<(RoundAnnouncement, Result<Answer, Error>)>;

/// A submission's last answer: its round, the samples it abstained on, and the aggregator's
/// receipt (or why there was none).
type Sent = (u64, usize, Result<Message, net::Error>);

/// Whether the session goes on after an event.
enum Flow {
    /// Keep serving.
    Serve,
    /// The connection is lost: join again.
    Rejoin,
    /// The session is over.
    Exit(Exit),
}

/// The work's outcome, once there is work (pending otherwise).
async fn work_done(work: &mut Option<Work>) -> Result<(RoundAnnouncement, Result<Answer, Error>), JoinError> {
    match work {
        Some(w) => w.await,
        None => std::future::pending().await,
    }
}

impl Session {
    pub(crate) async fn run(mut self, shutdown: &CancellationToken) -> Result<NodeSummary, Error> {
        let exit = self.converse(shutdown).await;
        self.wind_down(&exit).await;
        match exit {
            Exit::Finished => {
                let last = match (&self.reference, &self.teacher) {
                    (Some((_, rs)), Some((t, round))) if self.learnt != Some(*round) => {
                        Some((rs.clone(), t.clone(), *round))
                    }
                    _ => None,
                };
                self.trainer.finish(last).await?;
                self.linger(shutdown).await;
            }
            Exit::Shutdown | Exit::Left | Exit::NetworkStopped => self.trainer.checkpoint().await?,
            Exit::Failed(e) => return Err(e),
        }
        Ok(self.summary)
    }

    /// Joins, serves until the connection is lost, joins again, … until the session is over.
    async fn converse(&mut self, shutdown: &CancellationToken) -> Exit {
        loop {
            if let Err(exit) = self.join_with_backoff(shutdown).await {
                return exit;
            }
            loop {
                match self.step(shutdown).await {
                    Flow::Serve => {}
                    Flow::Rejoin => break,
                    Flow::Exit(exit) => return exit,
                }
            }
        }
    }

    /// Joins the aggregator, retrying with a growing pause until it works; `Err` if the session
    /// ends first, or on a failure that retrying cannot mend.
    async fn join_with_backoff(&mut self, shutdown: &CancellationToken) -> Result<(), Exit> {
        let mut backoff = Duration::from_millis(200);
        loop {
            let joined = tokio::select! {
                _ = shutdown.cancelled() => return Err(Exit::Shutdown),
                r = self.join() => r,
            };
            let Err(e) = joined else { return Ok(()) };
            match &e {
                // Another peer at the aggregator's address, or data or a config that does not
                // fit the federation: retrying cannot help.
                Error::Net(net::Error::WrongPeer { .. }) | Error::FeatureCount { .. } | Error::Config { .. } => {
                    return Err(Exit::Failed(e));
                }
                // An aggregator refuses a key that is not on its roster by closing the
                // connection at once: say what the data holder can check.
                Error::Net(net::Error::Request { peer, failure: net::RequestFailure::ConnectionClosed }) => {
                    tracing::warn!(aggregator = %peer, retry_in_ms = backoff.as_millis() as u64,
                        "the aggregator closed the connection before answering: if this keeps happening, this node's PeerId (logged at start) is probably not on its roster; send it to the operator (`fd-aggregator roster add`)")
                }
                _ => {
                    tracing::warn!(error = %net::error::Chain(&e), retry_in_ms = backoff.as_millis() as u64, "cannot join the aggregator")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Err(Exit::Shutdown),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Starts the pending announcement's work if none is running, then handles whatever comes
    /// first: the shutdown, the work's answer, a submission's last receipt, or a network event.
    async fn step(&mut self, shutdown: &CancellationToken) -> Flow {
        let finished = self.summary.finished_after.is_some();
        if finished && self.in_flight.work.is_none() {
            return Flow::Exit(Exit::Finished);
        }
        if self.in_flight.work.is_none()
            && !finished
            && let Some(ann) = self.pending.take()
            && let Err(exit) = self.start(ann)
        {
            return Flow::Exit(exit);
        }
        let InFlight { work, sends, .. } = &mut self.in_flight;
        tokio::select! {
            _ = shutdown.cancelled() => Flow::Exit(Exit::Shutdown),
            done = work_done(work), if work.is_some() => {
                self.in_flight.work = None;
                let teacher = self.in_flight.teacher.take();
                match done {
                    Ok((ann, Ok(answer))) => {
                        self.learnt = teacher;
                        self.submit(ann, answer).await
                    }
                    Ok((ann, Err(e))) => tracing::error!(round = ann.round, error = %net::error::Chain(&e), "local round failed"),
                    Err(e) => tracing::error!(error = %e, "local round task failed"),
                }
                Flow::Serve
            }
            Some(sent) = sends.join_next(), if !sends.is_empty() => {
                self.on_sent(sent);
                Flow::Serve
            }
            ev = self.events.recv() => match ev {
                None => Flow::Exit(Exit::NetworkStopped),
                // After the federation's end there is nothing to join again: the work's answer is
                // recorded, and its send redials.
                Some(Event::Disconnected(p)) if p == self.aggregator && !finished => {
                    self.board.left();
                    tracing::warn!(working = self.in_flight.work.is_some(), "aggregator connection lost; reconnecting");
                    Flow::Rejoin
                }
                // The federation's end waits for the round being trained (see `InFlight::work`).
                Some(Event::Request { peer, message, responder }) => {
                    self.on_request(peer, message, responder).await;
                    Flow::Serve
                }
                Some(Event::Refused { peer, reason, detail }) => {
                    tracing::warn!(peer = %peer.short(), ?reason, %detail, "refused a message");
                    Flow::Serve
                }
                Some(_) => Flow::Serve,
            }
        }
    }

    /// Acts on an announcement taken earlier, now that no work is running: leaves (a simulated
    /// fault), starts its work, resends the answer already given, or declines it.
    fn start(&mut self, ann: RoundAnnouncement) -> Result<(), Exit> {
        if self.faults.leaves_at(ann.round) {
            tracing::info!(round = ann.round, "leaving the federation (simulation)");
            self.summary.left_at = Some(ann.round);
            return Err(Exit::Left);
        }
        // Checked again: an answer given since the announcement arrived counts.
        match self.policy.check(&ann, &self.answers) {
            Ok(Decision::Answer) => {
                self.in_flight.teacher = self.teacher.as_ref().map(|(_, round)| *round);
                self.in_flight.work = Some(self.start_work(ann));
            }
            Ok(Decision::Resend(sub)) => {
                tracing::info!(round = ann.round, "round asked again with the same question; sending the same answer");
                self.answer(&ann, *sub);
            }
            Err(r) => {
                self.telemetry.decline(r.reason);
                self.board.declined(ann.round, r.reason, &r.detail);
                tracing::warn!(round = ann.round, reason = ?r.reason, detail = %r.detail, "not answering a round")
            }
        }
        Ok(())
    }

    /// Ends what the session still runs: work still running (only at a shutdown: the
    /// federation's end waits for it) is dropped (its trainer call finishes on the trainer's
    /// thread); at the federation's end the submissions being sent are awaited (their receipts
    /// count in the summary), otherwise dropped.
    async fn wind_down(&mut self, exit: &Exit) {
        if let Some(w) = self.in_flight.work.take() {
            w.abort();
            let _ = w.await;
        }
        if !matches!(exit, Exit::Finished) {
            self.in_flight.sends.abort_all();
        }
        while let Some(sent) = self.in_flight.sends.join_next().await {
            self.on_sent(sent);
        }
    }

    /// After the federation is finished: lets the aggregator close the connection, for at most
    /// [`LINGER`].
    async fn linger(&mut self, shutdown: &CancellationToken) {
        let aggregator = self.aggregator;
        let closed = async {
            loop {
                match self.events.recv().await {
                    None => break,
                    Some(Event::Disconnected(p)) if p == aggregator => break,
                    Some(_) => {}
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::timeout(LINGER, closed) => {}
        }
    }

    async fn join(&mut self) -> Result<(), Error> {
        if !self.client.connected().await?.contains(&self.aggregator) {
            self.client.dial(self.aggregator_addr.clone()).await?;
        }
        let hello = Message::Hello(Hello {
            federation: self.federation.clone(),
            participant: self.client.id(),
            protocol_version: protocol::PROTOCOL_VERSION,
            agent: format!("fd-node/{}", env!("CARGO_PKG_VERSION")),
        });
        let accepted = match self.client.request(&self.aggregator, &hello).await? {
            Message::JoinReply(r) => {
                r.outcome.map_err(|reason| Error::Refused { what: "join", reason, detail: r.detail })?
            }
            Message::Receipt(Receipt { status: ReceiptStatus::Refused(reason), detail, .. }) => {
                return Err(Error::Refused { what: "join", reason, detail });
            }
            other => return Err(Error::Unexpected { request: "Hello", got: other.kind() }),
        };
        let classes = self.trainer.classes();
        if accepted.classes as usize != classes {
            let e = Error::config(
                "model",
                format!("the federation predicts {} classes, this node's model {classes}", accepted.classes),
            );
            return Err(self.withdraw(accepted.current_round, e).await);
        }
        let pin = self.policy.reference_sha256;
        if let Err(r) = self.policy.check_reference(&accepted.reference_set) {
            // Stay joined: each announcement is refused with the reason, which the aggregator logs.
            tracing::error!(announced = %accepted.reference_set, pinned = %pin, detail = %r.detail, "the federation's reference set is not the pinned one; its rounds will be refused");
        } else if self.reference.is_none() {
            let fetched = reference::fetch(
                &self.client,
                &self.aggregator,
                &self.federation,
                &self.reference_path,
                pin,
                self.policy.reference_bytes,
                self.features,
            )
            .await;
            let rs = match fetched {
                Err(e @ Error::FeatureCount { .. }) => return Err(self.withdraw(accepted.current_round, e).await),
                other => other?,
            };
            self.reference = Some((pin, rs));
        }
        self.sample_count_wanted = accepted.sample_count_wanted;
        if accepted.sample_count_wanted && self.policy.sample_count(true, self.local_samples).is_none() {
            tracing::info!(
                "the aggregator asks for this node's sample count; policy.share_sample_count is off, so it is not sent"
            );
        }
        self.summary.joins += 1;
        self.telemetry.joins.inc();
        self.board.joined(accepted.current_round);
        tracing::info!(round = accepted.current_round, "joined the federation");
        Ok(())
    }

    /// Tells the aggregator that this node cannot take part, its data or model not fitting the
    /// federation (`e` says how): a receipt that refuses round `round` with
    /// [`RefusalReason::DataMismatch`], so that the rounds stop waiting for it. Waits at most
    /// [`LINGER`] for the aggregator's answer; returns `e`, which stops the node.
    async fn withdraw(&self, round: u64, e: Error) -> Error {
        tracing::error!(round, error = %e, "this node cannot take part; telling the aggregator, then stopping");
        let refusal = Message::Receipt(Receipt {
            federation: self.federation.clone(),
            round,
            status: ReceiptStatus::Refused(RefusalReason::DataMismatch),
            detail: protocol::message::short_detail(&e.to_string()),
        });
        match tokio::time::timeout(LINGER, self.client.request(&self.aggregator, &refusal)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(error = %net::error::Chain(&err), "could not tell the aggregator"),
            Err(_) => tracing::warn!("the aggregator did not answer in time"),
        }
        e
    }

    async fn on_request(&mut self, peer: ParticipantId, message: Message, responder: Responder) {
        let round = message.round().unwrap_or(0);
        let outcome = match message {
            _ if peer != self.aggregator => Err(Refusal {
                reason: RefusalReason::NotOnRoster,
                detail: "only the aggregator may send requests".into(),
            }),
            Message::RoundAnnouncement(ann) => self.take_announcement(ann).map(|()| None),
            Message::Consensus(c) => self.take_consensus(&c).map(|()| None),
            Message::SecureStep(step) if step.federation == self.federation => self.take_step(step),
            Message::Finished(f) => {
                tracing::info!(rounds = f.rounds, detail = %f.detail, "the aggregator finished the federation");
                self.summary.finished_after = Some(f.rounds);
                self.board.finished();
                Ok(None)
            }
            other => Err(Refusal {
                reason: RefusalReason::Unavailable,
                detail: format!("a node does not serve {:?}", other.kind()),
            }),
        };
        let (status, detail) = match outcome {
            Ok(Some(reply)) => {
                if let Err(e) = responder.respond(reply).await {
                    tracing::warn!(error = %net::error::Chain(&e), "could not answer");
                }
                return;
            }
            Ok(None) => (ReceiptStatus::Accepted, String::new()),
            Err(r) => {
                self.telemetry.decline(r.reason);
                self.board.declined(round, r.reason, &r.detail);
                tracing::warn!(round, reason = ?r.reason, detail = %r.detail, "refusing a request");
                (ReceiptStatus::Refused(r.reason), protocol::message::short_detail(&r.detail))
            }
        };
        let receipt = Message::Receipt(Receipt { federation: self.federation.clone(), round, status, detail });
        if let Err(e) = responder.respond(receipt).await {
            tracing::warn!(error = %net::error::Chain(&e), "could not answer");
        }
    }

    fn reference(&self) -> Result<&(ReferenceSetId, Arc<ReferenceSet>), Refusal> {
        self.reference
            .as_ref()
            .ok_or(Refusal { reason: RefusalReason::Unavailable, detail: "no reference set yet".into() })
    }

    fn take_announcement(&mut self, ann: RoundAnnouncement) -> Result<(), Refusal> {
        self.policy.check(&ann, &self.answers)?;
        let (id, rs) = self.reference()?;
        local::check_announcement(&ann, id, rs, self.trainer.classes())?;
        if !self.trainer.can_train() {
            return Err(Refusal {
                reason: RefusalReason::BudgetSpent,
                detail: "this node's privacy budget cannot pay for another training".into(),
            });
        }
        match &ann.secure {
            Some(_) if self.secure.as_ref().is_none_or(|m| m.digest() != ann.digest()) => {
                self.secure = Some(Member::new(&ann, &self.identity, self.policy.min_secure_threshold)?);
            }
            Some(_) => {}
            None if self.policy.require_secure_aggregation => {
                return Err(Refusal::new(
                    RefusalReason::Policy,
                    "this node answers only rounds with secure aggregation (policy.require_secure_aggregation)",
                ));
            }
            None => {}
        }
        tracing::info!(
            round = ann.round,
            samples = ann.selection.len(),
            secure = ann.secure.is_some(),
            "round announced"
        );
        self.board.announced(ann.round);
        if self.pending.as_ref().is_none_or(|p| p.round < ann.round) {
            self.pending = Some(ann);
        }
        Ok(())
    }

    fn take_consensus(&mut self, c: &protocol::Consensus) -> Result<(), Refusal> {
        self.policy.check_reference(&c.reference_set)?;
        let (id, rs) = self.reference()?;
        let teacher = Teacher::from_consensus(c, id, rs, self.trainer.classes())?;
        tracing::info!(
            round = c.round,
            samples = teacher.rows.len(),
            participants = c.participants,
            "consensus received"
        );
        self.teacher = Some((Arc::new(teacher), c.round));
        self.summary.consensus_received += 1;
        self.telemetry.consensus.inc();
        self.board.consensus();
        Ok(())
    }

    fn start_work(&self, ann: RoundAnnouncement) -> Work {
        let trainer = self.trainer.clone();
        let faults = self.faults.clone();
        let reference = self.reference.as_ref().map(|(_, rs)| rs.clone());
        let teacher = self.teacher.as_ref().map(|(t, _)| t.clone());
        let seconds = self.telemetry.work_seconds.clone();
        tokio::spawn(async move {
            let Some(reference) = reference else {
                return (ann, Err(Error::Reference { detail: "no reference set".into() }));
            };
            let started = std::time::Instant::now();
            let labels = trainer.round(ann.clone(), reference, teacher, faults.clone()).await;
            seconds.observe(started.elapsed().as_secs_f64());
            let delay = faults.delay(ann.round);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            (ann, labels)
        })
    }

    /// Records the answer to `ann` (atomically, in the state folder), then sends it. An answer
    /// that cannot be recorded is not sent.
    async fn submit(&mut self, ann: RoundAnnouncement, answer: Answer) {
        // The same round announced again meanwhile (after a reconnection) is answered by this.
        if self.pending.as_ref().is_some_and(|p| p.round <= ann.round) {
            self.pending = None;
        }
        let sub = match self.policy.check(&ann, &self.answers) {
            Ok(Decision::Answer) => Submission {
                federation: self.federation.clone(),
                round: ann.round,
                announcement: ann.digest(),
                reference_set: ann.reference_set,
                temperature: ann.temperature,
                local_samples: self
                    .policy
                    .sample_count(self.sample_count_wanted, self.faults.claimed_samples(self.local_samples)),
                labels: answer.labels,
                abstained: answer.abstained,
            },
            Ok(Decision::Resend(sub)) => *sub,
            Err(r) => {
                tracing::warn!(round = ann.round, reason = ?r.reason, detail = %r.detail, "not sending an answer the policy forbids");
                return;
            }
        };
        if self.answers.last.as_ref() != Some(&sub) {
            let answers = self.answers.with(sub.clone());
            let (record, path) = (answers.clone(), self.answers_path.clone());
            let saved =
                tokio::task::spawn_blocking(move || record.save(&path)).await.map_err(Error::from).and_then(|r| r);
            if let Err(e) = saved {
                tracing::error!(round = ann.round, error = %net::error::Chain(&e), "cannot record the answer; not sending it");
                return;
            }
            self.answers = answers;
        }
        self.answer(&ann, sub);
    }

    /// Sends the answer `sub` to `ann`: as it is, or in a secure round masked, never in the
    /// clear.
    fn answer(&mut self, ann: &RoundAnnouncement, sub: Submission) {
        if ann.secure.is_none() {
            return self.send_submission(sub, ann.deadline_unix_ms);
        }
        match &mut self.secure {
            Some(member) if member.digest() == ann.digest() => {
                if let Err(r) = member.set_answer(&sub) {
                    tracing::error!(round = ann.round, detail = %r.detail, "cannot mask the answer; not sending it");
                    return;
                }
                self.send_masked();
            }
            _ => tracing::warn!(
                round = ann.round,
                "no secure-aggregation state for this round (the node restarted after the round began): the answer is not sent, and never in the clear"
            ),
        }
    }

    /// Sends the masked answer of the secure round under way, once the member holds both its
    /// answer and its shares (and it is not being sent already).
    fn send_masked(&mut self) {
        let Some(member) = &mut self.secure else { return };
        let round = member.round();
        if self.in_flight.sending.contains(&round) || self.summary.accepted_rounds.contains(&round) {
            return;
        }
        let masked = match member.masked(&self.identity) {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(r) => {
                tracing::error!(round, detail = %r.detail, "cannot mask the answer; not sending it");
                return;
            }
        };
        let (threshold, neighbours, cohort) = member.protection();
        tracing::info!(
            round,
            threshold,
            neighbours,
            cohort,
            bytes = masked.words.len(),
            "sending the answer masked (secure aggregation): the aggregator can remove the masks only from the sum of at least the threshold's members"
        );
        let message = Message::SecureReply(SecureReply {
            federation: self.federation.clone(),
            round,
            announcement: member.digest(),
            reply: Reply::Masked(masked),
        });
        let deadline = member.deadline_unix_ms();
        self.in_flight.sending.insert(round);
        let (client, aggregator, addr) = (self.client.clone(), self.aggregator, self.aggregator_addr.clone());
        self.in_flight.sends.spawn(async move {
            let answer = crate::submit::until_acknowledged(client, aggregator, addr, message, deadline).await;
            (round, 0, answer)
        });
    }

    /// Answers a step of the secure round under way.
    fn take_step(&mut self, step: SecureStep) -> Result<Option<Message>, Refusal> {
        let Some(member) = self.secure.as_mut().filter(|m| m.digest() == step.announcement && m.round() == step.round)
        else {
            return Err(Refusal::new(
                RefusalReason::WrongAnnouncement,
                "no secure round of this announcement under way",
            ));
        };
        let name = step.step.name();
        let reply = member.step(step.step, &self.identity)?;
        tracing::debug!(round = step.round, step = name, "secure-aggregation step answered");
        let round = member.round();
        let announcement = member.digest();
        if reply.is_none() {
            // The shares arrived: the answer can go if it is ready.
            self.send_masked();
        }
        Ok(reply.map(|reply| {
            Message::SecureReply(SecureReply { federation: self.federation.clone(), round, announcement, reply })
        }))
    }

    /// Starts sending `sub`, in a task that resends it until the aggregator acknowledges it or
    /// the round's deadline passes; its last answer comes back to [`Session::on_sent`]. A round
    /// already being sent is not sent twice.
    fn send_submission(&mut self, sub: Submission, deadline_unix_ms: u64) {
        let round = sub.round;
        if !self.in_flight.sending.insert(round) {
            tracing::info!(round, "the answer is being sent already");
            return;
        }
        let abstained = sub.abstained.as_ref().map_or(0, protocol::Mask::count);
        let (client, aggregator, addr) = (self.client.clone(), self.aggregator, self.aggregator_addr.clone());
        let message = Message::Submission(sub);
        self.in_flight.sends.spawn(async move {
            let answer = crate::submit::until_acknowledged(client, aggregator, addr, message, deadline_unix_ms).await;
            (round, abstained, answer)
        });
    }

    /// Takes a submission's last answer, or notes why it has none.
    fn on_sent(&mut self, sent: Result<Sent, JoinError>) {
        let (round, abstained, answer) = match sent {
            Ok(sent) => sent,
            Err(e) => {
                if !e.is_cancelled() {
                    tracing::error!(error = %e, "submission task failed");
                }
                return;
            }
        };
        self.in_flight.sending.remove(&round);
        match answer {
            Ok(Message::Receipt(r)) => match r.status {
                ReceiptStatus::Accepted => {
                    tracing::info!(round, abstained, "submission accepted");
                    self.summary.accepted_rounds.push(round);
                    self.telemetry.submissions.accepted.inc();
                    self.telemetry.round.set(round as i64);
                    self.board.answered(round);
                }
                ReceiptStatus::Refused(reason) => {
                    tracing::warn!(round, ?reason, detail = %r.detail, "submission refused");
                    self.summary.refused_rounds.push((round, reason));
                    self.telemetry.submissions.refuse(reason);
                    self.board.refused(round, reason, &r.detail);
                }
            },
            Ok(other) => tracing::warn!(kind = ?other.kind(), "unexpected answer to a submission"),
            Err(e) => tracing::warn!(round, error = %net::error::Chain(&e), "submission failed"),
        }
    }
}
