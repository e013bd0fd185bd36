//! One step of the control plane's brain per reconcile (the seam of the controller): keep a
//! driver per cluster, feed it what the reconcile observed, and turn the brain's state into
//! what the Kubernetes body needs — shards per pod (PDB), busy, the drain point of a
//! scale-down, conditions, status and the next deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use tokio::sync::Mutex;

use super::body::{drained_to, KubeBody, PodView};
use super::controller::{BrainOutcome, Observed};
use super::meta::{ClusterMeta, Names};
use crate::control::brain::{Brain, BrainState, Phase, Settings};
use crate::control::challenge::Outcome;
use crate::control::driver::{now_ms, ChallengeSettings, Driver, Members};
use crate::control::metrics::ControlMetrics;
use crate::crd::status::{
    ChallengeOutcome, ChallengeResult, CommitteeMember, ConditionType, ConditionUpdate, EpochState,
    MemberState, StorageClusterStatus,
};
use crate::crd::validate::ValidSpec;
use crate::crd::StorageCluster;

/// The drivers of the clusters this replica manages, by `namespace/name/uid`.
#[derive(Default)]
pub struct Brains {
    drivers: Mutex<HashMap<String, Arc<Mutex<Driver<KubeBody>>>>>,
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

impl Brains {
    /// Forget a deleted cluster.
    pub async fn remove(&self, sc: &StorageCluster, metrics: &super::http::Metrics) {
        self.drivers.lock().await.remove(&key(sc));
        metrics.remove_cluster(&format!(
            "{}/{}",
            sc.namespace().unwrap_or_default(),
            sc.name_any()
        ));
    }

    async fn driver(
        &self,
        sc: &StorageCluster,
        valid: &ValidSpec,
        token: &str,
        client: &kube::Client,
        metrics: &super::http::Metrics,
    ) -> Result<Arc<Mutex<Driver<KubeBody>>>, String> {
        let k = key(sc);
        let mut drivers = self.drivers.lock().await;
        if let Some(d) = drivers.get(&k) {
            return Ok(d.clone());
        }
        let meta = ClusterMeta::new(sc).map_err(|e| e.to_string())?;
        let stored = KubeBody::load(client, &meta.namespace, &meta.names.cluster)
            .await
            .map_err(|e| e.0)?;
        let settings = settings(sc, valid);
        let state = stored.unwrap_or_else(|| BrainState::new(settings.n_shards));
        let brain = Brain::new(state, settings).map_err(|e| e.to_string())?;
        let cluster = format!("{}/{}", meta.namespace, meta.names.cluster);
        let control = ControlMetrics::for_cluster(&cluster);
        metrics.add_cluster(&cluster, control.registry.clone());
        let body = KubeBody::new(client.clone(), meta, sc.clone());
        let challenges = ChallengeSettings {
            samples: sc.spec.challenges.samples as usize,
            timeout: valid.challenge_timeout,
        };
        let d = Arc::new(Mutex::new(Driver::new(
            brain,
            body,
            Members::new(token),
            challenges,
            control,
        )));
        drivers.insert(k, d.clone());
        Ok(d)
    }

    /// One round of the brain for `sc` (the reconcile's inputs, passed through as they are).
    #[allow(clippy::too_many_arguments)]
    pub async fn step(
        &self,
        sc: &StorageCluster,
        valid: &ValidSpec,
        observed: &Observed,
        token: &str,
        current_replicas: Option<i32>,
        client: &kube::Client,
        metrics: &super::http::Metrics,
    ) -> BrainOutcome {
        let driver = match self.driver(sc, valid, token, client, metrics).await {
            Ok(d) => d,
            Err(e) => return failed(format!("the control plane cannot start: {e}")),
        };
        let mut d = driver.lock().await;
        let names = Names::new(&sc.name_any());
        let pods: Vec<PodView> = observed
            .pods
            .iter()
            .filter_map(|(name, ip, _)| {
                Some(PodView {
                    ordinal: names.ordinal(name)?,
                    name: name.clone(),
                    ip: ip.clone(),
                    uid: observed.uids.get(name).cloned().unwrap_or_default(),
                })
            })
            .collect();
        d.body.observe(sc, pods.clone());
        d.brain.settings = settings(sc, valid);
        d.challenges.samples = sc.spec.challenges.samples as usize;
        d.challenges.timeout = valid.challenge_timeout;
        let round = d.round().await;
        let mut out = outcome(
            &d.brain.state,
            sc,
            &pods,
            current_replicas,
            &d.brain.settings,
        );
        if let Err(e) = round {
            out.conditions.push(ConditionUpdate::new(
                ConditionType::Degraded,
                true,
                "ControlStateUnsaved",
                format!("the control plane could not persist its state: {e}"),
            ));
            out.next_deadline = Some(Duration::from_secs(5));
        }
        out
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
