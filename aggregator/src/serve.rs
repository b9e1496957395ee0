//! Answering what nodes ask: joining (`Hello`), submissions (checked by the round's
//! [`RoundState`], their payload decoded off the runtime), reference-set chunks, and a node's
//! word that it cannot take part (a receipt refusing with `DataMismatch`).

use net::{Event, Responder};
use protocol::{
    Hello, JoinAccepted, JoinReply, Message, ParticipantId, Receipt, ReceiptStatus, RefSetChunk, RefSetRequest,
    RefusalReason, Submission,
};

use crate::round::{Answer, RoundState};
use crate::state::Aggregator;

impl Aggregator {
    /// Handles one event of the network while a round is open (or closing).
    pub(crate) async fn on_event(&mut self, ev: Event, state: &mut RoundState) {
        match ev {
            Event::Request { peer, message, responder } => self.on_request(peer, message, responder, state).await,
            Event::Disconnected(p) if self.joined.remove(&p) => {
                // It may come back without the last consensus (restarted, or its copy was in a
                // request the lost connection failed): it is sent that one before its next round.
                self.taught.remove(&p);
                self.board.joined(&p, false);
                tracing::info!(node = %self.name(&p), "node left");
                self.telemetry.joined.set(self.joined.len() as i64);
            }
            Event::Refused { peer, reason, detail } => {
                self.telemetry.refuse_message(reason);
                tracing::warn!(node = %self.name(&peer), ?reason, %detail, "message refused")
            }
            _ => {}
        }
    }

    fn receipt(&self, round: u64, status: ReceiptStatus, detail: &str) -> Message {
        Message::Receipt(Receipt {
            federation: self.federation().clone(),
            round,
            status,
            detail: protocol::message::short_detail(detail),
        })
    }

    async fn on_request(
        &mut self,
        peer: ParticipantId,
        message: Message,
        responder: Responder,
        state: &mut RoundState,
    ) {
        self.board.contact(&peer);
        let reply = match message {
            Message::Hello(h) => return self.on_hello(peer, &h, responder, state).await,
            Message::Submission(sub) => {
                let round = sub.round;
                match self.take_submission(peer, sub, state).await {
                    Ok(()) => {
                        self.telemetry.submissions.accepted.inc();
                        self.board.answered(&peer);
                        tracing::info!(node = %self.name(&peer), round, "submission accepted");
                        self.receipt(round, ReceiptStatus::Accepted, "")
                    }
                    Err(e) => {
                        self.telemetry.submissions.refuse(e.refusal_reason());
                        self.board.refused(&peer, round, e.refusal_reason());
                        tracing::warn!(node = %self.name(&peer), round, reason = ?e.refusal_reason(), error = %e, "submission refused");
                        self.receipt(round, ReceiptStatus::Refused(e.refusal_reason()), &e.to_string())
                    }
                }
            }
            // Only for the roster: a relay is allowed to connect (it carries the circuits), not to
            // take the reference set.
            Message::RefSetRequest(req) if self.roster.contains_key(&peer) => self.chunk(&req),
            Message::RefSetRequest(_) => self.receipt(
                0,
                ReceiptStatus::Refused(RefusalReason::NotOnRoster),
                "the reference set is served to the roster only",
            ),
            Message::SecureReply(reply) => {
                let round = reply.round;
                match state.submit_masked(peer, reply) {
                    Ok(()) => {
                        self.telemetry.submissions.accepted.inc();
                        tracing::info!(node = %self.name(&peer), round, "masked submission accepted");
                        self.receipt(round, ReceiptStatus::Accepted, "")
                    }
                    Err(e) => {
                        self.telemetry.submissions.refuse(e.refusal_reason());
                        tracing::warn!(node = %self.name(&peer), round, reason = ?e.refusal_reason(), error = %e, "masked submission refused");
                        self.receipt(round, ReceiptStatus::Refused(e.refusal_reason()), &e.to_string())
                    }
                }
            }
            Message::Receipt(Receipt { round, status: ReceiptStatus::Refused(reason), detail, .. })
                if reason == RefusalReason::DataMismatch && self.roster.contains_key(&peer) =>
            {
                self.withdraw(peer, round, reason, &detail, state);
                self.receipt(round, ReceiptStatus::Accepted, "")
            }
            other => self.receipt(
                other.round().unwrap_or(0),
                ReceiptStatus::Refused(RefusalReason::Unavailable),
                &format!("the aggregator does not serve {:?}", other.kind()),
            ),
        };
        if let Err(e) = responder.respond(reply).await {
            tracing::warn!(error = %net::error::Chain(&e), "could not answer");
        }
    }

