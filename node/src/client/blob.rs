//! Writing and reading whole blobs against a committee (PROTOCOL.md §4).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Semaphore;

use super::node::{ClientError, NodeClient};
use crate::codec::{
    self, decode_verified, Axis, BlobId, BlobMetadata, CodecError, ConsistencyCheck, EncodedBlob,
    Sliver,
};
use crate::protocol::{Certificate, Committee, Confirmation, Member, NodeId};

/// Knobs of the blob client; the defaults suit a local testnet and a LAN cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sliver bytes in flight across all nodes at once (bounds memory while uploading).
    pub max_in_flight_bytes: usize,
    /// Attempts per request before a node is given up for this blob.
    pub attempts: u32,
    /// After quorum, keep uploading to the remaining nodes this long so fewer need recovery.
    pub grace: Duration,
    pub max_message: usize,
    /// Parallel sliver downloads when reading.
    pub read_parallelism: usize,
    /// Sliver uploads in flight to one node (more would only queue behind the node's own
    /// request limit and run into deadlines).
    pub per_node_parallelism: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            max_in_flight_bytes: 256 << 20,
            attempts: 3,
            grace: Duration::from_secs(2),
            max_message: 96 << 20,
            read_parallelism: 16,
            per_node_parallelism: 16,
        }
    }
}

/// Progress of a long operation, reported as it happens (the CLI draws bars from it).
#[derive(Debug, Clone)]
pub enum Progress {
    Encoded {
        encoded_bytes: u64,
        elapsed: Duration,
    },
    /// Bytes of slivers stored (write) or fetched and verified (read) so far.
    Bytes {
        done: u64,
        total: u64,
    },
    /// Shards whose nodes confirmed so far, and the quorum.
    Confirmed {
        shards: usize,
        quorum: usize,
    },
    Certified {
        elapsed: Duration,
    },
}

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("only {confirmed} of {n} shards confirmed the blob; a quorum needs {needed}. Failures: {}", failures.join("; "))]
    NoQuorum {
        confirmed: usize,
        needed: usize,
        n: usize,
        failures: Vec<String>,
    },
    #[error("committee: {0}")]
    Committee(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("blob {0} is unknown to every node asked")]
    NotFound(BlobId),
    #[error("blob {0} was proven inconsistently encoded by its writer; it has no content")]
    Invalid(BlobId),
    #[error("only {got} of the {need} verified primary slivers needed could be fetched. Failures: {}", failures.join("; "))]
    NotEnoughSlivers {
        got: usize,
        need: usize,
        failures: Vec<String>,
    },
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("writing the blob: {0}")]
    Io(String),
}

/// What a write did, and where the time went.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    pub blob_id: BlobId,
    pub size: u64,
    pub encoded_size: u64,
    pub epoch: u32,
    pub confirmed_shards: usize,
    pub quorum: usize,
    pub certified_nodes: usize,
    pub encode_time: Duration,
    pub upload_time: Duration,
    pub total_time: Duration,
}

/// The committee a client writes to, the one before it (reads of blobs whose shards are still
/// moving fall back to their previous owners, PROTOCOL.md §6), and a connection per member.
struct View {
    committee: Committee,
    previous: Option<Committee>,
    nodes: HashMap<NodeId, NodeClient>,
}

impl View {
    fn new(
        committee: Committee,
        previous: Option<Committee>,
        max_message: usize,
    ) -> Result<Self, ClientError> {
        let mut nodes = HashMap::new();
        for m in committee
            .members
            .iter()
            .chain(previous.iter().flat_map(|p| p.members.iter()))
        {
            if let std::collections::hash_map::Entry::Vacant(e) = nodes.entry(m.node_id) {
                e.insert(NodeClient::new(&m.address, max_message)?);
            }
        }
        Ok(Self {
            committee,
            previous,
            nodes,
        })
    }
    fn node(&self, m: &Member) -> &NodeClient {
        &self.nodes[&m.node_id]
    }
}

/// Reads and writes blobs. It follows the network's epochs: when a node says the committee
/// moved on (or a write cannot reach a quorum), it fetches the newest committee and retries.
pub struct BlobClient {
    view: std::sync::RwLock<Arc<View>>,
    /// Addresses to learn the committee from, besides the members'.
    seeds: Vec<String>,
    config: ClientConfig,
}

