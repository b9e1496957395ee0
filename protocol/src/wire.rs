//! What every layer of the contract agrees on and nothing sets at run time: the protocol
//! version, the message kinds (the kind byte an envelope signs) and the hard size caps.
//!
//! It sits below the messages, the payloads and the codec, which all read it; the per-kind
//! caps a receiver configures are [`crate::Limits`].

use crate::error::{Error, Result};

/// Version of the protocol this build speaks.
pub const PROTOCOL_VERSION: u16 = 3;

/// Hard upper bound on any encoded message, whatever a caller configures.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Largest reference-set chunk in one message.
pub const MAX_CHUNK_BYTES: u32 = 4 << 20;

/// The kind byte of each message, signed as part of the envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageKind {
    /// [`Hello`](crate::Hello)
    Hello = 1,
    /// [`JoinReply`](crate::JoinReply)
    JoinReply = 2,
    /// [`RoundAnnouncement`](crate::RoundAnnouncement)
    RoundAnnouncement = 3,
    /// [`Submission`](crate::Submission)
    Submission = 4,
    /// [`Consensus`](crate::Consensus)
    Consensus = 5,
    /// [`Receipt`](crate::Receipt)
    Receipt = 6,
    /// [`RefSetRequest`](crate::RefSetRequest)
    RefSetRequest = 7,
    /// [`RefSetChunk`](crate::RefSetChunk)
    RefSetChunk = 8,
    /// [`Finished`](crate::Finished)
    Finished = 9,
    /// [`SecureStep`](crate::message::SecureStep)
    SecureStep = 10,
    /// [`SecureReply`](crate::message::SecureReply)
    SecureReply = 11,
}

impl MessageKind {
    /// Every kind.
    pub const ALL: [MessageKind; 11] = [
        Self::Hello,
        Self::JoinReply,
        Self::RoundAnnouncement,
        Self::Submission,
        Self::Consensus,
        Self::Receipt,
        Self::RefSetRequest,
        Self::RefSetChunk,
        Self::Finished,
        Self::SecureStep,
        Self::SecureReply,
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
            10 => Self::SecureStep,
            11 => Self::SecureReply,
            other => return Err(Error::Kind(other)),
        })
    }
}
