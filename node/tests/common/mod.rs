//! A cluster of real `floe-node` processes on loopback, for tests.
#![allow(dead_code)]

pub use floe_node::testing::random_bytes;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use floe_node::client::{BlobClient, ClientConfig, NodeClient};
use floe_node::protocol::{Committee, Member, NodeId};

pub const TOKEN: &str = "test-admin-token";

pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], floe_node::testing::free_port()))
}

pub struct TestNode {
    pub dir: PathBuf,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// The admin API's own listener (`--admin-addr`).
    pub admin: SocketAddr,
    pub extra: Vec<String>,
    child: Option<Child>,
    /// Started successfully once: its addresses may be known to others and must not change.
    started: bool,
}

impl TestNode {
    pub fn new(root: &std::path::Path, i: usize, extra: &[&str]) -> Self {
        let dir = root.join(format!("node{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(root.join("token"))
                .unwrap();
            f.write_all(TOKEN.as_bytes()).unwrap();
        }
        Self {
            dir,
            grpc: free_addr(),
            http: free_addr(),
            admin: free_addr(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            started: false,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn start(&mut self) {
        // Free ports are picked before the node binds them, so a test running in parallel can
        // take one first: before the addresses were ever used, retry on fresh ports.
        for _ in 0..3 {
            self.spawn();
            let up = wait_until(Duration::from_secs(20), || {
                http_get(self.http, "/healthz").is_some_and(|(c, _)| c == 200) || !self.is_running()
            });
            if up.is_some() && self.is_running() {
                self.started = true;
                return;
            }
            if self.started || !self.log().contains("Address already in use") {
                break;
            }
            self.grpc = free_addr();
            self.http = free_addr();
            self.admin = free_addr();
        }
        panic!("node did not come up; log:\n{}", self.log());
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_floe-node"))
            .args(["--data-dir", self.data_dir().to_str().unwrap()])
            // the identity lives outside the data dir, as a Kubernetes Secret would
            .args(["--key-file", self.dir.join("node.key").to_str().unwrap()])
            .args([
                "--grpc-addr",
                &self.grpc.to_string(),
                "--http-addr",
                &self.http.to_string(),
                "--admin-addr",
                &self.admin.to_string(),
            ])
            .args([
                "--admin-token-file",
                self.dir.parent().unwrap().join("token").to_str().unwrap(),
            ])
            .args(["--recovery-interval", "1"])
            .args(&self.extra)
            .env("FLOE_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn floe-node");
        self.child = Some(child);
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        self.terminate_within(Duration::from_secs(15))
    }

    /// SIGTERM and wait up to `patience` for the exit (then SIGKILL and None).
    pub fn terminate_within(&mut self, patience: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        unsafe_sigterm(c.id());
        let deadline = Instant::now() + patience;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wipe(&self) {
        let _ = std::fs::remove_dir_all(self.data_dir());
    }

    /// The address members and clients use: `https://` when the node serves TLS.
    pub fn address(&self) -> String {
        if self.extra.iter().any(|a| a == "--tls") {
            format!("https://{}", self.grpc)
        } else {
            self.grpc.to_string()
        }
    }

    pub fn client(&self) -> NodeClient {
        NodeClient::new(&self.address(), 96 << 20).unwrap()
    }
    pub fn admin(&self) -> NodeClient {
        self.client()
            .with_admin_address(&NodeClient::admin_address_of(
                &self.address(),
                self.admin.port() as u32,
            ))
            .unwrap()
            .with_admin_token(TOKEN)
    }

    pub fn metrics(&self) -> String {
        http_get(self.http, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }
    /// Value of a metric without labels. Panics when the node does not export it, so that a
    /// renamed metric fails the test instead of reading as 0.
    pub fn metric(&self, name: &str) -> f64 {
        let all = self.metrics();
        all.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or_else(|| {
                panic!(
                    "metric {name} is not exported by {}:\n{all}",
                    self.dir.display()
                )
            })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Resident memory of the node process, in bytes (Linux).
    pub fn rss(&self) -> u64 {
        let pid = self.pid().expect("node running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// Minimal HTTP/1.0 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

pub async fn wait_until_async<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

pub struct TestCluster {
    pub root: tempfile::TempDir,
    pub nodes: Vec<TestNode>,
    pub committee: Committee,
}

impl TestCluster {
    /// `count` nodes sharing `n_shards` evenly; `extra(i)` adds flags to node i.
    pub async fn start(
        count: usize,
        n_shards: u16,
        extra: impl Fn(usize) -> Vec<&'static str>,
    ) -> Self {
        let root = tempfile::tempdir().unwrap();
        let mut nodes: Vec<TestNode> = (0..count)
            .map(|i| TestNode::new(root.path(), i, &extra(i)))
            .collect();
        for n in &mut nodes {
            n.start();
        }
        let mut members = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let info = n.client().info().await.expect("info");
            let shards = (0..n_shards).filter(|s| *s as usize % count == i).collect();
            members.push(Member {
                node_id: NodeId::try_from(info.node_id.as_slice()).unwrap(),
                address: n.address(),
                stake: 1,
                shards,
            });
        }
        let committee = Committee {
            epoch: 1,
            n_shards,
            members,
            economics: None,
        };
        let c = Self {
            root,
            nodes,
            committee,
        };
        c.publish_committee().await;
        c
    }

    /// Hand the committee to every node; a node that refuses fails the test.
    pub async fn publish_committee(&self) {
        for n in &self.nodes {
            n.admin()
                .set_committee(&self.committee)
                .await
                .unwrap_or_else(|e| panic!("{} refused the committee: {e}", n.dir.display()));
        }
    }

    pub fn blob_client(&self) -> BlobClient {
        let cfg = ClientConfig {
            grace: Duration::from_millis(300),
            ..ClientConfig::default()
        };
        BlobClient::new(self.committee.clone(), cfg).unwrap()
    }
}
