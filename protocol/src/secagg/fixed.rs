//! Soft labels as fixed-point words for a masked sum, and the checks on the sum.
//!
//! **Layout.** A member's vector has `classes + 1` words a sample: `[a, a·q₁, …, a·q_C]`, where
//! `a` is 1 if the member answers the sample and 0 if it abstains, and `q_c` is its probability
//! `p_c` times the scale S, rounded so that `Σ_c q_c = S` exactly (largest remainder: each `q_c`
//! is `⌊p_c S⌋` or `⌈p_c S⌉`, so the error is below 1/S). The sum over the survivors gives, for
//! each sample, its count (word 0) and the class totals; the consensus is `total_c / (count · S)`.
//!
//! **Checks on the sum** ([`FixedPoint::tally`]). Masks hide each vector, so nothing checks a
//! member's row; a member can still shift the sum. What the sum must satisfy: each sample's count
//! is at most the number of survivors, its class totals add up to exactly `count · S` (every
//! honest row adds exactly S), and each total is at most `count · S`. A sum that fails is refused
//! whole: a wrong share or a misbehaving member gives a sum that looks random, which fails these
//! checks all but certainly.
//!
//! **Choosing S and b.** Words are summed modulo 2ᵇ (b a whole number of bytes, at most 32), so
//! the largest total, `members · S`, must stay below 2ᵇ: [`FixedPoint::bits_for`] picks the
//! smallest b. Two choices worth naming: S = 255 ([`FixedPoint::COARSE`], the precision of the
//! `q8` wire encoding, error < 1/255) with b = 16 for up to 257 members, 2 bytes a word; and
//! S = 2¹⁶ ([`FixedPoint::FINE`], error < 1.6·10⁻⁵) with b = 32 for up to 65,535 members, 4 bytes
//! a word. A masked word is uniform over all 2ᵇ values, so its bytes do not compress.

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::setup::WORD_BITS;
use crate::payload::ROW_SUM_TOLERANCE;

/// A fixed-point scale for probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedPoint {
    scale: u32,
}

/// A checked sum: each sample's count and class totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    scale: u32,
    classes: usize,
    counts: Vec<u32>,
    totals: Vec<u32>,
}

impl FixedPoint {
    /// S = 255: the precision of the `q8` wire encoding.
    pub const COARSE: Self = Self { scale: 255 };
    /// S = 2¹⁶.
    pub const FINE: Self = Self { scale: 1 << 16 };

    /// A scale of `scale` (at least 1).
    pub fn new(scale: u32) -> Result<Self> {
        if scale == 0 {
            return Err(Error::setup("a fixed-point scale of 0"));
        }
        Ok(Self { scale })
    }

    /// S.
    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// Words a member's vector takes for `samples` samples of `classes` classes.
    pub fn words(samples: usize, classes: usize) -> usize {
        samples * (classes + 1)
    }

    /// The smallest word width b (in [`WORD_BITS`]) that holds a sum over `members` members.
    pub fn bits_for(&self, members: usize) -> Result<u32> {
        let largest = members as u64 * u64::from(self.scale);
        WORD_BITS
            .into_iter()
            .find(|&b| largest < 1u64 << b)
            .ok_or_else(|| Error::setup(format!("{members} members at scale {} overflow 32-bit words", self.scale)))
    }

