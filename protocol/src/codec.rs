//! The only module that calls bincode.
//!
//! Every decode is size-capped twice: the input length is checked against the caller's cap
//! before anything is read, and bincode's own limit stops a length prefix from claiming more
//! memory than [`MAX_MESSAGE_BYTES`]. A decode that leaves bytes unread is an error.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::SignedEnvelope;
use crate::error::{Error, Result};
use crate::message::{Message, MessageKind};

/// Hard upper bound on any encoded message, whatever a caller configures.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

/// Encodes any serde value (also used for local state files).
pub fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let bytes = bincode::serde::encode_to_vec(value, config()).map_err(|e| Error::Malformed(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(Error::TooLarge { len: bytes.len(), cap: MAX_MESSAGE_BYTES });
    }
    Ok(bytes)
}

/// Decodes a serde value from exactly `bytes`, refusing inputs over `cap` and trailing bytes.
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8], cap: usize) -> Result<T> {
    let cap = cap.min(MAX_MESSAGE_BYTES);
    if bytes.len() > cap {
        return Err(Error::TooLarge { len: bytes.len(), cap });
    }
    let (value, read) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| Error::Malformed(e.to_string()))?;
    if read != bytes.len() {
        return Err(Error::TrailingBytes(bytes.len() - read));
    }
    Ok(value)
}

/// Encodes a message body (without envelope).
pub fn encode_body(message: &Message) -> Result<Vec<u8>> {
    match message {
        Message::Hello(m) => to_bytes(m),
        Message::JoinReply(m) => to_bytes(m),
        Message::RoundAnnouncement(m) => to_bytes(m),
        Message::Submission(m) => to_bytes(m),
        Message::Consensus(m) => to_bytes(m),
        Message::Receipt(m) => to_bytes(m),
        Message::RefSetRequest(m) => to_bytes(m),
        Message::RefSetChunk(m) => to_bytes(m),
        Message::Finished(m) => to_bytes(m),
    }
}

/// Decodes a message body of the given kind.
pub fn decode_body(kind: MessageKind, body: &[u8], cap: usize) -> Result<Message> {
    Ok(match kind {
        MessageKind::Hello => Message::Hello(from_bytes(body, cap)?),
        MessageKind::JoinReply => Message::JoinReply(from_bytes(body, cap)?),
        MessageKind::RoundAnnouncement => Message::RoundAnnouncement(from_bytes(body, cap)?),
        MessageKind::Submission => Message::Submission(from_bytes(body, cap)?),
        MessageKind::Consensus => Message::Consensus(from_bytes(body, cap)?),
        MessageKind::Receipt => Message::Receipt(from_bytes(body, cap)?),
        MessageKind::RefSetRequest => Message::RefSetRequest(from_bytes(body, cap)?),
        MessageKind::RefSetChunk => Message::RefSetChunk(from_bytes(body, cap)?),
        MessageKind::Finished => Message::Finished(from_bytes(body, cap)?),
    })
}

/// Encodes a signed envelope for the wire.
pub fn encode_envelope(envelope: &SignedEnvelope) -> Result<Vec<u8>> {
    to_bytes(envelope)
}

/// Decodes a signed envelope (not yet verified) from the wire.
pub fn decode_envelope(bytes: &[u8], cap: usize) -> Result<SignedEnvelope> {
    from_bytes(bytes, cap)
}
