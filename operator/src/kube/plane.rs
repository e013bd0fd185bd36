//! Each StorageCluster's control plane as a task of its own (the seam between the controller
//! and the brain). The task owns the cluster's `Driver` (its `Brain`, `Members` and
//! [`KubeBody`]); a reconcile hands it what it observed ([`Observation`]) and reads the latest
//! [`BrainOutcome`] the task published, without waiting: a challenge round, a member that hangs
//! or a slow publish holds the task, never a reconcile. When a round changes the outcome the
//! task asks the controller for a reconcile, which writes it.
//!
//! This module defines the messages (it imports nothing from the controller): the controller
//! depends on it, not the other way round.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::body::{drained_to, KubeBody, PodView, NEXT_EPOCH_ANNOTATION};
use super::meta::{ClusterMeta, Names};
use crate::control::brain::{Brain, BrainState, Phase, Settings};
use crate::control::challenge::Outcome;
use crate::control::driver::{now_ms, BodyErrorKind, ChallengeSettings, Driver, Members};
use crate::control::market::{MarketLink, RemoteMarket};
use crate::control::metrics::ControlMetrics;
use crate::crd::status::{
    ChallengeOutcome, ChallengeResult, CommitteeMember, ConditionType, ConditionUpdate, EpochState,
    MemberState, StorageClusterStatus,
};
use crate::crd::validate::ValidSpec;
use crate::crd::StorageCluster;

/// What the brain decides for the body: the task publishes one after every round.
#[derive(Debug, Clone, PartialEq)]
pub struct BrainOutcome {
    /// Shards per StatefulSet ordinal in the current committee; `None` before the first one.
    pub member_shards: Option<Vec<u32>>,
    /// Epoch change, sync or recovery running (PDB allows nothing then).
    pub busy: bool,
    /// Replicas the scale-down has drained to (pods at or above it hold no shards).
    pub drained_to: Option<i32>,
    /// The conditions the brain owns: Available, Degraded, EpochChanging, Recovering.
    pub conditions: Vec<ConditionUpdate>,
    /// Epoch, epoch state, deadline, committee table, blobs and bytes.
    pub status: StorageClusterStatus,
    /// When the brain must act next (epoch end, sync deadline).
    pub next_deadline: Option<Duration>,
}

impl BrainOutcome {
    /// No committee, nothing drained, and `Available` says why.
    pub fn not_connected() -> Self {
        BrainOutcome {
            member_shards: None,
            busy: false,
            drained_to: None,
            conditions: vec![ConditionUpdate::new(
                ConditionType::Available,
                false,
                "NoCommittee",
                "no committee yet: the control plane has not finished a round",
            )],
            status: StorageClusterStatus::default(),
            next_deadline: None,
        }
    }

    /// Before the task's first round for this operator process: the status the cluster already
    /// shows is kept (with server-side apply, a field not sent is removed, and a restarted
    /// operator must not blank the committee table), nothing is rolled or drained, and the PDB
    /// allows nothing until the brain has looked.
    pub fn starting(sc: &StorageCluster) -> Self {
        BrainOutcome {
            member_shards: None,
            busy: true,
            drained_to: None,
            conditions: Vec::new(),
            status: sc.status.clone().unwrap_or_default(),
            next_deadline: Some(Duration::from_secs(2)),
        }
    }

    /// Equal apart from `next_deadline` (relative to when it was computed).
    fn same_as(&self, other: &BrainOutcome) -> bool {
        self.member_shards == other.member_shards
            && self.busy == other.busy
            && self.drained_to == other.drained_to
            && self.conditions == other.conditions
            && self.status == other.status
    }
}

/// What the body observed in one reconcile, for the brain.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// (pod name, pod IP, Ready) of every node pod.
    pub pods: Vec<(String, Option<String>, bool)>,
    /// Pod name → UID: a pod recreated under the same name (and maybe the same IP) is another
    /// pod, whose node identity must be asked again.
    pub uids: HashMap<String, String>,
}

