//! Typed errors for everything that can go wrong on the wire, and the reason codes a refused
//! peer is sent back ([`Error::refusal_reason`] maps one to the other).

use serde::{Deserialize, Serialize};

/// Why a message could not be encoded, decoded, verified or validated.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The input is larger than the configured cap; nothing was decoded.
    #[error("message of {len} bytes exceeds the cap of {cap} bytes")]
    TooLarge {
        /// Length of the offending input.
        len: usize,
        /// The cap in force.
        cap: usize,
    },
    /// The bytes are not a well-formed encoding of the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Bytes remained after a complete value was decoded.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// The sender speaks another protocol version.
    #[error("unsupported protocol version {got} (this build speaks {expected})")]
    Version {
        /// Version in the envelope.
        got: u16,
        /// Version this build implements.
        expected: u16,
    },
    /// The envelope's kind byte names no known message, or disagrees with its body.
    #[error("unknown or mismatched message kind {0}")]
    Kind(u8),
    /// Signature verification failed.
    #[error("bad signature")]
    BadSignature,
    /// The signer of the envelope is not the authenticated peer that delivered it.
    #[error("envelope signed by {signer} but delivered by {peer}")]
    SignerMismatch {
        /// Key that signed the envelope.
        signer: String,
        /// Key of the peer the transport authenticated.
        peer: String,
    },
    /// A public key or peer id could not be parsed.
    #[error("invalid key or peer id: {0}")]
    InvalidKey(String),
    /// The soft-label shape does not match its payload, or exceeds the caps.
    #[error("wrong shape: {0}")]
    Shape(String),
    /// Values are not finite, not in [0, 1], or rows do not sum to 1.
    #[error("invalid values: {0}")]
    Values(String),
    /// A field (temperature, counts, selection) is out of its allowed range.
    #[error("invalid field `{field}`: {reason}")]
    Field {
        /// Name of the field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The message is well formed but does not match what was announced.
    #[error("refused ({reason:?}): {detail}")]
    Refused {
        /// Wire reason code to send back.
        reason: RefusalReason,
        /// Human-readable detail for logs.
        detail: String,
    },
}

impl Error {
    /// The reason code a receiver should send back to the peer that caused this error.
    pub fn refusal_reason(&self) -> RefusalReason {
        match self {
            Self::TooLarge { .. } => RefusalReason::TooLarge,
            Self::Malformed(_) | Self::TrailingBytes(_) | Self::Kind(_) | Self::InvalidKey(_) => {
                RefusalReason::Malformed
            }
            Self::Version { .. } => RefusalReason::WrongVersion,
            Self::BadSignature | Self::SignerMismatch { .. } => RefusalReason::BadSignature,
            Self::Shape(_) => RefusalReason::WrongShape,
            Self::Values(_) | Self::Field { .. } => RefusalReason::InvalidValues,
            Self::Refused { reason, .. } => *reason,
        }
    }

    pub(crate) fn field(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Field { field, reason: reason.into() }
    }
}

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
    /// The node's private data does not fit the federation (its rows have another feature
    /// count than the reference set's, or its model another class count): it cannot take part
    /// until its data holder corrects the data or the config. A node sends this, unasked, in a
    /// [`crate::Receipt`] to the aggregator before it stops. Appended last: the reasons before
    /// it keep their wire codes.
    DataMismatch,
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
