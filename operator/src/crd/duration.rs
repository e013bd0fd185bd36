//! Durations as people write them in a `StorageCluster`: `30s`, `10m`, `2h`, `1d`, `1h30m`.
//!
//! Kubernetes' own duration format (Go's `time.ParseDuration`) has no days, and epochs are
//! measured in days in production, so the resource uses this small format instead. The CRD
//! checks the same shape with a CEL rule ([`CEL_RULE`]) so the API server refuses a malformed
//! value; this parser is what the controller uses, and it also catches overflow, which a regex
//! cannot.

use std::time::Duration;

/// The CEL rule (used in the CRD schema) that accepts exactly what [`parse`] accepts, bar overflow.
pub const CEL_RULE: &str = "self.matches('^([0-9]+(s|m|h|d))+$')";

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration (write e.g. 30s, 10m, 2h or 1d)")]
    Empty,
    #[error("{0:?} is not a duration: write whole numbers with a unit s, m, h or d, e.g. 30s, 10m, 1h30m, 1d")]
    Malformed(String),
    #[error("{0:?} is too long")]
    Overflow(String),
}

/// A command-line flag (`floe testnet up --epoch 30s`): the same format, surrounding blanks
/// ignored, and a bare number counts as seconds. One parser for the resource and the CLI.
pub fn parse_flag(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return parse(&format!("{s}s"));
    }
    parse(s)
}

/// Parse `30s`, `10m`, `2h`, `1d` and concatenations such as `1h30m`.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(s.to_string());
    let overflow = || DurationError::Overflow(s.to_string());
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(malformed)?;
        if digits == 0 {
            return Err(malformed());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| overflow())?;
        let unit = match rest[digits..].chars().next() {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3600,
            Some('d') => 86_400,
            _ => return Err(malformed()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(overflow)?;
        rest = &rest[digits + 1..];
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_what_the_cel_rule_refuses() {
        for bad in [
            "",
            "10",
            "s",
            "10x",
            "1.5h",
            "-1m",
            "10 m",
            "ten minutes",
            "1h30",
            "m10",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert!(matches!(
            parse("99999999999999999999s"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse("999999999999999999d"),
            Err(DurationError::Overflow(_))
        ));
    }
}
