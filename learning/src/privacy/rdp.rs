//! Rényi DP of one step of the sampled Gaussian mechanism (Mironov, Talwar and Zhang 2019,
//! "Rényi Differential Privacy of the Sampled Gaussian Mechanism", §3.3).
//!
//! A step adds `N(0, σ²)` noise to a sum of per-example values of L2 norm at most 1, over a batch
//! where each record is included independently with probability `q`. Its RDP at order `α > 1` is
//! `ln A_α / (α − 1)`, with `A_α = E_{z∼N(0,σ²)} [((1 − q) + q·e^{(2z − 1)/(2σ²)})^α]`:
//!
//! - integer `α`: the binomial expansion `A_α = Σᵢ C(α, i) qⁱ (1 − q)^{α−i} e^{(i² − i)/(2σ²)}`,
//!   exact with `α + 1` terms;
//! - fractional `α`: the integral split at `z₀ = σ² ln(1/q − 1) + ½` into two series whose terms
//!   carry `erfc` tails; their binomial coefficients change sign past `i = α + 1`, and the signed
//!   sum is the exact value (the alternating tail bounds the truncation error by the first
//!   omitted term, below `e⁻³⁰` on an `A_α ≥ 1`).
//!
//! Everything is summed in log space. Opacus evaluates the same signed series.
//! Google's dp_accounting instead adds the terms' absolute values, an upper bound that is loose at
//! small fractional orders when `q` is large (and gives up on some orders after 1000 terms), so
//! its ε can be larger than this one there; `tests/accountant.rs` measures both against a
//! quadrature of the definition.

use super::logspace::{LogSum, ln_erfc, ln_sub};

/// Fractional orders: beyond this many terms a series is taken not to converge and the order
/// reports `+∞` (excluded from the minimum over orders, never an underestimate). The slowest cases
/// in the supported range (`α` near 1, `q` near ½, `σ` near 0.5) need a few thousand terms.
const MAX_TERMS: u32 = 100_000;

/// Terms below `e^{STOP}` no longer change `A_α ≥ 1` in double precision.
const STOP: f64 = -30.0;

/// RDP at order `order` of one step with sampling rate `q` and noise multiplier `sigma`.
///
/// `q = 0` costs nothing, `σ = 0` is not private (`+∞`), `q = 1` is the plain Gaussian mechanism
/// (`α / 2σ²`). Inputs are validated by the callers: `q ∈ [0, 1]`, `σ ≥ 0`, `order > 1`.
pub fn sampled_gaussian(q: f64, sigma: f64, order: f64) -> f64 {
    if q == 0.0 {
        0.0
    } else if sigma == 0.0 || order.is_infinite() {
        f64::INFINITY
    } else if q == 1.0 {
        order / (2.0 * sigma * sigma)
    } else {
        let ln_a = if order.fract() == 0.0 && order <= f64::from(u32::MAX) {
            ln_a_integer(q, sigma, order as u32)
        } else {
            ln_a_fractional(q, sigma, order)
        };
        if ln_a.is_nan() {
            // The two signed parts crossed: never report less than nothing is known.
            return f64::INFINITY;
        }
        // A_α ≥ 1 by Jensen: a tiny negative value is rounding.
        ln_a.max(0.0) / (order - 1.0)
    }
}

/// `ln A_α` for integer `α`, `0 < q < 1`.
fn ln_a_integer(q: f64, sigma: f64, alpha: u32) -> f64 {
    let (ln_q, ln_1mq) = (q.ln(), (-q).ln_1p());
    let two_s2 = 2.0 * sigma * sigma;
    let mut sum = LogSum::ZERO;
    let mut ln_binom = 0.0; // ln C(α, i), updated by C(α, i) = C(α, i − 1)·(α − i + 1)/i.
    for i in 0..=alpha {
        if i > 0 {
            ln_binom += f64::from(alpha - i + 1).ln() - f64::from(i).ln();
        }
        let i = f64::from(i);
        sum.add(ln_binom + i * ln_q + (f64::from(alpha) - i) * ln_1mq + (i * i - i) / two_s2);
    }
    sum.ln()
}