/// The message a reconcile hands the cluster's task.
#[derive(Debug, Clone)]
pub struct Observation {
    pub cluster: StorageCluster,
    pub valid: ValidSpec,
    pub observed: Observed,
    pub admin_token: String,
    /// The StatefulSet's replicas now (a scale-down keeps pods until they are drained).
    pub current_replicas: Option<i32>,
    /// The market, when `spec.market.enabled` (`None` then: its keys are not stored yet).
    pub market: Option<MarketWiring>,
}

/// Where the cluster's market is and what committees carry for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketWiring {
    /// The control key's public half (from the cluster's Secret).
    pub control_key: [u8; 32],
    /// `http://host:port` of the control pod's MarketAdmin service.
    pub address: String,
    pub max_epochs_ahead: u32,
}

impl Observation {
    /// Nothing the brain reads differs (status writes change the object's resourceVersion,
    /// not what the brain looks at): the task need not run a round for it.
    fn same_as(&self, o: &Observation) -> bool {
        self.cluster.spec == o.cluster.spec
            && next_epoch(&self.cluster) == next_epoch(&o.cluster)
            && self.valid == o.valid
            && self.observed == o.observed
            && self.admin_token == o.admin_token
            && self.current_replicas == o.current_replicas
            && self.market == o.market
    }
}

fn next_epoch(sc: &StorageCluster) -> Option<&String> {
    sc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NEXT_EPOCH_ANNOTATION))
}

/// One cluster's task and its two channels.
struct Plane {
    input: watch::Sender<Arc<Observation>>,
    outcome: watch::Receiver<Option<BrainOutcome>>,
    task: JoinHandle<()>,
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The control planes of the clusters this replica manages, by `namespace/name/uid`.
pub struct Planes {
    client: kube::Client,
    metrics: super::http::Metrics,
    planes: Mutex<HashMap<String, Plane>>,
    /// Asks the controller to reconcile a cluster whose outcome changed.
    wake: mpsc::UnboundedSender<ObjectRef<StorageCluster>>,
}

fn key(sc: &StorageCluster) -> String {
    format!(
        "{}/{}/{}",
        sc.namespace().unwrap_or_default(),
        sc.name_any(),
        sc.metadata.uid.clone().unwrap_or_default()
    )
}

/// The brain's settings from the spec.
pub fn settings(sc: &StorageCluster, valid: &ValidSpec) -> Settings {
    let epoch_ms = valid.epoch_duration.as_millis().min(u64::MAX as u128) as u64;
    Settings {
        n_shards: sc.spec.shards.clamp(0, u16::MAX as i32) as u16,
        epoch_ms,
        // a pod may be rescheduled and restarted within two epochs without losing its shards
        unreachable_after_ms: (2 * epoch_ms).max(60_000),
        reward_per_epoch: sc.spec.reward_per_epoch,
        stuck_after_ms: (epoch_ms / 4).clamp(30_000, 300_000),
        genesis_members: sc.spec.nodes.max(1) as usize,
    }
}

impl Planes {
    /// `wake` receives a cluster's reference whenever its task published a changed outcome
    /// (the controller reconciles on it).
    pub fn new(
        client: kube::Client,
        metrics: super::http::Metrics,
        wake: mpsc::UnboundedSender<ObjectRef<StorageCluster>>,
    ) -> Self {
        Planes {
            client,
            metrics,
            planes: Mutex::new(HashMap::new()),
            wake,
        }
    }

