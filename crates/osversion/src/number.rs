//! The decimal numbers inside a version.

use crate::Problem;

/// Parses one version number: ASCII digits, no leading zero, fits in a `u32`.
pub(crate) fn parse(part: &'static str, text: &str) -> Result<u32, Problem> {
    if text.is_empty() {
        return Err(Problem::EmptyNumber { part });
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::NotANumber {
            part,
            text: text.to_owned(),
        });
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(Problem::LeadingZero {
            part,
            text: text.to_owned(),
        });
    }
    text.parse().map_err(|_| Problem::TooLarge {
        part,
        text: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_decimals() {
        assert_eq!(parse("major", "0"), Ok(0));
        assert_eq!(parse("major", "10"), Ok(10));
        assert_eq!(parse("major", "4294967295"), Ok(u32::MAX));
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(
            parse("minor", ""),
            Err(Problem::EmptyNumber { part: "minor" })
        );
        for text in ["+1", "-1", "1a", "x", "1_0", "١"] {
            assert_eq!(
                parse("minor", text),
                Err(Problem::NotANumber {
                    part: "minor",
                    text: text.to_owned()
                })
            );
        }
        assert_eq!(
            parse("patch", "01").unwrap_err().to_string(),
            "the patch number \"01\" has a leading zero"
        );
        assert_eq!(
            parse("beta", "4294967296").unwrap_err().to_string(),
            "the beta number \"4294967296\" is too large"
        );
    }
}
