//! Everything learning, shared by node, aggregator and scenarios: synchronous and independent of
//! the backend (burn's `flex` or `ndarray` CPU backends, chosen at run time).
//!
//! Layers (a module uses only modules to its left): `privacy → error → fs → config → backend →
//! tensor → data → arch → model → loss → step → dp → joint → train → abstain/consensus/eval/export →
//! compress`.
//!
//! - [`privacy`]: the RDP accountant of DP-SGD (ε of a history of steps, noise for a target ε).
//! - [`error`]: the crate's one error type, [`Error`].
//! - [`fs`]: the workspace's one atomic write (temporary file, fsync, rename, fsync of the
//!   folder), private state folders and config-relative paths.
//! - [`config`]: the settings of training and distillation runs ([`config::TrainConfig`],
//!   [`config::DistillConfig`]), as written in configuration files.
//! - [`backend`]: which CPU backend runs the tensors, and the one lock on its process-wide
//!   random generator.
//! - `tensor`: rows of plain slices as batch tensors and back, and [`train::argmax`].
//! - [`data`]: a module of its own, one file a concept: IDX and CSV loaders, the [`data::DataSpec`]
//!   of config files, row-index files, declared preprocessing, seeded splits and partitions.
//! - [`arch`]: the MLP and CNN architectures behind one [`arch::Layers`].
//! - [`model`]: [`Model`], layers with their shapes: inference, soft labels, save/load, and its
//!   parameters as plain vectors (what weight averaging outside this crate needs).
//! - [`loss`]: the distillation loss and per-row cross-entropy.
//! - `step`: what every training loop shares: its inputs ([`train::DistillSet`]) and report
//!   ([`train::TrainReport`]), one descent step, the mean loss of an epoch.
//! - [`dp`]: DP-SGD: Poisson sampling, per-row gradient clipping (norms from layer inputs and
//!   output gradients), Gaussian noise.
//! - [`joint`]: training on private rows: cross-entropy and distillation towards a teacher in the
//!   same steps, optionally under DP-SGD.
//! - [`train`]: supervised training and distillation runs (and the settings, re-exported).
//! - [`abstain`]: where a node abstains (Selective-FD): a confidence score and its threshold.
//! - [`consensus`]: pure functions that combine soft labels from many nodes.
//! - [`eval`]: accuracy, calibration, agreement, size and latency.
//! - [`export`]: safetensors and ONNX export of a [`Model`].
//! - [`compress`]: the global model distilled into smaller students for the edge (logit KD,
//!   FitNets, attention transfer, CRD, born-again, multi-teacher), int8 weights, and the
//!   analysis of each model (accuracy, size, latency, memory, energy).
//!
//! Every seeded choice derives its generator from the caller's seed with
//! [`protocol::seed::derive`], the project's one formula. Federated weight averaging is not
//! here: it is a baseline of the scenario runner.
//!
//! Nothing here spawns threads or touches the network: callers on an async runtime run it in
//! `spawn_blocking` or on a dedicated thread.
#![deny(missing_docs)]

pub mod abstain;
pub mod arch;
pub mod backend;
pub mod compress;
pub mod config;
pub mod consensus;
pub mod data;
pub mod dp;
pub mod error;
pub mod eval;
pub mod export;
pub mod fs;
pub mod joint;
pub mod loss;
pub mod model;
pub mod privacy;
mod step;
mod tensor;
pub mod train;

pub use arch::Architecture;
pub use backend::BackendKind;
pub use error::Error;
pub use model::Model;
