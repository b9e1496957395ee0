//! Shamir secret sharing of 32-byte secrets over GF(2⁸), one polynomial a byte.
//!
//! A secret is split for up to 255 holders; holder `i` (from 0) gets the polynomials' values at
//! `x = i + 1`, and any `threshold` of the shares give the secret back by Lagrange interpolation
//! at 0. Fewer than `threshold` shares say nothing about it: each byte's polynomial has
//! `threshold − 1` uniformly random coefficients besides the secret byte.
//!
//! Written here rather than taken from a crate (about 80 lines): `vsss-rs` 6 would bring `ff`
//! 0.14 and a second `generic-array` (1.x beside the 0.14 already built) and shares one field
//! element per share value, so a 32-byte secret needs an array type of its own; `blahaj` 0.7 (the
//! maintained fork of `sharks`) multiplies through log/exp tables, whose memory accesses depend
//! on the secret, picks the x coordinates itself (1, 2, 3… in iteration order), and interpolates
//! through every share it is given while counting only distinct x, so a repeated share gives a
//! wrong secret instead of an error. Here multiplication is branch-free and table-free (the AES
//! field, x⁸ + x⁴ + x³ + x + 1), the caller places each holder at its own x, and a repeated or
//! zero x is refused.

use ring::rand::SecureRandom;

/// Bytes of a secret and of each share's value.
pub(crate) const SECRET_BYTES: usize = 32;

/// A secret, or one holder's share of it (the value of each byte's polynomial at its x).
pub(crate) type Secret = [u8; SECRET_BYTES];

/// Most holders a secret can be split for (x runs over the nonzero bytes).
pub(crate) const MAX_HOLDERS: usize = 255;

/// Product in GF(2⁸) modulo x⁸ + x⁴ + x³ + x + 1, in constant time (no branch, no table).
fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut product = 0u8;
    for _ in 0..8 {
        product ^= a & (b & 1).wrapping_neg();
        let carry = (a >> 7).wrapping_neg();
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    product
}

/// Multiplicative inverse (a²⁵⁴; 0 maps to 0), by a fixed chain of squarings.
fn inv(a: u8) -> u8 {
    let mut result = 1u8;
    let mut square = a;
    for _ in 0..7 {
        square = mul(square, square);
        result = mul(result, square);
    }
    result
}

/// Splits `secret` so that any `threshold` of the `holders` shares recover it; share `i` is for
/// x = i + 1. `threshold` must be in 1..=holders and `holders` at most [`MAX_HOLDERS`].
pub(crate) fn split(
    secret: &Secret,
    threshold: usize,
    holders: usize,
    random: &dyn SecureRandom,
) -> Result<Vec<Secret>, ring::error::Unspecified> {
    assert!(
        (1..=holders).contains(&threshold) && holders <= MAX_HOLDERS,
        "shamir::split: threshold {threshold} of {holders} holders"
    );
    // coefficients[d] holds the degree-(d + 1) coefficient of every byte's polynomial.
    let mut coefficients = vec![[0u8; SECRET_BYTES]; threshold - 1];
    for c in &mut coefficients {
        random.fill(c)?;
    }
    Ok((1..=holders)
        .map(|x| {
            let x = x as u8;
            let mut share = [0u8; SECRET_BYTES];
            for (byte, out) in share.iter_mut().enumerate() {
                // Horner from the highest degree down to the secret itself.
                let mut y = 0u8;
                for c in coefficients.iter().rev() {
                    y = mul(y, x) ^ c[byte];
                }
                *out = mul(y, x) ^ secret[byte];
            }
            share
        })
        .collect())
}

