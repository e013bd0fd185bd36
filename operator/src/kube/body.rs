//! The Kubernetes body of the control plane's brain: what `control::driver::Body` means for a
//! `StorageCluster` (docs/operator.md).
//!
//! - candidates: the cluster's node pods that have an IP and answer `GetInfo` (node ID), stake
//!   from `spec.stake`, *leaving* for ordinals ≥ `spec.nodes` (a scale-down drains first);
//! - save: the brain's whole state in the ConfigMap `<cluster>-control` (owned by the cluster,
//!   applied under the operator's field manager), so a restarted operator resumes; the status
//!   shows the parts a person reads;
//! - release: recorded in the state; the StatefulSet shrinks only past released pods
//!   ([`drained_to`]);
//! - force change: the annotation `floe.dev/next-epoch` (any new value) starts the change now.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use floe_node::client::NodeClient;
use floe_node::protocol::NodeId;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;

use super::builders::member_address;
use super::meta::{ClusterMeta, COMPONENT_CONFIG, MANAGER};
use crate::control::brain::{BrainState, Candidate, Intent};
use crate::control::driver::{Body, BodyError, BodyErrorKind};
use crate::crd::StorageCluster;

/// Key of the state in the control ConfigMap.
pub const STATE_KEY: &str = "state.json";
/// Annotation that asks for the next epoch now; its value is remembered so each new value
/// forces one change.
pub const NEXT_EPOCH_ANNOTATION: &str = "floe.dev/next-epoch";

/// Name of a cluster's control ConfigMap.
pub fn control_config_map(cluster: &str) -> String {
    format!("{cluster}-control")
}

/// One node pod as the reconcile saw it.
#[derive(Debug, Clone)]
pub struct PodView {
    pub name: String,
    pub ordinal: u32,
    pub ip: Option<String>,
    pub uid: String,
}

pub struct KubeBody {
    client: Client,
    meta: ClusterMeta,
    /// The cluster as of this reconcile (spec and annotations).
    cluster: StorageCluster,
    pods: Vec<PodView>,
    /// Node IDs learned from the pods, by (pod UID, address): a pod back on a new IP, or a new
    /// pod on an IP another pod had, is asked again.
    ids: HashMap<(String, String), NodeId>,
    /// The last `floe.dev/next-epoch` value acted on.
    forced_token: Option<String>,
    pending_force: bool,
}

impl KubeBody {
    pub fn new(client: Client, meta: ClusterMeta, cluster: StorageCluster) -> Self {
        let forced_token = annotation(&cluster);
        Self {
            client,
            meta,
            cluster,
            pods: Vec::new(),
            ids: HashMap::new(),
            forced_token,
            pending_force: false,
        }
    }

    /// What this reconcile observed.
    pub fn observe(&mut self, cluster: &StorageCluster, pods: Vec<PodView>) {
        let token = annotation(cluster);
        if token.is_some() && token != self.forced_token {
            self.pending_force = true;
            self.forced_token = token;
        }
        self.cluster = cluster.clone();
        self.pods = pods;
    }

    /// The brain's stored state, if the cluster has one.
    pub async fn load(
        client: &Client,
        ns: &str,
        cluster: &str,
    ) -> Result<Option<BrainState>, BodyError> {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let cm = api
            .get_opt(&control_config_map(cluster))
            .await
            .map_err(|e| {
                BodyError::new(
                    BodyErrorKind::Load,
                    format!("reading the control state: {e}"),
                )
            })?;
        let Some(text) = cm
            .and_then(|c| c.data)
            .and_then(|d| d.get(STATE_KEY).cloned())
        else {
            return Ok(None);
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            BodyError::new(
                BodyErrorKind::Load,
                format!(
                    "the control state in {} does not parse: {e}",
                    control_config_map(cluster)
                ),
            )
        })
    }
}

fn annotation(sc: &StorageCluster) -> Option<String> {
    sc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NEXT_EPOCH_ANNOTATION).cloned())
}

