//! The public gRPC service (PROTOCOL.md §4, §5): everything clients and peers call.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::challenge;
use super::config::Fault;
use super::lifetimes;
use super::state::NodeState;
use crate::codec::{recovery_symbols, Axis, BlobId, BlobMetadata, MerkleTree, Sliver};
use crate::proto::{self, storage_server::Storage};
use crate::protocol::{verify_certificate, Certificate, Confirmation, SignedLifetime, SyncRequest};
use crate::store::StoreError;

/// Largest page of ListCertified.
const LIST_LIMIT: usize = 1000;
/// Most slivers in one PutSlivers request.
pub const PUT_SLIVERS_MAX: usize = 4096;
/// Most certificates one `PutCertificates` request may carry.
pub const PUT_CERTIFICATES_MAX: usize = 1024;

/// Largest `GetRecoverySymbols` answer (also never more than the message limit): a request
/// whose answer would be larger is refused before any work, with the number of targets that
/// would fit.
pub const RECOVERY_ANSWER_CAP: usize = 16 << 20;

pub fn recovery_answer_cap(max_message: usize) -> usize {
    RECOVERY_ANSWER_CAP
        .min(max_message.saturating_sub(64 << 10))
        .max(1 << 16)
}

/// Upper bound of the encoded size of `helpers × targets` recovery symbols of a blob of `shape`
/// (symbol, Merkle proof, wire and protobuf framing).
pub fn recovery_answer_bytes(
    shape: &crate::codec::SymbolShape,
    helpers: usize,
    targets: usize,
) -> usize {
    let n = shape.params.n();
    let depth = usize::BITS as usize - n.next_power_of_two().leading_zeros() as usize;
    let one = 32 + shape.symbol_size + 32 * (depth + 2);
    helpers.saturating_mul(targets).saturating_mul(one)
}
/// Most blobs in one SyncShard page (pages are also capped in bytes).
const SYNC_PAGE_BLOBS: usize = 256;

/// A blob whose slivers are being checked: its metadata and the pairs this node owns.
struct SliverTarget {
    id: BlobId,
    md: Arc<BlobMetadata>,
    owned: Vec<u16>,
}

/// A sliver that passed the checks before verification.
type CheckedSliver = (BlobId, u16, Sliver, Arc<BlobMetadata>);
/// A verified sliver, with the Merkle tree its verification built (for large slivers).
type VerifiedSliver = (BlobId, u16, Sliver, Option<MerkleTree>);

impl SliverTarget {
    /// The checks of a sliver before its (costlier) verification: pair in range and owned
    /// here, sliver decodes and belongs to the pair.
    fn check(&self, req: proto::PutSliverRequest) -> Result<CheckedSliver, Status> {
        let n = self.md.n();
        let pair = u16::try_from(req.pair_index)
            .ok()
            .filter(|p| (*p as usize) < n)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "pair_index {} out of range for {n} shards",
                    req.pair_index
                ))
            })?;
        if !self.owned.contains(&pair) {
            return Err(Status::failed_precondition(format!(
                "pair {pair} of blob {} belongs to another node's shard",
                self.id
            )));
        }
        let sliver = Sliver::from_bytes(&req.sliver)
            .map_err(|e| Status::invalid_argument(format!("sliver: {e}")))?;
        let expected = match sliver.axis {
            Axis::Primary => pair as usize,
            Axis::Secondary => n - 1 - pair as usize,
        };
        if sliver.index as usize != expected {
            return Err(Status::invalid_argument(format!(
                "{:?} sliver {} is not part of pair {pair} (expected index {expected})",
                sliver.axis, sliver.index
            )));
        }
        Ok((self.id, pair, sliver, self.md.clone()))
    }
}

/// Below this many sliver bytes a request's slivers are verified on the calling thread: handing
/// a small job to the rayon pool (a wakeup, a steal, the idle workers' spinning) costs more
/// than the hashing it would spread, and small blobs arrive many at a time anyway.
const PARALLEL_VERIFY_BYTES: usize = 256 << 10;

/// Verify checked slivers against their metadata (in parallel when there is enough of them).
fn verify_slivers(
    st: &NodeState,
    checked: Vec<Result<CheckedSliver, Status>>,
) -> Vec<Result<VerifiedSliver, Status>> {
    let t = Instant::now();
    let one = |c: Result<CheckedSliver, Status>| {
        let (id, pair, sliver, md) = c?;
        let tree = challenge::verify_for_store(&sliver, &md)
            .map_err(|e| Status::invalid_argument(format!("sliver rejected: {e}")))?;
        Ok((id, pair, sliver, tree))
    };
    let bytes: usize = checked
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .map(|(_, _, s, _)| s.data.len())
        .sum();
    let verified = if bytes < PARALLEL_VERIFY_BYTES {
        checked.into_iter().map(one).collect()
    } else {
        use rayon::prelude::*;
        checked.into_par_iter().map(one).collect()
    };
    st.metrics
        .sliver_stage
        .with_label_values(&["verify"])
        .observe(t.elapsed().as_secs_f64());
    verified
}

