//! The cryptography of a round, each piece behind one function: what is signed (and under which
//! domain), the pairwise key agreement and what it derives, the AEAD layouts, and the masks'
//! expansion.
//!
//! - Every digest, derivation and AEAD is bound to the round's [`Binding`], written `binding`
//!   below: the federation as length (u64 LE) and bytes, the round as u64 LE, and the session
//!   (the digest of the announcement that opened the round's secure session, 32 bytes), so that
//!   nothing signed or sealed in one session of a round (say before the aggregator restarted and
//!   announced the round again) is accepted in another.
//! - Signed digests (Ed25519 with the member's identity): `SHA-256(domain ‖ binding ‖ …)`, a
//!   domain a kind.
//! - Pair secrets: X25519 (one fresh key a neighbour, so each private key serves one agreement),
//!   then HKDF-SHA-256 with salt `SHA-256(domain ‖ binding ‖ lower id ‖ higher id ‖
//!   lower's public key ‖ higher's public key)`: info `"mask seed"` gives the pair's mask seed,
//!   info `"share key" ‖ sender ‖ recipient` the key of one direction's share message (so each
//!   key seals one message, with the all-zero nonce).
//! - Shares: ChaCha20-Poly1305, associated data `domain ‖ binding ‖ sender ‖ recipient`.
//! - Wrapped pair seeds: ChaCha20-Poly1305 under the owner's wrapping key, the nonce the other
//!   member's index (u16 LE, then zeros: one nonce a seed), associated data `domain ‖ federation ‖
//!   round ‖ owner ‖ other`.
//! - Masks: the ChaCha20 keystream under the seed (nonce and counter 0), read as u32 words (LE).

use chacha20::ChaCha20Rng;
use chacha20::rand_core::{Rng, SeedableRng};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
use ring::digest::{Context, SHA256};
use ring::hkdf::{HKDF_SHA256, Salt};

use crate::ids::{FederationId, ParticipantId, Round};

/// A 32-byte seed or key.
pub(crate) type Key32 = [u8; 32];

/// Bytes the AEAD adds to a plaintext.
pub(crate) const TAG_BYTES: usize = 16;

const PAIR_KEY: &[u8] = b"fedistil/secagg/pair-key/v1\0";
const SURVIVORS: &[u8] = b"fedistil/secagg/survivors/v1\0";
const MASKING: &[u8] = b"fedistil/secagg/masking/v1\0";
const COMMITMENT: &[u8] = b"fedistil/secagg/self-seed/v1\0";
const AGREEMENT: &[u8] = b"fedistil/secagg/agreement/v1\0";
const SHARE: &[u8] = b"fedistil/secagg/share/v1\0";
const WRAP: &[u8] = b"fedistil/secagg/wrapped-seed/v1\0";

/// What everything of one secure session of a round is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Binding {
    /// The federation.
    pub(crate) federation: FederationId,
    /// The round.
    pub(crate) round: Round,
    /// The digest of the announcement that opened the session.
    pub(crate) session: Key32,
}

impl Binding {
    fn bytes(&self) -> Vec<u8> {
        let fed = self.federation.as_str().as_bytes();
        let mut out = Vec::with_capacity(8 + fed.len() + 8 + 32);
        out.extend_from_slice(&(fed.len() as u64).to_le_bytes());
        out.extend_from_slice(fed);
        out.extend_from_slice(&self.round.to_le_bytes());
        out.extend_from_slice(&self.session);
        out
    }
}

/// Adds the binding to a digest.
pub(crate) fn bind(ctx: &mut Context, binding: &Binding) {
    ctx.update(&binding.bytes());
}

