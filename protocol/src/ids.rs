//! Identifiers: federation, round, participant (Ed25519 key / libp2p PeerId) and reference set.

use std::fmt;

use ring::rand::SecureRandom;
use ring::signature::{self, KeyPair};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest federation name accepted on the wire.
pub const MAX_FEDERATION_ID_LEN: usize = 64;

/// Name of a federation. Printable ASCII, 1 to 64 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct FederationId(String);

impl<'de> Deserialize<'de> for FederationId {
    /// Validates as [`FederationId::new`] does; the text is copied only once it is known to be in
    /// the input.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Self::new(crate::bounded::text(d)?).map_err(serde::de::Error::custom)
    }
}

impl FederationId {
    /// Validates and wraps a federation name.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        if name.is_empty() || name.len() > MAX_FEDERATION_ID_LEN {
            return Err(Error::field(
                "federation",
                format!("must be 1 to {MAX_FEDERATION_ID_LEN} bytes, got {}", name.len()),
            ));
        }
        if !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::field("federation", "must be printable ASCII without spaces"));
        }
        Ok(Self(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FederationId {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Self::new(value)
    }
}

impl From<FederationId> for String {
    fn from(value: FederationId) -> Self {
        value.0
    }
}

impl fmt::Display for FederationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A round number; rounds start at 1.
pub type Round = u64;

/// Prefix of a libp2p PeerId for an Ed25519 key: identity multihash (0x00) of
/// 36 bytes (0x24), wrapping the protobuf `PublicKey { Type: Ed25519, Data: 32 bytes }`.
const PEER_ID_ED25519_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// A participant's identity: its Ed25519 public key.
///
/// The same key is the participant's libp2p identity; [`ParticipantId::to_peer_id_bytes`] and
/// [`ParticipantId::from_peer_id_bytes`] convert to and from the binary form of its `PeerId`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ParticipantId(pub [u8; 32]);

impl ParticipantId {
    /// Binary `PeerId` (identity multihash of the protobuf-encoded public key), as libp2p encodes it.
    pub fn to_peer_id_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(38);
        out.extend_from_slice(&PEER_ID_ED25519_PREFIX);
        out.extend_from_slice(&self.0);
        out
    }

    /// Parses a binary `PeerId`; only inline Ed25519 keys are accepted.
    pub fn from_peer_id_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 38 || bytes[..6] != PEER_ID_ED25519_PREFIX {
            return Err(Error::InvalidKey("peer id is not an inline Ed25519 public key".into()));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[6..]);
        Ok(Self(key))
    }

    /// Verifies an Ed25519 signature by this key.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> Result<()> {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(message, sig)
            .map_err(|_| Error::BadSignature)
    }

    /// Short hex prefix for logs.
    pub fn short(&self) -> String {
        hex(&self.0[..6])
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParticipantId({})", hex(&self.0))
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

/// A participant's signing key. The 32-byte seed is also what libp2p's
/// `Keypair::ed25519_from_bytes` takes, so one key serves both transport and envelopes.
pub struct Identity {
    seed: [u8; 32],
    pair: signature::Ed25519KeyPair,
}

impl Identity {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self> {
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| Error::InvalidKey("system random source failed".into()))?;
        Self::from_seed(seed)
    }

    /// The key for a 32-byte Ed25519 seed (secret key).
    pub fn from_seed(seed: [u8; 32]) -> Result<Self> {
        let pair =
            signature::Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| Error::InvalidKey(e.to_string()))?;
        Ok(Self { seed, pair })
    }

    /// The secret seed, for writing a key file or building the libp2p keypair.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The public identity.
    pub fn id(&self) -> ParticipantId {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        ParticipantId(key)
    }

    /// Signs `message`, returning the 64-byte signature.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("id", &self.id()).finish_non_exhaustive()
    }
}

/// Id of a public reference set: SHA-256 of its canonical bytes (see [`crate::refset`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReferenceSetId(pub [u8; 32]);

/// The SHA-256 of a reference set taken in pieces, as they arrive (see
/// [`ReferenceSetId::hasher`]).
pub struct ReferenceSetHasher(ring::digest::Context);

impl std::fmt::Debug for ReferenceSetHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReferenceSetHasher")
    }
}

impl ReferenceSetHasher {
    /// Takes the next piece.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The id of every piece taken, in order.
    pub fn finish(self) -> ReferenceSetId {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        ReferenceSetId(out)
    }
}

impl ReferenceSetId {
    /// A hasher that gives the same id as [`ReferenceSetId::digest`] of its pieces put together.
    pub fn hasher() -> ReferenceSetHasher {
        ReferenceSetHasher(ring::digest::Context::new(&ring::digest::SHA256))
    }

    /// SHA-256 of `bytes`.
    pub fn digest(bytes: &[u8]) -> Self {
        let d = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    /// Lower-case hex, as written in config files.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self> {
        crate::hex::decode::<32>(s.trim())
            .map(Self)
            .ok_or_else(|| Error::field("reference_set_sha256", "must be 64 hex digits"))
    }
}

impl fmt::Debug for ReferenceSetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReferenceSetId({})", self.to_hex())
    }
}

impl fmt::Display for ReferenceSetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

use crate::hex::encode as hex;

/// Serde for a reference-set id written as 64 hex digits, as in config files:
/// `#[serde(with = "protocol::ids::reference_set_hex")]`. (On the wire it is 32 bytes.)
pub mod reference_set_hex {
    use super::ReferenceSetId;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes 64 lower-case hex digits.
    pub fn serialize<S: Serializer>(id: &ReferenceSetId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_hex())
    }

    /// Reads 64 hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ReferenceSetId, D::Error> {
        let text = String::deserialize(d)?;
        ReferenceSetId::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn federation_id_rejects_empty_long_and_spaces() {
        assert!(FederationId::new("").is_err());
        assert!(FederationId::new("a b").is_err());
        assert!(FederationId::new("x".repeat(65)).is_err());
        assert_eq!(FederationId::new("hospitals-2026").unwrap().as_str(), "hospitals-2026");
    }

    #[test]
    fn peer_id_bytes_round_trip_and_reject_other_forms() {
        let id = Identity::from_seed([7; 32]).unwrap().id();
        let bytes = id.to_peer_id_bytes();
        assert_eq!(ParticipantId::from_peer_id_bytes(&bytes).unwrap(), id);
        let mut wrong = bytes.clone();
        wrong[3] = 0x02; // secp256k1 key type
        assert!(ParticipantId::from_peer_id_bytes(&wrong).is_err());
        assert!(ParticipantId::from_peer_id_bytes(&bytes[..37]).is_err());
    }

    #[test]
    fn signatures_verify_only_with_the_right_key_and_message() {
        let a = Identity::from_seed([1; 32]).unwrap();
        let b = Identity::from_seed([2; 32]).unwrap();
        let sig = a.sign(b"hello");
        assert!(a.id().verify(b"hello", &sig).is_ok());
        assert!(a.id().verify(b"hellp", &sig).is_err());
        assert!(b.id().verify(b"hello", &sig).is_err());
    }

    #[test]
    fn reference_set_id_hex_round_trip() {
        let id = ReferenceSetId::digest(b"abc");
        assert_eq!(id.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(ReferenceSetId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(ReferenceSetId::from_hex("zz").is_err());
    }
}
