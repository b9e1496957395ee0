//! The messages of the federation protocol and their structural validation.
//!
//! A round, seen from the wire:
//!
//! ```text
//! node → aggregator   Hello                 (identity, version)
//! aggregator → node   JoinReply             (accepted with the current round, or a reason)
//! aggregator → node   RoundAnnouncement     (round, reference-set id, samples, T, deadline, encoding)
//! node → aggregator   Submission            (soft labels on the announced samples, the announcement's digest, the local sample count if asked, an abstention mask)
//! aggregator → node   Receipt               (accepted, or refused with a reason code)
//! aggregator → node   Consensus             (soft labels for the same samples, per-sample weights and contributor counts)
//! node → aggregator   RefSetRequest         (a chunk of the public reference set, if the node has none)
//! aggregator → node   RefSetChunk
//! ```
//!
//! With secure aggregation the announcement carries the round's cohort and the submission is
//! replaced by the steps of [`secure`] ([`SecureStep`], [`SecureReply`]).
//!
//! One module per exchange: [`join`], [`round`], [`receipt`], [`transfer`]; [`selection`] is how a
//! round names its samples and [`query`] the digest of what it asks. This module ties them into
//! [`Message`] and validates structure. The kind byte of each message, [`MessageKind`], and the
//! refusal codes, [`RefusalReason`], live below it (in [`crate::wire`] and [`crate::error`]) and
//! are re-exported here.

mod join;
mod query;
mod receipt;
mod round;
mod secure;
mod selection;
mod transfer;

pub use join::{Hello, JoinAccepted, JoinReply};
pub use query::AnnouncementDigest;
pub use receipt::{Finished, MAX_DETAIL_LEN, Receipt, ReceiptStatus, short_detail};
pub use round::{Consensus, RoundAnnouncement, Submission};
pub use secure::{Reply, SecureReply, SecureRound, SecureStep, Step};
pub use selection::SampleSelection;
pub use transfer::{RefSetChunk, RefSetRequest};

pub use crate::error::RefusalReason;
pub use crate::wire::{MAX_CHUNK_BYTES, MessageKind};

use crate::error::{Error, Result};
use crate::ids::{FederationId, Round};
use crate::payload::Limits;

/// Largest temperature accepted.
pub const MAX_TEMPERATURE: f32 = 1_000.0;

/// Every message that crosses the wire.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`JoinReply`].
    JoinReply(JoinReply),
    /// See [`RoundAnnouncement`].
    RoundAnnouncement(RoundAnnouncement),
    /// See [`Submission`].
    Submission(Submission),
    /// See [`Consensus`].
    Consensus(Consensus),
    /// See [`Receipt`].
    Receipt(Receipt),
    /// See [`RefSetRequest`].
    RefSetRequest(RefSetRequest),
    /// See [`RefSetChunk`].
    RefSetChunk(RefSetChunk),
    /// See [`Finished`].
    Finished(Finished),
    /// See [`SecureStep`].
    SecureStep(SecureStep),
    /// See [`SecureReply`].
    SecureReply(SecureReply),
}

impl Message {
    /// The message's kind byte.
    pub fn kind(&self) -> MessageKind {
        match self {
            Self::Hello(_) => MessageKind::Hello,
            Self::JoinReply(_) => MessageKind::JoinReply,
            Self::RoundAnnouncement(_) => MessageKind::RoundAnnouncement,
            Self::Submission(_) => MessageKind::Submission,
            Self::Consensus(_) => MessageKind::Consensus,
            Self::Receipt(_) => MessageKind::Receipt,
            Self::RefSetRequest(_) => MessageKind::RefSetRequest,
            Self::RefSetChunk(_) => MessageKind::RefSetChunk,
            Self::Finished(_) => MessageKind::Finished,
            Self::SecureStep(_) => MessageKind::SecureStep,
            Self::SecureReply(_) => MessageKind::SecureReply,
        }
    }

    /// The federation the message belongs to.
    pub fn federation(&self) -> &FederationId {
        match self {
            Self::Hello(m) => &m.federation,
            Self::JoinReply(m) => &m.federation,
            Self::RoundAnnouncement(m) => &m.federation,
            Self::Submission(m) => &m.federation,
            Self::Consensus(m) => &m.federation,
            Self::Receipt(m) => &m.federation,
            Self::RefSetRequest(m) => &m.federation,
            Self::RefSetChunk(m) => &m.federation,
            Self::Finished(m) => &m.federation,
            Self::SecureStep(m) => &m.federation,
            Self::SecureReply(m) => &m.federation,
        }
    }

