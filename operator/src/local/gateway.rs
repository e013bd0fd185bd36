//! The testnet's HTTP gateway: one `floe-gateway` process beside the nodes, started once they
//! are up, restarted when it dies, stopped with the testnet. Its URL is kept in
//! `testnet.json` (`floe testnet up` prints it, `floe --json testnet status` carries it).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;

use super::layout::TestnetState;
use super::process::{alive, signal};

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
    /// pointed at every node; record its URL and pid in the state.
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
        let child = Command::new(&self.bin)
            .args(["--listen", &addr, "--nodes", &state.addresses().join(",")])
            .arg("--spool-dir")
            .arg(&spool)
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
