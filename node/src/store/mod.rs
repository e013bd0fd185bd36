//! The node's durable blob store.
//!
//! Engine: one directory per blob and one file per object (metadata, certificate, each sliver),
//! each written atomically with a checksum ([`file`]). Why files and not an embedded database:
//! slivers are large immutable values written once and read whole, which is what a file system
//! does best (no write amplification, no compaction, `kill -9`-safe by rename); the small index
//! (which blobs and slivers exist) is rebuilt from the directory tree at start-up, which is fast
//! because only names and metadata are read, never sliver bodies.
//!
//! ```text
//! <data-dir>/blobs/<blob id hex>/metadata
//!                              /certificate
//!                              /invalid               (inconsistency proof)
//!                              /<pair>.primary, <pair>.secondary
//! ```

pub mod file;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::codec::{Axis, BlobId, BlobMetadata, Sliver};
use crate::protocol::Certificate;
use file::{read_checked, write_atomic_parts, FileError, HEADER_LEN, TMP_PREFIX};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage full: {needed} more bytes needed, {available} available of the {capacity}-byte limit")]
    Full {
        needed: u64,
        available: u64,
        capacity: u64,
    },
    #[error("disk full: {0}")]
    DiskFull(io::Error),
    #[error("{0}")]
    Corrupt(String),
    #[error("stored object is unreadable: {0}")]
    Undecodable(String),
    #[error("I/O error: {0}")]
    Io(io::Error),
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        // ENOSPC / EDQUOT: the disk itself is full
        if e.kind() == io::ErrorKind::StorageFull
            || matches!(e.raw_os_error(), Some(28) | Some(122))
        {
            StoreError::DiskFull(e)
        } else {
            StoreError::Io(e)
        }
    }
}

impl From<FileError> for StoreError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::Corrupt { .. } => StoreError::Corrupt(e.to_string()),
            FileError::Io(e) => e.into(),
        }
    }
}

/// What the store holds of one blob.
#[derive(Debug, Clone, Default)]
pub struct BlobEntry {
    pub metadata: Option<Arc<BlobMetadata>>,
    pub certified_epoch: Option<u32>,
    pub invalid: bool,
    /// Slivers held, as (pair index, axis).
    pub slivers: BTreeSet<(u16, AxisKey)>,
}

/// `Axis` as an ordered key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AxisKey {
    Primary,
    Secondary,
}

impl From<Axis> for AxisKey {
    fn from(a: Axis) -> Self {
        match a {
            Axis::Primary => AxisKey::Primary,
            Axis::Secondary => AxisKey::Secondary,
        }
    }
}

impl AxisKey {
    fn file_suffix(self) -> &'static str {
        match self {
            AxisKey::Primary => "primary",
            AxisKey::Secondary => "secondary",
        }
    }
}

impl BlobEntry {
    pub fn has_pair(&self, pair: u16) -> bool {
        self.slivers.contains(&(pair, AxisKey::Primary))
            && self.slivers.contains(&(pair, AxisKey::Secondary))
    }
}

pub struct BlobStore {
    blobs_dir: PathBuf,
    capacity: Option<u64>,
    used: AtomicU64,
    index: RwLock<BTreeMap<BlobId, BlobEntry>>,
    /// Bumped on every change of the index: lets counts derived from the whole index (the
    /// recovery backlog) be cached until something changed.
    generation: AtomicU64,
}

fn sliver_file(pair: u16, axis: AxisKey) -> String {
    format!("{pair}.{}", axis.file_suffix())
}

