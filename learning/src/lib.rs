//! Everything learning, shared by node, aggregator and scenarios: synchronous and independent of
//! the backend (burn's `flex` or `ndarray` CPU backends, chosen at run time).
//!
//! - [`data`]: IDX and CSV loaders, declared preprocessing, seeded splits and partitions.
//! - [`arch`]: the MLP and CNN architectures behind one [`arch::Layers`].
//! - [`model`]: [`Model`], layers with their shapes; inference, soft labels, save/load.
//! - [`export`]: safetensors and ONNX export of a [`Model`].
//! - [`fs`]: atomic file writes and config-relative paths.
//! - [`train`]: supervised training, the distillation loss and distillation runs.
//! - [`joint`]: private cross-entropy and distillation towards a teacher in the same steps.
//! - [`consensus`]: pure functions that combine soft labels from many nodes.
//! - [`eval`]: accuracy, calibration, agreement, size and latency.
//! - [`privacy`]: the RDP accountant of DP-SGD (ε of a history of steps, noise for a target ε).
//!
//! Nothing here spawns threads or touches the network: callers on an async runtime run it in
//! `spawn_blocking` or on a dedicated thread.
#![deny(missing_docs)]

use std::path::PathBuf;

pub mod arch;
pub mod consensus;
pub mod data;
pub mod eval;
pub mod export;
pub mod model;
pub mod fs;
pub mod joint;
pub mod privacy;
pub mod train;

pub use arch::{Architecture, BackendKind};
pub use model::Model;

/// Errors of training, inference and persistence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid configuration value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Inputs or targets of the wrong shape or with non-finite values.
    #[error("wrong shape or values: {0}")]
    Shape(String),
    /// Training produced a non-finite loss.
    #[error("training diverged: {0}")]
    Diverged(String),
    /// Saving or loading weights failed.
    #[error("model store: {0}")]
    Store(String),
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Data loading error.
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// Privacy accounting error: an invalid setting or an unreachable target.
    #[error(transparent)]
    Privacy(#[from] privacy::PrivacyError),
}
