//! The brain's link to the market (docs/economics.md). On the local testnet the market lives in
//! the supervisor's process ([`MarketLink::Local`]); on Kubernetes it lives in the
//! StorageCluster's control pod, on its own volume, and the operator's brain reaches it over
//! the `floe.v1.MarketAdmin` service ([`MarketLink::Remote`]); the control pod serves that
//! service by wrapping its own `Local` link ([`MarketAdminService`]), so both sides run the
//! same code.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floe_node::codec::BlobId;
use floe_node::proto::{self, market_admin_client::MarketAdminClient, market_admin_server};
use floe_node::protocol::{NodeId, SignedLifetime};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::economy::Economy;
use super::registry::{Event, Outcome, Settlement, Totals};

/// The largest message either side accepts (a challenge round asks about every eligible
/// blob at once: 34 bytes each).
const MAX_MESSAGE: usize = 64 << 20;
/// How long one call to a remote market may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    #[error("the market's journal: {0}")]
    Journal(String),
    #[error("the market at {address} answered {code:?}: {message}")]
    Rpc {
        address: String,
        code: tonic::Code,
        message: String,
    },
    #[error("the market at {address} sent invalid data: {message}")]
    Invalid { address: String, message: String },
}

/// What the brain and the metrics read of the market.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketView {
    pub epoch: u32,
    pub prices: (u64, u64),
    /// Sequence of the newest lifetime signed.
    pub head: u64,
    pub control_key: [u8; 32],
    pub totals: Totals,
}

/// Where the market is.
#[derive(Clone)]
pub enum MarketLink {
    Local(Arc<Mutex<Economy>>),
    Remote(Box<RemoteMarket>),
}

impl MarketLink {
    pub async fn view(&self) -> Result<MarketView, MarketError> {
        match self {
            MarketLink::Local(e) => {
                let g = e.lock().unwrap_or_else(|p| p.into_inner());
                let r = g.registry();
                Ok(MarketView {
                    epoch: r.epoch(),
                    prices: r.prices(),
                    head: r.head(),
                    control_key: r.control_key(),
                    totals: r.totals(),
                })
            }
            MarketLink::Remote(m) => {
                let v = m
                    .call(
                        |mut c, r| async move { c.get_view(r).await },
                        proto::MarketViewRequest {},
                    )
                    .await?;
                m.view_from(v)
            }
        }
    }

