//! `floe account`, `extend`, `delete`, `testnet faucet`: the account that pays for storage
//! (docs/economics.md). The key lives in the CLI's config directory; on a local testnet the
//! first `floe put` creates it and has the faucet fund it, and says so once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use ed25519_dalek::SigningKey;
use floe_node::client::control::{AccountRegistrar, ControlClient};
use floe_node::client::Registrar;
use floe_node::protocol::{AccountId, SignedLifetime};
use floe_operator::local::TestnetState;
use serde_json::json;

use crate::{AccountCmd, Cli};

/// The key file: `--account-file`, else `account.key` in the config directory.
pub fn key_path(cli: &Cli) -> PathBuf {
    if let Some(p) = &cli.account_file {
        return p.clone();
    }
    let dir = std::env::var_os("FLOE_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CONFIG_HOME").map(|d| PathBuf::from(d).join("floe")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/floe")))
        .unwrap_or_else(|| PathBuf::from(".floe"));
    dir.join("account.key")
}

fn read_key(path: &Path) -> anyhow::Result<Option<SigningKey>> {
    match std::fs::read(path) {
        Ok(b) => {
            let b: [u8; 32] = b.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!(
                    "{} is not an account key (expected 32 bytes, found {})",
                    path.display(),
                    b.len()
                )
            })?;
            Ok(Some(SigningKey::from_bytes(&b)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Create a key file (0600) unless one exists; a concurrent creator wins and its key is used.
fn create_key(path: &Path) -> anyhow::Result<(SigningKey, bool)> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(k) = read_key(path)? {
        return Ok((k, false));
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(&k)?;
    f.sync_all()?;
    // a hard link fails if the file exists: the first creator's key stays
    let made = std::fs::hard_link(&tmp, path).is_ok();
    let _ = std::fs::remove_file(&tmp);
    match read_key(path)? {
        Some(key) => Ok((key, made)),
        None => bail!("could not create {}", path.display()),
    }
}

/// The control plane's API: `--control`, else the local testnet's.
pub fn control(cli: &Cli) -> anyhow::Result<Option<ControlClient>> {
    let address = match &cli.control {
        Some(a) => Some(a.clone()),
        None if cli.connect.is_empty() => TestnetState::load(&cli.testnet_dir)
            .ok()
            .and_then(|s| s.control_api),
        None => None,
    };
    address
        .map(|a| ControlClient::new(&a).map_err(anyhow::Error::from))
        .transpose()
}

fn need_control(cli: &Cli) -> anyhow::Result<ControlClient> {
    control(cli)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no control plane to ask: start a local testnet (floe testnet up) or give --control HOST:PORT"
        )
    })
}

/// The account for `floe put` on a network that sells storage. On a local testnet a missing
/// key is created and an account the control plane does not know is funded by the faucet,
/// each said once on stderr.
pub async fn registrar(cli: &Cli) -> anyhow::Result<Option<Arc<dyn Registrar>>> {
    let Some(control) = control(cli)? else {
        return Ok(None);
    };
    let path = key_path(cli);
    let local = cli.control.is_none();
    let key = if local {
        let (key, made) = create_key(&path)?;
        if made {
            eprintln!(
                "created account {} (key in {})",
                AccountId::of(&key),
                path.display()
            );
        }
        key
    } else {
        read_key(&path)?.ok_or_else(|| {
            anyhow::anyhow!(
                "no account key at {}: create one with `floe account new`",
                path.display()
            )
        })?
    };
    let id = AccountId::of(&key);
    if local {
        let a = control.account(&id).await?;
        if !a.known {
            match control.faucet(&id, 0).await {
                Ok(a) => eprintln!(
                    "account {id} funded by the testnet faucet: {} units",
                    a.balance
                ),
                Err(e) => eprintln!("the testnet faucet did not fund account {id}: {e}"),
            }
        }
    }
    Ok(Some(AccountRegistrar::start(control, key)))
}

fn load_key(cli: &Cli) -> anyhow::Result<SigningKey> {
    let path = key_path(cli);
    read_key(&path)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no account key at {}: create one with `floe account new` (floe put on a local testnet creates it)",
            path.display()
        )
    })
}

