//! The runtime glue shared by node and aggregator: libp2p, the egress ledger, key files, the
//! owner-thread pattern and the binaries' common set-up.
//!
//! [`spawn`] builds a Swarm (TCP + QUIC, Noise, Yamux, identify, ping, request-response with a
//! [`codec::FrameCodec`] that caps each message kind at its own size, an allow-list that refuses
//! every peer not on it at the connection level, and connection limits: one connection per peer,
//! a handful of streams per connection, a bounded number of handshakes in flight; the circuit
//! relay client, the optional relay service, DCUtR and AutoNAT in [`nat`]) and starts the
//! [`event_loop`] task, the only one that owns the Swarm. It
//! returns a clonable [`Client`] (commands, each with a `oneshot` reply), a bounded stream of
//! [`Event`]s, and a [`Handle`] for the shutdown. The loop holds no `Client` of its own: it
//! ends when the last `Client` is dropped, or when [`Handle::shutdown`] is called, in this fixed
//! order: stop taking inbound requests → drain the responses and requests in flight (bounded by
//! [`NetConfig::drain_timeout`]) → close every connection gracefully → the task returns.
//!
//! Every frame is a protocol [`protocol::SignedEnvelope`]. Inbound requests are verified off
//! the swarm task, in a bounded number of tasks (signer = authenticated peer, signature, size
//! caps, structure); refused ones are answered with a signed receipt carrying the reason code and
//! reported as [`Event::Refused`]. Requests of kinds given a [`rate::RateLimit`] beyond their
//! peer's budget are refused before verification. Verified requests reach the owner with
//! backpressure, never dropped because a channel is full; so do disconnections. Every message
//! sent is signed and recorded in the optional egress [`ledger::Ledger`] (on disk, with the bytes
//! themselves if asked) before it leaves. Identify tells peers neither our listen addresses nor
//! our version.
//!
//! Modules: [`error`], [`ids`] (a participant's two names), [`interfaces`] (the addresses a
//! listener on every interface is reached at), [`clock`] (Unix milliseconds),
//! [`codec`], [`rate`], [`keys`], [`ledger`], [`owner`] (state owned by a dedicated thread),
//! [`cli`] (what the binaries set up alike), [`punch`] (hole punching, opt-in and guarded),
//! [`nat`] (relay, hole punching, reachability),
//! [`http`] (the HTTP endpoint: `GET /metrics` and an owner's live view, bounded and guarded),
//! [`metrics`] (traffic counters), [`config`], [`client`] (the
//! handle and responder), [`event`], [`event_loop`] (the Swarm's owner).
//!
//! Layers: error → ids/clock/interfaces → codec/rate/keys/ledger/owner/pending/per_peer/cli/http/punch → denied/nat → metrics → config → client → event → event_loop.
#![deny(missing_docs)]

pub mod cli;
pub mod client;
pub mod clock;
pub mod codec;
pub mod config;
mod denied;
pub mod error;
pub mod event;
pub mod event_loop;
pub mod http;
pub mod ids;
pub mod interfaces;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod nat;
pub mod owner;
mod pending;
mod per_peer;
pub mod punch;
pub mod rate;

pub use client::{Client, Responder};
pub use config::NetConfig;
pub use error::{Error, RequestFailure};
pub use event::Event;
pub use event_loop::{Handle, spawn};
pub use ids::{participant, peer_id};
pub use libp2p::multiaddr;
pub use rate::RateLimit;
