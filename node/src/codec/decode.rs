//! Reading a blob back from any `k_p` primary slivers (PROTOCOL.md §4).

use rayon::prelude::*;

use super::encode::encode;
use super::merkle::{leaves_of_parts, root_of_leaves, Hash};
use super::metadata::BlobMetadata;
use super::rs;
use super::sliver::{Axis, Sliver};
use super::CodecError;

/// How much to re-check after decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsistencyCheck {
    /// Re-hash the systematic primary slivers that had to be reconstructed and compare them
    /// with the metadata: catches a writer whose parity disagrees with its data.
    #[default]
    Default,
    /// Re-encode the whole blob and compare the blob ID: also catches inconsistencies in
    /// slivers that the reader never looked at.
    Strict,
}

/// Verify every given primary sliver against `metadata`, then decode. Slivers that fail
/// verification are an error; use [`decode_verified`] when they were checked on arrival.
pub fn decode(
    metadata: &BlobMetadata,
    slivers: &[Sliver],
    check: ConsistencyCheck,
) -> Result<Vec<u8>, CodecError> {
    slivers.par_iter().try_for_each(|s| s.verify(metadata))?;
    decode_verified(metadata, slivers, check)
}

/// Decode from primary slivers that were each verified against `metadata`.
pub fn decode_verified(
    metadata: &BlobMetadata,
    slivers: &[Sliver],
    check: ConsistencyCheck,
) -> Result<Vec<u8>, CodecError> {
    let shape = metadata.shape()?;
    let params = shape.params;
    let (kp, s) = (params.k_primary(), shape.symbol_size);
    let mut seen = vec![false; params.n()];
    let mut rows: Vec<(usize, &[u8])> = Vec::with_capacity(kp);
    // Systematic slivers first: they need no decoding at all.
    let mut ordered: Vec<&Sliver> = slivers.iter().filter(|s| s.axis == Axis::Primary).collect();
    ordered.sort_by_key(|s| s.index);
    for sl in ordered {
        sl.check_shape(&shape)?;
        let i = sl.index as usize;
        if !std::mem::replace(&mut seen[i], true) && rows.len() < kp {
            rows.push((i, &sl.data));
        }
    }
    if rows.len() < kp {
        return Err(CodecError::NotEnough {
            what: "distinct primary slivers",
            have: rows.len(),
            need: kp,
        });
    }
    let mut blob = rs::decode_columns(kp, params.n() - kp, s, &rows)?;
    let restored: Vec<usize> = (0..kp).filter(|i| !seen[*i]).collect();
    match check {
        ConsistencyCheck::Default if !restored.is_empty() => {
            let row = params.k_secondary() * s;
            let mut matrix = Vec::with_capacity(restored.len() * row);
            for &i in &restored {
                matrix.extend_from_slice(&blob[i * row..(i + 1) * row]);
            }
            let hashes = primary_row_hashes(&matrix, params.k_secondary(), s, params.f())?;
            for (&i, h) in restored.iter().zip(&hashes) {
                if Some(h) != metadata.primary_hash(i) {
                    return Err(CodecError::InconsistentEncoding);
                }
            }
        }
        ConsistencyCheck::Default => {}
        ConsistencyCheck::Strict => {
            let again = encode(&blob[..shape.len as usize], params)?;
            if again.metadata() != metadata {
                return Err(CodecError::InconsistentEncoding);
            }
        }
    }
    blob.truncate(shape.len as usize);
    Ok(blob)
}

/// Sliver hashes of primary rows (`rows` = r × k symbols), extending them in one batch.
pub(crate) fn primary_row_hashes(
    rows: &[u8],
    k: usize,
    s: usize,
    f: usize,
) -> Result<Vec<Hash>, CodecError> {
    let count = rows.len() / (k * s);
    let mut parity = vec![0u8; count * f * s];
    rs::extend_rows(rows, k, s, f, &mut parity)?;
    Ok((0..count)
        .into_par_iter()
        .map(|r| {
            let data = &rows[r * k * s..(r + 1) * k * s];
            let parity = &parity[r * f * s..(r + 1) * f * s];
            root_of_leaves(&leaves_of_parts(&[data, parity], s))
        })
        .collect())
}
