//! A node's part in a secure round ([`protocol::secagg`]): it never sends its soft labels in
//! the clear, only masked so that the aggregator can remove the masks from the cohort's sum
//! alone.
//!
//! [`Member`] is the node's side of one secure round, without I/O: made when the announcement
//! arrives (fresh pair keys, fresh secrets), it answers the aggregator's steps
//! ([`Member::step`]) and masks the node's answer once it holds both the answer
//! ([`Member::set_answer`]) and its neighbours' shares. A step asked again (the aggregator
//! retried) gets the same answer. A member's secrets live in memory only: a node that restarts
//! mid-round has dropped out of it, which the protocol tolerates.

use protocol::message::{Reply, Step};
use protocol::secagg::{self, FixedPoint, KeyAdvertisement, MaskedInput, ShareBundle, ShareDelivery};
use protocol::{AnnouncementDigest, Identity, Limits, RefusalReason, RoundAnnouncement, Submission};

use crate::refusal::Refusal;

/// The node's side of one secure round.
pub(crate) struct Member {
    digest: AnnouncementDigest,
    round: u64,
    deadline_unix_ms: u64,
    client: secagg::Client,
    fixed: FixedPoint,
    classes: usize,
    advertisement: KeyAdvertisement,
    bundle: Option<ShareBundle>,
    delivery: Option<ShareDelivery>,
    input: Option<Vec<u32>>,
    masked: Option<MaskedInput>,
}

fn refusal(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(RefusalReason::InvalidValues, format!("secure aggregation: {e}"))
}

impl Member {
    /// Joins the secure round `ann` announces, as `identity`; refused if `ann` is not secure,
    /// this node is not in its cohort, or its threshold is below `min_threshold` or not more
    /// than half of this node's neighbours.
    pub(crate) fn new(ann: &RoundAnnouncement, identity: &Identity, min_threshold: usize) -> Result<Self, Refusal> {
        let secure = ann.secure.as_ref().ok_or_else(|| refusal("the round is not secure"))?;
        if !secure.cohort.contains(&identity.id()) {
            return Err(Refusal::new(RefusalReason::Policy, "this node is not in the round's cohort"));
        }
        let setup = secure.setup(ann).map_err(refusal)?;
        let (t, k) = (setup.threshold(), setup.degree());
        if t < min_threshold || !secagg::is_majority(t, k) {
            return Err(Refusal::new(
                RefusalReason::Policy,
                format!(
                    "secure aggregation with threshold {t} among {k} neighbours: this node needs at least {min_threshold} (policy.min_secure_threshold) and more than half of its neighbours"
                ),
            ));
        }
        let fixed = secure.fixed().map_err(refusal)?;
        // The setup's session is the announcement's digest.
        let digest = AnnouncementDigest(*setup.session());
        let (client, advertisement) = secagg::Client::start(setup, identity).map_err(refusal)?;
        Ok(Self {
            digest,
            round: ann.round,
            deadline_unix_ms: ann.deadline_unix_ms,
            client,
            fixed,
            classes: ann.classes as usize,
            advertisement,
            bundle: None,
            delivery: None,
            input: None,
            masked: None,
        })
    }

    /// The digest of the announcement this member answers.
    pub(crate) fn digest(&self) -> AnnouncementDigest {
        self.digest
    }

    /// The round.
    pub(crate) fn round(&self) -> u64 {
        self.round
    }

    /// The round's deadline (Unix milliseconds), until which the masked answer is resent.
    pub(crate) fn deadline_unix_ms(&self) -> u64 {
        self.deadline_unix_ms
    }

    /// The threshold, this member's neighbours, and the cohort's size: what the node's operator
    /// is told about how its answer was protected.
    pub(crate) fn protection(&self) -> (usize, usize, usize) {
        let setup = self.client.setup();
        (setup.threshold(), setup.neighbours(self.client.member()).len(), setup.cohort().len())
    }

