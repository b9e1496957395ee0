//! The aggregator's side of a round: a state machine that takes the members' messages and
//! returns what to forward, then the sum, with no I/O. The caller decides when a step closes
//! (every member answered, or its deadline passed); whoever has not answered by then has dropped.
//!
//! The server keeps only the running sum of the masked vectors (each is added as it arrives and
//! not kept), and, to remove the masks of members that drop, their commitments and wrapped pair
//! seeds. Members whose neighbours are too few to rebuild their secrets are left out as early as
//! that is known: after the keys and after the shares, a member with fewer than T neighbours still
//! in the round is dropped (and so on until every member left has T), so that no member masks with
//! one whose masks could not be removed.

use std::collections::{BTreeMap, BTreeSet};

use super::crypto::{self, Key32, Sign, TAG_BYTES};
use super::error::{Error, Result, SecretKind, Stage};
use super::message::{
    KeyAdvertisement, MaskedInput, PairKey, ShareBundle, ShareDelivery, Signature, SignedMasking, SurvivorList,
    SurvivorSignature, UnmaskRequest, UnmaskResponse, check_binding, masking_digest, survivors_digest,
};
use super::setup::{Member, MemberSet, Setup};
use super::shamir::{self, Secret};
use crate::ids::ParticipantId;

/// The unmasked sum of the survivors' vectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregate {
    /// Each word of the sum, modulo 2ᵇ.
    pub sum: Vec<u32>,
    /// Whose vectors it sums.
    pub survivors: Vec<ParticipantId>,
}

/// What the server keeps of a member that sent its shares.
struct Sealed {
    commitment: Key32,
    wrapped: BTreeMap<Member, Vec<u8>>,
}

/// The aggregator's state in one round.
pub struct Server {
    setup: Setup,
    stage: Stage,
    keys: BTreeMap<Member, Vec<PairKey>>,
    /// Members still in the round: those that advertised keys, then sent shares, then a vector.
    alive: BTreeSet<Member>,
    bundles: BTreeMap<Member, ShareBundle>,
    sealed: BTreeMap<Member, Sealed>,
    /// Members that sent shares (U2), once the step closed.
    shared: BTreeSet<Member>,
    sum: Vec<u32>,
    signatures: BTreeMap<Member, Signature>,
    /// Each member's signed masking set, from its masked vector.
    masking: BTreeMap<Member, SignedMasking>,
    self_shares: BTreeMap<Member, Vec<(u8, Secret)>>,
    key_shares: BTreeMap<Member, Vec<(u8, Secret)>>,
    answered: BTreeSet<Member>,
}

impl Server {
    /// The server of the round `setup` describes.
    pub fn new(setup: Setup) -> Self {
        Self {
            setup,
            stage: Stage::Keys,
            keys: BTreeMap::new(),
            alive: BTreeSet::new(),
            bundles: BTreeMap::new(),
            sealed: BTreeMap::new(),
            shared: BTreeSet::new(),
            sum: Vec::new(),
            signatures: BTreeMap::new(),
            masking: BTreeMap::new(),
            self_shares: BTreeMap::new(),
            key_shares: BTreeMap::new(),
            answered: BTreeSet::new(),
        }
    }

    /// The round's setup.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// The step in progress.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The members still in the round: after the keys, those left; after the shares, those whose
    /// masked vector arrived (at the end, the survivors).
    pub fn alive(&self) -> Vec<ParticipantId> {
        self.alive.iter().map(|&m| *self.setup.id(m)).collect()
    }

    fn expect(&self, stage: Stage) -> Result<()> {
        if self.stage != stage {
            return Err(Error::Stage { got: stage, expected: self.stage });
        }
        Ok(())
    }

    /// The member `from` is, if it is in `among`.
    fn sender(&self, from: &ParticipantId, among: Option<&BTreeSet<Member>>) -> Result<Member> {
        self.setup
            .member(from)
            .filter(|m| among.is_none_or(|set| set.contains(m)))
            .ok_or_else(|| Error::Unexpected { who: from.to_string(), why: "a member still in the round" })
    }

