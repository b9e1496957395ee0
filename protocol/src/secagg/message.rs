//! The messages of a secure-aggregation round, as serde types for [`crate::codec`].
//!
//! ```text
//! member → server   KeyAdvertisement   a signed X25519 public key for each neighbour
//! server → member   KeyAdvertisement   its neighbours' keys for it
//! member → server   ShareBundle        shares of its two secrets, sealed for each neighbour; its
//!                                      pair seeds wrapped under the second; a commitment to the first
//! server → member   ShareDelivery      the shares sealed for it
//! member → server   MaskedInput        its vector plus its masks, modulo 2ᵇ
//! server → member   SurvivorList       who sent a masked vector in time
//! member → server   SurvivorSignature  its signature of that list
//! server → member   UnmaskRequest      the list with at least T signatures
//! member → server   UnmaskResponse     for each neighbour, the share of one secret
//! ```
//!
//! Members are named by their index in the sorted cohort ([`Member`]); a signature binds the full
//! identities. Every message carries the federation and round, checked by the receiving state
//! machine. Variable-length fields decode through [`crate::bounded`], so a length prefix is never
//! allocated before its bytes are there; [`Setup::message_cap`] bounds every message of a round.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{Error, Result};
use super::setup::{Member, MemberSet, Setup};
use crate::ids::{FederationId, Round};

/// An Ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({}…)", crate::hex::encode(&self.0[..8]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bytes = crate::bounded::bytes::deserialize(d)?;
        bytes.as_slice().try_into().map(Self).map_err(|_| serde::de::Error::custom("a signature is 64 bytes"))
    }
}

/// A member's X25519 public key for one neighbour, signed by the member's identity over the
/// federation, round, both identities and the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairKey {
    /// The member that made the key.
    pub from: Member,
    /// The neighbour it is for.
    pub to: Member,
    /// The public key.
    pub public: [u8; 32],
    /// `from`'s signature.
    pub signature: Signature,
}

/// Pair keys: from a member, one for each neighbour; from the server, each neighbour's for the
/// recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAdvertisement {
    /// Federation.
    pub federation: FederationId,
    /// Round.
    pub round: Round,
    /// The keys.
    #[serde(deserialize_with = "crate::bounded::list")]
    pub keys: Vec<PairKey>,
}

/// One member's shares for one neighbour, sealed under their pair's key for this direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedShare {
    /// The member whose secrets are shared.
    pub from: Member,
    /// The neighbour that holds the shares.
    pub to: Member,
    /// ChaCha20-Poly1305 of the two 32-byte shares (self-mask seed, wrapping key).
    #[serde(with = "crate::bounded::bytes")]
    pub ciphertext: Vec<u8>,
}

/// The seed a member's mask shares with one neighbour, wrapped under the member's wrapping key:
/// the server opens it only if the member drops and its neighbours reveal that key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedSeed {
    /// The neighbour.
    pub other: Member,
    /// ChaCha20-Poly1305 of the 32-byte seed.
    #[serde(with = "crate::bounded::bytes")]
    pub ciphertext: Vec<u8>,
}

/// Member → server: everything the server keeps or forwards so the member's masks can be removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareBundle {
    /// Federation.
    pub federation: FederationId,
    /// Round.
    pub round: Round,
    /// Commitment to the self-mask seed, by which the server checks the seed it rebuilds.
    pub commitment: [u8; 32],
    /// One for each neighbour that advertised a key.
    #[serde(deserialize_with = "crate::bounded::list")]
    pub shares: Vec<EncryptedShare>,
    /// One for each of the same neighbours.
    #[serde(deserialize_with = "crate::bounded::list")]
    pub wrapped: Vec<WrappedSeed>,
}

/// Server → member: the shares its neighbours sealed for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareDelivery {
    /// Federation.
    pub federation: FederationId,
    /// Round.
    pub round: Round,
    /// The shares; the member masks with exactly these neighbours.
    #[serde(deserialize_with = "crate::bounded::list")]
    pub shares: Vec<EncryptedShare>,
}

/// Member → server: its vector with its masks added, modulo 2ᵇ, each word in b/8 bytes (LE).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedInput {
    /// Federation.
    pub federation: FederationId,
    /// Round.
    pub round: Round,
    /// The packed words.
    #[serde(with = "crate::bounded::bytes")]
    pub words: Vec<u8>,
    /// The neighbours the member masked with (those whose shares reached it), signed by it:
    /// a holder reveals its share of the member's self-mask seed only if it is one of them.
    pub masking: SignedMasking,
}

