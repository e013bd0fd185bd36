//! The node's durable blob store.
//!
//! Engine: fjall (a pure-Rust LSM tree) for everything small — per-blob records, metadata,
//! certificates, slivers up to [`LARGE_SLIVER`] bytes and the indexes — and one file per sliver
//! for larger slivers (measured in `node/benches/store_engines.rs`, table in docs/node.md).
//!
//! ```text
//! <data-dir>/store/            fjall keyspace, partitions:
//!     blobs        id → Record (flags, certified epoch, first seen, bytes charged, n)
//!     metadata     id → BLAKE3 ‖ metadata
//!     certs        id → BLAKE3 ‖ certificate
//!     invalid      id → BLAKE3 ‖ inconsistency proof
//!     slivers      id ‖ pair ‖ axis → 0 ‖ BLAKE3 ‖ sliver  |  1 (in a file)
//!     held         id ‖ pair ‖ axis → ()          (which slivers exist, without their bodies)
//!     certified    id → epoch                      (ListCertified, SyncShard pages, scrubber)
//!     uncertified  first seen ‖ id → ()            (GC of blobs never certified, oldest first)
//!     pending      id → ()                         (certified blobs recovery must look at)
//!     counters     name → u64                      (bytes used, per shard slivers, …)
//!     lifetimes    id → BLAKE3 ‖ signed lifetime   (kept after the blob is collected: a read
//!                                                   then says expired/deleted, not unknown)
//!     expiry       end epoch ‖ id → ()             (GC of expired and deleted blobs, by epoch)
//! <data-dir>/large/<id hex>/<pair>.<axis>     slivers > LARGE_SLIVER (file::write_atomic)
//! ```
//!
//! Every change goes through one writer thread ([`writer`]) that applies all queued changes in
//! one batch with one journal fsync (group commit) and answers each caller after that fsync: a
//! caller that got `Ok` holds durable data. The writer is the only mutator, so check-then-write
//! (is this sliver already here? is there room?) and the counters are exact even under
//! concurrent identical writes.

pub mod file;
mod keeper;
pub mod keys;
mod writer;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fjall::{PartitionCreateOptions, PartitionHandle};

use crate::codec::{Axis, BlobId, BlobMetadata, MerkleTree, Sliver};
use crate::protocol::{Certificate, SignedLifetime};
use file::{read_checked, FileError};
use keeper::{CommitClock, Keeper};
pub use keeper::{EngineTuning, StallReport, MIN_JOURNAL_LIMIT, STALL_AFTER};
use keys::{frame, sliver_key, unframe, Record};
use writer::{Op, SliverBody, Writer};

/// Slivers larger than this live in files of their own (faster than the engine's journal plus
/// compaction for large values, and no value-log garbage collection to run).
pub const LARGE_SLIVER: usize = 64 << 10;
/// Charged per stored object on top of its body (keys, record and index entries).
pub const OBJECT_OVERHEAD: u64 = 96;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage full: {needed} more bytes needed, {available} available of the {capacity}-byte limit")]
    Full {
        needed: u64,
        available: u64,
        capacity: u64,
    },
    #[error("storage full for uncertified blobs: {needed} more bytes needed, {available} available of the {quota}-byte quota (blobs never certified expire after the grace period)")]
    UncertifiedFull {
        needed: u64,
        available: u64,
        quota: u64,
    },
    #[error("disk full: {0}")]
    DiskFull(io::Error),
    #[error("{0}")]
    Corrupt(String),
    #[error("stored object is unreadable: {0}")]
    Undecodable(String),
    #[error("storage engine: {0}")]
    Engine(String),
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

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        match e {
            fjall::Error::Io(e) => e.into(),
            fjall::Error::Storage(lsm_err) => match lsm_err {
                fjall::LsmError::Io(e) => e.into(),
                other => StoreError::Corrupt(format!("storage engine: {other:?}")),
            },
            fjall::Error::Poisoned => StoreError::Engine(
                "the engine stopped after a failed sync (disk full or failing); restart the node"
                    .into(),
            ),
            other => StoreError::Engine(format!("{other:?}")),
        }
    }
}