    fn neighbours_in(&self, m: Member, set: &BTreeSet<Member>) -> impl Iterator<Item = Member> {
        self.setup.neighbours(m).iter().copied().filter(move |v| set.contains(v))
    }

    /// Drops, until none is left, members with fewer than T neighbours in the set.
    fn prune(&self, mut set: BTreeSet<Member>) -> BTreeSet<Member> {
        loop {
            let weak: Vec<Member> =
                set.iter().copied().filter(|&m| self.neighbours_in(m, &set).count() < self.setup.threshold()).collect();
            if weak.is_empty() {
                return set;
            }
            weak.iter().for_each(|m| {
                set.remove(m);
            });
        }
    }

    /// Takes a member's pair keys, one for each neighbour (`from`: the peer the transport
    /// authenticated).
    pub fn receive_keys(&mut self, from: &ParticipantId, advertisement: KeyAdvertisement) -> Result<()> {
        self.expect(Stage::Keys)?;
        check_binding(&self.setup, &advertisement.federation, advertisement.round)?;
        let m = self.sender(from, None)?;
        if self.keys.contains_key(&m) {
            return Err(Error::Malformed(format!("keys from {from} twice")));
        }
        let mut to = BTreeSet::new();
        for k in &advertisement.keys {
            if k.from != m || !self.setup.adjacent(m, k.to) || !to.insert(k.to) {
                return Err(Error::Malformed(format!("a key from member {} for {} sent by {from}", k.from, k.to)));
            }
            let setup = &self.setup;
            let digest = crypto::pair_key_digest(setup.binding(), from, setup.id(k.to), &k.public);
            from.verify(&digest, &k.signature.0).map_err(|_| Error::BadSignature { signer: *from })?;
        }
        if to.len() != self.setup.neighbours(m).len() {
            return Err(Error::Malformed(format!("{from} advertised keys for {} of its neighbours", to.len())));
        }
        self.keys.insert(m, advertisement.keys);
        Ok(())
    }

    /// Closes the key step: returns, for each member left, its neighbours' keys for it.
    pub fn close_keys(&mut self) -> Result<Vec<(ParticipantId, KeyAdvertisement)>> {
        self.expect(Stage::Keys)?;
        let keys = std::mem::take(&mut self.keys);
        self.alive = self.prune(keys.keys().copied().collect());
        if self.alive.is_empty() {
            let need = self.setup.threshold() + 1;
            return Err(Error::TooFewSurvivors { stage: Stage::Keys, have: keys.len(), need });
        }
        let mut out: BTreeMap<Member, Vec<PairKey>> = self.alive.iter().map(|&m| (m, Vec::new())).collect();
        for (u, list) in keys.into_iter().filter(|(u, _)| self.alive.contains(u)) {
            for k in list.into_iter().filter(|k| self.alive.contains(&k.to)) {
                debug_assert_eq!(k.from, u);
                out.entry(k.to).or_default().push(k);
            }
        }
        self.stage = Stage::Shares;
        Ok(self.deliver(out, |federation, round, keys| KeyAdvertisement { federation, round, keys }))
    }

    fn deliver<T, M>(
        &self,
        out: BTreeMap<Member, Vec<T>>,
        make: impl Fn(crate::ids::FederationId, u64, Vec<T>) -> M,
    ) -> Vec<(ParticipantId, M)> {
        out.into_iter()
            .map(|(m, items)| (*self.setup.id(m), make(self.setup.federation().clone(), self.setup.round(), items)))
            .collect()
    }

