//! Soft-label payloads: a samples × classes matrix of probabilities in one of eight encodings.
//!
//! | encoding | bits per row              | error bound per probability                          |
//! |----------|---------------------------|------------------------------------------------------|
//! | `F32`    | 32 · classes              | none beyond f32 rounding                             |
//! | `F16`    | 16 · classes              | 2⁻¹¹ relative (≤ 4.9e-4 absolute)                     |
//! | `Q8`     | 16 + 8 · classes          | < 1/255 absolute                                     |
//! | `Q4`     | 4 · classes               | < 1/15 absolute                                      |
//! | `Top2`   | 2 · (⌈log₂ classes⌉ + 4)  | < 1/15 on the two largest; others < p₍₂₎ + 1/15       |
//! | `Top1`   | ⌈log₂ classes⌉ + 4        | < 1/15 on the largest; others < p₍₁₎ + 1/15           |
//! | `Top2Q8` | 2 · (⌈log₂ classes⌉ + 8)  | < 1/255 on the two largest; others < p₍₂₎ + 1/255     |
//! | `Top1Q8` | ⌈log₂ classes⌉ + 8        | < 1/255 on the largest; others < p₍₁₎ + 1/255         |
//!
//! `Q4` and the top-k encodings are bit-packed without padding between rows ([`packed`]); the others
//! take whole bytes a row.
//!
//! `Q8` stores, for each row, a denominator `T` (u16, little endian) and one byte `q_i` per
//! class; the probability is `q_i / T`. The encoder picks `T = ⌊255 / max_i p_i⌋` (so every
//! `q_i` fits a byte) and rounds with the largest-remainder method so that `Σ q_i = T`: each
//! `q_i` is `⌊p_i T⌋` or `⌈p_i T⌉`, the error is below `1/T ≤ max_i p_i / 255 ≤ 1/255`, and
//! decoded rows sum to exactly 1 before float rounding.
//!
//! Encoders validate and renormalise their input rows; decoders validate shape and values
//! (finite, in [0, 1], rows summing to 1 ± [`ROW_SUM_TOLERANCE`]) and return rows renormalised
//! to sum to 1.

use serde::{Deserialize, Serialize};

mod packed;

use crate::error::{Error, Result};
use crate::wire::{MAX_CHUNK_BYTES, MAX_MESSAGE_BYTES, MessageKind};

/// Allowed deviation of a row sum from 1.
pub const ROW_SUM_TOLERANCE: f32 = 1e-3;

/// Largest `Q8` denominator; leaves headroom below `u16::MAX` for rounding corrections.
const Q8_MAX_DENOMINATOR: f64 = 65_000.0;

/// How a soft-label matrix is laid out on the wire. In config files: `f32`, `f16`, `q8`, `q4`,
/// `top2`, `top1`, `top2q8` or `top1q8` (bincode, on the wire, encodes the variant's index, not its name: new
/// variants go last).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Little-endian IEEE-754 single precision.
    F32,
    /// Little-endian IEEE-754 half precision.
    F16,
    /// 8-bit quantised probabilities with a per-row denominator.
    #[serde(alias = "u8", alias = "int8")]
    Q8,
    /// 4-bit codes a class summing to 15 (bit-packed).
    Q4,
    /// The two largest probabilities (class id and 4-bit code each); the rest spread evenly.
    Top2,
    /// The largest probability (class id and 4-bit code); the rest spread evenly.
    Top1,
    /// The two largest probabilities (class id and 8-bit code each); the rest spread evenly.
    Top2Q8,
    /// The largest probability (class id and 8-bit code); the rest spread evenly.
    Top1Q8,
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoding::F32 => "f32",
            Encoding::F16 => "f16",
            Encoding::Q8 => "q8",
            Encoding::Q4 => "q4",
            Encoding::Top2 => "top2",
            Encoding::Top1 => "top1",
            Encoding::Top2Q8 => "top2q8",
            Encoding::Top1Q8 => "top1q8",
        })
    }
}

impl Encoding {
    /// All encodings, for tests and benchmarks.
    pub const ALL: [Encoding; 8] = [
        Encoding::F32,
        Encoding::F16,
        Encoding::Q8,
        Encoding::Q4,
        Encoding::Top2,
        Encoding::Top1,
        Encoding::Top2Q8,
        Encoding::Top1Q8,
    ];

