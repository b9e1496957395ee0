//! A member's side of a round: a state machine that takes the server's messages and returns its
//! own, with no I/O. One [`Client`] a member a round; its secrets are dropped as soon as they
//! are no longer needed (the key agreement's private keys on use, the seeds once the vector is
//! masked).

use std::collections::{BTreeMap, BTreeSet};

use ring::agreement::{EphemeralPrivateKey, X25519};
use ring::rand::{SecureRandom, SystemRandom};

use super::crypto::{self, Key32, PairSecrets, Sign};
use super::error::{Error, Result, SecretKind, Stage};
use super::message::{
    EncryptedShare, KeyAdvertisement, MaskedInput, PairKey, ShareBundle, ShareDelivery, Signature, SignedMasking,
    SurvivorList, SurvivorSignature, UnmaskRequest, UnmaskResponse, WrappedSeed, check_binding, masking_digest,
    survivors_digest,
};
use super::setup::{Member, MemberSet, Setup};
use super::shamir::{self, Secret};
use crate::ids::{Identity, ParticipantId};

/// Bytes of a share message's plaintext: the share of the self-mask seed, then of the wrapping key.
pub(crate) const SHARE_PLAINTEXT: usize = 64;

/// One member's state in one round.
pub struct Client {
    setup: Setup,
    me: Member,
    state: State,
    /// Neighbours whose shares we hold: (self-mask seed, wrapping key) shares.
    held: BTreeMap<Member, (Secret, Secret)>,
    /// The survivor list we signed.
    signed: Option<MemberSet>,
    /// The kind of share revealed for each neighbour.
    revealed: BTreeMap<Member, SecretKind>,
}

enum State {
    /// Keys advertised; waiting for the neighbours'.
    Advertised { private: BTreeMap<Member, (EphemeralPrivateKey, Key32)>, secrets: Secrets },
    /// Shares sent; waiting for the neighbours' and our vector.
    Shared { pairs: BTreeMap<Member, PairSecrets>, secrets: Secrets },
    /// Masked vector sent: only shares are left.
    Masked,
}

/// Our two secrets.
struct Secrets {
    self_seed: Key32,
    wrapping_key: Key32,
}

fn random32(rng: &SystemRandom) -> Result<Key32> {
    let mut out = [0u8; 32];
    rng.fill(&mut out).map_err(|_| Error::Crypto("system random source"))?;
    Ok(out)
}

