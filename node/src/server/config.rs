//! Node configuration: flags, environment variables (`FLOE_*`) and an optional TOML file, in
//! that order of precedence; everything has a default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

/// Command line of `floe-node`. Every flag also reads `FLOE_<NAME>` and the `--config` file.
#[derive(Debug, Clone, Default, Parser, Deserialize)]
#[command(
    name = "floe-node",
    version,
    about = "Floe storage node: stores and serves erasure-coded slivers"
)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Args {
    /// TOML file with any of the options below (kebab-case keys); flags and env win over it.
    #[arg(long, env = "FLOE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Directory for the node key, committee and slivers [default: ./floe-data]
    #[arg(long, env = "FLOE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Ed25519 key file, created on first start [default: <data-dir>/node.key]. Keep it outside
    /// the data directory (e.g. a Kubernetes Secret) for the identity to survive a lost disk.
    #[arg(long, env = "FLOE_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Address of the gRPC API (public and admin services) [default: 0.0.0.0:7070]
    #[arg(long, env = "FLOE_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Address of /metrics, /healthz and /readyz [default: 0.0.0.0:7071]
    #[arg(long, env = "FLOE_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Address of the admin gRPC API (and gRPC health), on its own listener so that a firewall
    /// or NetworkPolicy can close it; without it the admin API shares --grpc-addr
    /// (development only)
    #[arg(long, env = "FLOE_ADMIN_ADDR", alias = "admin-listen")]
    pub admin_addr: Option<SocketAddr>,
    /// Serve gRPC (storage and admin) over TLS with a certificate bound to the node's Ed25519
    /// identity; members then advertise `https://host:port`
    #[arg(long, env = "FLOE_TLS")]
    #[serde(default)]
    pub tls: bool,
    /// Open connections accepted on the gRPC listener; more are closed at once [default: 256]
    #[arg(long, env = "FLOE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open connections from one source address (each listener); more are closed at once
    /// [default: 64]
    #[arg(long, env = "FLOE_MAX_CONNECTIONS_PER_SOURCE")]
    pub max_connections_per_source: Option<usize>,
    /// Seconds from accept to a connection's first request (TLS handshake, HTTP/2 preface and
    /// one request header); a connection that sent none by then is closed [default: 5]
    #[arg(long, env = "FLOE_FIRST_REQUEST_TIMEOUT")]
    pub first_request_timeout: Option<u64>,
    /// Requests in flight (or waiting for a slot) from one source address [default: 128]
    #[arg(long, env = "FLOE_MAX_STREAMS_PER_SOURCE")]
    pub max_streams_per_source: Option<usize>,
    /// HTTP/2 receive window of one connection (bytes or with a unit): the most unread request
    /// body a connection can park in the node [default: 4MiB]
    #[arg(long, env = "FLOE_CONNECTION_WINDOW", value_parser = parse_bytes)]
    pub connection_window: Option<u64>,
    /// HTTP/2 streams (requests) open at once on one connection [default: 32]
    #[arg(long, env = "FLOE_MAX_STREAMS_PER_CONNECTION")]
    pub max_streams_per_connection: Option<u32>,
    /// Seconds a storage or admin request may take in all (body, work, answer) [default: 120]
    #[arg(long, env = "FLOE_REQUEST_TIMEOUT")]
    pub request_timeout: Option<u64>,
    /// Seconds a request body may pause between two frames before the request is cut [default: 10]
    #[arg(long, env = "FLOE_BODY_TIMEOUT")]
    pub body_timeout: Option<u64>,
    /// File holding the admin bearer token; without it the admin API refuses every call
    #[arg(long, env = "FLOE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Stop accepting writes once stored bytes would exceed this (e.g. 10GiB, 500MB) [default: no limit]
    #[arg(long, env = "FLOE_MAX_STORAGE", value_parser = parse_bytes)]
    pub max_storage: Option<u64>,
    /// Bytes that blobs not (yet) certified may hold, so that writes nobody certifies cannot
    /// crowd out certified data [default: half of --max-storage, else 4GiB]
    #[arg(long, env = "FLOE_UNCERTIFIED_QUOTA", value_parser = parse_bytes)]
    pub uncertified_quota: Option<u64>,
    /// Seconds after which a blob never certified is deleted (metadata and slivers) [default: 3600]
    #[arg(long, env = "FLOE_UNCERTIFIED_GRACE")]
    pub uncertified_grace: Option<u64>,
    /// Largest gRPC message accepted or sent, in bytes or with a unit [default: 96MiB]
    #[arg(long, env = "FLOE_MAX_MESSAGE", value_parser = parse_bytes)]
    pub max_message: Option<u64>,
    /// Storage requests (slivers, metadata, recovery symbols, sync pages) handled at once; with
    /// --max-connections and --connection-window it bounds the node's memory (docs/node.md)
    /// [default: 16]
    #[arg(long, env = "FLOE_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<usize>,
    /// Blobs rebuilt concurrently by background recovery [default: 4]
    #[arg(long, env = "FLOE_RECOVERY_CONCURRENCY")]
    pub recovery_concurrency: Option<usize>,
    /// Seconds between background scans for missing slivers [default: 2]
    #[arg(long, env = "FLOE_RECOVERY_INTERVAL")]
    pub recovery_interval: Option<u64>,
    /// Journal bytes the storage engine keeps before it flushes harder; writes halt above it
    /// until journals are released (min 24MiB; each sealed journal counts at least 32MiB)
    /// [default: 256MiB]
    #[arg(long, env = "FLOE_STORE_JOURNAL_LIMIT", value_parser = parse_bytes)]
    pub store_journal_limit: Option<u64>,
    /// This node's vote for the storage price: units per MiB of encoded size per epoch; the
    /// control plane publishes the value at or below which nodes holding 2f+1 shards voted
    /// [default: 100]
    #[arg(long, env = "FLOE_STORAGE_PRICE")]
    pub storage_price: Option<u64>,
    /// This node's vote for the write price: units per MiB of encoded size, once per
    /// registration [default: 20]
    #[arg(long, env = "FLOE_WRITE_PRICE")]
    pub write_price: Option<u64>,
    /// Take the price votes from the config file's `[price-votes.NAME]` table when it has one
    /// (the operator writes one per pod and passes the pod's name)
    #[arg(long, env = "FLOE_VOTE_AS")]
    pub vote_as: Option<String>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "FLOE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// TEST ONLY: misbehave on purpose (corrupt-slivers: serve slivers with flipped bytes)
    #[arg(long, env = "FLOE_FAULT", hide = true)]
    pub fault: Option<Fault>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Faults a test can switch on in a real node process (there is no other way to get a lying
/// node on demand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// Serve slivers with flipped bits (a lying node).
    CorruptSlivers,
    /// Never scrub or recover: data lost under it stays lost (a lazy node, for challenges).
    NoRepair,
    /// The store's keeper does not get journals released (the engine alone: shows the halt).
    PinnedJournals,
    /// The store's writer holds its commits while `<data-dir>/stall-writes` exists, as the
    /// engine does when it halts writes.
    StallWrites,
}

/// `123`, `64KiB`, `10MB`, `2GiB`…
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        u => return Err(format!("unknown unit {u:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} overflows"))
}

