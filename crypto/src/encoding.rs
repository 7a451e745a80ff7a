//! Fixed-point encoding of float vectors into the ring Z_{2^32} or Z_{2^64}.
//!
//! Secure aggregation sums integers modulo R = 2^bits. A float update is clipped (see
//! [`clip_l2`]), scaled by 2^`frac_bits`, rounded to the nearest integer and stored in two's
//! complement. The coordinator only ever sees the sum of `n` such vectors; as long as the true
//! integer sum stays inside (-2^(bits-1), 2^(bits-1)) the signed reading of the ring sum is
//! exact, and dividing by 2^`frac_bits` gives the float sum to within `n · 2^-(frac_bits+1)`.
//!
//! **Invariant:** a [`FixedPoint`] only exists for configurations in which that headroom is
//! guaranteed: `max_participants · round(max_abs · 2^frac_bits) ≤ 2^(bits-1) - 1`. Anything
//! else is refused at construction with [`EncodingError::WouldWrap`], and values outside
//! `[-max_abs, max_abs]` are refused at [`FixedPoint::encode`], so a sum can never wrap
//! silently.

use std::fmt;

use thiserror::Error;

/// Largest number of fractional bits: the scaled value must stay exactly representable in
/// an `f64` mantissa.
pub const MAX_FRAC_BITS: u32 = 52;

/// Everything that can go wrong while encoding, decoding or combining ring vectors.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum EncodingError {
    /// Two ring vectors of different lengths were combined.
    #[error("ring vector length mismatch: {left} vs {right} elements")]
    LengthMismatch { left: usize, right: usize },
    /// Two ring vectors (or a vector and a configuration) use different moduli.
    #[error("modulus mismatch: expected {expected}, found {found}")]
    ModulusMismatch { expected: Modulus, found: Modulus },
    /// A byte string is not a whole number of ring elements.
    #[error("{len} bytes is not a multiple of the element size {element_bytes}")]
    ByteLength { len: usize, element_bytes: usize },
    /// The sum of `max_participants` values of magnitude `max_abs` could leave the signed
    /// range of the ring.
    #[error(
        "Z_2^{modulus_bits} with {frac_bits} fractional bits would wrap: {max_participants} \
         participants x {max_scaled} (= {max_abs} x 2^{frac_bits}, rounded) = {worst_case_sum} \
         > {limit}"
    )]
    WouldWrap {
        modulus_bits: u32,
        frac_bits: u32,
        max_abs: f64,
        max_participants: u32,
        /// `round(max_abs · 2^frac_bits)`, the largest encoded magnitude of one value.
        max_scaled: f64,
        /// `max_participants · max_scaled`, the largest magnitude of the sum.
        worst_case_sum: f64,
        /// `2^(bits-1) - 1`, the largest magnitude the signed reading can hold.
        limit: u64,
    },
    /// `max_abs` must be finite and strictly positive.
    #[error("max_abs must be finite and > 0, got {max_abs}")]
    InvalidMaxAbs { max_abs: f64 },
    /// More fractional bits than an `f64` mantissa can carry.
    #[error("frac_bits {frac_bits} exceeds the maximum {max}")]
    FracBitsTooLarge { frac_bits: u32, max: u32 },
    /// `max_participants` must be at least 1.
    #[error("max_participants must be at least 1")]
    NoParticipants,
    /// `max_abs · 2^frac_bits` rounds to zero: every value would encode as 0.
    #[error("max_abs {max_abs} with {frac_bits} fractional bits rounds to zero")]
    TooCoarse { max_abs: f64, frac_bits: u32 },
    /// Not even Z_{2^64} with zero fractional bits can hold the sum.
    #[error(
        "no modulus fits {max_participants} participants with values in [-{max_abs}, {max_abs}]"
    )]
    NoFittingModulus { max_abs: f64, max_participants: u32 },
    /// Z_2^64 cannot hold the sum at the resolution asked for.
    #[error(
        "no modulus fits {max_participants} participants with values in [-{max_abs}, {max_abs}] \
         at a resolution of 2^-{min_frac_bits}"
    )]
    NoResolution {
        max_abs: f64,
        max_participants: u32,
        min_frac_bits: u32,
    },
    /// A value is NaN or infinite.
    #[error("value at index {index} is not finite: {value}")]
    NonFinite { index: usize, value: f64 },
    /// A value lies outside `[-max_abs, max_abs]`.
    #[error("value at index {index} is {value}, outside [-{max_abs}, {max_abs}]")]
    OutOfRange {
        index: usize,
        value: f64,
        max_abs: f64,
    },
    /// A sum claims more participants than the configuration guarantees.
    #[error("sum of {participants} participants exceeds the configured maximum {max}")]
    TooManyParticipants { participants: usize, max: u32 },
}

