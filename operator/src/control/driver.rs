//! Runs the brain against real members: one round = ask the body what it wants, ask every
//! member how it is, step the state machine, carry out its commands, persist.
//!
//! A body (the local testnet, the Kubernetes operator) implements [`Body`]: it knows which nodes
//! exist, persists the state and stops released nodes. Members are reached over their gRPC API
//! ([`Members`]) in both bodies, so the driver is the same code for both.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use floe_node::client::{ClientError, NodeClient};
use floe_node::codec::{BlobId, BlobMetadata};
use floe_node::proto;
use floe_node::protocol::{Committee, NodeId};
use futures::future::join_all;

use super::brain::{Brain, BrainState, Candidate, Command, Inputs, Report};
use super::challenge::{self, Eligible, MemberResult, Outcome, Round};
use super::market::{MarketError, MarketLink};
use super::metrics::ControlMetrics;

/// What went wrong in a body: callers decide by the kind (e.g. a regression means another
/// writer is ahead), the message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyErrorKind {
    /// The stored state could not be read, or does not parse.
    Load,
    /// The state could not be encoded or written.
    Save,
    /// The state to store is older than the one stored (another writer is ahead of this one).
    Regression,
    /// Finding the nodes, or stopping one, failed.
    Nodes,
    /// The market (the control pod on Kubernetes) did not answer or could not journal.
    Market,
}

fn market_error(e: MarketError) -> BodyError {
    BodyError::new(BodyErrorKind::Market, e.to_string())
}

/// An error of the body (persistence, process or pod handling).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BodyError {
    pub kind: BodyErrorKind,
    pub message: String,
}

impl BodyError {
    pub fn new(kind: BodyErrorKind, message: impl Into<String>) -> Self {
        BodyError {
            kind,
            message: message.into(),
        }
    }

    /// A refused regression (`brain::check_monotonic`).
    pub fn regression(e: super::brain::StateError) -> Self {
        Self::new(BodyErrorKind::Regression, e.to_string())
    }
}

/// What the brain needs from whatever runs the nodes.
pub trait Body: Send {
    /// The nodes that exist and what the operator wants of each.
    fn candidates(&mut self) -> impl Future<Output = Result<Vec<Candidate>, BodyError>> + Send;
    /// Persist the state atomically (called after every round that changed it).
    fn save(&mut self, state: &BrainState) -> impl Future<Output = Result<(), BodyError>> + Send;
    /// `node` left the committee and the change completed: it may be stopped.
    fn release(
        &mut self,
        node: &NodeId,
        name: &str,
    ) -> impl Future<Output = Result<(), BodyError>> + Send;
    /// True once when someone asked for the next epoch to start now.
    fn take_force_change(&mut self) -> bool {
        false
    }
}

/// Challenge settings (PROTOCOL.md §7).
#[derive(Debug, Clone)]
pub struct ChallengeSettings {
    /// Items per member per epoch (see [`challenge::default_sample_size`]).
    pub samples: usize,
    /// Deadline for a member's answer.
    pub timeout: Duration,
}

/// The members' gRPC API as the control plane uses it (admin calls carry the token).
pub struct Members {
    token: String,
    clients: HashMap<String, NodeClient>,
    /// Admin ports the members advertise (`NodeInfo.admin_port`; the admin API listens apart).
    admin_ports: HashMap<String, u32>,
    max_message: usize,
}