    /// Takes a member's shares: one for each neighbour left, and a wrapped seed for each.
    pub fn receive_shares(&mut self, from: &ParticipantId, bundle: ShareBundle) -> Result<()> {
        self.expect(Stage::Shares)?;
        check_binding(&self.setup, &bundle.federation, bundle.round)?;
        let m = self.sender(from, Some(&self.alive))?;
        if self.bundles.contains_key(&m) {
            return Err(Error::Malformed(format!("shares from {from} twice")));
        }
        let expected: BTreeSet<Member> = self.neighbours_in(m, &self.alive).collect();
        let share_len = super::client::SHARE_PLAINTEXT + TAG_BYTES;
        let to: BTreeSet<Member> =
            bundle.shares.iter().filter(|s| s.from == m && s.ciphertext.len() == share_len).map(|s| s.to).collect();
        let wrapped: BTreeSet<Member> =
            bundle.wrapped.iter().filter(|w| w.ciphertext.len() == 32 + TAG_BYTES).map(|w| w.other).collect();
        if to != expected
            || wrapped != expected
            || bundle.shares.len() != to.len()
            || bundle.wrapped.len() != wrapped.len()
        {
            return Err(Error::Malformed(format!("the shares of {from} are not one for each neighbour left")));
        }
        self.bundles.insert(m, bundle);
        Ok(())
    }

    /// Closes the share step: returns, for each member left, the shares sealed for it.
    pub fn close_shares(&mut self) -> Result<Vec<(ParticipantId, ShareDelivery)>> {
        self.expect(Stage::Shares)?;
        let bundles = std::mem::take(&mut self.bundles);
        self.alive = self.prune(bundles.keys().copied().collect());
        if self.alive.is_empty() {
            let need = self.setup.threshold() + 1;
            return Err(Error::TooFewSurvivors { stage: Stage::Shares, have: bundles.len(), need });
        }
        let mut out: BTreeMap<Member, Vec<_>> = self.alive.iter().map(|&m| (m, Vec::new())).collect();
        for (u, bundle) in bundles.into_iter().filter(|(u, _)| self.alive.contains(u)) {
            for share in bundle.shares.into_iter().filter(|s| self.alive.contains(&s.to)) {
                out.entry(share.to).or_default().push(share);
            }
            let wrapped = bundle.wrapped.into_iter().map(|w| (w.other, w.ciphertext)).collect();
            self.sealed.insert(u, Sealed { commitment: bundle.commitment, wrapped });
        }
        // From here `alive` is rebuilt from the vectors that arrive.
        self.shared = std::mem::take(&mut self.alive);
        self.sum = vec![0; self.setup.words()];
        self.stage = Stage::Masked;
        Ok(self.deliver(out, |federation, round, shares| ShareDelivery { federation, round, shares }))
    }

    /// Adds a member's masked vector to the running sum.
    pub fn receive_masked(&mut self, from: &ParticipantId, masked: MaskedInput) -> Result<()> {
        self.expect(Stage::Masked)?;
        check_binding(&self.setup, &masked.federation, masked.round)?;
        let m = self.sender(from, Some(&self.shared))?;
        // Before anything costs a signature check.
        if self.alive.contains(&m) {
            return Err(Error::Malformed(format!("a masked vector from {from} twice")));
        }
        let width = self.setup.word_bytes();
        if masked.words.len() != self.setup.words() * width {
            return Err(Error::Malformed(format!(
                "a masked vector of {} bytes, expected {} words of {width}",
                masked.words.len(),
                self.setup.words()
            )));
        }
        let with = &masked.masking.with;
        with.check(self.setup.cohort().len())?;
        if with.len() < self.setup.threshold()
            || with.iter().any(|v| !self.setup.adjacent(m, v) || !self.shared.contains(&v))
        {
            return Err(Error::Malformed(format!(
                "{from} masked with {} members, not T or more of its neighbours that shared",
                with.len()
            )));
        }
        let digest = masking_digest(&self.setup, m, with);
        from.verify(&digest, &masked.masking.signature.0).map_err(|_| Error::BadSignature { signer: *from })?;
        self.alive.insert(m);
        self.masking.insert(m, masked.masking);
        for (acc, bytes) in self.sum.iter_mut().zip(masked.words.chunks_exact(width)) {
            let mut word = [0u8; 4];
            word[..width].copy_from_slice(bytes);
            *acc = acc.wrapping_add(u32::from_le_bytes(word));
        }
        Ok(())
    }

