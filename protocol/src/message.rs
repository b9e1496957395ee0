//! The messages of the federation protocol and their structural validation.
//!
//! A round, seen from the wire:
//!
//! ```text
//! node → aggregator   Hello                 (identity, version)
//! aggregator → node   JoinReply             (accepted with the current round, or a reason)
//! aggregator → node   RoundAnnouncement     (round, reference-set id, samples, T, deadline, encoding)
//! node → aggregator   Submission            (soft labels on the announced samples, the announcement's digest, the local sample count if asked)
//! aggregator → node   Receipt               (accepted, or refused with a reason code)
//! aggregator → node   Consensus             (soft labels for the same samples, per-sample weights)
//! node → aggregator   RefSetRequest         (a chunk of the public reference set, if the node has none)
//! aggregator → node   RefSetChunk
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{FederationId, ParticipantId, ReferenceSetId, Round};
use crate::payload::{Encoding, Limits, SoftLabels};
use crate::query::AnnouncementDigest;

/// Largest temperature accepted.
pub const MAX_TEMPERATURE: f32 = 1_000.0;
/// Longest free-text detail in a receipt or rejection.
pub const MAX_DETAIL_LEN: usize = 256;
/// `text` cut to at most [`MAX_DETAIL_LEN`] bytes at a character boundary, for the `detail` of a
/// receipt or reply (cutting inside a multi-byte character would panic or make invalid UTF-8).
pub fn short_detail(text: &str) -> String {
    if text.len() <= MAX_DETAIL_LEN {
        return text.to_owned();
    }
    let mut end = MAX_DETAIL_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Largest reference-set chunk in one message.
pub const MAX_CHUNK_BYTES: u32 = 4 << 20;

/// A reason code the sender of a refused message can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RefusalReason {
    /// Upgrade: the protocol version differs.
    WrongVersion,
    /// Check configuration: the federation id differs.
    WrongFederation,
    /// Ask the operator to add this key to the roster.
    NotOnRoster,
    /// The round's deadline has passed or the round is closed; wait for the next announcement.
    Late,
    /// A submission for this round from this participant was already accepted.
    Duplicate,
    /// The round number is not the open round.
    WrongRound,
    /// The reference-set id differs from the announced one.
    WrongReferenceSet,
    /// Samples × classes, encoding or temperature differ from the announcement, or payload length is wrong.
    WrongShape,
    /// Values are not finite, not probabilities, or rows do not sum to 1.
    InvalidValues,
    /// The signature does not verify, or the signer is not the sending peer.
    BadSignature,
    /// The bytes do not decode.
    Malformed,
    /// The message exceeds a size cap.
    TooLarge,
    /// The receiver cannot serve this request now (e.g. no round open, no reference set).
    Unavailable,
    /// The receiving node's query policy forbids answering this (a round it already answered,
    /// a temperature, encoding or sample count outside what it allows, its round limit).
    Policy,
    /// The submission answers another announcement of this round (its digest differs).
    WrongAnnouncement,
    /// The node's privacy budget cannot pay for another training: it will not answer rounds.
    BudgetSpent,
}

/// How the reference samples of a round are chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SampleSelection {
    /// Explicit row indices into the reference set.
    Indices(#[serde(deserialize_with = "crate::bounded::list")] Vec<u32>),
    /// `count` distinct rows drawn with [`SampleSelection::resolve`]'s seeded shuffle.
    Seeded {
        /// Seed of the draw.
        seed: u64,
        /// Number of rows.
        count: u32,
    },
}

impl SampleSelection {
    /// Number of samples selected.
    pub fn len(&self) -> usize {
        match self {
            Self::Indices(v) => v.len(),
            Self::Seeded { count, .. } => *count as usize,
        }
    }

