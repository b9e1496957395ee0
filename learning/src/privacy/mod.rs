//! Privacy accounting for DP-SGD with Poisson sampling: Rényi DP of the sampled Gaussian
//! mechanism, composed over every private step, converted to (ε, δ).
//!
//! - [`rdp`]: the RDP of one step at one order (log-space series, integer and fractional orders).
//! - this module: [`Segment`]s of steps with one setting, the [`Accountant`] that adds their RDP
//!   up over a list of orders (RDP composes by addition), and the conversion to ε at a δ,
//!   minimised over the orders.
//! - [`calibrate`](Accountant::calibrate): the smallest noise multiplier that keeps ε within a
//!   target, after what is already spent.
//!
//! The conversion is Balle et al. 2020 ("Hypothesis testing interpretations and Rényi differential
//! privacy", Theorem 21; also Canonne, Kamath and Steinke 2020):
//! `ε = rdp_α + ln(1 − 1/α) − ln(δ·α)/(α − 1)`, as in Opacus and Google's dp_accounting, with
//! dp_accounting's guards (ε = 0 when `δ² > 1 − e^{−rdp_α}`, orders ≤ 1.01 unused, ε ≥ 0).
//! [`DEFAULT_ORDERS`] are Opacus's. Everything here is plain `f64` maths: no threads, no I/O.

pub mod rdp;

mod calibrate;
mod logspace;

pub use calibrate::{Calibrated, MAX_NOISE_MULTIPLIER, calibrate};

use serde::{Deserialize, Serialize};

/// Opacus's default orders: `1.1, 1.2, …, 10.9` then `12, 13, …, 63`.
pub const DEFAULT_ORDERS: [f64; 151] = default_orders();

const fn default_orders() -> [f64; 151] {
    let mut orders = [0.0; 151];
    let mut k = 0;
    while k < 99 {
        orders[k] = 1.0 + (k + 1) as f64 / 10.0;
        k += 1;
    }
    while k < 151 {
        orders[k] = (k - 99 + 12) as f64;
        k += 1;
    }
    orders
}

/// Invalid inputs and targets that cannot be met.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PrivacyError {
    /// A sampling rate outside `[0, 1]`.
    #[error("sample rate {0} is not in [0, 1]")]
    SampleRate(f64),
    /// A noise multiplier that is negative or not finite.
    #[error("noise multiplier {0} is not a finite number ≥ 0")]
    NoiseMultiplier(f64),
    /// A δ outside `(0, 1)`.
    #[error("delta {0} is not in (0, 1)")]
    Delta(f64),
    /// A target ε that is not positive and finite.
    #[error("epsilon {0} is not a finite number > 0")]
    Epsilon(f64),
    /// An RDP order that is not finite and above 1.
    #[error("RDP order {0} is not a finite number > 1")]
    Order(f64),
    /// An empty list of RDP orders.
    #[error("no RDP orders")]
    NoOrders,
    /// No noise multiplier up to [`MAX_NOISE_MULTIPLIER`] keeps ε within the target.
    #[error(
        "no noise multiplier up to {max_noise} reaches epsilon {epsilon} at delta {delta} \
         ({steps} steps at sample rate {sample_rate}): the least epsilon there is {least}"
    )]
    Unreachable {
        /// Target ε.
        epsilon: f64,
        /// Target δ.
        delta: f64,
        /// Sampling rate of the planned steps.
        sample_rate: f64,
        /// Number of planned steps.
        steps: u64,
        /// The largest noise multiplier tried.
        max_noise: f64,
        /// ε with that noise multiplier (including anything already spent).
        least: f64,
    },
}

/// `steps` steps of the sampled Gaussian mechanism with one setting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Probability that a record is in a step's batch (Poisson sampling).
    pub sample_rate: f64,
    /// Noise standard deviation over the clipping norm.
    pub noise_multiplier: f64,
    /// Number of steps.
    pub steps: u64,
}

impl Segment {
    /// Checks the sampling rate and the noise multiplier.
    pub fn validate(&self) -> Result<(), PrivacyError> {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(PrivacyError::SampleRate(self.sample_rate));
        }
        if !(self.noise_multiplier.is_finite() && self.noise_multiplier >= 0.0) {
            return Err(PrivacyError::NoiseMultiplier(self.noise_multiplier));
        }
        Ok(())
    }
}