    /// Closes the masked step: the survivor list for the survivors to sign. Fails if the
    /// survivors are fewer than T, or some member's masks could no longer be removed (fewer than
    /// T of its neighbours survive).
    pub fn close_masked(&mut self) -> Result<SurvivorList> {
        self.expect(Stage::Masked)?;
        let need = self.setup.threshold();
        if self.alive.len() < need {
            return Err(Error::TooFewSurvivors { stage: Stage::Masked, have: self.alive.len(), need });
        }
        for &u in &self.shared {
            let holders = self.neighbours_in(u, &self.alive).count();
            let secret = if self.alive.contains(&u) { SecretKind::SelfMask } else { SecretKind::PairKeys };
            if holders < need && (secret == SecretKind::SelfMask || holders > 0) {
                return Err(Error::Unrecoverable { member: *self.setup.id(u), secret, have: holders, need });
            }
        }
        self.stage = Stage::Signatures;
        Ok(SurvivorList {
            federation: self.setup.federation().clone(),
            round: self.setup.round(),
            survivors: self.survivor_set(),
        })
    }

    fn survivor_set(&self) -> MemberSet {
        MemberSet::new(self.setup.cohort().len(), self.alive.iter().copied())
    }

    /// Takes a survivor's signature of the list.
    pub fn receive_signature(&mut self, from: &ParticipantId, signature: SurvivorSignature) -> Result<()> {
        self.expect(Stage::Signatures)?;
        check_binding(&self.setup, &signature.federation, signature.round)?;
        let m = self.sender(from, Some(&self.alive))?;
        let digest = survivors_digest(&self.setup, &self.survivor_set());
        from.verify(&digest, &signature.signature.0).map_err(|_| Error::BadSignature { signer: *from })?;
        self.signatures.insert(m, signature.signature);
        Ok(())
    }

    /// Closes the signature step: the request to send every survivor, with T of the signatures.
    /// Fails with fewer than T.
    pub fn close_signatures(&mut self) -> Result<UnmaskRequest> {
        self.expect(Stage::Signatures)?;
        let need = self.setup.threshold();
        if self.signatures.len() < need {
            return Err(Error::TooFewSignatures { have: self.signatures.len(), need });
        }
        self.stage = Stage::Unmask;
        Ok(UnmaskRequest {
            federation: self.setup.federation().clone(),
            round: self.setup.round(),
            survivors: self.survivor_set(),
            // T signatures are what a member asks for: more would only make every request longer.
            signatures: self.signatures.iter().take(need).map(|(&m, &s)| (m, s)).collect(),
            masking: Vec::new(),
        })
    }

    /// The request of [`Server::close_signatures`] as `to` gets it: with the signed masking sets
    /// of its surviving neighbours (only those: every survivor's would make the request grow
    /// with n, each member's with n²).
    pub fn request_for(&self, request: &UnmaskRequest, to: &ParticipantId) -> UnmaskRequest {
        let masking = match self.setup.member(to) {
            Some(m) => self
                .neighbours_in(m, &self.alive)
                .filter_map(|v| self.masking.get(&v).map(|s| (v, s.clone())))
                .collect(),
            None => Vec::new(),
        };
        UnmaskRequest { masking, ..request.clone() }
    }

    /// Takes a survivor's shares: of surviving neighbours' self-mask seeds and dropped neighbours'
    /// wrapping keys, nothing else.
    pub fn receive_unmask(&mut self, from: &ParticipantId, response: UnmaskResponse) -> Result<()> {
        self.expect(Stage::Unmask)?;
        check_binding(&self.setup, &response.federation, response.round)?;
        let m = self.sender(from, Some(&self.alive))?;
        if self.answered.contains(&m) {
            return Err(Error::Malformed(format!("shares from {from} twice")));
        }
        let mut owners = BTreeSet::new();
        let mut points = Vec::with_capacity(response.self_shares.len() + response.key_shares.len());
        for (owners_survived, list) in [(true, &response.self_shares), (false, &response.key_shares)] {
            for &(owner, share) in list {
                let fits = self.shared.contains(&owner) && self.alive.contains(&owner) == owners_survived;
                // `fits` first: an owner outside the cohort must not be looked up.
                let x = fits.then(|| self.setup.share_x(owner, m)).flatten().filter(|_| owners.insert(owner));
                let x = x.ok_or_else(|| Error::Malformed(format!("{from} sent a share of member {owner}")))?;
                points.push((owners_survived, owner, x, share));
            }
        }
        for (survived, owner, x, share) in points {
            let map = if survived { &mut self.self_shares } else { &mut self.key_shares };
            map.entry(owner).or_default().push((x, share));
        }
        self.answered.insert(m);
        Ok(())
    }

