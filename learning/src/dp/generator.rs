//! Where DP-SGD's sampling and noise come from: a ChaCha20 keystream under keys from the
//! operating system ([`OsStream`]), or a seeded generator for reproducible simulations.
//!
//! The stream is made a block at a time. Each block of [`BLOCK`] bytes gets a fresh 256-bit key
//! from the operating system (`getrandom`, through rand's `SysRng`) and is the ChaCha20
//! keystream under that key: ring's ChaCha20-Poly1305 (RFC 8439) seals a block of zeros with
//! that key and the all-zero nonce, and since the AEAD encrypts by XOR with ChaCha20's
//! keystream (block counter 1 onwards; block 0 keys Poly1305), the ciphertext is the keystream
//! itself; the tag is discarded. A key seals exactly one message, so nonces never repeat, and
//! the stream is as unpredictable as ChaCha20 under a secret key, the same construction the
//! kernel's own generator uses behind `getrandom`, minus a system call and a generic
//! (non-vector) ChaCha for every 8 bytes. Rekeying every block also means that the blocks are
//! independent (learning one key tells nothing of another block), and that a failure of the
//! operating system's generator is seen at the next block, not only at the start of a run.
//!
//! When the operating system gives no key, the failure is kept and [`Generator::check`], called
//! before a step's noised gradient is used, refuses the step. (The block is then the keystream
//! of the all-zero key, which is public, so that the draws of the step still end.)

use std::convert::Infallible;

use rand::rngs::{SysError, SysRng};
use rand::{Rng, RngExt, TryCryptoRng, TryRng};
use rand_distr::StandardNormal;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::Error;

/// Bytes of keystream per operating-system key.
pub(crate) const BLOCK: usize = 256 * 1024;

/// Where the 256-bit keys come from: the operating system, or a failing stand-in in tests.
type KeySource = Box<dyn FnMut(&mut [u8]) -> Result<(), SysError> + Send>;

/// The sampling and noise generator of one DP-SGD run.
pub(crate) enum Generator {
    /// A seeded simulation (xoshiro256++).
    Seeded(crate::data::Rng),
    /// ChaCha20 under keys from the operating system.
    Os(OsStream),
}

impl Generator {
    /// The operating system's stream; fails if the operating system gives no key for it.
    pub(crate) fn os() -> Result<Self, Error> {
        OsStream::new(Box::new(|key| SysRng.try_fill_bytes(key))).map(Generator::Os)
    }

    /// Fails if the operating system could not deliver a key since the last check.
    pub(crate) fn check(&mut self) -> Result<(), Error> {
        match self {
            Generator::Os(os) => os.failed.take().map_or(Ok(()), |e| Err(os_error(e))),
            Generator::Seeded(_) => Ok(()),
        }
    }

    /// `n` independent draws of N(0, std²), in the order a single generator would make them.
    pub(crate) fn normals(&mut self, n: usize, std: f32) -> Vec<f32> {
        // One match, then a loop the compiler sees through: no dispatch per draw.
        fn draw<R: Rng>(rng: &mut R, n: usize, std: f32) -> Vec<f32> {
            (0..n).map(|_| std * rng.sample::<f32, _>(StandardNormal)).collect()
        }
        match self {
            Generator::Seeded(r) => draw(r, n, std),
            Generator::Os(s) => draw(s, n, std),
        }
    }

    /// Poisson sampling: each of `rows` rows independently with probability `q`.
    pub(crate) fn sample(&mut self, rows: usize, q: f64) -> Vec<usize> {
        fn draw<R: Rng>(rng: &mut R, rows: usize, q: f64) -> Vec<usize> {
            (0..rows).filter(|_| rng.random::<f64>() < q).collect()
        }
        match self {
            Generator::Seeded(r) => draw(r, rows, q),
            Generator::Os(s) => draw(s, rows, q),
        }
    }
}

fn os_error(e: SysError) -> Error {
    Error::Config(format!("no randomness from the operating system for DP noise: {e}"))
}

impl TryRng for Generator {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(match self {
            Generator::Seeded(r) => r.next_u32(),
            Generator::Os(s) => s.next_u32(),
        })
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(match self {
            Generator::Seeded(r) => r.next_u64(),
            Generator::Os(s) => s.next_u64(),
        })
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        match self {
            Generator::Seeded(r) => r.fill_bytes(dst),
            Generator::Os(s) => s.fill_bytes(dst),
        }
        Ok(())
    }
}

/// ChaCha20's keystream, a fresh key from the operating system every [`BLOCK`] bytes (see the
/// module's documentation).
pub(crate) struct OsStream {
    block: Vec<u8>,
    used: usize,
    source: KeySource,
    failed: Option<SysError>,
}

impl OsStream {
    /// A stream whose keys come from `source`; fails if the first key cannot be drawn.
    fn new(source: KeySource) -> Result<Self, Error> {
        let mut stream = Self { block: vec![0; BLOCK], used: BLOCK, source, failed: None };
        stream.refill();
        match stream.failed.take() {
            Some(e) => Err(os_error(e)),
            None => Ok(stream),
        }
    }