/// The verified slivers, as the store takes them.
fn good_slivers(
    verified: &[Result<VerifiedSliver, Status>],
) -> Vec<(BlobId, u16, &Sliver, Option<&MerkleTree>)> {
    verified
        .iter()
        .filter_map(|v| {
            v.as_ref()
                .ok()
                .map(|(id, p, s, tree)| (*id, *p, s, tree.as_ref()))
        })
        .collect()
}

/// Each item's answer: its check's or verification's refusal, else what the store did.
fn sliver_results(
    verified: &[Result<VerifiedSliver, Status>],
    stored: &mut impl Iterator<Item = Result<bool, StoreError>>,
) -> Vec<proto::PutSliverResult> {
    verified
        .iter()
        .map(|v| {
            let (code, message, already_stored) = item_outcome(v, stored);
            proto::PutSliverResult {
                code,
                message,
                already_stored,
            }
        })
        .collect()
}

pub struct StorageService {
    pub state: Arc<NodeState>,
}

pub(crate) fn blob_id(bytes: &[u8]) -> Result<BlobId, Status> {
    BlobId::from_slice(bytes).map_err(|e| Status::invalid_argument(format!("blob_id: {e}")))
}

pub(crate) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Full { .. } | StoreError::UncertifiedFull { .. } | StoreError::DiskFull(_) => {
            Status::resource_exhausted(e.to_string())
        }
        StoreError::Corrupt(_) => Status::data_loss(format!("{e}; the node is rebuilding it")),
        _ => Status::internal(e.to_string()),
    }
}

/// Run blocking work (disk I/O, hashing, Reed–Solomon) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("task failed: {e}")))?
}

/// A certificate as sent, parsed and checked against the committee of its epoch (what
/// `PutCertificate` and each item of `PutCertificates` must pass before it is stored).
fn check_certificate(state: &NodeState, c: proto::Certificate) -> Result<Certificate, Status> {
    let cert = Certificate::try_from(c).map_err(Status::invalid_argument)?;
    let committee = state.committee_of(cert.epoch).ok_or_else(|| {
        Status::failed_precondition(format!(
            "certificate epoch {} is unknown to this node",
            cert.epoch
        ))
    })?;
    verify_certificate(&committee, &cert)
        .map_err(|e| Status::invalid_argument(format!("certificate: {e}")))?;
    Ok(cert)
}

/// One item of a batch as its result carries it (gRPC code, message, "already there"): an item
/// refused when checked keeps its refusal; an accepted one takes the store's next answer.
fn item_outcome<T>(
    checked: &Result<T, Status>,
    stored: &mut impl Iterator<Item = Result<bool, StoreError>>,
) -> (u32, String, bool) {
    let r = match checked {
        Ok(_) => match stored.next() {
            Some(r) => r.map_err(store_status),
            None => Err(Status::internal("store gave no answer")),
        },
        Err(s) => Err(s.clone()),
    };
    match r {
        Ok(already) => (0, String::new(), already),
        Err(s) => (s.code() as u32, s.message().to_string(), false),
    }
}

/// Count and time one RPC under its method name.
pub(crate) async fn metered<T>(
    state: &NodeState,
    method: &'static str,
    fut: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let start = Instant::now();
    let result = fut.await;
    let code = match &result {
        Ok(_) => "Ok".to_string(),
        Err(s) => format!("{:?}", s.code()),
    };
    state
        .metrics
        .requests
        .with_label_values(&[method, &code])
        .inc();
    state
        .metrics
        .latency
        .with_label_values(&[method])
        .observe(start.elapsed().as_secs_f64());
    if let Err(s) = &result {
        tracing::debug!(method, code = %code, message = s.message(), "request refused");
    }
    result.map(Response::new)
}

