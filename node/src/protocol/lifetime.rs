//! Blob lifetimes as the control plane signs them (docs/economics.md).
//!
//! Floe has no blockchain: the control plane is the one trusted coordinator, in the role Sui
//! plays for Walrus. It signs every registration, extension and deletion of a blob with its
//! Ed25519 key, whose public half every committee carries ([`Economics::control_key`]). A node
//! stores a blob's slivers only under a valid, unexpired lifetime, keeps the newest one
//! (highest `sequence`), and refuses reads once the blob expired or was deleted. Whoever hands
//! the node a lifetime (the writing client, or the control plane catching the node up) need
//! not be trusted: the signature is checked, never the sender.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _};
use serde::{Deserialize, Serialize};

use crate::codec::{BlobId, SymbolShape};

/// Domain separation of a lifetime's signature.
pub const LIFETIME_DOMAIN: &[u8] = b"floe/lifetime/v1";
/// Bytes billed per unit: storage is priced per MiB of encoded size (as Walrus does).
pub const UNIT_BYTES: u64 = 1 << 20;

/// Response metadata key of a refused read of a blob that is gone: `expired` or `deleted`.
pub const BLOB_GONE_KEY: &str = "floe-blob-gone";
/// Response metadata key with the end epoch of an expired blob.
pub const BLOB_END_EPOCH_KEY: &str = "floe-blob-end-epoch";

/// What the committee publishes about storage as users buy it: who signs lifetimes and the
/// prices the nodes voted for this epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Economics {
    /// Ed25519 public key of the control plane; lifetimes must verify under it.
    #[serde(with = "hex_32")]
    pub control_key: [u8; 32],
    /// Units per MiB of encoded size per epoch.
    pub storage_price: u64,
    /// Units per MiB of encoded size, once per registration.
    pub write_price: u64,
    /// The furthest a lifetime may reach beyond the current epoch.
    pub max_epochs_ahead: u32,
}

mod hex_32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(k: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(k))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("expected 32 bytes"))
    }
}

/// The encoded size a blob of `shape` is billed for: every sliver of every pair.
pub fn encoded_size(shape: &SymbolShape) -> u64 {
    (shape.params.n() * (shape.primary_sliver_len() + shape.secondary_sliver_len())) as u64
}

/// Billing units of `encoded_size` bytes: MiB, rounded up, at least one.
pub fn units(encoded_size: u64) -> u64 {
    encoded_size.div_ceil(UNIT_BYTES).max(1)
}

/// A blob's lifetime `[start_epoch, end_epoch)` as the control plane last decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub blob_id: BlobId,
    pub encoded_size: u64,
    pub start_epoch: u32,
    /// First epoch in which the blob is no longer stored.
    pub end_epoch: u32,
    /// The owner may delete it before its end.
    pub deletable: bool,
    /// Deleted by its owner: gone now, whatever `end_epoch` says.
    pub deleted: bool,
    /// The account that registered it (Ed25519 public key).
    pub owner: [u8; 32],
    /// Position in the control plane's log: a node keeps the highest it saw.
    pub sequence: u64,
}

/// Why a blob is no longer served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    Expired { end_epoch: u32 },
    Deleted,
}