/// Writes retried against a newer committee before giving up.
const EPOCH_RETRIES: usize = 3;
/// Most slivers per PutSlivers request (the node takes up to 4096).
const PUT_SLIVERS_BATCH: usize = 1024;
/// Sliver bytes per PutSlivers request (less if half the message limit is less): small slivers
/// share a request and a commit, large ones still stream several requests per node, so that
/// transfer and persistence overlap and progress is reported as they land.
const PUT_SLIVERS_BYTES: usize = 4 << 20;

impl BlobClient {
    pub fn new(committee: Committee, config: ClientConfig) -> Result<Self, ClientError> {
        let view = View::new(committee, None, config.max_message)?;
        Ok(Self {
            view: std::sync::RwLock::new(Arc::new(view)),
            seeds: Vec::new(),
            config,
        })
    }

    /// Learn the newest committee that any of `addresses` knows and build a client for it.
    pub async fn connect(addresses: &[String], config: ClientConfig) -> Result<Self, ClientError> {
        let (c, prev) = newest_committee(addresses, config.max_message).await?;
        let view = View::new(c, prev, config.max_message)?;
        Ok(Self {
            view: std::sync::RwLock::new(Arc::new(view)),
            seeds: addresses.to_vec(),
            config,
        })
    }

    fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The committee this client writes to.
    pub fn committee(&self) -> Committee {
        self.view().committee.clone()
    }

    /// Fetch the newest committee from the seeds and the members; true if it is newer than the
    /// one held.
    pub async fn refresh(&self) -> Result<bool, ClientError> {
        let view = self.view();
        let mut addresses = self.seeds.clone();
        addresses.extend(view.committee.members.iter().map(|m| m.address.clone()));
        addresses.sort();
        addresses.dedup();
        let (c, prev) = newest_committee(&addresses, self.config.max_message).await?;
        if c.epoch <= view.committee.epoch && c == view.committee {
            return Ok(false);
        }
        let newer = c.epoch > view.committee.epoch;
        let prev = prev.or_else(|| newer.then(|| view.committee.clone()));
        let next = Arc::new(View::new(c, prev, self.config.max_message)?);
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(true)
    }

    /// Encode, upload, collect confirmations to a quorum, certify. When the network moved to a
    /// newer epoch meanwhile, the upload is repeated against the new committee.
    pub async fn write(
        &self,
        data: Vec<u8>,
        progress: Option<ProgressFn>,
    ) -> Result<WriteOutcome, WriteError> {
        let start = Instant::now();
        let report = |p: Progress| {
            if let Some(f) = &progress {
                f(p)
            }
        };
        let params = self.view().committee.params();
        let size = data.len() as u64;
        let enc: Arc<EncodedBlob> = Arc::new(
            tokio::task::spawn_blocking(move || codec::encode(&data, params))
                .await
                .map_err(|e| WriteError::Committee(e.to_string()))??,
        );
        let encode_time = start.elapsed();
        let shape = *enc.shape();
        let n = params.n();
        let encoded_size = (n * (shape.primary_sliver_len() + shape.secondary_sliver_len())) as u64;
        report(Progress::Encoded {
            encoded_bytes: encoded_size,
            elapsed: encode_time,
        });
        let mut attempt = 0;
        loop {
            attempt += 1;
            let view = self.view();
            match self
                .upload(&view, &enc, start, encode_time, size, progress.clone())
                .await
            {
                Err(e @ WriteError::NoQuorum { .. }) if attempt < EPOCH_RETRIES => {
                    match self.refresh().await {
                        Ok(true) => {
                            tracing::info!(
                                epoch = self.view().committee.epoch,
                                "the committee changed during the write; uploading again"
                            );
                            continue;
                        }
                        _ => return Err(e),
                    }
                }
                other => return other,
            }
        }
    }