    /// The encoding's byte in an announcement's digest (its wire index).
    pub fn index(self) -> u8 {
        self as u8
    }

    /// Bits one row of `classes` probabilities takes.
    pub fn row_bits(self, classes: usize) -> usize {
        match self {
            Encoding::F32 => 32 * classes,
            Encoding::F16 => 16 * classes,
            Encoding::Q8 => 8 * (2 + classes),
            Encoding::Q4 => packed::CODE_BITS as usize * classes,
            Encoding::Top2 | Encoding::Top1 | Encoding::Top2Q8 | Encoding::Top1Q8 => {
                self.top_k().min(classes) * (packed::id_bits(classes) + self.code_bits()) as usize
            }
        }
    }

    /// Bits of a kept probability's code in a top-k row (4 or 8; 0 for the other encodings).
    fn code_bits(self) -> u32 {
        match self {
            Encoding::Top2 | Encoding::Top1 => packed::CODE_BITS,
            Encoding::Top2Q8 | Encoding::Top1Q8 => packed::FINE_CODE_BITS,
            _ => 0,
        }
    }

    /// Bytes a matrix of `samples` rows of `classes` takes (saturating).
    pub fn payload_bytes(self, samples: usize, classes: usize) -> usize {
        samples.saturating_mul(self.row_bits(classes)).div_ceil(8)
    }

    /// How many probabilities a top-k row keeps (0 for the other encodings).
    fn top_k(self) -> usize {
        match self {
            Encoding::Top2 | Encoding::Top2Q8 => 2,
            Encoding::Top1 | Encoding::Top1Q8 => 1,
            _ => 0,
        }
    }

    /// Parses an encoding's name as written in config files.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Encoding::F32),
            "f16" => Ok(Encoding::F16),
            "q8" | "u8" | "int8" => Ok(Encoding::Q8),
            "q4" => Ok(Encoding::Q4),
            "top2" => Ok(Encoding::Top2),
            "top1" => Ok(Encoding::Top1),
            "top2q8" => Ok(Encoding::Top2Q8),
            "top1q8" => Ok(Encoding::Top1Q8),
            other => Err(Error::field(
                "encoding",
                format!("unknown encoding `{other}` (expected f32, f16, q8, q4, top2, top1, top2q8 or top1q8)"),
            )),
        }
    }
}

/// Caps on what a receiver will accept. Checked before any allocation proportional to the input.
///
/// Each message kind has its own size cap ([`Limits::body_cap`]): small kinds (a `Hello`, a
/// receipt) a kibibyte, a submission exactly what its largest allowed matrix takes. A receiver
/// that knows the shape of every matrix it will be sent (an aggregator does, from its config)
/// sets `max_samples`, `max_classes` and `encoding` to it, and a submission of any other size
/// is refused before its bytes are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded message (envelope included) in bytes, whatever its kind.
    pub max_message_bytes: usize,
    /// Most reference samples in one soft-label matrix.
    pub max_samples: u32,
    /// Most classes.
    pub max_classes: u32,
    /// The one encoding soft-label matrices may use, when the receiver knows it (None: any).
    pub encoding: Option<Encoding>,
    /// Most members in a secure-aggregation cohort.
    pub max_cohort: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: MAX_MESSAGE_BYTES,
            max_samples: 200_000,
            max_classes: 1_000,
            encoding: None,
            max_cohort: 1_024,
        }
    }
}

/// Bytes a message body may take besides its soft labels, selection and weights: ids, numbers,
/// texts of at most [`crate::message::MAX_DETAIL_LEN`] bytes, length prefixes.
pub const SMALL_BODY_BYTES: usize = 1024;

/// Bytes an envelope adds to its body: version, kind, signer, length prefixes, signature.
pub const ENVELOPE_OVERHEAD: usize = 128;

impl Limits {
    /// Largest soft-label payload (`SoftLabels::data`) these limits admit.
    pub fn max_labels_bytes(&self) -> usize {
        let (samples, classes) = (self.max_samples as usize, self.max_classes as usize);
        match self.encoding {
            Some(e) => e.payload_bytes(samples, classes),
            None => Encoding::ALL.iter().map(|e| e.payload_bytes(samples, classes)).max().unwrap_or(0),
        }
    }