impl Gone {
    pub fn reason(&self) -> &'static str {
        match self {
            Gone::Expired { .. } => "expired",
            Gone::Deleted => "deleted",
        }
    }

    /// The refusal a node sends: `OUT_OF_RANGE` for an expired blob, `NOT_FOUND` for a
    /// deleted one, both with the reason in [`BLOB_GONE_KEY`] so callers need not read text.
    pub fn to_status(self, id: &BlobId) -> tonic::Status {
        let mut s = match self {
            Gone::Expired { end_epoch } => tonic::Status::out_of_range(format!(
                "blob {id} expired: it was stored until epoch {end_epoch}"
            )),
            Gone::Deleted => {
                tonic::Status::not_found(format!("blob {id} was deleted by its owner"))
            }
        };
        let md = s.metadata_mut();
        md.insert(
            BLOB_GONE_KEY,
            tonic::metadata::MetadataValue::from_static(self.reason()),
        );
        if let Gone::Expired { end_epoch } = self {
            md.insert(BLOB_END_EPOCH_KEY, end_epoch.into());
        }
        s
    }

    /// The refusal as a caller reads it; `None` for any other status.
    pub fn from_status(s: &tonic::Status) -> Option<Self> {
        let reason = s.metadata().get(BLOB_GONE_KEY)?.to_str().ok()?;
        match reason {
            "deleted" => Some(Gone::Deleted),
            "expired" => Some(Gone::Expired {
                end_epoch: s
                    .metadata()
                    .get(BLOB_END_EPOCH_KEY)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LifetimeError {
    #[error("lifetime: expected {expected} bytes, got {got}")]
    Length { expected: usize, got: usize },
    #[error("lifetime is not signed by this network's control plane")]
    BadSignature,
    #[error("lifetime is for blob {got}, not {expected}")]
    WrongBlob { expected: BlobId, got: BlobId },
    #[error("lifetime bills {claimed} encoded bytes, the blob's metadata encodes to {actual}")]
    WrongSize { claimed: u64, actual: u64 },
    #[error("lifetime ends at epoch {end_epoch}, not after its start {start_epoch}")]
    Empty { start_epoch: u32, end_epoch: u32 },
    #[error("this network does not sign lifetimes (its committee has no control key)")]
    NoControlKey,
}

const BODY_LEN: usize = 32 + 8 + 4 + 4 + 1 + 32 + 8;
/// Wire length of a signed lifetime: body and signature.
pub const SIGNED_LEN: usize = BODY_LEN + 64;

impl Lifetime {
    /// The signed body: `blob id ‖ encoded size u64 LE ‖ start u32 LE ‖ end u32 LE ‖ flags u8
    /// (1 deletable, 2 deleted) ‖ owner ‖ sequence u64 LE`.
    pub fn body(&self) -> [u8; BODY_LEN] {
        let mut b = [0u8; BODY_LEN];
        b[..32].copy_from_slice(self.blob_id.as_bytes());
        b[32..40].copy_from_slice(&self.encoded_size.to_le_bytes());
        b[40..44].copy_from_slice(&self.start_epoch.to_le_bytes());
        b[44..48].copy_from_slice(&self.end_epoch.to_le_bytes());
        b[48] = u8::from(self.deletable) | (u8::from(self.deleted) << 1);
        b[49..81].copy_from_slice(&self.owner);
        b[81..89].copy_from_slice(&self.sequence.to_le_bytes());
        b
    }

    fn from_body(b: &[u8; BODY_LEN]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(x)
        };
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[..32]);
        let mut owner = [0u8; 32];
        owner.copy_from_slice(&b[49..81]);
        Lifetime {
            blob_id: BlobId(id),
            encoded_size: u64_at(32),
            start_epoch: u32_at(40),
            end_epoch: u32_at(44),
            deletable: b[48] & 1 != 0,
            deleted: b[48] & 2 != 0,
            owner,
            sequence: u64_at(81),
        }
    }

    fn message(&self) -> Vec<u8> {
        let mut m = LIFETIME_DOMAIN.to_vec();
        m.extend_from_slice(&self.body());
        m
    }

    pub fn sign(self, key: &SigningKey) -> SignedLifetime {
        let signature = key.sign(&self.message()).to_bytes();
        SignedLifetime {
            lifetime: self,
            signature,
        }
    }

    /// Gone in `epoch`, and why; `None` while it is stored.
    pub fn gone_at(&self, epoch: u32) -> Option<Gone> {
        if self.deleted {
            Some(Gone::Deleted)
        } else if epoch >= self.end_epoch {
            Some(Gone::Expired {
                end_epoch: self.end_epoch,
            })
        } else {
            None
        }
    }
}

/// A lifetime with the control plane's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedLifetime {
    pub lifetime: Lifetime,
    pub signature: [u8; 64],
}

impl SignedLifetime {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = self.lifetime.body().to_vec();
        v.extend_from_slice(&self.signature);
        v
    }

    /// Parse (no signature check: see [`Self::verify`]).
    pub fn from_bytes(b: &[u8]) -> Result<Self, LifetimeError> {
        if b.len() != SIGNED_LEN {
            return Err(LifetimeError::Length {
                expected: SIGNED_LEN,
                got: b.len(),
            });
        }
        let mut body = [0u8; BODY_LEN];
        body.copy_from_slice(&b[..BODY_LEN]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&b[BODY_LEN..]);
        Ok(SignedLifetime {
            lifetime: Lifetime::from_body(&body),
            signature,
        })
    }

    /// Check the signature under `control_key` and that the interval is not empty.
    pub fn verify(&self, control_key: &[u8; 32]) -> Result<(), LifetimeError> {
        let key =
            super::certificate::verifying_key(control_key).ok_or(LifetimeError::BadSignature)?;
        key.verify(
            &self.lifetime.message(),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| LifetimeError::BadSignature)?;
        let l = &self.lifetime;
        if !l.deleted && l.end_epoch <= l.start_epoch {
            return Err(LifetimeError::Empty {
                start_epoch: l.start_epoch,
                end_epoch: l.end_epoch,
            });
        }
        Ok(())
    }

    /// [`Self::verify`], and that it is for `blob` of `encoded_size` bytes.
    pub fn verify_for(
        &self,
        control_key: &[u8; 32],
        blob: &BlobId,
        encoded_size: u64,
    ) -> Result<(), LifetimeError> {
        self.verify(control_key)?;
        self.is_for(blob, encoded_size)
    }

    /// That it is for `blob` of `encoded_size` bytes (the signature is not checked).
    pub fn is_for(&self, blob: &BlobId, encoded_size: u64) -> Result<(), LifetimeError> {
        if &self.lifetime.blob_id != blob {
            return Err(LifetimeError::WrongBlob {
                expected: *blob,
                got: self.lifetime.blob_id,
            });
        }
        if self.lifetime.encoded_size != encoded_size {
            return Err(LifetimeError::WrongSize {
                claimed: self.lifetime.encoded_size,
                actual: encoded_size,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifetime() -> Lifetime {
        Lifetime {
            blob_id: BlobId([7; 32]),
            encoded_size: 5 << 20,
            start_epoch: 3,
            end_epoch: 5,
            deletable: true,
            deleted: false,
            owner: [9; 32],
            sequence: 42,
        }
    }

    #[test]
    fn round_trips_and_verifies_under_the_control_key_only() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let s = lifetime().sign(&key);
        let back = SignedLifetime::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back, s);
        let pk = key.verifying_key().to_bytes();
        assert_eq!(back.verify(&pk), Ok(()));
        let other = SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes();
        assert_eq!(back.verify(&other), Err(LifetimeError::BadSignature));
    }

    #[test]
    fn a_tampered_field_breaks_the_signature() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let pk = key.verifying_key().to_bytes();
        let mut s = lifetime().sign(&key);
        s.lifetime.end_epoch += 10;
        assert_eq!(s.verify(&pk), Err(LifetimeError::BadSignature));
        let mut s = lifetime().sign(&key);
        s.lifetime.deletable = false;
        assert_eq!(s.verify(&pk), Err(LifetimeError::BadSignature));
    }

    #[test]
    fn wrong_blob_size_and_length_are_refused() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let pk = key.verifying_key().to_bytes();
        let s = lifetime().sign(&key);
        assert!(matches!(
            s.verify_for(&pk, &BlobId([8; 32]), 5 << 20),
            Err(LifetimeError::WrongBlob { .. })
        ));
        assert!(matches!(
            s.verify_for(&pk, &BlobId([7; 32]), 1),
            Err(LifetimeError::WrongSize { .. })
        ));
        assert_eq!(s.verify_for(&pk, &BlobId([7; 32]), 5 << 20), Ok(()));
        assert!(matches!(
            SignedLifetime::from_bytes(&[0; 10]),
            Err(LifetimeError::Length { .. })
        ));
        let empty = Lifetime {
            end_epoch: 3,
            ..lifetime()
        }
        .sign(&key);
        assert!(matches!(
            empty.verify(&pk),
            Err(LifetimeError::Empty { .. })
        ));
    }

    #[test]
    fn gone_follows_the_epoch_and_the_deleted_flag() {
        let l = lifetime();
        assert_eq!(l.gone_at(4), None);
        assert_eq!(l.gone_at(5), Some(Gone::Expired { end_epoch: 5 }));
        let d = Lifetime { deleted: true, ..l };
        assert_eq!(d.gone_at(3), Some(Gone::Deleted));
        let st = Gone::Expired { end_epoch: 5 }.to_status(&l.blob_id);
        assert!(st.message().contains("expired"));
        assert_eq!(Gone::from_status(&st), Some(Gone::Expired { end_epoch: 5 }));
        let st = Gone::Deleted.to_status(&l.blob_id);
        assert!(st.message().contains("deleted"));
        assert_eq!(Gone::from_status(&st), Some(Gone::Deleted));
        assert_eq!(Gone::from_status(&tonic::Status::not_found("x")), None);
    }

    #[test]
    fn units_are_mib_rounded_up() {
        assert_eq!(units(0), 1);
        assert_eq!(units(1), 1);
        assert_eq!(units(UNIT_BYTES), 1);
        assert_eq!(units(UNIT_BYTES + 1), 2);
    }
}