impl StorageService {
    fn writable(&self) -> Result<(), Status> {
        if self.state.accepting_writes.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(Status::unavailable(
                "node is shutting down and accepts no new writes",
            ))
        }
    }

    fn metadata(&self, id: &BlobId) -> Result<Arc<BlobMetadata>, Status> {
        self.state
            .store
            .metadata(id)
            .ok_or_else(|| Status::not_found(format!("no metadata for blob {id}")))
    }

    /// What a sliver of `id` is checked against before its (costlier) verification: the
    /// metadata held, the blob still writable, the pairs this node owns.
    fn sliver_target(&self, id: BlobId) -> Result<SliverTarget, Status> {
        let md = self.metadata(&id).map_err(|_| {
            Status::failed_precondition(format!(
                "send the metadata of blob {id} before its slivers"
            ))
        })?;
        lifetimes::check_writable(&self.state, &id)?;
        Ok(SliverTarget {
            id,
            owned: self.state.owned_pairs(&id),
            md,
        })
    }

    fn info(&self) -> proto::NodeInfo {
        let st = &self.state;
        let c = st.committee();
        proto::NodeInfo {
            node_id: st.node_id.0.to_vec(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            epoch: c.as_ref().map_or(0, |c| c.epoch),
            shards: st.my_shards().into_iter().map(u32::from).collect(),
            status: st.status() as i32,
            n_shards: c.as_ref().map_or(0, |c| c.n_shards as u32),
            stored_bytes: st.store.used_bytes(),
            blobs: st.store.blob_count() as u64,
            recovery_backlog: st.recovery_backlog.load(Ordering::Relaxed),
            accepting_writes: st.accepting_writes.load(Ordering::Relaxed),
            admin_port: st.admin_port.load(Ordering::Relaxed),
            lifetime_seq: st.store.lifetime_seq(),
            storage_price_vote: st.config.storage_price,
            write_price_vote: st.config.write_price,
        }
    }

    /// Metadata as sent: parsed, matching the blob ID, for the committee's number of shards.
    fn checked_metadata(&self, id: &BlobId, bytes: &[u8]) -> Result<BlobMetadata, Status> {
        let md = BlobMetadata::from_bytes(bytes)
            .map_err(|e| Status::invalid_argument(format!("metadata: {e}")))?;
        md.verify(id)
            .map_err(|e| Status::invalid_argument(format!("metadata: {e}")))?;
        if let Some(c) = self.state.committee() {
            if md.n() != c.n_shards as usize {
                return Err(Status::invalid_argument(format!(
                    "metadata is for {} shards, the committee has {}",
                    md.n(),
                    c.n_shards
                )));
            }
        }
        Ok(md)
    }

    /// A lifetime sent with metadata: signed by the control key (unless these bytes are held
    /// already) and billing what this blob encodes to. `Some` when it is to be stored.
    fn checked_lifetime(
        &self,
        id: &BlobId,
        md: &BlobMetadata,
        bytes: &[u8],
    ) -> Result<Option<SignedLifetime>, Status> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let (l, held) = lifetimes::verify_unless_held(&self.state, bytes)?;
        let shape = md
            .shape()
            .map_err(|e| Status::invalid_argument(format!("metadata: {e}")))?;
        l.is_for(id, crate::protocol::encoded_size(&shape))
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        Ok((!held).then_some(l))
    }

    async fn do_put_metadata(
        &self,
        req: Request<proto::PutMetadataRequest>,
    ) -> Result<proto::PutMetadataResponse, Status> {
        self.writable()?;
        let req = req.into_inner();
        let id = blob_id(&req.blob_id)?;
        let md = self.checked_metadata(&id, &req.metadata)?;
        if let Some(l) = self.checked_lifetime(&id, &md, &req.lifetime)? {
            let st = self.state.clone();
            blocking(move || lifetimes::store(&st, &[l]).map(|_| ())).await?;
        }
        lifetimes::check_writable(&self.state, &id)?;
        let st = self.state.clone();
        let already =
            blocking(move || st.store.put_metadata(id, &md).map_err(store_status)).await?;
        Ok(proto::PutMetadataResponse {
            already_stored: already,
        })
    }

    async fn do_put_slivers(
        &self,
        req: Request<proto::PutSliversRequest>,
    ) -> Result<proto::PutSliversResponse, Status> {
        self.writable()?;
        let items = req.into_inner().items;
        if items.len() > PUT_SLIVERS_MAX {
            return Err(Status::invalid_argument(format!(
                "{} slivers in one request, at most {PUT_SLIVERS_MAX}",
                items.len()
            )));
        }
        // each blob's metadata, lifetime and owned pairs looked up once, not once per sliver
        let mut targets: std::collections::HashMap<BlobId, Result<SliverTarget, Status>> =
            Default::default();
        let checked: Vec<Result<_, Status>> = items
            .into_iter()
            .map(|i| {
                let id = blob_id(&i.blob_id)?;
                let target = targets
                    .entry(id)
                    .or_insert_with(|| self.sliver_target(id))
                    .as_ref()
                    .map_err(Clone::clone)?;
                target.check(i)
            })
            .collect();
        let st = self.state.clone();
        let results = blocking(move || {
            let verified = verify_slivers(&st, checked);
            let t = Instant::now();
            let mut stored = st
                .store
                .put_slivers_with_trees(&good_slivers(&verified))
                .into_iter();
            st.metrics
                .sliver_stage
                .with_label_values(&["persist"])
                .observe(t.elapsed().as_secs_f64());
            Ok(sliver_results(&verified, &mut stored))
        })
        .await?;
        Ok(proto::PutSliversResponse { results })
    }

    /// StoreBlob: a blob's whole upload to this node — lifetime, metadata, slivers — checked,
    /// then stored in one commit; the confirmation is signed without reading back what was
    /// just written when the request carried every sliver this node owns of the blob.
    async fn do_store_blob(
        &self,
        r: proto::StoreBlobRequest,
    ) -> Result<proto::StoreBlobResponse, Status> {
        self.writable()?;
        if r.slivers.len() > PUT_SLIVERS_MAX {
            return Err(Status::invalid_argument(format!(
                "{} slivers in one request, at most {PUT_SLIVERS_MAX}",
                r.slivers.len()
            )));
        }
        let id = blob_id(&r.blob_id)?;
        let md = Arc::new(self.checked_metadata(&id, &r.metadata)?);
        let lifetime = self.checked_lifetime(&id, &md, &r.lifetime)?;
        lifetimes::check_writable_with(&self.state, &id, lifetime.as_ref())?;
        let target = SliverTarget {
            id,
            owned: self.state.owned_pairs(&id),
            md: md.clone(),
        };
        let checked: Vec<Result<_, Status>> = r
            .slivers
            .into_iter()
            .map(|i| {
                if blob_id(&i.blob_id)? != id {
                    return Err(Status::invalid_argument(format!(
                        "a sliver of another blob in the StoreBlob request of {id}"
                    )));
                }
                target.check(i)
            })
            .collect();
        let st = self.state.clone();
        let (results, complete) = blocking(move || {
            let verified = verify_slivers(&st, checked);
            let t = Instant::now();
            let put = st
                .store
                .put_blob(id, lifetime.as_ref(), &md, &good_slivers(&verified));
            st.metrics
                .sliver_stage
                .with_label_values(&["persist"])
                .observe(t.elapsed().as_secs_f64());
            if let Some(l) = put.lifetime {
                lifetimes::count_stored(&st, &[l.map_err(store_status)?]);
            }
            put.metadata.map_err(store_status)?;
            let mut stored = put.slivers.into_iter();
            let results = sliver_results(&verified, &mut stored);
            // every owned pair, both axes, sent here and now held
            let held: std::collections::HashSet<(u16, Axis)> = verified
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.code == 0)
                .filter_map(|(v, _)| v.as_ref().ok().map(|(_, p, s, _)| (*p, s.axis)))
                .collect();
            let complete = target.owned.iter().all(|p| {
                held.contains(&(*p, Axis::Primary)) && held.contains(&(*p, Axis::Secondary))
            });
            Ok((results, complete && !target.owned.is_empty()))
        })
        .await?;
        let confirmation = if r.confirm && results.iter().all(|x| x.code == 0) {
            Some(if complete {
                self.sign_confirmation(id)?
            } else {
                self.do_get_confirmation(Request::new(proto::BlobRequest { blob_id: r.blob_id }))
                    .await?
            })
        } else {
            None
        };
        Ok(proto::StoreBlobResponse {
            results,
            confirmation,
        })
    }

    /// This node's signature that it holds `id` in the current epoch.
    fn sign_confirmation(&self, id: BlobId) -> Result<proto::Confirmation, Status> {
        let c = self
            .state
            .committee()
            .ok_or_else(|| Status::failed_precondition("node has no committee yet"))?;
        let conf = Confirmation::sign(&self.state.key, c.epoch, id);
        Ok(proto::Confirmation {
            epoch: conf.epoch,
            blob_id: id.as_bytes().to_vec(),
            node_id: conf.node_id.0.to_vec(),
            signature: conf.signature.to_vec(),
        })
    }

    async fn do_get_confirmation(
        &self,
        req: Request<proto::BlobRequest>,
    ) -> Result<proto::Confirmation, Status> {
        let id = blob_id(&req.into_inner().blob_id)?;
        lifetimes::check_readable(&self.state, &id)?;
        if self.state.committee().is_none() {
            return Err(Status::failed_precondition("node has no committee yet"));
        }
        let owned = self.state.owned_pairs(&id);
        if owned.is_empty() {
            return Err(Status::failed_precondition(
                "node holds no shards in the current committee",
            ));
        }
        let entry = self.state.store.entry(&id).unwrap_or_default();
        let missing = owned.iter().filter(|p| !entry.has_pair(**p)).count();
        if missing > 0 || entry.metadata.is_none() {
            return Err(Status::failed_precondition(format!(
                "blob {id}: {missing} of this node's {} sliver pairs are missing",
                owned.len()
            )));
        }
        self.sign_confirmation(id)
    }

    async fn do_put_certificate(
        &self,
        req: Request<proto::Certificate>,
    ) -> Result<proto::PutCertificateResponse, Status> {
        let cert = check_certificate(&self.state, req.into_inner())?;
        let st = self.state.clone();
        let already = blocking(move || {
            let complete = st.holds_all_owned(&cert.blob_id);
            st.store
                .put_certificate_of(&cert, complete)
                .map_err(store_status)
        })
        .await?;
        self.state.recovery_wakeup.notify_one();
        Ok(proto::PutCertificateResponse {
            already_certified: already,
        })
    }
}

