//! How numbers, sizes and durations are written on the page.

use crate::report::svg;

/// Numbers as shown: fixed decimals, "n/a" for NaN, ∞ for infinities, no "-0.000".
pub(super) fn num(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        return "n/a".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "∞".into()
        } else {
            "−∞".into()
        };
    }
    let s = format!("{:.*}", decimals, v);
    let s = if s.starts_with('-') && s.trim_start_matches(['-', '0', '.']).is_empty() {
        s[1..].to_string()
    } else {
        s
    };
    s.replacen('-', "−", 1)
}

/// A difference with its sign always shown.
pub(super) fn signed(v: f64, decimals: usize) -> String {
    let s = num(v, decimals);
    if v.is_finite()
        && !s.starts_with('−')
        && v != 0.0
        && !s.trim_start_matches(['0', '.']).is_empty()
    {
        format!("+{s}")
    } else {
        s
    }
}

pub(super) fn pct(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{}%", num(v * 100.0, decimals))
    } else {
        num(v, decimals)
    }
}

/// 1234567 → "1,234,567".
pub(super) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn bytes(n: u64) -> String {
    if n < 1024 {
        format!("{n} B")
    } else {
        format!("{} ({} B)", svg::bytes_label(n as f64), thousands(n))
    }
}

pub(super) fn duration_ms(ms: f64) -> String {
    if !ms.is_finite() {
        num(ms, 0)
    } else if ms.abs() >= 1000.0 {
        format!("{} s", num(ms / 1000.0, 2))
    } else if ms.abs() >= 100.0 {
        format!("{} ms", num(ms, 0))
    } else {
        format!("{} ms", num(ms, 1))
    }
}

pub(super) fn seconds(s: f64) -> String {
    if !s.is_finite() {
        num(s, 0)
    } else if s >= 120.0 {
        format!("{} min ({} s)", num(s / 60.0, 1), num(s, 0))
    } else {
        format!("{} s", num(s, 2))
    }
}

/// Small probabilities such as δ: 1e-5 → "1.0×10⁻⁵"; ordinary numbers as usual.
pub(super) fn sci(v: f64) -> String {
    if !(v.is_finite() && v != 0.0 && v.abs() < 1e-3) {
        return num(v, 4);
    }
    let s = format!("{v:.1e}");
    let Some((mantissa, exp)) = s.split_once('e') else {
        return s;
    };
    let sup: String = exp
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            '9' => '⁹',
            c => c,
        })
        .collect();
    format!("{}×10{sup}", mantissa.replacen('-', "−", 1))
}

/// Milliseconds in a table column: one decimal below 100 ms.
pub(super) fn ms_cell(ms: f64) -> String {
    if ms.is_finite() && ms.abs() < 100.0 {
        num(ms, 1)
    } else {
        num(ms, 0)
    }
}

/// "logistic_regression" → "logistic regression".
pub(super) fn humanise(s: &str) -> String {
    s.replace('_', " ")
}

pub(super) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(num(f64::NAN, 3), "n/a");
        assert_eq!(num(-0.0001, 3), "0.000");
        assert_eq!(num(-0.5, 1), "−0.5");
        assert_eq!(signed(0.012, 3), "+0.012");
        assert_eq!(signed(-0.012, 3), "−0.012");
        assert_eq!(signed(0.0, 3), "0.000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(sci(1e-5), "1.0×10⁻⁵");
        assert_eq!(sci(0.5), "0.5000");
    }
}
