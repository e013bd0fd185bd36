//! `StorageCluster` status and the one function that computes its conditions.
//!
//! Conditions come from a fixed vocabulary ([`ConditionType`]). [`merge_conditions`] is the only
//! place they are written: it keeps a condition's `lastTransitionTime` unless its status flips,
//! so `kubectl describe` shows when something actually changed, not when the operator last
//! looked. [`phase`] summarises them for the printer column.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator observed and decided, written with a server-side-apply status patch.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StorageClusterStatus {
    /// `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One-word summary of the conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Current epoch (0 before the first committee).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Where the current epoch is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_state: Option<EpochState>,
    /// When the operator next acts on its own: the end of the epoch, or the deadline of the
    /// running epoch change or challenge round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_deadline: Option<Time>,
    /// The committee of the current epoch, one row per member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["pod"]))]
    pub committee: Vec<CommitteeMember>,
    /// Storage-node pods that are Ready (the scale subresource's status replicas).
    #[serde(default)]
    pub ready_nodes: i32,
    /// Certified blobs stored by the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blobs: Option<u64>,
    /// Sliver bytes stored over all members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    /// Label selector of the node pods, for the scale subresource (`kubectl scale`, HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Where the HTTP gateway answers (the Ingress host, else the Service's cluster DNS name),
    /// when `spec.gateway.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_url: Option<String>,
    /// The control API clients buy storage at (`floe --control`), when `spec.market.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_url: Option<String>,
    /// Storage price the current committee published (the quorum-below value of the nodes'
    /// votes): units per MiB of encoded size per epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_price: Option<u64>,
    /// Write price the current committee published: units per MiB of encoded size, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_price: Option<u64>,
}

/// Summary of the conditions, most urgent first (see [`phase`]).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The spec is invalid in a way only the controller can judge; nothing is touched.
    Invalid,
    /// `spec.paused`: nothing is touched.
    Paused,
    /// Members are missing or failing; data may be at risk.
    Degraded,
    /// Members are rebuilding slivers they lost.
    Recovering,
    /// An epoch change is moving shards.
    EpochChanging,
    /// Objects or pods are being created or updated.
    Progressing,
    /// Committee formed, every member serving.
    Available,
    /// Nothing known yet.
    Pending,
}

/// Where the epoch is.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochState {
    /// No committee yet.
    Forming,
    /// The committee is serving; the next change is at `nextDeadline`.
    Stable,
    /// The next committee is published and members are syncing the shards they gain.
    Changing,
}

/// One committee member.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommitteeMember {
    /// Pod name, `<cluster>-<ordinal>`.
    pub pod: String,
    /// Ed25519 public key (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Address in the committee (`host:port`, see `spec.addressing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Shards this member holds in the current epoch.
    #[serde(default)]
    pub shards: u32,
    #[serde(default)]
    pub stake: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MemberState>,
    /// Percent (0–100) of the shards gained in the running epoch change that are synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub sync_progress: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_challenge: Option<ChallengeResult>,
    /// Reward units earned over the cluster's life.
    #[serde(default)]
    pub rewards: u64,
}

/// A member's state.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Pod up, not yet in a committee.
    Joining,
    /// Serving its shards.
    Active,
    /// Pulling shards it gains in an epoch change.
    Syncing,
    /// Rebuilding slivers it lost.
    Recovering,
    /// Leaving at the next epoch boundary (scale-down drain).
    Leaving,
    /// Not answering.
    Down,
}

/// Outcome of a member's last challenge round.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeResult {
    pub epoch: u64,
    pub outcome: ChallengeOutcome,
}

#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeOutcome {
    Passed,
    Failed,
    TimedOut,
}

/// The condition vocabulary, in the order conditions are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConditionType {
    Available,
    Progressing,
    Degraded,
    EpochChanging,
    Recovering,
    Paused,
    /// What only the controller can judge (the API server refuses the rest).
    Invalid,
}

impl ConditionType {
    pub const ALL: [ConditionType; 7] = [
        ConditionType::Available,
        ConditionType::Progressing,
        ConditionType::Degraded,
        ConditionType::EpochChanging,
        ConditionType::Recovering,
        ConditionType::Paused,
        ConditionType::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Available => "Available",
            ConditionType::Progressing => "Progressing",
            ConditionType::Degraded => "Degraded",
            ConditionType::EpochChanging => "EpochChanging",
            ConditionType::Recovering => "Recovering",
            ConditionType::Paused => "Paused",
            ConditionType::Invalid => "Invalid",
        }
    }

    fn from_str(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// `True`, `False` or `Unknown`, as Kubernetes spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// A condition as the reconcile decides it; [`merge_conditions`] adds the times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionUpdate {
    pub type_: ConditionType,
    pub status: ConditionStatus,
    /// CamelCase, machine-readable (also the Event reason).
    pub reason: String,
    /// For a person.
    pub message: String,
}