    /// Largest secure-aggregation message these limits admit: a masked vector of 4-byte words
    /// (`max_samples × (max_classes + 1)`), an unmask request signed by every member of the
    /// largest cohort with each one's masking set, or what a member sends its most numerous neighbours (at most 255).
    pub fn max_secure_bytes(&self) -> usize {
        let words = (self.max_samples as usize).saturating_mul(self.max_classes as usize + 1);
        let cohort = self.max_cohort as usize;
        let set = 9 + cohort.div_ceil(8);
        let masked = words.saturating_mul(4) + 16 + set + 65;
        let request = set + cohort * (3 + 1 + 64) + cohort * (3 + set + 65) + 32;
        let neighbours = 255 * (3 + 3 + 9 + 64 + 16) + 255 * (3 + 9 + 32 + 16) + 64;
        masked.max(request).max(neighbours)
    }

    /// Largest encoded body of a message of `kind`, never above `max_message_bytes`.
    pub fn body_cap(&self, kind: MessageKind) -> usize {
        let samples = self.max_samples as usize;
        // A selection of explicit indices: one varint of at most 5 bytes per sample.
        let selection = 5 * samples;
        let cap = match kind {
            MessageKind::Hello
            | MessageKind::JoinReply
            | MessageKind::Receipt
            | MessageKind::Finished
            | MessageKind::RefSetRequest => 0,
            // The selection, and a secure round's cohort.
            MessageKind::RoundAnnouncement => selection + 32 * self.max_cohort as usize,
            // The labels and an abstention mask of one bit a sample.
            MessageKind::Submission => self.max_labels_bytes() + crate::mask::mask_bytes(samples),
            // The selection, a weight byte and a count (a varint of at most 3 bytes) a sample.
            MessageKind::Consensus => selection + 4 * samples + self.max_labels_bytes(),
            MessageKind::RefSetChunk => MAX_CHUNK_BYTES as usize,
            MessageKind::SecureStep | MessageKind::SecureReply => self.max_secure_bytes(),
        };
        cap.saturating_add(SMALL_BODY_BYTES).min(self.max_message_bytes)
    }

    /// Largest encoded envelope whose kind is `kind`. `None` (a kind byte that names no message,
    /// or an unknown version) gets the smallest cap: such a message is only ever refused.
    pub fn frame_cap(&self, kind: Option<MessageKind>) -> usize {
        let body = kind.map_or(SMALL_BODY_BYTES, |k| self.body_cap(k));
        body.saturating_add(ENVELOPE_OVERHEAD).min(self.max_message_bytes)
    }

    /// Largest encoded envelope of any kind.
    pub fn max_frame(&self) -> usize {
        MessageKind::ALL.iter().map(|&k| self.frame_cap(Some(k))).max().unwrap_or(0)
    }
}

/// A samples × classes matrix of probabilities, encoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftLabels {
    /// Number of rows (reference samples).
    pub samples: u32,
    /// Number of columns (classes).
    pub classes: u32,
    /// Layout of `data`.
    pub encoding: Encoding,
    /// The encoded matrix, row-major.
    #[serde(with = "crate::bounded::bytes")]
    pub data: Vec<u8>,
}

