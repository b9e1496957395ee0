//! The crate's one error type: what can go wrong loading data, training, running inference,
//! combining soft labels, saving and exporting.

use std::path::{Path, PathBuf};

use crate::privacy;

/// Errors of loading data, training, inference, consensus, persistence and export.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range or missing.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Inputs, targets or data of the wrong shape, or with non-finite values.
    #[error("wrong shape or values: {0}")]
    Shape(String),
    /// The data has labels outside the class range its configuration declares (`classes`).
    #[error("labels go up to {max_label}, outside the {classes} classes declared (0 to {last}): relabel the data as 0 to {last}, or ask the operator whether the federation should have more classes", last = classes.saturating_sub(1))]
    Classes {
        /// Largest label found.
        max_label: u32,
        /// Classes declared.
        classes: usize,
    },
    /// Training produced a non-finite loss.
    #[error("training diverged: {0}")]
    Diverged(String),
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Privacy accounting error: an invalid setting or an unreachable target.
    #[error(transparent)]
    Privacy(#[from] privacy::PrivacyError),
    /// A gzip-compressed data file could not be decompressed.
    #[error("{path}: corrupt gzip")]
    Gzip {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A data file is not in the expected format.
    #[error("{path}: {detail}")]
    Format {
        /// File.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A cell of a CSV file, or a line of a row-index file, could not be used.
    #[error("{path}:{line}: column {column}: {detail}")]
    Csv {
        /// File.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        detail: String,
    },
    /// A split or partition of the data cannot satisfy its constraints.
    #[error("cannot split the data: {0}")]
    Split(String),
    /// Soft labels could not be combined.
    #[error("consensus: {detail}")]
    Consensus {
        /// What is wrong.
        detail: String,
    },
    /// Reading a tensor back from the backend failed.
    #[error("reading a tensor from the backend")]
    TensorRead {
        /// Cause.
        #[source]
        source: burn::tensor::TensorReadError,
    },
    /// Weights could not be encoded to or decoded from burnpack.
    #[error("burnpack weights{}", in_file(.path.as_deref()))]
    Weights {
        /// The weights file, when there is one.
        path: Option<PathBuf>,
        /// Cause.
        #[source]
        source: burn::store::RecordError,
    },
    /// A model spec (the JSON file beside the weights) could not be encoded or decoded.
    #[error("{path}: model spec")]
    Spec {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// burn could not write the weights as safetensors.
    #[error("safetensors export")]
    Safetensors {
        /// Cause.
        #[source]
        source: burn::store::SafetensorsStoreError,
    },
    /// The safetensors bytes burn wrote have a header we cannot read.
    #[error("safetensors header: {detail}")]
    SafetensorsHeader {
        /// What is wrong.
        detail: &'static str,
        /// Cause, when the header is not JSON.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// burn-onnx could not export the model.
    #[error("onnx export of {model}")]
    Onnx {
        /// Architecture label of the model.
        model: String,
        /// Cause.
        #[source]
        source: burn_onnx::export::ExportError,
    },
}

fn in_file(path: Option<&Path>) -> String {
    path.map_or_else(String::new, |p| format!(" in {}", p.display()))
}
