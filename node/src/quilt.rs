//! Quilts: many small files stored as one blob, each readable alone (docs/quilt.md).
//!
//! Storing a 10 KiB file as its own blob costs a full encode, an RPC to every member, a
//! confirmation round and metadata on every shard; a quilt pays that once for hundreds of files.
//! The layout is a fixed header, an index, then the files' bytes back to back:
//!
//! ```text
//! "FLOEQLT" 0x01 | index_len u32 LE | count u32 LE | index (count entries) | data
//! entry: id_len u16 | identifier (UTF-8) | offset u64 | length u64 | tags u16 |
//!        (key_len u16 | key | value_len u16 | value) × tags
//! ```
//!
//! Offsets count from the start of the quilt. The header and index come first, so a reader
//! fetches the first rows of the blob to learn where a file lies and then only the rows that
//! hold it. Pure: no I/O here; the blob ID authenticates every byte.

use std::collections::BTreeMap;

use base64::Engine as _;

use crate::codec::BlobId;

/// Magic and format version 1.
pub const MAGIC: [u8; 8] = *b"FLOEQLT\x01";
/// Bytes of the fixed header (magic, index length, count).
pub const HEADER_LEN: usize = 16;
/// Longest identifier, in bytes.
pub const MAX_IDENTIFIER: usize = 1024;
/// Most files in one quilt.
pub const MAX_FILES: usize = 1 << 20;
/// Longest tag key or value, in bytes.
pub const MAX_TAG: usize = u16::MAX as usize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuiltError {
    #[error("not a quilt (its first bytes are not the quilt magic)")]
    NotAQuilt,
    #[error("the quilt is truncated: {0}")]
    Truncated(&'static str),
    #[error("the quilt's index is malformed: {0}")]
    Malformed(String),
    #[error("invalid file identifier {0:?}: {1}")]
    BadIdentifier(String, &'static str),
    #[error("identifier {0:?} appears twice; identifiers must be unique within a quilt")]
    Duplicate(String),
    #[error("invalid tag {0:?}: {1}")]
    BadTag(String, &'static str),
    #[error("a quilt holds at least one and at most {MAX_FILES} files")]
    Count,
    #[error("no file {0:?} in this quilt")]
    NoSuchFile(String),
    #[error("invalid quilt patch ID: {0}")]
    BadPatchId(String),
}

/// One file of a quilt, as the index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub identifier: String,
    /// Where the file's bytes begin, from the start of the quilt.
    pub offset: u64,
    pub length: u64,
    pub tags: BTreeMap<String, String>,
}

impl Entry {
    pub fn range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + self.length
    }
}

/// A file to put in a quilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub identifier: String,
    pub tags: BTreeMap<String, String>,
    pub data: Vec<u8>,
}

/// Check an identifier: non-empty UTF-8 of at most [`MAX_IDENTIFIER`] bytes, no control
/// characters (it becomes a path segment and an HTTP header value).
pub fn check_identifier(id: &str) -> Result<(), QuiltError> {
    let bad = |why| Err(QuiltError::BadIdentifier(id.to_string(), why));
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > MAX_IDENTIFIER {
        return bad("longer than 1024 bytes");
    }
    if id.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    if id.starts_with('_') {
        return bad("identifiers starting with '_' are reserved (e.g. _metadata)");
    }
    Ok(())
}

fn check_tag(k: &str, v: &str) -> Result<(), QuiltError> {
    if k.is_empty() {
        return Err(QuiltError::BadTag(k.into(), "empty key"));
    }
    if k.len() > MAX_TAG || v.len() > MAX_TAG {
        return Err(QuiltError::BadTag(k.into(), "longer than 65535 bytes"));
    }
    if k.chars().chain(v.chars()).any(char::is_control) {
        return Err(QuiltError::BadTag(k.into(), "contains a control character"));
    }
    Ok(())
}

/// Bytes of the index of these items.
fn index_len(items: &[Item]) -> usize {
    items
        .iter()
        .map(|i| {
            2 + i.identifier.len()
                + 16
                + 2
                + i.tags
                    .iter()
                    .map(|(k, v)| 4 + k.len() + v.len())
                    .sum::<usize>()
        })
        .sum()
}

/// Size of the quilt these items make, without building it.
pub fn encoded_len(items: &[Item]) -> u64 {
    (HEADER_LEN + index_len(items)) as u64 + items.iter().map(|i| i.data.len() as u64).sum::<u64>()
}

