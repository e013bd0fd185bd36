//! `floe control serve`: a StorageCluster's market as a process of its own (the control pod,
//! docs/economics.md "On Kubernetes"). It owns the economy journal on its volume and serves,
//! on one port, the clients' `floe.v1.Control` API and the operator's `floe.v1.MarketAdmin`
//! (admin token). Genesis balances are credited once, to accounts the market has never seen;
//! accounts kept funded (the gateway's) are topped up whenever they run low.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use floe_node::protocol::AccountId;

use super::api::ControlService;
use super::economy::{Economy, EconomyError};
use super::market::MarketAdminService;
use super::registry::{Event, MarketSettings};

/// How often kept-funded accounts are checked.
const TOP_UP_EVERY: Duration = Duration::from_secs(30);

pub struct ServeOptions {
    /// The journal's directory (the pod's volume).
    pub dir: PathBuf,
    pub key: SigningKey,
    pub listen: SocketAddr,
    /// Guards `MarketAdmin`.
    pub admin_token: String,
    pub settings: MarketSettings,
    /// Credited once to accounts the market has not seen.
    pub genesis: Vec<(AccountId, u64)>,
    /// Topped up to the amount whenever they fall below a tenth of it.
    pub keep_funded: Vec<(AccountId, u64)>,
}

/// Credit genesis balances to unknown accounts and top up kept-funded ones (journaled as
/// faucet grants). What it credited.
pub fn fund(
    economy: &Mutex<Economy>,
    genesis: &[(AccountId, u64)],
    keep_funded: &[(AccountId, u64)],
) -> Result<Vec<(AccountId, u64)>, EconomyError> {
    let mut e = economy.lock().unwrap_or_else(|p| p.into_inner());
    let mut credited = Vec::new();
    for (a, amount) in genesis {
        if e.registry().account(a).is_none() && *amount > 0 {
            e.submit(Event::Faucet {
                account: *a,
                amount: *amount,
            })?;
            credited.push((*a, *amount));
        }
    }
    for (a, amount) in keep_funded {
        let balance = e.registry().account(a).map_or(0, |s| s.balance);
        if balance < amount / 10 && *amount > 0 {
            e.submit(Event::Faucet {
                account: *a,
                amount: *amount,
            })?;
            credited.push((*a, *amount));
        }
    }
    Ok(credited)
}

/// Open the journal and serve until the process is stopped.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.dir)?;
    let economy = Economy::open_with_key(&opts.dir, opts.key, opts.settings)?;
    let economy = Arc::new(Mutex::new(economy));
    for (a, amount) in fund(&economy, &opts.genesis, &opts.keep_funded)? {
        tracing::info!(account = %a, amount, "credited");
    }
    let keeper = {
        let economy = economy.clone();
        let keep = opts.keep_funded.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TOP_UP_EVERY).await;
                match fund(&economy, &[], &keep) {
                    Ok(c) => {
                        for (a, amount) in c {
                            tracing::info!(account = %a, amount, "topped up");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "topping up failed"),
                }
            }
        })
    };
    let control = ControlService {
        economy: economy.clone(),
        faucet: opts.settings.faucet_grant > 0,
    };
    let admin = MarketAdminService::new(economy, &opts.admin_token);
    tracing::info!(listen = %opts.listen, "control API and market admin serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tonic::transport::Server::builder()
        .add_service(floe_node::proto::control_server::ControlServer::new(
            control,
        ))
        .add_service(admin.into_server())
        .serve_with_shutdown(opts.listen, async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await;
    keeper.abort();
    result?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_is_credited_once_and_kept_accounts_are_topped_up() {
        let dir = tempfile::tempdir().unwrap();
        let settings = MarketSettings {
            max_epochs_ahead: 10,
            faucet_grant: 0,
        };
        let key = SigningKey::from_bytes(&[7; 32]);
        let e = Mutex::new(Economy::open_with_key(dir.path(), key.clone(), settings).unwrap());
        let a = AccountId([1; 32]);
        let g = AccountId([2; 32]);
        let got = fund(&e, &[(a, 500)], &[(g, 1000)]).unwrap();
        assert_eq!(got, vec![(a, 500), (g, 1000)]);
        // again: a is known (no second genesis), g holds enough
        assert!(fund(&e, &[(a, 500)], &[(g, 1000)]).unwrap().is_empty());
        drop(e);
        // replayed from the journal after a restart: the same balances, nothing credited twice
        let e = Mutex::new(Economy::open_with_key(dir.path(), key, settings).unwrap());
        assert!(fund(&e, &[(a, 500)], &[(g, 1000)]).unwrap().is_empty());
        let r = e.lock().unwrap();
        assert_eq!(r.registry().account(&a).map(|s| s.balance), Some(500));
        assert_eq!(r.registry().account(&g).map(|s| s.balance), Some(1000));
        assert!(r.registry().balanced());
    }
}