impl Body for KubeBody {
    async fn candidates(&mut self) -> Result<Vec<Candidate>, BodyError> {
        let mut out = Vec::new();
        let nodes = self.cluster.spec.nodes.max(0) as u32;
        let mut asks = Vec::new();
        for p in &self.pods {
            let Some(ip) = &p.ip else { continue };
            let Some(address) = member_address(&self.cluster, &p.name, ip) else {
                continue;
            };
            if let Some(id) = self.ids.get(&(p.uid.clone(), address.clone())) {
                out.push((p.clone(), address, *id));
            } else {
                asks.push((p.clone(), address));
            }
        }
        // pods not known yet: ask them who they are (their key is created on first start)
        let answers = futures::future::join_all(asks.into_iter().map(|(p, address)| async move {
            let id = match NodeClient::new(&address, 16 << 20) {
                Ok(c) => tokio::time::timeout(Duration::from_secs(2), c.info())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .and_then(|i| NodeId::try_from(i.node_id.as_slice()).ok()),
                Err(_) => None,
            };
            (p, address, id)
        }))
        .await;
        for (p, address, id) in answers {
            if let Some(id) = id {
                self.ids.insert((p.uid.clone(), address.clone()), id);
                out.push((p, address, id));
            }
        }
        Ok(out
            .into_iter()
            .map(|(p, address, node_id)| Candidate {
                node_id,
                name: p.name.clone(),
                address,
                stake: self.cluster.spec.stake.for_ordinal(p.ordinal),
                intent: if p.ordinal >= nodes {
                    Intent::Leaving
                } else {
                    Intent::Active
                },
            })
            .collect())
    }

    async fn save(&mut self, state: &BrainState) -> Result<(), BodyError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.meta.namespace);
        let name = control_config_map(&self.meta.names.cluster);
        // never store an older epoch than the one stored (a stale replica must not regress it)
        let stored =
            Self::load(&self.client, &self.meta.namespace, &self.meta.names.cluster).await?;
        crate::control::brain::check_monotonic(stored.as_ref(), state)
            .map_err(BodyError::regression)?;
        let cm = ConfigMap {
            metadata: self.meta.object(name.clone(), COMPONENT_CONFIG),
            data: Some(BTreeMap::from([(
                STATE_KEY.to_string(),
                serde_json::to_string(state)
                    .map_err(|e| BodyError::new(BodyErrorKind::Save, e.to_string()))?,
            )])),
            ..Default::default()
        };
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&cm),
        )
        .await
        .map_err(|e| {
            BodyError::new(
                BodyErrorKind::Save,
                format!("writing the control state: {e}"),
            )
        })?;
        Ok(())
    }

    async fn release(&mut self, _node: &NodeId, name: &str) -> Result<(), BodyError> {
        // the release is in the brain's state (`released`); the StatefulSet shrinks past it
        tracing::info!(pod = name, "member drained; its pod may go");
        Ok(())
    }

    fn take_force_change(&mut self) -> bool {
        std::mem::take(&mut self.pending_force)
    }
}

/// The replicas a scale-down may shrink the StatefulSet to: the lowest count `r ≥ nodes` such
/// that every pod with ordinal ≥ r has left the committee and been released (its shards moved
/// to others, not merely copied). None while nothing above `nodes` is released.
pub fn drained_to(state: &BrainState, cluster: &str, nodes: u32, replicas: u32) -> Option<i32> {
    let names = super::meta::Names::new(cluster);
    let released = |ordinal: u32| {
        let pod = names.pod(ordinal);
        let rec = state.members.iter().find(|(_, r)| r.name == pod);
        match rec {
            // a pod the brain knows: gone only when released and out of the committee
            Some((id, r)) => {
                r.released
                    && state
                        .committee
                        .as_ref()
                        .is_none_or(|c| c.member(id).is_none())
            }
            // a pod that never joined holds nothing
            None => true,
        }
    };
    let mut r = replicas;
    while r > nodes && released(r - 1) {
        r -= 1;
    }
    (r < replicas).then_some(r as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::brain::MemberRecord;
    use floe_node::protocol::{Committee, Member};

    fn rec(name: &str, released: bool) -> MemberRecord {
        MemberRecord {
            name: name.into(),
            address: String::new(),
            stake: 1,
            intent: Intent::Leaving,
            unreachable_since_ms: None,
            released,
            last_report: None,
        }
    }

    #[test]
    fn the_stateful_set_shrinks_only_past_released_pods() {
        let mut s = BrainState::new(10);
        s.members.insert(NodeId([4; 32]), rec("c-4", true));
        s.members.insert(NodeId([5; 32]), rec("c-5", false));
        // pod 5 still holds shards: nothing may go
        assert_eq!(drained_to(&s, "c", 4, 6), None);
        s.members.get_mut(&NodeId([5; 32])).unwrap().released = true;
        assert_eq!(drained_to(&s, "c", 4, 6), Some(4));
        // released but still in the committee (a stale record): stays
        s.committee = Some(Committee {
            epoch: 3,
            n_shards: 10,
            members: vec![Member {
                node_id: NodeId([5; 32]),
                address: String::new(),
                stake: 1,
                shards: (0..10).collect(),
            }],
            economics: None,
        });
        assert_eq!(drained_to(&s, "c", 4, 6), None);
        // never below spec.nodes, and nothing to do when not scaling down
        assert_eq!(drained_to(&BrainState::new(10), "c", 4, 4), None);
    }
}
