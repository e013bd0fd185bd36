//! The admin gRPC service: only the control plane calls it, with `authorization: Bearer <token>`.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::challenge;
use super::state::{CommitteeUpdateError, NodeState};
use super::storage::{blob_id, blocking, metered};
use crate::codec::{recovery_symbols, Axis, BlobId};
use crate::proto::{self, admin_server::Admin};
use crate::protocol::{Committee, StaleCommittee};
use crate::store::BlobStore;

pub struct AdminService {
    pub state: Arc<NodeState>,
}

/// Checks the bearer token on every admin call (constant-time comparison).
#[derive(Clone)]
pub struct AdminAuth {
    token: Option<Arc<str>>,
}

impl AdminAuth {
    pub fn new(token: Option<String>) -> Self {
        Self {
            token: token.map(Into::into),
        }
    }
}

impl tonic::service::Interceptor for AdminAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Err(Status::unauthenticated(
                "admin API disabled: the node was started without --admin-token-file",
            ));
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        let (a, b) = (given.as_bytes(), expected.as_bytes());
        let diff = a.len() ^ b.len()
            | a.iter()
                .zip(b.iter())
                .fold(0usize, |acc, (x, y)| acc | (x ^ y) as usize);
        if diff != 0 {
            return Err(Status::unauthenticated("wrong admin token"));
        }
        Ok(req)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn apply_lifetimes(
        &self,
        req: Request<proto::ApplyLifetimesRequest>,
    ) -> Result<Response<proto::ApplyLifetimesResponse>, Status> {
        metered(&self.state, "ApplyLifetimes", async {
            let req = req.into_inner();
            let st = self.state.clone();
            let seq =
                blocking(move || super::lifetimes::apply_log(&st, req.first_seq, &req.lifetimes))
                    .await?;
            Ok(proto::ApplyLifetimesResponse { lifetime_seq: seq })
        })
        .await
    }

    async fn set_committee(
        &self,
        req: Request<proto::Committee>,
    ) -> Result<Response<proto::SetCommitteeResponse>, Status> {
        metered(&self.state, "SetCommittee", async {
            let c = Committee::try_from(req.into_inner())
                .map_err(|e| Status::invalid_argument(format!("committee: {e}")))?;
            let epoch = c.epoch;
            let st = self.state.clone();
            blocking(move || {
                st.set_committee(c).map_err(|e| match e {
                    CommitteeUpdateError::Store(e) => super::storage::store_status(e),
                    CommitteeUpdateError::Stale { got, current } => StaleCommittee {
                        request_epoch: got,
                        node_epoch: current,
                    }
                    .to_status(),
                    other => Status::failed_precondition(other.to_string()),
                })
            })
            .await?;
            tracing::info!(epoch, shards = ?self.state.my_shards(), "committee set");
            Ok(proto::SetCommitteeResponse { epoch })
        })
        .await
    }

    async fn answer_challenge(
        &self,
        req: Request<proto::ChallengeRequest>,
    ) -> Result<Response<proto::ChallengeResponse>, Status> {
        metered(&self.state, "AnswerChallenge", async {
            let req = req.into_inner();
            if req.items.len() > 10_000 {
                return Err(Status::invalid_argument(
                    "at most 10000 challenge items per call",
                ));
            }
            let st = self.state.clone();
            let symbols = blocking(move || {
                // items of the same sliver are answered from one expansion of it: a sliver is
                // read and expanded once per call, not once per item
                let mut groups: BTreeMap<(BlobId, u16, u8), Vec<(usize, u16)>> = BTreeMap::new();
                let mut out = vec![Vec::new(); req.items.len()];
                for (i, item) in req.items.iter().enumerate() {
                    let key = (|| {
                        let id = blob_id(&item.blob_id).ok()?;
                        let axis: Axis = proto::Axis::try_from(item.axis).ok()?.into();
                        let pair = u16::try_from(item.pair_index).ok()?;
                        let pos = u16::try_from(item.symbol_index).ok()?;
                        Some(((id, pair, axis.as_u8()), pos))
                    })();
                    if let Some((k, pos)) = key {
                        groups.entry(k).or_default().push((i, pos));
                    }
                }
                let mut bytes_read = 0u64;
                for ((id, pair, axis), items) in groups {
                    let answers = (|| {
                        let axis = Axis::from_u8(axis).ok()?;
                        let md = st.store.metadata(&id)?;
                        let shape = md.shape().ok()?;
                        let positions: Vec<u16> = items.iter().map(|(_, p)| *p).collect();
                        // one symbol and its stored path per item when the sliver has an index
                        if let Some(file) = st.store.sliver_file(&id, pair, axis) {
                            if let Some((answers, read)) = challenge::answer_from_index(
                                &file,
                                BlobStore::OBJECT_HEADER,
                                &md,
                                axis,
                                pair,
                                &positions,
                            ) {
                                bytes_read += read;
                                return Some(answers);
                            }
                        }
                        let sliver = st.store.get_sliver(&id, pair, axis).ok()??;
                        bytes_read += sliver.data.len() as u64;
                        if challenge::wants_index(&shape, axis) {
                            if let Some(file) = st.store.sliver_file(&id, pair, axis) {
                                // missing or broken: written afresh from the sliver just read
                                let _ = challenge::write_index(&file, &sliver, &shape);
                            }
                        }
                        recovery_symbols(&sliver, &shape, &positions).ok()
                    })();
                    if let Some(answers) = answers {
                        for ((i, _), sym) in items.iter().zip(answers) {
                            out[*i] = sym.to_bytes();
                        }
                    }
                }
                for a in &out {
                    let result = if a.is_empty() { "missing" } else { "answered" };
                    st.metrics.challenges.with_label_values(&[result]).inc();
                }
                st.metrics.challenge_bytes_read.inc_by(bytes_read);
                Ok((out, bytes_read))
            })
            .await?;
            let (symbols, bytes_read) = symbols;
            Ok(proto::ChallengeResponse {
                symbols,
                bytes_read,
            })
        })
        .await
    }

    async fn get_sync_status(
        &self,
        _: Request<proto::GetSyncStatusRequest>,
    ) -> Result<Response<proto::SyncStatus>, Status> {
        metered(&self.state, "GetSyncStatus", async {
            let st = self.state.clone();
            blocking(move || {
                let epoch = st.committee().map_or(0, |c| c.epoch);
                let plan = st.sync_plan().unwrap_or_default();
                // an exact count, not the recovery loop's last round: "done" must never be
                // reported for work that is not finished (cached until the store changes)
                let backlog = st.recovery_backlog_exact();
                // done: every gained shard pulled, or rebuilt by recovery where its sync fell
                // back; the rest of the backlog (a wiped disk) is reported but does not hold the
                // epoch change (PROTOCOL.md §6)
                let to_pull: u64 = plan
                    .pending
                    .values()
                    .map(|s| s.remaining.unwrap_or(0))
                    .sum();
                Ok(proto::SyncStatus {
                    epoch,
                    target_epoch: if plan.epoch == 0 { epoch } else { plan.epoch },
                    done: plan.pending.is_empty() && backlog.gained == 0,
                    blobs_total: plan.blobs_done + to_pull,
                    blobs_done: plan.blobs_done,
                    shards_pending: plan.pending.keys().map(|s| *s as u32).collect(),
                    recovery_backlog: backlog.slivers,
                })
            })
            .await
        })
        .await
    }
}
