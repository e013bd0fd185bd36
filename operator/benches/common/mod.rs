//! What the testnet benchmarks share: the `floe` binary beside them, and running it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `floe` binary of this build.
pub fn floe_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_floe"))
}

/// floe-node is a binary of another package: build it if this run did not. (Not every time:
/// built alone, floe-node's dependencies get other features than in this bench's build, so each
/// build would redo the other's. After changing the node, `cargo build --release -p floe-node`.)
pub fn ensure_node_bin() {
    if !floe_bin().parent().unwrap().join("floe-node").exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        assert!(Command::new(cargo)
            .args(["build", "--release", "-p", "floe-node"])
            .status()
            .unwrap()
            .success());
    }
}

/// Run `floe --testnet-dir DIR ARGS…`; its standard output, or a panic with its error.
pub fn floe(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(floe_bin())
        .arg("--testnet-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "floe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Brings a testnet down when dropped, also when the benchmark panics (a panicking benchmark
/// otherwise leaves its nodes running, and their data filling the target directory).
pub struct DownOnDrop<'a>(pub &'a Path);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        let _ = Command::new(floe_bin())
            .arg("--testnet-dir")
            .arg(self.0)
            .args(["testnet", "down"])
            .output();
    }
}

/// The gRPC addresses of a testnet's nodes, from its `testnet.json`: `https://` for nodes that
/// serve TLS.
pub fn node_addresses(dir: &Path) -> Vec<String> {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("testnet.json")).unwrap()).unwrap();
    state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let grpc = n["grpc"].as_str().unwrap();
            match n["tls"].as_bool() {
                Some(true) => format!("https://{grpc}"),
                _ => grpc.to_string(),
            }
        })
        .collect()
}

/// What a put on the testnet in `dir` needs: an account (a fresh key, funded by the testnet's
/// faucet) that registers each blob with the control plane (docs/economics.md).
pub async fn put_options(dir: &Path) -> floe_node::client::PutOptions {
    use floe_node::client::control::{AccountRegistrar, ControlClient};
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("testnet.json")).unwrap()).unwrap();
    let control = ControlClient::new(state["control_api"].as_str().unwrap()).unwrap();
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&k);
    control
        .faucet(&floe_node::protocol::AccountId::of(&key), 0)
        .await
        .unwrap();
    floe_node::client::PutOptions {
        epochs: None,
        deletable: true,
        registrar: Some(AccountRegistrar::start(control, key)),
    }
}