/// An (ε, δ) guarantee and the RDP order that gave it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    /// ε at the δ asked for; `+∞` when no order gives a finite bound.
    pub epsilon: f64,
    /// The order that minimises ε (the first order when ε is infinite).
    pub order: f64,
}

/// The RDP of everything composed so far, at each order, with the segments that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Accountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
    history: Vec<Segment>,
}

impl Default for Accountant {
    /// Nothing spent, at [`DEFAULT_ORDERS`].
    fn default() -> Self {
        Accountant { orders: DEFAULT_ORDERS.to_vec(), rdp: vec![0.0; DEFAULT_ORDERS.len()], history: Vec::new() }
    }
}

impl Accountant {
    /// Nothing spent, at the given orders (each finite and above 1).
    pub fn with_orders(orders: Vec<f64>) -> Result<Self, PrivacyError> {
        if orders.is_empty() {
            return Err(PrivacyError::NoOrders);
        }
        if let Some(&bad) = orders.iter().find(|a| !(a.is_finite() && **a > 1.0)) {
            return Err(PrivacyError::Order(bad));
        }
        Ok(Accountant { rdp: vec![0.0; orders.len()], orders, history: Vec::new() })
    }

    /// The accountant after `segments`, at [`DEFAULT_ORDERS`].
    pub fn from_history(segments: &[Segment]) -> Result<Self, PrivacyError> {
        let mut accountant = Accountant::default();
        for segment in segments {
            accountant.compose(*segment)?;
        }
        Ok(accountant)
    }

    /// Adds `segment`'s RDP at every order. A segment with the same setting as the last one
    /// extends it in [`history`](Self::history).
    pub fn compose(&mut self, segment: Segment) -> Result<(), PrivacyError> {
        segment.validate()?;
        if segment.steps == 0 {
            return Ok(());
        }
        let steps = segment.steps as f64;
        for (r, &order) in self.rdp.iter_mut().zip(&self.orders) {
            *r += steps * rdp::sampled_gaussian(segment.sample_rate, segment.noise_multiplier, order);
        }
        match self.history.last_mut() {
            Some(last)
                if (last.sample_rate, last.noise_multiplier) == (segment.sample_rate, segment.noise_multiplier) =>
            {
                last.steps += segment.steps;
            }
            _ => self.history.push(segment),
        }
        Ok(())
    }

    /// The segments composed so far, in order.
    pub fn history(&self) -> &[Segment] {
        &self.history
    }

    /// The RDP orders.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The total RDP at each of [`orders`](Self::orders).
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// The smallest ε over the orders for which everything composed so far is (ε, δ)-DP.
    pub fn epsilon(&self, delta: f64) -> Result<Spent, PrivacyError> {
        check_delta(delta)?;
        let mut best = Spent { epsilon: f64::INFINITY, order: self.orders[0] };
        for (&order, &rdp) in self.orders.iter().zip(&self.rdp) {
            let epsilon = epsilon_at_order(order, rdp, delta);
            if epsilon < best.epsilon {
                best = Spent { epsilon, order };
            }
        }
        best.epsilon = best.epsilon.max(0.0);
        Ok(best)
    }
}

/// ε of `segments` at `delta`, at [`DEFAULT_ORDERS`].
pub fn epsilon(segments: &[Segment], delta: f64) -> Result<Spent, PrivacyError> {
    Accountant::from_history(segments)?.epsilon(delta)
}

fn check_delta(delta: f64) -> Result<(), PrivacyError> {
    if delta > 0.0 && delta < 1.0 { Ok(()) } else { Err(PrivacyError::Delta(delta)) }
}

/// ε at one order from its RDP (Balle et al. 2020, Theorem 21), `+∞` where the bound is unusable.
fn epsilon_at_order(order: f64, rdp: f64, delta: f64) -> f64 {
    if rdp.is_nan() || rdp == f64::INFINITY {
        return f64::INFINITY;
    }
    let rdp = rdp.max(0.0); // RDP is never negative: a negative value is rounding.
    if delta * delta + (-rdp).exp_m1() > 0.0 {
        // δ ≥ √(1 − e^{−KL}) with KL ≤ rdp_α: (0, δ)-DP.
        0.0
    } else if order > 1.01 {
        // Unstable as α → 1, and useless there.
        rdp + (-1.0 / order).ln_1p() - (delta * order).ln() / (order - 1.0)
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests;