    /// Joins a roster member that speaks this protocol version; a node that joins while a round
    /// that asks it is open gets its announcement at once (after the last consensus, if it
    /// lacks that one).
    async fn on_hello(&mut self, peer: ParticipantId, h: &Hello, responder: Responder, state: &RoundState) {
        let outcome = if !self.roster.contains_key(&peer) {
            Err(RefusalReason::NotOnRoster)
        } else if !h.claims(&peer) {
            Err(RefusalReason::BadSignature)
        } else if h.protocol_version != protocol::PROTOCOL_VERSION {
            Err(RefusalReason::WrongVersion)
        } else {
            Ok(JoinAccepted {
                current_round: state.round(),
                reference_set: self.reference_id,
                reference_samples: self.reference.samples as u32,
                classes: self.cfg.classes as u32,
                sample_count_wanted: self.cfg.wants_sample_count(&peer),
            })
        };
        let accepted = outcome.is_ok();
        if accepted {
            // It may have mended what made it withdraw; if not, it says so again.
            self.withdrawn.remove(&peer);
            tracing::info!(node = %self.name(&peer), round = state.round(), "node joined");
            self.joined.insert(peer);
            self.board.joined(&peer, true);
            self.telemetry.joined.set(self.joined.len() as i64);
        } else {
            tracing::warn!(peer = %peer.short(), ?outcome, "join refused");
        }
        let reply =
            Message::JoinReply(JoinReply { federation: self.federation().clone(), outcome, detail: String::new() });
        if let Err(e) = responder.respond(reply).await {
            tracing::warn!(error = %net::error::Chain(&e), "could not answer a hello");
        }
        if accepted && !state.is_closed() && state.asks(&peer) {
            self.announce(peer, &state.announcement);
        }
    }

    /// Takes a roster member's word that it cannot take part (`reason`, explained by `detail`):
    /// this round and the next ones stop waiting for it, until it joins again.
    fn withdraw(
        &mut self,
        peer: ParticipantId,
        round: u64,
        reason: RefusalReason,
        detail: &str,
        state: &mut RoundState,
    ) {
        tracing::error!(node = %self.name(&peer), round, ?reason, %detail, "node cannot take part; the rounds no longer wait for it");
        self.withdrawn.insert(peer, reason);
        self.board.withdrawn(&peer, reason);
        state.decline(peer, state.round(), reason);
    }

    /// Checks a submission against the round, decodes its payload off the runtime, and records
    /// it; the error carries the reason code for the receipt.
    async fn take_submission(
        &self,
        peer: ParticipantId,
        sub: Submission,
        state: &mut RoundState,
    ) -> Result<(), protocol::Error> {
        let admitted = state.admit(peer, &sub)?;
        let (limits, classes) = (self.limits, state.announcement.classes);
        let answer =
            tokio::task::spawn_blocking(move || Answer::decode(&sub, &limits, classes)).await.map_err(|e| {
                protocol::Error::Refused { reason: RefusalReason::Unavailable, detail: format!("decoding failed: {e}") }
            })??;
        state.record(admitted, answer)
    }

    /// The chunk of the reference set's canonical bytes that `req` asks for.
    fn chunk(&self, req: &RefSetRequest) -> Message {
        if req.reference_set != self.reference_id {
            return self.receipt(0, ReceiptStatus::Refused(RefusalReason::WrongReferenceSet), "unknown reference set");
        }
        let bytes = &self.reference_bytes;
        let start = (req.offset.min(bytes.len() as u64)) as usize;
        let end = start.saturating_add(req.len.min(protocol::message::MAX_CHUNK_BYTES) as usize).min(bytes.len());
        Message::RefSetChunk(RefSetChunk {
            federation: self.federation().clone(),
            reference_set: self.reference_id,
            offset: start as u64,
            total_len: bytes.len() as u64,
            data: bytes[start..end].to_vec(),
        })
    }
}
