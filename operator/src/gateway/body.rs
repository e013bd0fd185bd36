//! Receiving an upload with bounded memory: small bodies stay in memory, larger ones are spooled
//! to an unlinked-on-drop temporary file that the streaming encoder reads in pieces. The size
//! limit is enforced as bytes arrive (413 before the first byte when `Content-Length` already
//! says too much), a stalled client runs into the idle timeout (408), and a body that ends early
//! is refused (400): nothing is stored from an incomplete upload.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;

use super::error::ApiError;

/// An upload, received whole.
pub enum Received {
    Memory(Vec<u8>),
    File(tempfile::NamedTempFile, u64),
}

impl Received {
    pub fn len(&self) -> u64 {
        match self {
            Received::Memory(v) => v.len() as u64,
            Received::File(_, n) => *n,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The `Content-Length` a request declares, if any.
pub fn declared_len(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Read `body` up to `limit` bytes: in memory below `in_memory`, else into a file in `spool_dir`.
/// `on_bytes` counts what arrives (metrics).
pub async fn receive(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    in_memory: u64,
    spool_dir: &Path,
    idle: Duration,
    on_bytes: impl Fn(u64),
) -> Result<Received, ApiError> {
    let declared = declared_len(headers);
    if let Some(n) = declared {
        if n > limit {
            return Err(ApiError::too_large(format!(
                "the body is {n} bytes; this gateway takes at most {limit}"
            )));
        }
    }
    let mut stream = body.into_data_stream();
    let mut mem: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(in_memory) as usize);
    let mut file: Option<tempfile::NamedTempFile> = None;
    let mut total = 0u64;
    loop {
        let next = tokio::time::timeout(idle, stream.next())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "REQUEST_TIMEOUT",
                    format!("no body bytes arrived for {idle:?}; the upload was dropped"),
                )
            })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                "INCOMPLETE_BODY",
                format!("the body ended early after {total} bytes: {e}; nothing was stored"),
            )
        })?;
        total += chunk.len() as u64;
        on_bytes(chunk.len() as u64);
        if total > limit {
            return Err(ApiError::too_large(format!(
                "the body is larger than this gateway's limit of {limit} bytes"
            )));
        }
        match &mut file {
            Some(f) => write_chunk(f, &chunk).await?,
            None if total > in_memory => {
                let mut f = tempfile::Builder::new()
                    .prefix(".floe-gateway-upload-")
                    .tempfile_in(spool_dir)
                    .map_err(|e| ApiError::internal(format!("spooling the upload: {e}")))?;
                write_chunk(&mut f, &std::mem::take(&mut mem)).await?;
                write_chunk(&mut f, &chunk).await?;
                file = Some(f);
            }
            None => mem.extend_from_slice(&chunk),
        }
    }
    if let Some(n) = declared {
        if n != total {
            return Err(ApiError::bad_request(
                "INCOMPLETE_BODY",
                format!("Content-Length said {n} bytes but {total} arrived; nothing was stored"),
            ));
        }
    }
    Ok(match file {
        Some(f) => Received::File(f, total),
        None => Received::Memory(mem),
    })
}

/// Append to the spool file off the async threads.
async fn write_chunk(f: &mut tempfile::NamedTempFile, data: &[u8]) -> Result<(), ApiError> {
    tokio::task::block_in_place(|| f.as_file_mut().write_all(data))
        .map_err(|e| ApiError::internal(format!("spooling the upload: {e}")))
}