fn de_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        N(u64),
        S(String),
    }
    Ok(match Option::<V>::deserialize(d)? {
        None => None,
        Some(V::N(n)) => Some(n),
        Some(V::S(s)) => Some(parse_bytes(&s).map_err(serde::de::Error::custom)?),
    })
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub key_file: PathBuf,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub tls: bool,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    pub first_request_timeout: std::time::Duration,
    pub max_streams_per_source: usize,
    pub connection_window: u32,
    pub max_streams_per_connection: u32,
    pub request_timeout: std::time::Duration,
    pub body_timeout: std::time::Duration,
    pub admin_token: Option<String>,
    pub max_storage: Option<u64>,
    /// Bytes blobs not certified may hold.
    pub uncertified_quota: u64,
    /// Age after which a blob never certified is deleted.
    pub uncertified_grace: std::time::Duration,
    pub max_message: usize,
    pub max_concurrent_requests: usize,
    pub recovery_concurrency: usize,
    pub recovery_interval: std::time::Duration,
    /// Sizes of the storage engine (journal limit, write buffer, memtables).
    pub store_engine: crate::store::EngineTuning,
    pub log_format: LogFormat,
    pub fault: Option<Fault>,
    /// Price votes (units per MiB of encoded size): per epoch, and once per write.
    pub storage_price: u64,
    pub write_price: u64,
}

