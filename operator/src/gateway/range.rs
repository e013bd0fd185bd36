//! The `Range` request header (RFC 9110 §14), decided without I/O: which bytes of a blob of a
//! known length a request wants.

use std::ops::Range;

/// What a request asked for, given the blob's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// No usable `Range`: the whole blob, 200.
    Whole,
    /// One satisfiable range, 206 with `Content-Range: bytes a-b/len`.
    Part(Range<u64>),
    /// A range that lies wholly outside the blob, 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// A `Range` header value that is not a byte range at all (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Range header {0:?}: expected bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX")]
pub struct BadRange(pub String);

/// Decide a `Range` header against a blob of `len` bytes.
///
/// Forms: `bytes=a-b` (clamped to the end), `bytes=a-`, `bytes=-n` (the last n bytes).
/// A list of several ranges is answered with the whole blob, which RFC 9110 allows (a server
/// may ignore `Range`) and which spares clients a multipart/byteranges body; units other
/// than `bytes` are ignored the same way.
pub fn decide(header: Option<&str>, len: u64) -> Result<Wanted, BadRange> {
    let Some(h) = header else {
        return Ok(Wanted::Whole);
    };
    let bad = || BadRange(h.to_string());
    let Some((unit, spec)) = h.trim().split_once('=') else {
        return Err(bad());
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ok(Wanted::Whole);
    }
    if spec.contains(',') {
        return Ok(Wanted::Whole);
    }
    let (first, last) = spec.trim().split_once('-').ok_or_else(bad)?;
    let num = |s: &str| -> Result<Option<u64>, BadRange> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // more digits than u64 holds: past any blob's end
        Ok(Some(s.parse().unwrap_or(u64::MAX)))
    };
    match (num(first)?, num(last)?) {
        (None, None) => Err(bad()),
        (None, Some(0)) => Ok(Wanted::Unsatisfiable),
        (None, Some(n)) => {
            if len == 0 {
                Ok(Wanted::Unsatisfiable)
            } else {
                Ok(Wanted::Part(len.saturating_sub(n)..len))
            }
        }
        (Some(a), b) => {
            if let Some(b) = b {
                if b < a {
                    return Err(bad());
                }
            }
            if a >= len {
                return Ok(Wanted::Unsatisfiable);
            }
            let end = b.map_or(len, |b| b.saturating_add(1).min(len));
            Ok(Wanted::Part(a..end))
        }
    }
}

/// `Content-Range` of a part: `bytes a-b/len` (inclusive end).
pub fn content_range(r: &Range<u64>, len: u64) -> String {
    format!("bytes {}-{}/{len}", r.start, r.end.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Wanted::*;

    #[test]
    fn every_form() {
        let d = |h: &str| decide(Some(h), 1000).unwrap();
        assert_eq!(decide(None, 1000).unwrap(), Whole);
        assert_eq!(d("bytes=0-0"), Part(0..1));
        assert_eq!(d("bytes=0-999"), Part(0..1000));
        assert_eq!(d("bytes=10-19"), Part(10..20));
        assert_eq!(d("bytes=990-5000"), Part(990..1000));
        assert_eq!(d("bytes=990-"), Part(990..1000));
        assert_eq!(d("bytes=0-"), Part(0..1000));
        assert_eq!(d("bytes=-10"), Part(990..1000));
        assert_eq!(d("bytes=-5000"), Part(0..1000));
        assert_eq!(d(" Bytes = 1 - 2 "), Part(1..3));
        assert_eq!(d("bytes=1000-"), Unsatisfiable);
        assert_eq!(d("bytes=1000-2000"), Unsatisfiable);
        assert_eq!(d("bytes=-0"), Unsatisfiable);
        assert_eq!(d("bytes=99999999999999999999999-"), Unsatisfiable);
        assert_eq!(d("bytes=0-1,5-6"), Whole);
        assert_eq!(d("items=0-1"), Whole);
        assert_eq!(decide(Some("bytes=-1"), 0).unwrap(), Unsatisfiable);
        assert_eq!(decide(Some("bytes=0-"), 0).unwrap(), Unsatisfiable);
    }

    #[test]
    fn malformed_is_an_error() {
        for h in [
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=1",
            "bytes=+1-2",
        ] {
            assert!(decide(Some(h), 100).is_err(), "{h:?}");
        }
    }

    #[test]
    fn content_range_is_inclusive() {
        assert_eq!(content_range(&(0..10), 100), "bytes 0-9/100");
        assert_eq!(content_range(&(99..100), 100), "bytes 99-99/100");
    }
}