impl BlobStore {
    /// Open (or create) the store under `data_dir`, rebuilding the index from the tree.
    pub fn open(data_dir: &Path, capacity: Option<u64>) -> Result<Self, StoreError> {
        let blobs_dir = data_dir.join("blobs");
        fs::create_dir_all(&blobs_dir)?;
        let mut index = BTreeMap::new();
        let mut used = 0u64;
        for dir in fs::read_dir(&blobs_dir)? {
            let dir = dir?;
            let Some(id) = dir
                .file_name()
                .to_str()
                .and_then(|s| hex::decode(s).ok())
                .and_then(|b| BlobId::from_slice(&b).ok())
            else {
                continue;
            };
            let mut entry = BlobEntry::default();
            for f in fs::read_dir(dir.path())? {
                let f = f?;
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with(TMP_PREFIX) {
                    // a write interrupted by a crash: never visible, just garbage
                    let _ = fs::remove_file(f.path());
                    continue;
                }
                used += f.metadata()?.len();
                match name.as_str() {
                    "metadata" => match read_checked(&f.path())
                        .ok()
                        .and_then(|b| BlobMetadata::from_bytes(&b).ok())
                    {
                        Some(m) if m.blob_id() == id => entry.metadata = Some(Arc::new(m)),
                        _ => {
                            tracing::warn!(blob = %id, "dropping unreadable metadata");
                            let _ = fs::remove_file(f.path());
                        }
                    },
                    "certificate" => {
                        entry.certified_epoch = read_checked(&f.path())
                            .ok()
                            .and_then(|b| Certificate::from_bytes(&b))
                            .map(|c| c.epoch)
                    }
                    "invalid" => entry.invalid = true,
                    other => {
                        let mut parts = other.splitn(2, '.');
                        let pair = parts.next().and_then(|p| p.parse::<u16>().ok());
                        let axis = match parts.next() {
                            Some("primary") => Some(AxisKey::Primary),
                            Some("secondary") => Some(AxisKey::Secondary),
                            _ => None,
                        };
                        if let (Some(p), Some(a)) = (pair, axis) {
                            entry.slivers.insert((p, a));
                        }
                    }
                }
            }
            index.insert(id, entry);
        }
        tracing::info!(blobs = index.len(), bytes = used, dir = %blobs_dir.display(), "store opened");
        Ok(Self {
            blobs_dir,
            capacity,
            used: AtomicU64::new(used),
            generation: AtomicU64::new(0),
            index: RwLock::new(index),
        })
    }

    fn blob_dir(&self, id: &BlobId) -> PathBuf {
        self.blobs_dir.join(hex::encode(id.as_bytes()))
    }

    fn write(&self, id: &BlobId, name: &str, body: &[u8]) -> Result<(), StoreError> {
        self.write_parts(id, name, &[body])
    }

    fn write_parts(&self, id: &BlobId, name: &str, parts: &[&[u8]]) -> Result<(), StoreError> {
        let needed = (HEADER_LEN + parts.iter().map(|p| p.len()).sum::<usize>()) as u64;
        if let Some(capacity) = self.capacity {
            let used = self.used.load(Ordering::Relaxed);
            if used + needed > capacity {
                return Err(StoreError::Full {
                    needed,
                    available: capacity.saturating_sub(used),
                    capacity,
                });
            }
        }
        let dir = self.blob_dir(id);
        fs::create_dir_all(&dir)?;
        let written = write_atomic_parts(&dir, name, parts)?;
        self.used.fetch_add(written, Ordering::Relaxed);
        Ok(())
    }

