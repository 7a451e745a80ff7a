//! Id normalisation: both parties must turn "  AB-12 " and "ab12" into the same bytes, or
//! the same customer does not meet in the intersection.
//!
//! Every format trims surrounding whitespace first. An id that is empty after normalising
//! (a missing cell is passed as the empty string) is refused with its row, as is one longer
//! than [`MAX_ID_LEN`] bytes after normalising.

use std::fmt;

use super::error::IdError;

/// Longest normalised id, in bytes (bounds the work one row can cost).
pub const MAX_ID_LEN: usize = 1024;

/// How a party's ids are normalised before hashing. Both parties must declare the same
/// format (it is part of the configuration digest both sign in their `Hello`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum IdFormat {
    /// Trim, fold case (Unicode lowercase) and collapse every run of inner whitespace to one
    /// space: e-mail addresses, names, customer codes with letters.
    #[default]
    Text,
    /// Trim only: case and inner spacing are significant.
    Exact,
    /// Account, card or phone numbers: trim, drop the separators space, `-`, `.`, `/` and
    /// `_`; what is left must be ASCII digits (leading zeros are kept: `007` ≠ `7`).
    Digits,
}

impl IdFormat {
    /// Every format, in tag order.
    pub const ALL: [IdFormat; 3] = [IdFormat::Text, IdFormat::Exact, IdFormat::Digits];

    /// The byte that stands for this format in the configuration digest.
    pub fn tag(self) -> u8 {
        match self {
            IdFormat::Text => 1,
            IdFormat::Exact => 2,
            IdFormat::Digits => 3,
        }
    }

    /// A short lowercase name ("text", "exact", "digits"); the inverse of
    /// [`IdFormat::from_str`](std::str::FromStr).
    pub fn name(self) -> &'static str {
        match self {
            IdFormat::Text => "text",
            IdFormat::Exact => "exact",
            IdFormat::Digits => "digits",
        }
    }

    /// The normalised form of the id at `row` (0-based position in the party's id
    /// sequence), or why it is refused.
    pub fn normalise(self, row: u64, raw: &str) -> Result<String, IdError> {
        let trimmed = raw.trim();
        let out = match self {
            IdFormat::Exact => trimmed.to_string(),
            IdFormat::Text => {
                let mut s = String::with_capacity(trimmed.len());
                for (i, word) in trimmed.split_whitespace().enumerate() {
                    if i > 0 {
                        s.push(' ');
                    }
                    s.extend(word.chars().flat_map(char::to_lowercase));
                }
                s
            }
            IdFormat::Digits => {
                let mut s = String::with_capacity(trimmed.len());
                for (position, c) in trimmed.chars().enumerate() {
                    match c {
                        '0'..='9' => s.push(c),
                        ' ' | '-' | '.' | '/' | '_' => {}
                        _ => {
                            return Err(IdError::NotDigits {
                                row,
                                character: c,
                                position,
                            })
                        }
                    }
                }
                s
            }
        };
        if out.is_empty() {
            return Err(IdError::Empty { row });
        }
        if out.len() > MAX_ID_LEN {
            return Err(IdError::TooLong {
                row,
                len: out.len(),
                max: MAX_ID_LEN,
            });
        }
        Ok(out)
    }
}

impl fmt::Display for IdFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that is not one of [`IdFormat::ALL`]'s names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown id format `{0}`: expected one of text, exact, digits")]
pub struct UnknownIdFormat(pub String);

impl std::str::FromStr for IdFormat {
    type Err = UnknownIdFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownIdFormat(s.to_string()))
    }
}

/// What a party does with two rows whose ids normalise to the same string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Duplicates {
    /// Refuse the set, naming the first duplicate: the lowest row whose id already occurred
    /// at an earlier row, and that earlier row.
    #[default]
    Refuse,
    /// Keep the first (lowest) row of each id and leave the later ones out of the PSI;
    /// [`PsiOutput::duplicates_dropped`](super::PsiOutput) counts them.
    KeepFirst,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(
            IdFormat::Text.normalise(0, "  Ana  MARÍA\tLópez ").unwrap(),
            "ana maría lópez"
        );
        assert_eq!(IdFormat::Exact.normalise(0, " Ab  c ").unwrap(), "Ab  c");
        assert_eq!(
            IdFormat::Digits.normalise(0, " 0012-3456.78/9_0 ").unwrap(),
            "001234567890"
        );
        assert_eq!(
            IdFormat::Digits.normalise(4, "12a4"),
            Err(IdError::NotDigits {
                row: 4,
                character: 'a',
                position: 2
            })
        );
        for f in IdFormat::ALL {
            assert_eq!(f.normalise(7, "   "), Err(IdError::Empty { row: 7 }));
            assert_eq!(f.name().parse::<IdFormat>(), Ok(f));
        }
        assert_eq!(
            IdFormat::Digits.normalise(3, "--"),
            Err(IdError::Empty { row: 3 })
        );
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert!(matches!(
            IdFormat::Exact.normalise(1, &long),
            Err(IdError::TooLong { row: 1, .. })
        ));
        assert!("email".parse::<IdFormat>().is_err());
    }
}
