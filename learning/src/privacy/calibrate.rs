//! Calibration: the smallest noise multiplier that keeps ε within a target, by bisection.
//!
//! ε decreases as the noise multiplier grows (each order's RDP does, and ε is their minimum
//! after a fixed shift), so the target is bracketed by doubling from 1 and then bisected.

use super::{Accountant, PrivacyError, Segment, Spent, check_delta};

/// The largest noise multiplier calibration tries before it calls a target unreachable.
pub const MAX_NOISE_MULTIPLIER: f64 = 1e4;

/// Relative width of the final bracket: the answer is within this of the least noise that works.
const TOLERANCE: f64 = 1e-6;

/// A calibrated noise multiplier and the guarantee it gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibrated {
    /// The smallest noise multiplier found that meets the target (rounded up: never below it).
    pub noise_multiplier: f64,
    /// ε, and its order, with that noise multiplier (everything composed so far included).
    pub spent: Spent,
}

impl Accountant {
    /// The smallest noise multiplier σ (within a relative 10⁻⁶, rounded up) such that what is
    /// already composed plus `steps` steps at `sample_rate` with σ is (`epsilon`, `delta`)-DP.
    ///
    /// σ = 0 when the planned steps cost nothing (`steps = 0` or `sample_rate = 0`) and the
    /// target is already met. Fails with [`PrivacyError::Unreachable`] when even
    /// [`MAX_NOISE_MULTIPLIER`] is not enough (for instance when enough is already spent, or ε is
    /// below what the orders can express at this δ).
    pub fn calibrate(
        &self,
        epsilon: f64,
        delta: f64,
        sample_rate: f64,
        steps: u64,
    ) -> Result<Calibrated, PrivacyError> {
        if !(epsilon.is_finite() && epsilon > 0.0) {
            return Err(PrivacyError::Epsilon(epsilon));
        }
        check_delta(delta)?;
        let with = |noise_multiplier: f64| -> Result<Spent, PrivacyError> {
            let mut accountant = self.clone();
            accountant.compose(Segment { sample_rate, noise_multiplier, steps })?;
            accountant.epsilon(delta)
        };
        let free = with(0.0)?;
        if free.epsilon <= epsilon {
            return Ok(Calibrated { noise_multiplier: 0.0, spent: free });
        }
        // Bracket: ε(lo) > target ≥ ε(hi).
        let (mut lo, mut hi) = (0.0, 1.0);
        let mut best = loop {
            let spent = with(hi)?;
            if spent.epsilon <= epsilon {
                break spent;
            }
            if hi >= MAX_NOISE_MULTIPLIER {
                let (max_noise, least) = (hi, spent.epsilon);
                return Err(PrivacyError::Unreachable { epsilon, delta, sample_rate, steps, max_noise, least });
            }
            lo = hi;
            hi = (2.0 * hi).min(MAX_NOISE_MULTIPLIER);
        };
        while hi - lo > TOLERANCE * hi {
            let mid = 0.5 * (lo + hi);
            let spent = with(mid)?;
            if spent.epsilon <= epsilon {
                (hi, best) = (mid, spent);
            } else {
                lo = mid;
            }
        }
        Ok(Calibrated { noise_multiplier: hi, spent: best })
    }
}

/// The smallest noise multiplier for `steps` steps at `sample_rate` to be (`epsilon`, `delta`)-DP,
/// with nothing spent before, at the default orders. See [`Accountant::calibrate`].
pub fn calibrate(epsilon: f64, delta: f64, sample_rate: f64, steps: u64) -> Result<Calibrated, PrivacyError> {
    Accountant::default().calibrate(epsilon, delta, sample_rate, steps)
}
