//! The stable, versioned binary encoding that Floe's gRPC messages carry.
//!
//! Every top-level object starts with `[WIRE_VERSION, kind]`; integers are little-endian;
//! lengths are explicit and bounded. Parsing never panics: untrusted bytes produce a
//! [`WireError`]. See docs/PROTOCOL-CHOICES.md for the full layout.

use super::Hash;

/// Version of the wire format; bump on any incompatible change.
pub const WIRE_VERSION: u8 = 1;

/// Object kinds, second byte of every encoded object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Metadata = 1,
    Sliver = 2,
    RecoverySymbol = 3,
    InconsistencyProof = 4,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WireError {
    #[error("truncated: needed {needed} more bytes")]
    Truncated { needed: usize },
    #[error("unsupported wire version {0}")]
    Version(u8),
    #[error("expected object kind {expected}, found {found}")]
    Kind { expected: u8, found: u8 },
    #[error("{0} trailing bytes")]
    Trailing(usize),
    #[error("invalid value for {field}: {value}")]
    Invalid { field: &'static str, value: u64 },
}

/// Appends encoded values to a buffer.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new(kind: Kind, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity + 2);
        buf.push(WIRE_VERSION);
        buf.push(kind as u8);
        Self { buf }
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    /// A u32 length prefix, then the bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32).raw(b)
    }
    pub fn hashes(&mut self, hs: &[Hash]) -> &mut Self {
        self.u16(hs.len() as u16);
        for h in hs {
            self.raw(h);
        }
        self
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads values from untrusted bytes.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Start reading an object, checking version and kind.
    pub fn new(bytes: &'a [u8], kind: Kind) -> Result<Self, WireError> {
        let mut r = Self { rest: bytes };
        let v = r.u8()?;
        if v != WIRE_VERSION {
            return Err(WireError::Version(v));
        }
        let k = r.u8()?;
        if k != kind as u8 {
            return Err(WireError::Kind {
                expected: kind as u8,
                found: k,
            });
        }
        Ok(r)
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(WireError::Truncated {
                needed: n - self.rest.len(),
            });
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn hash(&mut self) -> Result<Hash, WireError> {
        self.array()
    }
    /// A u32 length prefix, then at most `max` bytes.
    pub fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(WireError::Invalid {
                field,
                value: len as u64,
            });
        }
        self.take(len)
    }
    /// A u16 count, then that many hashes (at most `max`).
    pub fn hashes(&mut self, field: &'static str, max: usize) -> Result<Vec<Hash>, WireError> {
        let count = self.u16()? as usize;
        if count > max {
            return Err(WireError::Invalid {
                field,
                value: count as u64,
            });
        }
        (0..count).map(|_| self.hash()).collect()
    }
    /// Fail unless every byte was consumed.
    pub fn finish(self) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing(self.rest.len()))
        }
    }
}