    /// Hand the cluster's task what this reconcile observed and return its latest outcome
    /// (starting the task on first sight). Never waits on the task.
    pub fn observe(&self, obs: Observation) -> BrainOutcome {
        let k = key(&obs.cluster);
        let Ok(mut planes) = self.planes.lock() else {
            return failed("the control planes' registry is poisoned".into());
        };
        if let Some(p) = planes.get(&k).filter(|p| !p.task.is_finished()) {
            let obs = Arc::new(obs);
            p.input.send_if_modified(|cur| {
                if cur.same_as(&obs) {
                    false
                } else {
                    *cur = obs.clone();
                    true
                }
            });
            return p
                .outcome
                .borrow()
                .clone()
                .unwrap_or_else(|| BrainOutcome::starting(&obs.cluster));
        }
        let starting = BrainOutcome::starting(&obs.cluster);
        let obj = ObjectRef::from_obj(&obs.cluster);
        let (input, input_rx) = watch::channel(Arc::new(obs));
        let (outcome_tx, outcome) = watch::channel(None);
        let task = tokio::spawn(run_plane(
            self.client.clone(),
            self.metrics.clone(),
            input_rx,
            outcome_tx,
            self.wake.clone(),
            obj,
        ));
        planes.insert(
            k,
            Plane {
                input,
                outcome,
                task,
            },
        );
        starting
    }

    /// Forget a deleted cluster: its task stops (aborted at its next await).
    pub fn remove(&self, sc: &StorageCluster) {
        if let Ok(mut planes) = self.planes.lock() {
            planes.remove(&key(sc));
        }
        self.metrics.remove_cluster(&format!(
            "{}/{}",
            sc.namespace().unwrap_or_default(),
            sc.name_any()
        ));
    }