    /// Answers a step of the aggregator: `Some` reply, or `None` (a receipt) for the delivery
    /// of the shares.
    pub(crate) fn step(&mut self, step: Step, identity: &Identity) -> Result<Option<Reply>, Refusal> {
        Ok(match step {
            Step::Keys => Some(Reply::Keys(self.advertisement.clone())),
            Step::Neighbours(keys) => {
                if self.bundle.is_none() {
                    self.bundle = Some(self.client.share(&keys).map_err(refusal)?);
                }
                self.bundle.clone().map(Reply::Shares)
            }
            Step::Shares(delivery) => {
                if self.delivery.is_none() {
                    self.delivery = Some(delivery);
                }
                None
            }
            Step::Survivors(list) => {
                Some(Reply::Signature(self.client.sign_survivors(&list, identity).map_err(refusal)?))
            }
            Step::Unmask(request) => Some(Reply::Unmask(self.client.unmask(&request).map_err(refusal)?)),
        })
    }

    /// Takes the node's answer (its submission as recorded, soft labels and abstentions) as
    /// fixed-point words.
    pub(crate) fn set_answer(&mut self, sub: &Submission) -> Result<(), Refusal> {
        if self.input.is_some() {
            return Ok(());
        }
        let probs = sub.labels.decode(&Limits::default()).map_err(refusal)?;
        let samples = probs.len() / self.classes.max(1);
        let abstained = match &sub.abstained {
            Some(m) => m.to_bools(samples).map_err(refusal)?,
            None => vec![false; samples],
        };
        self.input = Some(self.fixed.encode(&probs, self.classes, &abstained).map_err(refusal)?);
        Ok(())
    }

    /// The masked answer, once the member holds both its answer and its shares (the same one if
    /// asked again); `None` before.
    pub(crate) fn masked(&mut self, identity: &Identity) -> Result<Option<MaskedInput>, Refusal> {
        if self.masked.is_none()
            && let (Some(delivery), Some(input)) = (&self.delivery, &self.input)
        {
            self.masked = Some(self.client.mask(delivery, input, identity).map_err(refusal)?);
        }
        Ok(self.masked.clone())
    }
}

#[cfg(test)]
mod tests {
    use protocol::message::SecureRound;
    use protocol::secagg::Params;
    use protocol::{Encoding, FederationId, ReferenceSetId, SampleSelection};

    use super::*;

    /// A secure round of `n` members, the first of which is `me`, at threshold `t` (the complete
    /// graph below 8 members: each member has n − 1 neighbours).
    fn announcement(me: &Identity, n: usize, t: usize) -> RoundAnnouncement {
        let mut cohort: Vec<_> = (1..n).map(|i| Identity::from_seed([i as u8 + 40; 32]).unwrap().id()).collect();
        cohort.push(me.id());
        cohort.sort_unstable();
        RoundAnnouncement {
            federation: FederationId::new("t").unwrap(),
            round: 1,
            reference_set: ReferenceSetId([1; 32]),
            reference_samples: 10,
            selection: SampleSelection::Seeded { seed: 1, count: 4 },
            classes: 3,
            temperature: 2.0,
            deadline_unix_ms: 0,
            encoding: Encoding::Q8,
            secure: Some(SecureRound {
                cohort,
                params: Params { threshold: t, degree: None, bits: 16 },
                graph_seed: 3,
                scale: 255,
            }),
        }
    }

    #[test]
    fn a_threshold_below_the_nodes_floor_or_half_its_neighbours_is_refused() {
        let me = Identity::from_seed([9; 32]).unwrap();
        // Six members: five neighbours each; T = 3 is a majority of them, T = 2 is not.
        assert!(Member::new(&announcement(&me, 6, 3), &me, 2).is_ok());
        let low = Member::new(&announcement(&me, 6, 2), &me, 2).err().expect("T = 2 of 5 neighbours refused");
        assert_eq!(low.reason, RefusalReason::Policy);
        // The node's own floor, above what the round asks.
        assert!(Member::new(&announcement(&me, 6, 3), &me, 4).is_err());
        assert!(Member::new(&announcement(&me, 6, 4), &me, 4).is_ok());
        // Three members: two neighbours each, and T = 2 is a majority.
        assert!(Member::new(&announcement(&me, 3, 2), &me, 2).is_ok());
    }
}
