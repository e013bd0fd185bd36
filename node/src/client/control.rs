//! Client of the control plane's API (docs/economics.md): prices, accounts, and buying,
//! extending and deleting blob lifetimes. Calls that spend are signed by the account's key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};

use super::blob::Registrar;
use crate::codec::BlobId;
use crate::proto::{self, control_client::ControlClient as Grpc};
use crate::protocol::{sign_request, AccountId, SignedLifetime};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control plane at {address}: {message}")]
    Rpc {
        address: String,
        code: tonic::Code,
        message: String,
    },
    #[error("control plane at {address}: invalid address: {message}")]
    Address { address: String, message: String },
    #[error("control plane at {address} sent invalid data: {message}")]
    Invalid { address: String, message: String },
}

impl ControlError {
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ControlError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A lifetime bought (or changed), what it cost and the balance left.
#[derive(Debug, Clone, Copy)]
pub struct Registered {
    pub lifetime: SignedLifetime,
    pub cost: u64,
    pub balance: u64,
}

/// A registration the control plane refused, with its gRPC code (`FAILED_PRECONDITION`: the
/// balance is short; `INVALID_ARGUMENT`: epochs out of range; `PERMISSION_DENIED`: the blob
/// belongs to another account; `UNAVAILABLE`: no market yet), so callers need not read text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub code: tonic::Code,
    pub message: String,
}

/// One blob to register.
#[derive(Debug, Clone, Copy)]
pub struct RegisterItem {
    pub blob: BlobId,
    pub encoded_size: u64,
    pub epochs: u32,
    pub deletable: bool,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Signed calls refused for their nonce (another call of the same account, signed later,
/// arrived first; nothing was applied) are signed again with a fresh nonce this often.
const NONCE_RETRIES: usize = 64;

#[derive(Clone)]
pub struct ControlClient {
    address: String,
    grpc: Grpc<Channel>,
}

/// Nonces: the clock in nanoseconds, strictly increasing within this process.
fn next_nonce() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

impl ControlClient {
    /// A client for the API at `address` (`host:port` or `http://host:port`); connects on
    /// first use.
    pub fn new(address: &str) -> Result<Self, ControlError> {
        let url = if address.contains("://") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        let endpoint = Endpoint::from_shared(url).map_err(|e| ControlError::Address {
            address: address.to_string(),
            message: e.to_string(),
        })?;
        Ok(Self {
            address: address.to_string(),
            grpc: Grpc::new(endpoint.connect_lazy()),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn err(&self, s: tonic::Status) -> ControlError {
        ControlError::Rpc {
            address: self.address.clone(),
            code: s.code(),
            message: s.message().to_string(),
        }
    }

    fn req<T>(msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(CALL_TIMEOUT);
        r
    }

    fn signed(key: &SigningKey, method: &str, body: Vec<u8>) -> proto::SignedRequest {
        let nonce = next_nonce();
        proto::SignedRequest {
            account: key.verifying_key().to_bytes().to_vec(),
            nonce,
            signature: sign_request(key, method, nonce, &body).to_vec(),
            body,
        }
    }

    /// A signed call, signed again when its nonce lost a race with a concurrent call.
    async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, ControlError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match f().await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if s.code() == tonic::Code::Aborted && tries < NONCE_RETRIES => continue,
                Err(s) => return Err(self.err(s)),
            }
        }
    }

    pub async fn prices(&self) -> Result<proto::Prices, ControlError> {
        self.grpc
            .clone()
            .get_prices(Self::req(proto::GetPricesRequest {}))
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.err(s))
    }

    pub async fn account(&self, id: &AccountId) -> Result<proto::Account, ControlError> {
        self.grpc
            .clone()
            .get_account(Self::req(proto::GetAccountRequest {
                account: id.0.to_vec(),
            }))
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.err(s))
    }

    /// Testnets: credit `id` with `amount` (0: the testnet's grant).
    pub async fn faucet(
        &self,
        id: &AccountId,
        amount: u64,
    ) -> Result<proto::Account, ControlError> {
        self.grpc
            .clone()
            .faucet(Self::req(proto::FaucetRequest {
                account: id.0.to_vec(),
                amount,
            }))
            .await
            .map(|r| r.into_inner())
            .map_err(|s| self.err(s))
    }

    fn registered(&self, r: proto::LifetimeResponse) -> Result<Registered, ControlError> {
        let lifetime =
            SignedLifetime::from_bytes(&r.lifetime).map_err(|e| ControlError::Invalid {
                address: self.address.clone(),
                message: e.to_string(),
            })?;
        Ok(Registered {
            lifetime,
            cost: r.cost,
            balance: r.balance,
        })
    }

    /// Register blobs in one signed request (each item is charged and registered, or refused
    /// with its reason and not charged).
    pub async fn register(
        &self,
        key: &SigningKey,
        items: &[RegisterItem],
    ) -> Result<Vec<Result<Registered, Refused>>, ControlError> {
        let body = proto::RegisterBody {
            items: items
                .iter()
                .map(|i| proto::RegisterItem {
                    blob_id: i.blob.as_bytes().to_vec(),
                    encoded_size: i.encoded_size,
                    epochs: i.epochs,
                    deletable: i.deletable,
                })
                .collect(),
        }
        .encode_to_vec();
        let r = self
            .call(|| {
                let mut g = self.grpc.clone();
                let req = Self::req(Self::signed(key, "Register", body.clone()));
                async move { g.register(req).await }
            })
            .await?;
        if r.results.len() != items.len() {
            return Err(ControlError::Invalid {
                address: self.address.clone(),
                message: format!("{} results for {} items", r.results.len(), items.len()),
            });
        }
        r.results
            .into_iter()
            .map(|x| match (x.code, x.ok) {
                (0, Some(ok)) => Ok(self.registered(ok).map_err(|e| Refused {
                    code: tonic::Code::Internal,
                    message: e.to_string(),
                })),
                (code, _) => Ok(Err(Refused {
                    code: tonic::Code::from_i32(code as i32),
                    message: x.message,
                })),
            })
            .collect()
    }