impl ConditionUpdate {
    pub fn new(
        type_: ConditionType,
        status: impl Into<ConditionStatus>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConditionUpdate {
            type_,
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Merge `updates` into the `current` conditions.
///
/// A condition whose status is unchanged keeps its `lastTransitionTime` (reason and message
/// may still change); a new condition or a flipped status gets `now`. Conditions not updated
/// are kept as they are, so the body and the brain can each write the ones they own.
/// Every updated condition records `generation`. The result lists the vocabulary in its fixed
/// order, then any foreign types found in `current` (kept, never dropped).
pub fn merge_conditions(
    current: &[Condition],
    updates: &[ConditionUpdate],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = Vec::with_capacity(ConditionType::ALL.len());
    for t in ConditionType::ALL {
        let old = current.iter().find(|c| c.type_ == t.as_str());
        // the last update of a type wins, should a caller list one twice
        match updates.iter().rev().find(|u| u.type_ == t) {
            Some(u) => {
                let last_transition_time = match old {
                    Some(o) if o.status == u.status.as_str() => o.last_transition_time.clone(),
                    _ => now.clone(),
                };
                out.push(Condition {
                    type_: t.as_str().to_string(),
                    status: u.status.as_str().to_string(),
                    reason: u.reason.clone(),
                    message: u.message.clone(),
                    observed_generation: generation,
                    last_transition_time,
                });
            }
            None => out.extend(old.cloned()),
        }
    }
    out.extend(
        current
            .iter()
            .filter(|c| ConditionType::from_str(&c.type_).is_none())
            .cloned(),
    );
    out
}

/// A condition whose status flipped, worth an Event on the StorageCluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub type_: ConditionType,
    pub status: String,
    pub reason: String,
    pub message: String,
    /// `Invalid` or `Degraded` became `True`: a Warning Event.
    pub warning: bool,
}

/// The vocabulary conditions whose status differs between `old` and `new`. A condition new in
/// `new` counts only when `True` (a fresh cluster does not announce everything that is not
/// happening).
pub fn transitions(old: &[Condition], new: &[Condition]) -> Vec<Transition> {
    new.iter()
        .filter_map(|c| {
            let t = ConditionType::from_str(&c.type_)?;
            let before = old
                .iter()
                .find(|o| o.type_ == c.type_)
                .map(|o| o.status.as_str());
            let flipped = match before {
                Some(b) => b != c.status,
                None => c.status == "True",
            };
            flipped.then(|| Transition {
                type_: t,
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                warning: c.status == "True"
                    && matches!(t, ConditionType::Invalid | ConditionType::Degraded),
            })
        })
        .collect()
}

/// Is condition `t` `True` in `conditions`?
pub fn is_true(conditions: &[Condition], t: ConditionType) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == t.as_str() && c.status == "True")
}