    /// Encodes `probs` (`samples × classes`, row-major; each row finite, non-negative and summing
    /// to 1 ± [`ROW_SUM_TOLERANCE`]) with the samples marked `true` in `abstained` (one a sample)
    /// left out.
    pub fn encode(&self, probs: &[f32], classes: usize, abstained: &[bool]) -> Result<Vec<u32>> {
        let samples = abstained.len();
        if classes == 0 || probs.len() != samples * classes {
            return Err(Error::Input(format!(
                "{} probabilities for {samples} samples of {classes} classes",
                probs.len()
            )));
        }
        let mut out = Vec::with_capacity(Self::words(samples, classes));
        let mut fractions = Vec::with_capacity(classes);
        for (sample, (row, &skip)) in probs.chunks_exact(classes).zip(abstained).enumerate() {
            if skip {
                out.extend(std::iter::repeat_n(0, classes + 1));
                continue;
            }
            let sum: f64 = row.iter().map(|&p| f64::from(p)).sum();
            if row.iter().any(|p| !p.is_finite() || *p < 0.0) || (sum - 1.0).abs() > f64::from(ROW_SUM_TOLERANCE) {
                return Err(Error::Input(format!("sample {sample}: not a probability row")));
            }
            out.push(1);
            let start = out.len();
            fractions.clear();
            let mut assigned = 0u64;
            for (c, &p) in row.iter().enumerate() {
                let x = f64::from(p) / sum * f64::from(self.scale);
                let q = x.floor();
                assigned += q as u64;
                out.push(q as u32);
                fractions.push((x - q, c));
            }
            // Largest remainders first, the lower class on a tie: one more unit each until the row
            // adds up to S.
            fractions.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let missing = (u64::from(self.scale) - assigned.min(u64::from(self.scale))) as usize;
            for &(_, c) in fractions.iter().take(missing) {
                out[start + c] += 1;
            }
        }
        Ok(out)
    }

    /// Checks a sum over `members` members (see the module's doc) and splits it into counts and
    /// totals.
    pub fn tally(&self, sum: &[u32], classes: usize, members: usize) -> Result<Tally> {
        if classes == 0 || !sum.len().is_multiple_of(classes + 1) {
            return Err(Error::Input(format!("a sum of {} words is not samples of {classes} classes", sum.len())));
        }
        let samples = sum.len() / (classes + 1);
        let mut counts = Vec::with_capacity(samples);
        let mut totals = Vec::with_capacity(samples * classes);
        for (sample, words) in sum.chunks_exact(classes + 1).enumerate() {
            let count = words[0];
            let out_of_range = |detail: String| Error::OutOfRange { sample, detail };
            if count as usize > members {
                return Err(out_of_range(format!("count {count} of {members} members")));
            }
            let expected = u64::from(count) * u64::from(self.scale);
            let row = &words[1..];
            if let Some((c, &t)) = row.iter().enumerate().find(|&(_, &t)| u64::from(t) > expected) {
                return Err(out_of_range(format!("class {c} totals {t}, above count × scale = {expected}")));
            }
            let total: u64 = row.iter().map(|&t| u64::from(t)).sum();
            if total != expected {
                return Err(out_of_range(format!("classes total {total}, not count × scale = {expected}")));
            }
            counts.push(count);
            totals.extend_from_slice(row);
        }
        Ok(Tally { scale: self.scale, classes, counts, totals })
    }
}

impl Tally {
    /// Samples.
    pub fn samples(&self) -> usize {
        self.counts.len()
    }

    /// Members that answered each sample.
    pub fn counts(&self) -> &[u32] {
        &self.counts
    }

    /// Sample `s`'s class totals, in units of 1/S.
    pub fn totals(&self, s: usize) -> &[u32] {
        &self.totals[s * self.classes..(s + 1) * self.classes]
    }

