//! Bit-packed soft-label rows: `q4` (four bits a class) and the top-k rows `top1`/`top2` (4-bit
//! codes) and `top1q8`/`top2q8` (8-bit codes): the k largest probabilities with their class ids,
//! the rest of the row's mass spread evenly over the other classes.
//!
//! Rows follow each other without padding, least significant bit first; the last byte's unused
//! high bits are zero (a decoder refuses them otherwise, so every matrix has one encoding).
//!
//! Both codes quantise with the largest-remainder method to a fixed denominator `D = 2^bits − 1`
//! (15 for four bits, 255 for eight), so the codes of a row sum to exactly `D` and decoded rows
//! sum to 1:
//! - `q4`: one 4-bit code a class, `p_i = q_i / 15` (error below 1/15).
//! - top-k: for each of the k largest probabilities its class id (`⌈log₂ classes⌉` bits) and a
//!   code of `bits` bits; the other classes' total mass is `D − Σ q_j`, implied, and split
//!   evenly among them. A top-k probability is off by less than 1/D; any other by less than the
//!   k-th largest probability plus 1/D.

use crate::error::{Error, Result};

/// Bits of a `q4`, `top1` or `top2` probability code.
pub(super) const CODE_BITS: u32 = 4;
/// Bits of a `top1q8` or `top2q8` probability code.
pub(super) const FINE_CODE_BITS: u32 = 8;
/// The denominator of a `q4` code: `2^CODE_BITS − 1`.
pub(super) const DENOMINATOR: u32 = denominator(CODE_BITS);

/// The denominator of a code of `bits` bits: `2^bits − 1`.
const fn denominator(bits: u32) -> u32 {
    (1 << bits) - 1
}

/// Bits of a class id among `classes`.
pub(super) fn id_bits(classes: usize) -> u32 {
    usize::BITS - classes.saturating_sub(1).leading_zeros()
}

/// Appends values of a few bits to a byte vector, least significant bit first.
pub(super) struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    used: u32,
}

impl<'a> BitWriter<'a> {
    pub(super) fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out, acc: 0, used: 0 }
    }

    /// Appends the low `bits` (at most 32) of `value`.
    pub(super) fn put(&mut self, value: u32, bits: u32) {
        let mask = if bits >= 32 { u32::MAX } else { (1u32 << bits) - 1 };
        self.acc |= u64::from(value & mask) << self.used;
        self.used += bits;
        while self.used >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.used -= 8;
        }
    }

    /// Writes the last, partly used byte (its unused bits zero).
    pub(super) fn finish(self) {
        if self.used > 0 {
            self.out.push(self.acc as u8);
        }
    }
}

/// Reads values of a few bits, least significant bit first. The caller has checked the length.
pub(super) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// The next `bits` (at most 24) bits; zeros past the end.
    pub(super) fn get(&mut self, bits: u32) -> u32 {
        let (byte, shift) = (self.pos / 8, (self.pos % 8) as u32);
        let mut window = 0u32;
        for k in 0..4 {
            window |= u32::from(self.data.get(byte + k).copied().unwrap_or(0)) << (8 * k);
        }
        self.pos += bits as usize;
        (window >> shift) & ((1u32 << bits) - 1)
    }

    /// Whether every bit after the ones read is zero (the canonical padding).
    pub(super) fn rest_is_zero(&self) -> bool {
        let (byte, shift) = (self.pos / 8, self.pos % 8);
        let partial = shift > 0 && self.data.get(byte).is_some_and(|b| b >> shift != 0);
        let from = if shift > 0 { byte + 1 } else { byte };
        !partial && self.data.get(from..).is_none_or(|tail| tail.iter().all(|&b| b == 0))
    }
}

/// Largest-remainder quantisation of `values` (non-negative, summing to 1 up to rounding) to
/// integer codes summing to exactly `target`; each code is `⌊v·target⌋` or `⌈v·target⌉`.
pub(super) fn largest_remainder(values: &[f64], target: u32, q: &mut Vec<u32>, order: &mut Vec<(f64, usize)>) {
    q.clear();
    order.clear();
    let mut total: i64 = 0;
    for (i, &v) in values.iter().enumerate() {
        let x = (v * target as f64).max(0.0);
        let f = x.floor().min(target as f64);
        q.push(f as u32);
        order.push((x - f, i));
        total += f as i64;
    }
    let deficit = target as i64 - total;
    if deficit > 0 {
        // Hand the deficit (smaller than the number of values) to the largest remainders.
        order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for k in 0..deficit as usize {
            q[order[k % order.len()].1] += 1;
        }
    } else if deficit < 0 {
        // An excess from rounding: take it back from the smallest remainders that have a unit.
        order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut left = deficit.unsigned_abs();
        for &(_, i) in order.iter().cycle().take(order.len() * (left as usize + 1)) {
            if left == 0 {
                break;
            }
            if q[i] > 0 {
                q[i] -= 1;
                left -= 1;
            }
        }
    }
}

/// Reusable buffers for the packed encoders.
#[derive(Default)]
pub(super) struct Packer {
    q: Vec<u32>,
    order: Vec<(f64, usize)>,
    top: Vec<usize>,
    values: Vec<f64>,
}

