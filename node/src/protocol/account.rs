//! Accounts of the control plane's client API (docs/economics.md): an account is an Ed25519
//! key; every call that spends from it is signed, with a nonce larger than the last one used,
//! so a captured request cannot be replayed.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Domain separation of a signed control-plane request.
pub const REQUEST_DOMAIN: &[u8] = b"floe/control/v1";

/// An account: the public half of its Ed25519 key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub [u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountError {
    #[error("invalid account {0:?}: expected 32 bytes (64 hex digits)")]
    BadAccount(String),
    #[error("the request's signature does not verify under account {0}")]
    BadSignature(AccountId),
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({})", hex::encode(&self.0[..4]))
    }
}
impl FromStr for AccountId {
    type Err = AccountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = hex::decode(s.trim()).map_err(|_| AccountError::BadAccount(s.to_string()))?;
        Self::try_from(b.as_slice())
    }
}
impl TryFrom<&[u8]> for AccountId {
    type Error = AccountError;
    fn try_from(b: &[u8]) -> Result<Self, Self::Error> {
        Ok(AccountId(
            b.try_into()
                .map_err(|_| AccountError::BadAccount(hex::encode(b)))?,
        ))
    }
}
impl Serialize for AccountId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl AccountId {
    pub fn of(key: &SigningKey) -> Self {
        AccountId(key.verifying_key().to_bytes())
    }

    /// Check a request's signature.
    pub fn verify(
        &self,
        method: &str,
        nonce: u64,
        body: &[u8],
        signature: &[u8],
    ) -> Result<(), AccountError> {
        let key =
            VerifyingKey::from_bytes(&self.0).map_err(|_| AccountError::BadSignature(*self))?;
        let sig =
            Signature::from_slice(signature).map_err(|_| AccountError::BadSignature(*self))?;
        key.verify(&control_request_message(method, self, nonce, body), &sig)
            .map_err(|_| AccountError::BadSignature(*self))
    }
}

/// `"floe/control/v1" ‖ method ‖ 0 ‖ account ‖ nonce u64 LE ‖ body`.
pub fn control_request_message(
    method: &str,
    account: &AccountId,
    nonce: u64,
    body: &[u8],
) -> Vec<u8> {
    let mut m = REQUEST_DOMAIN.to_vec();
    m.extend_from_slice(method.as_bytes());
    m.push(0);
    m.extend_from_slice(&account.0);
    m.extend_from_slice(&nonce.to_le_bytes());
    m.extend_from_slice(body);
    m
}

/// Sign a request as `key`'s account.
pub fn sign_request(key: &SigningKey, method: &str, nonce: u64, body: &[u8]) -> [u8; 64] {
    key.sign(&control_request_message(
        method,
        &AccountId::of(key),
        nonce,
        body,
    ))
    .to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_verifies_only_unchanged() {
        let k = SigningKey::from_bytes(&[3; 32]);
        let a = AccountId::of(&k);
        let sig = sign_request(&k, "Register", 7, b"body");
        assert_eq!(a.verify("Register", 7, b"body", &sig), Ok(()));
        assert!(a.verify("Register", 8, b"body", &sig).is_err(), "nonce");
        assert!(a.verify("Delete", 7, b"body", &sig).is_err(), "method");
        assert!(a.verify("Register", 7, b"bodz", &sig).is_err(), "body");
        let other = AccountId::of(&SigningKey::from_bytes(&[4; 32]));
        assert!(
            other.verify("Register", 7, b"body", &sig).is_err(),
            "account"
        );
        assert!(
            a.verify("Register", 7, b"body", &[0; 10]).is_err(),
            "length"
        );
        assert_eq!(a.to_string().parse::<AccountId>(), Ok(a));
        assert!("zz".parse::<AccountId>().is_err());
    }
}
