//! The publisher's account: on a network that sells storage (its committee carries a control
//! key), every blob the gateway stores is registered with the control plane and paid from the
//! gateway's own account, as Walrus's publisher pays from its own wallet (docs/gateway.md).
//!
//! Registrations of concurrent requests go to the control plane from one task, batched: a
//! signed request's nonce must exceed the account's last one, so requests signed in parallel
//! and arriving out of order would refuse each other; one sender keeps them in order and lets
//! a busy gateway pay for many blobs with one request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use floe_node::client::control::{ControlClient, Refused, RegisterItem, Registered};
use floe_node::client::Registrar;
use floe_node::codec::BlobId;
use floe_node::protocol::{AccountId, SignedLifetime};
use tokio::sync::{mpsc, oneshot};

use super::metrics::Metrics;

/// Most blobs registered by one request to the control plane.
pub const MAX_BATCH: usize = 256;
/// Attempts of a request refused for its nonce (another replica sharing the key signed later
/// but arrived first); nothing is charged for a refused request, so it is signed again.
const NONCE_ATTEMPTS: u32 = 5;

type Reply = oneshot::Sender<Result<Registered, Refused>>;

/// The account the gateway pays from and the queue of registrations waiting to be sent.
pub struct Publisher {
    account: AccountId,
    control_address: String,
    queue: mpsc::Sender<(RegisterItem, Reply)>,
}

impl Publisher {
    /// Start the sender task (needs a Tokio runtime); outcomes are counted in `metrics`.
    pub fn start(control: ControlClient, key: SigningKey, metrics: Metrics) -> Arc<Self> {
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        let account = AccountId::of(&key);
        let control_address = control.address().to_string();
        tokio::spawn(send_batches(control, key, rx, metrics));
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

    /// Register one blob (charged, or refused with the control plane's reason and not charged).
    pub async fn register(&self, item: RegisterItem) -> Result<Registered, Refused> {
        let gone = || Refused {
            code: tonic::Code::Unavailable,
            message: "the gateway's registration task stopped".into(),
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
    metrics: Metrics,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let items: Vec<RegisterItem> = batch.iter().map(|(i, _)| *i).collect();
        let mut attempt = 0;
        let answer = loop {
            attempt += 1;
            match control.register(&key, &items).await {
                Err(e) if e.code() == Some(tonic::Code::Aborted) && attempt < NONCE_ATTEMPTS => {
                    tracing::debug!("registration refused for its nonce, signing again: {e}");
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                }
                other => break other,
            }
        };
        match answer {
            Ok(results) => {
                for ((_, reply), r) in batch.drain(..).zip(results) {
                    metrics.registration(&r);
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                tracing::warn!(items = items.len(), "registration failed: {e}");
                let refused = Refused {
                    code: e.code().unwrap_or(tonic::Code::Unavailable),
                    message: e.to_string(),
                };
                for (_, reply) in batch.drain(..) {
                    let r = Err(refused.clone());
                    metrics.registration(&r);
                    let _ = reply.send(r);
                }
            }
        }
    }
}

/// The registration of one request's blob: bought at most once, however many times the blob
/// client asks (the gateway buys before it checks whether the blob is already certified, then
/// hands the same purchase to the upload), and kept so the answer can say what it cost and why
/// it was refused.
pub struct Purchase {
    publisher: Arc<Publisher>,
    outcome: Mutex<Option<Result<Registered, Refused>>>,
}

impl Purchase {
    pub fn new(publisher: Arc<Publisher>) -> Arc<Self> {
        Arc::new(Self {
            publisher,
            outcome: Mutex::new(None),
        })
    }

    fn recorded(&self) -> Option<Result<Registered, Refused>> {
        self.outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Register `item`, or return the registration already bought for the same blob and size.
    pub async fn buy(&self, item: RegisterItem) -> Result<Registered, Refused> {
        if let Some(Ok(r)) = self.recorded() {
            let l = &r.lifetime.lifetime;
            if l.blob_id == item.blob && l.encoded_size == item.encoded_size {
                return Ok(r);
            }
        }
        let r = self.publisher.register(item).await;
        *self.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.clone());
        r
    }

    /// What was bought, once bought.
    pub fn bought(&self) -> Option<Registered> {
        self.recorded().and_then(Result::ok)
    }

    /// Why the registration was refused, if it was.
    pub fn refusal(&self) -> Option<Refused> {
        self.recorded().and_then(Result::err)
    }
}

impl Registrar for Purchase {
    fn register(
        &self,
        blob: BlobId,
        encoded_size: u64,
        epochs: u32,
        deletable: bool,
    ) -> futures::future::BoxFuture<'_, Result<SignedLifetime, String>> {
        Box::pin(async move {
            self.buy(RegisterItem {
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