    /// Add `epochs` to the lifetime of `blob` (paid by `key`'s account).
    pub async fn extend(
        &self,
        key: &SigningKey,
        blob: &BlobId,
        epochs: u32,
    ) -> Result<Registered, ControlError> {
        let body = proto::ExtendBody {
            blob_id: blob.as_bytes().to_vec(),
            epochs,
        }
        .encode_to_vec();
        let r = self
            .call(|| {
                let mut g = self.grpc.clone();
                let req = Self::req(Self::signed(key, "Extend", body.clone()));
                async move { g.extend(req).await }
            })
            .await?;
        self.registered(r)
    }

    /// Delete `blob` (its owner, deletable blobs only).
    pub async fn delete(
        &self,
        key: &SigningKey,
        blob: &BlobId,
    ) -> Result<Registered, ControlError> {
        let body = proto::DeleteBody {
            blob_id: blob.as_bytes().to_vec(),
        }
        .encode_to_vec();
        let r = self
            .call(|| {
                let mut g = self.grpc.clone();
                let req = Self::req(Self::signed(key, "Delete", body.clone()));
                async move { g.delete(req).await }
            })
            .await?;
        self.registered(r)
    }
}

/// Most blobs registered by one signed request of an [`AccountRegistrar`].
pub const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<Registered, Refused>>;

/// Called with the outcome of every registration (e.g. to count it in metrics).
pub type RegistrationObserver = Arc<dyn Fn(&Result<Registered, Refused>) + Send + Sync>;

/// Registers blobs for one account: what `floe put`, the benchmarks and the gateway hand the
/// blob client. Registrations go to the control plane from one sender task, batched: a signed
/// request's nonce must exceed the account's last one, so requests signed in parallel and
/// arriving out of order would refuse each other (each refusal costs a round trip and a new
/// signature); one sender keeps them in order, and concurrent puts pay for their blobs with
/// one request — one signature, one journal sync on the control plane — up to [`MAX_BATCH`].
pub struct AccountRegistrar {
    account: AccountId,
    control_address: String,
    queue: mpsc::Sender<(RegisterItem, Reply)>,
}

impl AccountRegistrar {
    /// Start the sender task (needs a Tokio runtime; it ends when the registrar is dropped).
    pub fn start(control: ControlClient, key: SigningKey) -> Arc<Self> {
        Self::start_observed(control, key, None)
    }

    /// [`Self::start`], with every outcome handed to `observe`.
    pub fn start_observed(
        control: ControlClient,
        key: SigningKey,
        observe: Option<RegistrationObserver>,
    ) -> Arc<Self> {
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        let account = AccountId::of(&key);
        let control_address = control.address().to_string();
        tokio::spawn(send_batches(control, key, rx, observe));
        Arc::new(Self {
            account,
            control_address,
            queue,
        })
    }

    pub fn account(&self) -> AccountId {
        self.account
    }

    pub fn control_address(&self) -> &str {
        &self.control_address
    }

    /// Register one blob: charged, or refused with the control plane's reason and not charged.
    pub async fn register_item(&self, item: RegisterItem) -> Result<Registered, Refused> {
        let gone = || Refused {
            code: tonic::Code::Unavailable,
            message: "the registration task stopped".into(),
        };
        let (tx, rx) = oneshot::channel();
        self.queue.send((item, tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// Send what is queued, up to [`MAX_BATCH`] per request, one request at a time.
async fn send_batches(
    control: ControlClient,
    key: SigningKey,
    mut rx: mpsc::Receiver<(RegisterItem, Reply)>,
    observe: Option<RegistrationObserver>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let items: Vec<RegisterItem> = batch.iter().map(|(i, _)| *i).collect();
        let results = match control.register(&key, &items).await {
            Ok(results) => results,
            Err(e) => {
                // every caller gets the error; a CLI reports it once, a server logs it
                tracing::debug!(items = items.len(), "registration failed: {e}");
                let refused = Refused {
                    code: e.code().unwrap_or(tonic::Code::Unavailable),
                    message: e.to_string(),
                };
                vec![Err(refused); items.len()]
            }
        };
        for ((_, reply), r) in batch.drain(..).zip(results) {
            if let Some(f) = &observe {
                f(&r);
            }
            let _ = reply.send(r);
        }
    }
}

impl Registrar for AccountRegistrar {
    fn register(
        &self,
        blob: BlobId,
        encoded_size: u64,
        epochs: u32,
        deletable: bool,
    ) -> futures::future::BoxFuture<'_, Result<SignedLifetime, String>> {
        Box::pin(async move {
            self.register_item(RegisterItem {
                blob,
                encoded_size,
                epochs,
                deletable,
            })
            .await
            .map(|r| r.lifetime)
            .map_err(|e| e.message)
        })
    }
}