#[tonic::async_trait]
impl Storage for StorageService {
    async fn get_info(
        &self,
        _: Request<proto::GetInfoRequest>,
    ) -> Result<Response<proto::NodeInfo>, Status> {
        metered(&self.state, "GetInfo", async { Ok(self.info()) }).await
    }

    async fn get_committee(
        &self,
        req: Request<proto::GetCommitteeRequest>,
    ) -> Result<Response<proto::Committee>, Status> {
        metered(&self.state, "GetCommittee", async {
            let epoch = req.into_inner().epoch;
            let c = if epoch == 0 {
                self.state
                    .committee()
                    .ok_or_else(|| Status::failed_precondition("node has no committee yet"))?
            } else {
                self.state.committee_of(epoch).ok_or_else(|| {
                    Status::not_found(format!("this node does not know committee {epoch}"))
                })?
            };
            Ok(proto::Committee::from(c.as_ref()))
        })
        .await
    }

    async fn put_metadata(
        &self,
        req: Request<proto::PutMetadataRequest>,
    ) -> Result<Response<proto::PutMetadataResponse>, Status> {
        metered(&self.state, "PutMetadata", self.do_put_metadata(req)).await
    }

    async fn get_metadata(
        &self,
        req: Request<proto::BlobRequest>,
    ) -> Result<Response<proto::MetadataResponse>, Status> {
        metered(&self.state, "GetMetadata", async {
            let id = blob_id(&req.into_inner().blob_id)?;
            lifetimes::check_readable(&self.state, &id)?;
            let md = self.metadata(&id)?;
            Ok(proto::MetadataResponse {
                metadata: md.to_bytes(),
            })
        })
        .await
    }