/// Default price votes: storage per MiB per epoch, and per MiB written once.
pub const DEFAULT_STORAGE_PRICE: u64 = 100;
pub const DEFAULT_WRITE_PRICE: u64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("admin token file {0} is empty")]
    EmptyToken(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    data_dir: Option<PathBuf>,
    key_file: Option<PathBuf>,
    grpc_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    #[serde(default)]
    tls: bool,
    max_connections: Option<usize>,
    max_connections_per_source: Option<usize>,
    first_request_timeout: Option<u64>,
    max_streams_per_source: Option<usize>,
    #[serde(default, deserialize_with = "de_bytes")]
    connection_window: Option<u64>,
    max_streams_per_connection: Option<u32>,
    request_timeout: Option<u64>,
    body_timeout: Option<u64>,
    admin_token_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_bytes")]
    max_storage: Option<u64>,
    #[serde(default, deserialize_with = "de_bytes")]
    uncertified_quota: Option<u64>,
    uncertified_grace: Option<u64>,
    #[serde(default, deserialize_with = "de_bytes")]
    max_message: Option<u64>,
    max_concurrent_requests: Option<usize>,
    recovery_concurrency: Option<usize>,
    recovery_interval: Option<u64>,
    #[serde(default, deserialize_with = "de_bytes")]
    store_journal_limit: Option<u64>,
    log_format: Option<LogFormat>,
    storage_price: Option<u64>,
    write_price: Option<u64>,
    /// Per-node votes by name (`--vote-as`).
    #[serde(default)]
    price_votes: std::collections::BTreeMap<String, PriceVotes>,
}

/// One node's price votes in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PriceVotes {
    storage_price: Option<u64>,
    write_price: Option<u64>,
}

impl Args {
    /// Merge flags/env over the config file over the defaults, and read the token file.
    pub fn resolve(self) -> Result<NodeConfig, ConfigError> {
        let file: FileConfig = match &self.config {
            None => FileConfig::default(),
            Some(p) => {
                let path = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse { path, source })?
            }
        };
        let admin_token = match self.admin_token_file.or(file.admin_token_file) {
            None => None,
            Some(p) => {
                let path = p.display().to_string();
                let t = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let t = t.trim().to_string();
                if t.is_empty() {
                    return Err(ConfigError::EmptyToken(path));
                }
                Some(t)
            }
        };
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("floe-data"));
        let store_engine = engine_tuning(
            self.store_journal_limit.or(file.store_journal_limit),
            self.fault,
            &data_dir,
        );
        let mine = self
            .vote_as
            .as_deref()
            .and_then(|name| file.price_votes.get(name));
        Ok(NodeConfig {
            key_file: self
                .key_file
                .or(file.key_file)
                .unwrap_or_else(|| data_dir.join("node.key")),
            data_dir,
            grpc_addr: self
                .grpc_addr
                .or(file.grpc_addr)
                .unwrap_or_else(|| ([0, 0, 0, 0], 7070).into()),
            http_addr: self
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| ([0, 0, 0, 0], 7071).into()),
            admin_addr: self.admin_addr.or(file.admin_addr),
            tls: self.tls || file.tls,
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(256)
                .max(1),
            max_connections_per_source: self
                .max_connections_per_source
                .or(file.max_connections_per_source)
                .unwrap_or(64)
                .max(1),
            first_request_timeout: std::time::Duration::from_secs(
                self.first_request_timeout
                    .or(file.first_request_timeout)
                    .unwrap_or(5)
                    .max(1),
            ),
            max_streams_per_source: self
                .max_streams_per_source
                .or(file.max_streams_per_source)
                .unwrap_or(128)
                .max(1),
            connection_window: self
                .connection_window
                .or(file.connection_window)
                .unwrap_or(4 << 20)
                .clamp(64 << 10, (1 << 31) - 1) as u32,
            max_streams_per_connection: self
                .max_streams_per_connection
                .or(file.max_streams_per_connection)
                .unwrap_or(32)
                .max(1),
            request_timeout: std::time::Duration::from_secs(
                self.request_timeout
                    .or(file.request_timeout)
                    .unwrap_or(120)
                    .max(1),
            ),
            body_timeout: std::time::Duration::from_secs(
                self.body_timeout.or(file.body_timeout).unwrap_or(10).max(1),
            ),
            admin_token,
            max_storage: self.max_storage.or(file.max_storage),
            uncertified_quota: self
                .uncertified_quota
                .or(file.uncertified_quota)
                .unwrap_or_else(|| {
                    self.max_storage
                        .or(file.max_storage)
                        .map_or(4 << 30, |m| m / 2)
                }),
            uncertified_grace: std::time::Duration::from_secs(
                self.uncertified_grace
                    .or(file.uncertified_grace)
                    .unwrap_or(3600)
                    .max(1),
            ),
            max_message: self.max_message.or(file.max_message).unwrap_or(96 << 20) as usize,
            max_concurrent_requests: self
                .max_concurrent_requests
                .or(file.max_concurrent_requests)
                .unwrap_or(16)
                .max(1),
            recovery_concurrency: self
                .recovery_concurrency
                .or(file.recovery_concurrency)
                .unwrap_or(4)
                .max(1),
            recovery_interval: std::time::Duration::from_secs(
                self.recovery_interval
                    .or(file.recovery_interval)
                    .unwrap_or(2)
                    .max(1),
            ),
            store_engine,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            fault: self.fault,
            storage_price: self
                .storage_price
                .or(mine.and_then(|v| v.storage_price))
                .or(file.storage_price)
                .unwrap_or(DEFAULT_STORAGE_PRICE),
            write_price: self
                .write_price
                .or(mine.and_then(|v| v.write_price))
                .or(file.write_price)
                .unwrap_or(DEFAULT_WRITE_PRICE),
        })
    }
}