    /// One upload of an encoded blob to the committee of `view`.
    async fn upload(
        &self,
        view: &View,
        enc: &Arc<EncodedBlob>,
        start: Instant,
        encode_time: Duration,
        size: u64,
        progress: Option<ProgressFn>,
    ) -> Result<WriteOutcome, WriteError> {
        let report = |p: Progress| {
            if let Some(f) = &progress {
                f(p)
            }
        };
        let params = view.committee.params();
        let shape = *enc.shape();
        let n = params.n();
        let encoded_size = (n * (shape.primary_sliver_len() + shape.secondary_sliver_len())) as u64;
        let id = enc.blob_id();
        let rot = id.mod_n(n);

        let budget = Arc::new(Semaphore::new(self.config.max_in_flight_bytes.max(1) >> 10));
        let done_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let upload_start = Instant::now();
        let mut tasks: FuturesUnordered<_> = view
            .committee
            .members
            .iter()
            .filter(|m| !m.shards.is_empty())
            .map(|m| {
                let node = view.node(m).clone();
                let pairs: Vec<u16> = m
                    .shards
                    .iter()
                    .map(|s| params.pair_for_shard(*s as usize, rot) as u16)
                    .collect();
                let enc = enc.clone();
                let budget = budget.clone();
                let done_bytes = done_bytes.clone();
                let progress = progress.clone();
                let attempts = self.config.attempts;
                let parallel = self.config.per_node_parallelism.max(1);
                let weight = m.shards.len();
                let max_message = self.config.max_message;
                async move {
                    let pace = Pace {
                        attempts,
                        parallel,
                        max_message,
                    };
                    let r = upload_to(&node, &enc, &pairs, &budget, pace, |b| {
                        let d = done_bytes.fetch_add(b, std::sync::atomic::Ordering::Relaxed) + b;
                        if let Some(f) = &progress {
                            f(Progress::Bytes {
                                done: d,
                                total: encoded_size,
                            });
                        }
                    })
                    .await;
                    (node, weight, r)
                }
            })
            .collect();

        let quorum = params.quorum_weight();
        let mut confirmations: Vec<Confirmation> = Vec::new();
        let mut confirmed = 0usize;
        let mut failures = Vec::new();
        let mut quorum_at: Option<Instant> = None;
        loop {
            let next = match quorum_at {
                None => tasks.next().await,
                Some(t) => match tokio::time::timeout(
                    self.config.grace.saturating_sub(t.elapsed()),
                    tasks.next(),
                )
                .await
                {
                    Ok(x) => x,
                    Err(_) => break, // grace period over; the rest recover in the background
                },
            };
            let Some((node, weight, result)) = next else {
                break;
            };
            match result {
                Ok(conf) if conf.epoch == view.committee.epoch => {
                    confirmations.push(conf);
                    confirmed += weight;
                    report(Progress::Confirmed {
                        shards: confirmed,
                        quorum,
                    });
                    if quorum_at.is_none() && params.is_quorum(confirmed) {
                        quorum_at = Some(Instant::now());
                    }
                }
                Ok(conf) => failures.push(format!(
                    "{}: confirmed epoch {} instead of {}",
                    node.address(),
                    conf.epoch,
                    view.committee.epoch
                )),
                Err(e) => failures.push(e.to_string()),
            }
        }
        let upload_time = upload_start.elapsed();
        if !params.is_quorum(confirmed) {
            return Err(WriteError::NoQuorum {
                confirmed,
                needed: quorum,
                n,
                failures,
            });
        }
        let cert = Certificate {
            epoch: view.committee.epoch,
            blob_id: id,
            signers: confirmations
                .iter()
                .map(|c| (c.node_id, c.signature))
                .collect(),
        };
        let certified_nodes = futures::future::join_all(view.nodes.values().map(|node| {
            let cert = &cert;
            async move {
                retry(self.config.attempts, || node.put_certificate(cert))
                    .await
                    .is_ok()
            }
        }))
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
        report(Progress::Certified {
            elapsed: start.elapsed(),
        });
        Ok(WriteOutcome {
            blob_id: id,
            size,
            encoded_size,
            epoch: view.committee.epoch,
            confirmed_shards: confirmed,
            quorum,
            certified_nodes,
            encode_time,
            upload_time,
            total_time: start.elapsed(),
        })
    }

