//! The store's single writer: group commit.
//!
//! Callers queue their changes ([`Op`]) and block; the writer thread takes everything queued,
//! decides each op against the committed state plus the ops before it in the group (exists
//! already? room left?), writes the accepted ones and the changed counters in one engine batch,
//! syncs the journal once, and only then answers. One fsync is shared by every caller of the
//! group, and check-then-write cannot race because nothing else writes.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use crate::codec::BlobId;

use super::keeper::CommitClock;
use super::keys::{age_key, expiry_key, sliver_key, unframe, Record, SLIVER_KEY_LEN};
use super::{counter, now_secs, AxisKey, Parts, StoreError, StoreLimits, OBJECT_OVERHEAD};

/// Most ops and bytes in one group.
const GROUP_OPS: usize = 8192;
const GROUP_BYTES: usize = 64 << 20;

pub(super) enum SliverBody {
    /// `BLAKE3 ‖ sliver wire bytes`, stored in the engine.
    Inline(Vec<u8>),
    /// Already written (and synced) to its file; `len` bytes with the file header.
    File { len: u64 },
}

pub(super) enum Op {
    Metadata {
        id: BlobId,
        framed: Vec<u8>,
        n: u16,
    },
    Sliver {
        id: BlobId,
        pair: u16,
        axis: AxisKey,
        body: SliverBody,
        /// Refused unless the blob's metadata is held (or stored earlier in the group).
        needs_metadata: bool,
    },
    Certificate {
        id: BlobId,
        epoch: u32,
        framed: Vec<u8>,
        /// The node already holds every sliver it owns of the blob: recovery need not look.
        complete: bool,
    },
    Invalid {
        id: BlobId,
        framed: Vec<u8>,
    },
    DropSliver {
        id: BlobId,
        pair: u16,
        axis: AxisKey,
    },
    DropMetadata {
        id: BlobId,
    },
    DeleteUncertified {
        id: BlobId,
    },
    ClearPending {
        ids: Vec<BlobId>,
    },
    SetPending {
        ids: Vec<BlobId>,
    },
    SetCounter {
        name: Vec<u8>,
        value: u64,
    },
    /// A signed lifetime (framed); kept only if newer than the one held.
    Lifetime {
        id: BlobId,
        framed: Vec<u8>,
    },
    /// Delete all of a blob but its lifetime, and take it off the expiry index.
    Collect {
        id: BlobId,
    },
}

/// Where a lifetime sits in the expiry index: deleted blobs under 0 (collected first).
fn lifetime_index(l: &crate::protocol::Lifetime) -> (u64, u32) {
    (l.sequence, if l.deleted { 0 } else { l.end_epoch })
}

impl Op {
    fn bytes(&self) -> usize {
        match self {
            Op::Metadata { framed, .. }
            | Op::Lifetime { framed, .. }
            | Op::Certificate { framed, .. }
            | Op::Invalid { framed, .. } => framed.len(),
            Op::Sliver {
                body: SliverBody::Inline(v),
                ..
            } => v.len(),
            Op::ClearPending { ids } | Op::SetPending { ids } => ids.len() * 32,
            _ => 64,
        }
    }
}

type Results = Vec<Result<bool, StoreError>>;

struct Request {
    ops: Vec<Op>,
    reply: mpsc::SyncSender<Results>,
}