/// The secret through the given points `(x, share)`: all are used, so pass exactly `threshold`
/// of them (more only if they are known to lie on one polynomial). `None` if there are none, or
/// an x is 0 or repeated.
pub(crate) fn combine(points: &[(u8, Secret)]) -> Option<Secret> {
    if points.is_empty() {
        return None;
    }
    for (i, &(x, _)) in points.iter().enumerate() {
        if x == 0 || points[..i].iter().any(|&(other, _)| other == x) {
            return None;
        }
    }
    let mut secret = [0u8; SECRET_BYTES];
    for &(xi, ref yi) in points {
        // Lagrange basis at 0: Π_{j ≠ i} x_j / (x_j − x_i); subtraction is xor.
        let mut basis = 1u8;
        for &(xj, _) in points.iter().filter(|&&(xj, _)| xj != xi) {
            basis = mul(basis, mul(xj, inv(xj ^ xi)));
        }
        for (s, y) in secret.iter_mut().zip(yi) {
            *s ^= mul(basis, *y);
        }
    }
    Some(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ring::rand::SystemRandom;

    /// Reference multiplication: carry-less product, then reduction, bit by bit.
    fn slow_mul(a: u8, b: u8) -> u8 {
        let mut wide = 0u16;
        for bit in 0..8 {
            if b >> bit & 1 == 1 {
                wide ^= u16::from(a) << bit;
            }
        }
        for bit in (8..16).rev() {
            if wide >> bit & 1 == 1 {
                wide ^= 0x11b << (bit - 8);
            }
        }
        wide as u8
    }

    #[test]
    fn the_field_multiplies_as_aes_does_and_every_nonzero_element_has_its_inverse() {
        // FIPS-197 §4.2: {57} • {83} = {c1}, {57} • {13} = {fe}.
        assert_eq!(mul(0x57, 0x83), 0xc1);
        assert_eq!(mul(0x57, 0x13), 0xfe);
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), slow_mul(a, b), "{a} * {b}");
            }
            if a != 0 {
                assert_eq!(mul(a, inv(a)), 1, "inverse of {a}");
            }
        }
        assert_eq!(inv(0), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_threshold_of_the_shares_recovers_the_secret(
            secret in any::<[u8; 32]>(),
            (threshold, holders, picks) in (1usize..=20).prop_flat_map(|h| (1..=h, Just(h)))
                .prop_flat_map(|(t, h)| (Just(t), Just(h), Just((0..h).collect::<Vec<_>>()).prop_shuffle())),
        ) {
            let shares = split(&secret, threshold, holders, &SystemRandom::new()).unwrap();
            prop_assert_eq!(shares.len(), holders);
            let points: Vec<(u8, Secret)> = picks[..threshold].iter().map(|&i| (i as u8 + 1, shares[i])).collect();
            prop_assert_eq!(combine(&points), Some(secret));
            // Every share together lies on the same polynomial.
            let all: Vec<(u8, Secret)> = shares.iter().enumerate().map(|(i, s)| (i as u8 + 1, *s)).collect();
            prop_assert_eq!(combine(&all), Some(secret));
        }
    }

    #[test]
    fn one_share_fewer_than_the_threshold_interpolates_to_something_else() {
        // A degree-(t − 1) polynomial through t − 1 of its points and the wrong degree: the value at
        // 0 is off unless the top coefficient happens to vanish, for all 32 bytes at once (2⁻²⁵⁶).
        let secret = [0xA5; 32];
        let shares = split(&secret, 5, 8, &SystemRandom::new()).unwrap();
        let points: Vec<(u8, Secret)> = (0..4).map(|i| (i as u8 + 1, shares[i])).collect();
        assert_ne!(combine(&points), Some(secret));
    }

    #[test]
    fn a_repeated_or_zero_x_and_an_empty_set_are_refused() {
        let shares = split(&[7; 32], 2, 3, &SystemRandom::new()).unwrap();
        assert_eq!(combine(&[(1, shares[0]), (1, shares[0])]), None);
        assert_eq!(combine(&[(0, shares[0]), (2, shares[1])]), None);
        assert_eq!(combine(&[]), None);
        assert_eq!(combine(&[(1, shares[0]), (2, shares[1])]), Some([7; 32]));
    }
}