    /// Whether enough shares have arrived to rebuild every secret [`Server::finish`] needs.
    pub fn ready(&self) -> bool {
        self.stage == Stage::Unmask
            && self.needed().all(|(u, kind)| self.points(u, kind).len() >= self.setup.threshold())
    }

    /// The secrets to rebuild: each survivor's self-mask seed, and the wrapping key of each member
    /// that dropped after sharing and has a surviving neighbour.
    fn needed(&self) -> impl Iterator<Item = (Member, SecretKind)> + '_ {
        self.shared.iter().filter_map(|&u| {
            if self.alive.contains(&u) {
                Some((u, SecretKind::SelfMask))
            } else {
                self.neighbours_in(u, &self.alive).next().map(|_| (u, SecretKind::PairKeys))
            }
        })
    }

    fn points(&self, u: Member, kind: SecretKind) -> &[(u8, Secret)] {
        let map = if kind == SecretKind::SelfMask { &self.self_shares } else { &self.key_shares };
        map.get(&u).map_or(&[], Vec::as_slice)
    }

    fn rebuild(&self, u: Member, kind: SecretKind) -> Result<Key32> {
        let (points, need) = (self.points(u, kind), self.setup.threshold());
        let member = *self.setup.id(u);
        if points.len() < need {
            return Err(Error::Unrecoverable { member, secret: kind, have: points.len(), need });
        }
        shamir::combine(&points[..need]).ok_or(Error::Corrupt { member, secret: kind })
    }

    /// Removes the masks from the sum: each survivor's self-mask (its seed rebuilt from T shares
    /// and checked against its commitment), and the pair masks survivors share with members that
    /// dropped (their wrapping keys rebuilt, their seeds unwrapped). The sum of the survivors'
    /// vectors, or why it cannot be had; nothing is released unless every mask is removed.
    pub fn finish(&self) -> Result<Aggregate> {
        self.expect(Stage::Unmask)?;
        let setup = &self.setup;
        let mut sum = self.sum.clone();
        for (u, kind) in self.needed() {
            let secret = self.rebuild(u, kind)?;
            let member = *setup.id(u);
            let corrupt = Error::Corrupt { member, secret: kind };
            let sealed = self.sealed.get(&u).ok_or(corrupt.clone())?;
            match kind {
                SecretKind::SelfMask => {
                    if crypto::commitment(setup.binding(), &member, &secret) != sealed.commitment {
                        return Err(corrupt);
                    }
                    crypto::apply_mask(&mut sum, &secret, Sign::Subtract);
                }
                SecretKind::PairKeys => {
                    for w in self.neighbours_in(u, &self.alive) {
                        let wrapped = sealed.wrapped.get(&w).ok_or(corrupt.clone())?;
                        let seed = crypto::unwrap_seed(&secret, setup.binding(), &member, (w, setup.id(w)), wrapped)
                            .map_err(|_| corrupt.clone())?;
                        // w added its pair mask with u with this sign; take it back.
                        let undo = match crypto::pair_sign(w, u) {
                            Sign::Add => Sign::Subtract,
                            Sign::Subtract => Sign::Add,
                        };
                        crypto::apply_mask(&mut sum, &seed, undo);
                    }
                }
            }
        }
        let mask = setup.word_mask();
        sum.iter_mut().for_each(|w| *w &= mask);
        Ok(Aggregate { sum, survivors: self.alive() })
    }
}
