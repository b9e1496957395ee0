//! The only module that calls bincode.
//!
//! Every decode is size-capped twice: the input length is checked against the caller's cap
//! (for a message, its kind's own cap: [`crate::Limits::body_cap`]) before anything is read,
//! and bincode's own limit stops a length prefix from claiming more than [`MAX_MESSAGE_BYTES`].
//! Byte strings, texts and lists are copied out of the input only once their bytes are known to
//! be there, never allocated at a claimed length first. A decode that leaves bytes unread is an
//! error. [`peek_kind`] reads an envelope's kind from its first bytes, so that a framing layer
//! can apply the kind's cap before the rest arrives. Local state files have their own pair,
//! [`to_file_bytes`] and [`from_file_bytes`], without the message cap.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::message::Message;
use crate::wire::{MessageKind, PROTOCOL_VERSION};

pub use crate::wire::MAX_MESSAGE_BYTES;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

/// Encodes any serde value as a message would be (at most [`MAX_MESSAGE_BYTES`]).
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

/// Encodes a local state file (never sent): no message cap applies.
pub fn to_file_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| Error::Malformed(e.to_string()))
}

/// Decodes a local state file from exactly `bytes` (its only cap is its own length; a corrupt
/// length prefix fails when its bytes are missing, it is not allocated first).
pub fn from_file_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| Error::Malformed(e.to_string()))?;
    if read != bytes.len() {
        return Err(Error::TrailingBytes(bytes.len() - read));
    }
    Ok(value)
}

/// Most bytes [`peek_kind`] needs: the version (a varint of up to 3 bytes) and the kind byte.
pub const ENVELOPE_HEADER_BYTES: usize = 4;

/// The kind of an encoded envelope, from its first bytes (the rest need not have arrived).
/// `None` if `prefix` is too short to tell, the version is not this build's, or the kind byte
/// names no message: such an envelope gets the smallest cap, since it can only be refused.
pub fn peek_kind(prefix: &[u8]) -> Option<MessageKind> {
    let head = &prefix[..prefix.len().min(ENVELOPE_HEADER_BYTES)];
    let ((version, kind), _): ((u16, u8), usize) = bincode::serde::decode_from_slice(head, config()).ok()?;
    if version != PROTOCOL_VERSION {
        return None;
    }
    MessageKind::from_u8(kind).ok()
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
        Message::SecureStep(m) => to_bytes(m),
        Message::SecureReply(m) => to_bytes(m),
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
        MessageKind::SecureStep => Message::SecureStep(from_bytes(body, cap)?),
        MessageKind::SecureReply => Message::SecureReply(from_bytes(body, cap)?),
    })
}