    async fn put_sliver(
        &self,
        req: Request<proto::PutSliverRequest>,
    ) -> Result<Response<proto::PutSliverResponse>, Status> {
        metered(&self.state, "PutSliver", async {
            self.writable()?;
            let req = req.into_inner();
            let (id, pair, sliver, md) = self.sliver_target(blob_id(&req.blob_id)?)?.check(req)?;
            let st = self.state.clone();
            let already = blocking(move || {
                let t = Instant::now();
                let tree = challenge::verify_for_store(&sliver, &md)
                    .map_err(|e| Status::invalid_argument(format!("sliver rejected: {e}")))?;
                st.metrics
                    .sliver_stage
                    .with_label_values(&["verify"])
                    .observe(t.elapsed().as_secs_f64());
                let t = Instant::now();
                let r = st
                    .store
                    .put_sliver_with_tree(id, pair, &sliver, tree.as_ref())
                    .map_err(store_status);
                st.metrics
                    .sliver_stage
                    .with_label_values(&["persist"])
                    .observe(t.elapsed().as_secs_f64());
                r
            })
            .await?;
            Ok(proto::PutSliverResponse {
                already_stored: already,
            })
        })
        .await
    }

    async fn put_slivers(
        &self,
        req: Request<proto::PutSliversRequest>,
    ) -> Result<Response<proto::PutSliversResponse>, Status> {
        metered(&self.state, "PutSlivers", self.do_put_slivers(req)).await
    }

