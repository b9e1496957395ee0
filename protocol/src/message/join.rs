//! Joining a federation: a participant's hello and the aggregator's reply.

use serde::{Deserialize, Serialize};

use super::RefusalReason;
use crate::ids::{FederationId, ParticipantId, ReferenceSetId, Round};

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

impl Hello {
    /// Whether the claimed identity is the one that signed.
    pub fn claims(&self, signer: &ParticipantId) -> bool {
        &self.participant == signer
    }
}
