//! Log-space arithmetic for the accountant: sums of terms that would overflow or underflow as
//! plain `f64`s (`exp(i²/2σ²)` at small σ, `erfc` far in its tail), kept as logarithms.

use std::f64::consts::PI;

/// A running sum `Σ exp(tᵢ)` of terms given by their logarithms `tᵢ`, kept as the largest term
/// `m` and the sum of the others scaled by it, `r = Σ_{i ≠ max} exp(tᵢ − m)`: no term overflows,
/// and `ln = m + ln_1p(r)` keeps full precision when the total is barely above its largest term
/// (`ln A_α ≈ q²/σ²` at small sampling rates, a small difference of two larger numbers otherwise).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogSum {
    max: f64,
    rest: f64,
}

impl LogSum {
    /// The empty sum (`ln 0 = −∞`).
    pub(crate) const ZERO: LogSum = LogSum { max: f64::NEG_INFINITY, rest: 0.0 };

    /// Adds `exp(log_term)`.
    pub(crate) fn add(&mut self, log_term: f64) {
        if log_term == f64::NEG_INFINITY {
            return; // adds nothing
        }
        if self.max == f64::NEG_INFINITY {
            self.max = log_term;
        } else if log_term <= self.max {
            self.rest += (log_term - self.max).exp();
        } else {
            self.rest = (self.rest + 1.0) * (self.max - log_term).exp();
            self.max = log_term;
        }
    }

    /// `ln Σ exp(tᵢ)`; `−∞` for the empty sum.
    pub(crate) fn ln(self) -> f64 {
        self.max + self.rest.ln_1p()
    }
}

/// `ln(exp(a) − exp(b))` for `a ≥ b`; `NaN` when `a < b` (a negative difference has no logarithm).
pub(crate) fn ln_sub(a: f64, b: f64) -> f64 {
    if b == f64::NEG_INFINITY {
        a
    } else if a < b {
        f64::NAN
    } else {
        a + (-(b - a).exp()).ln_1p()
    }
}

/// Below this, `erfc(x) = 1 − erf(x)` from erf's series loses at most a few hundred ulps
/// (`erfc(2.5) ≈ 4·10⁻⁴`); above it, erfc's continued fraction converges in under ~100 terms.
const SERIES_LIMIT: f64 = 2.5;

/// `ln erfc(x)` for any finite `x`, accurate far into the tail where `erfc(x)` itself underflows
/// (`ln erfc(1000) ≈ −10⁶`).
pub(crate) fn ln_erfc(x: f64) -> f64 {
    if x.is_nan() {
        f64::NAN
    } else if x < 0.0 {
        // erfc(x) = 2 − erfc(−x) lies in (1, 2]: no loss of precision.
        (2.0 - ln_erfc(-x).exp()).ln()
    } else if x < SERIES_LIMIT {
        (-erf_series(x)).ln_1p()
    } else {
        -x * x - 0.5 * PI.ln() - erfc_continued_fraction(x).ln()
    }
}

/// `erf(x)` for `0 ≤ x < SERIES_LIMIT`, from `erf(x) = 2/√π · e^{−x²} · Σₙ 2ⁿ x^{2n+1} / (2n+1)!!`,
/// whose terms are all positive (no cancellation).
fn erf_series(x: f64) -> f64 {
    let two_x2 = 2.0 * x * x;
    let (mut term, mut sum) = (x, x);
    for n in 1..200 {
        term *= two_x2 / f64::from(2 * n + 1);
        sum += term;
        if term < sum * f64::EPSILON * 0.25 {
            break;
        }
    }
    2.0 / PI.sqrt() * (-x * x).exp() * sum
}

/// The continued fraction `x + (1/2)/(x + (2/2)/(x + (3/2)/(x + …)))`, equal to
/// `e^{−x²} / (√π erfc(x))`, evaluated by the modified Lentz method; for `x ≥ SERIES_LIMIT`.
fn erfc_continued_fraction(x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (mut f, mut c, mut d) = (x, x, 0.0);
    for n in 1..500 {
        let a = f64::from(n) / 2.0;
        d = x + a * d;
        d = if d.abs() < TINY { 1.0 / TINY } else { 1.0 / d };
        c = x + a / c;
        if c.abs() < TINY {
            c = TINY;
        }
        let step = c * d;
        f *= step;
        if (step - 1.0).abs() < f64::EPSILON {
            break;
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_erfc_matches_high_precision_values_on_both_sides_of_the_switch() {
        // ln erfc(x) from mpmath at 30 digits.
        let reference = [
            (-3.0, 0.693_136_135_250_446_8f64),
            (-0.5, 0.419_039_147_775_559_6),
            (0.0, 0.0),
            (0.3, -0.398_430_051_440_085_3),
            (1.0, -1.849_605_509_933_248_2),
            (2.4, -7.280_975_056_055_788),
            (2.6, -8.351_532_930_819_747),
            (5.0, -27.200_889_545_537_434),
            (12.0, -147.060_714_177_987),
            (40.0, -1_604.261_556_653_273_6),
            (1000.0, -1_000_007.480_120_721_9),
        ];
        for (x, want) in reference {
            let got = ln_erfc(x);
            let tolerance = 1e-13 * want.abs().max(1e-3);
            assert!((got - want).abs() <= tolerance, "ln erfc({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn ln_erfc_is_continuous_at_the_switch() {
        let below = ln_erfc(SERIES_LIMIT - 1e-12);
        let above = ln_erfc(SERIES_LIMIT);
        assert!((below - above).abs() < 1e-10, "{below} vs {above}");
    }

    #[test]
    fn log_sum_adds_terms_of_any_scale() {
        let mut s = LogSum::ZERO;
        assert_eq!(s.ln(), f64::NEG_INFINITY);
        for t in [0.0, 1000.0, -1000.0, 1000.0] {
            s.add(t);
        }
        assert!((s.ln() - (1000.0 + 2f64.ln())).abs() < 1e-12);
        let mut small = LogSum::ZERO;
        small.add(2f64.ln());
        small.add(3f64.ln());
        assert!((small.ln().exp() - 5.0).abs() < 1e-12);
        assert!((ln_sub(5f64.ln(), 3f64.ln()).exp() - 2.0).abs() < 1e-12);
        assert!(ln_sub(1.0, 2.0).is_nan());
        assert_eq!(ln_sub(1.0, 1.0), f64::NEG_INFINITY);
    }
}