/// Engine sizes from the journal limit: the write buffer and memtables scale down with it so
/// that a small limit (tests, small volumes) still flushes before it is reached.
fn engine_tuning(
    journal_limit: Option<u64>,
    fault: Option<Fault>,
    data_dir: &std::path::Path,
) -> crate::store::EngineTuning {
    let d = crate::store::EngineTuning::default();
    let limit = journal_limit
        .unwrap_or(d.max_journal_bytes)
        .max(crate::store::MIN_JOURNAL_LIMIT);
    crate::store::EngineTuning {
        max_journal_bytes: limit,
        max_write_buffer_bytes: d.max_write_buffer_bytes.min(limit / 2),
        max_memtable_bytes: d.max_memtable_bytes.min((limit / 8) as u32),
        release_pinned_journals: fault != Some(Fault::PinnedJournals),
        flush_workers: d.flush_workers,
        stall_file: (fault == Some(Fault::StallWrites)).then(|| data_dir.join("stall-writes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("10"), Ok(10));
        assert_eq!(parse_bytes("64KiB"), Ok(65536));
        assert_eq!(parse_bytes("2 GB"), Ok(2_000_000_000));
        assert!(parse_bytes("12XB").is_err());
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn flags_override_file_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("node.toml");
        std::fs::write(
            &cfg,
            "data-dir = \"/from/file\"\nmax-storage = \"1MiB\"\nrecovery-concurrency = 7\n",
        )
        .unwrap();
        let args = Args::try_parse_from([
            "floe-node",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            "/from/flag",
        ])
        .unwrap();
        let c = args.resolve().unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(c.max_storage, Some(1 << 20));
        assert_eq!(c.recovery_concurrency, 7);
        assert_eq!(c.grpc_addr.port(), 7070);
        std::fs::write(&cfg, "no-such-key = 1\n").unwrap();
        let args = Args::try_parse_from(["floe-node", "--config", cfg.to_str().unwrap()]).unwrap();
        assert!(matches!(args.resolve(), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn a_node_votes_as_its_entry_in_the_price_votes_table() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("node.toml");
        std::fs::write(
            &cfg,
            "data-dir = \"/d\"\nstorage-price = 150\nwrite-price = 30\n\
             [price-votes.alpha-1]\nstorage-price = 400\n\
             [price-votes.alpha-2]\nstorage-price = 500\nwrite-price = 90\n",
        )
        .unwrap();
        let votes = |name: Option<&str>| {
            let mut a = vec!["floe-node", "--config", cfg.to_str().unwrap()];
            if let Some(n) = name {
                a.extend(["--vote-as", n]);
            }
            let c = Args::try_parse_from(a).unwrap().resolve().unwrap();
            (c.storage_price, c.write_price)
        };
        assert_eq!(votes(None), (150, 30));
        assert_eq!(
            votes(Some("alpha-0")),
            (150, 30),
            "no entry: the file's votes"
        );
        assert_eq!(
            votes(Some("alpha-1")),
            (400, 30),
            "an entry without a write vote"
        );
        assert_eq!(votes(Some("alpha-2")), (500, 90));
    }
}
