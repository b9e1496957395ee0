//! The node's conversation with the aggregator: connect and join (with backoff), make sure the
//! reference set is present, then answer requests until the federation is finished, the
//! connection is lost (then join again), or the node is shut down.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use net::multiaddr::Multiaddr;
use net::{Event, Responder};
use protocol::{
    FederationId, Hello, Message, ParticipantId, Receipt, ReceiptStatus, ReferenceSet, ReferenceSetId, RefusalReason, RoundAnnouncement,
    SoftLabels, Submission,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::faults::Faults;
use crate::local::{self, Refusal, Teacher};
use crate::trainer::Trainer;
use crate::{reference, Error, NodeSummary};

/// How long a finished node waits for the aggregator to close the connection (so that the
/// receipt it just sent is read before the connection goes).
const LINGER: Duration = Duration::from_secs(5);

/// Why the session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    Shutdown,
    Finished,
    Left,
    NetworkStopped,
}

pub(crate) struct Session {
    pub(crate) federation: FederationId,
    pub(crate) aggregator: ParticipantId,
    pub(crate) aggregator_addr: Multiaddr,
    pub(crate) client: net::Client,
    pub(crate) events: mpsc::Receiver<Event>,
    pub(crate) trainer: Trainer,
    pub(crate) faults: Arc<dyn Faults>,
    pub(crate) reference_path: PathBuf,
    pub(crate) local_samples: u64,
    pub(crate) reference: Option<(ReferenceSetId, Arc<ReferenceSet>)>,
    /// The last consensus, with its round.
    pub(crate) teacher: Option<(Arc<Teacher>, u64)>,
    /// The newest announcement not yet worked on.
    pub(crate) pending: Option<RoundAnnouncement>,
    pub(crate) summary: NodeSummary,
}

type Work = JoinHandle<(RoundAnnouncement, Result<SoftLabels, Error>)>;

impl Session {
    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> Result<NodeSummary, Error> {
        let exit = self.converse(&shutdown).await;
        match exit {
            Exit::Finished => {
                let last = match (&self.reference, &self.teacher) {
                    (Some((_, rs)), Some((t, round))) => Some((rs.clone(), t.clone(), *round)),
                    _ => None,
                };
                self.trainer.finish(last).await?;
                self.linger(&shutdown).await;
            }
            Exit::Shutdown | Exit::Left | Exit::NetworkStopped => self.trainer.checkpoint().await?,
        }
        Ok(self.summary)
    }