impl StoreError {
    /// A copy for each caller of a failed group commit.
    fn duplicate(&self) -> Self {
        match self {
            StoreError::DiskFull(e) => {
                StoreError::DiskFull(io::Error::new(e.kind(), e.to_string()))
            }
            StoreError::Io(e) => StoreError::Io(io::Error::new(e.kind(), e.to_string())),
            StoreError::Full {
                needed,
                available,
                capacity,
            } => StoreError::Full {
                needed: *needed,
                available: *available,
                capacity: *capacity,
            },
            StoreError::UncertifiedFull {
                needed,
                available,
                quota,
            } => StoreError::UncertifiedFull {
                needed: *needed,
                available: *available,
                quota: *quota,
            },
            StoreError::Corrupt(s) => StoreError::Corrupt(s.clone()),
            StoreError::Undecodable(s) => StoreError::Undecodable(s.clone()),
            StoreError::Engine(s) => StoreError::Engine(s.clone()),
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

impl From<AxisKey> for Axis {
    fn from(a: AxisKey) -> Self {
        match a {
            AxisKey::Primary => Axis::Primary,
            AxisKey::Secondary => Axis::Secondary,
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

/// Limits of the store.
#[derive(Debug, Clone, Default)]
pub struct StoreLimits {
    /// Bytes the store may hold in total (`--max-storage`); none = until the disk is full.
    pub capacity: Option<u64>,
    /// Bytes that blobs not (yet) certified may hold: they cannot crowd out certified data.
    pub uncertified_quota: Option<u64>,
}

/// Counter names in the `counters` partition.
pub(crate) mod counter {
    pub const USED: &[u8] = b"used";
    pub const UNCERTIFIED: &[u8] = b"uncertified";
    pub const BLOBS: &[u8] = b"blobs";
    pub const CERTIFIED: &[u8] = b"certified";
    /// The epoch for which every certified blob was put in `pending` (recovery's re-check).
    pub const PENDING_EPOCH: &[u8] = b"pending_epoch";
    /// The control plane's lifetime log applied up to this sequence (in order).
    pub const LIFETIME_SEQ: &[u8] = b"lifetime_seq";
    /// `s` ‖ shard (u16 BE): slivers held for the shard.
    pub fn shard(s: u16) -> Vec<u8> {
        let mut k = b"s".to_vec();
        k.extend_from_slice(&s.to_be_bytes());
        k
    }
}

impl Parts {
    /// Every partition (the keeper flushes them all).
    fn all(&self) -> [&PartitionHandle; 12] {
        [
            &self.blobs,
            &self.metadata,
            &self.certs,
            &self.invalid,
            &self.slivers,
            &self.held,
            &self.certified,
            &self.uncertified,
            &self.pending,
            &self.counters,
            &self.lifetimes,
            &self.expiry,
        ]
    }
}

pub(crate) struct Parts {
    pub keyspace: fjall::Keyspace,
    pub blobs: PartitionHandle,
    pub metadata: PartitionHandle,
    pub certs: PartitionHandle,
    pub invalid: PartitionHandle,
    pub slivers: PartitionHandle,
    pub held: PartitionHandle,
    pub certified: PartitionHandle,
    pub uncertified: PartitionHandle,
    pub pending: PartitionHandle,
    pub counters: PartitionHandle,
    pub lifetimes: PartitionHandle,
    pub expiry: PartitionHandle,
}

/// What [`BlobStore::put_blob`] did with each part: `true` = it was already there (for the
/// lifetime: the one sent was newer and replaced the held one).
#[derive(Debug)]
pub struct BlobPut {
    pub lifetime: Option<Result<bool, StoreError>>,
    pub metadata: Result<bool, StoreError>,
    pub slivers: Vec<Result<bool, StoreError>>,
}

/// The writer ops of a batch of slivers, and where each item's answer comes from: slivers
/// already held are answered without an op.
struct SliverBatch {
    ops: Vec<Op>,
    results: Vec<Option<Result<bool, StoreError>>>,
    slots: Vec<usize>,
}

impl SliverBatch {
    fn new(
        store: &BlobStore,
        items: &[(BlobId, u16, &Sliver, Option<&MerkleTree>)],
        metadata: Option<&BlobMetadata>,
    ) -> Self {
        let mut b = Self {
            ops: Vec::with_capacity(items.len()),
            results: Vec::with_capacity(items.len()),
            slots: Vec::with_capacity(items.len()),
        };
        for (i, (id, pair, s, tree)) in items.iter().enumerate() {
            b.results.push(None);
            match store.has_sliver(id, *pair, s.axis.into()) {
                Ok(true) => b.results[i] = Some(Ok(true)),
                Err(e) => b.results[i] = Some(Err(e)),
                Ok(false) => match store.sliver_op(*id, *pair, s, *tree, metadata) {
                    Ok(op) => {
                        b.ops.push(op);
                        b.slots.push(i);
                    }
                    Err(e) => b.results[i] = Some(Err(e)),
                },
            }
        }
        b
    }

    /// Each item's answer, given the writer's answers to [`Self::ops`] in order.
    fn finish(mut self, written: Vec<Result<bool, StoreError>>) -> Vec<Result<bool, StoreError>> {
        for (slot, r) in self.slots.into_iter().zip(written) {
            self.results[slot] = Some(r);
        }
        self.results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Engine("writer gave no answer".into()))))
            .collect()
    }
}

pub struct BlobStore {
    parts: Arc<Parts>,
    large_dir: PathBuf,
    limits: StoreLimits,
    writer: Writer,
    keeper: Keeper,
    /// Counters as of the last commit (mirrors the `counters` partition).
    counters: Arc<Mutex<HashMap<Vec<u8>, u64>>>,
    /// Bumped after every commit: lets derived counts be cached until something changed.
    generation: Arc<AtomicU64>,
    /// Decoded metadata of recently used blobs (bounded).
    md_cache: Mutex<HashMap<BlobId, Arc<BlobMetadata>>>,
}

const MD_CACHE: usize = 512;

/// The engine refused to open its files: the node must not start on a store it cannot trust.
fn damaged(dir: &Path, e: StoreError) -> StoreError {
    StoreError::Engine(format!(
        "the store at {} cannot be opened ({e}); it is damaged: move it away and start the node \
         on an empty data directory, recovery then rebuilds its slivers from the other members",
        dir.display()
    ))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl BlobStore {
    /// Open (or create) the store under `data_dir`.
    pub fn open(data_dir: &Path, capacity: Option<u64>) -> Result<Self, StoreError> {
        Self::open_with(
            data_dir,
            StoreLimits {
                capacity,
                uncertified_quota: None,
            },
        )
    }

    /// Open with explicit limits. Cost: the engine's journal replay (bounded by its size, not
    /// by the number of blobs) plus reading the counters; no index is rebuilt.
    pub fn open_with(data_dir: &Path, limits: StoreLimits) -> Result<Self, StoreError> {
        Self::open_tuned(data_dir, limits, EngineTuning::default())
    }

    /// Open with explicit limits and engine sizes.
    pub fn open_tuned(
        data_dir: &Path,
        limits: StoreLimits,
        tuning: EngineTuning,
    ) -> Result<Self, StoreError> {
        let started = std::time::Instant::now();
        let store_dir = data_dir.join("store");
        let large_dir = data_dir.join("large");
        std::fs::create_dir_all(&store_dir)?;
        std::fs::create_dir_all(large_dir.join(".tmp"))?;
        // temporary files of large slivers interrupted by a crash
        for e in std::fs::read_dir(large_dir.join(".tmp"))?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let keyspace = fjall::Config::new(&store_dir)
            .cache_size(32 << 20)
            .max_write_buffer_size(tuning.max_write_buffer_bytes.max(1 << 20))
            .max_journaling_size(tuning.max_journal_bytes.max(MIN_JOURNAL_LIMIT))
            .flush_workers(tuning.flush_workers)
            .open()
            .map_err(|e| damaged(&store_dir, StoreError::from(e)))?;
        let plain = || {
            PartitionCreateOptions::default()
                .compression(fjall::CompressionType::None)
                .manual_journal_persist(true)
                .max_memtable_size(tuning.max_memtable_bytes)
        };
        let small = || {
            PartitionCreateOptions::default()
                .manual_journal_persist(true)
                .max_memtable_size(tuning.max_memtable_bytes)
        };
        let p = |name: &str, opts: PartitionCreateOptions| {
            keyspace
                .open_partition(name, opts)
                .map_err(|e| damaged(&store_dir, StoreError::from(e)))
        };
        let parts = Parts {
            blobs: p("blobs", small())?,
            metadata: p("metadata", plain())?,
            certs: p("certs", plain())?,
            invalid: p("invalid", plain())?,
            slivers: p("slivers", plain())?,
            held: p("held", small())?,
            certified: p("certified", small())?,
            uncertified: p("uncertified", small())?,
            pending: p("pending", small())?,
            counters: p("counters", small())?,
            lifetimes: p("lifetimes", small())?,
            expiry: p("expiry", small())?,
            keyspace,
        };
        let mut counters = HashMap::new();
        for kv in parts.counters.iter() {
            let (k, v) = kv?;
            let v: [u8; 8] = v.as_ref().try_into().map_err(|_| {
                StoreError::Corrupt(format!("store counter {:?} is not 8 bytes", k.as_ref()))
            })?;
            counters.insert(k.to_vec(), u64::from_be_bytes(v));
        }
        let parts = Arc::new(parts);
        let counters = Arc::new(Mutex::new(counters));
        let generation = Arc::new(AtomicU64::new(0));
        let clock = Arc::new(CommitClock::default());
        let writer = Writer::start(
            parts.clone(),
            large_dir.clone(),
            limits.clone(),
            counters.clone(),
            generation.clone(),
            clock.clone(),
            tuning.stall_file.clone(),
        )?;
        let keeper = Keeper::start(parts.clone(), clock, tuning)?;
        let store = Self {
            parts,
            large_dir,
            limits,
            writer,
            keeper,
            counters,
            generation,
            md_cache: Mutex::new(HashMap::new()),
        };
        tracing::info!(
            blobs = store.blob_count(),
            bytes = store.used_bytes(),
            dir = %data_dir.display(),
            ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        Ok(store)
    }

    fn counter(&self, name: &[u8]) -> u64 {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// Changes whenever the store may have changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    fn record(&self, id: &BlobId) -> Result<Option<Record>, StoreError> {
        match self.parts.blobs.get(id.as_bytes())? {
            Some(v) => Record::decode(&v)
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt(format!("record of blob {id} unreadable"))),
            None => Ok(None),
        }
    }

    fn one(&self, op: Op) -> Result<bool, StoreError> {
        self.writer
            .submit(vec![op])
            .pop()
            .unwrap_or_else(|| Err(StoreError::Engine("writer gave no answer".into())))
    }

    /// Store verified metadata. Returns true when it was already there.
    pub fn put_metadata(&self, id: BlobId, metadata: &BlobMetadata) -> Result<bool, StoreError> {
        if self.record(&id)?.is_some_and(|r| r.has_metadata) {
            return Ok(true);
        }
        self.one(Op::Metadata {
            id,
            framed: frame(&[&metadata.to_bytes()]),
            n: metadata.n() as u16,
        })
    }

    pub fn metadata(&self, id: &BlobId) -> Option<Arc<BlobMetadata>> {
        if let Some(md) = self
            .md_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Some(md.clone());
        }
        let raw = self.parts.metadata.get(id.as_bytes()).ok()??;
        let Some(body) = unframe(&raw) else {
            tracing::error!(blob = %id, "stored metadata fails its checksum; it will be fetched again");
            let _ = self.writer.submit(vec![Op::DropMetadata { id: *id }]);
            return None;
        };
        let md = Arc::new(BlobMetadata::from_bytes(body).ok()?);
        let mut cache = self.md_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MD_CACHE {
            cache.clear();
        }
        cache.insert(*id, md.clone());
        Some(md)
    }

    fn large_path(&self, id: &BlobId, pair: u16, axis: AxisKey) -> PathBuf {
        writer::large_path(&self.large_dir, id, pair, axis)
    }

    fn sliver_op(
        &self,
        id: BlobId,
        pair: u16,
        sliver: &Sliver,
        tree: Option<&MerkleTree>,
        metadata: Option<&BlobMetadata>,
    ) -> Result<Op, StoreError> {
        let axis = AxisKey::from(sliver.axis);
        let header = sliver.wire_header();
        let body = if header.len() + sliver.data.len() > LARGE_SLIVER {
            // written (and fsynced) before the index commit that makes it visible
            let path = self.large_path(&id, pair, axis);
            let dir = path.parent().expect("large sliver path has a parent");
            std::fs::create_dir_all(dir)?;
            let len = file::write_atomic_parts_via(
                &self.large_dir.join(".tmp"),
                dir,
                &path,
                &[&header, &sliver.data],
            )?;
            self.write_challenge_index(&id, pair, &path, sliver, tree, metadata);
            SliverBody::File { len }
        } else {
            SliverBody::Inline(frame(&[&header, &sliver.data]))
        };
        Ok(Op::Sliver {
            id,
            pair,
            axis,
            body,
            // metadata in hand, not stored yet: it is stored in the same commit, or nothing is
            needs_metadata: metadata.is_some(),
        })
    }

    /// Beside a large sliver, the levels of its tree, so that a challenge reads one symbol and
    /// its path (`server::challenge`). Best effort: without it challenges read the sliver.
    /// `tree`: the one verification built, if the caller kept it (else hashed again here).
    fn write_challenge_index(
        &self,
        id: &BlobId,
        pair: u16,
        path: &Path,
        sliver: &Sliver,
        tree: Option<&MerkleTree>,
        metadata: Option<&BlobMetadata>,
    ) {
        let shape = match metadata {
            Some(m) => m.shape().ok(),
            None => self.metadata(id).and_then(|m| m.shape().ok()),
        };
        let Some(shape) = shape else {
            return;
        };
        if !crate::server::challenge::wants_index(&shape, sliver.axis) {
            return;
        }
        let written = match tree {
            Some(t) => crate::server::challenge::write_index_of(path, t),
            None => crate::server::challenge::write_index(path, sliver, &shape),
        };
        if let Err(e) = written {
            tracing::warn!(blob = %id, pair, error = %e, "could not write a sliver's challenge index");
        }
    }

    /// The file holding a large sliver (small ones live in the engine), for reads of a part.
    pub fn sliver_file(&self, id: &BlobId, pair: u16, axis: Axis) -> Option<PathBuf> {
        let key = AxisKey::from(axis);
        let v = self.parts.slivers.get(sliver_key(id, pair, key)).ok()??;
        (v.first() == Some(&1)).then(|| self.large_path(id, pair, key))
    }

    /// Bytes of the object header before a sliver's wire form in its file.
    pub const OBJECT_HEADER: usize = file::HEADER_LEN;

    /// Store a verified sliver of `pair`. Returns true when it was already there.
    pub fn put_sliver(&self, id: BlobId, pair: u16, sliver: &Sliver) -> Result<bool, StoreError> {
        self.put_sliver_with_tree(id, pair, sliver, None)
    }

    /// [`BlobStore::put_sliver`] with the tree its verification built
    /// (`server::challenge::verify_for_store`), reused for the challenge index.
    pub fn put_sliver_with_tree(
        &self,
        id: BlobId,
        pair: u16,
        sliver: &Sliver,
        tree: Option<&MerkleTree>,
    ) -> Result<bool, StoreError> {
        if self.has_sliver(&id, pair, sliver.axis.into())? {
            return Ok(true);
        }
        let op = self.sliver_op(id, pair, sliver, tree, None)?;
        self.one(op)
    }

    /// Store verified slivers, all in one commit: a result per item (true = already there).
    pub fn put_slivers(&self, items: &[(BlobId, u16, &Sliver)]) -> Vec<Result<bool, StoreError>> {
        let with: Vec<_> = items.iter().map(|&(id, p, s)| (id, p, s, None)).collect();
        self.put_slivers_with_trees(&with)
    }

    /// [`BlobStore::put_slivers`] with the trees their verification built.
    pub fn put_slivers_with_trees(
        &self,
        items: &[(BlobId, u16, &Sliver, Option<&MerkleTree>)],
    ) -> Vec<Result<bool, StoreError>> {
        let mut batch = SliverBatch::new(self, items, None);
        let results = self.writer.submit(std::mem::take(&mut batch.ops));
        batch.finish(results)
    }

    /// A whole upload of one blob to this node in one commit: its lifetime (if the caller
    /// verified a new one), its metadata (unless held) and its slivers. Slivers are stored only
    /// with their metadata: if the metadata cannot be stored (no room), neither are they.
    pub fn put_blob(
        &self,
        id: BlobId,
        lifetime: Option<&SignedLifetime>,
        metadata: &BlobMetadata,
        slivers: &[(BlobId, u16, &Sliver, Option<&MerkleTree>)],
    ) -> BlobPut {
        let mut ops = Vec::with_capacity(slivers.len() + 2);
        if let Some(l) = lifetime {
            ops.push(Op::Lifetime {
                id: l.lifetime.blob_id,
                framed: frame(&[&l.to_bytes()]),
            });
        }
        // the writer answers "already there" for metadata it holds
        ops.push(Op::Metadata {
            id,
            framed: frame(&[&metadata.to_bytes()]),
            n: metadata.n() as u16,
        });
        let mut batch = SliverBatch::new(self, slivers, Some(metadata));
        ops.append(&mut batch.ops);
        let mut results = self.writer.submit(ops).into_iter();
        let mut next = || {
            results
                .next()
                .unwrap_or_else(|| Err(StoreError::Engine("writer gave no answer".into())))
        };
        let lifetime = lifetime.map(|_| next());
        let metadata = next();
        let slivers = batch.finish(results.collect());
        BlobPut {
            lifetime,
            metadata,
            slivers,
        }
    }

    fn has_sliver(&self, id: &BlobId, pair: u16, axis: AxisKey) -> Result<bool, StoreError> {
        Ok(self.parts.held.contains_key(sliver_key(id, pair, axis))?)
    }

    /// Read a sliver, checking its checksum. A corrupt one is dropped (and reported as
    /// `Corrupt`) so that recovery rebuilds it.
    pub fn get_sliver(
        &self,
        id: &BlobId,
        pair: u16,
        axis: Axis,
    ) -> Result<Option<Sliver>, StoreError> {
        let key = AxisKey::from(axis);
        let Some(v) = self.parts.slivers.get(sliver_key(id, pair, key))? else {
            return Ok(None);
        };
        let bytes = match v.first() {
            Some(0) => match unframe(&v[1..]) {
                Some(body) => body.to_vec(),
                None => {
                    return Err(self.drop_corrupt(id, pair, key, "checksum mismatch".into()));
                }
            },
            Some(1) => match read_checked(&self.large_path(id, pair, key)) {
                Ok(b) => b,
                Err(FileError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(self.drop_corrupt(id, pair, key, "its file is missing".into()));
                }
                Err(FileError::Io(e)) => return Err(e.into()),
                Err(e) => return Err(self.drop_corrupt(id, pair, key, e.to_string())),
            },
            _ => return Err(self.drop_corrupt(id, pair, key, "unknown value tag".into())),
        };
        match Sliver::from_bytes(&bytes) {
            Ok(s) => Ok(Some(s)),
            Err(e) => Err(self.drop_corrupt(id, pair, key, format!("undecodable: {e}"))),
        }
    }

    fn drop_corrupt(&self, id: &BlobId, pair: u16, axis: AxisKey, why: String) -> StoreError {
        tracing::warn!(blob = %id, pair, ?axis, why, "corrupt sliver dropped; it will be rebuilt");
        if let Some(Err(e)) = self
            .writer
            .submit(vec![Op::DropSliver {
                id: *id,
                pair,
                axis,
            }])
            .pop()
        {
            tracing::warn!(blob = %id, error = %e, "could not drop a corrupt sliver");
        }
        StoreError::Corrupt(format!("sliver {pair}/{axis:?} of blob {id}: {why}"))
    }

    pub fn put_certificate(&self, cert: &Certificate) -> Result<bool, StoreError> {
        self.put_certificate_of(cert, false)
    }

    /// [`Self::put_certificate`] for a blob of which the node already holds every sliver it
    /// owns (`complete`): it is not put on the pending list, so the common write (slivers,
    /// then the certificate) costs recovery nothing — a pending entry is written, scanned and
    /// deleted again otherwise, and recovery's scans of the deleted entries grew with the
    /// write rate. A later loss still reaches recovery: a dropped sliver puts its blob back
    /// on the list, and so does every epoch change.
    pub fn put_certificate_of(
        &self,
        cert: &Certificate,
        complete: bool,
    ) -> Result<bool, StoreError> {
        if self
            .record(&cert.blob_id)?
            .is_some_and(|r| r.certified_epoch.is_some())
        {
            return Ok(true);
        }
        self.one(Op::Certificate {
            id: cert.blob_id,
            epoch: cert.epoch,
            framed: frame(&[&cert.to_bytes()]),
            complete,
        })
    }

    /// [`Self::put_certificate_of`] for several certificates, in one group commit; a result
    /// per certificate, in order.
    pub fn put_certificates_of(
        &self,
        certs: &[(&Certificate, bool)],
    ) -> Vec<Result<bool, StoreError>> {
        let mut out: Vec<Option<Result<bool, StoreError>>> = Vec::with_capacity(certs.len());
        let mut ops = Vec::new();
        for (cert, complete) in certs {
            match self.record(&cert.blob_id) {
                Ok(Some(r)) if r.certified_epoch.is_some() => out.push(Some(Ok(true))),
                Err(e) => out.push(Some(Err(e))),
                _ => {
                    out.push(None);
                    ops.push(Op::Certificate {
                        id: cert.blob_id,
                        epoch: cert.epoch,
                        framed: frame(&[&cert.to_bytes()]),
                        complete: *complete,
                    });
                }
            }
        }
        let mut written = if ops.is_empty() {
            Vec::new()
        } else {
            self.writer.submit(ops)
        }
        .into_iter();
        out.into_iter()
            .map(|r| match r {
                Some(r) => r,
                None => written
                    .next()
                    .unwrap_or_else(|| Err(StoreError::Engine("writer gave no answer".into()))),
            })
            .collect()
    }

    pub fn certificate(&self, id: &BlobId) -> Option<Certificate> {
        let raw = self.parts.certs.get(id.as_bytes()).ok()??;
        Certificate::from_bytes(unframe(&raw)?)
    }

    /// Record an inconsistency proof: the blob is invalid and its slivers are dropped.
    pub fn mark_invalid(&self, id: BlobId, proof: &[u8]) -> Result<(), StoreError> {
        self.one(Op::Invalid {
            id,
            framed: frame(&[proof]),
        })
        .map(|_| ())
    }

    pub fn entry(&self, id: &BlobId) -> Option<BlobEntry> {
        let mut e = self.entry_without_metadata(id)?;
        if e.metadata.is_none() && self.record(id).ok()??.has_metadata {
            e.metadata = self.metadata(id);
        }
        Some(e)
    }

    /// [`Self::entry`] without reading and decoding the metadata (`metadata` is `None`).
    pub fn entry_without_metadata(&self, id: &BlobId) -> Option<BlobEntry> {
        let r = self.record(id).ok()??;
        let mut slivers = BTreeSet::new();
        for k in self
            .parts
            .held
            .prefix(id.as_bytes())
            .map(|kv| kv.map(|(k, _)| k))
        {
            let Ok(k) = k else { break };
            if let Some((_, pair, axis)) = keys::parse_sliver_key(&k) {
                slivers.insert((pair, axis));
            }
        }
        Some(BlobEntry {
            metadata: None,
            certified_epoch: r.certified_epoch,
            invalid: r.invalid,
            slivers,
        })
    }

    /// Certified, valid blobs after `after`, in ID order, at most `limit`: a range scan.
    pub fn certified_page(&self, after: Option<BlobId>, limit: usize) -> Vec<(BlobId, u32)> {
        let iter: Box<dyn Iterator<Item = fjall::Result<fjall::KvPair>>> = match after {
            Some(a) => Box::new(self.parts.certified.range((
                std::ops::Bound::Excluded(a.as_bytes().to_vec()),
                std::ops::Bound::Unbounded,
            ))),
            None => Box::new(self.parts.certified.iter()),
        };
        iter.take(limit)
            .filter_map(|kv| {
                let (k, v) = kv.ok()?;
                let epoch = u32::from_be_bytes(v.as_ref().try_into().ok()?);
                Some((keys::blob_id(&k)?, epoch))
            })
            .collect()
    }

    /// Every certified blob (a full scan: tests and tools only; the node pages).
    pub fn certified(&self) -> Vec<(BlobId, u32)> {
        self.certified_page(None, usize::MAX)
    }

    /// Whether a certificate of `id` is stored (valid or not): one record read, no metadata and
    /// no sliver keys (recovery asks this for every ID its peers list).
    pub fn is_certified(&self, id: &BlobId) -> bool {
        self.record(id)
            .ok()
            .flatten()
            .is_some_and(|r| r.certified_epoch.is_some())
    }

    /// Certified (valid) blobs held, a maintained counter.
    pub fn certified_count(&self) -> u64 {
        self.counter(counter::CERTIFIED)
    }

    /// Certified blobs recovery must look at, after `after`, at most `limit` (ID order).
    pub fn pending_page(&self, after: Option<BlobId>, limit: usize) -> Vec<BlobId> {
        let iter: Box<dyn Iterator<Item = fjall::Result<fjall::UserKey>>> = match after {
            Some(a) => Box::new(
                self.parts
                    .pending
                    .range((
                        std::ops::Bound::Excluded(a.as_bytes().to_vec()),
                        std::ops::Bound::Unbounded,
                    ))
                    .map(|kv| kv.map(|(k, _)| k)),
            ),
            None => Box::new(self.parts.pending.keys()),
        };
        iter.take(limit)
            .filter_map(|k| keys::blob_id(&k.ok()?))
            .collect()
    }

    /// Recovery found nothing missing for these blobs: take them off the pending list.
    pub fn clear_pending(&self, ids: Vec<BlobId>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.one(Op::ClearPending { ids }).map(|_| ())
    }

    /// Put every certified blob back on the pending list once per `epoch` (the owned pairs
    /// changed). A scan of the certified index, in chunks; idempotent and resumable.
    pub fn repend_all(&self, epoch: u32) -> Result<bool, StoreError> {
        if self.counter(counter::PENDING_EPOCH) >= epoch as u64 {
            return Ok(false);
        }
        let mut after = None;
        loop {
            let page: Vec<BlobId> = self
                .certified_page(after, 10_000)
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            let Some(last) = page.last().copied() else {
                break;
            };
            self.one(Op::SetPending { ids: page })?;
            after = Some(last);
        }
        self.one(Op::SetCounter {
            name: counter::PENDING_EPOCH.to_vec(),
            value: epoch as u64,
        })?;
        Ok(true)
    }

    /// The epoch for which every certified blob was last put on the pending list.
    pub fn pending_epoch(&self) -> u32 {
        self.counter(counter::PENDING_EPOCH) as u32
    }

    pub fn pending_count_estimate(&self) -> usize {
        self.parts.pending.approximate_len()
    }

    /// Delete up to `limit` blobs first seen before `cutoff` (unix seconds) and never
    /// certified. Returns (blobs deleted, bytes freed).
    pub fn expire_uncertified(&self, cutoff: u64, limit: usize) -> Result<(u64, u64), StoreError> {
        let ids: Vec<BlobId> = self
            .parts
            .uncertified
            .range(..keys::age_key(cutoff, &BlobId([0; 32])).to_vec())
            .map(|kv| kv.map(|(k, _)| k))
            .take(limit)
            .filter_map(|k| keys::parse_age_key(&k.ok()?).map(|(_, id)| id))
            .collect();
        if ids.is_empty() {
            return Ok((0, 0));
        }
        let before = self.used_bytes();
        let n = ids.len();
        let results = self.writer.submit(
            ids.into_iter()
                .map(|id| Op::DeleteUncertified { id })
                .collect(),
        );
        let mut deleted = 0;
        for r in results {
            if r? {
                deleted += 1;
            }
        }
        {
            let mut cache = self.md_cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.clear();
        }
        tracing::debug!(examined = n, deleted, "expired uncertified blobs");
        Ok((deleted, before.saturating_sub(self.used_bytes())))
    }

    /// Drop the slivers of `id` whose pair `keep` rejects (shards this node no longer owns).
    /// Returns the slivers dropped.
    pub fn drop_pairs(&self, id: &BlobId, keep: impl Fn(u16) -> bool) -> Result<u64, StoreError> {
        let Some(e) = self.entry(id) else {
            return Ok(0);
        };
        let ops: Vec<Op> = e
            .slivers
            .iter()
            .filter(|(pair, _)| !keep(*pair))
            .map(|(pair, axis)| Op::DropSliver {
                id: *id,
                pair: *pair,
                axis: *axis,
            })
            .collect();
        if ops.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        for r in self.writer.submit(ops) {
            if r? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The newest lifetime held for `id` (kept after the blob is collected).
    pub fn lifetime(&self, id: &BlobId) -> Option<SignedLifetime> {
        let raw = self.parts.lifetimes.get(id.as_bytes()).ok()??;
        SignedLifetime::from_bytes(unframe(&raw)?).ok()
    }

    /// Store verified lifetimes (one commit); each result is true when it replaced an older
    /// one (or was the first), false when the store already held one at least as new.
    pub fn put_lifetimes(&self, ls: &[SignedLifetime]) -> Vec<Result<bool, StoreError>> {
        self.put_lifetimes_at(ls, None)
    }

    /// [`Self::put_lifetimes`], and the lifetime log position set to `seq` in the same commit
    /// (an error setting it is reported on every item: the page is sent again, and storing a
    /// lifetime twice changes nothing).
    pub fn put_lifetimes_at(
        &self,
        ls: &[SignedLifetime],
        seq: Option<u64>,
    ) -> Vec<Result<bool, StoreError>> {
        let mut ops: Vec<Op> = ls
            .iter()
            .map(|l| Op::Lifetime {
                id: l.lifetime.blob_id,
                framed: frame(&[&l.to_bytes()]),
            })
            .collect();
        if let Some(value) = seq {
            ops.push(Op::SetCounter {
                name: counter::LIFETIME_SEQ.to_vec(),
                value,
            });
        }
        if ops.is_empty() {
            return Vec::new();
        }
        let mut results = self.writer.submit(ops);
        if seq.is_some() {
            if let Some(Err(e)) = results.pop() {
                return ls.iter().map(|_| Err(e.duplicate())).collect();
            }
        }
        results
    }

    pub fn put_lifetime(&self, l: &SignedLifetime) -> Result<bool, StoreError> {
        self.put_lifetimes(std::slice::from_ref(l))
            .pop()
            .unwrap_or_else(|| Err(StoreError::Engine("writer gave no answer".into())))
    }

    /// The control plane's lifetime log applied in order up to this sequence.
    pub fn lifetime_seq(&self) -> u64 {
        self.counter(counter::LIFETIME_SEQ)
    }

    pub fn set_lifetime_seq(&self, seq: u64) -> Result<(), StoreError> {
        self.one(Op::SetCounter {
            name: counter::LIFETIME_SEQ.to_vec(),
            value: seq,
        })
        .map(|_| ())
    }

    /// Up to `limit` blobs whose lifetime is over in `epoch` (ended at or before it, or
    /// deleted) and not collected yet: a range scan of the expiry index.
    /// Each as (expiry key epoch: 0 for a deleted blob, else its end epoch, blob ID).
    pub fn gone_page(&self, epoch: u32, limit: usize) -> Vec<(u32, BlobId)> {
        let end = keys::expiry_key(epoch.saturating_add(1), &BlobId([0; 32]));
        self.parts
            .expiry
            .range(..end.to_vec())
            .map(|kv| kv.map(|(k, _)| k))
            .take(limit)
            .filter_map(|k| keys::parse_expiry_key(&k.ok()?))
            .collect()
    }

    /// Delete everything held of these blobs but their lifetime (one commit). Returns (blobs
    /// that held data, bytes freed).
    pub fn collect(&self, ids: Vec<BlobId>) -> Result<(u64, u64), StoreError> {
        if ids.is_empty() {
            return Ok((0, 0));
        }
        let before = self.used_bytes();
        let results = self
            .writer
            .submit(ids.into_iter().map(|id| Op::Collect { id }).collect());
        let mut blobs = 0;
        for r in results {
            if r? {
                blobs += 1;
            }
        }
        self.md_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok((blobs, before.saturating_sub(self.used_bytes())))
    }

    /// Blobs the store knows (records), a maintained counter.
    pub fn blob_count(&self) -> usize {
        self.counter(counter::BLOBS) as usize
    }
    pub fn used_bytes(&self) -> u64 {
        self.counter(counter::USED)
    }
    /// Bytes held by blobs not certified (yet).
    pub fn uncertified_bytes(&self) -> u64 {
        self.counter(counter::UNCERTIFIED)
    }
    pub fn capacity(&self) -> Option<u64> {
        self.limits.capacity
    }
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }
    /// Slivers held per shard (maintained counters).
    pub fn shard_counts(&self) -> BTreeMap<u16, u64> {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, _)| k.len() == 3 && k[0] == b's')
            .map(|(k, v)| (u16::from_be_bytes([k[1], k[2]]), *v))
            .collect()
    }
    /// Bytes on disk of the engine: (tables, journal). The journal is bounded (128 MiB) and
    /// holds what is not flushed to tables yet.
    pub fn disk_space(&self) -> (u64, u64) {
        let journal = self.parts.keyspace.journal_disk_space();
        (
            self.parts.keyspace.disk_space().saturating_sub(journal),
            journal,
        )
    }

    /// Flush every memtable to tables (benchmarks and tools: measure steady-state disk use).
    pub fn flush(&self) -> Result<(), StoreError> {
        for part in self.parts.all() {
            part.rotate_memtable_and_wait()?;
        }
        Ok(())
    }

    /// Write stalls and the journals behind them (the keeper thread measures them).
    pub fn stall_report(&self) -> StallReport {
        self.keeper.report()
    }

    /// True while a commit has been stalled for at least [`STALL_AFTER`].
    pub fn writes_stalled(&self) -> bool {
        self.keeper.report().current.is_some()
    }
}

#[cfg(test)]
mod tests;
