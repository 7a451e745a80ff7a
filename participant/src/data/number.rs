//! Decimal text to `f32`, fast for the plain decimals data files hold (`-12.375`, `800`):
//! with at most 24 bits of digits and at most 10 after the point the value is
//! `digits / 10^k` with both exactly representable, so one IEEE division (or, to 10^7, the
//! equal multiplication by the reciprocal in `f64`, [`over_pow10`]) is correctly
//! rounded (Clinger's fast path) and equals the standard library's parse bit for bit. Any
//! other text (exponents, long mantissas, `inf`, `NaN`, stray characters) is left to
//! `str::parse`.

/// `Some(v)` when the fast path applies and `v` is the correctly rounded value; `None` when
/// the caller must parse the text the general way (it may still be a number).
#[inline]
pub(crate) fn parse_plain_decimal(text: &[u8]) -> Option<f32> {
    const POW10: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let mut mantissa: u32 = 0;
    let mut seen_digit = false;
    let mut point = false;
    let mut frac = 0usize;
    for &b in digits {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
                if mantissa >= 1 << 24 {
                    return None;
                }
                seen_digit = true;
                if point {
                    frac += 1;
                }
            }
            b'.' if !point => point = true,
            _ => return None,
        }
    }
    if !seen_digit {
        return None;
    }
    let scale = *POW10.get(frac)?;
    let v = mantissa as f32 / scale;
    Some(if negative { -v } else { v })
}

/// Eight bytes of `text` from `at` as a little-endian word (the first byte lowest); `None`
/// when fewer than eight are left.
#[inline]
pub(crate) fn word(text: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = text.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// The top bit of every byte of `w` that equals `b`, and no other bit: `x = w ^ b·ONES` has
/// a zero byte exactly there, and `(x & 0x7F…) + 0x7F…` (no carry between bytes) sets a
/// byte's top bit unless the byte is zero.
#[inline]
pub(crate) fn byte_mask(w: u64, b: u8) -> u64 {
    let x = w ^ (u64::from(b) * ONES);
    !(((x & (0x7F * ONES)) + 0x7F * ONES) | x) & (0x80 * ONES)
}

/// The index (0 to 8) of the first byte of `w` (in text order) that is not an ASCII digit:
/// a byte `b` is a digit when `b + 0x46` and `b − 0x30` both leave the top bit clear. Carries
/// and borrows run only towards later bytes, so the first non-digit is flagged exactly.
#[inline]
fn first_non_digit(w: u64) -> u32 {
    let flags = (w.wrapping_add(0x46 * ONES) | w.wrapping_sub(0x30 * ONES)) & (0x80 * ONES);
    flags.trailing_zeros() / 8
}

/// The value of the first `n` (1 to 8) bytes of `w`, all ASCII digits, most significant
/// first: the digits are moved to the word's top, then pairs, quads and octets are combined
/// by three multiplications.
#[inline]
fn digits_value(w: u64, n: u32) -> u64 {
    let d = w.wrapping_sub(0x30 * ONES) << (8 * (8 - n.clamp(1, 8)));
    let d = ((d & 0x0F0F_0F0F_0F0F_0F0F).wrapping_mul(10 * 256 + 1)) >> 8;
    let d = ((d & 0x00FF_00FF_00FF_00FF).wrapping_mul(100 * 65_536 + 1)) >> 16;
    ((d & 0x0000_FFFF_0000_FFFF).wrapping_mul(10_000 * (1 << 32) + 1)) >> 32
}

/// The plain decimal at the start of `text` (`[+-]digits[.digits]`, at least one digit),
/// read eight bytes at a time: `Some((value, bytes taken))` when it has at most 7 digits
/// before the point and 7 after, its digits make less than 2^24, and the text holds eight
/// bytes past the sign and past the point (what follows the number is not looked at).
/// The value is [`parse_plain_decimal`]'s (one division: Clinger's fast path, equal to
/// `str::parse` bit for bit). `None`: the caller reads the text another way.
#[inline(always)]
pub(crate) fn plain_decimal_prefix(text: &[u8]) -> Option<(f32, usize)> {
    const POW10_INT: [u64; 8] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];
    let first = *text.first()?;
    let negative = first == b'-';
    let at = usize::from(negative || first == b'+');
    let w = word(text, at)?;
    let n_int = first_non_digit(w);
    if n_int >= 8 {
        return None;
    }
    let int = if n_int > 0 { digits_value(w, n_int) } else { 0 };
    let after = at + n_int as usize;
    let (mantissa, n_frac, end) = if (w >> (8 * n_int)) as u8 == b'.' {
        let f = word(text, after + 1)?;
        let n_frac = first_non_digit(f);
        if n_frac >= 8 {
            return None;
        }
        let frac = if n_frac > 0 {
            digits_value(f, n_frac)
        } else {
            0
        };
        let scale = *POW10_INT.get(n_frac as usize)?;
        (int * scale + frac, n_frac, after + 1 + n_frac as usize)
    } else {
        (int, 0, after)
    };
    if n_int + n_frac == 0 || mantissa >= 1 << 24 {
        return None;
    }
    let v = over_pow10(mantissa, n_frac as usize)?;
    // `v ≥ +0`, so setting the sign bit is `-v`, without a branch on a sign that is
    // negative for about half the cells of a file (a mispredicted branch per such cell).
    Some((f32::from_bits(v.to_bits() | u32::from(negative) << 31), end))
}