    /// Whether no sample is selected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The selected row indices, in ascending order for `Seeded`, as given for `Indices`.
    ///
    /// `Seeded` draws `count` distinct rows of `0..population` with a partial Fisher–Yates
    /// shuffle driven by SplitMix64, so every participant computes the same rows.
    pub fn resolve(&self, population: u32) -> Result<Vec<u32>> {
        match self {
            Self::Indices(v) => {
                if let Some(bad) = v.iter().find(|&&i| i >= population) {
                    return Err(Error::field(
                        "selection",
                        format!("index {bad} outside a reference set of {population} samples"),
                    ));
                }
                Ok(v.clone())
            }
            Self::Seeded { seed, count } => {
                if *count > population {
                    return Err(Error::field(
                        "selection",
                        format!("{count} samples requested from a reference set of {population}"),
                    ));
                }
                let mut state = *seed;
                let mut pool: Vec<u32> = (0..population).collect();
                let n = *count as usize;
                for i in 0..n {
                    let remaining = (population as usize - i) as u64;
                    let j = i + (splitmix64(&mut state) % remaining) as usize;
                    pool.swap(i, j);
                }
                pool.truncate(n);
                pool.sort_unstable();
                Ok(pool)
            }
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    // `mix` adds the increment itself: the generator's output for the state before the step.
    crate::seed::mix(state.wrapping_sub(0x9E37_79B9_7F4A_7C15))
}

/// A participant asks to join.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Federation the participant wants to join.
    pub federation: FederationId,
    /// The participant's identity (must equal the envelope's signer).
    pub participant: ParticipantId,
    /// Protocol version the participant speaks.
    pub protocol_version: u16,
    /// Name and version of the software, for logs.
    #[serde(deserialize_with = "crate::bounded::text")]
    pub agent: String,
}

/// What a participant learns when it is accepted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinAccepted {
    /// The round currently open, or the next one if none is open.
    pub current_round: Round,
    /// Id of the public reference set.
    pub reference_set: ReferenceSetId,
    /// Number of samples in the reference set.
    pub reference_samples: u32,
    /// Number of classes every model must predict.
    pub classes: u32,
    /// Whether the consensus rule weighs this participant by a sample count it reports itself
    /// (the roster declares none for it). A node sends its count only if this is set and its
    /// own policy allows it.
    pub sample_count_wanted: bool,
}

/// Answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinReply {
    /// Federation of the aggregator.
    pub federation: FederationId,
    /// Accepted, or rejected with a reason.
    pub outcome: std::result::Result<JoinAccepted, RefusalReason>,
    /// Human-readable detail.
    #[serde(deserialize_with = "crate::bounded::text")]
    pub detail: String,
}

/// The aggregator opens a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundAnnouncement {
    /// Federation.
    pub federation: FederationId,
    /// Round being opened.
    pub round: Round,
    /// Reference set the samples index into.
    pub reference_set: ReferenceSetId,
    /// Number of rows of the reference set.
    pub reference_samples: u32,
    /// Which reference samples to label this round.
    pub selection: SampleSelection,
    /// Number of classes.
    pub classes: u32,
    /// Softmax temperature for the soft labels.
    pub temperature: f32,
    /// Submissions after this time (Unix milliseconds) may be refused as late.
    pub deadline_unix_ms: u64,
    /// Payload encoding expected.
    pub encoding: Encoding,
}

/// A node's soft labels for a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// Federation.
    pub federation: FederationId,
    /// Round answered.
    pub round: Round,
    /// Digest of the announcement answered ([`RoundAnnouncement::digest`]).
    pub announcement: AnnouncementDigest,
    /// Reference set used.
    pub reference_set: ReferenceSetId,
    /// Temperature used.
    pub temperature: f32,
    /// Number of private samples the node trained on, sent only when the aggregator asked for it
    /// ([`JoinAccepted::sample_count_wanted`]) and the node's policy allows it; never 0.
    pub local_samples: Option<u64>,
    /// softmax(z / T) on the announced samples, in announcement order.
    pub labels: SoftLabels,
}

/// The consensus of a round, sent back to the nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Consensus {
    /// Federation.
    pub federation: FederationId,
    /// Round it belongs to.
    pub round: Round,
    /// Reference set the samples index into.
    pub reference_set: ReferenceSetId,
    /// Samples, as announced.
    pub selection: SampleSelection,
    /// Temperature of the soft labels.
    pub temperature: f32,
    /// Consensus probabilities for the selected samples.
    pub labels: SoftLabels,
    /// Per-sample weight, quantised: `w / 255` in [0, 1]; 0 masks a sample.
    #[serde(with = "crate::bounded::bytes")]
    pub weights: Vec<u8>,
    /// Number of submissions that made it.
    pub participants: u32,
}

