//! t-of-n Shamir secret sharing over GF(2^8), byte by byte.
//!
//! Each byte of the secret is the constant term of its own random polynomial of degree
//! `threshold - 1` over GF(2^8) (AES field, reduction polynomial x^8 + x^4 + x^3 + x + 1);
//! share `x` holds the evaluations at `x` (1..=255; 0 would be the secret itself). The
//! share's `x` is the holder's index, assigned by the protocol, never read from the share's
//! sender.
//!
//! Field arithmetic is branch-free and table-free (shift-and-add multiplication, inversion
//! as a^254), so the secret-dependent operations do not leak through caches or branches.
//!
//! [`combine`] refuses anything doubtful: too few shares, a duplicate or zero `x`, different
//! lengths, and — when given more than `threshold` shares — shares that do not all lie on
//! one polynomial. [`combine_verified`] is the server's robust variant: it checks candidates
//! against a commitment and names the shares that were wrong.

use rand::CryptoRng;
use thiserror::Error;
use zeroize::Zeroize;

/// At most this many threshold-subsets are tried by [`combine_verified`].
pub const MAX_SUBSETS: usize = 10_000;

/// Reasons a split or a reconstruction is refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ShamirError {
    /// `threshold` must be in `1..=shares`.
    #[error("threshold {threshold} is not in 1..={shares}")]
    InvalidThreshold { threshold: usize, shares: usize },
    /// Fewer shares than the threshold.
    #[error("not enough shares: have {have}, need {need}")]
    NotEnoughShares { have: usize, need: usize },
    /// Two shares (or two requested holders) with the same `x`.
    #[error("duplicate share for x = {x}")]
    DuplicateShare { x: u8 },
    /// `x = 0` would be the secret itself.
    #[error("share index x = 0 is not allowed")]
    ZeroX,
    /// A share whose length differs from the first share's.
    #[error("share x = {x} has {found} bytes, expected {expected}")]
    LengthMismatch {
        x: u8,
        expected: usize,
        found: usize,
    },
    /// With more than `threshold` shares: share `x` does not lie on the polynomial through
    /// the first `threshold` shares (one of them, or share `x`, is wrong).
    #[error("share x = {x} is inconsistent with the polynomial through the first shares")]
    Inconsistent { x: u8 },
    /// No threshold-subset of the shares produced a secret that passed verification.
    #[error("no consistent subset of shares found ({tried} subsets tried)")]
    NoConsistentSubset { tried: usize },
}

/// One share: the holder's index `x` and one field element per secret byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub x: u8,
    pub y: Vec<u8>,
}

/// Multiplication in GF(2^8) mod x^8 + x^4 + x^3 + x + 1, constant time.
#[inline]
fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    for _ in 0..8 {
        p ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    p
}

/// Inverse in GF(2^8) as a^254 (0 maps to 0), constant time.
fn gf_inv(a: u8) -> u8 {
    let a2 = gf_mul(a, a);
    let a4 = gf_mul(a2, a2);
    let a8 = gf_mul(a4, a4);
    let a16 = gf_mul(a8, a8);
    let a32 = gf_mul(a16, a16);
    let a64 = gf_mul(a32, a32);
    let a128 = gf_mul(a64, a64);
    let mut r = gf_mul(a2, a4);
    r = gf_mul(r, a8);
    r = gf_mul(r, a16);
    r = gf_mul(r, a32);
    r = gf_mul(r, a64);
    gf_mul(r, a128)
}

/// Checks that the x's are nonzero and distinct.
fn check_xs(xs: impl IntoIterator<Item = u8>) -> Result<(), ShamirError> {
    let mut seen = [false; 256];
    for x in xs {
        if x == 0 {
            return Err(ShamirError::ZeroX);
        }
        if seen[usize::from(x)] {
            return Err(ShamirError::DuplicateShare { x });
        }
        seen[usize::from(x)] = true;
    }
    Ok(())
}

/// Lagrange basis coefficients at `at` for the nodes `xs` (distinct):
/// `l_i(at) = prod_{j != i} (at - x_j) / (x_i - x_j)` (subtraction is XOR).
fn lagrange_at(xs: &[u8], at: u8) -> Vec<u8> {
    xs.iter()
        .enumerate()
        .map(|(i, &xi)| {
            let (mut num, mut den) = (1u8, 1u8);
            for (j, &xj) in xs.iter().enumerate() {
                if i != j {
                    num = gf_mul(num, at ^ xj);
                    den = gf_mul(den, xi ^ xj);
                }
            }
            gf_mul(num, gf_inv(den))
        })
        .collect()
}

