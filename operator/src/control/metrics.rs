//! The control plane's Prometheus metrics (prefix `floe_control_`), derived from the brain's
//! state after every round; the testnet supervisor and the operator serve them on `/metrics`.

use prometheus::{
    Encoder, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::brain::{BrainState, Phase};

#[derive(Clone)]
pub struct ControlMetrics {
    pub registry: Registry,
    pub epoch: IntGauge,
    pub changing: IntGauge,
    pub stuck: IntGauge,
    pub last_change_seconds: prometheus::Gauge,
    pub members: IntGauge,
    pub member_shards: IntGaugeVec,
    pub member_stake: IntGaugeVec,
    pub member_up: IntGaugeVec,
    pub member_sync_pending: IntGaugeVec,
    pub member_recovery_backlog: IntGaugeVec,
    pub rewards: GaugeVec,
    pub rewards_issued: IntGauge,
    pub rewards_withheld: IntGauge,
    pub challenges: IntCounterVec,
    pub last_challenge: IntGaugeVec,
    /// The market (docs/economics.md): prices, registrations, money.
    pub economy: IntGaugeVec,
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("metric")
}
fn gauge_vec(name: &str, help: &str) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), &["node"]).expect("metric")
}

impl ControlMetrics {
    pub fn new() -> Self {
        Self::with_registry(Registry::new())
    }

    /// Metrics of one cluster among many (the operator): every series carries `cluster`.
    pub fn for_cluster(cluster: &str) -> Self {
        let labels =
            std::collections::HashMap::from([("cluster".to_string(), cluster.to_string())]);
        Self::with_registry(Registry::new_custom(None, Some(labels)).expect("valid label"))
    }

    fn with_registry(registry: Registry) -> Self {
        let m = Self {
            registry,
            epoch: gauge(
                "floe_control_epoch",
                "Current epoch (0 before the first committee)",
            ),
            changing: gauge(
                "floe_control_epoch_changing",
                "1 while an epoch change runs",
            ),
            stuck: gauge(
                "floe_control_epoch_change_stuck",
                "1 while an epoch change is taking longer than expected",
            ),
            last_change_seconds: prometheus::Gauge::new(
                "floe_control_epoch_change_duration_seconds",
                "Wall time of the last completed epoch change",
            )
            .expect("metric"),
            members: gauge("floe_control_members", "Members of the current committee"),
            member_shards: gauge_vec("floe_control_member_shards", "Shards per member"),
            member_stake: gauge_vec("floe_control_member_stake", "Stake per member"),
            member_up: gauge_vec(
                "floe_control_member_up",
                "1 if the member answered the last round",
            ),
            member_sync_pending: gauge_vec(
                "floe_control_member_sync_shards_pending",
                "Shards a member is still pulling",
            ),
            member_recovery_backlog: gauge_vec(
                "floe_control_member_recovery_backlog",
                "Slivers a member still has to recover",
            ),
            rewards: GaugeVec::new(
                Opts::new(
                    "floe_control_rewards_total",
                    "Reward units paid per node, all epochs",
                ),
                &["node"],
            )
            .expect("metric"),
            rewards_issued: gauge("floe_control_rewards_issued_total", "Reward units issued"),
            rewards_withheld: gauge(
                "floe_control_rewards_withheld_total",
                "Reward units of epochs in which no member passed",
            ),
            challenges: IntCounterVec::new(
                Opts::new(
                    "floe_control_challenges_total",
                    "Members' challenge results (passed, failed, timed_out)",
                ),
                &["result"],
            )
            .expect("metric"),
            economy: IntGaugeVec::new(
                Opts::new(
                    "floe_control_economy",
                    "The storage market by quantity: storage_price, write_price, registrations, extensions, deletions, refused, fees_paid, subsidies, rewarded, rolled_over, held, balances, lifetimes",
                ),
                &["quantity"],
            )
            .expect("metric"),
            last_challenge: IntGaugeVec::new(
                Opts::new(
                    "floe_control_member_challenge_passed",
                    "1 if the member passed its last challenge, 0 if not",
                ),
                &["node"],
            )
            .expect("metric"),
        };
        for c in [
            &m.epoch,
            &m.changing,
            &m.stuck,
            &m.members,
            &m.rewards_issued,
            &m.rewards_withheld,
        ] {
            m.registry.register(Box::new(c.clone())).expect("register");
        }
        for c in [
            &m.member_shards,
            &m.member_stake,
            &m.member_up,
            &m.member_sync_pending,
            &m.member_recovery_backlog,
            &m.last_challenge,
            &m.economy,
        ] {
            m.registry.register(Box::new(c.clone())).expect("register");
        }
        m.registry
            .register(Box::new(m.last_change_seconds.clone()))
            .expect("register");
        m.registry
            .register(Box::new(m.rewards.clone()))
            .expect("register");
        m.registry
            .register(Box::new(m.challenges.clone()))
            .expect("register");
        for r in ["passed", "failed", "timed_out"] {
            m.challenges.with_label_values(&[r]);
        }
        m
    }