/// The low `k` bytes of a word set, `k` from 1 to 8.
#[inline(always)]
fn low_bytes(k: usize) -> u64 {
    u64::MAX >> (64 - 8 * k.clamp(1, 8))
}

/// A whole cell of `len` bytes (1 to 8), the first `len` bytes of `w` (the word read at the
/// cell's start; what follows the cell is not looked at), when it is a plain decimal
/// (`[+-]digits[.digits]`, at least one digit): its value, [`parse_plain_decimal`]'s bit
/// for bit. One word for the whole cell: the point's byte is closed up (the bytes after it
/// move down one), so the digits lie side by side and three multiplications combine them;
/// digits below 2^24 (any 7, or 8 without sign or point), scaled by one multiplication
/// ([`over_pow10`]). `None` for anything else (a second point, a sign not first, any other
/// byte, no digit, a longer cell): the caller reads it another way.
#[inline(always)]
pub(crate) fn short_decimal(w: u64, len: usize) -> Option<f32> {
    if len == 0 || len > 8 {
        return None;
    }
    let cell = low_bytes(len);
    let first = w as u8;
    let negative = first == b'-';
    let sign = usize::from(negative || first == b'+');
    let dots = byte_mask(w, b'.') & cell;
    if dots & dots.wrapping_sub(1) != 0 {
        return None; // two points
    }
    let has_dot = usize::from(dots != 0);
    // The bytes before the point (all of them without one); those after it move down over
    // it. `dots >> 7` is the point byte's lowest bit.
    let below = (dots >> 7).wrapping_sub(1);
    let closed = (w & below) | ((w >> 8) & !below);
    let n = len - sign - has_dot;
    if n == 0 {
        return None;
    }
    let digits = closed >> (8 * sign);
    let flags = (digits.wrapping_add(0x46 * ONES) | digits.wrapping_sub(0x30 * ONES))
        & (0x80 * ONES)
        & low_bytes(n);
    if flags != 0 {
        return None;
    }
    let mantissa = digits_value(digits, n as u32);
    // Digits after the point: those past its index.
    let frac = if dots != 0 {
        len - 1 - (dots.trailing_zeros() / 8) as usize
    } else {
        0
    };
    // `None` for eight digits above 2^24.
    let v = over_pow10(mantissa, frac)?;
    Some(f32::from_bits(v.to_bits() | u32::from(negative) << 31))
}

