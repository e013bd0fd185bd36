//! The control plane's client API (`floe.v1.Control`, docs/economics.md): prices, accounts,
//! registrations, extensions and deletions. Each call that spends is signed by the account
//! and carries a nonce larger than the account's last; the event is journaled (synced) before
//! it is answered.

use std::sync::{Arc, Mutex};

use floe_node::codec::BlobId;
use floe_node::proto::{self, control_server::Control};
use floe_node::protocol::{AccountId, UNIT_BYTES};
use tonic::{Request, Response, Status};

use super::economy::Economy;
use super::registry::{Event, Granted, Outcome, Refusal, Want};

pub struct ControlService {
    pub economy: Arc<Mutex<Economy>>,
    /// The testnet faucet is open (the local testnet; a StorageCluster only with genesis
    /// balances).
    pub faucet: bool,
}

/// A refusal as a gRPC status: callers decide by the code.
pub fn refusal_status(r: &Refusal) -> Status {
    let m = r.to_string();
    match r {
        Refusal::Balance { .. } => Status::failed_precondition(m),
        Refusal::Nonce { .. } => Status::aborted(m),
        Refusal::NoEpochs | Refusal::TooFar { .. } => Status::invalid_argument(m),
        Refusal::Unknown(_) | Refusal::Deleted(_) => Status::not_found(m),
        Refusal::Expired { .. } => Status::out_of_range(m),
        Refusal::Permanent(_)
        | Refusal::NotOwner(_)
        | Refusal::TakenDeletable(_)
        | Refusal::NoFaucet => Status::permission_denied(m),
        Refusal::NoMarket => Status::unavailable(m),
    }
}

fn granted(g: &Granted) -> proto::LifetimeResponse {
    proto::LifetimeResponse {
        lifetime: g.lifetime.to_bytes(),
        cost: g.cost,
        balance: g.balance,
    }
}

fn blob(b: &[u8]) -> Result<BlobId, Status> {
    BlobId::from_slice(b).map_err(|e| Status::invalid_argument(format!("blob_id: {e}")))
}

fn account(b: &[u8]) -> Result<AccountId, Status> {
    AccountId::try_from(b).map_err(|e| Status::invalid_argument(e.to_string()))
}

impl ControlService {
    /// Verify the signature and the nonce; the account and the decoded body.
    fn open<B: prost::Message + Default>(
        &self,
        method: &str,
        req: &proto::SignedRequest,
    ) -> Result<(AccountId, B), Status> {
        let a = account(&req.account)?;
        a.verify(method, req.nonce, &req.body, &req.signature)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let body = B::decode(req.body.as_slice())
            .map_err(|e| Status::invalid_argument(format!("body: {e}")))?;
        Ok((a, body))
    }

