//! [`Refusal`]: why the node refuses a request of the aggregator, as its receipt will say.

use protocol::RefusalReason;

/// Why a request from the aggregator is refused: the reason code for the receipt and a detail.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{reason:?}: {detail}")]
pub struct Refusal {
    /// Reason code sent back.
    pub reason: RefusalReason,
    /// Detail for the receipt and the log.
    pub detail: String,
}

impl Refusal {
    /// A refusal for `reason`, explained by `detail`.
    pub fn new(reason: RefusalReason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}