/// Whether a submission was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptStatus {
    /// Accepted into the round.
    Accepted,
    /// Refused for this reason.
    Refused(RefusalReason),
}

/// Answer to a [`Submission`] (or to any message that had to be refused).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Federation.
    pub federation: FederationId,
    /// Round the answered message named (0 if it could not be read).
    pub round: Round,
    /// Accepted or refused.
    pub status: ReceiptStatus,
    /// Human-readable detail.
    #[serde(deserialize_with = "crate::bounded::text")]
    pub detail: String,
}

/// The aggregator's word that the federation is over: no further rounds will be announced.
/// A node answers with a [`Receipt`], checkpoints its model and stops.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    /// Federation.
    pub federation: FederationId,
    /// Last completed round.
    pub rounds: Round,
    /// Human-readable detail.
    #[serde(deserialize_with = "crate::bounded::text")]
    pub detail: String,
}

/// Request for a chunk of the reference set's canonical bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefSetRequest {
    /// Federation.
    pub federation: FederationId,
    /// Reference set wanted.
    pub reference_set: ReferenceSetId,
    /// Byte offset.
    pub offset: u64,
    /// Bytes wanted (at most [`MAX_CHUNK_BYTES`]).
    pub len: u32,
}

/// A chunk of the reference set's canonical bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefSetChunk {
    /// Federation.
    pub federation: FederationId,
    /// Reference set.
    pub reference_set: ReferenceSetId,
    /// Byte offset of `data`.
    pub offset: u64,
    /// Total length of the canonical bytes.
    pub total_len: u64,
    /// The bytes.
    #[serde(with = "crate::bounded::bytes")]
    pub data: Vec<u8>,
}

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
}

/// The kind byte of each message, signed as part of the envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageKind {
    /// [`Hello`]
    Hello = 1,
    /// [`JoinReply`]
    JoinReply = 2,
    /// [`RoundAnnouncement`]
    RoundAnnouncement = 3,
    /// [`Submission`]
    Submission = 4,
    /// [`Consensus`]
    Consensus = 5,
    /// [`Receipt`]
    Receipt = 6,
    /// [`RefSetRequest`]
    RefSetRequest = 7,
    /// [`RefSetChunk`]
    RefSetChunk = 8,
    /// [`Finished`]
    Finished = 9,
}

impl MessageKind {
    /// Every kind.
    pub const ALL: [MessageKind; 9] = [
        Self::Hello,
        Self::JoinReply,
        Self::RoundAnnouncement,
        Self::Submission,
        Self::Consensus,
        Self::Receipt,
        Self::RefSetRequest,
        Self::RefSetChunk,
        Self::Finished,
    ];