    /// Journal and apply `event` off the async workers (the journal syncs).
    async fn submit(
        &self,
        account: AccountId,
        nonce: u64,
        event: Event,
    ) -> Result<Outcome, Status> {
        let economy = self.economy.clone();
        tokio::task::spawn_blocking(move || {
            let mut e = economy.lock().unwrap_or_else(|p| p.into_inner());
            // checked under the lock, so two requests cannot both pass with one nonce
            e.registry()
                .check_nonce(&account, nonce)
                .map_err(|r| refusal_status(&r))?;
            e.submit(event)
                .map_err(|e| Status::internal(format!("journal: {e}")))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }

    fn one(outcome: Outcome) -> Result<Response<proto::LifetimeResponse>, Status> {
        match outcome {
            Outcome::Granted(g) => Ok(Response::new(granted(&g))),
            Outcome::Refused(r) => Err(refusal_status(&r)),
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn get_prices(
        &self,
        _: Request<proto::GetPricesRequest>,
    ) -> Result<Response<proto::Prices>, Status> {
        let e = self.economy.lock().unwrap_or_else(|p| p.into_inner());
        let r = e.registry();
        let (storage_price, write_price) = r.prices();
        Ok(Response::new(proto::Prices {
            epoch: r.epoch(),
            storage_price,
            write_price,
            max_epochs_ahead: r.settings.max_epochs_ahead,
            control_key: r.control_key().to_vec(),
            unit_bytes: UNIT_BYTES,
            first_billed_epoch: r.first_billed_epoch(),
        }))
    }

    async fn get_account(
        &self,
        req: Request<proto::GetAccountRequest>,
    ) -> Result<Response<proto::Account>, Status> {
        let a = account(&req.into_inner().account)?;
        let e = self.economy.lock().unwrap_or_else(|p| p.into_inner());
        let s = e.registry().account(&a);
        Ok(Response::new(proto::Account {
            account: a.0.to_vec(),
            balance: s.map_or(0, |s| s.balance),
            nonce: s.map_or(0, |s| s.nonce),
            known: s.is_some(),
        }))
    }

    async fn faucet(
        &self,
        req: Request<proto::FaucetRequest>,
    ) -> Result<Response<proto::Account>, Status> {
        let req = req.into_inner();
        let a = account(&req.account)?;
        let economy = self.economy.clone();
        let open = self.faucet;
        let s = tokio::task::spawn_blocking(move || {
            let mut e = economy.lock().unwrap_or_else(|p| p.into_inner());
            let grant = e.registry().settings.faucet_grant;
            if !open || grant == 0 {
                return Err(refusal_status(&Refusal::NoFaucet));
            }
            // at most 100 grants at once: a testnet faucet, not a mint
            let amount = if req.amount == 0 {
                grant
            } else {
                req.amount.min(grant.saturating_mul(100))
            };
            match e
                .submit(Event::Faucet { account: a, amount })
                .map_err(|e| Status::internal(format!("journal: {e}")))?
            {
                Outcome::Account(s) => Ok(s),
                other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
            }
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(proto::Account {
            account: a.0.to_vec(),
            balance: s.balance,
            nonce: s.nonce,
            known: true,
        }))
    }

    async fn register(
        &self,
        req: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::RegisterResponse>, Status> {
        let req = req.into_inner();
        let (a, body): (_, proto::RegisterBody) = self.open("Register", &req)?;
        if body.items.is_empty() || body.items.len() > 10_000 {
            return Err(Status::invalid_argument(
                "register 1 to 10000 blobs per request",
            ));
        }
        let items = body
            .items
            .iter()
            .map(|i| {
                Ok(Want {
                    blob: blob(&i.blob_id)?,
                    encoded_size: i.encoded_size,
                    epochs: i.epochs,
                    deletable: i.deletable,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let outcome = self
            .submit(
                a,
                req.nonce,
                Event::Register {
                    account: a,
                    nonce: req.nonce,
                    items,
                },
            )
            .await?;
        let results = match outcome {
            Outcome::Registered(v) => v
                .iter()
                .map(|r| match r {
                    Ok(g) => proto::RegisterResult {
                        code: 0,
                        message: String::new(),
                        ok: Some(granted(g)),
                    },
                    Err(r) => {
                        let s = refusal_status(r);
                        proto::RegisterResult {
                            code: s.code() as u32,
                            message: s.message().to_string(),
                            ok: None,
                        }
                    }
                })
                .collect(),
            Outcome::Refused(r) => return Err(refusal_status(&r)),
            other => return Err(Status::internal(format!("unexpected outcome {other:?}"))),
        };
        Ok(Response::new(proto::RegisterResponse { results }))
    }

    async fn extend(
        &self,
        req: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::LifetimeResponse>, Status> {
        let req = req.into_inner();
        let (a, body): (_, proto::ExtendBody) = self.open("Extend", &req)?;
        let b = blob(&body.blob_id)?;
        let o = self
            .submit(
                a,
                req.nonce,
                Event::Extend {
                    account: a,
                    nonce: req.nonce,
                    blob: b,
                    epochs: body.epochs,
                },
            )
            .await?;
        Self::one(o)
    }

    async fn delete(
        &self,
        req: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::LifetimeResponse>, Status> {
        let req = req.into_inner();
        let (a, body): (_, proto::DeleteBody) = self.open("Delete", &req)?;
        let b = blob(&body.blob_id)?;
        let o = self
            .submit(
                a,
                req.nonce,
                Event::Delete {
                    account: a,
                    nonce: req.nonce,
                    blob: b,
                },
            )
            .await?;
        Self::one(o)
    }
}
