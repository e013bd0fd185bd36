//! The publisher's account: on a network that sells storage (its committee carries a control
//! key), every blob the gateway stores is registered with the control plane and paid from the
//! gateway's own account, as Walrus's publisher pays from its own wallet (docs/gateway.md).
//!
//! Registrations of concurrent requests go to the control plane from one task, batched
//! (`floe_node::client::control::AccountRegistrar`, the registrar `floe put` uses too).

use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;
pub use floe_node::client::control::AccountRegistrar as Publisher;
use floe_node::client::control::{ControlClient, Refused, RegisterItem, Registered};
use floe_node::client::Registrar;
use floe_node::codec::BlobId;
use floe_node::protocol::SignedLifetime;

use super::metrics::Metrics;

/// Start the publisher's registration task (needs a Tokio runtime); outcomes are counted in
/// `metrics`.
pub fn start(control: ControlClient, key: SigningKey, metrics: Metrics) -> Arc<Publisher> {
    Publisher::start_observed(
        control,
        key,
        Some(Arc::new(move |r: &Result<Registered, Refused>| {
            metrics.registration(r)
        })),
    )
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
        let r = self.publisher.register_item(item).await;
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
