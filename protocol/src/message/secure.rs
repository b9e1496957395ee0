//! Secure aggregation on the wire: the setup an announcement carries, the aggregator's steps
//! and the members' replies (the protocol itself is [`crate::secagg`]).
//!
//! A secure round, seen from the wire (nodes still only ever talk to the aggregator):
//!
//! ```text
//! aggregator → node   RoundAnnouncement with `secure` (the cohort, T, k, b, graph seed, scale)
//! aggregator → node   SecureStep::Keys                → node answers SecureReply::Keys
//! aggregator → node   SecureStep::Neighbours          → node answers SecureReply::Shares
//! aggregator → node   SecureStep::Shares              → node answers with a receipt
//! node → aggregator   SecureReply::Masked             (once trained; a receipt answers)
//! aggregator → node   SecureStep::Survivors           → node answers SecureReply::Signature
//! aggregator → node   SecureStep::Unmask              → node answers SecureReply::Unmask
//! aggregator → node   Consensus                       (as in a plain round)
//! ```
//!
//! Every step names the announcement's digest, which covers the secure setup: a step of another
//! announcement (another cohort, another threshold) is refused.

use serde::{Deserialize, Serialize};

use super::{AnnouncementDigest, RoundAnnouncement};
use crate::error::{Error, Result};
use crate::ids::{FederationId, ParticipantId, Round};
use crate::secagg::{
    self, FixedPoint, KeyAdvertisement, MaskedInput, Params, Setup, ShareBundle, ShareDelivery, SurvivorList,
    SurvivorSignature, UnmaskRequest, UnmaskResponse,
};

/// What a secure round's announcement adds: the cohort and the protocol's parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecureRound {
    /// The members that mask together (the round's cohort), sorted.
    #[serde(deserialize_with = "crate::bounded::list")]
    pub cohort: Vec<ParticipantId>,
    /// Threshold, degree and word width.
    pub params: Params,
    /// Seed of the neighbourhood graph.
    pub graph_seed: u64,
    /// Fixed-point scale S of the soft labels ([`FixedPoint`]).
    pub scale: u32,
}

impl SecureRound {
    /// The round's [`Setup`] for `ann` (which carries this): its vector has
    /// [`FixedPoint::words`] words for the announced samples and classes.
    pub fn setup(&self, ann: &RoundAnnouncement) -> secagg::Result<Setup> {
        let words = FixedPoint::words(ann.selection.len(), ann.classes as usize);
        Setup::new(
            ann.federation.clone(),
            ann.round,
            ann.digest().0,
            self.cohort.clone(),
            self.params,
            self.graph_seed,
            words,
        )
    }

    /// The fixed-point scale, checked.
    pub fn fixed(&self) -> secagg::Result<FixedPoint> {
        FixedPoint::new(self.scale)
    }

    /// Checks what can be checked without the round: a cohort within `max_cohort`, sorted and
    /// without repeats, a scale whose sum over the cohort fits the word width.
    pub fn check(&self, max_cohort: u32) -> Result<()> {
        let n = self.cohort.len();
        if n < secagg::MIN_COHORT || n > max_cohort as usize {
            return Err(Error::field("secure.cohort", format!("{n} members, expected 3 to {max_cohort}")));
        }
        if self.cohort.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::field("secure.cohort", "not sorted, or a member twice"));
        }
        let fixed = self.fixed().map_err(|e| Error::field("secure.scale", e.to_string()))?;
        let bits = fixed.bits_for(n).map_err(|e| Error::field("secure.scale", e.to_string()))?;
        if self.params.bits < bits || !secagg::WORD_BITS.contains(&self.params.bits) {
            return Err(Error::field(
                "secure.params.bits",
                format!("{} bits cannot hold a sum of {n} members at scale {}", self.params.bits, self.scale),
            ));
        }
        Ok(())
    }

    /// Feeds the setup into an announcement's digest.
    pub(crate) fn digest_into(&self, ctx: &mut ring::digest::Context) {
        ctx.update(&(self.cohort.len() as u64).to_le_bytes());
        for id in &self.cohort {
            ctx.update(&id.0);
        }
        ctx.update(&(self.params.threshold as u64).to_le_bytes());
        ctx.update(&(self.params.degree.map_or(0, |d| d as u64 + 1)).to_le_bytes());
        ctx.update(&self.params.bits.to_le_bytes());
        ctx.update(&self.graph_seed.to_le_bytes());
        ctx.update(&self.scale.to_le_bytes());
    }
}

/// What the aggregator asks of a member, step by step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Step {
    /// Advertise your pair keys.
    Keys,
    /// Your neighbours' keys for you: share your secrets among them.
    Neighbours(KeyAdvertisement),
    /// The shares your neighbours sealed for you: mask with these neighbours.
    Shares(ShareDelivery),
    /// The survivors: sign the list.
    Survivors(SurvivorList),
    /// The signed list: reveal the shares it needs.
    Unmask(UnmaskRequest),
}

/// A member's answer to a step, or its masked vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Answers [`Step::Keys`].
    Keys(KeyAdvertisement),
    /// Answers [`Step::Neighbours`].
    Shares(ShareBundle),
    /// Sent by the member (a request) once it is trained and holds its shares.
    Masked(MaskedInput),
    /// Answers [`Step::Survivors`].
    Signature(SurvivorSignature),
    /// Answers [`Step::Unmask`].
    Unmask(UnmaskResponse),
}

/// Aggregator → member: one step of a secure round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecureStep {
    /// Federation.
    pub federation: FederationId,
    /// Round.
    pub round: Round,
    /// Digest of the round's announcement (which covers its secure setup).
    pub announcement: AnnouncementDigest,
    /// The step.
    pub step: Step,
}

/// Member → aggregator: a reply to a step, or the masked vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecureReply {
    /// Federation.
    pub federation: FederationId,
    /// Round.
    pub round: Round,
    /// Digest of the round's announcement.
    pub announcement: AnnouncementDigest,
    /// The reply.
    pub reply: Reply,
}

impl Step {
    /// The step's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Keys => "keys",
            Self::Neighbours(_) => "neighbours",
            Self::Shares(_) => "shares",
            Self::Survivors(_) => "survivors",
            Self::Unmask(_) => "unmask",
        }
    }
}

impl Reply {
    /// The reply's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Keys(_) => "keys",
            Self::Shares(_) => "shares",
            Self::Masked(_) => "masked",
            Self::Signature(_) => "signature",
            Self::Unmask(_) => "unmask",
        }
    }
}