    /// Sample `s`'s mean over the members that answered it; `None` if none did.
    pub fn mean(&self, s: usize) -> Option<Vec<f32>> {
        let denominator = f64::from(self.counts[s]) * f64::from(self.scale);
        (self.counts[s] > 0).then(|| self.totals(s).iter().map(|&t| (f64::from(t) / denominator) as f32).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rows(samples: usize, classes: usize) -> impl Strategy<Value = Vec<f32>> {
        proptest::collection::vec(proptest::collection::vec(0.0f32..1.0, classes), samples).prop_map(|rows| {
            rows.into_iter()
                .flat_map(|mut r| {
                    let (s, len) = (r.iter().sum::<f32>() + 1e-6, r.len() as f32);
                    r.iter_mut().for_each(|p| *p = (*p + 1e-6 / len) / s);
                    r
                })
                .collect()
        })
    }

    fn members() -> impl Strategy<Value = (usize, Vec<Vec<f32>>, FixedPoint)> {
        (1usize..12).prop_flat_map(|classes| {
            (
                Just(classes),
                proptest::collection::vec(rows(7, classes), 1..20),
                prop_oneof![Just(FixedPoint::COARSE), Just(FixedPoint::FINE)],
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn each_row_adds_up_to_the_scale_within_one_unit_a_class_and_the_sum_checks((classes, vectors, fp) in members()) {
            let samples = 7;
            let scale = f64::from(fp.scale());
            let mut sum = vec![0u32; FixedPoint::words(samples, classes)];
            let mut exact = vec![0f64; samples * classes];
            let mut counts = vec![0u32; samples];
            for (m, probs) in vectors.iter().enumerate() {
                let abstained: Vec<bool> = (0..samples).map(|s| (s + m) % 3 == 0).collect();
                let words = fp.encode(probs, classes, &abstained).unwrap();
                for (s, row) in words.chunks_exact(classes + 1).enumerate() {
                    prop_assert_eq!(row[0], u32::from(!abstained[s]));
                    prop_assert_eq!(row[1..].iter().sum::<u32>(), row[0] * fp.scale());
                    for c in 0..classes {
                        let p = f64::from(probs[s * classes + c]) * f64::from(row[0]);
                        prop_assert!((f64::from(row[1 + c]) - p * scale).abs() <= 1.0 + 1e-5 * scale);
                        exact[s * classes + c] += p;
                    }
                    counts[s] += row[0];
                }
                sum.iter_mut().zip(&words).for_each(|(a, w)| *a += w);
            }
            let tally = fp.tally(&sum, classes, vectors.len()).unwrap();
            prop_assert_eq!(tally.counts(), &counts[..]);
            for s in 0..samples {
                match tally.mean(s) {
                    None => prop_assert_eq!(counts[s], 0),
                    Some(mean) => for c in 0..classes {
                        let want = exact[s * classes + c] / f64::from(counts[s]);
                        prop_assert!((f64::from(mean[c]) - want).abs() <= 1.0 / scale + 1e-5);
                    },
                }
            }
        }
    }

    #[test]
    fn sums_that_no_honest_members_could_give_are_refused() {
        let fp = FixedPoint::COARSE;
        let honest = fp.encode(&[0.25, 0.75, 1.0, 0.0], 2, &[false, false]).unwrap();
        assert_eq!(honest, vec![1, 64, 191, 1, 255, 0]);
        assert!(fp.tally(&honest, 2, 1).is_ok());
        // A count above the survivors, a total off by one, a class above count × S.
        assert!(matches!(fp.tally(&honest, 2, 0), Err(Error::OutOfRange { sample: 0, .. })));
        assert!(matches!(fp.tally(&[1, 64, 190, 1, 255, 0], 2, 1), Err(Error::OutOfRange { sample: 0, .. })));
        assert!(matches!(fp.tally(&[1, 64, 191, 1, 256, u32::MAX], 2, 1), Err(Error::OutOfRange { sample: 1, .. })));
        assert!(matches!(fp.tally(&honest[..5], 2, 1), Err(Error::Input(_))));
        // Rows that are not probabilities, and shapes that do not match.
        assert!(matches!(fp.encode(&[0.5, 0.4], 2, &[false]), Err(Error::Input(_))));
        assert!(matches!(fp.encode(&[f32::NAN, 1.0], 2, &[false]), Err(Error::Input(_))));
        assert!(matches!(fp.encode(&[0.5, 0.5], 2, &[false, false]), Err(Error::Input(_))));
        assert_eq!(fp.encode(&[f32::NAN, 1.0], 2, &[true]).unwrap(), vec![0, 0, 0]);
    }

    #[test]
    fn the_word_width_is_the_smallest_that_holds_every_members_total() {
        assert_eq!(FixedPoint::COARSE.bits_for(1).unwrap(), 8);
        assert_eq!(FixedPoint::COARSE.bits_for(2).unwrap(), 16);
        assert_eq!(FixedPoint::COARSE.bits_for(257).unwrap(), 16);
        assert_eq!(FixedPoint::COARSE.bits_for(258).unwrap(), 24);
        assert_eq!(FixedPoint::FINE.bits_for(255).unwrap(), 24);
        assert_eq!(FixedPoint::FINE.bits_for(65_535).unwrap(), 32);
        assert!(FixedPoint::FINE.bits_for(65_536).is_err());
        assert!(FixedPoint::new(0).is_err());
    }
}
