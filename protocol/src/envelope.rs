//! Signed envelopes: Ed25519 (ring) over a domain-separated SHA-256 digest.
//!
//! The signed digest is `SHA-256("fedistil/envelope/v1\0" ‖ version u16 LE ‖ kind u8 ‖ signer (32 bytes) ‖
//! body length u64 LE ‖ body)`. Binding the signer into the digest means a signature cannot be
//! re-attributed; [`SignedEnvelope::open`] also requires the signer to be the peer that the
//! transport authenticated, so nobody can relay another participant's message as their own.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::ids::{Identity, ParticipantId};
use crate::message::Message;
use crate::payload::Limits;
use crate::wire::{MessageKind, PROTOCOL_VERSION};

const DOMAIN: &[u8] = b"fedistil/envelope/v1\0";

/// A message body with its kind, version, signer and signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEnvelope {
    /// Protocol version of the sender.
    pub version: u16,
    /// Kind byte of the body.
    pub kind: u8,
    /// Public key of the signer.
    pub signer: ParticipantId,
    /// The bincode-encoded message.
    #[serde(with = "crate::bounded::bytes")]
    pub body: Vec<u8>,
    /// Ed25519 signature over the digest (64 bytes).
    #[serde(with = "crate::bounded::bytes")]
    pub signature: Vec<u8>,
}

fn digest(version: u16, kind: u8, signer: &ParticipantId, body: &[u8]) -> ring::digest::Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(DOMAIN);
    ctx.update(&version.to_le_bytes());
    ctx.update(&[kind]);
    ctx.update(&signer.0);
    ctx.update(&(body.len() as u64).to_le_bytes());
    ctx.update(body);
    ctx.finish()
}

impl SignedEnvelope {
    /// Encodes and signs `message` with `identity`.
    pub fn seal(message: &Message, identity: &Identity) -> Result<Self> {
        Ok(Self::seal_raw(message.kind() as u8, codec::encode_body(message)?, identity))
    }

    /// Signs `body` under any kind byte, known or not, without checking that they match. For
    /// tests that must put a validly signed but meaningless envelope on the wire; real senders
    /// use [`SignedEnvelope::seal`].
    #[doc(hidden)]
    pub fn seal_raw(kind: u8, body: Vec<u8>, identity: &Identity) -> Self {
        let signer = identity.id();
        let d = digest(PROTOCOL_VERSION, kind, &signer, &body);
        Self { version: PROTOCOL_VERSION, kind, signer, body, signature: identity.sign(d.as_ref()).to_vec() }
    }

    /// Verifies the envelope and decodes its body.
    ///
    /// `peer` is the identity the transport authenticated for the connection the envelope
    /// arrived on. Checks, in order: version, signer = peer, signature, kind, body decoding
    /// (capped at the kind's own size, [`Limits::body_cap`]), structural validation.
    pub fn open(&self, peer: &ParticipantId, limits: &Limits) -> Result<Message> {
        if self.version != PROTOCOL_VERSION {
            return Err(Error::Version { got: self.version, expected: PROTOCOL_VERSION });
        }
        if &self.signer != peer {
            return Err(Error::SignerMismatch { signer: self.signer.to_string(), peer: peer.to_string() });
        }
        self.verify()?;
        let kind = MessageKind::from_u8(self.kind)?;
        let message = codec::decode_body(kind, &self.body, limits.body_cap(kind))?;
        message.validate(limits)?;
        Ok(message)
    }

    /// Checks the signature alone.
    pub fn verify(&self) -> Result<()> {
        if self.signature.len() != 64 {
            return Err(Error::BadSignature);
        }
        let d = digest(self.version, self.kind, &self.signer, &self.body);
        self.signer.verify(d.as_ref(), &self.signature)
    }

    /// Encodes the envelope for the wire.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        codec::to_bytes(self)
    }

    /// Decodes an envelope from the wire, refusing more than its kind's cap
    /// ([`Limits::frame_cap`]).
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        codec::from_bytes(bytes, limits.frame_cap(codec::peek_kind(bytes)))
    }
}