    fn refill(&mut self) {
        self.block.fill(0);
        self.used = 0;
        let mut key = [0u8; 32];
        if let Err(e) = (self.source)(&mut key) {
            // The block is then the keystream of the public all-zero key: no secret, but draws
            // from it end (the ziggurat loops forever on a stream of zeros), and the step that
            // used it is refused.
            key.fill(0);
            self.failed = Some(e);
        }
        // Neither call can fail: the key has ChaCha20's length and a block is far below the
        // AEAD's 256 GiB limit. Were either to, the failure refuses the step as well.
        let sealed = UnboundKey::new(&CHACHA20_POLY1305, &key).map(LessSafeKey::new).and_then(|k| {
            k.seal_in_place_separate_tag(Nonce::assume_unique_for_key([0; 12]), Aad::empty(), &mut self.block)
        });
        key.fill(0);
        if sealed.is_err() {
            self.failed = Some(SysError::UNEXPECTED);
        }
    }

    /// The next `N` bytes of the stream.
    fn take<const N: usize>(&mut self) -> [u8; N] {
        if self.used + N > BLOCK {
            self.refill();
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.block[self.used..self.used + N]);
        self.used += N;
        out
    }
}

impl TryRng for OsStream {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(u32::from_le_bytes(self.take()))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(u64::from_le_bytes(self.take()))
    }

    fn try_fill_bytes(&mut self, mut dst: &mut [u8]) -> Result<(), Infallible> {
        while !dst.is_empty() {
            if self.used == BLOCK {
                self.refill();
            }
            let n = dst.len().min(BLOCK - self.used);
            let (head, rest) = dst.split_at_mut(n);
            head.copy_from_slice(&self.block[self.used..self.used + n]);
            self.used += n;
            dst = rest;
        }
        Ok(())
    }
}

impl TryCryptoRng for OsStream {}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A key source that works `good` times, then fails.
    fn failing_after(good: usize) -> KeySource {
        let calls = Arc::new(AtomicUsize::new(0));
        Box::new(move |key| {
            if calls.fetch_add(1, Ordering::SeqCst) < good {
                SysRng.try_fill_bytes(key)
            } else {
                Err(SysError::UNSUPPORTED)
            }
        })
    }

    #[test]
    fn a_block_is_the_chacha20_keystream_of_its_key() {
        // RFC 8439, appendix A.1, test vector 2: the all-zero key and nonce, block counter 1.
        let expected = "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed\
                        29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f";
        let mut s = OsStream::new(Box::new(|k| {
            k.fill(0);
            Ok(())
        }))
        .unwrap();
        let mut first = [0u8; 64];
        s.fill_bytes(&mut first);
        let hex: String = first.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn the_os_stream_is_not_zeros_and_differs_between_runs() {
        let (mut a, mut b) = (Generator::os().unwrap(), Generator::os().unwrap());
        // Across a block boundary, to see the rekeying at work.
        let n = BLOCK / 4 + 1000;
        let (x, y) = (a.normals(n, 1.0), b.normals(n, 1.0));
        assert!(x.iter().all(|v| v.is_finite()));
        assert_ne!(x, y);
        let zeros = x.iter().filter(|&&v| v == 0.0).count();
        assert!(zeros < 10, "{zeros} zeros");
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.02, "mean {mean}, variance {var}");
        // Blocks under different keys differ: the second block is not the first again.
        let mut s = OsStream::new(Box::new(|k| SysRng.try_fill_bytes(k))).unwrap();
        let (mut first, mut second) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
        s.fill_bytes(&mut first);
        s.fill_bytes(&mut second);
        assert_ne!(first, second);
        assert!(a.check().is_ok() && b.check().is_ok());
    }

    #[test]
    fn a_failing_operating_system_generator_is_reported_not_turned_into_zeros() {
        assert!(matches!(OsStream::new(failing_after(0)), Err(Error::Config(_))));
        let mut g = Generator::Os(OsStream::new(failing_after(1)).unwrap());
        let first = g.normals(1000, 1.0);
        assert!(g.check().is_ok(), "the first block had its key");
        assert!(first.iter().any(|&v| v != 0.0));
        // The next block's key fails: the draws made from it must not pass the check.
        let _ = g.normals(BLOCK / 4, 1.0);
        assert!(matches!(g.check(), Err(Error::Config(_))));
    }

    #[test]
    fn a_seeded_generator_draws_what_its_rng_draws() {
        // The seeded path is the plain ziggurat over xoshiro256++, bit for bit.
        let mut g = Generator::Seeded(crate::data::Rng::seed_from_u64(9));
        let mut r = crate::data::Rng::seed_from_u64(9);
        let expected: Vec<f32> = (0..100).map(|_| 0.5 * r.sample::<f32, _>(StandardNormal)).collect();
        assert_eq!(g.normals(100, 0.5), expected);
        let idx = g.sample(50, 0.3);
        let expected: Vec<usize> = (0..50).filter(|_| r.random::<f64>() < 0.3).collect();
        assert_eq!(idx, expected);
    }
}