    /// The epoch and prices in force (journaled only when they change).
    pub async fn set_market(
        &self,
        epoch: u32,
        storage_price: u64,
        write_price: u64,
    ) -> Result<(), MarketError> {
        match self {
            MarketLink::Local(e) => {
                let mut g = e.lock().unwrap_or_else(|p| p.into_inner());
                let r = g.registry();
                if r.epoch() == epoch && r.prices() == (storage_price, write_price) {
                    return Ok(());
                }
                g.submit(Event::Market {
                    epoch,
                    storage_price,
                    write_price,
                })
                .map(|_| ())
                .map_err(|e| MarketError::Journal(e.to_string()))
            }
            MarketLink::Remote(m) => {
                let req = proto::SetMarketRequest {
                    epoch,
                    storage_price,
                    write_price,
                };
                m.call(|mut c, r| async move { c.set_market(r).await }, req)
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Pay epoch `epoch` (idempotent: settling an epoch again answers the recorded settlement).
    pub async fn settle(
        &self,
        epoch: u32,
        subsidy: u64,
        members: Vec<(NodeId, u64, bool)>,
    ) -> Result<Settlement, MarketError> {
        match self {
            MarketLink::Local(e) => {
                let out = e
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .submit(Event::Settle {
                        epoch,
                        subsidy,
                        members,
                    })
                    .map_err(|e| MarketError::Journal(e.to_string()))?;
                match out {
                    Outcome::Settled(s) => Ok(s),
                    other => Err(MarketError::Journal(format!("settling answered {other:?}"))),
                }
            }
            MarketLink::Remote(m) => {
                let req = proto::SettleRequest {
                    epoch,
                    subsidy,
                    members: members
                        .iter()
                        .map(|(id, shards, passed)| proto::SettleMember {
                            node_id: id.0.to_vec(),
                            shards: *shards,
                            passed: *passed,
                        })
                        .collect(),
                };
                let s = m
                    .call(|mut c, r| async move { c.settle(r).await }, req)
                    .await?;
                settlement_from(s).map_err(|message| m.invalid(message))
            }
        }
    }

    /// Up to `limit` signed lifetimes from sequence `from` on, as bytes.
    pub async fn lifetimes(&self, from: u64, limit: usize) -> Result<Vec<Vec<u8>>, MarketError> {
        match self {
            MarketLink::Local(e) => Ok(e
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .registry()
                .log_from(from, limit)
                .iter()
                .map(SignedLifetime::to_bytes)
                .collect()),
            MarketLink::Remote(m) => {
                let req = proto::GetLifetimesRequest {
                    from,
                    limit: limit.min(u32::MAX as usize) as u32,
                };
                let l = m
                    .call(|mut c, r| async move { c.get_lifetimes(r).await }, req)
                    .await?;
                Ok(l.lifetimes)
            }
        }
    }

    /// Which of `blobs` are stored in `epoch` (registered and neither expired nor deleted, or
    /// never registered), in order.
    pub async fn live(&self, epoch: u32, blobs: &[BlobId]) -> Result<Vec<bool>, MarketError> {
        match self {
            MarketLink::Local(e) => {
                let g = e.lock().unwrap_or_else(|p| p.into_inner());
                Ok(blobs
                    .iter()
                    .map(|b| g.registry().live_or_unknown(b, epoch))
                    .collect())
            }
            MarketLink::Remote(m) => {
                let req = proto::FilterLiveRequest {
                    epoch,
                    blob_ids: blobs.iter().map(|b| b.as_bytes().to_vec()).collect(),
                };
                let r = m
                    .call(|mut c, r| async move { c.filter_live(r).await }, req)
                    .await?;
                if r.live.len() != blobs.len() {
                    return Err(m.invalid(format!(
                        "{} answers for {} blobs",
                        r.live.len(),
                        blobs.len()
                    )));
                }
                Ok(r.live)
            }
        }
    }
}

/// A market in another process, reached over `floe.v1.MarketAdmin` with the admin token.
#[derive(Clone)]
pub struct RemoteMarket {
    address: String,
    token: String,
    client: MarketAdminClient<Channel>,
}

impl RemoteMarket {
    /// `address`: `http://host:port`. Connects on first use.
    pub fn new(address: &str, token: &str) -> Result<Self, MarketError> {
        let endpoint = Endpoint::from_shared(address.to_string())
            .map_err(|e| MarketError::Invalid {
                address: address.to_string(),
                message: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(5));
        Ok(RemoteMarket {
            address: address.to_string(),
            token: token.to_string(),
            client: MarketAdminClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn invalid(&self, message: String) -> MarketError {
        MarketError::Invalid {
            address: self.address.clone(),
            message,
        }
    }

    async fn call<Q, A, F, Fut>(&self, f: F, req: Q) -> Result<A, MarketError>
    where
        F: FnOnce(MarketAdminClient<Channel>, Request<Q>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<A>, Status>>,
    {
        let mut r = Request::new(req);
        r.set_timeout(CALL_TIMEOUT);
        if let Ok(v) = format!("Bearer {}", self.token).parse() {
            r.metadata_mut().insert("authorization", v);
        }
        let rpc = |s: Status| MarketError::Rpc {
            address: self.address.clone(),
            code: s.code(),
            message: s.message().to_string(),
        };
        match tokio::time::timeout(CALL_TIMEOUT, f(self.client.clone(), r)).await {
            Ok(Ok(a)) => Ok(a.into_inner()),
            Ok(Err(s)) => Err(rpc(s)),
            Err(_) => Err(rpc(Status::deadline_exceeded(format!(
                "no answer within {CALL_TIMEOUT:?}"
            )))),
        }
    }

    fn view_from(&self, v: proto::MarketView) -> Result<MarketView, MarketError> {
        let control_key: [u8; 32] = v
            .control_key
            .as_slice()
            .try_into()
            .map_err(|_| self.invalid("control_key is not 32 bytes".into()))?;
        Ok(MarketView {
            epoch: v.epoch,
            prices: (v.storage_price, v.write_price),
            head: v.head,
            control_key,
            totals: v.totals.unwrap_or_default().into(),
        })
    }
}

/// The totals field by field, both ways (the wire form and the registry's).
macro_rules! totals_fields {
    ($from:ty => $to:ty) => {
        impl From<$from> for $to {
            fn from(t: $from) -> Self {
                Self {
                    fees_paid: t.fees_paid,
                    subsidies: t.subsidies,
                    rewarded: t.rewarded,
                    rolled_over: t.rolled_over,
                    held: t.held,
                    registrations: t.registrations,
                    extensions: t.extensions,
                    deletions: t.deletions,
                    refused: t.refused,
                    balances: t.balances,
                    minted: t.minted,
                }
            }
        }
    };
}
totals_fields!(proto::MarketTotals => Totals);
totals_fields!(Totals => proto::MarketTotals);

fn node_id(b: &[u8]) -> Result<NodeId, String> {
    let a: [u8; 32] = b
        .try_into()
        .map_err(|_| format!("a node ID of {} bytes", b.len()))?;
    Ok(NodeId(a))
}

fn settlement_from(s: proto::Settlement) -> Result<Settlement, String> {
    let mut paid = BTreeMap::new();
    for p in s.paid {
        paid.insert(node_id(&p.node_id)?, p.amount);
    }
    Ok(Settlement {
        epoch: s.epoch,
        fees: s.fees,
        subsidy: s.subsidy,
        carried_in: s.carried_in,
        paid,
        rolled_over: s.rolled_over,
    })
}

fn settlement_to(s: &Settlement) -> proto::Settlement {
    proto::Settlement {
        epoch: s.epoch,
        fees: s.fees,
        subsidy: s.subsidy,
        carried_in: s.carried_in,
        paid: s
            .paid
            .iter()
            .map(|(id, amount)| proto::Payment {
                node_id: id.0.to_vec(),
                amount: *amount,
            })
            .collect(),
        rolled_over: s.rolled_over,
    }
}

/// The control pod's side of `floe.v1.MarketAdmin`: its own market, behind the admin token.
pub struct MarketAdminService {
    market: MarketLink,
    token: String,
}

impl MarketAdminService {
    pub fn new(economy: Arc<Mutex<Economy>>, token: &str) -> Self {
        MarketAdminService {
            market: MarketLink::Local(economy),
            token: token.to_string(),
        }
    }

    pub fn into_server(self) -> market_admin_server::MarketAdminServer<Self> {
        market_admin_server::MarketAdminServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    fn check<T>(&self, r: &Request<T>) -> Result<(), Status> {
        let got = r
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // compared in constant time: the token is the only guard
        let ok = got.is_some_and(|g| {
            g.len() == self.token.len()
                && g.bytes()
                    .zip(self.token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if self.token.is_empty() || !ok {
            return Err(Status::unauthenticated("a valid admin token is required"));
        }
        Ok(())
    }

    async fn view(&self) -> Result<proto::MarketView, Status> {
        let v = self.market.view().await.map_err(internal)?;
        Ok(proto::MarketView {
            epoch: v.epoch,
            storage_price: v.prices.0,
            write_price: v.prices.1,
            head: v.head,
            control_key: v.control_key.to_vec(),
            totals: Some(v.totals.into()),
        })
    }
}

fn internal(e: MarketError) -> Status {
    Status::internal(e.to_string())
}

/// The most blobs one FilterLive call may ask about (a challenge round asks once).
const MAX_FILTER: usize = 1_000_000;
/// The most lifetimes one page may carry.
const MAX_PAGE: u32 = 10_000;

#[tonic::async_trait]
impl market_admin_server::MarketAdmin for MarketAdminService {
    async fn get_view(
        &self,
        r: Request<proto::MarketViewRequest>,
    ) -> Result<Response<proto::MarketView>, Status> {
        self.check(&r)?;
        Ok(Response::new(self.view().await?))
    }

    async fn set_market(
        &self,
        r: Request<proto::SetMarketRequest>,
    ) -> Result<Response<proto::MarketView>, Status> {
        self.check(&r)?;
        let q = r.into_inner();
        self.market
            .set_market(q.epoch, q.storage_price, q.write_price)
            .await
            .map_err(internal)?;
        Ok(Response::new(self.view().await?))
    }

    async fn settle(
        &self,
        r: Request<proto::SettleRequest>,
    ) -> Result<Response<proto::Settlement>, Status> {
        self.check(&r)?;
        let q = r.into_inner();
        let members = q
            .members
            .iter()
            .map(|m| Ok((node_id(&m.node_id)?, m.shards, m.passed)))
            .collect::<Result<Vec<_>, String>>()
            .map_err(Status::invalid_argument)?;
        let s = self
            .market
            .settle(q.epoch, q.subsidy, members)
            .await
            .map_err(internal)?;
        Ok(Response::new(settlement_to(&s)))
    }

    async fn get_lifetimes(
        &self,
        r: Request<proto::GetLifetimesRequest>,
    ) -> Result<Response<proto::Lifetimes>, Status> {
        self.check(&r)?;
        let q = r.into_inner();
        let lifetimes = self
            .market
            .lifetimes(q.from, q.limit.min(MAX_PAGE) as usize)
            .await
            .map_err(internal)?;
        Ok(Response::new(proto::Lifetimes { lifetimes }))
    }

    async fn filter_live(
        &self,
        r: Request<proto::FilterLiveRequest>,
    ) -> Result<Response<proto::FilterLiveResponse>, Status> {
        self.check(&r)?;
        let q = r.into_inner();
        if q.blob_ids.len() > MAX_FILTER {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_FILTER} blobs per call"
            )));
        }
        let blobs = q
            .blob_ids
            .iter()
            .map(|b| {
                BlobId::from_slice(b)
                    .map_err(|e| Status::invalid_argument(format!("blob_ids: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let live = self.market.live(q.epoch, &blobs).await.map_err(internal)?;
        Ok(Response::new(proto::FilterLiveResponse { live }))
    }
}