    /// The round the message belongs to, where it has one.
    pub fn round(&self) -> Option<Round> {
        match self {
            Self::RoundAnnouncement(m) => Some(m.round),
            Self::Submission(m) => Some(m.round),
            Self::Consensus(m) => Some(m.round),
            Self::Receipt(m) => Some(m.round),
            Self::Finished(m) => Some(m.rounds),
            Self::SecureStep(m) => Some(m.round),
            Self::SecureReply(m) => Some(m.round),
            _ => None,
        }
    }

    /// Structural validation against `limits`: shapes, temperatures, lengths, weights.
    /// Soft-label values are validated when they are read with [`SoftLabels::decode`], the only
    /// way to get at them. It does not know what was announced; see [`Submission::check_against`].
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        match self {
            Self::Hello(m) => check_text("agent", &m.agent),
            Self::JoinReply(m) => {
                check_text("detail", &m.detail)?;
                if let Ok(acc) = &m.outcome {
                    check_classes(acc.classes, limits)?;
                }
                Ok(())
            }
            Self::RoundAnnouncement(m) => {
                check_temperature(m.temperature)?;
                check_classes(m.classes, limits)?;
                if m.selection.is_empty() || m.selection.len() > limits.max_samples as usize {
                    return Err(Error::field(
                        "selection",
                        format!("{} samples, expected 1 to {}", m.selection.len(), limits.max_samples),
                    ));
                }
                if let SampleSelection::Indices(v) = &m.selection
                    && v.iter().any(|&i| i >= m.reference_samples)
                {
                    return Err(Error::field("selection", "index beyond the reference set"));
                }
                if m.selection.len() > m.reference_samples as usize {
                    return Err(Error::field("selection", "more samples than the reference set has"));
                }
                m.secure.as_ref().map_or(Ok(()), |s| s.check(limits.max_cohort))
            }
            Self::Submission(m) => {
                check_temperature(m.temperature)?;
                m.labels.check_shape(limits)?;
                m.abstained.as_ref().map_or(Ok(()), |mask| mask.check(m.labels.samples as usize))
            }
            Self::Consensus(m) => {
                check_temperature(m.temperature)?;
                m.labels.check_shape(limits)?;
                if (m.weights.len() != m.labels.samples as usize && !m.is_compact())
                    || m.selection.len() != m.labels.samples as usize
                {
                    return Err(Error::Shape(format!(
                        "{} weights and {} selected samples for {} rows",
                        m.weights.len(),
                        m.selection.len(),
                        m.labels.samples
                    )));
                }
                m.check_counts()
            }
            Self::Receipt(m) => check_text("detail", &m.detail),
            // The secure-aggregation state machines check their messages against the round.
            Self::SecureStep(_) | Self::SecureReply(_) => Ok(()),
            Self::Finished(m) => check_text("detail", &m.detail),
            Self::RefSetRequest(m) => {
                if m.len == 0 || m.len > MAX_CHUNK_BYTES {
                    return Err(Error::field(
                        "len",
                        format!("chunk of {} bytes, expected 1 to {MAX_CHUNK_BYTES}", m.len),
                    ));
                }
                Ok(())
            }
            Self::RefSetChunk(m) => {
                let end = m.offset.checked_add(m.data.len() as u64);
                if m.data.len() > MAX_CHUNK_BYTES as usize || end.is_none_or(|e| e > m.total_len) {
                    return Err(Error::field("data", "chunk is too large or beyond the total length"));
                }
                Ok(())
            }
        }
    }
}

fn check_temperature(t: f32) -> Result<()> {
    if !t.is_finite() || t <= 0.0 || t > MAX_TEMPERATURE {
        return Err(Error::field("temperature", format!("{t} is not finite and in (0, {MAX_TEMPERATURE}]")));
    }
    Ok(())
}

fn check_classes(c: u32, limits: &Limits) -> Result<()> {
    if c < 2 || c > limits.max_classes {
        return Err(Error::field("classes", format!("{c} classes, expected 2 to {}", limits.max_classes)));
    }
    Ok(())
}

fn check_text(field: &'static str, s: &str) -> Result<()> {
    if s.len() > MAX_DETAIL_LEN {
        return Err(Error::field(field, format!("{} bytes, at most {MAX_DETAIL_LEN}", s.len())));
    }
    Ok(())
}
