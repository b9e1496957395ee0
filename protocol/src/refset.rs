//! The public reference set's canonical bytes, whose SHA-256 is its [`ReferenceSetId`].
//!
//! Layout (all little endian): magic `FDREFSET`, format version u32 = 1, samples u64,
//! features u64, then `samples × features` f32 values row-major. These bytes are also the
//! file format on disk, so the file's SHA-256 is the id, and a node can fetch the file in
//! chunks and check it with one hash.

use crate::error::{Error, Result};
use crate::ids::ReferenceSetId;

const MAGIC: &[u8; 8] = b"FDREFSET";
const HEADER_LEN: usize = 8 + 4 + 8 + 8;

/// Inputs of the public reference set (never its labels).
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceSet {
    /// Number of rows.
    pub samples: usize,
    /// Features per row.
    pub features: usize,
    /// Row-major values.
    pub values: Vec<f32>,
}

impl ReferenceSet {
    /// Wraps values after checking their shape and that they are finite.
    pub fn new(samples: usize, features: usize, values: Vec<f32>) -> Result<Self> {
        if samples == 0 || features == 0 || samples.checked_mul(features) != Some(values.len()) {
            return Err(Error::Shape(format!("{samples} × {features} with {} values", values.len())));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Values(format!("value {i} is not finite")));
        }
        Ok(Self { samples, features, values })
    }

    /// The canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 4 * self.values.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(self.samples as u64).to_le_bytes());
        out.extend_from_slice(&(self.features as u64).to_le_bytes());
        for v in &self.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses canonical bytes, refusing anything over `max_bytes`.
    pub fn from_bytes(bytes: &[u8], max_bytes: usize) -> Result<Self> {
        if bytes.len() > max_bytes {
            return Err(Error::TooLarge { len: bytes.len(), cap: max_bytes });
        }
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err(Error::Malformed("not a reference set (bad magic or short header)".into()));
        }
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != 1 {
            return Err(Error::Malformed(format!("reference set format version {version}")));
        }
        let (samples, features) = (u64_at(12), u64_at(20));
        let expected =
            samples.checked_mul(features).and_then(|n| n.checked_mul(4)).and_then(|n| n.checked_add(HEADER_LEN as u64));
        if expected != Some(bytes.len() as u64) {
            return Err(Error::Shape(format!(
                "header says {samples} × {features} but the file has {} bytes",
                bytes.len()
            )));
        }
        let values =
            bytes[HEADER_LEN..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Self::new(samples as usize, features as usize, values)
    }

    /// SHA-256 of the canonical bytes.
    pub fn id(&self) -> ReferenceSetId {
        ReferenceSetId::digest(&self.to_bytes())
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.features..(i + 1) * self.features]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips_and_id_is_hash_of_bytes(samples in 1usize..20, features in 1usize..10, seed: u32) {
            let values: Vec<f32> = (0..samples * features).map(|i| (i as u32 ^ seed) as f32 / 7.0).collect();
            let rs = ReferenceSet::new(samples, features, values).unwrap();
            let bytes = rs.to_bytes();
            prop_assert_eq!(ReferenceSet::from_bytes(&bytes, usize::MAX).unwrap(), rs.clone());
            prop_assert_eq!(rs.id(), ReferenceSetId::digest(&bytes));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ReferenceSet::from_bytes(&bytes, 1 << 20);
        }
    }

    #[test]
    fn truncation_bad_magic_and_nan_are_refused() {
        let rs = ReferenceSet::new(2, 2, vec![0.0, 1.0, 2.0, 3.0]).unwrap();
        let bytes = rs.to_bytes();
        assert!(matches!(ReferenceSet::from_bytes(&bytes[..bytes.len() - 1], usize::MAX), Err(Error::Shape(_))));
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(ReferenceSet::from_bytes(&bad, usize::MAX), Err(Error::Malformed(_))));
        assert!(matches!(ReferenceSet::from_bytes(&bytes, 10), Err(Error::TooLarge { .. })));
        assert!(ReferenceSet::new(1, 2, vec![f32::NAN, 0.0]).is_err());
    }
}
