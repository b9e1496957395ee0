//! [`Error`]: what stops a node or one of its steps, and [`Error::config`], the one way to name a
//! config field at fault.

use std::path::PathBuf;

use protocol::{MessageKind, RefusalReason};

/// Errors that stop a node, or one of its steps.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration field is wrong.
    #[error("config field `{field}`: {detail}")]
    Config {
        /// Field name (a dotted key of the config file).
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Training, inference or a model file failed.
    #[error(transparent)]
    Learning(#[from] learning::Error),
    /// The network failed.
    #[error(transparent)]
    Net(#[from] net::Error),
    /// The aggregator refused a request of this node.
    #[error("{what} refused: {reason:?} {detail}")]
    Refused {
        /// What was refused.
        what: &'static str,
        /// Reason code.
        reason: RefusalReason,
        /// The aggregator's detail.
        detail: String,
    },
    /// The aggregator answered with the wrong kind of message.
    #[error("unexpected answer to {request}: {got:?}")]
    Unexpected {
        /// What was asked.
        request: &'static str,
        /// What came back.
        got: MessageKind,
    },
    /// The private data's rows do not have as many features as the public reference set's.
    #[error(
        "the private data has {data} features a row, the federation's reference set {reference}: give the data the same columns, in the same order, as the reference set (and the same label column), or check `data.label`"
    )]
    FeatureCount {
        /// Features a row of the private data.
        data: usize,
        /// Features a row of the reference set.
        reference: usize,
    },
    /// The reference set could not be obtained.
    #[error("reference set: {detail}")]
    Reference {
        /// What is wrong.
        detail: String,
    },
    /// The privacy budget cannot pay for another training.
    #[error(transparent)]
    BudgetSpent(Exhausted),
    /// The privacy ledger is missing, corrupt or unusable.
    #[error("privacy ledger {path}: {detail}")]
    Ledger {
        /// The ledger file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The trainer thread has stopped.
    #[error(transparent)]
    Stopped(#[from] net::owner::Stopped),
    /// A blocking task failed.
    #[error("background task")]
    Task(#[from] tokio::task::JoinError),
}

impl Error {
    /// A config field at fault (a dotted key of `node.toml`) and what is wrong with it.
    pub fn config(field: impl Into<String>, detail: impl ToString) -> Self {
        Error::Config { field: field.into(), detail: detail.to_string() }
    }
}

impl From<net::cli::TomlError> for Error {
    fn from(e: net::cli::TomlError) -> Self {
        Error::Config { field: e.field, detail: e.detail }
    }
}

/// Why a training may not run.
#[derive(Debug, thiserror::Error)]
#[error("privacy budget: ε = {spent:.3} of {epsilon} spent; one more training would reach ε = {after:.3}")]
pub struct Exhausted {
    /// Spent so far.
    pub spent: f64,
    /// The budget.
    pub epsilon: f64,
    /// What one more training would make it.
    pub after: f64,
}