    /// Parses a kind byte.
    pub fn from_u8(b: u8) -> Result<Self> {
        Ok(match b {
            1 => Self::Hello,
            2 => Self::JoinReply,
            3 => Self::RoundAnnouncement,
            4 => Self::Submission,
            5 => Self::Consensus,
            6 => Self::Receipt,
            7 => Self::RefSetRequest,
            8 => Self::RefSetChunk,
            9 => Self::Finished,
            other => return Err(Error::Kind(other)),
        })
    }
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
                if let SampleSelection::Indices(v) = &m.selection {
                    if v.iter().any(|&i| i >= m.reference_samples) {
                        return Err(Error::field("selection", "index beyond the reference set"));
                    }
                }
                if m.selection.len() > m.reference_samples as usize {
                    return Err(Error::field("selection", "more samples than the reference set has"));
                }
                Ok(())
            }
            Self::Submission(m) => {
                check_temperature(m.temperature)?;
                m.labels.check_shape(limits)
            }
            Self::Consensus(m) => {
                check_temperature(m.temperature)?;
                m.labels.check_shape(limits)?;
                if m.weights.len() != m.labels.samples as usize || m.selection.len() != m.labels.samples as usize {
                    return Err(Error::Shape(format!(
                        "{} weights and {} selected samples for {} rows",
                        m.weights.len(),
                        m.selection.len(),
                        m.labels.samples
                    )));
                }
                Ok(())
            }
            Self::Receipt(m) => check_text("detail", &m.detail),
            Self::Finished(m) => check_text("detail", &m.detail),
            Self::RefSetRequest(m) => {
                if m.len == 0 || m.len > MAX_CHUNK_BYTES {
                    return Err(Error::field("len", format!("chunk of {} bytes, expected 1 to {MAX_CHUNK_BYTES}", m.len)));
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

impl Consensus {
    /// Quantises per-sample weights in [0, 1] (values outside are clamped).
    pub fn quantise_weights(weights: &[f32]) -> Vec<u8> {
        weights.iter().map(|w| (w.clamp(0.0, 1.0) * 255.0).round() as u8).collect()
    }

    /// The per-sample weights in [0, 1].
    pub fn weights(&self) -> Vec<f32> {
        self.weights.iter().map(|&w| w as f32 / 255.0).collect()
    }
}

impl Submission {
    /// Checks this submission against the round it answers; the error carries the reason code.
    pub fn check_against(&self, ann: &RoundAnnouncement) -> Result<()> {
        let refuse = |reason, detail: String| Err(Error::Refused { reason, detail });
        if self.federation != ann.federation {
            return refuse(RefusalReason::WrongFederation, format!("federation {} is not {}", self.federation, ann.federation));
        }
        if self.round != ann.round {
            return refuse(RefusalReason::WrongRound, format!("round {} but round {} is open", self.round, ann.round));
        }
        if self.announcement != ann.digest() {
            return refuse(RefusalReason::WrongAnnouncement, format!("answers announcement {} of round {}, not the open one", self.announcement, self.round));
        }
        if self.local_samples == Some(0) {
            return refuse(RefusalReason::InvalidValues, "local_samples is 0".into());
        }
        if self.reference_set != ann.reference_set {
            return refuse(RefusalReason::WrongReferenceSet, format!("reference set {} is not {}", self.reference_set, ann.reference_set));
        }
        if self.labels.samples as usize != ann.selection.len() || self.labels.classes != ann.classes {
            return refuse(
                RefusalReason::WrongShape,
                format!("{} × {} but {} × {} was announced", self.labels.samples, self.labels.classes, ann.selection.len(), ann.classes),
            );
        }
        if self.labels.encoding != ann.encoding {
            return refuse(RefusalReason::WrongShape, format!("encoding {:?} but {:?} was announced", self.labels.encoding, ann.encoding));
        }
        if (self.temperature - ann.temperature).abs() > 1e-6 * ann.temperature.max(1.0) {
            return refuse(RefusalReason::WrongShape, format!("temperature {} but {} was announced", self.temperature, ann.temperature));
        }
        Ok(())
    }
}

impl Hello {
    /// Whether the claimed identity is the one that signed.
    pub fn claims(&self, signer: &ParticipantId) -> bool {
        &self.participant == signer
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn short_detail_cuts_at_a_char_boundary_and_keeps_a_prefix(text in "\\PC{0,400}") {
            let cut = short_detail(&text);
            prop_assert!(cut.len() <= MAX_DETAIL_LEN);
            prop_assert!(text.starts_with(&cut));
            prop_assert!(cut.len() + 4 > MAX_DETAIL_LEN.min(text.len()), "cut no more than one character short");
        }

        #[test]
        fn seeded_selection_is_distinct_sorted_in_range_and_deterministic(seed: u64, population in 1u32..5000, frac in 0.0f64..1.0) {
            let count = ((population as f64) * frac) as u32;
            let sel = SampleSelection::Seeded { seed, count };
            let a = sel.resolve(population).unwrap();
            prop_assert_eq!(a.len(), count as usize);
            prop_assert!(a.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(a.iter().all(|&i| i < population));
            prop_assert_eq!(a, sel.resolve(population).unwrap());
        }
    }

    #[test]
    fn different_seeds_pick_different_samples() {
        let a = SampleSelection::Seeded { seed: 1, count: 100 }.resolve(10_000).unwrap();
        let b = SampleSelection::Seeded { seed: 2, count: 100 }.resolve(10_000).unwrap();
        assert_ne!(a, b);
        assert!(SampleSelection::Seeded { seed: 1, count: 11 }.resolve(10).is_err());
        assert!(SampleSelection::Indices(vec![3, 10]).resolve(10).is_err());
    }
}
