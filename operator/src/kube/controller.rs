//! The reconcile of `floe-operator`: a kube-runtime `Controller` over `StorageCluster` that
//! builds the owned objects with the pure builders, server-side-applies them under one field
//! manager, observes the pods and writes status. Epochs and committees belong to the control
//! plane's brain (`crate::control`), which runs as one task per cluster ([`super::plane`]): a
//! reconcile hands it what it observed and reads the task's latest outcome, never waiting on
//! members.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

use super::builders::{self, Inputs};
use super::market::MarketKeys;
use super::meta::{self, selector_string, Names, MANAGER};
use super::pdb::{self, DisruptionState};
use super::plane::{BrainOutcome, MarketWiring, Observation, Observed, Planes};
use crate::crd::status::{
    merge_conditions, phase, transitions, ConditionType, ConditionUpdate, StorageClusterStatus,
};
use crate::crd::validate::{validate, SpecError};
use crate::crd::StorageCluster;
use futures::channel::mpsc;

/// Finalizer on every StorageCluster the operator manages: deletion waits for [`cleanup`].
pub const FINALIZER: &str = "floe.dev/cleanup";

/// Requeue of a settled cluster when nothing else wakes it (the brain's outcome shortens this
/// to its next deadline, and its task asks for a reconcile when the outcome changes).
pub const SETTLED_REQUEUE: Duration = Duration::from_secs(300);
/// Requeue while pods are starting. Pod changes wake the controller anyway (node pods are
/// watched and mapped to their cluster by label); this is only a safety net.
pub const PROGRESS_REQUEUE: Duration = Duration::from_secs(60);

/// Errors of one reconcile. All are transient: they back off per object ([`error_policy`]).
/// A spec that is wrong stays out of here: it becomes the `Invalid` condition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Meta(#[from] meta::MetaError),
    #[error("generating the admin token or the market's keys: {0}")]
    Token(getrandom::Error),
    #[error("spec.serviceMonitor.enabled, but the monitoring.coreos.com/v1 ServiceMonitor CRD is not installed")]
    ServiceMonitorCrdMissing,
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Short, stable name for the metrics label.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Meta(_) => "metadata",
            Error::Token(_) => "token",
            Error::ServiceMonitorCrdMissing => "servicemonitor_crd_missing",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub metrics: super::http::Metrics,
    recorder: Recorder,
    backoff: Mutex<HashMap<ObjectRef<StorageCluster>, u32>>,
    /// The control plane's brain, one task per cluster.
    pub planes: Planes,
    /// Taken by [`run`]: the tasks' requests for a reconcile.
    wake: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<StorageCluster>>>>,
    /// Set by `--network-policy`: the operator's own pods, allowed to the nodes' admin port.
    pub operator_peer: Option<builders::OperatorPeer>,
}

impl Context {
    /// `instance` names this replica in the Events it publishes (its pod name).
    pub fn new(client: Client, metrics: super::http::Metrics, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_string(),
            instance,
        };
        let (wake_tx, wake_rx) = mpsc::unbounded();
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            planes: Planes::new(client.clone(), metrics.clone(), wake_tx),
            wake: Mutex::new(Some(wake_rx)),
            client,
            metrics,
            backoff: Mutex::new(HashMap::new()),
            operator_peer: None,
        }
    }

    /// Write a NetworkPolicy per cluster that lets only `peer` reach the nodes' admin port.
    pub fn with_network_policy(mut self, peer: builders::OperatorPeer) -> Self {
        self.operator_peer = Some(peer);
        self
    }
}

/// Delay after the `failures`-th consecutive failure of one cluster: 2 s doubling to 5 min.
/// kube-runtime has no per-object backoff of its own.
pub fn backoff_delay(failures: u32) -> Duration {
    let secs = 2u64.saturating_mul(1u64 << failures.saturating_sub(1).min(16));
    Duration::from_secs(secs.min(300))
}

