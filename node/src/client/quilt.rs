//! Reading quilts (`crate::quilt`): the index from the first rows of the blob, then a file from
//! only the rows that hold it.

use std::sync::Arc;

use super::blob::{BlobClient, ReadError};
use crate::codec::{BlobId, BlobMetadata};
use crate::quilt::{self, Entry, QuiltError};

#[derive(Debug, thiserror::Error)]
pub enum QuiltReadError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Quilt(#[from] QuiltError),
}

impl BlobClient {
    /// The index of quilt `id`. The first row of the blob holds the header and, for most quilts,
    /// the whole index; a longer index costs one more read.
    pub async fn quilt_index(
        self: &Arc<Self>,
        id: &BlobId,
        md: &Arc<BlobMetadata>,
    ) -> Result<Vec<Entry>, QuiltReadError> {
        let shape = md.shape().map_err(ReadError::Codec)?;
        let first = (shape.primary_sliver_len() as u64)
            .max(quilt::HEADER_LEN as u64)
            .min(shape.len);
        let mut prefix = self.read_range(id, md, 0..first).await?;
        let (ilen, _) = quilt::parse_header(&prefix)?;
        let need = (quilt::HEADER_LEN + ilen) as u64;
        if need > shape.len {
            return Err(QuiltError::Truncated("index").into());
        }
        if need > prefix.len() as u64 {
            let more = self.read_range(id, md, prefix.len() as u64..need).await?;
            prefix.extend(more);
        }
        Ok(quilt::parse_index(&prefix, shape.len)?)
    }

    /// One file of quilt `id` by identifier, fetching only the rows that hold it.
    pub async fn quilt_file(
        self: &Arc<Self>,
        id: &BlobId,
        identifier: &str,
    ) -> Result<(Entry, Vec<u8>), QuiltReadError> {
        let md = self.locate(id).await?;
        let index = self.quilt_index(id, &md).await?;
        let entry = index
            .into_iter()
            .find(|e| e.identifier == identifier)
            .ok_or_else(|| QuiltError::NoSuchFile(identifier.to_string()))?;
        let data = self.read_range(id, &md, entry.range()).await?;
        Ok((entry, data))
    }
}