impl Packer {
    /// One `q4` row (`row` sums to 1).
    pub(super) fn q4(&mut self, row: &[f64], w: &mut BitWriter<'_>) {
        largest_remainder(row, DENOMINATOR, &mut self.q, &mut self.order);
        self.q.iter().for_each(|&c| w.put(c, CODE_BITS));
    }

    /// One top-`k` row with codes of `code_bits` bits (`row` sums to 1).
    pub(super) fn top(&mut self, k: usize, code_bits: u32, row: &[f64], w: &mut BitWriter<'_>) {
        let classes = row.len();
        let k = k.min(classes);
        self.top.clear();
        self.top.extend(0..classes);
        self.top.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        self.top.truncate(k);
        self.values.clear();
        self.values.extend(self.top.iter().map(|&i| row[i]));
        let rest = if k == classes { 0.0 } else { (1.0 - self.values.iter().sum::<f64>()).max(0.0) };
        self.values.push(rest);
        largest_remainder(&self.values, denominator(code_bits), &mut self.q, &mut self.order);
        if k == classes && self.q[k] > 0 {
            // No other class to spread a remainder over: it goes to the largest.
            self.q[0] += self.q[k];
            self.q[k] = 0;
        }
        let bits = id_bits(classes);
        for (&i, &c) in self.top.iter().zip(&self.q) {
            w.put(i as u32, bits);
            w.put(c, code_bits);
        }
    }
}

/// Decodes one `q4` row into `dst`.
pub(super) fn q4_row(r: usize, src: &mut BitReader<'_>, dst: &mut [f32]) -> Result<()> {
    let mut sum = 0u32;
    for d in dst.iter_mut() {
        let c = src.get(CODE_BITS);
        sum += c;
        *d = c as f32 / DENOMINATOR as f32;
    }
    if sum != DENOMINATOR {
        return Err(Error::Values(format!("row {r}: codes sum to {sum}, not {DENOMINATOR}")));
    }
    Ok(())
}

/// Decodes one top-`k` row with codes of `code_bits` bits into `dst` (`taken` is a scratch
/// buffer).
pub(super) fn top_row(
    r: usize,
    k: usize,
    code_bits: u32,
    src: &mut BitReader<'_>,
    dst: &mut [f32],
    taken: &mut Vec<bool>,
) -> Result<()> {
    let classes = dst.len();
    let k = k.min(classes);
    let (bits, denom) = (id_bits(classes), denominator(code_bits));
    taken.clear();
    taken.resize(classes, false);
    let mut sum = 0u32;
    for _ in 0..k {
        let (i, c) = (src.get(bits) as usize, src.get(code_bits));
        if i >= classes || taken[i] {
            return Err(Error::Values(format!("row {r}: class id {i} is repeated or beyond {classes} classes")));
        }
        taken[i] = true;
        sum += c;
        dst[i] = c as f32 / denom as f32;
    }
    if sum > denom || (k == classes && sum != denom) {
        return Err(Error::Values(format!("row {r}: codes sum to {sum}, not at most {denom}")));
    }
    if k < classes {
        let each = (denom - sum) as f32 / (denom as f32 * (classes - k) as f32);
        dst.iter_mut().zip(taken.iter()).filter(|(_, t)| !**t).for_each(|(d, _)| *d = each);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bits_read_back_as_written(values in proptest::collection::vec((any::<u32>(), 1u32..=24), 0..200)) {
            let mut out = Vec::new();
            let mut w = BitWriter::new(&mut out);
            values.iter().for_each(|&(v, b)| w.put(v, b));
            w.finish();
            let total: u32 = values.iter().map(|(_, b)| b).sum();
            prop_assert_eq!(out.len(), total.div_ceil(8) as usize);
            let mut r = BitReader::new(&out);
            for &(v, b) in &values {
                prop_assert_eq!(r.get(b), v & ((1u32 << b) - 1));
            }
            prop_assert!(r.rest_is_zero());
        }

        #[test]
        fn largest_remainder_sums_to_its_target(raw in proptest::collection::vec(0.0f64..1.0, 1..40), target in 1u32..300) {
            let s: f64 = raw.iter().sum();
            prop_assume!(s > 0.0);
            let values: Vec<f64> = raw.iter().map(|v| v / s).collect();
            let (mut q, mut order) = (Vec::new(), Vec::new());
            largest_remainder(&values, target, &mut q, &mut order);
            prop_assert_eq!(q.iter().sum::<u32>(), target);
            for (&c, &v) in q.iter().zip(&values) {
                prop_assert!((c as f64 - v * target as f64).abs() < 1.0 + 1e-9);
            }
        }
    }

    #[test]
    fn id_bits_cover_every_class() {
        assert_eq!([1, 2, 3, 10, 16, 17, 1000].map(id_bits), [0, 1, 2, 4, 4, 5, 10]);
    }

    #[test]
    fn nonzero_padding_is_seen() {
        let data = [0b0001_0000u8];
        let mut r = BitReader::new(&data);
        assert_eq!(r.get(4), 0);
        assert!(!r.rest_is_zero());
        assert!(BitReader::new(&[]).rest_is_zero());
    }
}
