//! Writing and reading whole blobs against a committee (PROTOCOL.md §4).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Semaphore;

use super::certify::Certifier;
use super::node::{ClientError, NodeClient};
use super::source::FileSource;
use crate::codec::{
    self, decode_verified, Axis, BlobId, BlobMetadata, BlobSource, CodecError, ConsistencyCheck,
    EncodedBlob, PairGroup, Sliver, StreamingEncoder, SymbolShape,
};
use crate::protocol::{Certificate, Committee, Confirmation, Gone, Member, NodeId, SignedLifetime};

/// Buys a blob's lifetime from the control plane once the blob is encoded (its ID and encoded
/// size are known) and before any node is sent anything. `client::control::AccountRegistrar`
/// is the one for an account's key; a network that sells no storage needs none.
pub trait Registrar: Send + Sync {
    fn register(
        &self,
        blob: BlobId,
        encoded_size: u64,
        epochs: u32,
        deletable: bool,
    ) -> futures::future::BoxFuture<'_, Result<SignedLifetime, String>>;
}

/// How long a blob is stored and whether its owner may delete it early (docs/economics.md).
#[derive(Clone, Default)]
pub struct PutOptions {
    /// Epochs to store it for, from the first billed epoch; none: the registrar's default.
    pub epochs: Option<u32>,
    /// The owner may delete it before it expires.
    pub deletable: bool,
    /// Registers the blob (required by networks whose committee carries a control key).
    pub registrar: Option<Arc<dyn Registrar>>,
}

/// Epochs a blob is stored for when the caller does not say (docs/economics.md: long enough to
/// outlive the epoch change `make demo` shows, short enough that test networks shed data).
pub const DEFAULT_EPOCHS: u32 = 5;

/// Knobs of the blob client; the defaults suit a local testnet and a LAN cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sliver bytes in flight across all nodes at once (bounds memory while uploading: reserved
    /// before a batch's slivers are produced).
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
    /// Blobs of at least this size are encoded by the streaming encoder (less memory, some
    /// more CPU: `docs/codec.md`); smaller ones in memory at once.
    pub stream_from_bytes: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            max_in_flight_bytes: 64 << 20,
            attempts: 3,
            grace: Duration::from_secs(2),
            max_message: 96 << 20,
            read_parallelism: 16,
            per_node_parallelism: 16,
            stream_from_bytes: 64 << 20,
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
    #[error("registering the blob: {0}")]
    Registration(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("blob {0} is unknown to every node asked")]
    NotFound(BlobId),
    #[error("blob {blob}: {}", match gone { Gone::Deleted => "deleted by its owner".to_string(), Gone::Expired { end_epoch } => format!("expired (stored until epoch {end_epoch})") })]
    Gone { blob: BlobId, gone: Gone },
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
    /// Too few nodes answered to tell whether the blob exists: try again later.
    #[error("blob {id} is temporarily unavailable: {reason}")]
    Unavailable { id: BlobId, reason: String },
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
    /// From the end of encoding to the start of the upload: buying the lifetime (and, after a
    /// committee change, the failed attempt).
    pub register_time: Duration,
    pub upload_time: Duration,
    pub total_time: Duration,
}