/// How long one observation may take before the member counts as unreachable this round.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long handing a committee to one member may take (retried next round).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Members {
    pub fn new(admin_token: &str) -> Self {
        Self {
            token: admin_token.to_string(),
            clients: HashMap::new(),
            admin_ports: HashMap::new(),
            max_message: 96 << 20,
        }
    }

    /// A client for member `id` at `address` (over TLS only `id` is accepted: the admin token
    /// goes to no one else).
    fn client(&mut self, id: NodeId, address: &str) -> Option<NodeClient> {
        if let Some(c) = self.clients.get(address).filter(|c| c.node() == Some(id)) {
            return Some(c.clone());
        }
        let mut c = NodeClient::for_node(address, id, self.max_message).ok()?;
        if let Some(port) = self.admin_ports.get(address).filter(|p| **p != 0) {
            c = c
                .with_admin_address(&NodeClient::admin_address_of(address, *port))
                .ok()?;
        }
        let c = c.with_admin_token(&self.token);
        self.clients.insert(address.to_string(), c.clone());
        Some(c)
    }

    /// Info and sync status of `node` at `address`; None when it does not answer in time or is
    /// another node than expected.
    async fn report(client: NodeClient, expect: NodeId) -> Option<(Report, u32)> {
        let info = tokio::time::timeout(OBSERVE_TIMEOUT, client.info())
            .await
            .ok()?
            .ok()?;
        if info.node_id != expect.0 {
            return None;
        }
        let admin_port = info.admin_port;
        let client = if admin_port == 0 {
            client
        } else {
            let a = NodeClient::admin_address_of(client.address(), admin_port);
            client.with_admin_address(&a).ok()?
        };
        let sync = tokio::time::timeout(OBSERVE_TIMEOUT, client.sync_status())
            .await
            .ok()
            .and_then(Result::ok);
        let status = match proto::NodeStatus::try_from(info.status) {
            Ok(proto::NodeStatus::Active) => "active",
            Ok(proto::NodeStatus::Recovering) => "recovering",
            Ok(proto::NodeStatus::Syncing) => "syncing",
            _ => "standby",
        };
        Some((
            Report {
                epoch: info.epoch,
                status: status.into(),
                stored_bytes: info.stored_bytes,
                blobs: info.blobs,
                sync_target: sync.as_ref().map_or(0, |s| s.target_epoch),
                sync_done: sync.as_ref().is_some_and(|s| s.done),
                shards_pending: sync.as_ref().map_or(0, |s| s.shards_pending.len()),
                blobs_synced: sync.as_ref().map_or(0, |s| s.blobs_done),
                blobs_to_sync: sync.as_ref().map_or(0, |s| s.blobs_total),
                recovery_backlog: sync
                    .as_ref()
                    .map_or(info.recovery_backlog, |s| s.recovery_backlog),
                lifetime_seq: info.lifetime_seq,
                storage_price_vote: info.storage_price_vote,
                write_price_vote: info.write_price_vote,
            },
            admin_port,
        ))
    }

    /// Reports of every node at once.
    pub async fn observe(&mut self, nodes: &[(NodeId, String)]) -> BTreeMap<NodeId, Report> {
        let calls: Vec<_> = nodes
            .iter()
            .filter_map(|(id, a)| self.client(*id, a).map(|c| (*id, c)))
            .map(|(id, c)| async move { (id, Self::report(c, id).await) })
            .collect();
        let addresses: HashMap<NodeId, &String> = nodes.iter().map(|(id, a)| (*id, a)).collect();
        let mut out = BTreeMap::new();
        for (id, r) in join_all(calls).await {
            let Some((report, port)) = r else { continue };
            if let Some(a) = addresses.get(&id) {
                if self.admin_ports.insert((*a).clone(), port) != Some(port) {
                    // admin calls go elsewhere now: rebuild the cached client
                    self.clients.remove(*a);
                }
            }
            out.insert(id, report);
        }
        out
    }

    /// Hand committee `c` to one member (admin `SetCommittee`).
    pub async fn publish_with(client: &NodeClient, c: &Committee) -> Result<(), String> {
        match client.set_committee(c).await {
            Ok(()) => Ok(()),
            // the node is already past this epoch: nothing to do (stale command dropped)
            Err(ClientError::StaleCommittee { .. }) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Certified blobs a member lists (all pages, bounded), with the epoch they were certified in.
    async fn certified(client: &NodeClient) -> BTreeMap<BlobId, u32> {
        let mut out = BTreeMap::new();
        let mut after = None;
        for _ in 0..10_000 {
            let Ok(Ok((certs, more))) =
                tokio::time::timeout(OBSERVE_TIMEOUT * 3, client.list_certified(after, 1000)).await
            else {
                break;
            };
            let last = certs.last().map(|c| c.blob_id);
            for c in certs {
                out.insert(c.blob_id, c.epoch);
            }
            // a page that does not advance the cursor ends the listing
            if !more || last.is_none() || last == after {
                break;
            }
            after = last;
        }
        out
    }

    /// One challenge round over the blobs certified before `epoch` began (with a market: those
    /// whose lifetime is not over, which nodes may have collected; a market that does not
    /// answer fails the round, which the brain asks for again next round), `samples` items per
    /// member, answers judged against metadata fetched from other members and verified against
    /// the blob ID.
    pub async fn challenge_round(
        &mut self,
        epoch: u32,
        committee: &Committee,
        settings: &ChallengeSettings,
        reports: &BTreeMap<NodeId, Report>,
        market: Option<&MarketLink>,
    ) -> Result<Round, MarketError> {
        let mut seed = [0u8; 32];
        if getrandom::fill(&mut seed).is_err() {
            // no OS randomness: fall back to the clock mixed with the epoch (still unknown to
            // nodes in advance, and recorded like any seed)
            seed = *blake3::hash(format!("{}:{epoch}", now_ms()).as_bytes()).as_bytes();
        }
        let drawn_at_ms = now_ms();
        let members: Vec<(NodeId, NodeClient)> = committee
            .members
            .iter()
            .filter_map(|m| self.client(m.node_id, &m.address).map(|c| (m.node_id, c)))
            .collect();
        // only members that answered this round are asked for lists and metadata, and one that
        // fails to answer within the round is not asked again: a dead member costs one timeout
        let mut silent: std::collections::BTreeSet<NodeId> = committee
            .members
            .iter()
            .map(|m| m.node_id)
            .filter(|id| !reports.contains_key(id))
            .collect();
        let lists = join_all(
            members
                .iter()
                .filter(|(id, _)| !silent.contains(id))
                .map(|(_, c)| Self::certified(c)),
        )
        .await;
        let mut all: BTreeMap<BlobId, u32> = BTreeMap::new();
        for l in lists {
            all.extend(l);
        }
        let mut before: Vec<BlobId> = all
            .into_iter()
            .filter(|(_, e)| *e < epoch)
            .map(|(b, _)| b)
            .collect();
        if let Some(m) = market {
            let live = m.live(epoch, &before).await?;
            let mut keep = live.into_iter();
            before.retain(|_| keep.next().unwrap_or(false));
        }
        let eligible = Eligible::new(before);
        let n = committee.n_shards as usize;
        let mut results = BTreeMap::new();
        let mut meta: BTreeMap<BlobId, (BlobMetadata, NodeId)> = BTreeMap::new();
        let mut jobs = Vec::new();
        for m in &committee.members {
            let items = challenge::derive_items(
                &seed,
                &m.node_id,
                &m.shards,
                n,
                &eligible,
                settings.samples,
            );
            // metadata from another member, verified against the blob ID
            let mut mds = BTreeMap::new();
            for b in items
                .iter()
                .map(|i| i.blob)
                .collect::<std::collections::BTreeSet<_>>()
            {
                let cached = meta.get(&b).filter(|(_, src)| *src != m.node_id);
                let md = match cached {
                    Some((md, _)) => Some(md.clone()),
                    None => {
                        let mut found = None;
                        for (src, c) in members.iter().filter(|(id, _)| *id != m.node_id) {
                            if silent.contains(src) {
                                continue;
                            }
                            match tokio::time::timeout(OBSERVE_TIMEOUT, c.get_metadata(&b)).await {
                                Ok(Ok(md)) => {
                                    meta.insert(b, (md.clone(), *src));
                                    found = Some(md);
                                    break;
                                }
                                // no answer in time: leave this member out for the rest of the round
                                Err(_) => {
                                    silent.insert(*src);
                                }
                                // an answer (e.g. NOT_FOUND, or metadata that does not verify)
                                Ok(Err(_)) => {}
                            }
                        }
                        found
                    }
                };
                if let Some(md) = md {
                    mds.insert(b, md);
                }
            }
            let client = members
                .iter()
                .find(|(id, _)| *id == m.node_id)
                .map(|(_, c)| c.clone());
            jobs.push((m.node_id, items, mds, client));
        }
        let timeout = settings.timeout;
        let answered = join_all(jobs.into_iter().map(|(id, items, mds, client)| async move {
            let req = proto::ChallengeRequest {
                epoch,
                items: items
                    .iter()
                    .map(|i| proto::ChallengeItem {
                        blob_id: i.blob.as_bytes().to_vec(),
                        pair_index: i.pair as u32,
                        axis: proto::Axis::from(i.axis) as i32,
                        symbol_index: i.symbol as u32,
                    })
                    .collect(),
            };
            let answers = match client {
                Some(c) if !items.is_empty() => {
                    tokio::time::timeout(timeout, c.answer_challenge(req))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .map(|r| (r.symbols, r.bytes_read))
                }
                _ => Some((Vec::new(), 0)),
            };
            (id, items, mds, answers)
        }))
        .await;
        for (id, items, mds, answers) in answered {
            let result = match answers {
                None => MemberResult {
                    outcome: Outcome::TimedOut { items: items.len() },
                    bytes_read: 0,
                    bytes_answered: 0,
                    stored_bytes: reports.get(&id).map_or(0, |r| r.stored_bytes),
                },
                Some((answers, bytes_read)) => {
                    let outcome = challenge::judge_all(&items, &answers, &mds);
                    MemberResult {
                        outcome,
                        bytes_read,
                        bytes_answered: answers.iter().map(|a| a.len() as u64).sum(),
                        stored_bytes: reports.get(&id).map_or(0, |r| r.stored_bytes),
                    }
                }
            };
            results.insert(id, result);
        }
        Ok(Round {
            epoch,
            drawn_at_ms,
            seed,
            eligible_blobs: eligible.blobs.len(),
            eligible_digest: eligible.digest(),
            samples: settings.samples,
            results,
        })
    }
}

/// OS randomness for the challenge moment.
fn os_jitter() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

/// The brain, its members and its body, run round by round.
pub struct Driver<B: Body> {
    pub brain: Brain,
    pub body: B,
    pub members: Members,
    pub challenges: ChallengeSettings,
    pub metrics: ControlMetrics,
    saved: Option<BrainState>,
    /// The market, when this network sells storage (docs/economics.md).
    pub market: Option<MarketLink>,
}

/// Lifetimes sent to one member per round (the rest follow in later rounds).
const LIFETIME_PAGE: usize = 2048;

impl<B: Body> Driver<B> {
    pub fn new(
        brain: Brain,
        body: B,
        members: Members,
        challenges: ChallengeSettings,
        metrics: ControlMetrics,
    ) -> Self {
        let saved = Some(brain.state.clone());
        metrics.update(&brain.state);
        Self {
            brain,
            body,
            members,
            challenges,
            metrics,
            saved,
            market: None,
        }
    }

    /// Sell storage: committees carry the market's control key (`control_key`, which the
    /// caller knows: the local supervisor from its economy, the operator from the cluster's
    /// Secret) and the voted prices, epochs are paid through it, and members are fed its
    /// lifetime log.
    pub fn with_market(
        mut self,
        market: MarketLink,
        control_key: [u8; 32],
        max_epochs_ahead: u32,
    ) -> Self {
        self.set_market(Some((market, control_key, max_epochs_ahead)));
        self
    }

    /// Change (or end, with `None`) the market; the next committee carries it.
    pub fn set_market(&mut self, market: Option<(MarketLink, [u8; 32], u32)>) {
        match market {
            Some((link, control_key, max_epochs_ahead)) => {
                self.brain.market = Some(super::brain::MarketParams {
                    control_key,
                    max_epochs_ahead,
                });
                self.market = Some(link);
            }
            None => {
                self.brain.market = None;
                self.market = None;
            }
        }
    }

    /// Tell the market the epoch and prices in force (journaled when they change).
    async fn sync_market(&self) -> Result<(), BodyError> {
        let Some(m) = &self.market else {
            return Ok(());
        };
        let Some(c) = &self.brain.state.committee else {
            return Ok(());
        };
        let Some(ec) = c.economics else {
            return Ok(());
        };
        m.set_market(c.epoch, ec.storage_price, ec.write_price)
            .await
            .map_err(market_error)
    }

    /// Feed members the lifetimes they have not applied yet (a page each per round).
    async fn push_lifetimes(&mut self, reports: &BTreeMap<NodeId, Report>, head: u64) {
        let Some(m) = &self.market else {
            return;
        };
        let mut jobs = Vec::new();
        let mut pages: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
        for (id, r) in reports {
            if r.lifetime_seq >= head {
                continue;
            }
            let first = r.lifetime_seq + 1;
            let page = match pages.get(&first) {
                Some(p) => p.clone(),
                None => match m.lifetimes(first, LIFETIME_PAGE).await {
                    Ok(p) => {
                        pages.insert(first, p.clone());
                        p
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the lifetime log failed; retried next round");
                        return;
                    }
                },
            };
            let Some(address) = self.brain.state.members.get(id).map(|m| m.address.clone()) else {
                continue;
            };
            let Some(client) = self.members.client(*id, &address) else {
                continue;
            };
            let node = *id;
            jobs.push(async move {
                let err = match tokio::time::timeout(
                    PUBLISH_TIMEOUT,
                    client.apply_lifetimes(first, page),
                )
                .await
                {
                    Ok(Ok(_)) => return,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {PUBLISH_TIMEOUT:?}"),
                };
                tracing::warn!(node = %node.short(), error = %err, "feeding lifetimes failed; retried next round");
            });
        }
        join_all(jobs).await;
    }

    /// Every node the brain should look at: candidates and members of the committees in play.
    fn watched(&self, candidates: &[Candidate]) -> Vec<(NodeId, String)> {
        let mut m: BTreeMap<NodeId, String> = BTreeMap::new();
        for c in candidates {
            m.insert(c.node_id, c.address.clone());
        }
        for (id, r) in &self.brain.state.members {
            if !r.released {
                m.entry(*id).or_insert_with(|| r.address.clone());
            }
        }
        m.into_iter().collect()
    }

    /// One round. Errors of single members are part of the state (unreachable, stuck); only
    /// the body's own failures are returned.
    pub async fn round(&mut self) -> Result<(), BodyError> {
        let candidates = self.body.candidates().await?;
        let watched = self.watched(&candidates);
        let reports = self.members.observe(&watched).await;
        let inputs = Inputs {
            now_ms: now_ms(),
            candidates,
            reports: reports.clone(),
            force_change: self.body.take_force_change(),
        };
        let epoch_before = self.brain.state.epoch;
        let was_changing = matches!(self.brain.state.phase, super::brain::Phase::Changing { .. });
        let commands = self.brain.step(&inputs, os_jitter);
        // committees go out concurrently, one queue per node (a joiner gets epoch e, then e+1),
        // each call bounded: a member that hangs cannot hold the round up
        let mut publishes: BTreeMap<NodeId, (String, Vec<Committee>)> = BTreeMap::new();
        let mut rest = Vec::new();
        for cmd in commands {
            match cmd {
                Command::Publish {
                    node,
                    address,
                    committee,
                } => publishes
                    .entry(node)
                    .or_insert_with(|| (address, Vec::new()))
                    .1
                    .push(committee),
                other => rest.push(other),
            }
        }
        let jobs: Vec<_> = publishes
            .into_iter()
            .filter_map(|(node, (address, committees))| {
                let client = self.members.client(node, &address)?;
                Some(async move {
                    for c in committees {
                        let r = tokio::time::timeout(PUBLISH_TIMEOUT, Members::publish_with(&client, &c)).await;
                        let err = match r {
                            Ok(Ok(())) => continue,
                            Ok(Err(e)) => e,
                            Err(_) => format!("no answer within {PUBLISH_TIMEOUT:?}"),
                        };
                        tracing::warn!(node = %node.short(), epoch = c.epoch, error = %err, "publishing the committee failed; retried next round");
                        break;
                    }
                })
            })
            .collect();
        join_all(jobs).await;
        for cmd in rest {
            match cmd {
                Command::Publish { .. } => {}
                Command::Challenge { epoch, committee } => {
                    tracing::info!(epoch, "challenge round");
                    let round = match self
                        .members
                        .challenge_round(
                            epoch,
                            &committee,
                            &self.challenges,
                            &reports,
                            self.market.as_ref(),
                        )
                        .await
                    {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(epoch, error = %e, "the market did not say which blobs are live; the challenge round runs again next round");
                            continue;
                        }
                    };
                    for (id, r) in &round.results {
                        self.metrics
                            .challenges
                            .with_label_values(&[r.outcome.label()])
                            .inc();
                        if !r.outcome.passed() {
                            tracing::warn!(epoch, node = %id.short(), outcome = ?r.outcome, "challenge not passed");
                        }
                    }
                    self.brain.record_challenges(round);
                }
                Command::Settle {
                    epoch,
                    subsidy,
                    members,
                } => {
                    let Some(m) = &self.market else {
                        continue;
                    };
                    match m.settle(epoch, subsidy, members.clone()).await {
                        Ok(s) => {
                            tracing::info!(
                                epoch,
                                fees = s.fees,
                                subsidy,
                                paid = s.paid.values().sum::<u64>(),
                                rolled_over = s.rolled_over,
                                "epoch settled"
                            );
                            self.brain.record_settlement(&members, &s);
                        }
                        // its fees stay held and go into the next epoch's settlement
                        Err(e) => {
                            tracing::warn!(epoch, error = %e, "settling the epoch failed; its fees go to the next settlement")
                        }
                    }
                }
                Command::Release { node, name } => {
                    tracing::info!(node = %node.short(), %name, "member drained; releasing it");
                    self.body.release(&node, &name).await?;
                }
            }
        }
        if self.brain.state.epoch != epoch_before {
            tracing::info!(epoch = self.brain.state.epoch, "epoch started");
        } else if !was_changing
            && matches!(self.brain.state.phase, super::brain::Phase::Changing { .. })
        {
            tracing::info!(to = self.brain.state.epoch + 1, "epoch change started");
        }
        self.sync_market().await?;
        if let Some(m) = &self.market {
            match m.view().await {
                Ok(v) => {
                    self.metrics.update_economy(&v);
                    self.push_lifetimes(&reports, v.head).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the market did not answer; lifetimes are fed next round")
                }
            }
        }
        if self.saved.as_ref() != Some(&self.brain.state) {
            self.body.save(&self.brain.state).await?;
            self.saved = Some(self.brain.state.clone());
        }
        self.metrics.update(&self.brain.state);
        Ok(())
    }
}