/// Lay the items out as one quilt, in the order given (identifiers must be unique).
pub fn encode(items: &[Item]) -> Result<Vec<u8>, QuiltError> {
    if items.is_empty() || items.len() > MAX_FILES {
        return Err(QuiltError::Count);
    }
    let mut seen = std::collections::HashSet::new();
    for i in items {
        check_identifier(&i.identifier)?;
        if i.tags.len() > u16::MAX as usize {
            return Err(QuiltError::BadTag(String::new(), "more than 65535 tags"));
        }
        for (k, v) in &i.tags {
            check_tag(k, v)?;
        }
        if !seen.insert(i.identifier.as_str()) {
            return Err(QuiltError::Duplicate(i.identifier.clone()));
        }
    }
    let ilen = index_len(items);
    let mut out = Vec::with_capacity(encoded_len(items) as usize);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(ilen as u32).to_le_bytes());
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    let mut offset = (HEADER_LEN + ilen) as u64;
    for i in items {
        out.extend_from_slice(&(i.identifier.len() as u16).to_le_bytes());
        out.extend_from_slice(i.identifier.as_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&(i.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&(i.tags.len() as u16).to_le_bytes());
        for (k, v) in &i.tags {
            out.extend_from_slice(&(k.len() as u16).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        offset += i.data.len() as u64;
    }
    for i in items {
        out.extend_from_slice(&i.data);
    }
    Ok(out)
}

/// The fixed header: how many index bytes follow it, and how many files.
pub fn parse_header(bytes: &[u8]) -> Result<(usize, usize), QuiltError> {
    if bytes.len() < HEADER_LEN {
        return Err(if MAGIC.starts_with(bytes) || bytes.starts_with(&MAGIC) {
            QuiltError::Truncated("header")
        } else {
            QuiltError::NotAQuilt
        });
    }
    if bytes[..8] != MAGIC {
        return Err(QuiltError::NotAQuilt);
    }
    let ilen = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let count = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
    if count == 0 || count > MAX_FILES {
        return Err(QuiltError::Count);
    }
    Ok((ilen, count))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], QuiltError> {
        if self.0.len() < n {
            return Err(QuiltError::Truncated("index"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<usize, QuiltError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }
    fn u64(&mut self) -> Result<u64, QuiltError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self, n: usize) -> Result<String, QuiltError> {
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| QuiltError::Malformed("a string is not UTF-8".into()))
    }
}

/// Parse the index from the quilt's first `HEADER_LEN + index_len` bytes (more may follow) and
/// check it against the quilt's total size: entries in order, back to back, inside the blob.
pub fn parse_index(prefix: &[u8], quilt_len: u64) -> Result<Vec<Entry>, QuiltError> {
    let (ilen, count) = parse_header(prefix)?;
    let index = prefix
        .get(HEADER_LEN..HEADER_LEN + ilen)
        .ok_or(QuiltError::Truncated("index"))?;
    let mut r = Reader(index);
    let mut entries = Vec::with_capacity(count.min(index.len() / 20 + 1));
    let mut next = (HEADER_LEN + ilen) as u64;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..count {
        let n = r.u16()?;
        let identifier = r.str(n)?;
        check_identifier(&identifier)?;
        let offset = r.u64()?;
        let length = r.u64()?;
        if offset != next {
            return Err(QuiltError::Malformed(format!(
                "{identifier:?} starts at {offset}, expected {next}"
            )));
        }
        next = offset
            .checked_add(length)
            .filter(|e| *e <= quilt_len)
            .ok_or_else(|| {
                QuiltError::Malformed(format!("{identifier:?} ends past the quilt's end"))
            })?;
        let mut tags = BTreeMap::new();
        for _ in 0..r.u16()? {
            let k = r.u16()?;
            let k = r.str(k)?;
            let v = r.u16()?;
            let v = r.str(v)?;
            check_tag(&k, &v)?;
            tags.insert(k, v);
        }
        if !seen.insert(identifier.clone()) {
            return Err(QuiltError::Duplicate(identifier));
        }
        entries.push(Entry {
            identifier,
            offset,
            length,
            tags,
        });
    }
    if !r.0.is_empty() {
        return Err(QuiltError::Malformed(format!(
            "{} bytes left after the last entry",
            r.0.len()
        )));
    }
    if next != quilt_len {
        return Err(QuiltError::Malformed(format!(
            "the files end at {next} but the quilt has {quilt_len} bytes"
        )));
    }
    Ok(entries)
}

/// A file's address that needs no name: the quilt's blob ID and the file's position in the
/// index. Text form: URL-safe base64 without padding of `quilt_id ‖ 0x01 ‖ index u32 LE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchId {
    pub quilt_id: BlobId,
    pub index: u32,
}

impl std::fmt::Display for PatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut b = Vec::with_capacity(37);
        b.extend_from_slice(self.quilt_id.as_bytes());
        b.push(1);
        b.extend_from_slice(&self.index.to_le_bytes());
        f.write_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
    }
}

