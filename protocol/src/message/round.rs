//! A round's question, a node's answer and the consensus: what a round exchanges.

use serde::{Deserialize, Serialize};

use super::{AnnouncementDigest, RefusalReason, SampleSelection, SecureRound};
use crate::error::{Error, Result};
use crate::ids::{FederationId, ReferenceSetId, Round};
use crate::mask::Mask;
use crate::payload::{Encoding, SoftLabels};

/// The aggregator opens a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundAnnouncement {
    /// Federation.
    pub federation: FederationId,
    /// Round being opened.
    pub round: Round,
    /// Reference set the samples index into.
    pub reference_set: ReferenceSetId,
    /// Number of rows of the reference set.
    pub reference_samples: u32,
    /// Which reference samples to label this round.
    pub selection: SampleSelection,
    /// Number of classes.
    pub classes: u32,
    /// Softmax temperature for the soft labels.
    pub temperature: f32,
    /// Submissions after this time (Unix milliseconds) may be refused as late.
    pub deadline_unix_ms: u64,
    /// Payload encoding expected.
    pub encoding: Encoding,
    /// With secure aggregation: the round's cohort and parameters. The node then never sends
    /// its soft labels in the clear; it masks them ([`super::SecureReply`]).
    pub secure: Option<SecureRound>,
}

/// A node's soft labels for a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// Federation.
    pub federation: FederationId,
    /// Round answered.
    pub round: Round,
    /// Digest of the announcement answered ([`RoundAnnouncement::digest`]).
    pub announcement: AnnouncementDigest,
    /// Reference set used.
    pub reference_set: ReferenceSetId,
    /// Temperature used.
    pub temperature: f32,
    /// Number of private samples the node trained on, sent only when the aggregator asked for it
    /// ([`JoinAccepted::sample_count_wanted`]) and the node's policy allows it; never 0.
    pub local_samples: Option<u64>,
    /// softmax(z / T) on the announced samples, in announcement order.
    pub labels: SoftLabels,
    /// The samples the node abstains on (its model is out of its depth there), if any: their
    /// rows in `labels` are sent but take no part in the consensus. `None`: no abstention.
    pub abstained: Option<Mask>,
}

/// The consensus of a round, sent back to the nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Consensus {
    /// Federation.
    pub federation: FederationId,
    /// Round it belongs to.
    pub round: Round,
    /// Reference set the samples index into.
    pub reference_set: ReferenceSetId,
    /// Samples, as announced.
    pub selection: SampleSelection,
    /// Temperature of the soft labels.
    pub temperature: f32,
    /// Consensus probabilities for the selected samples.
    pub labels: SoftLabels,
    /// Per-sample weight, quantised: `w / 255` in [0, 1]; 0 masks a sample. Empty (with
    /// `counts` empty too): every sample has weight 1 and every participant's contribution, the
    /// compact form of [`Consensus::compact`].
    #[serde(with = "crate::bounded::bytes")]
    pub weights: Vec<u8>,
    /// Number of submissions that made it.
    pub participants: u32,
    /// Per sample, how many of the `participants` did not abstain on it (0: nobody knew it, and
    /// its weight is 0). Empty with `weights`: every sample has all `participants`.
    #[serde(deserialize_with = "crate::bounded::list")]
    pub counts: Vec<u16>,
}

impl Consensus {
    /// Quantises per-sample weights in [0, 1] (values outside are clamped).
    pub fn quantise_weights(weights: &[f32]) -> Vec<u8> {
        weights.iter().map(|w| (w.clamp(0.0, 1.0) * 255.0).round() as u8).collect()
    }

    /// The per-sample weights in [0, 1], one a sample.
    pub fn weights(&self) -> Vec<f32> {
        if self.is_compact() {
            return vec![1.0; self.labels.samples as usize];
        }
        self.weights.iter().map(|&w| w as f32 / 255.0).collect()
    }

    /// How many participants contributed to sample `i` (`None` beyond the samples).
    pub fn count(&self, i: usize) -> Option<u16> {
        if self.is_compact() {
            return (i < self.labels.samples as usize).then(|| self.participants.min(u16::MAX as u32) as u16);
        }
        self.counts.get(i).copied()
    }