impl SoftLabels {
    /// Validates `probs` (row-major, `samples × classes`), renormalises each row and encodes it.
    pub fn encode(probs: &[f32], samples: usize, classes: usize, encoding: Encoding) -> Result<Self> {
        let expected = samples.checked_mul(classes).ok_or_else(|| Error::Shape("overflow".into()))?;
        if classes == 0 {
            return Err(Error::Shape("zero classes".into()));
        }
        if probs.len() != expected {
            return Err(Error::Shape(format!("{samples} × {classes} needs {expected} values, got {}", probs.len())));
        }
        let (s32, c32) = (to_u32(samples, "samples")?, to_u32(classes, "classes")?);
        check_probabilities(probs, classes)?;
        let mut data = Vec::with_capacity(encoding.payload_bytes(samples, classes));
        let mut row64 = vec![0f64; classes];
        let mut quantiser = Quantiser::default();
        let (mut packer, mut bits_out) = (packed::Packer::default(), Vec::new());
        let mut bits = packed::BitWriter::new(&mut bits_out);
        for row in probs.chunks_exact(classes) {
            let sum: f64 = row.iter().map(|&p| p as f64).sum();
            for (dst, &p) in row64.iter_mut().zip(row) {
                *dst = p as f64 / sum;
            }
            match encoding {
                Encoding::F32 => row64.iter().for_each(|&p| data.extend_from_slice(&(p as f32).to_le_bytes())),
                Encoding::F16 => {
                    row64.iter().for_each(|&p| data.extend_from_slice(&half::f16::from_f64(p).to_le_bytes()))
                }
                Encoding::Q8 => quantiser.row(&row64, &mut data),
                Encoding::Q4 => packer.q4(&row64, &mut bits),
                Encoding::Top2 | Encoding::Top1 | Encoding::Top2Q8 | Encoding::Top1Q8 => {
                    packer.top(encoding.top_k(), encoding.code_bits(), &row64, &mut bits)
                }
            }
        }
        bits.finish();
        data.append(&mut bits_out);
        Ok(Self { samples: s32, classes: c32, encoding, data })
    }

    /// Checks the shape against `limits` and the payload length, without decoding.
    pub fn check_shape(&self, limits: &Limits) -> Result<()> {
        if self.samples == 0 || self.classes == 0 {
            return Err(Error::Shape(format!("empty matrix {} × {}", self.samples, self.classes)));
        }
        if self.samples > limits.max_samples || self.classes > limits.max_classes {
            return Err(Error::Shape(format!(
                "{} × {} exceeds the caps {} × {}",
                self.samples, self.classes, limits.max_samples, limits.max_classes
            )));
        }
        if limits.encoding.is_some_and(|e| e != self.encoding) {
            return Err(Error::Shape(format!(
                "encoding {}, expected {}",
                self.encoding,
                limits.encoding.map_or(String::new(), |e| e.to_string())
            )));
        }
        let expected = self.encoding.payload_bytes(self.samples as usize, self.classes as usize);
        if self.data.len() != expected {
            return Err(Error::Shape(format!(
                "{} × {} in {:?} needs {expected} bytes, payload has {}",
                self.samples,
                self.classes,
                self.encoding,
                self.data.len()
            )));
        }
        Ok(())
    }

    /// Decodes and validates the matrix in one pass; rows of the result sum to 1.
    ///
    /// This is the only way to read the values, so every consumer validates them: each value
    /// finite and in [0, 1], each row summing to 1 ± [`ROW_SUM_TOLERANCE`] (for `Q8`, the
    /// integer codes summing exactly to the row's denominator).
    pub fn decode(&self, limits: &Limits) -> Result<Vec<f32>> {
        self.decode_kept(limits).map(|(probs, _)| probs)
    }