/// The ring modulus R = 2^32 or 2^64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Modulus {
    Pow32,
    Pow64,
}

impl Modulus {
    /// 32 or 64.
    pub fn bits(self) -> u32 {
        match self {
            Modulus::Pow32 => 32,
            Modulus::Pow64 => 64,
        }
    }

    /// 4 or 8.
    pub fn bytes_per_element(self) -> usize {
        match self {
            Modulus::Pow32 => 4,
            Modulus::Pow64 => 8,
        }
    }

    /// `2^(bits-1) - 1`: the largest magnitude the signed reading of an element can hold.
    pub fn signed_limit(self) -> u64 {
        (1u64 << (self.bits() - 1)) - 1
    }
}

impl fmt::Display for Modulus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Z_2^{}", self.bits())
    }
}

/// A vector of ring elements; all arithmetic wraps modulo 2^bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingVec {
    U32(Vec<u32>),
    U64(Vec<u64>),
}

impl RingVec {
    /// `len` zero elements.
    pub fn zeros(modulus: Modulus, len: usize) -> Self {
        match modulus {
            Modulus::Pow32 => RingVec::U32(vec![0; len]),
            Modulus::Pow64 => RingVec::U64(vec![0; len]),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            RingVec::U32(v) => v.len(),
            RingVec::U64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn modulus(&self) -> Modulus {
        match self {
            RingVec::U32(_) => Modulus::Pow32,
            RingVec::U64(_) => Modulus::Pow64,
        }
    }

    fn check_compatible(&self, other: &RingVec) -> Result<(), EncodingError> {
        if self.modulus() != other.modulus() {
            return Err(EncodingError::ModulusMismatch {
                expected: self.modulus(),
                found: other.modulus(),
            });
        }
        if self.len() != other.len() {
            return Err(EncodingError::LengthMismatch {
                left: self.len(),
                right: other.len(),
            });
        }
        Ok(())
    }

    /// `self += other` element-wise, wrapping. Refuses a length or modulus mismatch
    /// (and then leaves `self` untouched).
    pub fn add_assign(&mut self, other: &RingVec) -> Result<(), EncodingError> {
        self.check_compatible(other)?;
        match (self, other) {
            (RingVec::U32(a), RingVec::U32(b)) => a
                .iter_mut()
                .zip(b)
                .for_each(|(x, y)| *x = x.wrapping_add(*y)),
            (RingVec::U64(a), RingVec::U64(b)) => a
                .iter_mut()
                .zip(b)
                .for_each(|(x, y)| *x = x.wrapping_add(*y)),
            // Unreachable after check_compatible; refuse rather than panic.
            (a, b) => {
                return Err(EncodingError::ModulusMismatch {
                    expected: a.modulus(),
                    found: b.modulus(),
                })
            }
        }
        Ok(())
    }

    /// `self -= other` element-wise, wrapping. Refuses a length or modulus mismatch
    /// (and then leaves `self` untouched).
    pub fn sub_assign(&mut self, other: &RingVec) -> Result<(), EncodingError> {
        self.check_compatible(other)?;
        match (self, other) {
            (RingVec::U32(a), RingVec::U32(b)) => a
                .iter_mut()
                .zip(b)
                .for_each(|(x, y)| *x = x.wrapping_sub(*y)),
            (RingVec::U64(a), RingVec::U64(b)) => a
                .iter_mut()
                .zip(b)
                .for_each(|(x, y)| *x = x.wrapping_sub(*y)),
            (a, b) => {
                return Err(EncodingError::ModulusMismatch {
                    expected: a.modulus(),
                    found: b.modulus(),
                })
            }
        }
        Ok(())
    }

    /// Little-endian bytes, `bytes_per_element` per element.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            RingVec::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            RingVec::U64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// Inverse of [`RingVec::to_le_bytes`]; refuses a length that is not a whole number of
    /// elements.
    pub fn from_le_bytes(modulus: Modulus, bytes: &[u8]) -> Result<Self, EncodingError> {
        let w = modulus.bytes_per_element();
        if bytes.len() % w != 0 {
            return Err(EncodingError::ByteLength {
                len: bytes.len(),
                element_bytes: w,
            });
        }
        Ok(match modulus {
            Modulus::Pow32 => RingVec::U32(
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Modulus::Pow64 => RingVec::U64(
                bytes
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
        })
    }
}

/// A validated fixed-point configuration: values in `[-max_abs, max_abs]`, scaled by
/// 2^`frac_bits`, summed over at most `max_participants` participants without wrapping.
///
/// Construct it with [`FixedPoint::new`] or [`FixedPoint::choose`]; the public fields are
/// for reading (a hand-built value skips the headroom check, and `encode` then still refuses
/// out-of-range values but cannot promise the sum fits).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FixedPoint {
    pub modulus: Modulus,
    pub frac_bits: u32,
    pub max_abs: f64,
    pub max_participants: u32,
}

impl FixedPoint {
    /// Refuses ([`EncodingError::WouldWrap`], with the numbers) any configuration in which the
    /// sum of `max_participants` values each in `[-max_abs, max_abs]`, scaled by
    /// 2^`frac_bits` and rounded, could leave (-2^(bits-1), 2^(bits-1)). Also refuses a
    /// non-finite or non-positive `max_abs`, `frac_bits > 52`, zero participants, and a
    /// `max_abs` so small that it rounds to zero.
    pub fn new(
        modulus: Modulus,
        frac_bits: u32,
        max_abs: f64,
        max_participants: u32,
    ) -> Result<Self, EncodingError> {
        if !max_abs.is_finite() || max_abs <= 0.0 {
            return Err(EncodingError::InvalidMaxAbs { max_abs });
        }
        if frac_bits > MAX_FRAC_BITS {
            return Err(EncodingError::FracBitsTooLarge {
                frac_bits,
                max: MAX_FRAC_BITS,
            });
        }
        if max_participants == 0 {
            return Err(EncodingError::NoParticipants);
        }
        // Exact: multiplying by a power of two only changes the exponent.
        let max_scaled = (max_abs * pow2(frac_bits)).round();
        if max_scaled == 0.0 {
            return Err(EncodingError::TooCoarse { max_abs, frac_bits });
        }
        let limit = modulus.signed_limit();
        let worst_case_sum = max_scaled * f64::from(max_participants);
        let wrap = || EncodingError::WouldWrap {
            modulus_bits: modulus.bits(),
            frac_bits,
            max_abs,
            max_participants,
            max_scaled,
            worst_case_sum,
            limit,
        };
        // max_scaled is an integer-valued f64 (or +inf); below 2^64 the conversion is exact.
        if max_scaled >= pow2(64) {
            return Err(wrap());
        }
        let exact_sum = u128::from(max_scaled as u64) * u128::from(max_participants);
        if exact_sum > u128::from(limit) {
            return Err(wrap());
        }
        Ok(FixedPoint {
            modulus,
            frac_bits,
            max_abs,
            max_participants,
        })
    }

    /// The smallest modulus (Z_2^32 preferred) that fits `max_participants` values in
    /// `[-max_abs, max_abs]`, with the most fractional bits (at most 52) that still fit.
    /// Refuses if not even Z_2^64 can hold the sum.
    ///
    /// The resolution relative to `max_abs` is then about `2^-(bits-1) · max_participants`,
    /// whatever the size of `max_abs`.
    pub fn choose(max_abs: f64, max_participants: u32) -> Result<Self, EncodingError> {
        if !max_abs.is_finite() || max_abs <= 0.0 {
            return Err(EncodingError::InvalidMaxAbs { max_abs });
        }
        if max_participants == 0 {
            return Err(EncodingError::NoParticipants);
        }
        for modulus in [Modulus::Pow32, Modulus::Pow64] {
            for frac_bits in (0..=MAX_FRAC_BITS).rev() {
                if let Ok(fp) = FixedPoint::new(modulus, frac_bits, max_abs, max_participants) {
                    return Ok(fp);
                }
            }
        }
        Err(EncodingError::NoFittingModulus {
            max_abs,
            max_participants,
        })
    }

    /// Like [`choose`](Self::choose), but the resolution must be at least `2^-min_frac_bits`:
    /// the smallest modulus that gives that many fractional bits, with `frac_bits` the most
    /// that fit in it. For sums that must resolve noise of a given scale (differential
    /// privacy). Refuses when not even Z_2^64 can.
    pub fn choose_with_resolution(
        max_abs: f64,
        max_participants: u32,
        min_frac_bits: u32,
    ) -> Result<Self, EncodingError> {
        let coarse = Self::choose(max_abs, max_participants)?;
        if coarse.frac_bits >= min_frac_bits {
            return Ok(coarse);
        }
        for frac_bits in (min_frac_bits..=MAX_FRAC_BITS).rev() {
            if let Ok(fp) = FixedPoint::new(Modulus::Pow64, frac_bits, max_abs, max_participants) {
                return Ok(fp);
            }
        }
        Err(EncodingError::NoResolution {
            max_abs,
            max_participants,
            min_frac_bits,
        })
    }

    /// Encodes `values` as `round(v · 2^frac_bits)` in two's complement. Refuses, naming the
    /// index and the value, a non-finite value or one with `|v| > max_abs`.
    pub fn encode(&self, values: &[f64]) -> Result<RingVec, EncodingError> {
        let scale = pow2(self.frac_bits);
        let mut scaled = Vec::with_capacity(values.len());
        for (index, &value) in values.iter().enumerate() {
            if !value.is_finite() {
                return Err(EncodingError::NonFinite { index, value });
            }
            if value.abs() > self.max_abs {
                return Err(EncodingError::OutOfRange {
                    index,
                    value,
                    max_abs: self.max_abs,
                });
            }
            // |value · scale| <= round(max_abs · scale) < 2^63 for a validated config;
            // `as` saturates otherwise, it never panics.
            scaled.push((value * scale).round() as i64);
        }
        Ok(match self.modulus {
            Modulus::Pow32 => RingVec::U32(scaled.into_iter().map(|x| x as i32 as u32).collect()),
            Modulus::Pow64 => RingVec::U64(scaled.into_iter().map(|x| x as u64).collect()),
        })
    }

    /// [`FixedPoint::encode`] after clipping every finite value to `[-max_abs, max_abs]`:
    /// the declared range of one participant's contribution, which the coordinator's
    /// plausibility check of the sum relies on. Returns the encoding and what was clipped
    /// (for the caller to log). A non-finite value is still refused, naming its index:
    /// nothing is ever wrapped or silently replaced by a bound.
    pub fn encode_clipped(&self, values: &[f64]) -> Result<(RingVec, Clipped), EncodingError> {
        let mut clipped = Clipped::default();
        let mut inside = Vec::with_capacity(values.len());
        for (index, &value) in values.iter().enumerate() {
            if !value.is_finite() {
                return Err(EncodingError::NonFinite { index, value });
            }
            if value.abs() > self.max_abs {
                clipped.count += 1;
                if value.abs() > clipped.largest.abs() {
                    clipped.largest = value;
                }
                clipped.first_index.get_or_insert(index);
                inside.push(value.clamp(-self.max_abs, self.max_abs));
            } else {
                inside.push(value);
            }
        }
        Ok((self.encode(&inside)?, clipped))
    }

    /// Decodes a SUM of `participants` encodings, reading each element as a signed integer
    /// and dividing by 2^frac_bits. Refuses `participants > max_participants` (the sum could
    /// have wrapped) and a modulus mismatch.
    pub fn decode_sum(
        &self,
        sum: &RingVec,
        participants: usize,
    ) -> Result<Vec<f64>, EncodingError> {
        if participants > self.max_participants as usize {
            return Err(EncodingError::TooManyParticipants {
                participants,
                max: self.max_participants,
            });
        }
        if sum.modulus() != self.modulus {
            return Err(EncodingError::ModulusMismatch {
                expected: self.modulus,
                found: sum.modulus(),
            });
        }
        let inv = 1.0 / pow2(self.frac_bits);
        Ok(match sum {
            RingVec::U32(v) => v.iter().map(|&x| f64::from(x as i32) * inv).collect(),
            RingVec::U64(v) => v.iter().map(|&x| (x as i64) as f64 * inv).collect(),
        })
    }

    /// The largest per-element magnitude of a SUM that still decodes correctly:
    /// `(2^(bits-1) - 1) / 2^frac_bits`. By construction it is at least
    /// `max_participants · max_abs` (up to rounding).
    pub fn sum_bound(&self) -> f64 {
        self.modulus.signed_limit() as f64 / pow2(self.frac_bits)
    }

    /// One line for logs and reports, e.g.
    /// "Z_2^32, 16 fractional bits: up to 100 participants with values in [-1, 1]".
    pub fn describe(&self) -> String {
        format!(
            "{}, {} fractional bits: up to {} participants with values in [-{}, {}]",
            self.modulus, self.frac_bits, self.max_participants, self.max_abs, self.max_abs
        )
    }
}

/// What [`FixedPoint::encode_clipped`] clipped.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Clipped {
    /// How many values lay outside `[-max_abs, max_abs]`.
    pub count: usize,
    /// The clipped value of largest magnitude (0 when none was clipped).
    pub largest: f64,
    /// Index of the first clipped value.
    pub first_index: Option<usize>,
}

/// 2^e as an f64, exact for e <= 1023.
fn pow2(e: u32) -> f64 {
    f64::from(2u32).powi(e as i32)
}

/// Scales `values` in place so that its L2 norm is at most `max_norm`; returns the factor
/// applied (1.0 when the vector already fits, always in [0, 1]).
///
/// A negative or NaN `max_norm` is treated as 0 (everything is zeroed). A vector containing
/// NaN or an infinity is left untouched (factor 1.0): [`FixedPoint::encode`] then refuses it
/// and names the index, which is more useful than silently zeroing it.
pub fn clip_l2(values: &mut [f64], max_norm: f64) -> f64 {
    let max_norm = max_norm.max(0.0);
    let amax = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if values.iter().any(|v| !v.is_finite()) || amax == 0.0 {
        return 1.0;
    }
    // Scale by the largest magnitude first so that the sum of squares cannot overflow.
    let norm = amax
        * values
            .iter()
            .map(|v| (v / amax) * (v / amax))
            .sum::<f64>()
            .sqrt();
    if norm <= max_norm {
        return 1.0;
    }
    let factor = (max_norm / norm).min(1.0);
    values.iter_mut().for_each(|v| *v *= factor);
    factor
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encode_clipped_clamps_counts_and_still_refuses_non_finite() {
        let fp = FixedPoint::choose(2.0, 10).unwrap();
        let (v, c) = fp.encode_clipped(&[1.0, 5.0, -7.5, -2.0]).unwrap();
        assert_eq!(v, fp.encode(&[1.0, 2.0, -2.0, -2.0]).unwrap());
        assert_eq!(
            c,
            Clipped {
                count: 2,
                largest: -7.5,
                first_index: Some(1)
            }
        );
        let (_, none) = fp.encode_clipped(&[0.5, -2.0]).unwrap();
        assert_eq!(none, Clipped::default());
        assert!(matches!(
            fp.encode_clipped(&[1.0, f64::NAN]),
            Err(EncodingError::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            fp.encode_clipped(&[f64::INFINITY]),
            Err(EncodingError::NonFinite { index: 0, .. })
        ));
    }

    #[test]
    fn modulus_sizes() {
        assert_eq!(Modulus::Pow32.bits(), 32);
        assert_eq!(Modulus::Pow64.bytes_per_element(), 8);
        assert_eq!(Modulus::Pow32.signed_limit(), (1 << 31) - 1);
    }

    #[test]
    fn ring_arithmetic_wraps_and_checks_shapes() {
        let mut a = RingVec::U32(vec![u32::MAX, 5]);
        a.add_assign(&RingVec::U32(vec![2, 1])).unwrap();
        assert_eq!(a, RingVec::U32(vec![1, 6]));
        a.sub_assign(&RingVec::U32(vec![2, 7])).unwrap();
        assert_eq!(a, RingVec::U32(vec![u32::MAX, u32::MAX]));
        assert_eq!(
            a.add_assign(&RingVec::U32(vec![1])),
            Err(EncodingError::LengthMismatch { left: 2, right: 1 })
        );
        assert!(matches!(
            a.sub_assign(&RingVec::U64(vec![1, 2])),
            Err(EncodingError::ModulusMismatch { .. })
        ));
        // Untouched after the refusals.
        assert_eq!(a, RingVec::U32(vec![u32::MAX, u32::MAX]));
    }

    #[test]
    fn bytes_round_trip_and_wrong_length_refused() {
        let v = RingVec::U64(vec![1, u64::MAX, 0x0102_0304_0506_0708]);
        let b = v.to_le_bytes();
        assert_eq!(b.len(), 24);
        assert_eq!(&b[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(RingVec::from_le_bytes(Modulus::Pow64, &b).unwrap(), v);
        assert_eq!(
            RingVec::from_le_bytes(Modulus::Pow64, &b[..23]),
            Err(EncodingError::ByteLength {
                len: 23,
                element_bytes: 8
            })
        );
        assert_eq!(
            RingVec::from_le_bytes(Modulus::Pow32, &[1, 2, 3]),
            Err(EncodingError::ByteLength {
                len: 3,
                element_bytes: 4
            })
        );
        let w = RingVec::U32(vec![7, u32::MAX]);
        assert_eq!(
            RingVec::from_le_bytes(Modulus::Pow32, &w.to_le_bytes()).unwrap(),
            w
        );
    }

    #[test]
    fn would_wrap_refused_exactly_at_the_boundary() {
        // round(1.0 · 2^16) = 65536 per participant; 32767 · 65536 = 2^31 - 65536 fits,
        // 32768 · 65536 = 2^31 does not.
        assert!(FixedPoint::new(Modulus::Pow32, 16, 1.0, 32_767).is_ok());
        match FixedPoint::new(Modulus::Pow32, 16, 1.0, 32_768) {
            Err(EncodingError::WouldWrap {
                max_participants,
                max_scaled,
                limit,
                ..
            }) => {
                assert_eq!(max_participants, 32_768);
                assert_eq!(max_scaled, 65_536.0);
                assert_eq!(limit, (1 << 31) - 1);
            }
            other => panic!("expected WouldWrap, got {other:?}"),
        }
        // Same at 64 bits, frac_bits 0, max_abs 1: n = 2^32 - 1 participants (u32::MAX)
        // fits trivially; make it tight with a large max_abs instead.
        let max_abs = 2f64.powi(31); // 2^31 · (2^32 - 1) < 2^63 - 1
        assert!(FixedPoint::new(Modulus::Pow64, 0, max_abs, u32::MAX).is_ok());
        assert!(FixedPoint::new(Modulus::Pow64, 1, max_abs, u32::MAX).is_err());
        // Absurd magnitudes are refused, not overflowed.
        assert!(matches!(
            FixedPoint::new(Modulus::Pow64, 52, 1e300, 1),
            Err(EncodingError::WouldWrap { .. })
        ));
    }

    #[test]
    fn invalid_configs_refused() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                FixedPoint::new(Modulus::Pow32, 8, bad, 10),
                Err(EncodingError::InvalidMaxAbs { .. })
            ));
        }
        assert_eq!(
            FixedPoint::new(Modulus::Pow64, 53, 1.0, 10),
            Err(EncodingError::FracBitsTooLarge {
                frac_bits: 53,
                max: 52
            })
        );
        assert_eq!(
            FixedPoint::new(Modulus::Pow64, 8, 1.0, 0),
            Err(EncodingError::NoParticipants)
        );
        assert!(matches!(
            FixedPoint::new(Modulus::Pow64, 0, 0.25, 10),
            Err(EncodingError::TooCoarse { .. })
        ));
    }

    #[test]
    fn choose_prefers_small_modulus_and_most_bits() {
        let fp = FixedPoint::choose(1.0, 100).unwrap();
        assert_eq!(fp.modulus, Modulus::Pow32);
        // 100 · 2^24 < 2^31 - 1 < 100 · 2^25
        assert_eq!(fp.frac_bits, 24);
        let big = FixedPoint::choose(1e12, 1000).unwrap();
        assert_eq!(big.modulus, Modulus::Pow64);
        assert!(FixedPoint::new(Modulus::Pow64, big.frac_bits + 1, 1e12, 1000).is_err());
        assert!(matches!(
            FixedPoint::choose(1e30, 1000),
            Err(EncodingError::NoFittingModulus { .. })
        ));
        assert_eq!(
            fp.describe(),
            "Z_2^32, 24 fractional bits: up to 100 participants with values in [-1, 1]"
        );
        assert!(fp.sum_bound() >= 100.0);
    }

    #[test]
    fn bad_values_refused_naming_the_index() {
        let fp = FixedPoint::new(Modulus::Pow32, 16, 1.0, 10).unwrap();
        assert_eq!(
            fp.encode(&[0.0, 0.5, 1.5]),
            Err(EncodingError::OutOfRange {
                index: 2,
                value: 1.5,
                max_abs: 1.0
            })
        );
        match fp.encode(&[0.0, f64::NAN]) {
            Err(EncodingError::NonFinite { index: 1, value }) => assert!(value.is_nan()),
            other => panic!("expected NonFinite at 1, got {other:?}"),
        }
        assert!(matches!(
            fp.encode(&[f64::NEG_INFINITY]),
            Err(EncodingError::NonFinite { index: 0, .. })
        ));
        // Both ends of the range are accepted.
        assert!(fp.encode(&[-1.0, 1.0]).is_ok());
    }

    #[test]
    fn decode_refuses_too_many_participants_and_wrong_modulus() {
        let fp = FixedPoint::new(Modulus::Pow32, 16, 1.0, 3).unwrap();
        let s = fp.encode(&[0.5]).unwrap();
        assert_eq!(fp.decode_sum(&s, 1).unwrap(), vec![0.5]);
        assert_eq!(
            fp.decode_sum(&s, 4),
            Err(EncodingError::TooManyParticipants {
                participants: 4,
                max: 3
            })
        );
        assert!(matches!(
            fp.decode_sum(&RingVec::U64(vec![0]), 1),
            Err(EncodingError::ModulusMismatch { .. })
        ));
    }

    #[test]
    fn negative_values_are_twos_complement() {
        let fp = FixedPoint::new(Modulus::Pow32, 0, 10.0, 2).unwrap();
        assert_eq!(
            fp.encode(&[-1.0, 3.0]).unwrap(),
            RingVec::U32(vec![u32::MAX, 3])
        );
        let fp64 = FixedPoint::new(Modulus::Pow64, 0, 10.0, 2).unwrap();
        assert_eq!(
            fp64.encode(&[-2.0]).unwrap(),
            RingVec::U64(vec![u64::MAX - 1])
        );
    }

    #[test]
    fn clip_l2_scales_down_only() {
        let mut v = vec![3.0, 4.0];
        assert_eq!(clip_l2(&mut v, 10.0), 1.0);
        assert_eq!(v, vec![3.0, 4.0]);
        let f = clip_l2(&mut v, 1.0);
        assert!((f - 0.2).abs() < 1e-15);
        assert!((v[0] - 0.6).abs() < 1e-15 && (v[1] - 0.8).abs() < 1e-15);
        // No overflow for huge values.
        let mut h = vec![1e200, 1e200];
        let f = clip_l2(&mut h, 1.0);
        assert!(f > 0.0 && ((h[0] * h[0] + h[1] * h[1]).sqrt() - 1.0).abs() < 1e-12);
        let mut z = vec![0.0; 3];
        assert_eq!(clip_l2(&mut z, 1.0), 1.0);
        let mut n = vec![1.0, -2.0];
        assert_eq!(clip_l2(&mut n, -5.0), 0.0);
        assert_eq!(n, vec![0.0, -0.0]);
        let mut nan = vec![f64::NAN, 1.0];
        assert_eq!(clip_l2(&mut nan, 0.5), 1.0);
        assert_eq!(nan[1], 1.0);
    }

    fn modulus_strategy() -> impl Strategy<Value = Modulus> {
        prop_oneof![Just(Modulus::Pow32), Just(Modulus::Pow64)]
    }

    proptest! {
        #[test]
        fn encode_sum_decode_matches_float_sum(
            modulus in modulus_strategy(),
            max_abs in 0.01f64..1000.0,
            n in 1usize..40,
            dim in 0usize..20,
            seed_values in proptest::collection::vec(-1.0f64..=1.0, 40 * 20),
        ) {
            let fp = FixedPoint::choose(max_abs, n as u32).unwrap();
            // Also exercise Pow64 explicitly with the same precision.
            let fp = if modulus == Modulus::Pow64 {
                FixedPoint::new(Modulus::Pow64, fp.frac_bits, max_abs, n as u32).unwrap()
            } else {
                fp
            };
            let mut sum = RingVec::zeros(fp.modulus, dim);
            let mut float_sum = vec![0.0f64; dim];
            for p in 0..n {
                let vals: Vec<f64> =
                    (0..dim).map(|i| seed_values[p * 20 + i] * max_abs).collect();
                for (s, v) in float_sum.iter_mut().zip(&vals) {
                    *s += v;
                }
                sum.add_assign(&fp.encode(&vals).unwrap()).unwrap();
            }
            let decoded = fp.decode_sum(&sum, n).unwrap();
            let tol = n as f64 * 2f64.powi(-(fp.frac_bits as i32));
            for (d, f) in decoded.iter().zip(&float_sum) {
                prop_assert!((d - f).abs() <= tol, "decoded {d} vs float {f}, tol {tol}");
            }
        }

        #[test]
        fn extreme_values_never_wrap(
            modulus in modulus_strategy(),
            frac_bits in 0u32..=20,
            n in 1u32..200,
        ) {
            // All participants at +max_abs or all at -max_abs: the worst case.
            let Ok(fp) = FixedPoint::new(modulus, frac_bits, 1.0, n) else {
                return Ok(());
            };
            for sign in [1.0, -1.0] {
                let mut sum = RingVec::zeros(fp.modulus, 1);
                for _ in 0..n {
                    sum.add_assign(&fp.encode(&[sign]).unwrap()).unwrap();
                }
                let d = fp.decode_sum(&sum, n as usize).unwrap();
                prop_assert_eq!(d[0], sign * f64::from(n));
            }
        }
    }
}