    /// Whether the weights and counts are left out: every sample weighs 1 and has every
    /// participant.
    pub fn is_compact(&self) -> bool {
        self.weights.is_empty() && self.counts.is_empty()
    }

    /// Leaves out the weights and counts when every sample weighs 1 and has every participant
    /// (lossless: [`Consensus::weights`] and [`Consensus::count`] give the same answers);
    /// otherwise returns the consensus unchanged. Saves two bytes a sample and more.
    pub fn compact(mut self) -> Self {
        let full = self.participants.min(u16::MAX as u32) as u16;
        if self.participants > 0 && self.weights.iter().all(|&w| w == 255) && self.counts.iter().all(|&c| c == full) {
            self.weights.clear();
            self.counts.clear();
        }
        self
    }

    /// Checks the per-sample counts: one a sample, none above `participants`, and a sample
    /// nobody contributed to masked (weight 0); or the compact form, with participants.
    pub fn check_counts(&self) -> Result<()> {
        if self.is_compact() {
            if self.participants == 0 {
                return Err(Error::Values("a compact consensus without participants".into()));
            }
            return Ok(());
        }
        if self.counts.len() != self.labels.samples as usize {
            return Err(Error::Shape(format!("{} counts for {} samples", self.counts.len(), self.labels.samples)));
        }
        if let Some((i, c)) = self.counts.iter().enumerate().find(|(_, c)| **c as u32 > self.participants) {
            return Err(Error::Values(format!("sample {i}: {c} contributors but {} participants", self.participants)));
        }
        if let Some(i) =
            (0..self.counts.len()).find(|&i| self.counts[i] == 0 && self.weights.get(i).is_some_and(|w| *w != 0))
        {
            return Err(Error::Values(format!("sample {i} has no contributor but weight {}", self.weights[i])));
        }
        Ok(())
    }
}

impl Submission {
    /// Checks this submission against the round it answers; the error carries the reason code.
    pub fn check_against(&self, ann: &RoundAnnouncement) -> Result<()> {
        let refuse = |reason, detail: String| Err(Error::Refused { reason, detail });
        if self.federation != ann.federation {
            return refuse(
                RefusalReason::WrongFederation,
                format!("federation {} is not {}", self.federation, ann.federation),
            );
        }
        if self.round != ann.round {
            return refuse(RefusalReason::WrongRound, format!("round {} but round {} is open", self.round, ann.round));
        }
        if self.announcement != ann.digest() {
            return refuse(
                RefusalReason::WrongAnnouncement,
                format!("answers announcement {} of round {}, not the open one", self.announcement, self.round),
            );
        }
        if self.local_samples == Some(0) {
            return refuse(RefusalReason::InvalidValues, "local_samples is 0".into());
        }
        if self.reference_set != ann.reference_set {
            return refuse(
                RefusalReason::WrongReferenceSet,
                format!("reference set {} is not {}", self.reference_set, ann.reference_set),
            );
        }
        if self.labels.samples as usize != ann.selection.len() || self.labels.classes != ann.classes {
            return refuse(
                RefusalReason::WrongShape,
                format!(
                    "{} × {} but {} × {} was announced",
                    self.labels.samples,
                    self.labels.classes,
                    ann.selection.len(),
                    ann.classes
                ),
            );
        }
        if self.labels.encoding != ann.encoding {
            return refuse(
                RefusalReason::WrongShape,
                format!("encoding {:?} but {:?} was announced", self.labels.encoding, ann.encoding),
            );
        }
        if (self.temperature - ann.temperature).abs() > 1e-6 * ann.temperature.max(1.0) {
            return refuse(
                RefusalReason::WrongShape,
                format!("temperature {} but {} was announced", self.temperature, ann.temperature),
            );
        }
        if let Some(mask) = &self.abstained {
            mask.check(ann.selection.len())
                .map_err(|e| Error::Refused { reason: e.refusal_reason(), detail: e.to_string() })?;
        }
        Ok(())
    }
}
