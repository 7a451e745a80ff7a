//! Decimal text to `f32`, fast for the plain decimals data files hold (`-12.375`, `800`):
//! with at most 24 bits of digits and at most 10 after the point the value is
//! `digits / 10^k` with both exactly representable, so one IEEE division is correctly
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn std_parse(s: &str) -> Option<f32> {
        s.parse::<f32>().ok()
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
}