impl std::str::FromStr for PatchId {
    type Err = QuiltError;
    fn from_str(s: &str) -> Result<Self, QuiltError> {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim())
            .map_err(|e| QuiltError::BadPatchId(format!("not URL-safe base64: {e}")))?;
        if b.len() != 37 {
            return Err(QuiltError::BadPatchId(format!(
                "{} bytes, expected 37",
                b.len()
            )));
        }
        if b[32] != 1 {
            return Err(QuiltError::BadPatchId(format!("unknown version {}", b[32])));
        }
        let quilt_id =
            BlobId::from_slice(&b[..32]).map_err(|e| QuiltError::BadPatchId(e.to_string()))?;
        let index = u32::from_le_bytes([b[33], b[34], b[35], b[36]]);
        Ok(Self { quilt_id, index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::stream::{metadata_only, SliceSource};
    use crate::codec::EncodingParams;

    fn item(id: &str, tags: &[(&str, &str)], data: &[u8]) -> Item {
        Item {
            identifier: id.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            data: data.to_vec(),
        }
    }

    fn vector_items() -> Vec<Item> {
        vec![
            item("a.txt", &[("content-type", "text/plain")], b"hello"),
            item("b.bin", &[], &[0, 1, 2]),
        ]
    }

    /// The test vector of docs/quilt.md: its bytes and its blob ID at n = 10.
    #[test]
    fn vector_matches_the_docs() {
        let q = encode(&vector_items()).unwrap();
        assert_eq!(
            hex::encode(&q),
            "464c4f45514c5401\
             4c000000\
             02000000\
             0500612e747874\
             5c00000000000000\
             0500000000000000\
             0100\
             0c00636f6e74656e742d74797065\
             0a00746578742f706c61696e\
             0500622e62696e\
             6100000000000000\
             0300000000000000\
             0000\
             68656c6c6f\
             000102"
        );
        let (_, id) = metadata_only(&SliceSource(&q), EncodingParams::new(10).unwrap()).unwrap();
        assert_eq!(id.to_string(), QUILT_VECTOR_ID);
        let p = PatchId {
            quilt_id: id,
            index: 1,
        };
        assert_eq!(p.to_string().parse::<PatchId>().unwrap(), p);
    }

    /// Kept in sync with docs/quilt.md.
    const QUILT_VECTOR_ID: &str = "YQEycfDqFUMKBrLbKntA-7FdKDS0i5FyI5gIZRYsRsc";

    #[test]
    fn round_trip_and_lookup() {
        let items = vector_items();
        let q = encode(&items).unwrap();
        assert_eq!(q.len() as u64, encoded_len(&items));
        let idx = parse_index(&q, q.len() as u64).unwrap();
        assert_eq!(idx.len(), 2);
        for (e, i) in idx.iter().zip(&items) {
            assert_eq!(e.identifier, i.identifier);
            assert_eq!(e.tags, i.tags);
            assert_eq!(&q[e.offset as usize..e.range().end as usize], &i.data[..]);
        }
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(encode(&[]), Err(QuiltError::Count));
        assert!(matches!(
            encode(&[item("x", &[], b"1"), item("x", &[], b"2")]),
            Err(QuiltError::Duplicate(_))
        ));
        for bad in ["", "_metadata", "a\nb"] {
            assert!(
                matches!(
                    encode(&[item(bad, &[], b"1")]),
                    Err(QuiltError::BadIdentifier(..))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            encode(&[item("a", &[("", "v")], b"1")]),
            Err(QuiltError::BadTag(..))
        ));
        let q = encode(&vector_items()).unwrap();
        // every truncation is an error, never a panic
        for cut in 0..q.len() {
            assert!(parse_index(&q[..cut], cut as u64).is_err(), "cut at {cut}");
        }
        assert_eq!(
            parse_index(b"not a quilt at all", 18),
            Err(QuiltError::NotAQuilt)
        );
        // a length that points past the end
        let mut bad = q.clone();
        bad[16 + 2 + 5 + 8] = 0xff;
        assert!(matches!(
            parse_index(&bad, bad.len() as u64),
            Err(QuiltError::Malformed(_))
        ));
        for s in ["", "!!", "AAAA"] {
            assert!(s.parse::<PatchId>().is_err(), "{s:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_quilt_round_trips(sizes in proptest::collection::vec(0usize..300, 1..20)) {
            let items: Vec<Item> = sizes.iter().enumerate()
                .map(|(i, &n)| item(&format!("f{i}"), &[("k", "v")], &vec![i as u8; n])).collect();
            let q = encode(&items).unwrap();
            let idx = parse_index(&q, q.len() as u64).unwrap();
            for (e, i) in idx.iter().zip(&items) {
                proptest::prop_assert_eq!(&q[e.offset as usize..e.range().end as usize], &i.data[..]);
            }
        }
    }
}