pub(super) struct Writer {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub(super) fn large_path(large_dir: &Path, id: &BlobId, pair: u16, axis: AxisKey) -> PathBuf {
    large_dir
        .join(hex::encode(id.as_bytes()))
        .join(format!("{pair}.{}", axis.file_suffix()))
}

impl Writer {
    pub fn start(
        parts: Arc<Parts>,
        large_dir: PathBuf,
        limits: StoreLimits,
        counters: Arc<Mutex<HashMap<Vec<u8>, u64>>>,
        generation: Arc<AtomicU64>,
        clock: Arc<CommitClock>,
        stall_file: Option<PathBuf>,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("floe-store-writer".into())
            .spawn(move || {
                let ctx = Ctx {
                    parts,
                    large_dir,
                    limits,
                };
                while let Ok(first) = rx.recv() {
                    let mut ops = first.ops.len();
                    let mut bytes: usize = first.ops.iter().map(Op::bytes).sum();
                    let mut group = vec![first];
                    while ops < GROUP_OPS && bytes < GROUP_BYTES {
                        match rx.try_recv() {
                            Ok(r) => {
                                ops += r.ops.len();
                                bytes += r.ops.iter().map(Op::bytes).sum::<usize>();
                                group.push(r);
                            }
                            Err(_) => break,
                        }
                    }
                    let snapshot = counters.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let mut txn = Txn::new(&ctx, snapshot);
                    let mut replies = Vec::with_capacity(group.len());
                    for req in group {
                        let results: Results =
                            req.ops.into_iter().map(|op| txn.apply(op)).collect();
                        replies.push((req.reply, results));
                    }
                    clock.begin();
                    while stall_file.as_ref().is_some_and(|f| f.exists()) {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    let committed = txn.commit();
                    clock.end();
                    match committed {
                        Ok((new_counters, delete)) => {
                            *counters.lock().unwrap_or_else(|p| p.into_inner()) = new_counters;
                            generation.fetch_add(1, Ordering::Relaxed);
                            for p in delete {
                                remove_path(&p);
                            }
                        }
                        Err((e, written)) => {
                            tracing::error!(error = %e, "store commit failed");
                            for p in written {
                                remove_path(&p);
                            }
                            for (_, results) in &mut replies {
                                for r in results.iter_mut() {
                                    if r.is_ok() {
                                        *r = Err(e.duplicate());
                                    }
                                }
                            }
                        }
                    }
                    for (reply, results) in replies {
                        let _ = reply.send(results);
                    }
                }
            })
            .map_err(StoreError::from)?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queue `ops` and wait until they are durable (or refused): one result per op.
    pub fn submit(&self, ops: Vec<Op>) -> Results {
        let n = ops.len();
        let (reply, answer) = mpsc::sync_channel(1);
        let gone = || {
            (0..n)
                .map(|_| Err(StoreError::Engine("the store writer has stopped".into())))
                .collect()
        };
        let Some(tx) = &self.tx else { return gone() };
        if tx.send(Request { ops, reply }).is_err() {
            return gone();
        }
        answer.recv().unwrap_or_else(|_| gone())
    }
}

/// Longest wait for the writer to finish its queue when the store closes.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx.take();
        let Some(t) = self.thread.take() else { return };
        // a writer stuck in a commit (a disk that never answers) must not hold the process
        let started = std::time::Instant::now();
        while !t.is_finished() {
            if started.elapsed() > CLOSE_WAIT {
                tracing::error!(
                    "the store writer did not finish its last commit; closing without it"
                );
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = t.join();
    }
}

fn remove_path(p: &Path) {
    let r = if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    };
    if let Err(e) = r {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %p.display(), error = %e, "could not remove a dropped sliver file");
        }
    }
}

struct Ctx {
    parts: Arc<Parts>,
    large_dir: PathBuf,
    limits: StoreLimits,
}

/// One group being decided: the batch, and an overlay of what the ops before wrote.
struct Txn<'a> {
    ctx: &'a Ctx,
    batch: fjall::Batch,
    counters: HashMap<Vec<u8>, u64>,
    dirty: BTreeSet<Vec<u8>>,
    records: HashMap<BlobId, Option<Record>>,
    /// Records to write at commit (removed ones, `None` in `records`, are not written again).
    changed_records: BTreeSet<BlobId>,
    /// Lifetimes touched in this group: (sequence, expiry key epoch), if one is held.
    lifetimes: HashMap<BlobId, Option<(u64, u32)>>,
    /// Sliver key → Some(charged bytes) if held, None if dropped in this group.
    held: HashMap<[u8; SLIVER_KEY_LEN], Option<u64>>,
    /// Files to remove once the commit is durable.
    delete: Vec<PathBuf>,
    /// Large-sliver files this group references for the first time (removed if it fails).
    written: Vec<PathBuf>,
    now: u64,
}

impl<'a> Txn<'a> {
    fn new(ctx: &'a Ctx, counters: HashMap<Vec<u8>, u64>) -> Self {
        Self {
            ctx,
            batch: ctx.parts.keyspace.batch(),
            counters,
            dirty: BTreeSet::new(),
            records: HashMap::new(),
            changed_records: BTreeSet::new(),
            lifetimes: HashMap::new(),
            held: HashMap::new(),
            delete: Vec::new(),
            written: Vec::new(),
            now: now_secs(),
        }
    }