pub async fn account(cli: &Cli, cmd: &AccountCmd) -> anyhow::Result<()> {
    let path = key_path(cli);
    match cmd {
        AccountCmd::New => {
            if read_key(&path)?.is_some() {
                bail!(
                    "{} already holds an account key; move it away first (it is the only way to spend that account's balance)",
                    path.display()
                );
            }
            let (k, _) = create_key(&path)?;
            print_account(cli, &AccountId::of(&k), &path, None);
        }
        AccountCmd::Show => {
            let k = load_key(cli)?;
            print_account(cli, &AccountId::of(&k), &path, None);
        }
        AccountCmd::Balance => {
            let k = load_key(cli)?;
            let id = AccountId::of(&k);
            let a = need_control(cli)?.account(&id).await?;
            print_account(cli, &id, &path, Some(a.balance));
        }
    }
    Ok(())
}

fn print_account(cli: &Cli, id: &AccountId, path: &Path, balance: Option<u64>) {
    if cli.json {
        println!(
            "{}",
            json!({"account": id.to_string(), "key_file": path, "balance": balance})
        );
    } else {
        println!("account:  {id}");
        println!("key file: {}", path.display());
        if let Some(b) = balance {
            println!("balance:  {b} units");
        }
    }
}

pub async fn faucet(cli: &Cli, account: Option<&str>, amount: u64) -> anyhow::Result<()> {
    let id = match account {
        Some(a) => a.parse::<AccountId>()?,
        None => AccountId::of(&create_key(&key_path(cli))?.0),
    };
    let a = need_control(cli)?.faucet(&id, amount).await?;
    if cli.json {
        println!(
            "{}",
            json!({"account": id.to_string(), "balance": a.balance})
        );
    } else {
        println!("account {id}: balance {} units", a.balance);
    }
    Ok(())
}

/// Hand a changed lifetime to every node at once (the control plane also feeds them its log
/// each round; this makes a deletion take effect now).
async fn tell_nodes(cli: &Cli, l: &SignedLifetime) -> usize {
    let Ok(c) = crate::blob_cmd::client(cli).await else {
        return 0;
    };
    let committee = c.committee();
    let calls = committee.members.iter().filter_map(|m| {
        floe_node::client::NodeClient::for_node(&m.address, m.node_id, 16 << 20).ok()
    });
    futures::future::join_all(calls.map(|n| async move { n.put_lifetime(l).await.is_ok() }))
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count()
}

fn print_lifetime(cli: &Cli, what: &str, l: &SignedLifetime, cost: u64, balance: u64, told: usize) {
    let lt = &l.lifetime;
    if cli.json {
        println!(
            "{}",
            json!({"blob_id": lt.blob_id.to_string(), "start_epoch": lt.start_epoch, "end_epoch": lt.end_epoch,
                "deletable": lt.deletable, "deleted": lt.deleted, "cost": cost, "balance": balance,
                "sequence": lt.sequence, "nodes_told": told})
        );
    } else {
        println!(
            "{what} {}: stored until epoch {}{} · cost {cost} units, balance {balance}",
            lt.blob_id,
            lt.end_epoch,
            if lt.deleted { " (deleted)" } else { "" }
        );
    }
}

pub async fn extend(cli: &Cli, blob_id: &str, epochs: u32) -> anyhow::Result<()> {
    let id = crate::blob_cmd::parse_id(blob_id)?;
    let key = load_key(cli)?;
    let r = need_control(cli)?.extend(&key, &id, epochs).await?;
    let told = tell_nodes(cli, &r.lifetime).await;
    print_lifetime(cli, "extended", &r.lifetime, r.cost, r.balance, told);
    Ok(())
}

pub async fn delete(cli: &Cli, blob_id: &str) -> anyhow::Result<()> {
    let id = crate::blob_cmd::parse_id(blob_id)?;
    let key = load_key(cli)?;
    let r = need_control(cli)?.delete(&key, &id).await?;
    let told = tell_nodes(cli, &r.lifetime).await;
    print_lifetime(cli, "deleted", &r.lifetime, r.cost, r.balance, told);
    Ok(())
}
