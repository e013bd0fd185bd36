//! Storage confirmations and certificates (PROTOCOL.md §4).

use std::collections::BTreeSet;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

use super::committee::{Committee, NodeId};
use crate::codec::BlobId;

const CONFIRM_DOMAIN: &[u8] = b"floe/confirm/v1";

/// The bytes a node signs to confirm it stores a blob: `"floe/confirm/v1" ‖ epoch LE ‖ blob_id`.
pub fn confirmation_message(epoch: u32, blob_id: &BlobId) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONFIRM_DOMAIN.len() + 4 + 32);
    m.extend_from_slice(CONFIRM_DOMAIN);
    m.extend_from_slice(&epoch.to_le_bytes());
    m.extend_from_slice(blob_id.as_bytes());
    m
}

/// One node's signed statement that it stores all slivers of a blob for all its shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub epoch: u32,
    pub blob_id: BlobId,
    pub node_id: NodeId,
    pub signature: [u8; 64],
}

impl Confirmation {
    pub fn sign(key: &SigningKey, epoch: u32, blob_id: BlobId) -> Self {
        let signature = key.sign(&confirmation_message(epoch, &blob_id)).to_bytes();
        Self {
            epoch,
            blob_id,
            node_id: NodeId(key.verifying_key().to_bytes()),
            signature,
        }
    }
    pub fn verify(&self) -> bool {
        verify_signature(
            &self.node_id,
            &confirmation_message(self.epoch, &self.blob_id),
            &self.signature,
        )
    }
}

pub(super) fn verify_signature(id: &NodeId, msg: &[u8], sig: &[u8; 64]) -> bool {
    verifying_key(&id.0).is_some_and(|k| k.verify(msg, &Signature::from_bytes(sig)).is_ok())
}

/// Decompressed public keys of the node IDs seen, so that the curve point of a member is not
/// decompressed again for every signature it made (a square root: about a fifth of a verify,
/// measured on a stream of small puts, each certificate carrying a quorum of signatures).
/// Bounded: cleared when it holds more keys than any committee has members. Also the control
/// key, under which every lifetime is verified.
pub(crate) fn verifying_key(id: &[u8; 32]) -> Option<VerifyingKey> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    const MAX_KEYS: usize = 4096;
    static KEYS: OnceLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> = OnceLock::new();
    let keys = KEYS.get_or_init(Default::default);
    if let Some(k) = keys.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
        return Some(*k);
    }
    let k = VerifyingKey::from_bytes(id).ok()?;
    let mut m = keys.lock().unwrap_or_else(|p| p.into_inner());
    if m.len() >= MAX_KEYS {
        m.clear();
    }
    m.insert(*id, k);
    Some(k)
}

/// Confirmations whose shard weight reaches a quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub epoch: u32,
    pub blob_id: BlobId,
    pub signers: Vec<(NodeId, [u8; 64])>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateError {
    #[error("certificate is for epoch {got}, committee is epoch {expected}")]
    WrongEpoch { got: u32, expected: u32 },
    #[error("signer {0} is not a committee member")]
    NotAMember(String),
    #[error("signer {0} appears twice")]
    DuplicateSigner(String),
    #[error("bad signature from {0}")]
    BadSignature(String),
    #[error("signers hold {weight} shards, a quorum needs {needed}")]
    NoQuorum { weight: usize, needed: usize },
}

/// Check a certificate against the committee of its epoch; returns the signers' shard weight.
pub fn verify_certificate(
    committee: &Committee,
    cert: &Certificate,
) -> Result<usize, CertificateError> {
    if cert.epoch != committee.epoch {
        return Err(CertificateError::WrongEpoch {
            got: cert.epoch,
            expected: committee.epoch,
        });
    }
    let msg = confirmation_message(cert.epoch, &cert.blob_id);
    // membership and weight first: a certificate short of a quorum costs no signature check
    let mut seen = BTreeSet::new();
    let mut weight = 0;
    let mut keys = Vec::with_capacity(cert.signers.len());
    for (id, _) in &cert.signers {
        if !seen.insert(*id) {
            return Err(CertificateError::DuplicateSigner(id.short()));
        }
        let w = committee.weight(id);
        if w == 0 {
            return Err(CertificateError::NotAMember(id.short()));
        }
        keys.push(verifying_key(&id.0).ok_or_else(|| CertificateError::BadSignature(id.short()))?);
        weight += w;
    }
    let params = committee.params();
    if !params.is_quorum(weight) {
        return Err(CertificateError::NoQuorum {
            weight,
            needed: params.quorum_weight(),
        });
    }
    // All signatures in one batch equation (about half the cost of checking each). The batch
    // check is the cofactored one, which accepts a few crafted signatures that the single check
    // refuses; every certificate check in Floe (uploads, peers' lists, shard sync) goes through
    // this function, so honest nodes still agree on every certificate. On failure each is
    // checked alone to name the bad signer.
    let sigs: Vec<Signature> = cert
        .signers
        .iter()
        .map(|(_, sig)| Signature::from_bytes(sig))
        .collect();
    let msgs: Vec<&[u8]> = vec![&msg; sigs.len()];
    if ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_err() {
        let bad = cert
            .signers
            .iter()
            .zip(&keys)
            .find(|((_, sig), k)| k.verify(&msg, &Signature::from_bytes(sig)).is_err())
            .map_or_else(|| "a signer".to_string(), |((id, _), _)| id.short());
        return Err(CertificateError::BadSignature(bad));
    }
    Ok(weight)
}

