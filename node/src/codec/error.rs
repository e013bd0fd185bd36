use super::wire::WireError;

/// Everything the codec can refuse. Parsing and verifying untrusted data only ever returns
/// one of these; it never panics.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("blob of {len} bytes is larger than the maximum of {max} bytes for {n} shards")]
    BlobTooLarge { len: u64, max: u64, n: usize },
    #[error("unsupported shard count {0}: Floe supports 4 <= n <= 1000")]
    InvalidShardCount(usize),
    #[error("bad symbol size {got}: expected {expected}")]
    BadSymbolSize { got: usize, expected: usize },
    #[error("bad length for {what}: got {got} bytes, expected {expected}")]
    BadLength {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("index {index} out of range for {n} shards")]
    IndexOutOfRange { index: usize, n: usize },
    #[error("hash mismatch: {0}")]
    HashMismatch(&'static str),
    #[error("not enough {what}: have {have}, need {need}")]
    NotEnough {
        what: &'static str,
        have: usize,
        need: usize,
    },
    #[error("the writer encoded this blob inconsistently")]
    InconsistentEncoding,
    #[error("malformed bytes: {0}")]
    Malformed(#[from] WireError),
    #[error("unsupported encoding type {found}: this version reads only encoding type {supported} (PROTOCOL.md §3; type 1 is retired)")]
    UnsupportedEncoding { found: u8, supported: u8 },
    #[error("bad proof: {0}")]
    BadProof(#[from] super::merkle::ProofError),
    #[error("reading the blob: {0}")]
    Source(String),
    #[error("reed-solomon: {0}")]
    ReedSolomon(String),
}

impl From<reed_solomon_simd::Error> for CodecError {
    fn from(e: reed_solomon_simd::Error) -> Self {
        CodecError::ReedSolomon(e.to_string())
    }
}
