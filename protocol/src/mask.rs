//! Abstention masks: which of a round's announced samples a node abstains on.
//!
//! A [`Mask`] is a bitset over the announced samples in announcement order, least significant
//! bit first: bit `i % 8` of byte `i / 8` is set when the node abstains on sample `i`. It is
//! exactly `⌈samples / 8⌉` bytes long and the bits past the last sample are 0, so each set of
//! abstentions has one encoding. Its bytes are deserialized through [`crate::bounded`]: a length
//! prefix is never allocated before its bytes are there.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A bitset over the announced samples; a set bit is an abstention.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Mask {
    #[serde(with = "crate::bounded::bytes")]
    bits: Vec<u8>,
}

/// Bytes a mask over `samples` samples takes.
pub fn mask_bytes(samples: usize) -> usize {
    samples.div_ceil(8)
}

impl Mask {
    /// The mask with a set bit for every `true`.
    pub fn from_bools(abstained: &[bool]) -> Self {
        let mut bits = vec![0u8; mask_bytes(abstained.len())];
        for (i, _) in abstained.iter().enumerate().filter(|(_, a)| **a) {
            bits[i / 8] |= 1 << (i % 8);
        }
        Self { bits }
    }

    /// A mask from its raw bytes (not checked: see [`Mask::check`]).
    pub fn from_bytes(bits: Vec<u8>) -> Self {
        Self { bits }
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Checks that the mask covers exactly `samples` samples: `⌈samples / 8⌉` bytes, and no bit
    /// set past the last sample.
    pub fn check(&self, samples: usize) -> Result<()> {
        if self.bits.len() != mask_bytes(samples) {
            return Err(Error::Shape(format!(
                "abstention mask of {} bytes for {samples} samples, expected {}",
                self.bits.len(),
                mask_bytes(samples)
            )));
        }
        let used = samples % 8;
        if used != 0 && self.bits.last().is_some_and(|&b| b >> used != 0) {
            return Err(Error::Values(format!("abstention mask has bits set past its {samples} samples")));
        }
        Ok(())
    }

    /// One `bool` a sample (`true`: abstained), after [`Mask::check`].
    pub fn to_bools(&self, samples: usize) -> Result<Vec<bool>> {
        self.check(samples)?;
        Ok((0..samples).map(|i| self.bits[i / 8] >> (i % 8) & 1 == 1).collect())
    }

    /// Number of abstentions.
    pub fn count(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn masks_round_trip_through_bytes_and_the_codec(abstained in proptest::collection::vec(any::<bool>(), 0..200)) {
            let m = Mask::from_bools(&abstained);
            prop_assert_eq!(m.as_bytes().len(), mask_bytes(abstained.len()));
            prop_assert_eq!(m.count(), abstained.iter().filter(|a| **a).count());
            prop_assert_eq!(&m.to_bools(abstained.len()).unwrap(), &abstained);
            let wire = crate::codec::to_bytes(&m).unwrap();
            let back: Mask = crate::codec::from_bytes(&wire, 1 << 16).unwrap();
            prop_assert_eq!(back, m);
        }

        #[test]
        fn a_mask_of_another_length_or_with_stray_bits_is_refused(
            abstained in proptest::collection::vec(any::<bool>(), 1..200),
            other in 0usize..300,
            stray in 1u8..=255,
        ) {
            let m = Mask::from_bools(&abstained);
            let n = abstained.len();
            if mask_bytes(other) != mask_bytes(n) {
                prop_assert!(matches!(m.check(other), Err(Error::Shape(_))));
            }
            // Any bit past the last sample is refused.
            if n % 8 != 0 {
                let mut bytes = m.as_bytes().to_vec();
                let last = bytes.len() - 1;
                let high = stray << (n % 8);
                if high != 0 {
                    bytes[last] |= high;
                    prop_assert!(matches!(Mask::from_bytes(bytes).check(n), Err(Error::Values(_))));
                }
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64), samples in 0usize..600) {
            if let Ok(m) = crate::codec::from_bytes::<Mask>(&data, 1 << 10) {
                let _ = m.to_bools(samples);
            }
        }
    }

    #[test]
    fn a_length_prefix_that_claims_more_than_the_input_is_refused_without_allocating_it() {
        // Varint 251 prefix claiming u32::MAX bytes, followed by 3 bytes.
        let mut wire = vec![252u8];
        wire.extend_from_slice(&u32::MAX.to_le_bytes());
        wire.extend_from_slice(&[1, 2, 3]);
        assert!(crate::codec::from_bytes::<Mask>(&wire, 1 << 10).is_err());
        assert_eq!(
            Mask::from_bools(&[true, false, false, false, false, false, false, false, true]).as_bytes(),
            &[1, 1]
        );
    }
}
