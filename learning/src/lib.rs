//! Everything learning, shared by node, aggregator and scenarios: synchronous and independent of
//! the backend (burn's `flex` or `ndarray` CPU backends, chosen at run time).
//!
//! - [`data`]: IDX and CSV loaders, declared preprocessing, seeded splits and partitions.
//! - [`model`]: the MLP and CNN architectures behind one [`model::Model`].
//! - [`network`]: a model with its shapes; inference, soft labels, atomic save/load, export.
//! - [`train`]: supervised training, the distillation loss and distillation runs.
//! - [`consensus`]: pure functions that combine soft labels from many nodes.
//! - [`eval`]: accuracy, calibration, agreement, size and latency.
//! - [`privacy`]: the RDP accountant of DP-SGD (ε of a history of steps, noise for a target ε).
//!
//! Nothing here spawns threads or touches the network: callers on an async runtime run it in
//! `spawn_blocking` or on a dedicated thread.
#![deny(missing_docs)]

use std::path::PathBuf;

pub mod consensus;
pub mod data;
pub mod eval;
pub mod model;
pub mod network;
pub mod privacy;
pub mod train;

pub use model::{Architecture, BackendKind};
pub use network::Network;

/// Errors of training, inference and persistence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LearningError {
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