    /// Clusters with a running task.
    pub fn len(&self) -> usize {
        self.planes.lock().map_or(0, |p| p.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Start the cluster's driver: its stored state, its metrics, its members.
async fn start_driver(
    client: &kube::Client,
    metrics: &super::http::Metrics,
    obs: &Observation,
) -> Result<Driver<KubeBody>, String> {
    let sc = &obs.cluster;
    let meta = ClusterMeta::new(sc).map_err(|e| e.to_string())?;
    let stored = KubeBody::load(client, &meta.namespace, &meta.names.cluster)
        .await
        .map_err(|e| e.to_string())?;
    let settings = settings(sc, &obs.valid);
    let state = stored.unwrap_or_else(|| BrainState::new(settings.n_shards));
    let brain = Brain::new(state, settings).map_err(|e| e.to_string())?;
    let cluster = format!("{}/{}", meta.namespace, meta.names.cluster);
    let control = ControlMetrics::for_cluster(&cluster);
    metrics.add_cluster(&cluster, control.registry.clone());
    let body = KubeBody::new(client.clone(), meta, sc.clone());
    let challenges = ChallengeSettings {
        samples: sc.spec.challenges.samples as usize,
        timeout: obs.valid.challenge_timeout,
    };
    Ok(Driver::new(
        brain,
        body,
        Members::new(&obs.admin_token),
        challenges,
        control,
    ))
}

/// Point the driver at the market the observation names (a new control pod IP, a key, the
/// market switched on or off); nothing when it already is.
fn wire_market(d: &mut Driver<KubeBody>, obs: &Observation) {
    let current = match (&d.market, &d.brain.market) {
        (Some(MarketLink::Remote(r)), Some(p)) => {
            Some((r.address().to_string(), p.control_key, p.max_epochs_ahead))
        }
        _ => None,
    };
    let wanted = obs
        .market
        .as_ref()
        .map(|w| (w.address.clone(), w.control_key, w.max_epochs_ahead));
    if current == wanted {
        return;
    }
    match obs.market.as_ref() {
        None => d.set_market(None),
        Some(w) => match RemoteMarket::new(&w.address, &obs.admin_token) {
            Ok(r) => {
                tracing::info!(cluster = %obs.cluster.name_any(), address = %w.address, "the market is at this address");
                d.set_market(Some((
                    MarketLink::Remote(Box::new(r)),
                    w.control_key,
                    w.max_epochs_ahead,
                )));
            }
            Err(e) => {
                tracing::warn!(cluster = %obs.cluster.name_any(), error = %e, "the market's address is invalid");
                d.set_market(None);
            }
        },
    }
}

/// One round of the brain on the latest observation, and the outcome it leads to.
async fn round(d: &mut Driver<KubeBody>, obs: &Observation) -> BrainOutcome {
    let sc = &obs.cluster;
    let names = Names::new(&sc.name_any());
    let pods: Vec<PodView> = obs
        .observed
        .pods
        .iter()
        .filter_map(|(name, ip, _)| {
            Some(PodView {
                ordinal: names.ordinal(name)?,
                name: name.clone(),
                ip: ip.clone(),
                uid: obs.observed.uids.get(name).cloned().unwrap_or_default(),
            })
        })
        .collect();
    d.body.observe(sc, pods.clone());
    d.brain.settings = settings(sc, &obs.valid);
    wire_market(d, obs);
    d.challenges.samples = sc.spec.challenges.samples as usize;
    d.challenges.timeout = obs.valid.challenge_timeout;
    let result = d.round().await;
    let mut out = outcome(
        &d.brain.state,
        sc,
        &pods,
        obs.current_replicas,
        &d.brain.settings,
    );
    if let Err(e) = result {
        let (reason, message) = match e.kind {
            BodyErrorKind::Regression => (
                "ControlStateAhead",
                format!("another writer stored a newer control state: {e}"),
            ),
            BodyErrorKind::Market => (
                "MarketUnavailable",
                format!("the cluster's market (its control pod) did not answer: {e}"),
            ),
            _ => (
                "ControlStateUnsaved",
                format!("the control plane could not persist its state: {e}"),
            ),
        };
        tracing::warn!(cluster = %sc.name_any(), kind = ?e.kind, error = %e, "control-plane round failed");
        out.conditions.push(ConditionUpdate::new(
            ConditionType::Degraded,
            true,
            reason,
            message,
        ));
        out.next_deadline = Some(Duration::from_secs(5));
    }
    out
}

/// The cluster's task: a round whenever the observation changes or the brain's deadline comes,
/// the outcome published after each, the controller woken when it changed. Ends when the
/// registry drops the cluster.
async fn run_plane(
    client: kube::Client,
    metrics: super::http::Metrics,
    mut input: watch::Receiver<Arc<Observation>>,
    outcome: watch::Sender<Option<BrainOutcome>>,
    wake: mpsc::UnboundedSender<ObjectRef<StorageCluster>>,
    obj: ObjectRef<StorageCluster>,
) {
    let mut driver: Option<Driver<KubeBody>> = None;
    let mut next_round = Instant::now();
    loop {
        tokio::select! {
            changed = input.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(next_round) => {}
        }
        let obs = input.borrow_and_update().clone();
        // a cluster that sells storage runs no round before its committees can carry the
        // market's key (else a first committee without it would let anyone write unpaid)
        if obs.cluster.spec.market.enabled && obs.market.is_none() {
            next_round = Instant::now() + Duration::from_secs(2);
            continue;
        }
        let out = match driver.as_mut() {
            Some(d) => round(d, &obs).await,
            None => match start_driver(&client, &metrics, &obs).await {
                Ok(d) => round(driver.insert(d), &obs).await,
                Err(e) => failed(format!("the control plane cannot start: {e}")),
            },
        };
        next_round = Instant::now() + out.next_deadline.unwrap_or(Duration::from_secs(30));
        let changed = outcome.send_if_modified(|cur| {
            let changed = !cur.as_ref().is_some_and(|c| c.same_as(&out));
            *cur = Some(out);
            changed
        });
        if changed && wake.unbounded_send(obj.clone()).is_err() {
            // the controller is gone (shutdown)
            return;
        }
    }
}

fn failed(msg: String) -> BrainOutcome {
    let mut o = BrainOutcome::not_connected();
    o.conditions = vec![ConditionUpdate::new(
        ConditionType::Available,
        false,
        "ControlPlaneError",
        msg,
    )];
    o.next_deadline = Some(Duration::from_secs(10));
    o
}

fn time_of(ms: u64) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms as i64)
        .ok()
        .map(Time)
}

/// What the Kubernetes body needs from the brain's state (pure).
pub fn outcome(
    s: &BrainState,
    sc: &StorageCluster,
    pods: &[PodView],
    current_replicas: Option<i32>,
    settings: &Settings,
) -> BrainOutcome {
    let now = now_ms();
    let nodes = sc.spec.nodes.max(0) as u32;
    let replicas = current_replicas.unwrap_or(sc.spec.nodes).max(0) as u32;
    let Some(committee) = &s.committee else {
        let mut o = BrainOutcome::not_connected();
        o.conditions = vec![ConditionUpdate::new(
            ConditionType::Available,
            false,
            "FormingCommittee",
            format!(
                "waiting for all {} node pods to answer before the first committee{}",
                nodes,
                s.plan_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(": {e}"))
            ),
        )];
        o.status.epoch = Some(0);
        o.status.epoch_state = Some(EpochState::Forming);
        o.next_deadline = Some(Duration::from_secs(2));
        return o;
    };
    // shards per ordinal, members by pod
    let max_ordinal = pods
        .iter()
        .map(|p| p.ordinal + 1)
        .max()
        .unwrap_or(0)
        .max(replicas);
    let mut member_shards = vec![0u32; max_ordinal as usize];
    let names = Names::new(&sc.name_any());
    let mut rows = Vec::new();
    let mut down_shards = 0usize;
    let mut down_pods = Vec::new();
    let mut recovering = Vec::new();
    let (mut blobs, mut stored) = (0u64, 0u64);
    let changing_to = match &s.phase {
        Phase::Changing { to, .. } => Some(to),
        _ => None,
    };
    for (id, r) in &s.members {
        if r.released {
            continue;
        }
        let shards = committee.weight(id);
        let ordinal = names.ordinal(&r.name);
        if let Some(o) = ordinal {
            if let Some(slot) = member_shards.get_mut(o as usize) {
                *slot = shards as u32;
            }
        }
        let up = r.unreachable_since_ms.is_none();
        if !up && shards > 0 {
            down_shards += shards;
            down_pods.push(format!("{} ({shards} shards)", r.name));
        }
        let rep = r.last_report.as_ref();
        if let Some(rep) = rep.filter(|_| up) {
            blobs = blobs.max(rep.blobs);
            stored += rep.stored_bytes;
            if rep.recovery_backlog > 0 || rep.shards_pending > 0 {
                recovering.push(format!("{} ({} slivers)", r.name, rep.recovery_backlog));
            }
        }
        let in_next = changing_to.is_some_and(|t| t.member(id).is_some());
        let state = if !up {
            MemberState::Down
        } else if ordinal.is_some_and(|o| o >= nodes)
            || r.intent == crate::control::brain::Intent::Leaving
        {
            MemberState::Leaving
        } else if shards == 0 && !in_next {
            MemberState::Joining
        } else if rep.is_some_and(|x| x.shards_pending > 0) {
            MemberState::Syncing
        } else if rep.is_some_and(|x| x.recovery_backlog > 0) {
            MemberState::Recovering
        } else {
            MemberState::Active
        };
        let sync_progress = rep.and_then(|x| {
            (x.blobs_to_sync > 0).then(|| (x.blobs_synced * 100 / x.blobs_to_sync).min(100) as u8)
        });
        let last_challenge = s.last_round.as_ref().and_then(|round| {
            round.results.get(id).map(|res| ChallengeResult {
                epoch: round.epoch as u64,
                outcome: match res.outcome {
                    Outcome::Passed { .. } => ChallengeOutcome::Passed,
                    Outcome::Failed { .. } => ChallengeOutcome::Failed,
                    Outcome::TimedOut { .. } => ChallengeOutcome::TimedOut,
                },
            })
        });
        rows.push(CommitteeMember {
            pod: r.name.clone(),
            node_id: Some(id.to_string()),
            address: Some(r.address.clone()),
            shards: shards as u32,
            stake: r.stake,
            state: Some(state),
            sync_progress,
            last_challenge,
            rewards: *s.ledger.totals.get(id).unwrap_or(&0),
        });
    }
    rows.sort_by_key(|r| names.ordinal(&r.pod).unwrap_or(u32::MAX));
    let f = (committee.n_shards as usize).saturating_sub(1) / 3;
    let mut conditions = Vec::new();
    conditions.push(if down_shards == 0 {
        ConditionUpdate::new(
            ConditionType::Available,
            true,
            "CommitteeServing",
            format!(
                "epoch {}: {} members serve {} shards",
                s.epoch,
                committee.members.len(),
                committee.n_shards
            ),
        )
    } else if down_shards <= f {
        ConditionUpdate::new(
            ConditionType::Available,
            true,
            "ServingWithMembersDown",
            format!("{down_shards} shards down, within the fault bound f = {f}"),
        )
    } else {
        ConditionUpdate::new(
            ConditionType::Available,
            false,
            "QuorumAtRisk",
            format!("{down_shards} shards down, more than f = {f}: reads and writes may fail"),
        )
    });
    conditions.push(ConditionUpdate::new(
        ConditionType::Degraded,
        down_shards > 0,
        if down_shards > 0 {
            "MembersDown"
        } else {
            "AllMembersUp"
        },
        down_pods.join(", "),
    ));
    let (changing, change_reason, change_msg) = match &s.phase {
        Phase::Changing {
            to, stuck: None, ..
        } => (true, "Changing", format!("moving to epoch {}", to.epoch)),
        Phase::Changing {
            to,
            stuck: Some(why),
            ..
        } => (true, "Stuck", format!("epoch {} stuck: {why}", to.epoch)),
        _ => (false, "Stable", String::new()),
    };
    conditions.push(ConditionUpdate::new(
        ConditionType::EpochChanging,
        changing,
        change_reason,
        change_msg,
    ));
    conditions.push(ConditionUpdate::new(
        ConditionType::Recovering,
        !recovering.is_empty(),
        if recovering.is_empty() {
            "NothingToRecover"
        } else {
            "Rebuilding"
        },
        recovering.join(", "),
    ));
    let deadline = s.deadline_ms(settings.epoch_ms);
    let next = match s.phase {
        Phase::Stable => {
            let mid = s.epoch_started_ms + settings.epoch_ms / 2;
            let mut t = deadline;
            if !s.challenge_done {
                t = t.min(s.challenge_at_ms);
            }
            if s.planned.is_none() {
                t = t.min(mid);
            }
            // poll members at least every 30 s for the status
            Duration::from_millis(t.saturating_sub(now).clamp(1000, 30_000))
        }
        _ => Duration::from_secs(2),
    };
    let busy = changing || !recovering.is_empty();
    let status = StorageClusterStatus {
        epoch: Some(s.epoch as u64),
        epoch_state: Some(if changing {
            EpochState::Changing
        } else {
            EpochState::Stable
        }),
        next_deadline: time_of(deadline),
        committee: rows,
        blobs: Some(blobs),
        stored_bytes: Some(stored),
        storage_price: committee.economics.map(|e| e.storage_price),
        write_price: committee.economics.map(|e| e.write_price),
        ..Default::default()
    };
    BrainOutcome {
        member_shards: Some(member_shards),
        busy,
        drained_to: drained_to(s, &sc.name_any(), nodes, replicas),
        conditions,
        status,
        next_deadline: Some(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::status::ConditionStatus;

    #[test]
    fn without_a_round_nothing_is_faked() {
        let b = BrainOutcome::not_connected();
        assert_eq!(b.member_shards, None);
        assert_eq!(b.status.epoch, None);
        assert!(b.status.committee.is_empty());
        assert_eq!(b.conditions[0].type_, ConditionType::Available);
        assert_eq!(b.conditions[0].status, ConditionStatus::False);
    }
}