    async fn get_sliver(
        &self,
        req: Request<proto::GetSliverRequest>,
    ) -> Result<Response<proto::SliverResponse>, Status> {
        metered(&self.state, "GetSliver", async {
            let req = req.into_inner();
            let id = blob_id(&req.blob_id)?;
            let axis: Axis = proto::Axis::try_from(req.axis)
                .map_err(|_| Status::invalid_argument(format!("unknown axis {}", req.axis)))?
                .into();
            let pair = u16::try_from(req.pair_index)
                .map_err(|_| Status::invalid_argument("pair_index out of range"))?;
            lifetimes::check_readable(&self.state, &id)?;
            if self.state.store.entry(&id).is_some_and(|e| e.invalid) {
                return Err(Status::failed_precondition(format!(
                    "blob {id} is invalid (inconsistently encoded)"
                )));
            }
            let st = self.state.clone();
            let fault = self.state.config.fault;
            let sliver = blocking(move || match st.store.get_sliver(&id, pair, axis) {
                Err(e @ StoreError::Corrupt(_)) => {
                    st.metrics.corrupt_detected.inc();
                    st.recovery_wakeup.notify_one();
                    Err(store_status(e))
                }
                other => other.map_err(store_status),
            })
            .await?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no {axis:?} sliver of pair {pair} of blob {id} here"
                ))
            })?;
            let mut bytes = sliver.to_bytes();
            if fault == Some(Fault::CorruptSlivers) {
                let at = bytes.len() - 1;
                bytes[at] ^= 0x55;
            }
            Ok(proto::SliverResponse { sliver: bytes })
        })
        .await
    }

    async fn get_confirmation(
        &self,
        req: Request<proto::BlobRequest>,
    ) -> Result<Response<proto::Confirmation>, Status> {
        metered(
            &self.state,
            "GetConfirmation",
            self.do_get_confirmation(req),
        )
        .await
    }

    async fn put_certificate(
        &self,
        req: Request<proto::Certificate>,
    ) -> Result<Response<proto::PutCertificateResponse>, Status> {
        metered(&self.state, "PutCertificate", self.do_put_certificate(req)).await
    }

    async fn store_blob(
        &self,
        req: Request<proto::StoreBlobRequest>,
    ) -> Result<Response<proto::StoreBlobResponse>, Status> {
        metered(
            &self.state,
            "StoreBlob",
            self.do_store_blob(req.into_inner()),
        )
        .await
    }

    async fn put_certificates(
        &self,
        req: Request<proto::PutCertificatesRequest>,
    ) -> Result<Response<proto::PutCertificatesResponse>, Status> {
        metered(&self.state, "PutCertificates", async {
            let certs = req.into_inner().certificates;
            if certs.len() > PUT_CERTIFICATES_MAX {
                return Err(Status::invalid_argument(format!(
                    "{} certificates in one request, at most {PUT_CERTIFICATES_MAX}",
                    certs.len()
                )));
            }
            let st = self.state.clone();
            let results = blocking(move || {
                // each checked as PutCertificate checks one; a few on this thread (handing
                // them to the rayon pool costs more than it spreads), more on both cores
                let checked: Vec<Result<Certificate, Status>> = if certs.len() < 4 {
                    certs
                        .into_iter()
                        .map(|c| check_certificate(&st, c))
                        .collect()
                } else {
                    use rayon::prelude::*;
                    certs
                        .into_par_iter()
                        .map(|c| check_certificate(&st, c))
                        .collect()
                };
                let good: Vec<(&Certificate, bool)> = checked
                    .iter()
                    .filter_map(|c| c.as_ref().ok())
                    .map(|c| (c, st.holds_all_owned(&c.blob_id)))
                    .collect();
                let mut stored = st.store.put_certificates_of(&good).into_iter();
                Ok(checked
                    .iter()
                    .map(|c| {
                        let (code, message, already_certified) = item_outcome(c, &mut stored);
                        proto::PutCertificateResult {
                            code,
                            message,
                            already_certified,
                        }
                    })
                    .collect::<Vec<_>>())
            })
            .await?;
            self.state.recovery_wakeup.notify_one();
            Ok(proto::PutCertificatesResponse { results })
        })
        .await
    }

    async fn get_recovery_symbols(
        &self,
        req: Request<proto::RecoverySymbolsRequest>,
    ) -> Result<Response<proto::RecoverySymbolsResponse>, Status> {
        metered(&self.state, "GetRecoverySymbols", async {
            let req = req.into_inner();
            let id = blob_id(&req.blob_id)?;
            lifetimes::check_readable(&self.state, &id)?;
            let md = self.metadata(&id)?;
            let shape = md.shape().map_err(|e| Status::internal(e.to_string()))?;
            let n = md.n();
            let target: Axis = proto::Axis::try_from(req.target_axis)
                .map_err(|_| Status::invalid_argument("unknown axis"))?
                .into();
            if req.target_indices.is_empty() || req.target_indices.len() > n {
                return Err(Status::invalid_argument(format!(
                    "ask for 1..={n} target indices"
                )));
            }
            let targets: Vec<u16> = req
                .target_indices
                .iter()
                .map(|t| u16::try_from(*t).ok().filter(|t| (*t as usize) < n))
                .collect::<Option<_>>()
                .ok_or_else(|| Status::invalid_argument("target index out of range"))?;
            // bound the answer before doing any work: every held helper sliver is expanded and
            // yields one symbol per target
            let helper_axis = target.other();
            let entry = self.state.store.entry(&id).unwrap_or_default();
            let helpers: Vec<u16> = entry
                .slivers
                .iter()
                .filter(|(_, a)| Axis::from(axis_of(*a)) == helper_axis)
                .map(|(p, _)| *p)
                .collect();
            let cap = recovery_answer_cap(self.state.config.max_message);
            let answer = recovery_answer_bytes(&shape, helpers.len(), targets.len());
            if answer > cap {
                self.state
                    .metrics
                    .refused
                    .with_label_values(&["too_large"])
                    .inc();
                let per_target = recovery_answer_bytes(&shape, helpers.len(), 1).max(1);
                return Err(Status::resource_exhausted(format!(
                    "the answer would be {answer} bytes (limit {cap}): ask for at most {} targets",
                    (cap / per_target).max(1)
                )));
            }
            // the expansions are CPU- and memory-heavy: a few at a time
            let _slot = self
                .state
                .expensive
                .acquire()
                .await
                .map_err(|_| Status::unavailable("shutting down"))?;
            let st = self.state.clone();
            let symbols = blocking(move || {
                let mut out = Vec::new();
                for pair in helpers {
                    let Ok(Some(helper)) = st.store.get_sliver(&id, pair, helper_axis) else {
                        continue;
                    };
                    st.metrics.recovery_expansions.inc();
                    let syms = recovery_symbols(&helper, &shape, &targets)
                        .map_err(|e| Status::internal(e.to_string()))?;
                    out.extend(syms.iter().map(|s| s.to_bytes()));
                }
                Ok(out)
            })
            .await?;
            if symbols.is_empty() {
                return Err(Status::not_found(format!(
                    "no slivers of blob {id} here to help with"
                )));
            }
            Ok(proto::RecoverySymbolsResponse { symbols })
        })
        .await
    }

    async fn get_blob_status(
        &self,
        req: Request<proto::BlobRequest>,
    ) -> Result<Response<proto::BlobStatusResponse>, Status> {
        metered(&self.state, "GetBlobStatus", async {
            let id = blob_id(&req.into_inner().blob_id)?;
            let owned = self.state.owned_pairs(&id);
            let life = self.state.store.lifetime(&id).map(|l| l.lifetime);
            let (end_epoch, deletable) = life.map_or((0, false), |l| (l.end_epoch, l.deletable));
            let gone = lifetimes::gone(&self.state, &id);
            let Some(e) = self.state.store.entry(&id) else {
                let state = match gone {
                    Some(crate::protocol::Gone::Deleted) => proto::BlobState::Deleted,
                    Some(crate::protocol::Gone::Expired { .. }) => proto::BlobState::Expired,
                    None => proto::BlobState::Unknown,
                };
                return Ok(proto::BlobStatusResponse {
                    state: state as i32,
                    pairs_owned: owned.len() as u32,
                    end_epoch,
                    deletable,
                    ..Default::default()
                });
            };
            let state = if let Some(g) = gone {
                match g {
                    crate::protocol::Gone::Deleted => proto::BlobState::Deleted,
                    crate::protocol::Gone::Expired { .. } => proto::BlobState::Expired,
                }
            } else if e.invalid {
                proto::BlobState::Invalid
            } else if e.certified_epoch.is_some() {
                proto::BlobState::Certified
            } else if e.metadata.is_some() {
                proto::BlobState::Stored
            } else {
                proto::BlobState::Unknown
            };
            Ok(proto::BlobStatusResponse {
                state: state as i32,
                size: e.metadata.as_ref().map_or(0, |m| m.len),
                pairs_owned: owned.len() as u32,
                pairs_stored: owned.iter().filter(|p| e.has_pair(**p)).count() as u32,
                certified_epoch: e.certified_epoch.unwrap_or(0),
                end_epoch,
                deletable,
            })
        })
        .await
    }

    async fn list_certified(
        &self,
        req: Request<proto::ListCertifiedRequest>,
    ) -> Result<Response<proto::ListCertifiedResponse>, Status> {
        metered(&self.state, "ListCertified", async {
            let req = req.into_inner();
            let after = if req.after.is_empty() {
                None
            } else {
                Some(blob_id(&req.after)?)
            };
            let limit = (req.limit as usize).clamp(1, LIST_LIMIT);
            let st = self.state.clone();
            blocking(move || {
                // a range scan of the certified index: cost ∝ the page
                let all: Vec<BlobId> = st
                    .store
                    .certified_page(after, limit + 1)
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
                let more = all.len() > limit;
                let certificates = all
                    .into_iter()
                    .take(limit)
                    // blobs whose lifetime is over are owed to nobody
                    .filter(|id| lifetimes::gone(&st, id).is_none())
                    .filter_map(|id| st.store.certificate(&id))
                    .map(|c| proto::Certificate::from(&c))
                    .collect();
                Ok(proto::ListCertifiedResponse { certificates, more })
            })
            .await
        })
        .await
    }

    async fn sync_shard(
        &self,
        req: Request<proto::SyncShardRequest>,
    ) -> Result<Response<proto::SyncShardResponse>, Status> {
        metered(&self.state, "SyncShard", async {
            let req = req.into_inner();
            let sync = SyncRequest::try_from(&req)
                .map_err(|e| Status::invalid_argument(format!("sync request: {e}")))?;
            let committee = self.state.committee_of(sync.epoch).ok_or_else(|| {
                Status::unavailable(format!(
                    "the committee of epoch {} is not known here (yet)",
                    sync.epoch
                ))
            })?;
            sync.authorize(&committee)
                .map_err(|e| Status::permission_denied(e.to_string()))?;
            let limit = (req.limit as usize).clamp(1, SYNC_PAGE_BLOBS);
            // Room for the biggest pair (2 × 43.7 MB at n = 1000) under the message limit.
            let budget = self.state.config.max_message * 3 / 4;
            let st = self.state.clone();
            blocking(move || sync_page(&st, &committee, &sync, limit, budget)).await
        })
        .await
    }

    async fn put_lifetime(
        &self,
        req: Request<proto::PutLifetimeRequest>,
    ) -> Result<Response<proto::PutLifetimeResponse>, Status> {
        metered(&self.state, "PutLifetime", async {
            let l = lifetimes::verify(&self.state, &req.into_inner().lifetime)?;
            let st = self.state.clone();
            let applied = blocking(move || lifetimes::store(&st, &[l])).await?;
            Ok(proto::PutLifetimeResponse {
                applied: applied.first().copied().unwrap_or(false),
            })
        })
        .await
    }
}

