//! Why a step of secure aggregation was refused, on either side.

use crate::ids::ParticipantId;

/// The steps of a round, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Members advertise a public key for each neighbour.
    Keys,
    /// Members send their shares, encrypted for each neighbour.
    Shares,
    /// Members send their masked vectors.
    Masked,
    /// Survivors sign the survivor list.
    Signatures,
    /// Survivors reveal the shares the server needs.
    Unmask,
}

/// The two secrets a member shares, of which an honest neighbour reveals one at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecretKind {
    /// The self-mask seed b: revealed for a survivor.
    SelfMask,
    /// The key that wraps the member's pair seeds: revealed for a member that dropped.
    PairKeys,
}

/// Why secure aggregation refused a message, a step or a result.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The round's parameters cannot work (cohort size, threshold, word width).
    #[error("secure aggregation cannot run: {0}")]
    Setup(String),
    /// A message for another federation or round.
    #[error("a message for {got}, expected {expected}")]
    Binding {
        /// Federation and round of the message.
        got: String,
        /// Federation and round of this one.
        expected: String,
    },
    /// A method called at the wrong step.
    #[error("{got:?} is not the step in progress ({expected:?})")]
    Stage {
        /// The step the call belongs to.
        got: Stage,
        /// The step in progress.
        expected: Stage,
    },
    /// A peer or member the step does not expect.
    #[error("{who} is not expected at this step: {why}")]
    Unexpected {
        /// The peer, or the member index when it has no identity.
        who: String,
        /// What was expected.
        why: &'static str,
    },
    /// A message that is not well formed (lengths, indices, repeats).
    #[error("malformed secure-aggregation message: {0}")]
    Malformed(String),
    /// A signature (of a pair key or the survivor list) does not verify.
    #[error("bad signature by {signer}")]
    BadSignature {
        /// The member the signature claims.
        signer: ParticipantId,
    },
    /// A neighbour's public key could not be agreed with.
    #[error("key agreement with {peer} failed")]
    BadPeerKey {
        /// The neighbour.
        peer: ParticipantId,
    },
    /// A share failed authentication: tampered with, or not for us.
    #[error("the share from {from} does not authenticate")]
    Decrypt {
        /// The neighbour it claims to be from.
        from: ParticipantId,
    },
    /// The system's random source or the cipher failed.
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
    /// The vector to mask is not of the round's length, or has a word of b bits or more.
    #[error("input vector: {0}")]
    Input(String),
    /// A sum that no honest members could have given (see [`super::fixed`]): refused whole.
    #[error("the sum is out of range at sample {sample}: {detail}")]
    OutOfRange {
        /// The first sample that fails.
        sample: usize,
        /// What fails.
        detail: String,
    },
    /// This member has fewer than T neighbours left: its secrets could not be rebuilt, so it
    /// stops before sending anything that depends on them.
    #[error("{have} neighbours left at step {stage:?}, fewer than the threshold {need}")]
    TooFewNeighbours {
        /// The step.
        stage: Stage,
        /// Neighbours left.
        have: usize,
        /// T.
        need: usize,
    },
    /// Fewer members went on than the step needs: nothing is released.
    #[error("{have} members left after step {stage:?}, fewer than {need}")]
    TooFewSurvivors {
        /// The step.
        stage: Stage,
        /// Members left.
        have: usize,
        /// Members needed.
        need: usize,
    },
    /// The survivor list carries fewer than T valid signatures of distinct survivors.
    #[error("the survivor list has {have} valid signatures, fewer than the threshold {need}")]
    TooFewSignatures {
        /// Valid signatures of distinct survivors.
        have: usize,
        /// T.
        need: usize,
    },
    /// A member's secret cannot be rebuilt: fewer than T of its neighbours revealed a share.
    #[error("{secret:?} of {member} cannot be rebuilt: {have} shares, {need} needed")]
    Unrecoverable {
        /// Whose secret.
        member: ParticipantId,
        /// Which secret.
        secret: SecretKind,
        /// Shares received.
        have: usize,
        /// T.
        need: usize,
    },
    /// A rebuilt secret does not match what its owner committed to (a wrong share was revealed).
    #[error("{secret:?} of {member} was rebuilt wrong: a revealed share is corrupt")]
    Corrupt {
        /// Whose secret.
        member: ParticipantId,
        /// Which secret.
        secret: SecretKind,
    },
    /// This member already signed another survivor list this round.
    #[error("already signed another survivor list this round")]
    ListChanged,
    /// Revealing would give both of a member's secrets away: refused.
    #[error("refused to reveal {member}'s {asked:?} share after its {revealed:?} share")]
    BothKinds {
        /// The member.
        member: ParticipantId,
        /// The share asked for now.
        asked: SecretKind,
        /// The share revealed before.
        revealed: SecretKind,
    },
}

impl Error {
    pub(crate) fn setup(why: impl Into<String>) -> Self {
        Self::Setup(why.into())
    }
}

/// Shorthand for results of secure aggregation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