fn finish(ctx: Context) -> Key32 {
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// What `from` signs to vouch for the public key it made for `to`.
pub(crate) fn pair_key_digest(binding: &Binding, from: &ParticipantId, to: &ParticipantId, public: &Key32) -> Key32 {
    let mut ctx = Context::new(&SHA256);
    ctx.update(PAIR_KEY);
    bind(&mut ctx, binding);
    ctx.update(&from.0);
    ctx.update(&to.0);
    ctx.update(public);
    finish(ctx)
}

/// What a member signs to say it saw `survivors` as the round's survivors.
/// What a member signs to say which neighbours it masked with (`with`, by identity).
pub(crate) fn masking_digest<'a>(
    binding: &Binding,
    member: &ParticipantId,
    with: impl ExactSizeIterator<Item = &'a ParticipantId>,
) -> Key32 {
    let mut ctx = Context::new(&SHA256);
    ctx.update(MASKING);
    bind(&mut ctx, binding);
    ctx.update(&member.0);
    ctx.update(&(with.len() as u64).to_le_bytes());
    for id in with {
        ctx.update(&id.0);
    }
    finish(ctx)
}

pub(crate) fn survivors_digest<'a>(
    binding: &Binding,
    survivors: impl ExactSizeIterator<Item = &'a ParticipantId>,
) -> Key32 {
    let mut ctx = Context::new(&SHA256);
    ctx.update(SURVIVORS);
    bind(&mut ctx, binding);
    ctx.update(&(survivors.len() as u64).to_le_bytes());
    for id in survivors {
        ctx.update(&id.0);
    }
    finish(ctx)
}

/// The commitment to a self-mask seed, by which the server checks the seed it rebuilt.
pub(crate) fn commitment(binding: &Binding, owner: &ParticipantId, seed: &Key32) -> Key32 {
    let mut ctx = Context::new(&SHA256);
    ctx.update(COMMITMENT);
    bind(&mut ctx, binding);
    ctx.update(&owner.0);
    ctx.update(seed);
    finish(ctx)
}

/// What one key agreement with a neighbour gives.
pub(crate) struct PairSecrets {
    /// Seed of the pair's mask.
    pub(crate) mask_seed: Key32,
    /// Seals our share for the neighbour.
    pub(crate) send: LessSafeKey,
    /// Opens the neighbour's share for us.
    pub(crate) receive: LessSafeKey,
}

/// Agrees with a neighbour: our private key made for it, our public key, its public key for us.
pub(crate) fn agree(
    binding: &Binding,
    (me, my_private, my_public): (&ParticipantId, EphemeralPrivateKey, &Key32),
    (peer, peer_public): (&ParticipantId, &Key32),
) -> Result<PairSecrets, ring::error::Unspecified> {
    let mut ctx = Context::new(&SHA256);
    ctx.update(AGREEMENT);
    bind(&mut ctx, binding);
    let (lower, higher) =
        if me < peer { ((me, my_public), (peer, peer_public)) } else { ((peer, peer_public), (me, my_public)) };
    ctx.update(&lower.0.0);
    ctx.update(&higher.0.0);
    ctx.update(lower.1);
    ctx.update(higher.1);
    let salt = Salt::new(HKDF_SHA256, ctx.finish().as_ref());
    let prk =
        agreement::agree_ephemeral(my_private, &UnparsedPublicKey::new(&agreement::X25519, peer_public), |shared| {
            salt.extract(shared)
        })?;
    let expand = |info: &[&[u8]]| -> Result<Key32, ring::error::Unspecified> {
        let mut out = [0u8; 32];
        prk.expand(info, HKDF_SHA256)?.fill(&mut out)?;
        Ok(out)
    };
    let key = |from: &ParticipantId, to: &ParticipantId| -> Result<LessSafeKey, ring::error::Unspecified> {
        let bytes = expand(&[b"share key", &from.0, &to.0])?;
        Ok(LessSafeKey::new(UnboundKey::new(&aead::CHACHA20_POLY1305, &bytes)?))
    };
    Ok(PairSecrets { mask_seed: expand(&[b"mask seed"])?, send: key(me, peer)?, receive: key(peer, me)? })
}