    /// Metadata of `id` from the first node that has it (verified against the ID).
    pub async fn metadata(&self, id: &BlobId) -> Result<BlobMetadata, ReadError> {
        for round in 0..2 {
            let view = self.view();
            let mut calls: FuturesUnordered<_> =
                view.nodes.values().map(|n| n.get_metadata(id)).collect();
            while let Some(r) = calls.next().await {
                if let Ok(md) = r {
                    return Ok(md);
                }
            }
            // nobody we know has it: maybe the network moved on since we learned the committee
            if round == 0 && !matches!(self.refresh().await, Ok(true)) {
                break;
            }
        }
        Err(ReadError::NotFound(*id))
    }

    /// Read a blob into memory: k_p verified primary slivers (systematic ones first), decode,
    /// check.
    pub async fn read(
        &self,
        id: &BlobId,
        progress: Option<ProgressFn>,
    ) -> Result<Vec<u8>, ReadError> {
        let md = Arc::new(self.metadata(id).await?);
        let mut got = Vec::new();
        self.fetch_primary(id, &md, progress, |s| {
            got.push(s);
            Ok(())
        })
        .await?;
        decode_blocking(id, md, got).await
    }

    /// Read a blob into `path`, streaming: each verified systematic sliver is written at its
    /// offset as it arrives and then dropped, so memory stays at the slivers in flight. Only when
    /// parity slivers had to stand in are the systematic rows read back for the decode. The
    /// file appears (by rename) only once the blob is complete and checked.
    pub async fn read_to_file(
        &self,
        id: &BlobId,
        path: &Path,
        progress: Option<ProgressFn>,
    ) -> Result<u64, ReadError> {
        use std::os::unix::fs::FileExt;
        let md = Arc::new(self.metadata(id).await?);
        let shape = md.shape()?;
        let (kp, row, len) = (
            shape.params.k_primary(),
            shape.primary_sliver_len(),
            shape.len as usize,
        );
        let tmp = path.with_file_name(format!(
            ".{}.floe-partial",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let io = |e: std::io::Error| ReadError::Io(format!("{}: {e}", tmp.display()));
        // read-write: the fallback path reads the systematic rows back
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io)?;
        file.set_len(len as u64).map_err(io)?;
        let mut parity = Vec::new();
        let mut written = Vec::new();
        let result = self
            .fetch_primary(id, &md, progress, |s| {
                let i = s.index as usize;
                if i < kp {
                    let at = i * row;
                    let end = (at + row).min(len);
                    if at < end {
                        file.write_all_at(&s.data[..end - at], at as u64)
                            .map_err(io)?;
                    }
                    written.push(i);
                } else {
                    parity.push(s);
                }
                Ok(())
            })
            .await;
        let finish = async {
            result?;
            if !parity.is_empty() {
                // read the systematic rows back and decode the missing ones
                let mut slivers = parity;
                for &i in &written {
                    let mut data = vec![0u8; row];
                    let at = i * row;
                    let end = (at + row).min(len);
                    if at < end {
                        file.read_exact_at(&mut data[..end - at], at as u64)
                            .map_err(io)?;
                    }
                    slivers.push(Sliver {
                        axis: Axis::Primary,
                        index: i as u16,
                        symbol_size: shape.symbol_size as u16,
                        data,
                    });
                }
                let blob = decode_blocking(id, md.clone(), slivers).await?;
                file.write_all_at(&blob, 0).map_err(io)?;
            }
            file.sync_all().map_err(io)?;
            std::fs::rename(&tmp, path)
                .map_err(|e| ReadError::Io(format!("{}: {e}", path.display())))?;
            Ok(len as u64)
        }
        .await;
        if finish.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        finish
    }

    /// Fetch k_p verified primary slivers of `id` (systematic first, falling back to parity on
    /// errors, timeouts and bad data) and hand each to `sink` as it arrives.
    async fn fetch_primary(
        &self,
        id: &BlobId,
        md: &Arc<BlobMetadata>,
        progress: Option<ProgressFn>,
        mut sink: impl FnMut(Sliver) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        let params = md.params()?;
        let (n, kp) = (params.n(), params.k_primary());
        let rot = id.mod_n(n);
        let view = self.view();
        let owners = view.committee.shard_owners();
        let prev_owners = view.previous.as_ref().map(|p| p.shard_owners());
        let sliver_bytes = md.shape()?.primary_sliver_len() as u64;
        let mut candidates = (0..n as u16).collect::<Vec<_>>().into_iter();
        let mut inflight = FuturesUnordered::new();
        let mut got = 0usize;
        let mut failures = Vec::new();
        let mut invalid_votes = 0usize;
        let fetch = |pair: u16| {
            let shard = params.shard_for_pair(pair as usize, rot);
            // the owner now, then (shards still moving) the owner in the previous epoch
            let mut holders: Vec<NodeClient> = Vec::new();
            if let Some(m) = owners.get(shard).copied().flatten() {
                holders.push(view.node(&view.committee.members[m]).clone());
            }
            if let (Some(prev), Some(po)) = (&view.previous, &prev_owners) {
                if let Some(m) = po.get(shard).copied().flatten() {
                    let node = view.node(&prev.members[m]).clone();
                    if holders.iter().all(|h| h.address() != node.address()) {
                        holders.push(node);
                    }
                }
            }
            let md = md.clone();
            let id = *id;
            async move {
                if holders.is_empty() {
                    return Err(format!("shard {shard} has no owner"));
                }
                let mut last = String::new();
                for node in holders {
                    let sliver = match node.get_sliver(&id, pair, Axis::Primary).await {
                        Ok(s) => s,
                        Err(e) => {
                            last = e.to_string();
                            continue;
                        }
                    };
                    let md = md.clone();
                    match tokio::task::spawn_blocking(move || sliver.verify(&md).map(|()| sliver))
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        Ok(s) => return Ok(s),
                        Err(e) => last = format!("{}: sliver {pair} rejected: {e}", node.address()),
                    }
                }
                Err(last)
            }
        };
        for pair in candidates
            .by_ref()
            .take(self.config.read_parallelism.clamp(1, kp))
        {
            inflight.push(fetch(pair));
        }
        while got < kp {
            let Some(r) = inflight.next().await else {
                if invalid_votes > 0 {
                    return Err(ReadError::Invalid(*id));
                }
                return Err(ReadError::NotEnoughSlivers {
                    got,
                    need: kp,
                    failures,
                });
            };
            match r {
                Ok(s) => {
                    sink(s)?;
                    got += 1;
                    if let Some(f) = &progress {
                        f(Progress::Bytes {
                            done: got as u64 * sliver_bytes,
                            total: kp as u64 * sliver_bytes,
                        });
                    }
                }
                Err(e) => {
                    if e.contains("invalid (inconsistently encoded)") {
                        invalid_votes += 1;
                    }
                    failures.push(e);
                }
            }
            // keep the pipeline full, never fetching more than still needed
            while got + inflight.len() < kp.min(got + self.config.read_parallelism.max(1)) {
                match candidates.next() {
                    Some(p) => inflight.push(fetch(p)),
                    None => break,
                }
            }
        }
        Ok(())
    }
}

