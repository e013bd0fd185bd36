//! `floe control serve`: run a StorageCluster's market (its control pod's process).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ed25519_dalek::SigningKey;
use floe_node::protocol::AccountId;
use floe_operator::control::registry::MarketSettings;
use floe_operator::control::server::{serve, ServeOptions};

#[derive(Subcommand)]
pub enum ControlCmd {
    /// Serve a network's market: the clients' Control API and the operator's MarketAdmin
    /// API, its journal in --dir (what a StorageCluster's control pod runs)
    Serve(ServeArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// Directory of the economy journal (a persistent volume)
    #[arg(long)]
    pub dir: PathBuf,
    /// The control key (32 raw bytes); nodes verify lifetimes signed with it
    #[arg(long)]
    pub key_file: PathBuf,
    /// File holding the admin token that guards MarketAdmin
    #[arg(long)]
    pub admin_token_file: PathBuf,
    #[arg(long, default_value = "0.0.0.0:7100")]
    pub listen: SocketAddr,
    /// The furthest a blob's lifetime may end beyond the current epoch
    #[arg(long, default_value_t = 53)]
    pub max_epochs_ahead: u32,
    /// Units the faucet grants per request (0: no faucet)
    #[arg(long, default_value_t = 0)]
    pub faucet_grant: u64,
    /// ACCOUNT=UNITS credited once, when the market has never seen the account
    #[arg(long)]
    pub genesis: Vec<String>,
    /// ACCOUNT=UNITS topped up whenever the balance falls below a tenth of UNITS
    #[arg(long)]
    pub keep_funded: Vec<String>,
}

/// `ACCOUNT=UNITS`.
fn account_amount(s: &str) -> anyhow::Result<(AccountId, u64)> {
    let (a, n) = s
        .split_once('=')
        .with_context(|| format!("{s:?}: expected ACCOUNT=UNITS"))?;
    let a: AccountId = a
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{s:?}: account: {e}"))?;
    let n: u64 = n.trim().parse().with_context(|| format!("{s:?}: units"))?;
    Ok((a, n))
}

pub async fn run(command: &ControlCmd) -> anyhow::Result<()> {
    match command {
        ControlCmd::Serve(a) => {
            let key = std::fs::read(&a.key_file)
                .with_context(|| format!("reading {}", a.key_file.display()))?;
            let key: [u8; 32] = key.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!(
                    "{}: expected a 32-byte key, found {} bytes",
                    a.key_file.display(),
                    key.len()
                )
            })?;
            let token = std::fs::read_to_string(&a.admin_token_file)
                .with_context(|| format!("reading {}", a.admin_token_file.display()))?
                .trim()
                .to_string();
            anyhow::ensure!(
                !token.is_empty(),
                "{}: the admin token is empty",
                a.admin_token_file.display()
            );
            serve(ServeOptions {
                dir: a.dir.clone(),
                key: SigningKey::from_bytes(&key),
                listen: a.listen,
                admin_token: token,
                settings: MarketSettings {
                    max_epochs_ahead: a.max_epochs_ahead,
                    faucet_grant: a.faucet_grant,
                },
                genesis: a
                    .genesis
                    .iter()
                    .map(|s| account_amount(s))
                    .collect::<anyhow::Result<_>>()?,
                keep_funded: a
                    .keep_funded
                    .iter()
                    .map(|s| account_amount(s))
                    .collect::<anyhow::Result<_>>()?,
            })
            .await
        }
    }
}