impl Client {
    /// Starts `identity`'s round: a fresh X25519 key for each neighbour, signed, and fresh secrets.
    pub fn start(setup: Setup, identity: &Identity) -> Result<(Self, KeyAdvertisement)> {
        let me = setup
            .member(&identity.id())
            .ok_or_else(|| Error::Unexpected { who: identity.id().to_string(), why: "a member of the cohort" })?;
        let rng = SystemRandom::new();
        let mut private = BTreeMap::new();
        let mut keys = Vec::with_capacity(setup.degree());
        for &v in setup.neighbours(me) {
            let key = EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| Error::Crypto("X25519 key"))?;
            let public: Key32 = key
                .compute_public_key()
                .map_err(|_| Error::Crypto("X25519 public key"))?
                .as_ref()
                .try_into()
                .map_err(|_| Error::Crypto("X25519 public key length"))?;
            let digest = crypto::pair_key_digest(setup.binding(), setup.id(me), setup.id(v), &public);
            keys.push(PairKey { from: me, to: v, public, signature: Signature(identity.sign(&digest)) });
            private.insert(v, (key, public));
        }
        let secrets = Secrets { self_seed: random32(&rng)?, wrapping_key: random32(&rng)? };
        let advertisement = KeyAdvertisement { federation: setup.federation().clone(), round: setup.round(), keys };
        let client = Self {
            setup,
            me,
            state: State::Advertised { private, secrets },
            held: BTreeMap::new(),
            signed: None,
            revealed: BTreeMap::new(),
        };
        Ok((client, advertisement))
    }

    /// This member's index in the cohort.
    pub fn member(&self) -> Member {
        self.me
    }

    /// The round's setup.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    fn stage(&self) -> Stage {
        match self.state {
            State::Advertised { .. } => Stage::Keys,
            State::Shared { .. } => Stage::Shares,
            State::Masked => Stage::Masked,
        }
    }

    fn neighbour(&self, from: Member, to: Member) -> Result<ParticipantId> {
        if to != self.me || !self.setup.neighbours(self.me).contains(&from) {
            return Err(Error::Unexpected { who: format!("member {from} → {to}"), why: "a neighbour, to us" });
        }
        Ok(*self.setup.id(from))
    }

    /// Takes the neighbours' keys for us (each checked against its signer, federation and round),
    /// agrees a pair secret with each, and shares our two secrets among them: T shares rebuild
    /// either. Fails if fewer than T neighbours advertised a key; a refused message changes
    /// nothing, except a key X25519 refuses (signed by the neighbour itself): then this member
    /// cannot go on this round.
    pub fn share(&mut self, keys: &KeyAdvertisement) -> Result<ShareBundle> {
        let State::Advertised { private, secrets } = &mut self.state else {
            return Err(Error::Stage { got: Stage::Keys, expected: self.stage() });
        };
        let setup = &self.setup;
        check_binding(setup, &keys.federation, keys.round)?;
        let me = *setup.id(self.me);
        // Check every key before using any: a refused message leaves the state as it was.
        let mut peers = BTreeMap::new();
        for k in &keys.keys {
            if k.to != self.me || !setup.neighbours(self.me).contains(&k.from) {
                return Err(Error::Unexpected {
                    who: format!("member {} → {}", k.from, k.to),
                    why: "a neighbour, to us",
                });
            }
            let peer = *setup.id(k.from);
            let digest = crypto::pair_key_digest(setup.binding(), &peer, &me, &k.public);
            peer.verify(&digest, &k.signature.0).map_err(|_| Error::BadSignature { signer: peer })?;
            if peers.insert(k.from, (peer, k.public)).is_some() {
                return Err(Error::Malformed(format!("two keys from member {}", k.from)));
            }
        }
        let need = setup.threshold();
        if peers.len() < need {
            return Err(Error::TooFewNeighbours { stage: Stage::Keys, have: peers.len(), need });
        }
        let mut pairs = BTreeMap::new();
        for (&v, &(peer, public)) in &peers {
            let (key, my_public) = private.remove(&v).ok_or(Error::Crypto("a neighbour's key used twice"))?;
            let secrets = crypto::agree(setup.binding(), (&me, key, &my_public), (&peer, &public))
                .map_err(|_| Error::BadPeerKey { peer })?;
            pairs.insert(v, secrets);
        }
        private.clear();

        let rng = SystemRandom::new();
        let holders = setup.neighbours(self.me).len();
        let split = |secret: &Key32| {
            shamir::split(secret, need, holders, &rng).map_err(|_| Error::Crypto("system random source"))
        };
        let (self_shares, key_shares) = (split(&secrets.self_seed)?, split(&secrets.wrapping_key)?);
        let mut shares = Vec::with_capacity(pairs.len());
        let mut wrapped = Vec::with_capacity(pairs.len());
        for (&v, pair) in &pairs {
            let x = usize::from(setup.share_x(self.me, v).ok_or(Error::Crypto("a neighbour without x"))?) - 1;
            let mut plaintext = Vec::with_capacity(SHARE_PLAINTEXT + crypto::TAG_BYTES);
            plaintext.extend_from_slice(&self_shares[x]);
            plaintext.extend_from_slice(&key_shares[x]);
            let peer = setup.id(v);
            let ciphertext = crypto::seal_share(&pair.send, setup.binding(), &me, peer, plaintext)
                .map_err(|_| Error::Crypto("sealing a share"))?;
            shares.push(EncryptedShare { from: self.me, to: v, ciphertext });
            let ciphertext = crypto::wrap_seed(&secrets.wrapping_key, setup.binding(), &me, (v, peer), &pair.mask_seed)
                .map_err(|_| Error::Crypto("wrapping a pair seed"))?;
            wrapped.push(WrappedSeed { other: v, ciphertext });
        }
        let commitment = crypto::commitment(setup.binding(), &me, &secrets.self_seed);
        let secrets = Secrets { self_seed: secrets.self_seed, wrapping_key: secrets.wrapping_key };
        self.state = State::Shared { pairs, secrets };
        Ok(ShareBundle { federation: setup.federation().clone(), round: setup.round(), commitment, shares, wrapped })
    }

    /// Takes the shares our neighbours sealed for us and masks `input` (the round's length, each
    /// word below 2ᵇ) with our self-mask and a pair mask with each of those neighbours, and signs
    /// (as `identity`) which neighbours those are. Fails if a share does not authenticate, or
    /// fewer than T neighbours sent shares.
    pub fn mask(&mut self, delivery: &ShareDelivery, input: &[u32], identity: &Identity) -> Result<MaskedInput> {
        let State::Shared { pairs, secrets } = &self.state else {
            return Err(Error::Stage { got: Stage::Shares, expected: self.stage() });
        };
        let setup = &self.setup;
        check_binding(setup, &delivery.federation, delivery.round)?;
        if input.len() != setup.words() {
            return Err(Error::Input(format!("{} words, the round sums {}", input.len(), setup.words())));
        }
        if let Some(i) = input.iter().position(|&w| w & !setup.word_mask() != 0) {
            return Err(Error::Input(format!("word {i} does not fit in {} bits", setup.bits())));
        }
        let me = *setup.id(self.me);
        let mut held = BTreeMap::new();
        for share in &delivery.shares {
            let from = self.neighbour(share.from, share.to)?;
            let pair = pairs
                .get(&share.from)
                .ok_or_else(|| Error::Unexpected { who: from.to_string(), why: "a neighbour that advertised a key" })?;
            let plain = crypto::open_share(&pair.receive, setup.binding(), &from, &me, share.ciphertext.clone())
                .map_err(|_| Error::Decrypt { from })?;
            if plain.len() != SHARE_PLAINTEXT {
                return Err(Error::Malformed(format!("a share of {} bytes from {from}", plain.len())));
            }
            let (mut self_share, mut key_share) = ([0u8; 32], [0u8; 32]);
            self_share.copy_from_slice(&plain[..32]);
            key_share.copy_from_slice(&plain[32..]);
            if held.insert(share.from, (self_share, key_share)).is_some() {
                return Err(Error::Malformed(format!("two shares from {from}")));
            }
        }
        let need = setup.threshold();
        if held.len() < need {
            return Err(Error::TooFewNeighbours { stage: Stage::Shares, have: held.len(), need });
        }
        let mut words = input.to_vec();
        crypto::apply_mask(&mut words, &secrets.self_seed, Sign::Add);
        for &v in held.keys() {
            let seed = &pairs[&v].mask_seed;
            crypto::apply_mask(&mut words, seed, crypto::pair_sign(self.me, v));
        }
        let width = setup.word_bytes();
        let mut packed = Vec::with_capacity(words.len() * width);
        for w in words {
            packed.extend_from_slice(&w.to_le_bytes()[..width]);
        }
        if identity.id() != me {
            return Err(Error::Unexpected { who: identity.id().to_string(), why: "this client's identity" });
        }
        let with = MemberSet::new(setup.cohort().len(), held.keys().copied());
        let signature = Signature(identity.sign(&masking_digest(setup, self.me, &with)));
        self.held = held;
        self.state = State::Masked;
        Ok(MaskedInput {
            federation: setup.federation().clone(),
            round: setup.round(),
            words: packed,
            masking: SignedMasking { with, signature },
        })
    }

    /// Signs the survivor list, once a round: a different list later is refused, so that two
    /// lists cannot both carry our signature. Fails if the list has fewer than T members.
    pub fn sign_survivors(&mut self, list: &SurvivorList, identity: &Identity) -> Result<SurvivorSignature> {
        if !matches!(self.state, State::Masked) {
            return Err(Error::Stage { got: Stage::Signatures, expected: self.stage() });
        }
        let setup = &self.setup;
        check_binding(setup, &list.federation, list.round)?;
        if identity.id() != *setup.id(self.me) {
            return Err(Error::Unexpected { who: identity.id().to_string(), why: "this client's identity" });
        }
        self.check_list(&list.survivors)?;
        if self.signed.as_ref().is_some_and(|signed| signed != &list.survivors) {
            return Err(Error::ListChanged);
        }
        let digest = survivors_digest(setup, &list.survivors);
        self.signed = Some(list.survivors.clone());
        Ok(SurvivorSignature {
            federation: setup.federation().clone(),
            round: setup.round(),
            signature: Signature(identity.sign(&digest)),
        })
    }

    /// A list this member may answer: well formed, of at least T members, and naming this
    /// member (a member the list counts as dropped answers nothing: its shares of a neighbour's
    /// self-mask seed would unmask that neighbour's vector alone).
    fn check_list(&self, survivors: &MemberSet) -> Result<()> {
        survivors.check(self.setup.cohort().len())?;
        if !survivors.contains(self.me) {
            return Err(Error::Unexpected { who: format!("member {}", self.me), why: "a survivor on the list" });
        }
        let need = self.setup.threshold();
        if survivors.len() < need {
            return Err(Error::TooFewSurvivors { stage: Stage::Masked, have: survivors.len(), need });
        }
        Ok(())
    }

    /// Answers the server's request: for each neighbour whose shares we hold, the share of its
    /// self-mask seed if it survived, of its wrapping key if it dropped. Refused unless the list
    /// carries valid signatures of at least T distinct survivors, is the list we signed (if we
    /// signed or answered one), and asks for no neighbour the other kind of share than we
    /// revealed before.
    pub fn unmask(&mut self, request: &UnmaskRequest) -> Result<UnmaskResponse> {
        if !matches!(self.state, State::Masked) {
            return Err(Error::Stage { got: Stage::Unmask, expected: self.stage() });
        }
        let setup = &self.setup;
        check_binding(setup, &request.federation, request.round)?;
        self.check_list(&request.survivors)?;
        if self.signed.as_ref().is_some_and(|signed| signed != &request.survivors) {
            return Err(Error::ListChanged);
        }
        let digest = survivors_digest(setup, &request.survivors);
        let mut signers = BTreeSet::new();
        for (signer, signature) in &request.signatures {
            if !request.survivors.contains(*signer) {
                return Err(Error::Unexpected { who: format!("member {signer}"), why: "a survivor signing the list" });
            }
            let id = setup.id(*signer);
            id.verify(&digest, &signature.0).map_err(|_| Error::BadSignature { signer: *id })?;
            if !signers.insert(*signer) {
                return Err(Error::Malformed(format!("two signatures by member {signer}")));
            }
        }
        if signers.len() < setup.threshold() {
            return Err(Error::TooFewSignatures { have: signers.len(), need: setup.threshold() });
        }
        let mut response = UnmaskResponse {
            federation: setup.federation().clone(),
            round: setup.round(),
            self_shares: Vec::new(),
            key_shares: Vec::new(),
        };
        let masking: BTreeMap<Member, &SignedMasking> = request.masking.iter().map(|(m, s)| (*m, s)).collect();
        let mut kinds = Vec::with_capacity(self.held.len());
        for (&v, (self_share, key_share)) in &self.held {
            let asked = if request.survivors.contains(v) { SecretKind::SelfMask } else { SecretKind::PairKeys };
            if asked == SecretKind::SelfMask {
                // Only to a holder `v` masked with: see the module's step 5.
                let named = masking.get(&v).filter(|s| s.with.contains(self.me)).ok_or_else(|| Error::Unexpected {
                    who: format!("member {v}"),
                    why: "a survivor whose signed masking set names this member",
                })?;
                let digest = masking_digest(setup, v, &named.with);
                setup
                    .id(v)
                    .verify(&digest, &named.signature.0)
                    .map_err(|_| Error::BadSignature { signer: *setup.id(v) })?;
            }
            if let Some(&revealed) = self.revealed.get(&v).filter(|&&r| r != asked) {
                return Err(Error::BothKinds { member: *setup.id(v), asked, revealed });
            }
            kinds.push((v, asked));
            match asked {
                SecretKind::SelfMask => response.self_shares.push((v, *self_share)),
                SecretKind::PairKeys => response.key_shares.push((v, *key_share)),
            }
        }
        self.revealed.extend(kinds);
        // The list answered binds this member as its signature would: it signs no other.
        self.signed.get_or_insert_with(|| request.survivors.clone());
        Ok(response)
    }
}