fn share_aad(binding: &Binding, from: &ParticipantId, to: &ParticipantId) -> Vec<u8> {
    let mut ad = SHARE.to_vec();
    ad.extend_from_slice(&binding.bytes());
    ad.extend_from_slice(&from.0);
    ad.extend_from_slice(&to.0);
    ad
}

/// Seals a share message from `from` to `to` (its key seals this message alone).
pub(crate) fn seal_share(
    key: &LessSafeKey,
    binding: &Binding,
    from: &ParticipantId,
    to: &ParticipantId,
    mut plaintext: Vec<u8>,
) -> Result<Vec<u8>, ring::error::Unspecified> {
    let aad = share_aad(binding, from, to);
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key([0; 12]), Aad::from(aad), &mut plaintext)?;
    Ok(plaintext)
}

/// Opens a share message from `from` to `to`.
pub(crate) fn open_share(
    key: &LessSafeKey,
    binding: &Binding,
    from: &ParticipantId,
    to: &ParticipantId,
    mut ciphertext: Vec<u8>,
) -> Result<Vec<u8>, ring::error::Unspecified> {
    let aad = share_aad(binding, from, to);
    let len = key.open_in_place(Nonce::assume_unique_for_key([0; 12]), Aad::from(aad), &mut ciphertext)?.len();
    ciphertext.truncate(len);
    Ok(ciphertext)
}

fn wrap_parts(binding: &Binding, owner: &ParticipantId, other: (u16, &ParticipantId)) -> (Nonce, Vec<u8>) {
    let mut nonce = [0u8; 12];
    nonce[..2].copy_from_slice(&other.0.to_le_bytes());
    let mut ad = WRAP.to_vec();
    ad.extend_from_slice(&binding.bytes());
    ad.extend_from_slice(&owner.0);
    ad.extend_from_slice(&other.1.0);
    (Nonce::assume_unique_for_key(nonce), ad)
}

/// Wraps the pair seed `owner` shares with `other` under `owner`'s wrapping key.
pub(crate) fn wrap_seed(
    wrapping_key: &Key32,
    binding: &Binding,
    owner: &ParticipantId,
    other: (u16, &ParticipantId),
    seed: &Key32,
) -> Result<Vec<u8>, ring::error::Unspecified> {
    let key = LessSafeKey::new(UnboundKey::new(&aead::CHACHA20_POLY1305, wrapping_key)?);
    let (nonce, ad) = wrap_parts(binding, owner, other);
    let mut out = seed.to_vec();
    key.seal_in_place_append_tag(nonce, Aad::from(ad), &mut out)?;
    Ok(out)
}

/// Unwraps a pair seed; fails if the key or anything bound is not what sealed it.
pub(crate) fn unwrap_seed(
    wrapping_key: &Key32,
    binding: &Binding,
    owner: &ParticipantId,
    other: (u16, &ParticipantId),
    wrapped: &[u8],
) -> Result<Key32, ring::error::Unspecified> {
    let key = LessSafeKey::new(UnboundKey::new(&aead::CHACHA20_POLY1305, wrapping_key)?);
    let (nonce, ad) = wrap_parts(binding, owner, other);
    let mut buf = wrapped.to_vec();
    let seed = key.open_in_place(nonce, Aad::from(ad), &mut buf)?;
    seed.try_into().map_err(|_| ring::error::Unspecified)
}

/// Whether a mask is added or subtracted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sign {
    Add,
    Subtract,
}

/// Adds (or subtracts) the mask expanded from `seed` to `acc`, modulo 2³² (any 2ᵇ is reduced
/// from it at the end).
pub(crate) fn apply_mask(acc: &mut [u32], seed: &Key32, sign: Sign) {
    let mut rng = ChaCha20Rng::from_seed(*seed);
    let mut block = [0u8; 4 * 256];
    for chunk in acc.chunks_mut(256) {
        let bytes = &mut block[..4 * chunk.len()];
        rng.fill_bytes(bytes);
        for (a, w) in chunk.iter_mut().zip(bytes.chunks_exact(4)) {
            let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            *a = match sign {
                Sign::Add => a.wrapping_add(w),
                Sign::Subtract => a.wrapping_sub(w),
            };
        }
    }
}

