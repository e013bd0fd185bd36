//! The testnet's HTTP gateway: one `floe-gateway` process beside the nodes, started once they
//! are up, restarted when it dies, stopped with the testnet. Its URL is kept in
//! `testnet.json` (`floe testnet up` prints it, `floe --json testnet status` carries it).
//!
//! The testnet sells storage, so the gateway pays for what it stores: it has an account of its
//! own (`DIR/gateway.key`), which the supervisor funds from its faucet — at start and whenever
//! the balance runs low, so a testnet's publisher never runs dry — and the supervisor's control
//! API address.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use anyhow::Context as _;
use floe_node::protocol::AccountId;

use super::layout::TestnetState;
use super::process::{alive, signal};
use crate::control::economy::{load_or_create_key, Economy};
use crate::control::registry::Event;

/// The gateway's account key in the testnet directory (32 bytes, 0600).
pub const ACCOUNT_KEY: &str = "gateway.key";

/// How much the faucet grants an account whose balance is `balance` when a grant is `grant`:
/// one grant once it falls below a tenth of one (or nothing when the faucet is closed).
pub fn top_up(balance: Option<u64>, grant: u64) -> Option<u64> {
    match balance {
        _ if grant == 0 => None,
        Some(b) if b >= grant / 10 => None,
        _ => Some(grant),
    }
}

/// Create the gateway's account key in `dir` if missing and fund the account from the
/// faucet when it runs low (journaled like any faucet grant). Its account.
pub fn fund_account(dir: &Path, economy: &Mutex<Economy>) -> anyhow::Result<AccountId> {
    let key = load_or_create_key(&dir.join(ACCOUNT_KEY))?;
    let account = AccountId::of(&key);
    let mut e = economy.lock().unwrap_or_else(|p| p.into_inner());
    let balance = e.registry().account(&account).map(|a| a.balance);
    if let Some(amount) = top_up(balance, e.registry().settings.faucet_grant) {
        e.submit(Event::Faucet { account, amount })?;
        tracing::info!(%account, amount, "the faucet funded the gateway's account");
    }
    Ok(account)
}

/// Find `floe-gateway`: `$FLOE_GATEWAY_BIN`, next to this executable or to `floe-node`, or on
/// PATH. `None`: the testnet runs without one (and says so).
pub fn find_gateway_bin(node_bin: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLOE_GATEWAY_BIN") {
        return Some(PathBuf::from(p));
    }
    let beside = |p: &Path| p.parent().map(|d| d.join("floe-gateway"));
    std::env::current_exe()
        .ok()
        .and_then(|e| beside(&e))
        .into_iter()
        .chain(beside(node_bin))
        .chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|d| d.join("floe-gateway")),
        )
        .find(|p| p.exists())
}

/// The gateway process of a testnet.
pub struct Gateway {
    bin: PathBuf,
    child: Option<Child>,
    pub restarts: u32,
}

impl Gateway {
    pub fn new(bin: PathBuf) -> Self {
        Self {
            bin,
            child: None,
            restarts: 0,
        }
    }

    /// Start the gateway on the port it had (so its URL survives a restart) or a free one,
    /// pointed at every node and, when the testnet sells storage, at the control API with its
    /// account key; record its URL and pid in the state.
    pub fn start(&mut self, state: &mut TestnetState) -> anyhow::Result<()> {
        // a gateway left running by a supervisor killed with -9
        if let Some(pid) = state.gateway_pid.filter(|p| alive(*p)) {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains("floe-gateway") {
                signal(pid, "KILL");
            }
        }
        let previous = state
            .gateway
            .as_deref()
            .and_then(|u| u.strip_prefix("http://"))
            .filter(|a| TcpListener::bind(a).is_ok())
            .map(str::to_string);
        let addr = match previous {
            Some(a) => a,
            None => format!(
                "127.0.0.1:{}",
                TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
            ),
        };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state.dir.join("gateway.log"))?;
        let spool = state.dir.join("gateway-spool");
        fs::create_dir_all(&spool)?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--listen", &addr, "--nodes", &state.addresses().join(",")])
            .arg("--spool-dir")
            .arg(&spool);
        let key = state.dir.join(ACCOUNT_KEY);
        if let (Some(control), true) = (&state.control_api, key.exists()) {
            cmd.args(["--control", control.as_str()])
                .arg("--account-key")
                .arg(key);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        state.gateway = Some(format!("http://{addr}"));
        state.gateway_pid = Some(child.id());
        self.child = Some(child);
        Ok(())
    }

    /// Restart the gateway if it exited; true when it did.
    pub fn keep_alive(&mut self, state: &mut TestnetState) -> anyhow::Result<bool> {
        let exited = match &mut self.child {
            Some(c) => c.try_wait()?.is_some(),
            None => false,
        };
        if exited {
            self.restarts += 1;
            tracing::warn!(
                restarts = self.restarts,
                "the gateway exited; restarting it"
            );
            self.start(state)?;
        }
        Ok(exited)
    }

    /// SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&mut self, state: &mut TestnetState) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "TERM");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::time::Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        state.gateway_pid = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_faucet_tops_up_a_low_or_new_account_only() {
        assert_eq!(top_up(None, 1000), Some(1000));
        assert_eq!(top_up(Some(99), 1000), Some(1000));
        assert_eq!(top_up(Some(100), 1000), None);
        assert_eq!(top_up(Some(5000), 1000), None);
        assert_eq!(top_up(None, 0), None, "a closed faucet grants nothing");
    }

    #[test]
    fn the_gateway_account_is_created_once_and_funded_when_low() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::control::registry::MarketSettings {
            max_epochs_ahead: 10,
            faucet_grant: 1000,
        };
        let economy = Mutex::new(Economy::open(dir.path(), settings).unwrap());
        let a = fund_account(dir.path(), &economy).unwrap();
        let balance =
            |e: &Mutex<Economy>| e.lock().unwrap().registry().account(&a).unwrap().balance;
        assert_eq!(balance(&economy), 1000);
        // the same key, no second grant while the balance is high
        assert_eq!(fund_account(dir.path(), &economy).unwrap(), a);
        assert_eq!(balance(&economy), 1000);
        let key = std::fs::read(dir.path().join(ACCOUNT_KEY)).unwrap();
        assert_eq!(key.len(), 32);
        // the grant is journaled: a restarted control plane still knows it
        drop(economy);
        let again = Mutex::new(Economy::open(dir.path(), settings).unwrap());
        assert_eq!(balance(&again), 1000);
    }
}