/// One page of a shard for its new owner: certified blobs after the cursor, in blob-ID order,
/// with metadata, certificate and the pair's slivers this node holds.
fn sync_page(
    st: &NodeState,
    committee: &crate::protocol::Committee,
    req: &SyncRequest,
    limit: usize,
    budget: usize,
) -> Result<proto::SyncShardResponse, Status> {
    let params = committee.params();
    // a range scan of the certified index from the cursor: cost ∝ the page, not the store
    let ids: Vec<BlobId> = st
        .store
        .certified_page(req.after, limit + 1)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let (mut items, mut bytes, mut taken) = (Vec::new(), 0usize, 0usize);
    for id in &ids {
        if items.len() >= limit {
            break;
        }
        let (Some(md), Some(cert)) = (st.store.metadata(id), st.store.certificate(id)) else {
            taken += 1;
            continue;
        };
        if lifetimes::gone(st, id).is_some() {
            // expired or deleted: the new owner would only collect it
            taken += 1;
            continue;
        }
        let pair = params.pair_for_shard(req.shard as usize, id.mod_n(params.n())) as u16;
        let read = |axis| match st.store.get_sliver(id, pair, axis) {
            Ok(Some(s)) => s.to_bytes(),
            Err(StoreError::Corrupt(_)) => {
                st.metrics.corrupt_detected.inc();
                st.recovery_wakeup.notify_one();
                Vec::new()
            }
            _ => Vec::new(),
        };
        let mut item = proto::SyncShardItem {
            blob_id: id.as_bytes().to_vec(),
            metadata: md.to_bytes(),
            certificate: Some(proto::Certificate::from(&cert)),
            pair_index: pair as u32,
            primary: read(Axis::Primary),
            secondary: read(Axis::Secondary),
        };
        if st.config.fault == Some(Fault::CorruptSlivers) {
            if let Some(b) = item.primary.last_mut() {
                *b ^= 0x55;
            }
        }
        let size = item.metadata.len() + item.primary.len() + item.secondary.len();
        if !items.is_empty() && bytes + size > budget {
            break;
        }
        bytes += size;
        taken += 1;
        items.push(item);
    }
    let next = ids[..taken]
        .last()
        .map(|id| id.as_bytes().to_vec())
        .unwrap_or_default();
    // Exact when the page reached the end (0 = shard done); otherwise at least one, at most the
    // certified blobs held (counting the ones after the cursor would cost a scan of the rest).
    let remaining = if ids.len() > taken {
        st.store
            .certified_count()
            .saturating_sub(taken as u64)
            .max((ids.len() - taken) as u64)
    } else {
        0
    };
    Ok(proto::SyncShardResponse {
        items,
        next,
        remaining,
    })
}

fn axis_of(k: crate::store::AxisKey) -> proto::Axis {
    match k {
        crate::store::AxisKey::Primary => proto::Axis::Primary,
        crate::store::AxisKey::Secondary => proto::Axis::Secondary,
    }
}