/// The sign with which `me` adds the mask it shares with `other`: the lower member adds it, the
/// higher subtracts it, so that the pair's masks cancel in the sum.
pub(crate) fn pair_sign(me: u16, other: u16) -> Sign {
    if me < other { Sign::Add } else { Sign::Subtract }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Identity;
    use ring::agreement::X25519;
    use ring::rand::SystemRandom;

    fn at(round: Round) -> Binding {
        Binding { federation: FederationId::new("fed").unwrap(), round, session: [7; 32] }
    }

    fn key_pair() -> (EphemeralPrivateKey, Key32) {
        let private = EphemeralPrivateKey::generate(&X25519, &SystemRandom::new()).unwrap();
        let public = private.compute_public_key().unwrap().as_ref().try_into().unwrap();
        (private, public)
    }

    #[test]
    fn both_ends_of_a_pair_derive_the_same_seed_and_each_opens_what_the_other_sealed() {
        let (u, v) = (Identity::from_seed([1; 32]).unwrap().id(), Identity::from_seed([2; 32]).unwrap().id());
        let ((pu, ku), (pv, kv)) = (key_pair(), key_pair());
        let at_u = agree(&at(4), (&u, pu, &ku), (&v, &kv)).unwrap();
        let at_v = agree(&at(4), (&v, pv, &kv), (&u, &ku)).unwrap();
        assert_eq!(at_u.mask_seed, at_v.mask_seed);
        let sealed = seal_share(&at_u.send, &at(4), &u, &v, b"share".to_vec()).unwrap();
        assert_eq!(open_share(&at_v.receive, &at(4), &u, &v, sealed.clone()).unwrap(), b"share");
        // Not with the other direction's key, nor for another round or recipient.
        assert!(open_share(&at_v.send, &at(4), &u, &v, sealed.clone()).is_err());
        assert!(open_share(&at_v.receive, &at(5), &u, &v, sealed.clone()).is_err());
        assert!(open_share(&at_v.receive, &at(4), &u, &u, sealed).is_err());
    }

    #[test]
    fn a_wrapped_seed_opens_only_under_its_key_and_binding() {
        let (owner, other) = (Identity::from_seed([1; 32]).unwrap().id(), Identity::from_seed([2; 32]).unwrap().id());
        let key = [9u8; 32];
        let w = wrap_seed(&key, &at(1), &owner, (3, &other), &[5; 32]).unwrap();
        assert_eq!(w.len(), 32 + TAG_BYTES);
        assert_eq!(unwrap_seed(&key, &at(1), &owner, (3, &other), &w).unwrap(), [5; 32]);
        assert!(unwrap_seed(&[8; 32], &at(1), &owner, (3, &other), &w).is_err());
        assert!(unwrap_seed(&key, &at(1), &owner, (4, &other), &w).is_err());
        assert!(unwrap_seed(&key, &at(1), &other, (3, &other), &w).is_err());
    }

    #[test]
    fn masks_are_the_chacha20_keystream_and_cancel_with_their_opposite() {
        // RFC 8439 §2.4.2's keystream has counter 1 and a nonzero nonce; with key 0, nonce 0 and
        // counter 0 the first block starts 76 b8 e0 ad (RFC 7539 A.1 test vector #1).
        let mut acc = vec![0u32; 3];
        apply_mask(&mut acc, &[0; 32], Sign::Add);
        assert_eq!(acc[0].to_le_bytes(), [0x76, 0xb8, 0xe0, 0xad]);
        let mut acc: Vec<u32> = (0..1000).collect();
        apply_mask(&mut acc, &[3; 32], Sign::Add);
        assert_ne!(acc, (0..1000).collect::<Vec<_>>());
        apply_mask(&mut acc, &[3; 32], Sign::Subtract);
        assert_eq!(acc, (0..1000).collect::<Vec<_>>());
    }
}