    fn index_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<BlobId, BlobEntry>> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }
    fn index_write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<BlobId, BlobEntry>> {
        let guard = self.index.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::Relaxed);
        guard
    }

    /// Changes whenever the index may have changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Store verified metadata. Returns true when it was already there.
    pub fn put_metadata(&self, id: BlobId, metadata: &BlobMetadata) -> Result<bool, StoreError> {
        if self.metadata(&id).is_some() {
            return Ok(true);
        }
        self.write(&id, "metadata", &metadata.to_bytes())?;
        self.index_write().entry(id).or_default().metadata = Some(Arc::new(metadata.clone()));
        Ok(false)
    }

    pub fn metadata(&self, id: &BlobId) -> Option<Arc<BlobMetadata>> {
        self.index_read().get(id).and_then(|e| e.metadata.clone())
    }

    /// Store a verified sliver of `pair`. Returns true when it was already there.
    pub fn put_sliver(&self, id: BlobId, pair: u16, sliver: &Sliver) -> Result<bool, StoreError> {
        let key = (pair, AxisKey::from(sliver.axis));
        if self
            .index_read()
            .get(&id)
            .is_some_and(|e| e.slivers.contains(&key))
        {
            return Ok(true);
        }
        // the sliver's wire form, written from its parts without assembling a copy
        self.write_parts(
            &id,
            &sliver_file(pair, key.1),
            &[&sliver.wire_header(), &sliver.data],
        )?;
        self.write_challenge_index(&id, pair, sliver);
        self.index_write()
            .entry(id)
            .or_default()
            .slivers
            .insert(key);
        Ok(false)
    }

    /// Beside a large sliver, the levels of its tree, so that a challenge reads one symbol and
    /// its path (`server::challenge`). Best effort: without it challenges read the sliver.
    fn write_challenge_index(&self, id: &BlobId, pair: u16, sliver: &Sliver) {
        let Some(shape) = self.metadata(id).and_then(|m| m.shape().ok()) else {
            return;
        };
        if !crate::server::challenge::wants_index(&shape, sliver.axis) {
            return;
        }
        let path = self
            .blob_dir(id)
            .join(sliver_file(pair, sliver.axis.into()));
        if let Err(e) = crate::server::challenge::write_index(&path, sliver, &shape) {
            tracing::warn!(blob = %id, pair, error = %e, "could not write a sliver's challenge index");
        }
    }

    /// The file holding a sliver (every sliver has one in this engine), for reads of a part.
    pub fn sliver_file(&self, id: &BlobId, pair: u16, axis: Axis) -> Option<PathBuf> {
        let key = (pair, AxisKey::from(axis));
        self.index_read()
            .get(id)
            .is_some_and(|e| e.slivers.contains(&key))
            .then(|| self.blob_dir(id).join(sliver_file(pair, key.1)))
    }

    /// Bytes of the object header before a sliver's wire form in its file.
    pub const OBJECT_HEADER: usize = HEADER_LEN;

    /// Read a sliver, checking its checksum. A corrupt file is removed (and reported as
    /// `Corrupt`) so that recovery rebuilds it.
    pub fn get_sliver(
        &self,
        id: &BlobId,
        pair: u16,
        axis: Axis,
    ) -> Result<Option<Sliver>, StoreError> {
        let key = (pair, AxisKey::from(axis));
        if !self
            .index_read()
            .get(id)
            .is_some_and(|e| e.slivers.contains(&key))
        {
            return Ok(None);
        }
        let path = self.blob_dir(id).join(sliver_file(pair, key.1));
        let bytes = match read_checked(&path) {
            Ok(b) => b,
            Err(FileError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                self.forget_sliver(id, key);
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(blob = %id, pair, ?axis, error = %e, "corrupt sliver dropped; it will be rebuilt");
                self.drop_file(&path);
                self.forget_sliver(id, key);
                return Err(e.into());
            }
        };
        let sliver =
            Sliver::from_bytes(&bytes).map_err(|e| StoreError::Undecodable(e.to_string()))?;
        Ok(Some(sliver))
    }

    fn drop_file(&self, path: &Path) {
        if let Ok(m) = fs::metadata(path) {
            if fs::remove_file(path).is_ok() {
                self.used.fetch_sub(
                    m.len().min(self.used.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
            }
        }
    }

    fn forget_sliver(&self, id: &BlobId, key: (u16, AxisKey)) {
        if let Some(e) = self.index_write().get_mut(id) {
            e.slivers.remove(&key);
        }
    }

    pub fn put_certificate(&self, cert: &Certificate) -> Result<bool, StoreError> {
        if self
            .index_read()
            .get(&cert.blob_id)
            .is_some_and(|e| e.certified_epoch.is_some())
        {
            return Ok(true);
        }
        self.write(&cert.blob_id, "certificate", &cert.to_bytes())?;
        self.index_write()
            .entry(cert.blob_id)
            .or_default()
            .certified_epoch = Some(cert.epoch);
        Ok(false)
    }

    pub fn certificate(&self, id: &BlobId) -> Option<Certificate> {
        let path = self.blob_dir(id).join("certificate");
        read_checked(&path)
            .ok()
            .and_then(|b| Certificate::from_bytes(&b))
    }

    /// Record an inconsistency proof: the blob is invalid and its slivers are dropped.
    pub fn mark_invalid(&self, id: BlobId, proof: &[u8]) -> Result<(), StoreError> {
        self.write(&id, "invalid", proof)?;
        let dropped: Vec<(u16, AxisKey)> = {
            let mut idx = self.index_write();
            let e = idx.entry(id).or_default();
            e.invalid = true;
            std::mem::take(&mut e.slivers).into_iter().collect()
        };
        for (pair, axis) in dropped {
            self.drop_file(&self.blob_dir(&id).join(sliver_file(pair, axis)));
        }
        Ok(())
    }

    pub fn entry(&self, id: &BlobId) -> Option<BlobEntry> {
        self.index_read().get(id).cloned()
    }

    /// Certified, valid blobs with their certified epoch, in ID order.
    pub fn certified(&self) -> Vec<(BlobId, u32)> {
        self.index_read()
            .iter()
            .filter(|(_, e)| !e.invalid)
            .filter_map(|(id, e)| e.certified_epoch.map(|ep| (*id, ep)))
            .collect()
    }

    pub fn blob_count(&self) -> usize {
        self.index_read().len()
    }
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
    pub fn capacity(&self) -> Option<u64> {
        self.capacity
    }
    /// Bytes of slivers held per pair index (for per-shard metrics).
    pub fn pair_counts(&self) -> BTreeMap<u16, u64> {
        let mut m = BTreeMap::new();
        for e in self.index_read().values() {
            for (pair, _) in &e.slivers {
                *m.entry(*pair).or_insert(0) += 1;
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode, EncodingParams};

    #[test]
    fn store_reopen_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let enc = encode(&[5u8; 10_000], EncodingParams::new(7).unwrap()).unwrap();
        let id = enc.blob_id();
        {
            let s = BlobStore::open(dir.path(), None).unwrap();
            assert!(!s.put_metadata(id, enc.metadata()).unwrap());
            assert!(s.put_metadata(id, enc.metadata()).unwrap());
            let pair = enc.pair(2);
            s.put_sliver(id, 2, &pair.primary).unwrap();
            s.put_sliver(id, 2, &pair.secondary).unwrap();
            assert!(s.entry(&id).unwrap().has_pair(2));
        }
        // a leftover temporary file from a crashed write is ignored and removed
        let blob_dir = dir.path().join("blobs").join(hex::encode(id.as_bytes()));
        fs::write(blob_dir.join(".tmp-3.primary-1-1"), b"partial").unwrap();
        let s = BlobStore::open(dir.path(), None).unwrap();
        assert!(!blob_dir.join(".tmp-3.primary-1-1").exists());
        assert_eq!(s.metadata(&id).as_deref(), Some(enc.metadata()));
        assert_eq!(
            s.get_sliver(&id, 2, Axis::Primary).unwrap().unwrap(),
            enc.pair(2).primary
        );
        // flip a byte in the secondary sliver: detected, dropped from the index and the disk
        let path = blob_dir.join("2.secondary");
        let mut raw = fs::read(&path).unwrap();
        let at = raw.len() - 3;
        raw[at] ^= 0x40;
        fs::write(&path, raw).unwrap();
        assert!(matches!(
            s.get_sliver(&id, 2, Axis::Secondary),
            Err(StoreError::Corrupt(_))
        ));
        assert!(!path.exists());
        assert!(!s.entry(&id).unwrap().has_pair(2));
        assert!(s.get_sliver(&id, 2, Axis::Secondary).unwrap().is_none());
    }

    #[test]
    fn capacity_limit_refuses_writes_but_keeps_reads() {
        let dir = tempfile::tempdir().unwrap();
        let enc = encode(&[1u8; 50_000], EncodingParams::new(7).unwrap()).unwrap();
        let id = enc.blob_id();
        let s = BlobStore::open(dir.path(), Some(20_000)).unwrap();
        s.put_metadata(id, enc.metadata()).unwrap();
        s.put_sliver(id, 0, &enc.pair(0).primary).unwrap();
        let err = s.put_sliver(id, 0, &enc.pair(0).secondary).unwrap_err();
        assert!(matches!(err, StoreError::Full { .. }), "{err}");
        assert!(s.get_sliver(&id, 0, Axis::Primary).unwrap().is_some());
    }
}