/// StatefulSet replicas for `spec.nodes`, given the StatefulSet's current replicas.
///
/// Scaling up is immediate (new pods join the committee at the next epoch). Scaling down is
/// not: a StatefulSet removes its highest-numbered pods, and those may hold shards. Until the
/// brain reports them drained (`drained_to`), the current replicas stay.
pub fn stateful_set_replicas(nodes: i32, current: Option<i32>, drained_to: Option<i32>) -> i32 {
    match current {
        Some(c) if c > nodes => drained_to.map_or(c, |d| d.clamp(nodes, c)),
        _ => nodes,
    }
}

/// The pod to delete next in a rolling update (the StatefulSet is `OnDelete`): the
/// highest-numbered pod not on `update_revision`, but only when nothing is `busy` (epoch change,
/// sync, recovery, members down) and all `replicas` pods are Ready — the previous one is back
/// and serving. One pod at a time; pure.
pub fn pod_to_roll(
    names: &Names,
    revisions: &[(String, Option<String>)],
    ready: &[&str],
    update_revision: Option<&str>,
    busy: bool,
    replicas: i32,
) -> Option<String> {
    let target = update_revision?;
    if busy || (ready.len() as i32) < replicas || revisions.len() as i32 != replicas {
        return None;
    }
    revisions
        .iter()
        .filter(|(_, r)| r.as_deref() != Some(target))
        .filter_map(|(pod, _)| names.ordinal(pod).map(|o| (o, pod)))
        .max_by_key(|(o, _)| *o)
        .map(|(_, pod)| pod.clone())
}