/// The phase shown in `kubectl get fsc`: the most urgent condition that is `True`.
pub fn phase(conditions: &[Condition]) -> Phase {
    use ConditionType as C;
    [
        (C::Invalid, Phase::Invalid),
        (C::Paused, Phase::Paused),
        (C::Degraded, Phase::Degraded),
        (C::Recovering, Phase::Recovering),
        (C::EpochChanging, Phase::EpochChanging),
        (C::Progressing, Phase::Progressing),
        (C::Available, Phase::Available),
    ]
    .into_iter()
    .find(|(c, _)| is_true(conditions, *c))
    .map_or(Phase::Pending, |(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid timestamp"))
    }

    fn get(cs: &[Condition], t: ConditionType) -> &Condition {
        cs.iter()
            .find(|c| c.type_ == t.as_str())
            .expect("condition present")
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let up = |s: bool, reason: &str| {
            vec![ConditionUpdate::new(
                ConditionType::Available,
                s,
                reason,
                "m",
            )]
        };
        let c1 = merge_conditions(&[], &up(false, "Forming"), Some(1), &t(100));
        assert_eq!(
            get(&c1, ConditionType::Available).last_transition_time,
            t(100)
        );
        // same status, new reason and generation: time kept, the rest updated
        let c2 = merge_conditions(&c1, &up(false, "Syncing"), Some(2), &t(200));
        let a = get(&c2, ConditionType::Available);
        assert_eq!(a.last_transition_time, t(100));
        assert_eq!(a.reason, "Syncing");
        assert_eq!(a.observed_generation, Some(2));
        // flip: time moves
        let c3 = merge_conditions(&c2, &up(true, "CommitteeServing"), Some(2), &t(300));
        assert_eq!(
            get(&c3, ConditionType::Available).last_transition_time,
            t(300)
        );
        assert_eq!(get(&c3, ConditionType::Available).status, "True");
    }

    #[test]
    fn untouched_and_foreign_conditions_are_kept_in_a_fixed_order() {
        let foreign = Condition {
            type_: "SomethingElse".into(),
            status: "True".into(),
            reason: "X".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: t(1),
        };
        let c1 = merge_conditions(
            std::slice::from_ref(&foreign),
            &[
                ConditionUpdate::new(ConditionType::Paused, true, "Paused", "spec.paused"),
                ConditionUpdate::new(ConditionType::Available, false, "Paused", ""),
            ],
            Some(1),
            &t(10),
        );
        let c2 = merge_conditions(
            &c1,
            &[ConditionUpdate::new(
                ConditionType::Degraded,
                false,
                "AllMembersUp",
                "",
            )],
            Some(1),
            &t(20),
        );
        let types: Vec<&str> = c2.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Available", "Degraded", "Paused", "SomethingElse"]);
        assert_eq!(get(&c2, ConditionType::Paused).last_transition_time, t(10));
        assert_eq!(c2[3], foreign);
    }

    #[test]
    fn transitions_are_status_flips() {
        let up = |ups: &[(ConditionType, bool, &str)]| {
            ups.iter()
                .map(|(t, s, r)| ConditionUpdate::new(*t, *s, *r, "m"))
                .collect::<Vec<_>>()
        };
        use ConditionType as C;
        let c1 = merge_conditions(
            &[],
            &up(&[
                (C::Invalid, true, "InvalidSpec"),
                (C::Paused, false, "Reconciling"),
            ]),
            Some(1),
            &t(1),
        );
        let tr = transitions(&[], &c1);
        assert_eq!(tr.len(), 1, "only the new True condition: {tr:?}");
        assert_eq!((tr[0].type_, tr[0].warning), (C::Invalid, true));
        // same statuses, other reasons: nothing to announce
        let c2 = merge_conditions(
            &c1,
            &up(&[(C::Invalid, true, "StillInvalid")]),
            Some(2),
            &t(2),
        );
        assert!(transitions(&c1, &c2).is_empty());
        // fixed: Invalid flips to False, a Normal event
        let c3 = merge_conditions(
            &c2,
            &up(&[(C::Invalid, false, "SpecValid")]),
            Some(3),
            &t(3),
        );
        let tr = transitions(&c2, &c3);
        assert_eq!(tr.len(), 1);
        assert_eq!((tr[0].status.as_str(), tr[0].warning), ("False", false));
    }

    #[test]
    fn phase_is_the_most_urgent_true_condition() {
        let now = t(0);
        let cs = |ups: &[(ConditionType, bool)]| {
            let ups: Vec<_> = ups
                .iter()
                .map(|(t, s)| ConditionUpdate::new(*t, *s, "R", ""))
                .collect();
            merge_conditions(&[], &ups, None, &now)
        };
        use ConditionType as C;
        assert_eq!(phase(&[]), Phase::Pending);
        assert_eq!(phase(&cs(&[(C::Available, true)])), Phase::Available);
        assert_eq!(
            phase(&cs(&[(C::Available, true), (C::EpochChanging, true)])),
            Phase::EpochChanging
        );
        assert_eq!(
            phase(&cs(&[
                (C::Available, false),
                (C::Degraded, true),
                (C::Recovering, true)
            ])),
            Phase::Degraded
        );
        assert_eq!(
            phase(&cs(&[(C::Degraded, true), (C::Paused, true)])),
            Phase::Paused
        );
        assert_eq!(
            phase(&cs(&[(C::Paused, true), (C::Invalid, true)])),
            Phase::Invalid
        );
        assert_eq!(phase(&cs(&[(C::Available, false)])), Phase::Pending);
    }
}
