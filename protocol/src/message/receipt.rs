//! Receipts (accepted, or refused with a [`RefusalReason`]) and the word that a federation is over.

use serde::{Deserialize, Serialize};

use crate::error::RefusalReason;
use crate::ids::{FederationId, Round};

/// Longest free-text detail in a receipt or rejection.
pub const MAX_DETAIL_LEN: usize = 256;
/// `text` cut to at most [`MAX_DETAIL_LEN`] bytes at a character boundary, for the `detail` of a
/// receipt or reply (cutting inside a multi-byte character would panic or make invalid UTF-8).
pub fn short_detail(text: &str) -> String {
    if text.len() <= MAX_DETAIL_LEN {
        return text.to_owned();
    }
    let mut end = MAX_DETAIL_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Whether a submission was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptStatus {
    /// Accepted into the round.
    Accepted,
    /// Refused for this reason.
    Refused(RefusalReason),
}

/// Answer to a [`Submission`] (or to any message that had to be refused).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Federation.
    pub federation: FederationId,
    /// Round the answered message named (0 if it could not be read).
    pub round: Round,
    /// Accepted or refused.
    pub status: ReceiptStatus,
    /// Human-readable detail.
    #[serde(deserialize_with = "crate::bounded::text")]
    pub detail: String,
}

/// The aggregator's word that the federation is over: no further rounds will be announced.
/// A node answers with a [`Receipt`], checkpoints its model and stops.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    /// Federation.
    pub federation: FederationId,
    /// Last completed round.
    pub rounds: Round,
    /// Human-readable detail.
    #[serde(deserialize_with = "crate::bounded::text")]
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn short_detail_cuts_at_a_char_boundary_and_keeps_a_prefix(text in "\\PC{0,400}") {
            let cut = short_detail(&text);
            prop_assert!(cut.len() <= MAX_DETAIL_LEN);
            prop_assert!(text.starts_with(&cut));
            prop_assert!(cut.len() + 4 > MAX_DETAIL_LEN.min(text.len()), "cut no more than one character short");
        }
    }
}