async fn decode_blocking(
    id: &BlobId,
    md: Arc<BlobMetadata>,
    slivers: Vec<Sliver>,
) -> Result<Vec<u8>, ReadError> {
    let id = *id;
    tokio::task::spawn_blocking(move || decode_verified(&md, &slivers, ConsistencyCheck::Default))
        .await
        .map_err(|e| ReadError::Codec(CodecError::ReedSolomon(e.to_string())))?
        .map_err(|e| match e {
            CodecError::InconsistentEncoding => ReadError::Invalid(id),
            other => ReadError::Codec(other),
        })
}

/// The committee of the highest epoch any of `addresses` reports, and the one before it if the
/// node that reported it still knows it.
async fn newest_committee(
    addresses: &[String],
    max_message: usize,
) -> Result<(Committee, Option<Committee>), ClientError> {
    let clients: Vec<NodeClient> = addresses
        .iter()
        .map(|a| NodeClient::new(a, max_message))
        .collect::<Result<_, _>>()?;
    let answers = futures::future::join_all(clients.iter().map(|c| c.committee())).await;
    let mut best: Option<(Committee, &NodeClient)> = None;
    let mut last = None;
    for (a, c) in answers.into_iter().zip(&clients) {
        match a {
            Ok(com) if best.as_ref().is_none_or(|(b, _)| com.epoch > b.epoch) => {
                best = Some((com, c))
            }
            Ok(_) => {}
            Err(e) => last = Some(e),
        }
    }
    let Some((c, from)) = best else {
        return Err(last.unwrap_or_else(|| ClientError::Address {
            address: String::new(),
            message: "no node address given".into(),
        }));
    };
    let prev = if c.epoch > 1 {
        from.committee_of(c.epoch - 1).await.ok()
    } else {
        None
    };
    Ok((c, prev))
}

