//! Reading part of a blob, in order, with bounded memory.
//!
//! Row `i < k_p` of the blob matrix *is* systematic primary sliver `i` (PROTOCOL.md §2), so the
//! bytes `[a, b)` of a blob live in the rows `a / row … (b − 1) / row` and nothing else needs to
//! be fetched: a range read costs the rows it touches, and a whole-blob read streams row by row
//! with a few rows fetched ahead. Every sliver is verified against the metadata before its bytes
//! are handed out (the re-hash of the systematic slivers is the default consistency check of a
//! full read, §4). Only when a systematic sliver cannot be had does the reader fall back to a
//! full decode from any `k_p` slivers, spooled to a file so memory stays bounded.

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, FuturesUnordered, StreamExt};

use super::blob::{BlobClient, ReadError};
use crate::codec::{BlobId, BlobMetadata, EncodingParams, SymbolShape};

/// The rows (systematic primary slivers) that hold bytes `range` of a blob of this shape.
pub fn rows_for(shape: &SymbolShape, range: &Range<u64>) -> Range<usize> {
    let row = shape.primary_sliver_len().max(1) as u64;
    let end = range.end.min(shape.len);
    if range.start >= end {
        return 0..0;
    }
    (range.start / row) as usize..end.div_ceil(row) as usize
}

/// The part of row `i` (as offsets into the row) that falls inside `range`.
fn slice_of_row(row_len: u64, i: usize, range: &Range<u64>) -> Range<usize> {
    let at = i as u64 * row_len;
    let a = range.start.max(at) - at;
    let b = range.end.min(at + row_len).saturating_sub(at);
    a as usize..b.max(a) as usize
}

/// What the members' answers say of a blob none of them sent the metadata of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Expired or deleted: members holding f+1 shards refuse it as gone (one honest among
    /// them, so a single node cannot make a live blob look gone), or they and the members that
    /// do not know it make a quorum.
    Gone,
    /// Members holding a quorum say they do not know it (a certified blob is held by at least
    /// f+1 honest shards of any quorum).
    Absent,
    /// Too few answered to tell.
    Unknown,
}

/// The verdict from the shard weights that answered "unknown" (`absent`) and "gone" (`gone`).
pub fn missing(params: &EncodingParams, absent: usize, gone: usize) -> Missing {
    if gone > 0 && (params.is_validity(gone) || params.is_quorum(gone + absent)) {
        Missing::Gone
    } else if params.is_quorum(absent) {
        Missing::Absent
    } else {
        Missing::Unknown
    }
}

static SPOOL: AtomicU64 = AtomicU64::new(0);

impl BlobClient {
    /// The verified metadata of `id`, telling "does not exist" from "cannot tell now": the blob
    /// is absent only when members holding a quorum of shards say so (a certified blob is held by
    /// at least f+1 honest ones among any quorum); anything less is
    /// [`ReadError::Unavailable`]. It is gone (expired or deleted, [`ReadError::Gone`]) when
    /// members holding f+1 shards refuse it as such — at least one honest among them, so one
    /// node cannot make a live blob look gone — or when, with the absent, they make a quorum.
    pub async fn locate(&self, id: &BlobId) -> Result<Arc<BlobMetadata>, ReadError> {
        let mut reason = String::new();
        for round in 0..2 {
            let members = self.members();
            let params = self.committee().params();
            let mut calls: FuturesUnordered<_> = members
                .into_iter()
                .map(|(node, weight)| async move { (node.get_metadata(id).await, weight) })
                .collect();
            let (mut absent, mut failures) = (0usize, Vec::new());
            let (mut gone, mut gone_weight) = (None, 0usize);
            while let Some((r, weight)) = calls.next().await {
                match r {
                    Ok(md) => return Ok(Arc::new(md)),
                    Err(super::ClientError::Gone { gone: g, .. }) => {
                        gone = Some(g);
                        gone_weight += weight;
                    }
                    Err(e) if e.code() == Some(tonic::Code::NotFound) => absent += weight,
                    Err(e) => failures.push(e.to_string()),
                }
            }
            match (missing(&params, absent, gone_weight), gone) {
                (Missing::Gone, Some(gone)) => return Err(ReadError::Gone { blob: *id, gone }),
                (Missing::Absent, _) => return Err(ReadError::NotFound(*id)),
                _ => {}
            }
            reason = format!(
                "{absent} of {} shards say it is unknown (a quorum is {}), {} nodes failed{}",
                params.n(),
                params.quorum_weight(),
                failures.len(),
                failures
                    .first()
                    .map_or(String::new(), |f| format!(", e.g. {f}"))
            );
            if round == 0 && !matches!(self.refresh().await, Ok(true)) {
                break;
            }
        }
        Err(ReadError::Unavailable { id: *id, reason })
    }