/// Evaluates at `at` the polynomial through `shares` (distinct x, equal lengths).
fn interpolate_at(shares: &[&Share], at: u8, len: usize) -> Vec<u8> {
    let xs: Vec<u8> = shares.iter().map(|s| s.x).collect();
    let coeffs = lagrange_at(&xs, at);
    let mut out = vec![0u8; len];
    for (share, &l) in shares.iter().zip(&coeffs) {
        for (o, &y) in out.iter_mut().zip(&share.y) {
            *o ^= gf_mul(l, y);
        }
    }
    out
}

/// Splits `secret` into one share per x in `xs` (distinct, nonzero), any `threshold` of
/// which reconstruct it; fewer reveal nothing. `threshold` must be in `1..=xs.len()`.
pub fn split(
    secret: &[u8],
    threshold: usize,
    xs: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<Vec<Share>, ShamirError> {
    if threshold == 0 || threshold > xs.len() {
        return Err(ShamirError::InvalidThreshold {
            threshold,
            shares: xs.len(),
        });
    }
    check_xs(xs.iter().copied())?;
    let len = secret.len();
    // coeffs[(d - 1) * len + b]: coefficient of x^d of byte b's polynomial, d = 1..threshold.
    let mut coeffs = vec![0u8; (threshold - 1) * len];
    rng.fill_bytes(&mut coeffs);
    let shares = xs
        .iter()
        .map(|&x| {
            let y = (0..len)
                .map(|b| {
                    // Horner from the highest degree down to the secret byte.
                    let mut acc = 0u8;
                    for d in (1..threshold).rev() {
                        acc = gf_mul(acc, x) ^ coeffs[(d - 1) * len + b];
                    }
                    gf_mul(acc, x) ^ secret[b]
                })
                .collect();
            Share { x, y }
        })
        .collect();
    coeffs.zeroize();
    Ok(shares)
}

/// Common refusals: threshold, count, zero or duplicate x.
fn check_shares(shares: &[Share], threshold: usize) -> Result<(), ShamirError> {
    if threshold == 0 {
        return Err(ShamirError::InvalidThreshold {
            threshold,
            shares: shares.len(),
        });
    }
    if shares.len() < threshold {
        return Err(ShamirError::NotEnoughShares {
            have: shares.len(),
            need: threshold,
        });
    }
    check_xs(shares.iter().map(|s| s.x))
}

/// Reconstructs the secret from at least `threshold` shares.
///
/// Refuses fewer than `threshold` shares ([`ShamirError::NotEnoughShares`]), a duplicate x
/// ([`ShamirError::DuplicateShare`]), x = 0 and shares of different lengths. With MORE than
/// `threshold` shares, checks that every share lies on the polynomial through the first
/// `threshold` ones and returns [`ShamirError::Inconsistent`] otherwise.
pub fn combine(shares: &[Share], threshold: usize) -> Result<Vec<u8>, ShamirError> {
    check_shares(shares, threshold)?;
    let len = shares[0].y.len();
    for s in shares {
        if s.y.len() != len {
            return Err(ShamirError::LengthMismatch {
                x: s.x,
                expected: len,
                found: s.y.len(),
            });
        }
    }
    let basis: Vec<&Share> = shares[..threshold].iter().collect();
    for extra in &shares[threshold..] {
        if interpolate_at(&basis, extra.x, len) != extra.y {
            return Err(ShamirError::Inconsistent { x: extra.x });
        }
    }
    Ok(interpolate_at(&basis, 0, len))
}

/// Next `t`-combination of `0..n` in colexicographic order (ordered by largest element), or
/// `false` after the last one.
fn next_colex(c: &mut [usize], n: usize) -> bool {
    let t = c.len();
    for i in 0..t {
        let limit = if i + 1 < t { c[i + 1] } else { n };
        if c[i] + 1 < limit {
            c[i] += 1;
            for (j, cj) in c[..i].iter_mut().enumerate() {
                *cj = j;
            }
            return true;
        }
    }
    false
}

/// Robust reconstruction used by the server: `verify` checks a candidate secret against a
/// commitment.
///
/// Tries the first `threshold` shares; if `verify` rejects the result, searches the other
/// threshold-subsets — in colexicographic order, so subsets that replace only the first few
/// shares come first, at most [`MAX_SUBSETS`] in all — for one that verifies. Returns the
/// secret and the x's of the shares that do NOT lie on the verified polynomial (wrong value
/// or wrong length), in input order.
///
/// Errors: [`ShamirError::NotEnoughShares`], [`ShamirError::DuplicateShare`],
/// [`ShamirError::ZeroX`], [`ShamirError::InvalidThreshold`] (threshold 0) and
/// [`ShamirError::NoConsistentSubset`].
pub fn combine_verified(
    shares: &[Share],
    threshold: usize,
    verify: impl Fn(&[u8]) -> bool,
) -> Result<(Vec<u8>, Vec<u8>), ShamirError> {
    check_shares(shares, threshold)?;
    let n = shares.len();
    let mut subset: Vec<usize> = (0..threshold).collect();
    let mut tried = 0usize;
    loop {
        let len = shares[subset[0]].y.len();
        if subset.iter().all(|&i| shares[i].y.len() == len) {
            tried += 1;
            let basis: Vec<&Share> = subset.iter().map(|&i| &shares[i]).collect();
            let mut candidate = interpolate_at(&basis, 0, len);
            if verify(&candidate) {
                let bad = shares
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| {
                        !subset.contains(i)
                            && (s.y.len() != len || interpolate_at(&basis, s.x, len) != s.y)
                    })
                    .map(|(_, s)| s.x)
                    .collect();
                return Ok((candidate, bad));
            }
            candidate.zeroize();
        }
        if tried >= MAX_SUBSETS || !next_colex(&mut subset, n) {
            return Err(ShamirError::NoConsistentSubset { tried });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn rng(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

    #[test]
    fn field_arithmetic() {
        // FIPS-197 section 4.2: {57} x {83} = {c1}, {57} x {13} = {fe}.
        assert_eq!(gf_mul(0x57, 0x83), 0xc1);
        assert_eq!(gf_mul(0x57, 0x13), 0xfe);
        for a in 1..=255u8 {
            assert_eq!(gf_mul(a, gf_inv(a)), 1, "inverse of {a}");
            assert_eq!(gf_mul(a, 1), a);
            assert_eq!(gf_mul(a, 0), 0);
        }
        assert_eq!(gf_inv(0), 0);
    }

    #[test]
    fn colex_enumerates_every_subset_once() {
        let (n, t) = (7, 3);
        let mut c: Vec<usize> = (0..t).collect();
        let mut seen = std::collections::BTreeSet::new();
        loop {
            assert!(c.windows(2).all(|w| w[0] < w[1]) && c[t - 1] < n);
            assert!(seen.insert(c.clone()));
            if !next_colex(&mut c, n) {
                break;
            }
        }
        assert_eq!(seen.len(), 35); // C(7, 3)
    }

    #[test]
    fn split_refuses_bad_parameters() {
        let mut r = rng(1);
        assert_eq!(
            split(b"s", 0, &[1, 2], &mut r),
            Err(ShamirError::InvalidThreshold {
                threshold: 0,
                shares: 2
            })
        );
        assert_eq!(
            split(b"s", 3, &[1, 2], &mut r),
            Err(ShamirError::InvalidThreshold {
                threshold: 3,
                shares: 2
            })
        );
        assert_eq!(split(b"s", 1, &[1, 0], &mut r), Err(ShamirError::ZeroX));
        assert_eq!(
            split(b"s", 2, &[4, 5, 4], &mut r),
            Err(ShamirError::DuplicateShare { x: 4 })
        );
    }

    #[test]
    fn combine_refusals() {
        let secret = [42u8; 32];
        let shares = split(&secret, 3, &[1, 2, 3, 4], &mut rng(2)).unwrap();
        assert_eq!(
            combine(&shares[..2], 3),
            Err(ShamirError::NotEnoughShares { have: 2, need: 3 })
        );
        let dup = vec![shares[0].clone(), shares[1].clone(), shares[0].clone()];
        assert_eq!(combine(&dup, 3), Err(ShamirError::DuplicateShare { x: 1 }));
        let mut zero = shares.clone();
        zero[1].x = 0;
        assert_eq!(combine(&zero, 3), Err(ShamirError::ZeroX));
        let mut short = shares.clone();
        short[2].y.pop();
        assert_eq!(
            combine(&short, 3),
            Err(ShamirError::LengthMismatch {
                x: 3,
                expected: 32,
                found: 31
            })
        );
        assert_eq!(
            combine(&shares, 0),
            Err(ShamirError::InvalidThreshold {
                threshold: 0,
                shares: 4
            })
        );
        assert_eq!(combine(&shares, 3).unwrap(), secret);
    }

    #[test]
    fn shares_below_threshold_look_random() {
        // With t >= 2 a single share byte must be uniform whatever the secret: catches
        // coefficients that are not drawn (share == secret) or drawn from too little entropy.
        let mut seen = [0usize; 256];
        for seed in 0..2048u64 {
            let shares = split(&[0xAB], 2, &[1, 2], &mut rng(seed)).unwrap();
            seen[usize::from(shares[0].y[0])] += 1;
        }
        let distinct = seen.iter().filter(|&&c| c > 0).count();
        assert!(distinct > 240, "only {distinct} distinct share values");
        assert!(
            seen.iter().all(|&c| c < 30),
            "share values far from uniform"
        );
    }

    #[test]
    fn altered_share_among_t_plus_one_is_inconsistent() {
        let secret = b"thirty-two bytes of mask seed!!!".to_vec();
        let mut shares = split(&secret, 3, &[10, 20, 30, 40], &mut rng(4)).unwrap();
        assert_eq!(combine(&shares, 3).unwrap(), secret);
        shares[3].y[7] ^= 0x01;
        assert_eq!(
            combine(&shares, 3),
            Err(ShamirError::Inconsistent { x: 40 })
        );
        // An altered share among the first t is caught too (the extra one disagrees).
        let mut shares = split(&secret, 3, &[10, 20, 30, 40], &mut rng(4)).unwrap();
        shares[0].y[0] ^= 0x80;
        assert!(matches!(
            combine(&shares, 3),
            Err(ShamirError::Inconsistent { .. })
        ));
    }

    fn commitment(secret: &[u8]) -> impl Fn(&[u8]) -> bool {
        let want = secret.to_vec();
        move |c: &[u8]| c == want.as_slice()
    }

    #[test]
    fn combine_verified_excludes_bad_shares() {
        let secret: Vec<u8> = (0..32).collect();
        let xs: Vec<u8> = (1..=9).collect();
        let t = 5;
        let good = split(&secret, t, &xs, &mut rng(5)).unwrap();

        // All good: no bad shares reported.
        let (s, bad) = combine_verified(&good, t, commitment(&secret)).unwrap();
        assert_eq!((s, bad), (secret.clone(), vec![]));

        // Corrupt shares at the front (so the first subset fails) and one with a wrong
        // length; 6 good ones remain >= t.
        let mut shares = good.clone();
        shares[0].y[3] ^= 0xff;
        shares[2].y = vec![1, 2, 3];
        shares[4].y[31] ^= 0x01;
        let (s, bad) = combine_verified(&shares, t, commitment(&secret)).unwrap();
        assert_eq!(s, secret);
        assert_eq!(bad, vec![1, 3, 5]);

        // Four corrupt among nine with t = 5 still leaves exactly 5 good.
        shares[8].y[0] ^= 0x10;
        let (s, bad) = combine_verified(&shares, t, commitment(&secret)).unwrap();
        assert_eq!(s, secret);
        assert_eq!(bad, vec![1, 3, 5, 9]);

        // Five corrupt: no subset verifies.
        shares[6].y[0] ^= 0x10;
        assert_eq!(
            combine_verified(&shares, t, commitment(&secret)),
            // C(8, 5): subsets holding the short share are skipped, not tried.
            Err(ShamirError::NoConsistentSubset { tried: 56 })
        );
        // Refusals shared with combine.
        assert_eq!(
            combine_verified(&good[..4], t, |_| true),
            Err(ShamirError::NotEnoughShares { have: 4, need: 5 })
        );
        let mut dup = good.clone();
        dup[1].x = dup[0].x;
        assert_eq!(
            combine_verified(&dup, t, |_| true),
            Err(ShamirError::DuplicateShare { x: 1 })
        );
    }

    #[test]
    fn combine_verified_is_bounded() {
        // 40 shares, threshold 20, every share wrong: C(40, 20) subsets, only MAX_SUBSETS tried.
        let secret = [7u8; 4];
        let xs: Vec<u8> = (1..=40).collect();
        let shares = split(&secret, 20, &xs, &mut rng(6)).unwrap();
        assert_eq!(
            combine_verified(&shares, 20, |_| false),
            Err(ShamirError::NoConsistentSubset { tried: MAX_SUBSETS })
        );
    }

    proptest! {
        #[test]
        fn split_combine_round_trip(
            secret in proptest::collection::vec(any::<u8>(), 0..48),
            xs in proptest::sample::subsequence((1..=255u8).collect::<Vec<_>>(), 1..20)
                .prop_shuffle(),
            t_frac in 0.0f64..1.0,
            take_frac in 0.0f64..1.0,
            seed in any::<u64>(),
        ) {
            let n = xs.len();
            let t = 1 + ((n - 1) as f64 * t_frac) as usize;
            let shares = split(&secret, t, &xs, &mut rng(seed)).unwrap();
            prop_assert_eq!(shares.len(), n);
            // Any k >= t of them, in a rotated order.
            let k = t + ((n - t) as f64 * take_frac) as usize;
            let mut subset: Vec<Share> = shares.clone();
            subset.rotate_left(seed as usize % n);
            subset.truncate(k);
            prop_assert_eq!(combine(&subset, t).unwrap(), secret.clone());
            let (s, bad) = combine_verified(&subset, t, commitment(&secret)).unwrap();
            prop_assert_eq!(s, secret.clone());
            prop_assert!(bad.is_empty());
            if t > 1 {
                let too_few = combine(&subset[..t - 1], t);
                prop_assert_eq!(too_few, Err(ShamirError::NotEnoughShares { have: t - 1, need: t }));
            }
        }
    }
}