/// The committee a client writes to, the one before it (reads of blobs whose shards are still
/// moving fall back to their previous owners, PROTOCOL.md §6), and a connection per member.
struct View {
    committee: Committee,
    previous: Option<Committee>,
    nodes: HashMap<NodeId, NodeClient>,
    /// Batching certificate senders, one per node, started on first use.
    certifiers: std::sync::Mutex<HashMap<NodeId, Arc<Certifier>>>,
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
                e.insert(NodeClient::for_node(&m.address, m.node_id, max_message)?);
            }
        }
        Ok(Self {
            committee,
            previous,
            nodes,
            certifiers: Default::default(),
        })
    }

    /// The certificate sender of `id` (a member of this view).
    fn certifier(&self, id: NodeId, attempts: u32) -> Option<Arc<Certifier>> {
        let node = self.nodes.get(&id)?;
        let mut c = self.certifiers.lock().unwrap_or_else(|p| p.into_inner());
        Some(
            c.entry(id)
                .or_insert_with(|| Arc::new(Certifier::start(node.clone(), attempts)))
                .clone(),
        )
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
    /// newer epoch meanwhile, the upload is repeated against the new committee. Blobs of at
    /// least [`ClientConfig::stream_from_bytes`] go through the streaming encoder in four pair
    /// groups (peak memory about 2.3× the blob, the blob included, instead of 4.7×).
    pub async fn write(
        &self,
        data: Vec<u8>,
        progress: Option<ProgressFn>,
    ) -> Result<WriteOutcome, WriteError> {
        self.write_with(data, &PutOptions::default(), progress)
            .await
    }

    /// [`Self::write`] with a lifetime bought through `opts.registrar`.
    pub async fn write_with(
        &self,
        data: Vec<u8>,
        opts: &PutOptions,
        progress: Option<ProgressFn>,
    ) -> Result<WriteOutcome, WriteError> {
        let params = self.view().committee.params();
        let stream = data.len() as u64 >= self.config.stream_from_bytes;
        let size = data.len() as u64;
        self.write_encoded(size, opts, progress, move || {
            if stream {
                Ok(Encoded::Streamed(Arc::new(StreamingEncoder::new(
                    Box::new(data),
                    params,
                    GROUPS_IN_MEMORY,
                )?)))
            } else {
                Ok(Encoded::Compact(Arc::new(codec::encode(&data, params)?)))
            }
        })
        .await
    }

    /// [`Self::write`] of a file. Large files are read in pieces and never held: the streaming
    /// encoder in two pair groups keeps `Q` and half of `P` (about 1.8× the blob at n = 1000).
    pub async fn write_file(
        &self,
        path: &Path,
        progress: Option<ProgressFn>,
    ) -> Result<WriteOutcome, WriteError> {
        self.write_file_with(path, &PutOptions::default(), progress)
            .await
    }

    /// [`Self::write_file`] with a lifetime bought through `opts.registrar`.
    pub async fn write_file_with(
        &self,
        path: &Path,
        opts: &PutOptions,
        progress: Option<ProgressFn>,
    ) -> Result<WriteOutcome, WriteError> {
        let source = FileSource::open(path).map_err(|e| CodecError::Source(e.to_string()))?;
        let size = source.len();
        if size < self.config.stream_from_bytes {
            let data = tokio::fs::read(path)
                .await
                .map_err(|e| CodecError::Source(e.to_string()))?;
            return self.write_with(data, opts, progress).await;
        }
        let params = self.view().committee.params();
        self.write_encoded(size, opts, progress, move || {
            Ok(Encoded::Streamed(Arc::new(StreamingEncoder::new(
                Box::new(source),
                params,
                GROUPS_FROM_FILE,
            )?)))
        })
        .await
    }

    async fn write_encoded(
        &self,
        size: u64,
        opts: &PutOptions,
        progress: Option<ProgressFn>,
        encode: impl FnOnce() -> Result<Encoded, CodecError> + Send + 'static,
    ) -> Result<WriteOutcome, WriteError> {
        let start = Instant::now();
        let report = |p: Progress| {
            if let Some(f) = &progress {
                f(p)
            }
        };
        let enc = tokio::task::spawn_blocking(encode)
            .await
            .map_err(|e| WriteError::Committee(e.to_string()))??;
        let encode_time = start.elapsed();
        report(Progress::Encoded {
            encoded_bytes: enc.encoded_size(),
            elapsed: encode_time,
        });
        let lifetime = match &opts.registrar {
            Some(r) => Some(
                r.register(
                    enc.blob_id(),
                    enc.encoded_size(),
                    opts.epochs.unwrap_or(DEFAULT_EPOCHS),
                    opts.deletable,
                )
                .await
                .map_err(WriteError::Registration)?,
            ),
            None => None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let view = self.view();
            match self
                .upload(
                    &view,
                    &enc,
                    lifetime.as_ref(),
                    start,
                    encode_time,
                    size,
                    progress.clone(),
                )
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

    /// One upload of an encoded blob to the committee of `view`, pair group by pair group
    /// (one group unless streamed); confirmations are asked for with the last group.
    #[allow(clippy::too_many_arguments)]
    async fn upload(
        &self,
        view: &View,
        enc: &Encoded,
        lifetime: Option<&SignedLifetime>,
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
        let n = params.n();
        let encoded_size = enc.encoded_size();
        let id = enc.blob_id();
        let rot = id.mod_n(n);

        let budget = Arc::new(Semaphore::new(self.config.max_in_flight_bytes.max(1) >> 10));
        let done_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let upload_start = Instant::now();
        let mut failures = Vec::new();
        // members that failed an earlier group are not sent the later ones
        let mut failed: std::collections::HashSet<NodeId> = Default::default();
        let groups = enc.groups();
        let mut tasks = FuturesUnordered::new();
        for g in 0..groups {
            let slivers = enc.group(g).await?;
            let in_group = enc.group_pairs(g);
            let last = g + 1 == groups;
            tasks = view
                .committee
                .members
                .iter()
                .filter(|m| !m.shards.is_empty() && !failed.contains(&m.node_id))
                .map(|m| {
                    let node = view.node(m).clone();
                    let pairs: Vec<u16> = m
                        .shards
                        .iter()
                        .map(|s| params.pair_for_shard(*s as usize, rot))
                        .filter(|p| in_group.contains(p))
                        .map(|p| p as u16)
                        .collect();
                    let slivers = slivers.clone();
                    let budget = budget.clone();
                    let done_bytes = done_bytes.clone();
                    let progress = progress.clone();
                    let attempts = self.config.attempts;
                    let parallel = self.config.per_node_parallelism.max(1);
                    let (weight, node_id) = (m.shards.len(), m.node_id);
                    let max_message = self.config.max_message;
                    let lifetime = lifetime.copied();
                    async move {
                        let on_bytes = |b| {
                            let d =
                                done_bytes.fetch_add(b, std::sync::atomic::Ordering::Relaxed) + b;
                            if let Some(f) = &progress {
                                f(Progress::Bytes {
                                    done: d,
                                    total: encoded_size,
                                });
                            }
                        };
                        let r = upload_to(
                            &node,
                            &*slivers,
                            lifetime.as_ref(),
                            &pairs,
                            &budget,
                            attempts,
                            parallel,
                            max_message,
                            on_bytes,
                            last,
                        )
                        .await;
                        (node, node_id, weight, r)
                    }
                })
                .collect();
            if last {
                break;
            }
            while let Some((node, node_id, _, r)) = tasks.next().await {
                match r {
                    Ok(_) => {}
                    Err(UploadError::Local(e)) => return Err(e.into()),
                    Err(UploadError::Node(e)) => {
                        tracing::debug!(node = node.address(), "upload failed: {e}");
                        failures.push(e.to_string());
                        failed.insert(node_id);
                    }
                }
            }
        }

        let quorum = params.quorum_weight();
        let mut confirmations: Vec<(Confirmation, usize)> = Vec::new();
        let mut confirmed = 0usize;
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
            let Some((node, _, weight, result)) = next else {
                break;
            };
            match result {
                Ok(Some(conf)) if conf.epoch == view.committee.epoch => {
                    confirmations.push((conf, weight));
                    confirmed += weight;
                    report(Progress::Confirmed {
                        shards: confirmed,
                        quorum,
                    });
                    if quorum_at.is_none() && params.is_quorum(confirmed) {
                        quorum_at = Some(Instant::now());
                    }
                }
                Ok(Some(conf)) => failures.push(format!(
                    "{}: confirmed epoch {} instead of {}",
                    node.address(),
                    conf.epoch,
                    view.committee.epoch
                )),
                Ok(None) => {}
                Err(UploadError::Local(e)) => return Err(e.into()),
                Err(UploadError::Node(e)) => failures.push(e.to_string()),
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
        // the certificate carries the first confirmations that reach a quorum, not every one
        // that came: each signature is verified by every node, so fewer is cheaper for all
        let mut weight = 0;
        let signers = confirmations
            .iter()
            .take_while(|(_, w)| {
                let more = !params.is_quorum(weight);
                weight += w;
                more
            })
            .map(|(c, _)| (c.node_id, c.signature))
            .collect();
        let cert = Certificate {
            epoch: view.committee.epoch,
            blob_id: id,
            signers,
        };
        // through each node's batching sender: concurrent puts share a call and a commit
        let certified_nodes = futures::future::join_all(view.nodes.keys().map(|id| {
            let (cert, certifier) = (cert.clone(), view.certifier(*id, self.config.attempts));
            async move {
                match certifier {
                    Some(c) => c.certify(cert).await.is_ok(),
                    None => false,
                }
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
            register_time: upload_start
                .duration_since(start)
                .saturating_sub(encode_time),
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
            let mut gone = None;
            while let Some(r) = calls.next().await {
                match r {
                    Ok(md) => return Ok(md),
                    Err(ClientError::Gone { gone: g, .. }) => gone = Some(g),
                    Err(_) => {}
                }
            }
            if let Some(gone) = gone {
                return Err(ReadError::Gone { blob: *id, gone });
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
            fetch_verified_primary(&view, &owners, prev_owners.as_deref(), id, md, pair, rot)
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

/// One verified primary sliver of `id`: from its shard's owner now, then (shards still moving)
/// from the owner in the previous epoch. The future owns what it needs, so many can run at once.
fn fetch_verified_primary(
    view: &View,
    owners: &[Option<usize>],
    prev_owners: Option<&[Option<usize>]>,
    id: &BlobId,
    md: &Arc<BlobMetadata>,
    pair: u16,
    rot: usize,
) -> impl std::future::Future<Output = Result<Sliver, String>> + Send + 'static {
    let shard = (pair as usize + rot) % md.n().max(1);
    let mut holders: Vec<NodeClient> = Vec::new();
    if let Some(m) = owners.get(shard).copied().flatten() {
        holders.push(view.node(&view.committee.members[m]).clone());
    }
    if let (Some(prev), Some(po)) = (&view.previous, prev_owners) {
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
}

impl BlobClient {
    /// One verified primary sliver of `id` (row `pair` of the blob when `pair < k_p`).
    pub(super) fn primary_sliver(
        &self,
        id: &BlobId,
        md: &Arc<BlobMetadata>,
        pair: u16,
    ) -> impl std::future::Future<Output = Result<Sliver, String>> + Send + 'static {
        let view = self.view();
        let rot = id.mod_n(md.n());
        let owners = view.committee.shard_owners();
        let prev_owners = view.previous.as_ref().map(|p| p.shard_owners());
        fetch_verified_primary(&view, &owners, prev_owners.as_deref(), id, md, pair, rot)
    }

    /// Every member of the committees this client knows, for questions asked of all of them.
    pub(super) fn members(&self) -> Vec<(NodeClient, usize)> {
        let view = self.view();
        view.committee
            .members
            .iter()
            .map(|m| (view.node(m).clone(), m.shards.len()))
            .collect()
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
pub(super) async fn retry<T, F, Fut>(attempts: u32, mut f: F) -> Result<T, ClientError>
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
                            | tonic::Code::PermissionDenied
                            | tonic::Code::OutOfRange
                            | tonic::Code::Unimplemented
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

/// Pair groups of a streamed write whose blob is held in memory (`Q` + `P`/4 + the blob ≈ 2.3×)
/// or read from a file (`Q` + `P`/2 ≈ 1.8×); each group after the first costs one more pass of
/// `P`'s Reed–Solomon work (`docs/codec.md`).
const GROUPS_IN_MEMORY: usize = 4;
/// Most bytes and most slivers in one `PutSlivers` request (the node takes up to 4096 items):
/// enough to amortise a request and a commit, small enough to pipeline and keep memory low.
const BATCH_BYTES: usize = 4 << 20;
const PUT_SLIVERS_BATCH: usize = 1024;
const GROUPS_FROM_FILE: usize = 2;

/// A blob encoded for upload: the compact in-memory form, or the streaming encoder whose pair
/// groups are produced one at a time.
enum Encoded {
    Compact(Arc<EncodedBlob>),
    Streamed(Arc<StreamingEncoder>),
}

impl Encoded {
    fn blob_id(&self) -> BlobId {
        match self {
            Encoded::Compact(e) => e.blob_id(),
            Encoded::Streamed(e) => e.blob_id(),
        }
    }
    fn encoded_size(&self) -> u64 {
        let shape = match self {
            Encoded::Compact(e) => *e.shape(),
            Encoded::Streamed(e) => *e.shape(),
        };
        (shape.params.n() * (shape.primary_sliver_len() + shape.secondary_sliver_len())) as u64
    }
    fn groups(&self) -> usize {
        match self {
            Encoded::Compact(_) => 1,
            Encoded::Streamed(e) => e.groups(),
        }
    }
    fn group_pairs(&self, g: usize) -> std::ops::Range<usize> {
        match self {
            Encoded::Compact(e) => 0..e.n(),
            Encoded::Streamed(e) => e.group_pairs(g),
        }
    }
    /// The slivers of group `g` (computed off the async threads when streamed).
    async fn group(&self, g: usize) -> Result<Arc<dyn SliverSource>, WriteError> {
        match self {
            Encoded::Compact(e) => Ok(e.clone()),
            Encoded::Streamed(e) => {
                let e = e.clone();
                let group = tokio::task::spawn_blocking(move || e.group(g))
                    .await
                    .map_err(|e| WriteError::Committee(e.to_string()))??;
                Ok(Arc::new(group))
            }
        }
    }
}

/// What an upload to one node reads its slivers from.
trait SliverSource: Send + Sync {
    fn blob_id(&self) -> BlobId;
    fn shape(&self) -> SymbolShape;
    fn metadata(&self) -> &BlobMetadata;
    fn n(&self) -> usize;
    fn primary(&self, i: usize) -> Result<Sliver, CodecError>;
    fn secondary(&self, j: usize) -> Result<Sliver, CodecError>;
}

impl SliverSource for EncodedBlob {
    fn blob_id(&self) -> BlobId {
        EncodedBlob::blob_id(self)
    }
    fn shape(&self) -> SymbolShape {
        *EncodedBlob::shape(self)
    }
    fn metadata(&self) -> &BlobMetadata {
        EncodedBlob::metadata(self)
    }
    fn n(&self) -> usize {
        EncodedBlob::n(self)
    }
    fn primary(&self, i: usize) -> Result<Sliver, CodecError> {
        Ok(self.primary_sliver(i))
    }
    fn secondary(&self, j: usize) -> Result<Sliver, CodecError> {
        Ok(self.secondary_sliver(j))
    }
}

impl SliverSource for PairGroup {
    fn blob_id(&self) -> BlobId {
        self.encoder().blob_id()
    }
    fn shape(&self) -> SymbolShape {
        *self.encoder().shape()
    }
    fn metadata(&self) -> &BlobMetadata {
        self.encoder().metadata()
    }
    fn n(&self) -> usize {
        self.encoder().n()
    }
    fn primary(&self, i: usize) -> Result<Sliver, CodecError> {
        self.primary_sliver(i)
    }
    fn secondary(&self, j: usize) -> Result<Sliver, CodecError> {
        self.secondary_sliver(j)
    }
}

/// Why an upload to one node stopped: the node, or this side (the blob's source).
enum UploadError {
    Node(ClientError),
    Local(CodecError),
}

impl From<ClientError> for UploadError {
    fn from(e: ClientError) -> Self {
        UploadError::Node(e)
    }
}

/// Reserve a batch's bytes from the in-flight budget, then produce its slivers: its size, the
/// reservation (held until the batch is sent) and the slivers.
async fn produce<'a>(
    node: &NodeClient,
    enc: &dyn SliverSource,
    budget: &'a Semaphore,
    jobs: &[(u16, Axis)],
    len: impl Fn(Axis) -> usize,
) -> Result<(usize, tokio::sync::SemaphorePermit<'a>, Vec<(u16, Sliver)>), UploadError> {
    let total: usize = jobs.iter().map(|(_, axis)| len(*axis)).sum();
    let kib = (total >> 10).max(1).min(u32::MAX as usize) as u32;
    let permit = budget
        .acquire_many(kib)
        .await
        .map_err(|e| ClientError::Invalid {
            address: node.address().to_string(),
            message: e.to_string(),
        })?;
    let slivers = jobs
        .iter()
        .map(|(p, axis)| {
            let s = match axis {
                Axis::Primary => enc.primary(*p as usize),
                Axis::Secondary => enc.secondary(enc.n() - 1 - *p as usize),
            }?;
            Ok((*p, s))
        })
        .collect::<Result<Vec<(u16, Sliver)>, CodecError>>()
        .map_err(UploadError::Local)?;
    Ok((total, permit, slivers))
}

/// Upload metadata and every sliver of `pairs` to one node; with `confirm`, then ask for its
/// confirmation. Slivers go in `PutSlivers` batches of at most [`BATCH_BYTES`] (one commit on
/// the node each); a batch's bytes are reserved from the in-flight budget *before* its slivers
/// are produced, so the budget bounds the client's memory.
#[allow(clippy::too_many_arguments)]
async fn upload_to(
    node: &NodeClient,
    enc: &dyn SliverSource,
    lifetime: Option<&SignedLifetime>,
    pairs: &[u16],
    budget: &Semaphore,
    attempts: u32,
    parallel: usize,
    max_message: usize,
    on_bytes: impl Fn(u64),
    confirm: bool,
) -> Result<Option<Confirmation>, UploadError> {
    let id = enc.blob_id();
    let on_bytes = &on_bytes;
    let shape = enc.shape();
    let len = |axis: Axis| match axis {
        Axis::Primary => shape.primary_sliver_len(),
        Axis::Secondary => shape.secondary_sliver_len(),
    };
    let limit = BATCH_BYTES.min(max_message / 2).max(1);
    let mut batches: Vec<Vec<(u16, Axis)>> = vec![Vec::new()];
    let mut bytes = 0usize;
    for p in pairs {
        for axis in [Axis::Primary, Axis::Secondary] {
            let full = batches.last().is_some_and(|b| {
                !b.is_empty() && (bytes + len(axis) > limit || b.len() >= PUT_SLIVERS_BATCH)
            });
            if full {
                batches.push(Vec::new());
                bytes = 0;
            }
            bytes += len(axis);
            if let Some(b) = batches.last_mut() {
                b.push((*p, axis));
            }
        }
    }
    // a small blob (every sliver of this node in one batch): metadata, slivers and the
    // confirmation in one round trip; a node without `StoreBlob` gets the three calls
    if confirm && batches.len() == 1 {
        let (total, _permit, slivers) = produce(node, enc, budget, &batches[0], len).await?;
        let stored = retry(attempts, || async {
            let items: Vec<(u16, &Sliver)> = slivers.iter().map(|(p, s)| (*p, s)).collect();
            let (results, conf) = node
                .store_blob(&id, enc.metadata(), lifetime, &items, true)
                .await?;
            // the first refused item fails the call (the retry resends it)
            for r in results {
                r?;
            }
            conf.ok_or_else(|| ClientError::Invalid {
                address: node.address().to_string(),
                message: "every sliver stored but no confirmation".into(),
            })
        })
        .await;
        match stored {
            Ok(conf) => {
                on_bytes(total as u64);
                return Ok(Some(conf));
            }
            Err(e) if e.code() == Some(tonic::Code::Unimplemented) => {}
            Err(e) => return Err(e.into()),
        }
    }
    retry(attempts, || {
        node.put_metadata_with(&id, enc.metadata(), lifetime)
    })
    .await?;
    let mut puts = futures::stream::iter(batches.into_iter().filter(|b| !b.is_empty()))
        .map(|jobs| async move {
            let (total, _permit, slivers) = produce(node, enc, budget, &jobs, len).await?;
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
            Ok::<_, UploadError>(())
        })
        .buffer_unordered(parallel);
    while let Some(r) = puts.next().await {
        r?;
    }
    if !confirm {
        return Ok(None);
    }
    Ok(Some(retry(attempts, || node.get_confirmation(&id)).await?))
}