    /// Bytes `range` of the blob (clamped to its length), in memory: for small ranges such as a
    /// quilt's index or one of its files.
    pub async fn read_range(
        self: &Arc<Self>,
        id: &BlobId,
        md: &Arc<BlobMetadata>,
        range: Range<u64>,
    ) -> Result<Vec<u8>, ReadError> {
        let mut out = Vec::new();
        let mut s = self.read_range_stream(*id, md.clone(), range, 4);
        while let Some(piece) = s.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }

    /// Bytes `range` of the blob (clamped to its length) as a stream of pieces in order, at most
    /// `window` rows fetched ahead: memory stays at `window` slivers whatever the blob's size.
    pub fn read_range_stream(
        self: &Arc<Self>,
        id: BlobId,
        md: Arc<BlobMetadata>,
        range: Range<u64>,
        window: usize,
    ) -> BoxStream<'static, Result<Bytes, ReadError>> {
        let shape = match md.shape() {
            Ok(s) => s,
            Err(e) => return stream::once(async move { Err(ReadError::Codec(e)) }).boxed(),
        };
        let range = range.start.min(shape.len)..range.end.min(shape.len);
        let rows = rows_for(&shape, &range);
        let row_len = shape.primary_sliver_len() as u64;
        let client = self.clone();
        let fast = {
            let (client, md) = (client.clone(), md.clone());
            stream::iter(rows.clone())
                .map(move |i| {
                    let f = client.primary_sliver(&id, &md, i as u16);
                    async move { (i, f.await) }
                })
                .buffered(window.max(1))
                .boxed()
        };
        enum State {
            Fast(BoxStream<'static, (usize, Result<crate::codec::Sliver, String>)>),
            /// A systematic sliver was missing: the rest comes from a full decode in a file.
            Spooled(Arc<std::fs::File>, Range<usize>),
            Done,
        }
        stream::unfold(State::Fast(fast), move |state| {
            let (client, md, range) = (client.clone(), md.clone(), range.clone());
            async move {
                match state {
                    State::Done => None,
                    State::Fast(mut fast) => match fast.next().await {
                        None => None,
                        Some((i, Ok(s))) => {
                            let piece = slice_of_row(row_len, i, &range);
                            let data = Bytes::from(s.data).slice(piece);
                            Some((Ok(data), State::Fast(fast)))
                        }
                        Some((i, Err(e))) => {
                            tracing::info!(blob = %id, row = i, "systematic sliver unavailable ({e}); decoding the blob");
                            match client.spool(&id).await {
                                Ok(file) => {
                                    let rest = i..rows_for(&md.shape().ok()?, &range).end;
                                    let (piece, next) = read_spooled(&file, row_len, &range, rest).await;
                                    Some((piece, next.map_or(State::Done, |r| State::Spooled(file, r))))
                                }
                                Err(e) => Some((Err(e), State::Done)),
                            }
                        }
                    },
                    State::Spooled(file, rest) => {
                        if rest.is_empty() {
                            return None;
                        }
                        let (piece, next) = read_spooled(&file, row_len, &range, rest).await;
                        Some((piece, next.map_or(State::Done, |r| State::Spooled(file, r))))
                    }
                }
            }
        })
        .boxed()
    }

