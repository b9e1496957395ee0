//! A federated-distillation node: trains a local model on private data and, each round, sends
//! only soft labels on the announced public reference samples to the aggregator.
//!
//! [`run()`] is the whole node: load the config's key, data and model (or its checkpoint) off the
//! runtime, hand the model to its [`trainer::Trainer`] thread, start the network ([`net`]), then
//! converse with the aggregator (`session`) until the federation is finished or `shutdown`
//! fires, and stop in order: network, metrics, the trainer's thread. A round's work is the plain function [`local::local_round`]. What the node agrees to
//! answer is its [`policy`], checked for every announcement; the answers it gave are recorded in
//! `state_dir/answers.json` before they leave, and every message sent is recorded in
//! `state_dir/egress.jsonl` before it leaves (with its bytes, in `state_dir/egress/`, if the
//! config's `[ledger] keep_bytes` says so). The state folder is private (0700, files 0600).
//!
//! Modules: [`error`], [`refusal`] (why a request is refused), [`budget`] (the privacy budget),
//! [`policy`] (the query policy and the record of answers), [`config`] (`node.toml`), [`local`]
//! (per-round learning, no I/O), [`trainer`] (the model's owner thread), `reference` (the pinned
//! public set), `submit` (resending until acknowledged), `session` (join, answer, submit),
//! `run` (the whole node), [`faults`] (hooks for simulations; the production binary is always
//! honest), [`metrics`] (Prometheus series, served at `http://ADDR/metrics` when the config names a
//! `metrics` address), [`reachability`] (AutoNAT's verdict on this node, in
//! `state_dir/reachability.json` and a metric), [`status`] (the operator's live view, served
//! beside the metrics when `http.status` asks for it), [`init`] (`fd-node init`: the data check and a
//! new `node.toml`).
//!
//! Layers: error → refusal → faults/metrics/reachability/secure/submit → policy → budget → config → local/reference/init → trainer → status → session → run.
#![deny(missing_docs)]

pub mod budget;
pub mod config;
pub mod error;
pub mod faults;
pub mod init;
pub mod local;
pub mod metrics;
pub mod policy;
pub mod reachability;
mod reference;
pub mod refusal;
mod run;
mod secure;
mod session;
pub mod status;
mod submit;
pub mod trainer;

pub use config::NodeConfig;
pub use error::Error;
pub use faults::{Faults, Honest};
pub use run::{export, privacy_repin, privacy_status, run, run_with};
pub use session::NodeSummary;