    /// Like [`SoftLabels::decode`], and for a top-k encoding also which classes each row sent
    /// (row-major, `samples × classes`, exactly k set a row): the others share the row's rest
    /// evenly in the decoded rows, a guess a receiver may replace with its own.
    pub fn decode_kept(&self, limits: &Limits) -> Result<(Vec<f32>, Option<Vec<bool>>)> {
        self.check_shape(limits)?;
        let classes = self.classes as usize;
        let mut out = vec![0f32; self.samples as usize * classes];
        let mut kept = (self.encoding.top_k() > 0).then(|| vec![false; out.len()]);
        let rows = out.chunks_exact_mut(classes);
        match self.encoding {
            Encoding::F32 => {
                for (r, (dst, src)) in rows.zip(self.data.chunks_exact(4 * classes)).enumerate() {
                    for (d, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                        *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    }
                    check_and_normalise_row(r, dst)?;
                }
            }
            Encoding::F16 => {
                for (r, (dst, src)) in rows.zip(self.data.chunks_exact(2 * classes)).enumerate() {
                    for (d, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                        *d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                    }
                    check_and_normalise_row(r, dst)?;
                }
            }
            Encoding::Q8 => {
                for (r, (dst, src)) in rows.zip(self.data.chunks_exact(2 + classes)).enumerate() {
                    let denom = u16::from_le_bytes([src[0], src[1]]) as u32;
                    let sum: u32 = src[2..].iter().map(|&q| q as u32).sum();
                    if denom == 0 || sum != denom {
                        return Err(Error::Values(format!("row {r}: codes sum to {sum}, denominator is {denom}")));
                    }
                    let inv = 1.0 / denom as f32;
                    for (d, &q) in dst.iter_mut().zip(&src[2..]) {
                        *d = q as f32 * inv;
                    }
                }
            }
            Encoding::Q4 | Encoding::Top2 | Encoding::Top1 | Encoding::Top2Q8 | Encoding::Top1Q8 => {
                let (mut src, mut taken) = (packed::BitReader::new(&self.data), Vec::new());
                for (r, dst) in rows.enumerate() {
                    match self.encoding {
                        Encoding::Q4 => packed::q4_row(r, &mut src, dst)?,
                        e => {
                            packed::top_row(r, e.top_k(), e.code_bits(), &mut src, dst, &mut taken)?;
                            if let Some(k) = kept.as_mut() {
                                k[r * classes..(r + 1) * classes].copy_from_slice(&taken);
                            }
                        }
                    }
                }
                if !src.rest_is_zero() {
                    return Err(Error::Values("padding bits after the last row are not zero".into()));
                }
            }
        }
        Ok((out, kept))
    }
}

/// Checks one decoded row (finite, in [0, 1], sum 1 ± tolerance) and rescales it to sum to 1.
fn check_and_normalise_row(r: usize, row: &mut [f32]) -> Result<()> {
    let mut sum = 0f32;
    let mut ok = true;
    for &p in row.iter() {
        ok &= (0.0..=1.0).contains(&p);
        sum += p;
    }
    if !ok {
        let (c, p) =
            row.iter().enumerate().find(|(_, p)| !(0.0..=1.0).contains(*p)).map(|(c, p)| (c, *p)).unwrap_or((0, 0.0));
        return Err(Error::Values(format!("row {r}, class {c}: {p} is not a probability")));
    }
    if (sum - 1.0).abs() > ROW_SUM_TOLERANCE {
        return Err(Error::Values(format!("row {r} sums to {sum}, not 1")));
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|p| *p *= inv);
    Ok(())
}

fn to_u32(n: usize, what: &'static str) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Shape(format!("{what} = {n} does not fit u32")))
}

/// Checks that every value is finite and in [0, 1] and every row sums to 1 ± [`ROW_SUM_TOLERANCE`].
pub fn check_probabilities(values: &[f32], classes: usize) -> Result<()> {
    if classes == 0 || !values.len().is_multiple_of(classes) {
        return Err(Error::Shape(format!("{} values do not split into rows of {classes}", values.len())));
    }
    for (r, row) in values.chunks_exact(classes).enumerate() {
        let mut sum = 0f64;
        for (c, &p) in row.iter().enumerate() {
            if !p.is_finite() {
                return Err(Error::Values(format!("row {r}, class {c}: {p} is not finite")));
            }
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::Values(format!("row {r}, class {c}: {p} is outside [0, 1]")));
            }
            sum += p as f64;
        }
        if (sum - 1.0).abs() > ROW_SUM_TOLERANCE as f64 {
            return Err(Error::Values(format!("row {r} sums to {sum}, not 1")));
        }
    }
    Ok(())
}

/// Reusable buffers for [`quantise_row`].
#[derive(Default)]
struct Quantiser {
    q: Vec<u32>,
    frac: Vec<(f64, usize)>,
}

