//! Checks only the controller can make. The API server refuses most invalid specs through the
//! CRD's schema and CEL rules; what slips through (overflowing durations, relations between
//! durations, sizes CEL parses differently) lands here and becomes the `Invalid` condition:
//! the cluster is then left alone until its spec changes, never crash-looped.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::duration::{self, DurationError};
use super::spec::StorageClusterSpec;

/// Shortest epoch the operator accepts: an epoch change has to publish a committee, let the
/// members sync and collect their reports, which takes more than a few seconds.
pub const MIN_EPOCH: Duration = Duration::from_secs(10);

/// The spec's values in the units the controller works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSpec {
    pub epoch_duration: Duration,
    pub challenge_timeout: Duration,
    /// Bytes of each node's volume.
    pub volume_bytes: u64,
}

/// One reason a spec is invalid; the message is shown in the `Invalid` condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("spec.epochDuration: {0}")]
    EpochDuration(DurationError),
    #[error("spec.epochDuration {0:?} is shorter than the minimum of 10s")]
    EpochTooShort(String),
    #[error("spec.challenges.timeout: {0}")]
    ChallengeTimeout(DurationError),
    #[error("spec.challenges.timeout {timeout:?} must be shorter than spec.epochDuration {epoch:?}: challenges are answered within an epoch")]
    ChallengeOutlastsEpoch { timeout: String, epoch: String },
    #[error("spec.storage.size {0:?} is not a byte size (write e.g. 10Gi or 500G)")]
    StorageSize(String),
}

/// Check a spec; all problems are returned at once so a person can fix them in one edit.
pub fn validate(spec: &StorageClusterSpec) -> Result<ValidSpec, Vec<SpecError>> {
    let mut errors = Vec::new();
    let epoch = duration::parse(&spec.epoch_duration)
        .map_err(|e| errors.push(SpecError::EpochDuration(e)))
        .ok();
    if epoch.is_some_and(|e| e < MIN_EPOCH) {
        errors.push(SpecError::EpochTooShort(spec.epoch_duration.clone()));
    }
    let timeout = duration::parse(&spec.challenges.timeout)
        .map_err(|e| errors.push(SpecError::ChallengeTimeout(e)))
        .ok();
    if let (Some(e), Some(t)) = (epoch, timeout) {
        if spec.challenges.samples > 0 && t >= e {
            errors.push(SpecError::ChallengeOutlastsEpoch {
                timeout: spec.challenges.timeout.clone(),
                epoch: spec.epoch_duration.clone(),
            });
        }
    }
    let bytes = quantity_bytes(&spec.storage.size);
    if bytes.is_none() {
        errors.push(SpecError::StorageSize(spec.storage.size.0.clone()));
    }
    match (epoch, timeout, bytes) {
        (Some(epoch_duration), Some(challenge_timeout), Some(volume_bytes))
            if errors.is_empty() =>
        {
            Ok(ValidSpec {
                epoch_duration,
                challenge_timeout,
                volume_bytes,
            })
        }
        _ => Err(errors),
    }
}

/// Bytes of a Kubernetes quantity such as `10Gi`, `500G`, `1.5Ti` or `1000000`. Fractions of a
/// byte round down. `None` for anything else (milli-units, exponents, signs, overflow): the
/// controller then reports the spec invalid instead of guessing.
pub fn quantity_bytes(q: &Quantity) -> Option<u64> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let mult: u128 = match suffix {
        "" => 1,
        "k" => 1000,
        "M" => 1000u128.pow(2),
        "G" => 1000u128.pow(3),
        "T" => 1000u128.pow(4),
        "P" => 1000u128.pow(5),
        "E" => 1000u128.pow(6),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return None,
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if frac.contains('.') || frac.len() > 18 {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let scale = 10u128.pow(frac.len() as u32);
    let bytes = int
        .checked_mul(mult)?
        .checked_add(frac_value.checked_mul(mult)? / scale)?;
    u64::try_from(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::StorageClusterSpec;

    fn spec() -> StorageClusterSpec {
        serde_json::from_value(serde_json::json!({"nodes": 4, "shards": 10}))
            .expect("minimal spec deserializes")
    }

    #[test]
    fn defaults_are_valid() {
        let v = validate(&spec()).expect("defaults are valid");
        assert_eq!(v.epoch_duration, Duration::from_secs(600));
        assert_eq!(v.challenge_timeout, Duration::from_secs(30));
        assert_eq!(v.volume_bytes, 10 << 30);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut s = spec();
        s.epoch_duration = "99999999999999999999d".into();
        s.challenges.timeout = "x".into();
        s.storage.size = Quantity("100m".into());
        let errs = validate(&s).expect_err("invalid");
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(matches!(
            errs[0],
            SpecError::EpochDuration(DurationError::Overflow(_))
        ));
        assert!(matches!(errs[1], SpecError::ChallengeTimeout(_)));
        assert_eq!(errs[2], SpecError::StorageSize("100m".into()));
    }

    #[test]
    fn relations_between_durations() {
        let mut s = spec();
        s.epoch_duration = "5s".into();
        s.challenges.timeout = "1s".into();
        assert_eq!(
            validate(&s),
            Err(vec![SpecError::EpochTooShort("5s".into())])
        );
        s.epoch_duration = "30s".into();
        s.challenges.timeout = "30s".into();
        let errs = validate(&s).expect_err("timeout = epoch");
        assert!(errs[0]
            .to_string()
            .contains("must be shorter than spec.epochDuration"));
        // without challenges the timeout does not matter
        s.challenges.samples = 0;
        assert!(validate(&s).is_ok());
    }

    #[test]
    fn quantities() {
        let q = |s: &str| quantity_bytes(&Quantity(s.into()));
        assert_eq!(q("10Gi"), Some(10 << 30));
        assert_eq!(q("500G"), Some(500_000_000_000));
        assert_eq!(q("1.5Ki"), Some(1536));
        assert_eq!(q("1000"), Some(1000));
        assert_eq!(q(".5k"), Some(500));
        for bad in ["", "Gi", "1.2.3Gi", "10gi", "100m", "1e9", "-1Gi", "20Ei"] {
            assert_eq!(q(bad), None, "{bad:?}");
        }
    }
}