impl Certificate {
    /// Compact binary form kept on disk: epoch u32 LE, blob ID, count u16 LE, (id, signature)*.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(38 + 96 * self.signers.len());
        b.extend_from_slice(&self.epoch.to_le_bytes());
        b.extend_from_slice(self.blob_id.as_bytes());
        b.extend_from_slice(&(self.signers.len() as u16).to_le_bytes());
        for (id, sig) in &self.signers {
            b.extend_from_slice(&id.0);
            b.extend_from_slice(sig);
        }
        b
    }
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let epoch = u32::from_le_bytes(b.get(..4)?.try_into().ok()?);
        let blob_id = BlobId(b.get(4..36)?.try_into().ok()?);
        let count = u16::from_le_bytes(b.get(36..38)?.try_into().ok()?) as usize;
        let rest = b.get(38..)?;
        if rest.len() != count * 96 {
            return None;
        }
        let signers = rest
            .chunks_exact(96)
            .map(|c| {
                (
                    NodeId(c[..32].try_into().expect("32")),
                    c[32..].try_into().expect("64"),
                )
            })
            .collect();
        Some(Self {
            epoch,
            blob_id,
            signers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Member;

    fn keys(n: u8) -> Vec<SigningKey> {
        (1..=n).map(|i| SigningKey::from_bytes(&[i; 32])).collect()
    }

    fn committee(keys: &[SigningKey]) -> Committee {
        // 4 nodes, 7 shards: weights 2, 2, 2, 1
        let shards = [vec![0, 1], vec![2, 3], vec![4, 5], vec![6]];
        Committee {
            epoch: 3,
            n_shards: 7,
            members: keys
                .iter()
                .zip(shards)
                .map(|(k, s)| Member {
                    node_id: NodeId(k.verifying_key().to_bytes()),
                    address: String::new(),
                    stake: 1,
                    shards: s,
                })
                .collect(),
            economics: None,
        }
    }

    #[test]
    fn quorum_is_counted_in_shards() {
        let ks = keys(4);
        let c = committee(&ks);
        let id = BlobId([9; 32]);
        let sign = |k: &SigningKey| {
            let conf = Confirmation::sign(k, 3, id);
            assert!(conf.verify());
            (conf.node_id, conf.signature)
        };
        // 2 + 2 + 1 = 5 shards of 7: quorum (3·5 ≥ 15)
        let cert = Certificate {
            epoch: 3,
            blob_id: id,
            signers: vec![sign(&ks[0]), sign(&ks[1]), sign(&ks[3])],
        };
        assert_eq!(verify_certificate(&c, &cert), Ok(5));
        // 2 + 2 = 4 shards: no quorum
        let weak = Certificate {
            signers: cert.signers[..2].to_vec(),
            ..cert.clone()
        };
        assert_eq!(
            verify_certificate(&c, &weak),
            Err(CertificateError::NoQuorum {
                weight: 4,
                needed: 5
            })
        );
        // a forged signature, a duplicate, an outsider, a wrong epoch
        let mut forged = cert.clone();
        forged.signers[0].1[0] ^= 1;
        assert!(matches!(
            verify_certificate(&c, &forged),
            Err(CertificateError::BadSignature(_))
        ));
        let mut dup = cert.clone();
        dup.signers.push(dup.signers[0]);
        assert!(matches!(
            verify_certificate(&c, &dup),
            Err(CertificateError::DuplicateSigner(_))
        ));
        let outsider = SigningKey::from_bytes(&[77; 32]);
        let mut out = cert.clone();
        out.signers.push(sign(&outsider));
        assert!(matches!(
            verify_certificate(&c, &out),
            Err(CertificateError::NotAMember(_))
        ));
        let wrong = Certificate { epoch: 4, ..cert };
        assert!(matches!(
            verify_certificate(&c, &wrong),
            Err(CertificateError::WrongEpoch { .. })
        ));
    }
}
