//! [`Error`]: what stops the aggregator or one of its commands, and [`Error::config`], the one
//! way to name a config field at fault.

use std::path::PathBuf;

/// Errors that stop the aggregator.
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
    /// A checkpoint in the output folder cannot be used.
    #[error("checkpoint {path}: {detail}")]
    Checkpoint {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A round closed with nothing to combine.
    #[error("round {round}: {detail}")]
    Round {
        /// Round.
        round: u64,
        /// What is wrong.
        detail: String,
    },
    /// A roster edit was refused.
    #[error(transparent)]
    Roster(#[from] RosterError),
    /// Training, inference, consensus or a model file failed.
    #[error(transparent)]
    Learning(#[from] learning::Error),
    /// A message could not be built.
    #[error(transparent)]
    Protocol(#[from] protocol::Error),
    /// Network failure.
    #[error(transparent)]
    Net(#[from] net::Error),
    /// The student's thread has stopped.
    #[error(transparent)]
    Stopped(#[from] net::owner::Stopped),
    /// A blocking task failed.
    #[error("background task")]
    Task(#[from] tokio::task::JoinError),
}

impl Error {
    /// A config field at fault (a dotted key of `federation.toml`) and what is wrong with it.
    pub fn config(field: impl Into<String>, detail: impl ToString) -> Self {
        Error::Config { field: field.into(), detail: detail.to_string() }
    }
}

impl From<net::cli::TomlError> for Error {
    fn from(e: net::cli::TomlError) -> Self {
        Error::Config { field: e.field, detail: e.detail }
    }
}

/// Why a roster edit was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RosterError {
    /// The file is not TOML, or its `roster` is not a list of `[[roster]]` tables.
    #[error("{0}")]
    Parse(String),
    /// The PeerId does not parse.
    #[error(transparent)]
    PeerId(#[from] net::keys::KeyError),
    /// The name is empty or has characters other than letters, digits, `-`, `_` and `.`.
    #[error("`{0}` is not a node name: use letters, digits, `-`, `_` or `.`")]
    Name(String),
    /// The name is on the roster already.
    #[error("a node named `{0}` is on the roster already; remove it first to replace its PeerId")]
    DuplicateName(String),
    /// The PeerId is on the roster already.
    #[error("this PeerId is on the roster already, as `{0}`")]
    DuplicatePeer(String),
    /// No node of that name is on the roster.
    #[error("no node named `{0}` on the roster")]
    Unknown(String),
    /// A declared sample count of 0.
    #[error("a node with 0 samples cannot be weighed; leave --samples out if the count is unknown")]
    ZeroSamples,
    /// Another roster edit holds the file's lock.
    #[error("another roster edit of this file is under way (it holds {}); try again once it is done", .0.display())]
    Busy(std::path::PathBuf),
}
