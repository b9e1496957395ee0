//! What a round announcement asks of a node, reduced to a digest that a submission carries.
//!
//! [`RoundAnnouncement::digest`] is `SHA-256("fedistil/announcement/v1\0" ‖ federation length
//! u64 LE ‖ federation ‖ round u64 LE ‖ reference set (32 bytes) ‖ reference samples u32 LE ‖
//! selection ‖ classes u32 LE ‖ temperature (f32 bits, LE) ‖ encoding u8)`, where the selection
//! is `0 ‖ count u64 LE ‖ each index u32 LE` for explicit indices and `1 ‖ seed u64 LE ‖ count
//! u32 LE` for a seeded draw; a secure round appends `"secure" ‖ cohort length u64 LE ‖ each
//! member (32 bytes) ‖ threshold u64 LE ‖ degree + 1 u64 LE (0: default) ‖ bits u32 LE ‖ graph
//! seed u64 LE ‖ scale u32 LE`. It covers every field an answer depends on and leaves out the
//! deadline, which only schedules the round: an aggregator that resumes a round after a restart
//! announces the same question with a new deadline, and a node that already answered it can tell
//! that it is the same question.
//!
//! A [`crate::Submission`] names the digest of the announcement it answers, inside the signed
//! body, so an answer cannot be counted towards another announcement of the same round (one
//! whose seed, temperature or encoding changed when the round was resumed).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{RoundAnnouncement, SampleSelection};

const DOMAIN: &[u8] = b"fedistil/announcement/v1\0";

/// SHA-256 of what a [`RoundAnnouncement`] asks (see the module documentation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AnnouncementDigest(pub [u8; 32]);

impl AnnouncementDigest {
    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        crate::hex::encode(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        crate::hex::decode::<32>(s.trim()).map(Self)
    }
}

impl fmt::Debug for AnnouncementDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AnnouncementDigest({})", self.to_hex())
    }
}

impl fmt::Display for AnnouncementDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl RoundAnnouncement {
    /// The digest of everything this announcement asks, deadline excepted.
    pub fn digest(&self) -> AnnouncementDigest {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(DOMAIN);
        let federation = self.federation.as_str().as_bytes();
        ctx.update(&(federation.len() as u64).to_le_bytes());
        ctx.update(federation);
        ctx.update(&self.round.to_le_bytes());
        ctx.update(&self.reference_set.0);
        ctx.update(&self.reference_samples.to_le_bytes());
        match &self.selection {
            SampleSelection::Indices(v) => {
                ctx.update(&[0]);
                ctx.update(&(v.len() as u64).to_le_bytes());
                for i in v {
                    ctx.update(&i.to_le_bytes());
                }
            }
            SampleSelection::Seeded { seed, count } => {
                ctx.update(&[1]);
                ctx.update(&seed.to_le_bytes());
                ctx.update(&count.to_le_bytes());
            }
        }
        ctx.update(&self.classes.to_le_bytes());
        ctx.update(&self.temperature.to_bits().to_le_bytes());
        ctx.update(&[self.encoding.index()]);
        if let Some(secure) = &self.secure {
            ctx.update(b"secure");
            secure.digest_into(&mut ctx);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        AnnouncementDigest(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{FederationId, ReferenceSetId};
    use crate::payload::Encoding;
    use proptest::prelude::*;

    fn base() -> RoundAnnouncement {
        RoundAnnouncement {
            federation: FederationId::new("f").unwrap(),
            round: 3,
            reference_set: ReferenceSetId([7; 32]),
            reference_samples: 100,
            selection: SampleSelection::Seeded { seed: 9, count: 20 },
            classes: 10,
            temperature: 2.0,
            deadline_unix_ms: 1_000,
            encoding: Encoding::Q8,
            secure: None,
        }
    }

    /// Every change to a field the answer depends on, one at a time.
    fn changes() -> Vec<(&'static str, RoundAnnouncement)> {
        let b = base();
        vec![
            ("federation", RoundAnnouncement { federation: FederationId::new("g").unwrap(), ..b.clone() }),
            ("round", RoundAnnouncement { round: 4, ..b.clone() }),
            ("reference_set", RoundAnnouncement { reference_set: ReferenceSetId([8; 32]), ..b.clone() }),
            ("reference_samples", RoundAnnouncement { reference_samples: 101, ..b.clone() }),
            (
                "selection seed",
                RoundAnnouncement { selection: SampleSelection::Seeded { seed: 10, count: 20 }, ..b.clone() },
            ),
            (
                "selection count",
                RoundAnnouncement { selection: SampleSelection::Seeded { seed: 9, count: 21 }, ..b.clone() },
            ),
            ("selection kind", RoundAnnouncement { selection: SampleSelection::Indices(vec![9, 20]), ..b.clone() }),
            ("classes", RoundAnnouncement { classes: 11, ..b.clone() }),
            ("temperature", RoundAnnouncement { temperature: 2.000_001, ..b.clone() }),
            ("encoding", RoundAnnouncement { encoding: Encoding::F16, ..b.clone() }),
        ]
    }

    #[test]
    fn the_digest_ignores_the_deadline_and_changes_with_every_other_field() {
        let b = base();
        assert_eq!(RoundAnnouncement { deadline_unix_ms: 99_999, ..b.clone() }.digest(), b.digest());
        let mut seen = vec![b.digest()];
        for (field, changed) in changes() {
            let d = changed.digest();
            assert!(!seen.contains(&d), "changing {field} must change the digest");
            seen.push(d);
        }
        assert_eq!(AnnouncementDigest::from_hex(&b.digest().to_hex()), Some(b.digest()));
    }

    proptest! {
        /// Explicit index lists are length-prefixed: no two different lists share a digest
        /// because one is a prefix of the other or their bytes run together.
        #[test]
        fn different_index_lists_have_different_digests(a in proptest::collection::vec(0u32..50, 0..8), b in proptest::collection::vec(0u32..50, 0..8)) {
            let with = |v: Vec<u32>| RoundAnnouncement { selection: SampleSelection::Indices(v), ..base() }.digest();
            prop_assert_eq!(a == b, with(a.clone()) == with(b.clone()));
        }
    }
}