    /// The whole blob decoded into an unlinked temporary file (memory stays at the slivers in
    /// flight: `read_to_file` writes each at its offset).
    async fn spool(&self, id: &BlobId) -> Result<Arc<std::fs::File>, ReadError> {
        let path: PathBuf = std::env::temp_dir().join(format!(
            "floe-read-{}-{}",
            std::process::id(),
            SPOOL.fetch_add(1, Ordering::Relaxed)
        ));
        self.read_to_file(id, &path, None).await?;
        let file = std::fs::File::open(&path)
            .map_err(|e| ReadError::Io(format!("{}: {e}", path.display())))?;
        let _ = std::fs::remove_file(&path);
        Ok(Arc::new(file))
    }
}

/// The first row of `rows` read back from the spooled blob, and the rows left.
async fn read_spooled(
    file: &Arc<std::fs::File>,
    row_len: u64,
    range: &Range<u64>,
    rows: Range<usize>,
) -> (Result<Bytes, ReadError>, Option<Range<usize>>) {
    let i = rows.start;
    let piece = slice_of_row(row_len, i, range);
    let at = i as u64 * row_len + piece.start as u64;
    let file = file.clone();
    let r = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; piece.len()];
        file.read_exact_at(&mut buf, at).map(|()| Bytes::from(buf))
    })
    .await
    .map_err(|e| ReadError::Io(e.to_string()))
    .and_then(|r| r.map_err(|e| ReadError::Io(e.to_string())));
    (r, Some(i + 1..rows.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gone_absent_or_unknown_by_weight() {
        // n = 10: f = 3, f+1 = 4, a quorum is 7
        let p = EncodingParams::new(10).unwrap();
        assert_eq!(missing(&p, 0, 10), Missing::Gone);
        assert_eq!(missing(&p, 0, 4), Missing::Gone, "f+1 say gone: one honest");
        assert_eq!(missing(&p, 0, 3), Missing::Unknown, "f could be lying");
        assert_eq!(
            missing(&p, 4, 3),
            Missing::Gone,
            "with the absent, a quorum"
        );
        assert_eq!(missing(&p, 7, 0), Missing::Absent);
        assert_eq!(missing(&p, 6, 0), Missing::Unknown);
        assert_eq!(missing(&p, 3, 3), Missing::Unknown);
        assert_eq!(missing(&p, 0, 0), Missing::Unknown);
    }

    fn shape(n: usize, len: u64) -> SymbolShape {
        EncodingParams::new(n).unwrap().symbol_shape(len).unwrap()
    }

    #[test]
    fn rows_cover_exactly_the_range() {
        let s = shape(10, 100_000);
        let row = s.primary_sliver_len() as u64;
        assert_eq!(rows_for(&s, &(0..1)), 0..1);
        assert_eq!(rows_for(&s, &(0..row)), 0..1);
        assert_eq!(rows_for(&s, &(0..row + 1)), 0..2);
        assert_eq!(rows_for(&s, &(row..row + 1)), 1..2);
        assert_eq!(rows_for(&s, &(5..5)), 0..0);
        // clamped to the blob
        assert_eq!(rows_for(&s, &(99_999..u64::MAX)).len(), 1);
        assert_eq!(rows_for(&s, &(100_000..200_000)), 0..0);
    }

    #[test]
    fn row_slices_add_up_to_the_range() {
        let s = shape(7, 10_000);
        let row = s.primary_sliver_len() as u64;
        for range in [0..10_000u64, 3..4, 17..9_999, row - 1..row + 1, 0..row] {
            let total: usize = rows_for(&s, &range)
                .map(|i| slice_of_row(row, i, &range).len())
                .sum();
            assert_eq!(total as u64, range.end - range.start, "{range:?}");
        }
    }
}
