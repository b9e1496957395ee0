//! The public reference set's canonical bytes, whose SHA-256 is its [`ReferenceSetId`].
//!
//! Layout (all little endian): magic `FDREFSET`, format version u32 = 1, samples u64,
//! features u64, then `samples × features` f32 values row-major. These bytes are also the
//! file format on disk, so the file's SHA-256 is the id, and a node can fetch the file in
//! chunks and check it with one hash.
//!
//! The values are held either as a vector of their own or, with [`ReferenceSet::from_shared`],
//! as a view of the canonical bytes themselves (for example a memory-mapped file): node
//! processes on one machine that map the same file then share its pages instead of each
//! holding a decoded copy.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ids::ReferenceSetId;

const MAGIC: &[u8; 8] = b"FDREFSET";
const HEADER_LEN: usize = 8 + 4 + 8 + 8;

/// Canonical bytes held elsewhere (a memory map, a buffer), shared read-only.
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// The reference set's values, row-major: a vector of their own, or a view of shared canonical
/// bytes (see the module's documentation). Reads as a `[f32]`.
#[derive(Clone)]
pub struct Values(Storage);

#[derive(Clone)]
enum Storage {
    Owned(Vec<f32>),
    /// Canonical bytes whose values section is 4-byte aligned, on a little-endian machine.
    Shared(SharedBytes),
}

impl Values {
    /// Whether the values are a view of shared bytes rather than a copy of their own.
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Storage::Shared(_))
    }
}

impl std::ops::Deref for Values {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &self.0 {
            Storage::Owned(v) => v,
            // Checked when built (`as_values`): aligned, little endian, whole values.
            Storage::Shared(b) => as_values(b.as_ref().as_ref()).unwrap_or(&[]),
        }
    }
}

impl From<Vec<f32>> for Values {
    fn from(v: Vec<f32>) -> Self {
        Values(Storage::Owned(v))
    }
}

impl PartialEq for Values {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_shared() { "shared" } else { "owned" };
        write!(f, "Values({kind}, {} values)", self.len())
    }
}

/// The values section of canonical bytes as `f32`s, without a copy: only on a little-endian
/// machine and where the section is 4-byte aligned (a memory map's is: pages are aligned and
/// the header is 28 bytes).
fn as_values(bytes: &[u8]) -> Option<&[f32]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    bytemuck::try_cast_slice(bytes.get(HEADER_LEN..)?).ok()
}

/// Inputs of the public reference set (never its labels).
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceSet {
    /// Number of rows.
    pub samples: usize,
    /// Features per row.
    pub features: usize,
    /// Row-major values.
    pub values: Values,
}

impl ReferenceSet {
    /// Wraps values after checking their shape and that they are finite.
    pub fn new(samples: usize, features: usize, values: Vec<f32>) -> Result<Self> {
        check(samples, features, &values)?;
        Ok(Self { samples, features, values: values.into() })
    }

    /// The canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 4 * self.values.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(self.samples as u64).to_le_bytes());
        out.extend_from_slice(&(self.features as u64).to_le_bytes());
        for v in self.values.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses canonical bytes, refusing anything over `max_bytes`.
    pub fn from_bytes(bytes: &[u8], max_bytes: usize) -> Result<Self> {
        let (samples, features) = header(bytes, max_bytes)?;
        let values =
            bytes[HEADER_LEN..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Self::new(samples, features, values)
    }

    /// Parses canonical bytes held elsewhere (a memory-mapped file, say) and keeps them: the
    /// values are read in place, not copied, so every holder of the same pages shares them.
    /// Where they cannot be read in place (a big-endian machine, a misaligned buffer) they are
    /// copied, as [`ReferenceSet::from_bytes`] does. Refuses anything over `max_bytes`, and
    /// checks the shape and that every value is finite either way.
    pub fn from_shared(bytes: SharedBytes, max_bytes: usize) -> Result<Self> {
        let b: &[u8] = (*bytes).as_ref();
        let (samples, features) = header(b, max_bytes)?;
        match as_values(b) {
            Some(values) => {
                check(samples, features, values)?;
                Ok(Self { samples, features, values: Values(Storage::Shared(bytes)) })
            }
            None => Self::from_bytes(b, max_bytes),
        }
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

/// Checks the header of canonical bytes and that their length fits it; returns (samples,
/// features).
fn header(bytes: &[u8], max_bytes: usize) -> Result<(usize, usize)> {
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
        return Err(Error::Shape(format!("header says {samples} × {features} but the file has {} bytes", bytes.len())));
    }
    Ok((samples as usize, features as usize))
}

/// Checks values' shape and that they are finite.
fn check(samples: usize, features: usize, values: &[f32]) -> Result<()> {
    if samples == 0 || features == 0 || samples.checked_mul(features) != Some(values.len()) {
        return Err(Error::Shape(format!("{samples} × {features} with {} values", values.len())));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::Values(format!("value {i} is not finite")));
    }
    Ok(())
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
            prop_assert_eq!(ReferenceSet::from_shared(Arc::new(bytes.clone()), usize::MAX).unwrap(), rs.clone());
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

    /// Canonical bytes in a buffer whose values section is 4-byte aligned (a memory map's is).
    struct Aligned(Vec<u32>, usize);

    impl AsRef<[u8]> for Aligned {
        fn as_ref(&self) -> &[u8] {
            &bytemuck::cast_slice(&self.0)[..self.1]
        }
    }

    fn aligned(bytes: &[u8]) -> SharedBytes {
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Arc::new(Aligned(words, bytes.len()))
    }

    #[test]
    fn shared_bytes_are_read_in_place_and_checked_like_a_copy() {
        let rs = ReferenceSet::new(3, 2, vec![0.5, -1.0, 2.0, 3.25, 4.0, 5.0]).unwrap();
        let bytes = rs.to_bytes();
        let shared = ReferenceSet::from_shared(aligned(&bytes), usize::MAX).unwrap();
        assert_eq!(shared, rs);
        assert_eq!(shared.row(1), &[2.0, 3.25]);
        assert!(shared.values.is_shared() || cfg!(target_endian = "big"), "aligned bytes were copied");
        assert_eq!(shared.id(), rs.id());
        // Misaligned: copied, the same values.
        let mut off = vec![0u8];
        off.extend_from_slice(&bytes);
        struct Skip(Vec<u8>);
        impl AsRef<[u8]> for Skip {
            fn as_ref(&self) -> &[u8] {
                &self.0[1..]
            }
        }
        let copied = ReferenceSet::from_shared(Arc::new(Skip(off)), usize::MAX).unwrap();
        assert_eq!(copied, rs);
        // The same checks as a copy's: size cap, truncation, a value that is not finite.
        assert!(matches!(ReferenceSet::from_shared(aligned(&bytes), 10), Err(Error::TooLarge { .. })));
        assert!(matches!(
            ReferenceSet::from_shared(aligned(&bytes[..bytes.len() - 4]), usize::MAX),
            Err(Error::Shape(_))
        ));
        let mut nan = bytes.clone();
        nan[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(ReferenceSet::from_shared(aligned(&nan), usize::MAX), Err(Error::Values(_))));
    }
}
