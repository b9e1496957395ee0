//! [`Aggregator`]: what start-up built and every round uses (the config, the roster, the
//! reference set, the network, the student's thread, the metrics), with its small accessors
//! and the two ways it sends to nodes: [`Aggregator::announce`] (in the background) and
//! [`Aggregator::deliver`] (to joined nodes, awaiting the receipts).
//! The rounds ([`crate::rounds`]) and the answers to the nodes ([`crate::serve`]) are its
//! methods in modules of their own; [`crate::service`] builds it and runs it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use net::Event;
use net::multiaddr::Multiaddr;
use net::owner::Thread;
use protocol::{
    Consensus, FederationId, Limits, Message, ParticipantId, Receipt, ReceiptStatus, ReferenceSet, ReferenceSetId,
    RefusalReason, RoundAnnouncement,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::RoundMetrics;
use crate::collect::Declined;
use crate::config::AggregatorConfig;
use crate::student::Student;
use crate::{metrics, status};

/// A bound, ready-to-run aggregator.
pub struct Aggregator {
    pub(crate) cfg: AggregatorConfig,
    pub(crate) roster: HashMap<ParticipantId, String>,
    pub(crate) reference: Arc<ReferenceSet>,
    pub(crate) reference_bytes: Arc<Vec<u8>>,
    pub(crate) reference_id: ReferenceSetId,
    pub(crate) client: net::Client,
    pub(crate) events: mpsc::Receiver<Event>,
    /// Refusals of announcements, from the tasks that sent them, for the round being collected.
    pub(crate) declines: mpsc::Receiver<Declined>,
    pub(crate) declines_tx: mpsc::Sender<Declined>,
    pub(crate) network: net::Handle,
    pub(crate) listen_addrs: Vec<Multiaddr>,
    pub(crate) student: Student,
    /// The student's thread, joined at the end of the shutdown.
    pub(crate) student_thread: Thread,
    pub(crate) metrics: Vec<RoundMetrics>,
    pub(crate) completed: u64,
    /// Last round whose checkpoint is committed (may lag `completed` after a failed checkpoint).
    pub(crate) committed: u64,
    pub(crate) joined: HashSet<ParticipantId>,
    /// Roster members that said they cannot take part (their data does not fit the federation),
    /// with the reason: every round counts them as declined until they join again.
    pub(crate) withdrawn: HashMap<ParticipantId, RefusalReason>,
    /// The last consensus sent (restored from the checkpoint at a restart).
    pub(crate) consensus: Option<Arc<Consensus>>,
    /// The round of the last consensus each node acknowledged (or was sent, for an announcement
    /// in the background) since it joined: a cohort member that lacks [`Aggregator::consensus`]
    /// is sent it before its announcement ([`crate::rounds`]); a node that disconnects is
    /// forgotten here.
    pub(crate) taught: HashMap<ParticipantId, u64>,
    pub(crate) progress: Option<mpsc::Sender<RoundMetrics>>,
    pub(crate) limits: Limits,
    /// Requests sent in the background (announcements), awaited before shutdown.
    pub(crate) sends: tokio::task::JoinSet<()>,
    /// Prometheus series (served if `metrics_server` is there).
    pub(crate) telemetry: metrics::Metrics,
    /// The `GET /metrics` endpoint, if the config asks for one.
    pub(crate) metrics_server: Option<net::metrics::http::Server>,
    /// The live view's snapshot, updated at a few points of the rounds ([`crate::status`]).
    pub(crate) board: status::Board,
    /// The token `run` stops on; the network and the metrics endpoint have children of it.
    pub(crate) shutdown: CancellationToken,
}

impl Aggregator {
    /// The bound addresses (with real ports); an address bound to every interface (0.0.0.0,
    /// ::) is listed once for each interface address of its family.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// Where the metrics are served (with the real port), if the config asks for them.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_server.as_ref().map(|s| s.local_addr())
    }

    /// The aggregator's id.
    pub fn id(&self) -> ParticipantId {
        self.client.id()
    }

    /// Sends each round's metrics to `tx` as it completes (dropped if the receiver lags).
    pub fn set_progress(&mut self, tx: mpsc::Sender<RoundMetrics>) {
        self.progress = Some(tx);
    }

    pub(crate) fn federation(&self) -> &FederationId {
        &self.cfg.federation
    }

    pub(crate) fn name(&self, p: &ParticipantId) -> String {
        self.roster.get(p).cloned().unwrap_or_else(|| p.short())
    }

    /// Sends `message` to the nodes of `peers` that have joined and waits for their receipts, at
    /// most one round deadline: a node that does not answer in time does not hold up the
    /// federation. Returns the nodes that accepted it.
    pub(crate) async fn deliver(
        &self,
        peers: impl IntoIterator<Item = ParticipantId>,
        message: &Message,
    ) -> Vec<ParticipantId> {
        let mut deliveries = tokio::task::JoinSet::new();
        let mut accepted = Vec::new();
        for peer in peers.into_iter().filter(|p| self.joined.contains(p)) {
            let client = self.client.clone();
            let msg = message.clone();
            deliveries.spawn(async move { (peer, client.request(&peer, &msg).await) });
        }
        let wait = Duration::from_secs_f64(self.cfg.round.deadline_secs);
        let kind = message.kind();
        let collected = tokio::time::timeout(wait, async {
            while let Some(done) = deliveries.join_next().await {
                match done {
                    Ok((peer, Err(e))) => {
                        tracing::warn!(node = %self.name(&peer), ?kind, error = %net::error::Chain(&e), "not delivered")
                    }
                    Ok((
                        peer,
                        Ok(Message::Receipt(Receipt { status: ReceiptStatus::Refused(reason), detail, .. })),
                    )) => {
                        tracing::warn!(node = %self.name(&peer), ?kind, ?reason, %detail, "not delivered: refused")
                    }
                    Ok((peer, Ok(_))) => accepted.push(peer),
                    Err(_) => {}
                }
            }
        })
        .await;
        if collected.is_err() {
            tracing::warn!(?kind, pending = deliveries.len(), "delivery still pending at the deadline; continuing");
        }
        deliveries.detach_all();
        accepted
    }

    /// Announces a round to `peer` in the background, sending it the last consensus first if it
    /// has not acknowledged that one in this run (it missed rounds, or joined late).
    pub(crate) fn announce(&mut self, peer: ParticipantId, announcement: &RoundAnnouncement) {
        let mut messages = Vec::with_capacity(2);
        if let Some(c) = &self.consensus
            && self.taught.get(&peer).is_none_or(|&r| r < c.round)
        {
            // Counted as taught now: an announcement sent again (a rejoin) need not resend it.
            self.taught.insert(peer, c.round);
            messages.push(Message::Consensus(Consensus::clone(c)));
        }
        messages.push(Message::RoundAnnouncement(announcement.clone()));
        self.send(peer, messages);
    }

    /// Sends `messages` to `peer` in order in the background, each once the one before it is
    /// answered; a failure or a refusal is logged and the next message still goes (a node that
    /// refused or lost the last consensus is still asked to answer the round, with the teacher
    /// it holds).
    fn send(&mut self, peer: ParticipantId, messages: Vec<Message>) {
        let client = self.client.clone();
        let declines = self.declines_tx.clone();
        let board = self.board.clone();
        while self.sends.try_join_next().is_some() {}
        self.sends.spawn(async move {
            for message in messages {
                match client.request(&peer, &message).await {
                    Ok(Message::Receipt(Receipt { status: ReceiptStatus::Refused(reason), detail, round, .. })) => {
                        tracing::warn!(peer = %peer.short(), kind = ?message.kind(), ?reason, %detail, "node refused");
                        if let Message::RoundAnnouncement(_) = message {
                            board.declined(&peer, round, reason);
                            // Full only if refusals pile up unread; the deadline closes the round then.
                            let _ = declines.try_send(Declined { peer, round, reason });
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(peer = %peer.short(), kind = ?message.kind(), error = %net::error::Chain(&e), "send failed");
                    }
                }
            }
        });
    }
}
