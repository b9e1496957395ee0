//! Secure aggregation: the aggregator learns the sum of a cohort's vectors, never one member's.
//!
//! The protocol of Bonawitz et al. (CCS 2017, "Practical Secure Aggregation for
//! Privacy-Preserving Machine Learning") with the sparse neighbourhoods of SecAgg+ (Bell et al.,
//! CCS 2020): each member masks only with its k neighbours in a random k-regular graph, so a
//! member's cost grows with log n and the round's with n log n. Pure state machines, no I/O:
//! [`Client`] (a member, one a round) and [`Server`] (the aggregator) take messages and return
//! messages, and the server finally the sum ([`Aggregate`]).
//!
//! # A round
//!
//! All parties first agree on a [`Setup`] (federation, round, cohort, threshold T, degree k, the
//! graph's seed, vector length, word width b). Then, with `u` a member and `N(u)` its neighbours:
//!
//! 1. **Keys.** `u` makes a fresh X25519 key pair for each `v ∈ N(u)` and signs each public key
//!    with its identity, bound to the federation, round, `u` and `v`. The server checks and
//!    forwards each key to the neighbour it is for.
//! 2. **Shares.** With each neighbour that advertised, `u` agrees one secret (its key for `v`
//!    with `v`'s key for `u`: ring's ephemeral keys serve one agreement, which is all a pair
//!    needs), and derives from it by HKDF the pair's mask seed `s_uv` and an AEAD key for each
//!    direction. `u` draws two secrets: its self-mask seed `b_u` and a wrapping key `c_u`; it
//!    Shamir-shares both, T of |N(u)|, sealing each neighbour's two shares under the pair's key
//!    (ChaCha20-Poly1305, bound to federation, round, sender and recipient), and wraps each pair
//!    seed `s_uv` under `c_u`. The server keeps the wrapped seeds and a commitment to `b_u`, and
//!    forwards each sealed share to its holder.
//! 3. **Masked input.** `u` sends `y_u = x_u + PRG(b_u) + Σ_{v ∈ N(u) ∩ U₂} ±PRG(s_uv) mod 2ᵇ`,
//!    with `+` if `u < v` (cohort order), `−` otherwise, where `U₂` are the neighbours whose
//!    shares reached it; PRG is the ChaCha20 keystream under the seed. The server adds the `y_u`
//!    as they arrive: it never holds one unmasked.
//! 4. **Consistency.** The server sends the survivors `U₃` (who sent `y`) to the survivors; each
//!    signs the list, once a round. The server needs T signatures.
//! 5. **Unmasking.** With the list and its signatures, each survivor on the list reveals, for
//!    each neighbour whose shares it holds, the share of `b_v` if `v` survived and of `c_v` if it
//!    dropped, never both for one member. A member the list counts as dropped reveals nothing,
//!    and a holder reveals its share of `b_v` only if `v`'s signed masking set (the neighbours
//!    `v` masked with, sent with `y_v` and forwarded in the request) names it: otherwise a server
//!    that withheld some neighbours' shares from `v`, then listed the others as survivors and the
//!    withheld ones as dropped, would get `b_v` and every pair seed `v` used. The server rebuilds each survivor's `b` (checked against its
//!    commitment) and subtracts its mask, and for each member that dropped rebuilds `c`, unwraps
//!    its seeds with surviving neighbours and takes those pair masks back. Pair masks between
//!    survivors cancel in the sum.
//!
//! # Choices and why
//!
//! - **A wrapping key instead of sharing every pair seed.** Bonawitz et al. share the member's
//!   long-lived DH secret; ring cannot export X25519 private keys, and sharing each `s_uv` would
//!   cost k shares of 32 bytes for each of k holders (k² · 32 bytes a member, 6.3 KB at k = 14).
//!   Sharing one key `c_u` that wraps the seeds costs k · 48 bytes of wrapped seeds, kept by the
//!   server, and reveals exactly what rebuilding the DH secret would (all of `u`'s pair seeds,
//!   only if `u` dropped). Either way `b_u` is never revealed for a member that dropped.
//! - **Neighbourhood.** A Harary graph over a seeded permutation of the cohort, k = 2⌈log₂ n⌉ by
//!   default, at least T; the complete graph (Bonawitz as published) when k ≥ n − 1. The graph's
//!   seed comes from the round's seed, so an aggregator that chose seeds could choose graphs:
//!   derive it from something it cannot grind if that matters.
//! - **Word width.** Words are summed modulo 2ᵇ, b ∈ {8, 16, 24, 32}; [`fixed`] picks b from the
//!   fixed-point scale and the number of members (`members · scale < 2ᵇ`).
//! - **Shamir** over GF(2⁸), written here (80 lines, constant-time): `vsss-rs` would add a second
//!   `generic-array` and `ff`; `blahaj`/`sharks` use secret-indexed tables and mishandle repeated
//!   shares (module `shamir` says more).
//! - **Stream cipher**: ChaCha20 from the `chacha20` crate, the version rand 0.10 already builds.
//!
//! # What it guarantees, and what it does not
//!
//! Against an aggregator that follows the protocol and up to T − 1 colluding members, a member's
//! vector is hidden by its self-mask until it is counted a survivor, and then appears only in the
//! sum. Against an aggregator that lies about who dropped (telling some holders that `v`
//! survived and others that it dropped, to collect both of `v`'s secrets), each honest member
//! signs one survivor list a round and answers only a list with T signatures; two different lists
//! can then both be answered only if their signers, honest ones counted once, number 2T − c or
//! more (c colluding members): the check is complete when 2T > n + c, as in Bonawitz et al., and
//! weaker with SecAgg+'s small T. Each holder also refuses to reveal the second kind of share for
//! a member whatever the lists say. SecAgg+'s guarantee is probabilistic over the graph (a member
//! whose neighbours all collude is exposed): choose k and T from the number of members that may
//! collude. A member can still shift the sum: [`fixed::FixedPoint::tally`] checks what a sum
//! can be checked for, and refuses it whole otherwise. The aggregator can always spoil a round.
//!
//! Layers: `error → shamir → crypto → setup → message → fixed → client, server`.

mod client;
mod crypto;
mod error;
pub mod fixed;
mod message;
mod server;
mod setup;
mod shamir;

pub use client::Client;
pub use error::{Error, Result, SecretKind, Stage};
pub use fixed::{FixedPoint, Tally};
pub use message::{
    EncryptedShare, KeyAdvertisement, MaskedInput, PairKey, ShareBundle, ShareDelivery, Signature, SignedMasking,
    SurvivorList, SurvivorSignature, UnmaskRequest, UnmaskResponse, WrappedSeed,
};
pub use server::{Aggregate, Server};
pub use setup::{MIN_COHORT, Member, MemberSet, Params, Setup, WORD_BITS, default_degree, is_majority};

#[cfg(test)]
mod tests;