    /// Refresh the market's gauges.
    pub fn update_economy(&self, v: &super::market::MarketView) {
        let t = v.totals;
        let (sp, wp) = v.prices;
        let clamp = |v: u64| v.min(i64::MAX as u64) as i64;
        for (k, v) in [
            ("storage_price", sp),
            ("write_price", wp),
            ("registrations", t.registrations),
            ("extensions", t.extensions),
            ("deletions", t.deletions),
            ("refused", t.refused),
            ("fees_paid", t.fees_paid),
            ("subsidies", t.subsidies),
            ("rewarded", t.rewarded),
            ("rolled_over", t.rolled_over),
            ("held", t.held),
            ("balances", t.balances),
            ("lifetimes", v.head),
        ] {
            self.economy.with_label_values(&[k]).set(clamp(v));
        }
    }

    /// Refresh the gauges from the state.
    pub fn update(&self, s: &BrainState) {
        self.epoch.set(s.epoch as i64);
        self.changing
            .set(matches!(s.phase, Phase::Changing { .. }) as i64);
        self.stuck
            .set(matches!(s.phase, Phase::Changing { stuck: Some(_), .. }) as i64);
        if let Some(h) = s.history.last() {
            self.last_change_seconds.set(h.change_ms as f64 / 1000.0);
        }
        self.members
            .set(s.committee.as_ref().map_or(0, |c| c.members.len() as i64));
        for v in [
            &self.member_shards,
            &self.member_stake,
            &self.member_up,
            &self.member_sync_pending,
            &self.member_recovery_backlog,
            &self.last_challenge,
        ] {
            v.reset();
        }
        self.rewards.reset();
        for (id, r) in &s.members {
            if r.released {
                continue;
            }
            let node = r.name.as_str();
            let shards = s.committee.as_ref().map_or(0, |c| c.weight(id) as i64);
            self.member_shards.with_label_values(&[node]).set(shards);
            self.member_stake
                .with_label_values(&[node])
                .set(r.stake.min(i64::MAX as u64) as i64);
            self.member_up
                .with_label_values(&[node])
                .set(r.unreachable_since_ms.is_none() as i64);
            if let Some(rep) = &r.last_report {
                self.member_sync_pending
                    .with_label_values(&[node])
                    .set(rep.shards_pending as i64);
                self.member_recovery_backlog
                    .with_label_values(&[node])
                    .set(rep.recovery_backlog as i64);
            }
            if let Some(res) = s.last_round.as_ref().and_then(|x| x.results.get(id)) {
                self.last_challenge
                    .with_label_values(&[node])
                    .set(res.outcome.passed() as i64);
            }
            self.rewards
                .with_label_values(&[node])
                .set(*s.ledger.totals.get(id).unwrap_or(&0) as f64);
        }
        self.rewards_issued
            .set(s.ledger.issued.min(i64::MAX as u64) as i64);
        self.rewards_withheld
            .set(s.ledger.withheld.min(i64::MAX as u64) as i64);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for ControlMetrics {
    fn default() -> Self {
        Self::new()
    }
}