    fn get(&self, name: &[u8]) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
    fn add(&mut self, name: &[u8], delta: i64) {
        let v = self.counters.entry(name.to_vec()).or_insert(0);
        *v = v.saturating_add_signed(delta);
        self.dirty.insert(name.to_vec());
    }

    fn record(&mut self, id: &BlobId) -> Result<Option<Record>, StoreError> {
        if let Some(r) = self.records.get(id) {
            return Ok(*r);
        }
        let r =
            match self.ctx.parts.blobs.get(id.as_bytes())? {
                Some(v) => Some(Record::decode(&v).ok_or_else(|| {
                    StoreError::Corrupt(format!("record of blob {id} unreadable"))
                })?),
                None => None,
            };
        self.records.insert(*id, r);
        Ok(r)
    }

    /// The record of `id`, or a fresh one (`true`) that [`Self::adopt`] counts once it is kept.
    fn load(&mut self, id: &BlobId) -> Result<(Record, bool), StoreError> {
        Ok(match self.record(id)? {
            Some(r) => (r, false),
            None => (
                Record {
                    first_seen: self.now,
                    ..Default::default()
                },
                true,
            ),
        })
    }

    /// A new record is kept: count it, and index it by age while it is not certified.
    fn adopt(&mut self, id: &BlobId, r: &Record) {
        self.add(counter::BLOBS, 1);
        if r.certified_epoch.is_none() {
            self.batch.insert(
                &self.ctx.parts.uncertified,
                age_key(r.first_seen, id).to_vec(),
                Vec::<u8>::new(),
            );
        }
    }

    /// Written once at commit, however many ops of the group changed it (a blob's upload
    /// changes it once per sliver).
    fn put_record(&mut self, id: &BlobId, r: Record) {
        self.records.insert(*id, Some(r));
        self.changed_records.insert(*id);
    }

    /// Charge `bytes` to `r` if there is room (uncertified blobs also within their quota).
    fn charge(&mut self, r: &mut Record, bytes: u64) -> Result<(), StoreError> {
        let used = self.get(counter::USED);
        if let Some(capacity) = self.ctx.limits.capacity {
            if used + bytes > capacity {
                return Err(StoreError::Full {
                    needed: bytes,
                    available: capacity.saturating_sub(used),
                    capacity,
                });
            }
        }
        if r.certified_epoch.is_none() {
            let unc = self.get(counter::UNCERTIFIED);
            if let Some(quota) = self.ctx.limits.uncertified_quota {
                if unc + bytes > quota {
                    return Err(StoreError::UncertifiedFull {
                        needed: bytes,
                        available: quota.saturating_sub(unc),
                        quota,
                    });
                }
            }
            self.add(counter::UNCERTIFIED, bytes as i64);
        }
        self.add(counter::USED, bytes as i64);
        r.charged += bytes;
        Ok(())
    }

    fn uncharge(&mut self, r: &mut Record, bytes: u64) {
        let bytes = bytes.min(r.charged);
        r.charged -= bytes;
        self.add(counter::USED, -(bytes as i64));
        if r.certified_epoch.is_none() {
            self.add(counter::UNCERTIFIED, -(bytes as i64));
        }
    }

