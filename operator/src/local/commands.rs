//! What the CLI does to a running testnet, through its files and signals (the CLI never talks
//! to the supervisor directly).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::layout::TestnetState;
use super::process::{alive, signal};

/// Wait until the supervisor in `dir` reports the testnet ready.
pub fn wait_ready(
    dir: &Path,
    supervisor_pid: u32,
    timeout: Duration,
) -> anyhow::Result<TestnetState> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(s) = TestnetState::load(dir) {
            if s.ready && s.supervisor_pid == supervisor_pid {
                return Ok(s);
            }
        }
        if !alive(supervisor_pid) {
            let log = fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            bail!(
                "the testnet supervisor exited:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if Instant::now() > deadline {
            bail!(
                "testnet not ready after {timeout:?}; see {}",
                dir.join("supervisor.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stop node `which` with SIGKILL and keep it down.
pub fn kill_node(state: &TestnetState, which: &str) -> anyhow::Result<()> {
    let n = state.node(which)?;
    fs::write(n.stop_marker(), b"")?;
    // the supervisor may restart it between reads: read the current pid from the state file
    if let Some(pid) = TestnetState::load(&state.dir)?.node(which)?.pid {
        signal(pid, "KILL");
    }
    Ok(())
}

/// Let the supervisor start node `which` again (optionally with an empty data directory).
pub fn restart_node(state: &TestnetState, which: &str, wipe: bool) -> anyhow::Result<()> {
    let n = state.node(which)?;
    if n.released {
        bail!("{which} left the network; add a new node with `floe testnet add-node`");
    }
    fs::write(n.stop_marker(), b"")?;
    if let Some(pid) = TestnetState::load(&state.dir)?.node(which)?.pid {
        signal(pid, "KILL");
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if wipe {
        let d = n.data_dir();
        if d.exists() {
            fs::remove_dir_all(&d).with_context(|| format!("wiping {}", d.display()))?;
        }
    }
    fs::remove_file(n.stop_marker())?;
    Ok(())
}

/// Stop the supervisor (which stops the nodes) and wait for it. Nodes left running by a
/// supervisor that was killed are stopped too.
pub fn down(dir: &Path, timeout: Duration) -> anyhow::Result<bool> {
    let Ok(pid) = fs::read_to_string(dir.join("supervisor.pid")) else {
        return Ok(false);
    };
    let pid: u32 = pid.trim().parse()?;
    if !alive(pid) {
        let mut stopped = false;
        if let Ok(s) = TestnetState::load(dir) {
            for n in s.nodes.iter().filter(|n| !n.released) {
                if let Some(p) = n.pid.filter(|p| alive(*p)) {
                    signal(p, "TERM");
                    stopped = true;
                }
            }
        }
        let _ = fs::remove_file(dir.join("supervisor.pid"));
        return Ok(stopped);
    }
    signal(pid, "TERM");
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() > deadline {
            signal(pid, "KILL");
            bail!("supervisor {pid} did not stop in {timeout:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(true)
}