/// `ln A_α` for fractional `α`, `0 < q < 1`: `A_α = Σᵢ C(α, i)·(s₀(i) + s₁(i))` with
/// `s₀(i) = qⁱ (1 − q)^{α−i} e^{(i² − i)/2σ²} · ½ erfc((i − z₀)/(√2 σ))` and
/// `s₁(i) = q^{α−i} (1 − q)ⁱ e^{(j² − j)/2σ²} · ½ erfc((z₀ − j)/(√2 σ))`, `j = α − i`.
fn ln_a_fractional(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (ln_q, ln_1mq) = (q.ln(), (-q).ln_1p());
    let two_s2 = 2.0 * sigma * sigma;
    let sqrt2_s = std::f64::consts::SQRT_2 * sigma;
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let ln_half = -std::f64::consts::LN_2;
    // Positive and negative terms apart, subtracted once at the end.
    let (mut plus, mut minus) = (LogSum::ZERO, LogSum::ZERO);
    let (mut ln_binom, mut positive) = (0.0, true);
    let mut last = f64::INFINITY;
    for i in 0..MAX_TERMS {
        let fi = f64::from(i);
        if i > 0 {
            let factor = alpha - fi + 1.0;
            ln_binom += factor.abs().ln() - fi.ln();
            positive ^= factor < 0.0;
        }
        let j = alpha - fi;
        let s0 = ln_binom + fi * ln_q + j * ln_1mq + (fi * fi - fi) / two_s2 + ln_half + ln_erfc((fi - z0) / sqrt2_s);
        let s1 = ln_binom + j * ln_q + fi * ln_1mq + (j * j - j) / two_s2 + ln_half + ln_erfc((z0 - j) / sqrt2_s);
        let sum = if positive { &mut plus } else { &mut minus };
        sum.add(s0);
        sum.add(s1);
        // Past i = α the terms shrink (and alternate): stop once they no longer count.
        let largest = s0.max(s1);
        if fi > alpha && largest < STOP && largest < last {
            return ln_sub(plus.ln(), minus.ln());
        }
        last = largest;
    }
    f64::INFINITY
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ln A_α` by the trapezoid rule on the definition, in log space: an independent check of
    /// both series (the integrand is smooth and Gaussian-tailed, so the rule converges fast).
    fn ln_a_quadrature(q: f64, sigma: f64, alpha: f64) -> f64 {
        let (lo, hi) = (-14.0 * sigma, alpha + 14.0 * sigma);
        let n = 200_000;
        let h = (hi - lo) / f64::from(n);
        let mut sum = LogSum::ZERO;
        for k in 0..=n {
            let z = lo + h * f64::from(k);
            let ln_density = -z * z / (2.0 * sigma * sigma) - (sigma * (2.0 * std::f64::consts::PI).sqrt()).ln();
            let mut mix = LogSum::ZERO;
            mix.add((-q).ln_1p());
            mix.add(q.ln() + (2.0 * z - 1.0) / (2.0 * sigma * sigma));
            let weight = if k == 0 || k == n { 0.5f64.ln() } else { 0.0 };
            sum.add(weight + ln_density + alpha * mix.ln());
        }
        sum.ln() + h.ln()
    }

    #[test]
    fn both_series_match_a_quadrature_of_the_definition() {
        for (q, sigma) in [(0.01, 0.7), (0.2, 0.7), (0.5, 1.0), (0.05, 2.0), (0.9, 5.0)] {
            for alpha in [1.1, 1.5, 2.0, 3.0, 4.7, 10.9, 32.0] {
                let got = sampled_gaussian(q, sigma, alpha) * (alpha - 1.0);
                let want = ln_a_quadrature(q, sigma, alpha);
                assert!((got - want).abs() <= 1e-8 * want.abs() + 1e-13, "q={q} σ={sigma} α={alpha}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn order_two_has_a_closed_form() {
        // A₂ = (1 − q)² + 2q(1 − q) + q² e^{1/σ²} = 1 + q² (e^{1/σ²} − 1).
        for (q, sigma) in [(1e-4f64, 1.0f64), (0.01, 0.7), (0.3, 2.0), (0.99, 5.0)] {
            let want = (q * q * (1.0 / (sigma * sigma)).exp_m1()).ln_1p();
            let got = sampled_gaussian(q, sigma, 2.0);
            assert!((got - want).abs() <= 1e-12 * want, "q={q} σ={sigma}: {got} vs {want}");
        }
    }

    #[test]
    fn fractional_orders_join_the_integer_ones_continuously() {
        for (q, sigma) in [(0.01, 1.0), (0.2, 0.7), (0.6, 3.0)] {
            for alpha in [2.0, 5.0, 17.0] {
                let at = sampled_gaussian(q, sigma, alpha);
                for near in [alpha - 1e-7, alpha + 1e-7] {
                    let r = sampled_gaussian(q, sigma, near);
                    assert!((r - at).abs() <= 1e-5 * at, "q={q} σ={sigma}: α={near} gives {r}, α={alpha} gives {at}");
                }
            }
        }
    }

    #[test]
    fn full_sampling_is_the_limit_of_the_series() {
        for sigma in [0.7, 1.0, 5.0] {
            for alpha in [1.5, 3.0, 8.3, 40.0] {
                let closed = sampled_gaussian(1.0, sigma, alpha);
                assert_eq!(closed, alpha / (2.0 * sigma * sigma));
                let series = sampled_gaussian(1.0 - 1e-9, sigma, alpha);
                assert!((series - closed).abs() <= 1e-6 * closed, "σ={sigma} α={alpha}: {series} vs {closed}");
            }
        }
    }

    #[test]
    fn edge_cases() {
        assert_eq!(sampled_gaussian(0.0, 1.0, 2.5), 0.0);
        assert_eq!(sampled_gaussian(0.3, 0.0, 2.5), f64::INFINITY);
        assert_eq!(sampled_gaussian(0.3, 1.0, f64::INFINITY), f64::INFINITY);
    }
}