impl Quantiser {
    /// Largest-remainder quantisation of one row that sums to 1 (see the module docs).
    fn row(&mut self, row: &[f64], out: &mut Vec<u8>) {
        let max = row.iter().copied().fold(0.0f64, f64::max);
        let target = (255.0 / max).floor().min(Q8_MAX_DENOMINATOR);
        self.q.clear();
        self.frac.clear();
        let mut total: i64 = 0;
        for (i, &p) in row.iter().enumerate() {
            let x = p * target;
            let f = x.floor().clamp(0.0, 255.0);
            self.q.push(f as u32);
            self.frac.push((x - f, i));
            total += f as i64;
        }
        let deficit = target as i64 - total;
        if deficit != 0 {
            // Hand out the deficit (it is smaller than the row length) to the largest
            // remainders, or take an excess back from the smallest.
            let up = deficit > 0;
            let need = deficit.unsigned_abs() as usize;
            let cmp = |a: &(f64, usize), b: &(f64, usize)| {
                let o = if up { b.0.total_cmp(&a.0) } else { a.0.total_cmp(&b.0) };
                o.then(a.1.cmp(&b.1))
            };
            if need < self.frac.len() {
                self.frac.select_nth_unstable_by(need, cmp);
            }
            let mut left = need;
            for k in 0..self.frac.len() {
                if left == 0 {
                    break;
                }
                if k == need {
                    // Anything not yet placed (entries at their bound) goes to the rest, in order.
                    self.frac[need..].sort_by(cmp);
                }
                let i = self.frac[k].1;
                if up && self.q[i] < 255 {
                    self.q[i] += 1;
                    left -= 1;
                } else if !up && self.q[i] > 0 {
                    self.q[i] -= 1;
                    left -= 1;
                }
            }
        }
        let denom: u32 = self.q.iter().sum();
        out.extend_from_slice(&(denom.clamp(1, u16::MAX as u32) as u16).to_le_bytes());
        out.extend(self.q.iter().map(|&v| v as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Random probability matrices: rows of positive weights (some exactly zero), normalised.
    fn matrix() -> impl Strategy<Value = (Vec<f32>, usize, usize)> {
        (1usize..40, 1usize..30).prop_flat_map(|(samples, classes)| {
            proptest::collection::vec(
                prop_oneof![3 => 0.0f32..1.0, 1 => Just(0.0f32), 1 => 0.0f32..1e-6],
                samples * classes,
            )
            .prop_map(move |mut v| {
                for row in v.chunks_exact_mut(classes) {
                    let s: f32 = row.iter().sum();
                    if s <= 0.0 {
                        row.iter_mut().for_each(|p| *p = 0.0);
                        row[0] = 1.0;
                    } else {
                        row.iter_mut().for_each(|p| *p /= s);
                    }
                }
                (v, samples, classes)
            })
        })
    }

    fn bound(e: Encoding) -> f32 {
        match e {
            Encoding::F32 => 1e-5,
            Encoding::F16 => 4.9e-4 + 1e-5,
            Encoding::Q8 => 1.0 / 255.0,
            Encoding::Q4 => 1.0 / 15.0,
            // Top-k rows are checked by `top_k_rows_keep_the_largest_within_their_bound`.
            Encoding::Top2 | Encoding::Top1 | Encoding::Top2Q8 | Encoding::Top1Q8 => 1.0,
        }
    }

    proptest! {
        #[test]
        fn every_encoding_round_trips_within_its_bound((probs, samples, classes) in matrix()) {
            for enc in Encoding::ALL {
                let sl = SoftLabels::encode(&probs, samples, classes, enc).unwrap();
                prop_assert_eq!(sl.data.len(), (samples * enc.row_bits(classes)).div_ceil(8));
                let back = sl.decode(&Limits::default()).unwrap();
                for (a, b) in probs.iter().zip(&back) {
                    prop_assert!((a - b).abs() <= bound(enc), "{:?}: {} vs {}", enc, a, b);
                }
                for row in back.chunks_exact(classes) {
                    let s: f32 = row.iter().sum();
                    prop_assert!((s - 1.0).abs() < 1e-5, "row sums to {}", s);
                }
            }
        }

        #[test]
        fn q8_rows_sum_exactly_to_their_denominator((probs, samples, classes) in matrix()) {
            let sl = SoftLabels::encode(&probs, samples, classes, Encoding::Q8).unwrap();
            for row in sl.data.chunks_exact(2 + classes) {
                let denom = u16::from_le_bytes([row[0], row[1]]) as u32;
                let sum: u32 = row[2..].iter().map(|&q| q as u32).sum();
                prop_assert_eq!(denom, sum);
                prop_assert!(denom >= 255);
            }
        }

        #[test]
        fn decode_of_arbitrary_payload_never_panics(samples in 0u32..50, classes in 0u32..20,
                                                     enc in proptest::sample::select(Encoding::ALL.to_vec()),
                                                     data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let sl = SoftLabels { samples, classes, encoding: enc, data };
            let _ = sl.decode(&Limits::default());
        }
    }

    proptest! {
        #[test]
        fn top_k_rows_keep_the_largest_within_their_bound((probs, samples, classes) in matrix()) {
            for (enc, k, step) in [
                (Encoding::Top2, 2usize, 1.0 / 15.0),
                (Encoding::Top1, 1, 1.0 / 15.0),
                (Encoding::Top2Q8, 2, 1.0 / 255.0),
                (Encoding::Top1Q8, 1, 1.0 / 255.0),
            ] {
                let back = SoftLabels::encode(&probs, samples, classes, enc).unwrap().decode(&Limits::default()).unwrap();
                for (row, dec) in probs.chunks_exact(classes).zip(back.chunks_exact(classes)) {
                    let mut sorted = row.to_vec();
                    sorted.sort_by(|a, b| b.total_cmp(a));
                    let kth = sorted[k.min(classes) - 1];
                    for (&p, &d) in row.iter().zip(dec) {
                        prop_assert!((p - d).abs() <= kth + step + 1e-5, "{:?}: {} vs {}", enc, p, d);
                    }
                    // The largest probability is kept within one code step.
                    let arg = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0))).map(|(i, _)| i).unwrap();
                    prop_assert!((row[arg] - dec[arg]).abs() <= step + 1e-5, "{:?}: {} vs {}", enc, row[arg], dec[arg]);
                    prop_assert!((dec.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                }
            }
        }

        #[test]
        fn kept_classes_are_the_k_largest_and_only_top_k_names_them((probs, samples, classes) in matrix()) {
            for enc in Encoding::ALL {
                let sl = SoftLabels::encode(&probs, samples, classes, enc).unwrap();
                let (back, kept) = sl.decode_kept(&Limits::default()).unwrap();
                prop_assert_eq!(&back, &sl.decode(&Limits::default()).unwrap());
                let Some(kept) = kept else {
                    prop_assert_eq!(enc.top_k(), 0);
                    continue;
                };
                for (row, k) in probs.chunks_exact(classes).zip(kept.chunks_exact(classes)) {
                    prop_assert_eq!(k.iter().filter(|&&b| b).count(), enc.top_k().min(classes));
                    // No class left out is more probable than a kept one.
                    let least_kept = row.iter().zip(k).filter(|(_, b)| **b).map(|(p, _)| *p).fold(1.0f32, f32::min);
                    prop_assert!(row.iter().zip(k).filter(|(_, b)| !**b).all(|(p, _)| *p <= least_kept));
                }
            }
        }

        #[test]
        fn q4_decodes_to_its_own_codes((probs, samples, classes) in matrix()) {
            // Decoding and encoding again gives the same rows: the codes are exact. (Not so for
            // top-k: the classes left out share their mass evenly, and one of them may then tie
            // with a kept one.)
            for enc in [Encoding::Q4] {
                let sl = SoftLabels::encode(&probs, samples, classes, enc).unwrap();
                let back = sl.decode(&Limits::default()).unwrap();
                let again = SoftLabels::encode(&back, samples, classes, enc).unwrap().decode(&Limits::default()).unwrap();
                for (a, b) in back.iter().zip(&again) {
                    prop_assert!((a - b).abs() < 1e-6, "{:?}: {} vs {}", enc, a, b);
                }
            }
        }
    }

    #[test]
    fn packed_payloads_are_refused_when_their_codes_do_not_add_up() {
        let limits = Limits::default();
        // q4, two classes: codes 15 + 0 is a row; 14 + 0 is not.
        let ok = SoftLabels { samples: 1, classes: 2, encoding: Encoding::Q4, data: vec![0x0F] };
        assert_eq!(ok.decode(&limits).unwrap(), vec![1.0, 0.0]);
        let short = SoftLabels { data: vec![0x0E], ..ok.clone() };
        assert!(matches!(short.decode(&limits), Err(Error::Values(_))));
        // top1 over 4 classes (2-bit ids): class 2 with code 15, then nonzero padding.
        let top = SoftLabels { samples: 1, classes: 4, encoding: Encoding::Top1, data: vec![0b0011_1110] };
        assert_eq!(top.decode(&limits).unwrap(), vec![0.0, 0.0, 1.0, 0.0]);
        let padded = SoftLabels { data: vec![0b0111_1110], ..top.clone() };
        assert!(matches!(padded.decode(&limits), Err(Error::Values(_))));
        // top2 with the same class twice.
        let twice = SoftLabels { samples: 1, classes: 4, encoding: Encoding::Top2, data: vec![0x9A, 0x06] };
        assert!(matches!(twice.decode(&limits), Err(Error::Values(_))));
        // top1 over 10 classes (4-bit ids): class 12 does not exist.
        let beyond = SoftLabels { samples: 1, classes: 10, encoding: Encoding::Top1, data: vec![0x7C] };
        assert!(matches!(beyond.decode(&limits), Err(Error::Values(_))));
    }

    #[test]
    fn invalid_inputs_are_refused_with_the_right_error() {
        let ok = [0.5f32, 0.5];
        assert!(matches!(SoftLabels::encode(&ok, 2, 2, Encoding::F32), Err(Error::Shape(_))));
        assert!(matches!(SoftLabels::encode(&[f32::NAN, 1.0], 1, 2, Encoding::F32), Err(Error::Values(_))));
        assert!(matches!(SoftLabels::encode(&[f32::INFINITY, 0.0], 1, 2, Encoding::Q8), Err(Error::Values(_))));
        assert!(matches!(SoftLabels::encode(&[-0.1, 1.1], 1, 2, Encoding::F16), Err(Error::Values(_))));
        assert!(matches!(SoftLabels::encode(&[0.5, 0.6], 1, 2, Encoding::F32), Err(Error::Values(_))));

        let mut sl = SoftLabels::encode(&ok, 1, 2, Encoding::F32).unwrap();
        sl.data.pop();
        assert!(matches!(sl.decode(&Limits::default()), Err(Error::Shape(_))));
        let big = SoftLabels { samples: 300_000, classes: 2, encoding: Encoding::F32, data: vec![] };
        assert!(matches!(big.check_shape(&Limits::default()), Err(Error::Shape(_))));
        let nan = SoftLabels {
            samples: 1,
            classes: 2,
            encoding: Encoding::F32,
            data: [f32::NAN.to_le_bytes(), 1f32.to_le_bytes()].concat(),
        };
        assert!(matches!(nan.decode(&Limits::default()), Err(Error::Values(_))));
        let zero = SoftLabels { samples: 1, classes: 1, encoding: Encoding::Q8, data: vec![0, 0, 5] };
        assert!(matches!(zero.decode(&Limits::default()), Err(Error::Values(_))));
        let short = SoftLabels { samples: 1, classes: 2, encoding: Encoding::Q8, data: vec![255, 0, 100, 100] };
        assert!(matches!(short.decode(&Limits::default()), Err(Error::Values(_))));
        let over = SoftLabels {
            samples: 1,
            classes: 2,
            encoding: Encoding::F16,
            data: [half::f16::from_f32(1.5).to_le_bytes(), half::f16::from_f32(0.0).to_le_bytes()].concat(),
        };
        assert!(matches!(over.decode(&Limits::default()), Err(Error::Values(_))));
    }

    #[test]
    fn q8_is_smallest_and_parse_accepts_config_names() {
        assert!(Encoding::Q8.row_bits(10) < Encoding::F16.row_bits(10));
        assert_eq!(Encoding::Top1.payload_bytes(250, 10), 250);
        assert_eq!(Encoding::Top2.payload_bytes(250, 10), 500);
        assert_eq!(Encoding::Top1Q8.payload_bytes(250, 10), 375);
        assert_eq!(Encoding::Top2Q8.payload_bytes(250, 10), 750);
        assert_eq!(Encoding::Q4.payload_bytes(3, 3), 5);
        for e in Encoding::ALL {
            assert_eq!(Encoding::parse(&e.to_string()).unwrap(), e);
        }
        assert_eq!(Encoding::parse("Q8").unwrap(), Encoding::Q8);
        assert_eq!(Encoding::parse("f16").unwrap(), Encoding::F16);
        assert!(Encoding::parse("f64").is_err());
    }
}
