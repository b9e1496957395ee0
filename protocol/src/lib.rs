//! The wire contract of the federated-distillation system, and nothing else.
//!
//! Pure Rust with no async runtime, network or tensor library: node, aggregator and tests all
//! speak through these types.
//!
//! Layers (a module uses only modules to its left): `bounded → hex → seed → error → wire → ids →
//! mask → refset → payload → secagg → message → codec → envelope`.
//!
//! - [`error`]: why a message was refused ([`Error`]) and the reason code sent back
//!   ([`RefusalReason`]).
//! - [`wire`]: the protocol version, the message kinds and the hard size caps.
//! - [`ids`]: federation id, round, participant identity (an Ed25519 key, convertible to and
//!   from a libp2p `PeerId`), reference-set id (SHA-256 of the set's canonical bytes).
//! - [`mask`]: the bitset a node abstains with, over a round's announced samples.
//! - [`payload`]: soft-label matrices in f32, f16, 8-bit or 4-bit quantised form or as top-k
//!   rows (bit-packed), with error bounds, and the [`Limits`] a receiver accepts.
//! - [`message`]: the messages of a round and their structural validation, and the digest of
//!   what an announcement asks, which binds a submission to it ([`AnnouncementDigest`]).
//! - [`codec`]: the only module that calls bincode; every decode is size-capped (each message
//!   kind at its own size, see [`Limits::body_cap`]) and rejects trailing bytes; byte strings,
//!   texts and lists are never allocated at a length the input only claims.
//! - [`envelope`]: Ed25519-signed envelopes over a domain-separated digest.
//! - [`refset`]: the reference set's canonical byte layout (also its file format).
//! - [`hex`], [`seed`]: lower-case hex, and the project's one derivation of seeded streams.
//!
//! Sending a message: build a [`Message`], [`SignedEnvelope::seal`] it with your [`Identity`],
//! [`SignedEnvelope::to_bytes`]. Receiving: [`SignedEnvelope::from_bytes`], then
//! [`SignedEnvelope::open`] with the peer id the transport authenticated; a
//! [`Error`] says why a message was refused and [`Error::refusal_reason`]
//! gives the code to send back.
#![deny(missing_docs)]

mod bounded;
pub mod codec;
pub mod envelope;
pub mod error;
pub mod hex;
pub mod ids;
pub mod mask;
pub mod message;
pub mod payload;
pub mod refset;
pub mod secagg;
pub mod seed;
pub mod wire;

pub use envelope::SignedEnvelope;
pub use error::{Error, RefusalReason, Result};
pub use ids::{FederationId, Identity, ParticipantId, ReferenceSetHasher, ReferenceSetId, Round};
pub use mask::Mask;
pub use message::{
    AnnouncementDigest, Consensus, Finished, Hello, JoinAccepted, JoinReply, Message, Receipt, ReceiptStatus,
    RefSetChunk, RefSetRequest, RoundAnnouncement, SampleSelection, Submission,
};
pub use payload::{Encoding, Limits, SoftLabels};
pub use refset::ReferenceSet;
pub use wire::{MessageKind, PROTOCOL_VERSION};