/// A member's signed statement of the neighbours it masked with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMasking {
    /// The neighbours.
    pub with: MemberSet,
    /// The member's signature over the federation, round, itself and their identities.
    pub signature: Signature,
}

/// Server → survivors: who sent a masked vector in time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurvivorList {
    /// Federation.
    pub federation: FederationId,
    /// Round.
    pub round: Round,
    /// The survivors.
    pub survivors: MemberSet,
}

/// Survivor → server: its signature of the survivor list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurvivorSignature {
    /// Federation.
    pub federation: FederationId,
    /// Round.
    pub round: Round,
    /// Over the federation, round and the survivors' identities.
    pub signature: Signature,
}

/// Server → survivors: the survivor list, with the signatures of at least T survivors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskRequest {
    /// Federation.
    pub federation: FederationId,
    /// Round.
    pub round: Round,
    /// The survivors.
    pub survivors: MemberSet,
    /// Survivors' signatures of the list.
    #[serde(deserialize_with = "crate::bounded::list")]
    pub signatures: Vec<(Member, Signature)>,
    /// Each survivor's signed masking set ([`MaskedInput::masking`]).
    #[serde(deserialize_with = "crate::bounded::list")]
    pub masking: Vec<(Member, SignedMasking)>,
}

/// Survivor → server: for each neighbour whose shares it holds, the share of one secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskResponse {
    /// Federation.
    pub federation: FederationId,
    /// Round.
    pub round: Round,
    /// Shares of surviving neighbours' self-mask seeds.
    #[serde(deserialize_with = "crate::bounded::list")]
    pub self_shares: Vec<(Member, [u8; 32])>,
    /// Shares of dropped neighbours' wrapping keys.
    #[serde(deserialize_with = "crate::bounded::list")]
    pub key_shares: Vec<(Member, [u8; 32])>,
}

/// Checks that a message belongs to the setup's federation and round.
pub(crate) fn check_binding(setup: &Setup, federation: &FederationId, round: Round) -> Result<()> {
    if federation != setup.federation() || round != setup.round() {
        return Err(Error::Binding {
            got: format!("{federation} round {round}"),
            expected: format!("{} round {}", setup.federation(), setup.round()),
        });
    }
    Ok(())
}

/// What `member` signs to say it masked with `with`.
pub(crate) fn masking_digest(setup: &Setup, member: Member, with: &MemberSet) -> [u8; 32] {
    let ids: Vec<_> = with.iter().map(|m| setup.id(m)).collect();
    super::crypto::masking_digest(setup.binding(), setup.id(member), ids.into_iter())
}

/// What a member signs to say it saw `survivors` as the round's survivors.
pub(crate) fn survivors_digest(setup: &Setup, survivors: &MemberSet) -> [u8; 32] {
    let ids: Vec<_> = survivors.iter().map(|m| setup.id(m)).collect();
    super::crypto::survivors_digest(setup.binding(), ids.into_iter())
}

impl Setup {
    /// The most bytes any message of this round can take encoded (the cap to decode it with):
    /// the largest of the masked vector, the unmask request with a signature from every member,
    /// and the messages that carry something for each neighbour.
    pub fn message_cap(&self) -> usize {
        // Federation (length + 64 bytes), round and a list length, as varints: generous.
        const HEAD: usize = 96;
        // A member index is a varint of at most 3 bytes; a byte string has a 1-to-9-byte prefix.
        let (n, k) = (self.cohort().len(), self.degree());
        let keys = k * (3 + 3 + 32 + 1 + 64);
        let shares =
            32 + 18 + k * (3 + 3 + 9 + 64 + super::crypto::TAG_BYTES) + k * (3 + 9 + 32 + super::crypto::TAG_BYTES);
        let set = 9 + n.div_ceil(8);
        let masked = 9 + self.words() * self.word_bytes() + set + 65;
        let request = 9 + set + 9 + n * (3 + 1 + 64) + 9 + n * (3 + set + 65);
        let response = 18 + 2 * k * (3 + 32);
        HEAD + keys.max(shares).max(masked).max(request).max(response)
    }
}