/// Run the controller until SIGTERM/SIGINT or until `stop` resolves (leadership lost).
pub async fn run(
    ctx: Arc<Context>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let wake = ctx
        .wake
        .lock()
        .ok()
        .and_then(|mut w| w.take())
        .map_or_else(|| futures::stream::empty().boxed(), |rx| rx.boxed());
    // only the operator's own objects: watching every Secret of the cluster would cost memory
    let owned =
        watcher::Config::default().labels(&format!("{}={}", meta::LABEL_MANAGED_BY, MANAGER));
    Controller::new(
        Api::<StorageCluster>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
    .owns(Api::<Deployment>::all(client.clone()), owned.clone())
    .owns(Api::<Service>::all(client.clone()), owned.clone())
    .owns(Api::<ConfigMap>::all(client.clone()), owned.clone())
    .owns(Api::<Secret>::all(client.clone()), owned.clone())
    .owns(
        Api::<PodDisruptionBudget>::all(client.clone()),
        owned.clone(),
    )
    // node pods are owned by the StatefulSet, not the StorageCluster: map them by label
    .watches(Api::<Pod>::all(client), owned, |pod| {
        let ns = pod.namespace();
        pod.labels()
            .get(meta::LABEL_INSTANCE)
            .cloned()
            .zip(ns)
            .map(|(name, ns)| ObjectRef::new(&name).within(&ns))
    })
    // a cluster's control-plane task published a changed outcome
    .reconcile_on(wake)
    .shutdown_on_signal()
    .graceful_shutdown_on(stop)
    .run(reconcile, error_policy, ctx)
    .for_each(|res| async move {
        match res {
            Ok((obj, _)) => tracing::debug!(cluster = %obj, "reconciled"),
            Err(e) => tracing::warn!(error = %e, "reconcile failed"),
        }
    })
    .await;
}

async fn reconcile(sc: Arc<StorageCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = format!("{}/{}", sc.namespace().unwrap_or_default(), sc.name_any());
    let ns = sc
        .namespace()
        .ok_or(meta::MetaError::Missing("namespace"))?;
    let api: Api<StorageCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, sc.clone(), |event| async {
        match event {
            Finalizer::Apply(sc) => apply(&sc, &ctx).await,
            Finalizer::Cleanup(sc) => cleanup(&sc, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.observe_reconcile(
        &key,
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    if result.is_ok() {
        if let Ok(mut b) = ctx.backoff.lock() {
            b.remove(&ObjectRef::from_obj(&*sc));
        }
    }
    result
}

/// Count the failure and back off this object alone; the next success resets it.
fn error_policy(sc: Arc<StorageCluster>, err: &Error, ctx: Arc<Context>) -> Action {
    let failures = match ctx.backoff.lock() {
        Ok(mut b) => {
            let n = b.entry(ObjectRef::from_obj(&*sc)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        }
        Err(_) => 1,
    };
    let delay = backoff_delay(failures);
    tracing::warn!(cluster = %sc.name_any(), error = %err, failures, ?delay, "reconcile failed; backing off");
    Action::requeue(delay)
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

async fn ssa<K>(client: &Client, ns: &str, obj: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    Api::<K>::namespaced(client.clone(), ns)
        .patch(&name, &apply_params(), &Patch::Apply(obj))
        .await?;
    Ok(())
}

async fn apply(sc: &StorageCluster, ctx: &Context) -> Result<Action, Error> {
    let ns = sc
        .namespace()
        .ok_or(meta::MetaError::Missing("namespace"))?;
    let name = sc.name_any();
    let client = &ctx.client;

    if sc.spec.paused {
        write_status(
            sc,
            ctx,
            vec![ConditionUpdate::new(
                ConditionType::Paused,
                true,
                "Paused",
                "spec.paused is true: the operator touches nothing",
            )],
            None,
        )
        .await?;
        return Ok(Action::await_change());
    }
    let valid = match validate(&sc.spec) {
        Ok(v) => v,
        Err(errors) => {
            let msg = errors
                .iter()
                .map(SpecError::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            write_status(
                sc,
                ctx,
                vec![
                    ConditionUpdate::new(ConditionType::Invalid, true, "InvalidSpec", msg),
                    ConditionUpdate::new(ConditionType::Paused, false, "Reconciling", ""),
                ],
                None,
            )
            .await?;
            return Ok(Action::await_change());
        }
    };

    let view = observe(client, &ns, &name, sc.spec.market.enabled).await?;
    let token = match &view.admin_token {
        Some(t) => t.clone(),
        None => builders::generate_admin_token().map_err(Error::Token)?,
    };
    let keys = match &view.market_keys {
        Some(k) => k.clone(),
        None => MarketKeys::generate().map_err(Error::Token)?,
    };
    let brain = ctx.planes.observe(Observation {
        cluster: sc.clone(),
        valid: valid.clone(),
        observed: view.observed.clone(),
        admin_token: token.clone(),
        current_replicas: view.current_replicas,
        // only keys already stored: a committee must never carry a key the Secret may not
        // end up holding (a failed apply would make the next reconcile draw new ones)
        market: view
            .market_keys
            .as_ref()
            .and_then(|k| market_wiring(sc, k, view.control_pod_ip.as_deref())),
    });
    let decision = decide(
        sc,
        &valid,
        &view,
        &token,
        &keys,
        &brain,
        ctx.operator_peer.as_ref(),
    )?;
    apply_objects(client, &ns, sc, &decision.desired).await?;
    if let Some(pod) = &decision.roll {
        tracing::info!(cluster = %name, %pod, "rolling the pod onto the StatefulSet's new revision");
        Api::<Pod>::namespaced(client.clone(), &ns)
            .delete(pod, &Default::default())
            .await?;
    }
    write_status(sc, ctx, decision.conditions, Some(decision.status)).await?;
    Ok(Action::requeue(decision.requeue))
}

/// What one reconcile read from the API server about a cluster's own objects (plain values).
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// The admin token in the existing Secret, if there is one.
    pub admin_token: Option<String>,
    /// The StatefulSet's `updateRevision` and `spec.replicas`, if it exists.
    pub update_revision: Option<String>,
    pub current_replicas: Option<i32>,
    /// (pod, `controller-revision-hash`) of every node pod.
    pub revisions: Vec<(String, Option<String>)>,
    /// Pods as the control plane sees them.
    pub observed: Observed,
    /// The market's keys in the existing Secret, if there is one.
    pub market_keys: Option<MarketKeys>,
    /// IP of the market's control pod when it is Ready (read only with `spec.market.enabled`).
    pub control_pod_ip: Option<String>,
}

/// How the cluster's brain reaches its market: the control pod's IP when it is Ready (works
/// without cluster DNS, as members are reached), else the Service's DNS name.
pub fn market_wiring(
    sc: &StorageCluster,
    keys: &MarketKeys,
    control_pod_ip: Option<&str>,
) -> Option<MarketWiring> {
    let service = super::market::url(sc)?;
    let address = match control_pod_ip {
        Some(ip) => format!("http://{ip}:{}", meta::CONTROL_PORT),
        None => format!("http://{service}"),
    };
    Some(MarketWiring {
        control_key: keys.control_public(),
        address,
        max_epochs_ahead: sc.spec.market.max_epochs_ahead,
    })
}

/// Read the cluster's Secrets, StatefulSet and node pods, and with a market its control pod
/// (independent reads: one round trip).
async fn observe(
    client: &Client,
    ns: &str,
    name: &str,
    market: bool,
) -> Result<ClusterView, Error> {
    let names = Names::new(name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod_params = ListParams::default().labels(&selector_string(name));
    let (secret_name, sts_name) = (names.admin_secret(), names.stateful_set());
    let keys_name = names.control_keys();
    let control_pods = async {
        if !market {
            return Ok(None);
        }
        let params = ListParams::default().labels(&super::market::selector_string(name));
        pods.list(&params).await.map(Some)
    };
    let (secret, keys_secret, sts, pod_list, control_pods) = futures::try_join!(
        secrets.get_opt(&secret_name),
        secrets.get_opt(&keys_name),
        sts_api.get_opt(&sts_name),
        pods.list(&pod_params),
        control_pods,
    )?;
    let control_pod_ip = control_pods.and_then(|l| {
        l.items.into_iter().find_map(|p| {
            let s = p.status?;
            let ready = s
                .conditions
                .as_ref()
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            ready.then_some(s.pod_ip).flatten()
        })
    });
    let update_revision = sts
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.update_revision.clone());
    let current_replicas = sts.and_then(|s| s.spec).and_then(|s| s.replicas);
    let revisions = pod_list
        .items
        .iter()
        .map(|p| {
            (
                p.name_any(),
                p.labels().get("controller-revision-hash").cloned(),
            )
        })
        .collect();
    let uids = pod_list
        .items
        .iter()
        .map(|p| (p.name_any(), p.metadata.uid.clone().unwrap_or_default()))
        .collect();
    let observed = Observed {
        uids,
        pods: pod_list
            .items
            .into_iter()
            .map(|p| {
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                (p.name_any(), p.status.and_then(|s| s.pod_ip), ready)
            })
            .collect(),
    };
    Ok(ClusterView {
        admin_token: secret.as_ref().and_then(builders::existing_admin_token),
        update_revision,
        current_replicas,
        revisions,
        observed,
        market_keys: keys_secret.as_ref().and_then(MarketKeys::from_secret),
        control_pod_ip,
    })
}

/// What one reconcile wants, decided from plain values.
#[derive(Debug, Clone)]
pub struct Decision {
    /// StatefulSet replicas (a scale-down waits for the drain).
    pub replicas: i32,
    /// Every owned object; `None` entries are deleted.
    pub desired: builders::Desired,
    /// The pod to delete for the rolling update, if any.
    pub roll: Option<String>,
    /// Condition updates: the body's (Paused, Invalid, Progressing) then the brain's.
    pub conditions: Vec<ConditionUpdate>,
    /// The status to write (the brain's, with `readyNodes`).
    pub status: StorageClusterStatus,
    /// When to reconcile again at the latest.
    pub requeue: Duration,
}

/// Decide replicas, PDB budget, objects, the pod to roll, conditions, status and requeue from
/// what was observed and the brain's outcome. Pure.
pub fn decide(
    sc: &StorageCluster,
    valid: &crate::crd::validate::ValidSpec,
    view: &ClusterView,
    token: &str,
    market_keys: &MarketKeys,
    brain: &BrainOutcome,
    operator: Option<&builders::OperatorPeer>,
) -> Result<Decision, Error> {
    let names = Names::new(&sc.name_any());
    let ready_names: Vec<&str> = view
        .observed
        .pods
        .iter()
        .filter(|p| p.2)
        .map(|p| p.0.as_str())
        .collect();
    let ready = ready_names.len() as i32;
    let replicas = stateful_set_replicas(sc.spec.nodes, view.current_replicas, brain.drained_to);
    let state = if brain.busy || ready < replicas {
        DisruptionState::Busy
    } else {
        DisruptionState::Healthy
    };
    let max_unavailable = pdb::max_unavailable(
        sc.spec.shards as u32,
        brain.member_shards.as_deref(),
        replicas.max(0) as u32,
        state,
    );
    let desired = builders::build(&Inputs {
        cluster: sc,
        valid,
        admin_token: token,
        replicas,
        pdb_max_unavailable: max_unavailable,
        operator,
        market_keys,
    })?;
    // rolling update (the StatefulSet is OnDelete): one outdated pod at a time, only while
    // the cluster is idle and every pod is back and serving
    let members_down = brain.conditions.iter().any(|c| {
        c.type_ == ConditionType::Degraded && c.status == crate::crd::status::ConditionStatus::True
    });
    let roll = pod_to_roll(
        &names,
        &view.revisions,
        &ready_names,
        view.update_revision.as_deref(),
        brain.busy || members_down || brain.member_shards.is_none(),
        replicas,
    );
    let (progressing, reason, message) = if replicas > sc.spec.nodes {
        (
            true,
            "ScaleDownWaitsForDrain",
            format!(
                "{} pods stay until the control plane has moved the shards of pods {}..{} away",
                replicas,
                sc.spec.nodes,
                replicas - 1
            ),
        )
    } else if ready < replicas {
        (
            true,
            "PodsStarting",
            format!("{ready} of {replicas} node pods Ready"),
        )
    } else {
        (
            false,
            "PodsReady",
            format!("{ready} of {replicas} node pods Ready"),
        )
    };
    let mut conditions = vec![
        ConditionUpdate::new(ConditionType::Paused, false, "Reconciling", ""),
        ConditionUpdate::new(ConditionType::Invalid, false, "SpecValid", ""),
        ConditionUpdate::new(ConditionType::Progressing, progressing, reason, message),
    ];
    conditions.extend(brain.conditions.iter().cloned());
    let mut status = brain.status.clone();
    status.ready_nodes = ready;
    // the brain's deadline (epoch end, challenge, a running change) wins over the safety nets
    let fallback = if progressing {
        PROGRESS_REQUEUE
    } else {
        SETTLED_REQUEUE
    };
    let requeue = brain.next_deadline.map_or(fallback, |d| d.min(fallback));
    Ok(Decision {
        replicas,
        desired,
        roll,
        conditions,
        status,
        requeue,
    })
}

/// Server-side-apply every desired object under the one field manager, and delete the optional
/// objects that are not wanted (any more): the NetworkPolicy without `--network-policy`, the
/// ServiceMonitor when disabled, the gateway's objects when `spec.gateway` is off.
async fn apply_objects(
    client: &Client,
    ns: &str,
    sc: &StorageCluster,
    desired: &builders::Desired,
) -> Result<(), Error> {
    let names = Names::new(&sc.name_any());
    // independent objects, applied concurrently (pods wait for their ConfigMap and Secret
    // on their own, so the order does not matter)
    futures::try_join!(
        ssa(client, ns, &desired.config_map),
        ssa(client, ns, &desired.admin_secret),
        ssa(client, ns, &desired.headless_service),
        ssa(client, ns, &desired.client_service),
        ssa(client, ns, &desired.stateful_set),
        ssa(client, ns, &desired.pdb),
    )?;
    match &desired.network_policy {
        Some(np) => ssa(client, ns, np).await?,
        None => {
            delete_if_present(
                &Api::<NetworkPolicy>::namespaced(client.clone(), ns),
                &names.network_policy(),
            )
            .await?
        }
    }
    let sm_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &builders::service_monitor_resource());
    match &desired.service_monitor {
        Some(sm) => {
            sm_api
                .patch(&names.service_monitor(), &apply_params(), &Patch::Apply(sm))
                .await?;
        }
        // enabled but not built: nothing to delete
        None if sc.spec.service_monitor.enabled => {}
        // switched off: remove ours if there is one (and the CRD may not even exist)
        None => delete_if_present(&sm_api, &names.service_monitor()).await?,
    }
    let (deployments, services, ingresses) = (
        Api::<Deployment>::namespaced(client.clone(), ns),
        Api::<Service>::namespaced(client.clone(), ns),
        Api::<Ingress>::namespaced(client.clone(), ns),
    );
    // the market: its Secret stays when it is switched off (the same key serves the journal
    // kept on the retained volume if it is switched on again)
    match &desired.market {
        Some(mk) => {
            ssa(client, ns, &mk.secret).await?;
            futures::try_join!(
                ssa(client, ns, &mk.stateful_set),
                ssa(client, ns, &mk.service)
            )?;
        }
        None => {
            delete_if_present(
                &Api::<StatefulSet>::namespaced(client.clone(), ns),
                &names.control(),
            )
            .await?;
            delete_if_present(
                &Api::<Service>::namespaced(client.clone(), ns),
                &names.control(),
            )
            .await?;
        }
    }
    match &desired.gateway {
        Some(g) => {
            futures::try_join!(ssa(client, ns, &g.deployment), ssa(client, ns, &g.service))?;
            match &g.ingress {
                Some(i) => ssa(client, ns, i).await?,
                None => delete_if_present(&ingresses, &names.gateway()).await?,
            }
        }
        None => {
            delete_if_present(&ingresses, &names.gateway()).await?;
            delete_if_present(&services, &names.gateway()).await?;
            delete_if_present(&deployments, &names.gateway()).await?;
        }
    }
    Ok(())
}

/// Delete `name`; absent already is fine.
async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Server-side-apply the status: observedGeneration, merged conditions, phase, selector.
/// `status` carries what this reconcile observed; `None` (paused, invalid) keeps the last
/// observed values: with server-side apply, a field the operator stops sending is removed,
/// and pausing must not blank the committee table.
async fn write_status(
    sc: &StorageCluster,
    ctx: &Context,
    updates: Vec<ConditionUpdate>,
    status: Option<StorageClusterStatus>,
) -> Result<(), Error> {
    let mut status = status.unwrap_or_else(|| sc.status.clone().unwrap_or_default());
    let ns = sc
        .namespace()
        .ok_or(meta::MetaError::Missing("namespace"))?;
    let name = sc.name_any();
    let current = sc
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    status.conditions = merge_conditions(current, &updates, sc.metadata.generation, &now);
    status.phase = Some(phase(&status.conditions));
    status.observed_generation = sc.metadata.generation;
    status.selector = Some(selector_string(&name));
    status.gateway_url = super::gateway::url(sc);
    status.control_url = super::market::url(sc);
    let flips = transitions(current, &status.conditions);
    let patch = serde_json::json!({
        "apiVersion": "floe.dev/v1alpha1",
        "kind": "StorageCluster",
        "status": status,
    });
    Api::<StorageCluster>::namespaced(ctx.client.clone(), &ns)
        .patch_status(&name, &apply_params(), &Patch::Apply(&patch))
        .await?;
    // One Event per condition that flipped, after the status that records it. Best effort: a
    // lost Event must not fail or repeat the reconcile.
    let reference = sc.object_ref(&());
    for f in flips {
        let ev = Event {
            type_: if f.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: f.reason,
            note: Some(format!(
                "{} is {}: {}",
                f.type_.as_str(),
                f.status,
                f.message
            )),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            tracing::warn!(cluster = %name, error = %e, "publishing an Event failed");
        }
    }
    Ok(())
}

/// Deletion: owned objects go by garbage collection (owner references), volumes by the
/// StatefulSet's retention policy; the cluster's control-plane task stops here.
async fn cleanup(sc: &StorageCluster, ctx: &Context) -> Result<Action, Error> {
    ctx.planes.remove(sc);
    tracing::info!(cluster = %sc.name_any(), "StorageCluster deleted; its epochs stop, owned objects are garbage-collected");
    Ok(Action::await_change())
}

#[cfg(test)]
mod api_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(nodes: i32) -> StorageCluster {
        let spec = serde_json::from_value(serde_json::json!({"nodes": nodes, "shards": 10,
            "epochDuration": "30s", "challenges": {"timeout": "5s"}, "storage": {"size": "1Gi"}}))
        .expect("spec");
        let mut sc = StorageCluster::new("c", spec);
        sc.metadata.namespace = Some("ns".into());
        sc.metadata.uid = Some("u".into());
        sc
    }

    /// `n` Ready pods on revision `rev`.
    fn view(n: u32, rev: &str, update: &str, replicas: i32) -> ClusterView {
        let pods: Vec<String> = (0..n).map(|i| format!("c-{i}")).collect();
        ClusterView {
            admin_token: Some("t".into()),
            update_revision: Some(update.into()),
            current_replicas: Some(replicas),
            revisions: pods.iter().map(|p| (p.clone(), Some(rev.into()))).collect(),
            observed: Observed {
                pods: pods
                    .iter()
                    .map(|p| (p.clone(), Some("10.0.0.1".into()), true))
                    .collect(),
                uids: HashMap::new(),
            },
            market_keys: None,
            control_pod_ip: None,
        }
    }

    fn settled(nodes: usize) -> BrainOutcome {
        BrainOutcome {
            member_shards: Some(vec![10 / nodes as u32; nodes]),
            busy: false,
            drained_to: None,
            conditions: vec![ConditionUpdate::new(
                ConditionType::Degraded,
                false,
                "AllMembersUp",
                "",
            )],
            status: StorageClusterStatus {
                epoch: Some(3),
                ..Default::default()
            },
            next_deadline: Some(Duration::from_secs(7)),
        }
    }

    fn decide_for(sc: &StorageCluster, v: &ClusterView, brain: &BrainOutcome) -> Decision {
        let valid = validate(&sc.spec).expect("valid");
        let keys = MarketKeys {
            control: [1; 32],
            gateway: [2; 32],
        };
        decide(sc, &valid, v, "t", &keys, brain, None).expect("decide")
    }

    #[test]
    fn a_settled_cluster_rolls_one_outdated_pod_and_follows_the_brains_deadline() {
        let sc = cluster(4);
        let d = decide_for(&sc, &view(4, "old", "new", 4), &settled(4));
        assert_eq!(d.replicas, 4);
        assert_eq!(d.roll.as_deref(), Some("c-3"), "the highest outdated pod");
        assert_eq!(d.requeue, Duration::from_secs(7));
        assert_eq!(d.status.epoch, Some(3));
        assert_eq!(d.status.ready_nodes, 4);
        let progressing = d
            .conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Progressing)
            .expect("progressing");
        assert_eq!(progressing.reason, "PodsReady");
        assert_eq!(
            d.desired
                .stateful_set
                .spec
                .as_ref()
                .and_then(|s| s.replicas),
            Some(4)
        );
        assert!(d.desired.network_policy.is_none(), "not asked for");
    }

    #[test]
    fn nothing_is_rolled_or_disrupted_while_the_brain_is_busy_or_has_not_looked() {
        let sc = cluster(4);
        let mut busy = settled(4);
        busy.busy = true;
        let d = decide_for(&sc, &view(4, "old", "new", 4), &busy);
        assert_eq!(d.roll, None);
        let pdb = d.desired.pdb.spec.as_ref().expect("pdb spec");
        assert_eq!(
            pdb.max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0))
        );
        let starting = BrainOutcome::starting(&sc);
        let d = decide_for(&sc, &view(4, "old", "new", 4), &starting);
        assert_eq!(d.roll, None, "no committee known yet");
        assert!(
            d.conditions.len() == 3,
            "the brain's conditions are kept as they are: {:?}",
            d.conditions
        );
    }

    #[test]
    fn a_scale_down_keeps_the_pods_until_the_brain_reports_them_drained() {
        let sc = cluster(4);
        let d = decide_for(&sc, &view(6, "new", "new", 6), &settled(6));
        assert_eq!(d.replicas, 6);
        assert!(d
            .conditions
            .iter()
            .any(|c| c.reason == "ScaleDownWaitsForDrain"));
        assert_eq!(
            d.requeue,
            Duration::from_secs(7),
            "the brain's deadline is sooner"
        );
        let mut drained = settled(6);
        drained.drained_to = Some(4);
        let d = decide_for(&sc, &view(6, "new", "new", 6), &drained);
        assert_eq!(d.replicas, 4);
    }

    #[test]
    fn rolling_takes_one_outdated_pod_at_a_time_and_only_when_idle() {
        let names = Names::new("c");
        let revs = |v: &[(&str, &str)]| -> Vec<(String, Option<String>)> {
            v.iter()
                .map(|(p, r)| (p.to_string(), Some(r.to_string())))
                .collect()
        };
        let all = ["c-0", "c-1", "c-2"];
        let r = revs(&[("c-0", "old"), ("c-1", "old"), ("c-2", "new")]);
        assert_eq!(
            pod_to_roll(&names, &r, &all, Some("new"), false, 3),
            Some("c-1".into())
        );
        assert_eq!(
            pod_to_roll(&names, &r, &all, Some("new"), true, 3),
            None,
            "busy"
        );
        assert_eq!(
            pod_to_roll(&names, &r, &["c-0", "c-2"], Some("new"), false, 3),
            None,
            "a pod is not back yet"
        );
        let done = revs(&[("c-0", "new"), ("c-1", "new"), ("c-2", "new")]);
        assert_eq!(
            pod_to_roll(&names, &done, &all, Some("new"), false, 3),
            None
        );
        assert_eq!(pod_to_roll(&names, &r, &all, None, false, 3), None);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_delay(1), Duration::from_secs(2));
        assert_eq!(backoff_delay(2), Duration::from_secs(4));
        assert_eq!(backoff_delay(5), Duration::from_secs(32));
        assert_eq!(backoff_delay(9), Duration::from_secs(300));
        assert_eq!(backoff_delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn scale_up_is_immediate_scale_down_waits_for_the_drain() {
        assert_eq!(stateful_set_replicas(4, None, None), 4);
        assert_eq!(stateful_set_replicas(6, Some(4), None), 6);
        assert_eq!(
            stateful_set_replicas(4, Some(6), None),
            6,
            "no drain reported: pods stay"
        );
        assert_eq!(
            stateful_set_replicas(4, Some(6), Some(5)),
            5,
            "one pod drained"
        );
        assert_eq!(
            stateful_set_replicas(4, Some(6), Some(2)),
            4,
            "never below spec.nodes"
        );
        assert_eq!(stateful_set_replicas(4, Some(4), None), 4);
    }
}