    async fn converse(&mut self, shutdown: &CancellationToken) -> Exit {
        let mut backoff = Duration::from_millis(200);
        'connect: loop {
            let joined = tokio::select! {
                _ = shutdown.cancelled() => return Exit::Shutdown,
                r = self.join() => r,
            };
            if let Err(e) = joined {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot join the aggregator");
                tokio::select! {
                    _ = shutdown.cancelled() => return Exit::Shutdown,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue 'connect;
            }
            backoff = Duration::from_millis(200);
            let mut work: Option<Work> = None;
            let exit = loop {
                if work.is_none() {
                    if let Some(ann) = self.pending.take() {
                        if self.faults.leaves_at(ann.round) {
                            tracing::info!(round = ann.round, "leaving the federation (simulation)");
                            self.summary.left_at = Some(ann.round);
                            break Exit::Left;
                        }
                        work = Some(self.start_work(ann));
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break Exit::Shutdown,
                    done = async { work.as_mut().expect("guarded by the condition").await }, if work.is_some() => {
                        work = None;
                        match done {
                            Ok((ann, Ok(labels))) => self.submit(ann, labels).await,
                            Ok((ann, Err(e))) => tracing::error!(round = ann.round, error = %e, "local round failed"),
                            Err(e) => tracing::error!(error = %e, "local round task failed"),
                        }
                    }
                    ev = self.events.recv() => match ev {
                        None => break Exit::NetworkStopped,
                        Some(Event::Disconnected(p)) if p == self.aggregator => {
                            tracing::warn!("aggregator connection lost; reconnecting");
                            if let Some(w) = work.take() {
                                w.abort();
                            }
                            continue 'connect;
                        }
                        Some(Event::Request { peer, message, responder }) => {
                            self.on_request(peer, message, responder).await;
                            if self.summary.finished_after.is_some() {
                                break Exit::Finished;
                            }
                        }
                        Some(Event::Refused { peer, reason, detail }) => tracing::warn!(peer = %peer.short(), ?reason, %detail, "refused a message"),
                        Some(_) => {}
                    }
                }
            };
            if let Some(w) = work {
                w.abort();
            }
            return exit;
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
            Message::JoinReply(r) => r.outcome.map_err(|reason| Error::Refused { what: "join", reason, detail: r.detail })?,
            Message::Receipt(Receipt { status: ReceiptStatus::Refused(reason), detail, .. }) => return Err(Error::Refused { what: "join", reason, detail }),
            other => return Err(Error::Unexpected { request: "Hello", got: other.kind() }),
        };
        let classes = self.trainer.classes();
        if accepted.classes as usize != classes {
            return Err(Error::Config { field: "model".into(), detail: format!("the federation predicts {} classes, this node's model {classes}", accepted.classes) });
        }
        if self.reference.as_ref().is_none_or(|(have, _)| *have != accepted.reference_set) {
            let rs = reference::ensure(&self.client, &self.aggregator, &self.federation, &self.reference_path, accepted.reference_set).await?;
            self.reference = Some((accepted.reference_set, rs));
        }
        self.summary.joins += 1;
        tracing::info!(round = accepted.current_round, "joined the federation");
        Ok(())
    }

    async fn on_request(&mut self, peer: ParticipantId, message: Message, responder: Responder) {
        let round = message.round().unwrap_or(0);
        let outcome = match message {
            _ if peer != self.aggregator => Err(Refusal { reason: RefusalReason::NotOnRoster, detail: "only the aggregator may send requests".into() }),
            Message::RoundAnnouncement(ann) => self.take_announcement(ann),
            Message::Consensus(c) => self.take_consensus(&c),
            Message::Finished(f) => {
                tracing::info!(rounds = f.rounds, detail = %f.detail, "the aggregator finished the federation");
                self.summary.finished_after = Some(f.rounds);
                Ok(())
            }
            other => Err(Refusal { reason: RefusalReason::Unavailable, detail: format!("a node does not serve {:?}", other.kind()) }),
        };
        let (status, detail) = match outcome {
            Ok(()) => (ReceiptStatus::Accepted, String::new()),
            Err(r) => {
                tracing::warn!(round, reason = ?r.reason, detail = %r.detail, "refusing a request");
                (ReceiptStatus::Refused(r.reason), protocol::message::short_detail(&r.detail))
            }
        };
        let receipt = Message::Receipt(Receipt { federation: self.federation.clone(), round, status, detail });
        if let Err(e) = responder.respond(receipt).await {
            tracing::warn!(error = %e, "could not answer");
        }
    }

    fn reference(&self) -> Result<&(ReferenceSetId, Arc<ReferenceSet>), Refusal> {
        self.reference.as_ref().ok_or(Refusal { reason: RefusalReason::Unavailable, detail: "no reference set yet".into() })
    }

    fn take_announcement(&mut self, ann: RoundAnnouncement) -> Result<(), Refusal> {
        let (id, rs) = self.reference()?;
        local::check_announcement(&ann, id, rs, self.trainer.classes())?;
        tracing::info!(round = ann.round, samples = ann.selection.len(), "round announced");
        if self.pending.as_ref().is_none_or(|p| p.round < ann.round) {
            self.pending = Some(ann);
        }
        Ok(())
    }

    fn take_consensus(&mut self, c: &protocol::Consensus) -> Result<(), Refusal> {
        let (id, rs) = self.reference()?;
        let teacher = Teacher::from_consensus(c, id, rs, self.trainer.classes())?;
        tracing::info!(round = c.round, samples = teacher.rows.len(), participants = c.participants, "consensus received");
        self.teacher = Some((Arc::new(teacher), c.round));
        self.summary.consensus_received += 1;
        Ok(())
    }

    fn start_work(&self, ann: RoundAnnouncement) -> Work {
        let trainer = self.trainer.clone();
        let faults = self.faults.clone();
        let reference = self.reference.as_ref().map(|(_, rs)| rs.clone());
        let teacher = self.teacher.as_ref().map(|(t, _)| t.clone());
        tokio::spawn(async move {
            let Some(reference) = reference else {
                return (ann, Err(Error::Reference { detail: "no reference set".into() }));
            };
            let labels = trainer.round(ann.clone(), reference, teacher, faults.clone()).await;
            let delay = faults.delay(ann.round);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            (ann, labels)
        })
    }

    async fn submit(&mut self, ann: RoundAnnouncement, labels: SoftLabels) {
        let sub = Message::Submission(Submission {
            federation: self.federation.clone(),
            round: ann.round,
            reference_set: ann.reference_set,
            temperature: ann.temperature,
            local_samples: self.local_samples,
            labels,
        });
        match crate::submit::until_acknowledged(&self.client, &self.aggregator, &self.aggregator_addr, &sub, ann.deadline_unix_ms).await {
            Ok(Message::Receipt(r)) => match r.status {
                ReceiptStatus::Accepted => {
                    tracing::info!(round = ann.round, "submission accepted");
                    self.summary.accepted_rounds.push(ann.round);
                }
                ReceiptStatus::Refused(reason) => {
                    tracing::warn!(round = ann.round, ?reason, detail = %r.detail, "submission refused");
                    self.summary.refused_rounds.push((ann.round, reason));
                }
            },
            Ok(other) => tracing::warn!(kind = ?other.kind(), "unexpected answer to a submission"),
            Err(e) => tracing::warn!(round = ann.round, error = %e, "submission failed"),
        }
    }
}