/// `mantissa / 10^k` correctly rounded to `f32` (what the IEEE division
/// `mantissa as f32 / 10^k as f32` gives, both operands exact), for `mantissa < 2^24` and
/// `k ≤ 7`, by one `f64` multiplication by the rounded reciprocal instead of a division (a
/// division per cell held the parser to the divider's throughput). Why it is exact: the
/// product is within `2^-52` (relative) of the true quotient `q`; `q` is never an `f32`
/// rounding midpoint (a midpoint is dyadic, and a dyadic `q = m / (2^k 5^k)` has `5^k | m`,
/// so `q` is itself an `f32`); and a midpoint `M / 2^j` (`M < 2^25`) differs from `q` by at
/// least `1 / (10^k 2^j)`, that is by at least `1 / (M 10^k) > 2^-48.3` relative, so
/// rounding the product to `f32` lands where rounding `q` does. Checked exhaustively
/// (`over_pow10_equals_the_division_everywhere`). `None` past its range.
#[inline(always)]
pub(crate) fn over_pow10(mantissa: u64, k: usize) -> Option<f32> {
    const RECIP: [f64; 8] = [1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7];
    if mantissa >= 1 << 24 {
        return None;
    }
    Some((mantissa as f64 * *RECIP.get(k)?) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn std_parse(s: &str) -> Option<f32> {
        s.parse::<f32>().ok()
    }

    /// Every mantissa below 2^24 over every power of ten to 10^7: the multiplication by
    /// the reciprocal is the IEEE division, to the bit (the proof is on `over_pow10`).
    #[test]
    fn over_pow10_equals_the_division_everywhere() {
        const POW10: [f32; 8] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7];
        for (k, &p) in POW10.iter().enumerate() {
            let wrong = (0u32..1 << 24)
                .filter(|&m| {
                    over_pow10(u64::from(m), k).map(f32::to_bits) != Some((m as f32 / p).to_bits())
                })
                .take(3)
                .collect::<Vec<_>>();
            assert!(wrong.is_empty(), "10^{k}: {wrong:?}");
        }
        assert_eq!(over_pow10(1 << 24, 0), None);
        assert_eq!(over_pow10(1, 8), None);
    }

    /// Wherever the fast path answers, it answers what `str::parse` does, to the bit.
    #[test]
    fn fast_path_equals_the_standard_parse_bit_for_bit() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut answered = 0;
        for i in 0..400_000u32 {
            let int_digits = rng.random_range(0..9usize);
            let frac_digits = rng.random_range(0..12usize);
            let mut s = String::new();
            match rng.random_range(0..4) {
                0 => s.push('-'),
                1 if i % 7 == 0 => s.push('+'),
                _ => {}
            }
            for _ in 0..int_digits {
                s.push(char::from(b'0' + rng.random_range(0..10u8)));
            }
            if frac_digits > 0 || rng.random_bool(0.1) {
                s.push('.');
            }
            for _ in 0..frac_digits {
                s.push(char::from(b'0' + rng.random_range(0..10u8)));
            }
            if let Some(v) = parse_plain_decimal(s.as_bytes()) {
                answered += 1;
                let want = std_parse(&s).unwrap_or_else(|| panic!("{s:?} is not a number"));
                assert_eq!(v.to_bits(), want.to_bits(), "{s:?}");
            }
        }
        assert!(answered > 100_000, "{answered}");
        for s in [
            "0",
            "-0",
            "-0.0",
            "16777215",
            "1677721.5",
            "0.0000000001",
            "3.14159",
            ".5",
            "5.",
            "+7",
            "-.25",
        ] {
            let v = parse_plain_decimal(s.as_bytes()).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(v.to_bits(), std_parse(s).unwrap().to_bits(), "{s}");
        }
        // Left to the general parse (or not numbers at all).
        for s in [
            "",
            "-",
            "+",
            ".",
            "1e5",
            "16777216",
            "0.00000000001",
            "1.2.3",
            "NaN",
            "inf",
            "1,5",
            " 1",
            "--1",
            "0x10",
            "١",
        ] {
            assert_eq!(parse_plain_decimal(s.as_bytes()), None, "{s}");
        }
    }

    /// The word-at-a-time reader answers what the byte loop does (value and length), on
    /// decimals followed by anything, and declines only what it says it declines.
    #[test]
    fn word_reader_equals_the_byte_loop() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        let tails: [&[u8]; 8] = [
            b",1.5,2\n",
            b"\n",
            b"\r\n",
            b";x",
            b"e5,,,,,,,,",
            b".5........",
            b"\xff\x80\xba\x00\x2f\x3a\x7f\xc0",
            b"",
        ];
        let mut answered = 0;
        for i in 0..400_000u32 {
            let mut s: Vec<u8> = Vec::new();
            match rng.random_range(0..5) {
                0 | 1 => s.push(b'-'),
                2 if i % 3 == 0 => s.push(b'+'),
                _ => {}
            }
            for _ in 0..rng.random_range(0..10usize) {
                s.push(b'0' + rng.random_range(0..10u8));
            }
            if rng.random_bool(0.8) {
                s.push(b'.');
                for _ in 0..rng.random_range(0..10usize) {
                    s.push(b'0' + rng.random_range(0..10u8));
                }
            }
            let tail = tails[rng.random_range(0..tails.len())];
            s.extend_from_slice(tail);
            // Random padding so that the eight-byte reads sometimes run past the end.
            for _ in 0..rng.random_range(0..12usize) {
                s.push(rng.random::<u8>());
            }
            let prefix_len = {
                // The longest plain-decimal prefix the byte loop would read.
                let mut j = usize::from(matches!(s.first(), Some(b'-' | b'+')));
                let mut point = false;
                while let Some(&b) = s.get(j) {
                    if b.is_ascii_digit() || (b == b'.' && !point) {
                        point |= b == b'.';
                        j += 1;
                    } else {
                        break;
                    }
                }
                j
            };
            let Some((v, len)) = plain_decimal_prefix(&s) else {
                continue;
            };
            answered += 1;
            assert_eq!(len, prefix_len, "{:?}", String::from_utf8_lossy(&s));
            let text = std::str::from_utf8(&s[..len]).unwrap();
            let want = parse_plain_decimal(text.as_bytes()).unwrap_or_else(|| panic!("{text:?}"));
            assert_eq!(v.to_bits(), want.to_bits(), "{text:?}");
            assert_eq!(v.to_bits(), std_parse(text).unwrap().to_bits(), "{text:?}");
        }
        assert!(answered > 100_000, "{answered}");
        let pad = |s: &str| format!("{s},,,,,,,,,,,,,,,,");
        for s in [
            "0",
            "-0",
            "-0.000",
            "1.015",
            "-1.218",
            "9999999",
            "1677721.5",
            ".5",
            "5.",
            "+7",
        ] {
            let (v, len) = plain_decimal_prefix(pad(s).as_bytes()).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(len, s.len(), "{s}");
            assert_eq!(v.to_bits(), std_parse(s).unwrap().to_bits(), "{s}");
        }
        for s in [
            "",
            "-",
            "+",
            ".",
            "-.",
            "12345678",
            "1.12345678",
            "16777216",
            "1677721.6",
        ] {
            assert_eq!(plain_decimal_prefix(pad(s).as_bytes()), None, "{s}");
        }
        // Too close to the end for a whole word: declined, not misread.
        assert_eq!(plain_decimal_prefix(b"1.5"), None);
        assert_eq!(plain_decimal_prefix(b"1.5\n"), None);
    }

    /// The whole-cell reader answers what the byte loop does on every cell of up to eight
    /// bytes made of digits, signs, points and other bytes, and declines the rest.
    #[test]
    fn whole_cell_reader_equals_the_byte_loop() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(14);
        let alphabet = b"0123456789012345678901234567890123456789...--+e ,/:\x00";
        let mut answered = 0;
        for _ in 0..600_000u32 {
            let len = rng.random_range(1..=8usize);
            let mut cell = [0u8; 8];
            for b in cell.iter_mut() {
                *b = if rng.random_bool(0.9) {
                    alphabet[rng.random_range(0..alphabet.len())]
                } else {
                    rng.random()
                };
            }
            // Mostly well-formed cells: a sign, digits, at most one point.
            if rng.random_bool(0.7) {
                for (i, b) in cell.iter_mut().enumerate().take(len) {
                    *b = b'0' + rng.random_range(0..10u8);
                    if i == 0 && rng.random_bool(0.4) {
                        *b = if rng.random_bool(0.8) { b'-' } else { b'+' };
                    }
                }
                if rng.random_bool(0.8) {
                    cell[rng.random_range(0..len)] = b'.';
                }
            }
            let w = u64::from_le_bytes(cell);
            let got = short_decimal(w, len);
            let want = parse_plain_decimal(&cell[..len]);
            assert_eq!(
                got.map(f32::to_bits),
                want.map(f32::to_bits),
                "{:?}",
                String::from_utf8_lossy(&cell[..len])
            );
            if let Some(v) = got {
                answered += 1;
                let text = std::str::from_utf8(&cell[..len]).unwrap();
                assert_eq!(v.to_bits(), std_parse(text).unwrap().to_bits(), "{text:?}");
            }
        }
        assert!(answered > 200_000, "{answered}");
        let word = |s: &str| {
            let mut b = [b','; 8];
            b[..s.len()].copy_from_slice(s.as_bytes());
            (u64::from_le_bytes(b), s.len())
        };
        for s in [
            "0", "-0", "-0.000", "1.015", "-1.218", "9999999", "-999999", "12345678", ".5", "5.",
            "+7", "-.5",
        ] {
            let (w, len) = word(s);
            let v = short_decimal(w, len).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(v.to_bits(), std_parse(s).unwrap().to_bits(), "{s}");
        }
        for s in [
            "-", "+", ".", "-.", "1..5", "1.2.3", "--1", "1-2", "99999999", "1e5", " 1",
        ] {
            let (w, len) = word(s);
            assert_eq!(short_decimal(w, len), None, "{s}");
        }
        assert_eq!(short_decimal(u64::from_le_bytes(*b"1,,,,,,,"), 0), None);
        assert_eq!(short_decimal(u64::from_le_bytes(*b"12345678"), 9), None);
    }

    /// The byte mask flags exactly the bytes equal to the one asked for.
    #[test]
    fn byte_mask_flags_exactly_the_equal_bytes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
        for i in 0..200_000u32 {
            let mut bytes: [u8; 8] = rng.random();
            let b = [b',', b'\n', b';', 0, 0xff, 0x80][(i % 6) as usize];
            for x in bytes.iter_mut() {
                if rng.random_bool(0.3) {
                    *x = b;
                } else if rng.random_bool(0.2) {
                    *x = b ^ 0x80;
                }
            }
            let m = byte_mask(u64::from_le_bytes(bytes), b);
            for (k, &x) in bytes.iter().enumerate() {
                assert_eq!((m >> (8 * k + 7)) & 1 == 1, x == b, "{bytes:?} {b}");
            }
            assert_eq!(m & !(0x80 * ONES), 0);
        }
    }
}