/// Retry `f` with exponential backoff (100 ms, 200 ms, …) on errors that may pass.
async fn retry<T, F, Fut>(attempts: u32, mut f: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut delay = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        tries += 1;
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let permanent = matches!(
                    e.code(),
                    Some(
                        tonic::Code::InvalidArgument
                            | tonic::Code::ResourceExhausted
                            | tonic::Code::Unauthenticated
                    )
                );
                if permanent || tries >= attempts {
                    return Err(e);
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

/// How one node's upload is paced.
#[derive(Clone, Copy)]
struct Pace {
    attempts: u32,
    /// Requests in flight to the node.
    parallel: usize,
    max_message: usize,
}

/// Upload metadata and every sliver of `pairs` to one node, then ask for its confirmation.
async fn upload_to(
    node: &NodeClient,
    enc: &EncodedBlob,
    pairs: &[u16],
    budget: &Semaphore,
    pace: Pace,
    on_bytes: impl Fn(u64),
) -> Result<Confirmation, ClientError> {
    let Pace {
        attempts,
        parallel,
        max_message,
    } = pace;
    let id = enc.blob_id();
    retry(attempts, || node.put_metadata(&id, enc.metadata())).await?;
    let on_bytes = &on_bytes;
    // The node's slivers go in PutSlivers batches (one commit on the node each), split so that
    // a request stays well under the message limit and the in-flight byte budget.
    let limit = (max_message / 2).clamp(1, PUT_SLIVERS_BYTES);
    let mut batches: Vec<Vec<(u16, Axis)>> = vec![Vec::new()];
    let mut bytes = 0usize;
    for p in pairs {
        for (axis, len) in [
            (Axis::Primary, enc.shape().primary_sliver_len()),
            (Axis::Secondary, enc.shape().secondary_sliver_len()),
        ] {
            let full = batches.last().is_some_and(|b| {
                !b.is_empty() && (bytes + len > limit || b.len() >= PUT_SLIVERS_BATCH)
            });
            if full {
                batches.push(Vec::new());
                bytes = 0;
            }
            bytes += len;
            if let Some(b) = batches.last_mut() {
                b.push((*p, axis));
            }
        }
    }
    let mut puts = futures::stream::iter(batches.into_iter().filter(|b| !b.is_empty()))
        .map(|jobs| async move {
            let slivers: Vec<(u16, Sliver)> = jobs
                .iter()
                .map(|(p, axis)| {
                    let s = match axis {
                        Axis::Primary => enc.primary_sliver(*p as usize),
                        Axis::Secondary => enc.secondary_sliver(enc.n() - 1 - *p as usize),
                    };
                    (*p, s)
                })
                .collect();
            let total: usize = slivers.iter().map(|(_, s)| s.data.len()).sum();
            let kib = (total >> 10).max(1).min(u32::MAX as usize) as u32;
            let _permit = budget
                .acquire_many(kib)
                .await
                .map_err(|e| ClientError::Invalid {
                    address: node.address().to_string(),
                    message: e.to_string(),
                })?;
            retry(attempts, || async {
                let items: Vec<(BlobId, u16, &Sliver)> =
                    slivers.iter().map(|(p, s)| (id, *p, s)).collect();
                let results = node.put_slivers(&items).await?;
                // the first refused item fails the batch (the retry resends it; stored ones
                // come back as already stored)
                for r in results {
                    r?;
                }
                Ok(())
            })
            .await?;
            on_bytes(total as u64);
            Ok::<_, ClientError>(())
        })
        .buffer_unordered(parallel);
    while let Some(r) = puts.next().await {
        r?;
    }
    retry(attempts, || node.get_confirmation(&id)).await
}