    fn held(&mut self, key: &[u8; SLIVER_KEY_LEN]) -> Result<Option<u64>, StoreError> {
        if let Some(h) = self.held.get(key) {
            return Ok(*h);
        }
        let h = self
            .ctx
            .parts
            .held
            .get(key)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes);
        self.held.insert(*key, h);
        Ok(h)
    }

    /// (sequence, expiry epoch) of the lifetime held for `id`: 0 for a deleted blob, else its
    /// end epoch.
    fn lifetime_of(&mut self, id: &BlobId) -> Result<Option<(u64, u32)>, StoreError> {
        if let Some(l) = self.lifetimes.get(id) {
            return Ok(*l);
        }
        let l = self.ctx.parts.lifetimes.get(id.as_bytes())?.and_then(|v| {
            crate::protocol::SignedLifetime::from_bytes(unframe(&v)?)
                .ok()
                .map(|s| lifetime_index(&s.lifetime))
        });
        self.lifetimes.insert(*id, l);
        Ok(l)
    }

    fn shard_of(r: &Record, id: &BlobId, pair: u16) -> Option<u16> {
        (r.n > 0).then(|| ((pair as usize + id.mod_n(r.n as usize)) % r.n as usize) as u16)
    }

    fn apply(&mut self, op: Op) -> Result<bool, StoreError> {
        let p = self.ctx.parts.clone();
        match op {
            Op::Metadata { id, framed, n } => {
                let (mut r, new) = self.load(&id)?;
                if r.has_metadata {
                    return Ok(true);
                }
                self.charge(&mut r, framed.len() as u64 + OBJECT_OVERHEAD)?;
                if new {
                    self.adopt(&id, &r);
                }
                r.has_metadata = true;
                r.n = n;
                self.batch
                    .insert(&p.metadata, id.as_bytes().to_vec(), framed);
                self.put_record(&id, r);
                Ok(false)
            }
            Op::Sliver {
                id,
                pair,
                axis,
                body,
                needs_metadata,
            } => {
                let key = sliver_key(&id, pair, axis);
                if self.held(&key)?.is_some() {
                    // an identical concurrent write: stored (and counted) once
                    return Ok(true);
                }
                let (mut r, new) = self.load(&id)?;
                let (value, len) = match body {
                    SliverBody::Inline(framed) => {
                        let len = framed.len() as u64;
                        let mut v = Vec::with_capacity(1 + framed.len());
                        v.push(0);
                        v.extend_from_slice(&framed);
                        (v, len)
                    }
                    SliverBody::File { len } => (vec![1], len),
                };
                let is_file = value[0] == 1;
                let path = is_file.then(|| large_path(&self.ctx.large_dir, &id, pair, axis));
                let cost = len + OBJECT_OVERHEAD;
                let refused = if needs_metadata && !r.has_metadata {
                    Err(StoreError::Engine(format!(
                        "blob {id}: its metadata was not stored, so neither are its slivers"
                    )))
                } else {
                    self.charge(&mut r, cost)
                };
                if let Err(e) = refused {
                    if let Some(path) = path {
                        self.delete
                            .push(crate::server::challenge::index_path(&path));
                        self.delete.push(path);
                    }
                    return Err(e);
                }
                if new {
                    self.adopt(&id, &r);
                }
                if let Some(path) = path {
                    self.written.push(path);
                }
                self.batch.insert(&p.slivers, key.to_vec(), value);
                self.batch
                    .insert(&p.held, key.to_vec(), cost.to_be_bytes().to_vec());
                self.held.insert(key, Some(cost));
                if let Some(s) = Self::shard_of(&r, &id, pair) {
                    self.add(&counter::shard(s), 1);
                }
                self.put_record(&id, r);
                Ok(false)
            }
            Op::Certificate {
                id,
                epoch,
                framed,
                complete,
            } => {
                let (mut r, new) = self.load(&id)?;
                if r.certified_epoch.is_some() {
                    return Ok(true);
                }
                let was = r;
                r.certified_epoch = Some(epoch);
                self.charge(&mut r, framed.len() as u64 + OBJECT_OVERHEAD)?;
                if new {
                    self.adopt(&id, &r);
                } else {
                    // from now on its bytes count as certified
                    self.batch
                        .remove(&p.uncertified, age_key(was.first_seen, &id).to_vec());
                    self.add(counter::UNCERTIFIED, -(was.charged as i64));
                }
                self.batch.insert(&p.certs, id.as_bytes().to_vec(), framed);
                if !r.invalid {
                    self.batch.insert(
                        &p.certified,
                        id.as_bytes().to_vec(),
                        epoch.to_be_bytes().to_vec(),
                    );
                    if !complete {
                        self.batch
                            .insert(&p.pending, id.as_bytes().to_vec(), Vec::<u8>::new());
                    }
                    self.add(counter::CERTIFIED, 1);
                }
                self.put_record(&id, r);
                Ok(false)
            }
            Op::Invalid { id, framed } => {
                let (mut r, new) = self.load(&id)?;
                if r.invalid {
                    return Ok(true);
                }
                if new {
                    self.adopt(&id, &r);
                }
                // an inconsistency proof is small and must be kept: no capacity check
                r.charged += framed.len() as u64 + OBJECT_OVERHEAD;
                self.add(
                    counter::USED,
                    (framed.len() as u64 + OBJECT_OVERHEAD) as i64,
                );
                r.invalid = true;
                self.batch
                    .insert(&p.invalid, id.as_bytes().to_vec(), framed);
                if r.certified_epoch.is_some() {
                    self.batch.remove(&p.certified, id.as_bytes().to_vec());
                    self.batch.remove(&p.pending, id.as_bytes().to_vec());
                    self.add(counter::CERTIFIED, -1);
                }
                self.put_record(&id, r);
                for (pair, axis) in self.held_of(&id)? {
                    self.drop_sliver(&id, pair, axis, false)?;
                }
                Ok(false)
            }
            Op::DropSliver { id, pair, axis } => self.drop_sliver(&id, pair, axis, true),
            Op::DropMetadata { id } => {
                let Some(mut r) = self.record(&id)? else {
                    return Ok(false);
                };
                if !r.has_metadata {
                    return Ok(false);
                }
                let len = p.metadata.size_of(id.as_bytes())?.unwrap_or(0) as u64;
                self.uncharge(&mut r, len + OBJECT_OVERHEAD);
                r.has_metadata = false;
                self.batch.remove(&p.metadata, id.as_bytes().to_vec());
                self.put_record(&id, r);
                Ok(true)
            }
            Op::DeleteUncertified { id } => {
                let Some(r) = self.record(&id)? else {
                    return Ok(false);
                };
                if r.certified_epoch.is_some() {
                    return Ok(false);
                }
                for (pair, axis) in self.held_of(&id)? {
                    self.drop_sliver(&id, pair, axis, false)?;
                }
                // dropping the slivers uncharged them from the record: what is left
                let Some(mut r) = self.record(&id)? else {
                    return Ok(false);
                };
                let rest = r.charged;
                self.uncharge(&mut r, rest);
                for part in [&p.metadata, &p.invalid, &p.certs, &p.blobs] {
                    self.batch.remove(part, id.as_bytes().to_vec());
                }
                self.batch
                    .remove(&p.uncertified, age_key(r.first_seen, &id).to_vec());
                self.records.insert(id, None);
                self.add(counter::BLOBS, -1);
                self.delete
                    .push(self.ctx.large_dir.join(hex::encode(id.as_bytes())));
                Ok(true)
            }
            Op::ClearPending { ids } => {
                for id in ids {
                    self.batch.remove(&p.pending, id.as_bytes().to_vec());
                }
                Ok(true)
            }
            Op::SetPending { ids } => {
                for id in ids {
                    self.batch
                        .insert(&p.pending, id.as_bytes().to_vec(), Vec::<u8>::new());
                }
                Ok(true)
            }
            Op::SetCounter { name, value } => {
                self.counters.insert(name.clone(), value);
                self.dirty.insert(name);
                Ok(true)
            }
            Op::Lifetime { id, framed } => {
                let Some(new) = unframe(&framed)
                    .and_then(|b| crate::protocol::SignedLifetime::from_bytes(b).ok())
                else {
                    return Err(StoreError::Undecodable("lifetime".into()));
                };
                let (seq, end) = lifetime_index(&new.lifetime);
                let old = self.lifetime_of(&id)?;
                if old.is_some_and(|(s, _)| s >= seq) {
                    return Ok(false);
                }
                if let Some((_, e)) = old {
                    self.batch.remove(&p.expiry, expiry_key(e, &id).to_vec());
                }
                self.batch
                    .insert(&p.expiry, expiry_key(end, &id).to_vec(), Vec::<u8>::new());
                self.batch
                    .insert(&p.lifetimes, id.as_bytes().to_vec(), framed);
                self.lifetimes.insert(id, Some((seq, end)));
                Ok(true)
            }
            Op::Collect { id } => {
                if let Some((_, e)) = self.lifetime_of(&id)? {
                    self.batch.remove(&p.expiry, expiry_key(e, &id).to_vec());
                }
                let Some(r) = self.record(&id)? else {
                    return Ok(false);
                };
                for (pair, axis) in self.held_of(&id)? {
                    self.drop_sliver(&id, pair, axis, false)?;
                }
                let Some(mut r2) = self.record(&id)? else {
                    return Ok(false);
                };
                let rest = r2.charged;
                self.uncharge(&mut r2, rest);
                for part in [&p.metadata, &p.invalid, &p.certs, &p.blobs, &p.pending] {
                    self.batch.remove(part, id.as_bytes().to_vec());
                }
                if r.certified_epoch.is_some() {
                    if !r.invalid {
                        self.batch.remove(&p.certified, id.as_bytes().to_vec());
                        self.add(counter::CERTIFIED, -1);
                    }
                } else {
                    self.batch
                        .remove(&p.uncertified, age_key(r.first_seen, &id).to_vec());
                }
                self.records.insert(id, None);
                self.add(counter::BLOBS, -1);
                self.delete
                    .push(self.ctx.large_dir.join(hex::encode(id.as_bytes())));
                Ok(true)
            }
        }
    }

    /// Slivers held of `id`: committed ones and this group's, minus those dropped in it.
    fn held_of(&mut self, id: &BlobId) -> Result<Vec<(u16, AxisKey)>, StoreError> {
        let mut keys: BTreeSet<[u8; SLIVER_KEY_LEN]> = BTreeSet::new();
        for k in self
            .ctx
            .parts
            .held
            .prefix(id.as_bytes())
            .map(|kv| kv.map(|(k, _)| k))
        {
            let k = k?;
            if let Ok(k) = <[u8; SLIVER_KEY_LEN]>::try_from(k.as_ref()) {
                keys.insert(k);
            }
        }
        for (k, v) in &self.held {
            if k[..32] == id.as_bytes()[..] {
                if v.is_some() {
                    keys.insert(*k);
                } else {
                    keys.remove(k);
                }
            }
        }
        Ok(keys
            .iter()
            .filter_map(|k| super::keys::parse_sliver_key(k).map(|(_, p, a)| (p, a)))
            .collect())
    }

    fn drop_sliver(
        &mut self,
        id: &BlobId,
        pair: u16,
        axis: AxisKey,
        repend: bool,
    ) -> Result<bool, StoreError> {
        let key = sliver_key(id, pair, axis);
        let Some(cost) = self.held(&key)? else {
            return Ok(false);
        };
        let p = self.ctx.parts.clone();
        let Some(mut r) = self.record(id)? else {
            return Ok(false);
        };
        self.batch.remove(&p.slivers, key.to_vec());
        self.batch.remove(&p.held, key.to_vec());
        self.held.insert(key, None);
        self.uncharge(&mut r, cost);
        if let Some(s) = Self::shard_of(&r, id, pair) {
            self.add(&counter::shard(s), -1);
        }
        if repend && r.certified_epoch.is_some() && !r.invalid {
            self.batch
                .insert(&p.pending, id.as_bytes().to_vec(), Vec::<u8>::new());
        }
        self.put_record(id, r);
        let path = large_path(&self.ctx.large_dir, id, pair, axis);
        self.delete
            .push(crate::server::challenge::index_path(&path));
        self.delete.push(path);
        Ok(true)
    }

    /// Write the counters, commit with one journal sync. Returns the new counters and the files
    /// to delete, or the error and the files this group wrote.
    #[allow(clippy::type_complexity)]
    fn commit(
        mut self,
    ) -> Result<(HashMap<Vec<u8>, u64>, Vec<PathBuf>), (StoreError, Vec<PathBuf>)> {
        for id in std::mem::take(&mut self.changed_records) {
            if let Some(Some(r)) = self.records.get(&id) {
                self.batch.insert(
                    &self.ctx.parts.blobs,
                    id.as_bytes().to_vec(),
                    r.encode().to_vec(),
                );
            }
        }
        for name in std::mem::take(&mut self.dirty) {
            let v = self.get(&name);
            self.batch
                .insert(&self.ctx.parts.counters, name, v.to_be_bytes().to_vec());
        }
        if self.batch.is_empty() {
            return Ok((self.counters, self.delete));
        }
        let written = std::mem::take(&mut self.written);
        match self
            .batch
            .durability(Some(fjall::PersistMode::SyncAll))
            .commit()
        {
            Ok(()) => Ok((self.counters, self.delete)),
            Err(e) => Err((e.into(), written)),
        }
    }
}
