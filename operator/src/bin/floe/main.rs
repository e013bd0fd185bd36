//! `floe`: run a local testnet, store and read blobs. Parsing lives here; each command group
//! has a module of its own (`testnet_cmd`, `blob_cmd`), tables are printed by `table`.

/// `println!` for the CLI's output: a closed stdout (`floe … | head`) ends the process quietly
/// ([`closed_stdout`]) instead of panicking in `println!`.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::closed_stdout(e)
        }
    }};
}

/// `print!` with [`outln!`]'s handling of a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            $crate::closed_stdout(e)
        }
    }};
}

mod blob_cmd;
mod progress;
mod table;
mod testnet_cmd;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use floe_operator::crd::duration::parse_flag;

#[derive(Parser)]
#[command(
    name = "floe",
    version,
    about = "Floe: a decentralized blob store — local testnet and client"
)]
pub struct Cli {
    /// Machine-readable output
    #[arg(long, global = true)]
    pub json: bool,
    /// Testnet directory used when no --connect addresses are given
    #[arg(
        long,
        global = true,
        env = "FLOE_TESTNET_DIR",
        default_value = ".floe-testnet"
    )]
    pub testnet_dir: PathBuf,
    /// Node gRPC addresses (host:port,…) to use instead of the local testnet
    #[arg(long, global = true, env = "FLOE_CONNECT", value_delimiter = ',')]
    pub connect: Vec<String>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run a network of floe-node processes on this machine
    Testnet {
        #[command(subcommand)]
        command: TestnetCmd,
    },
    /// Store a file; prints its blob ID
    Put { file: PathBuf },
    /// Read a blob back
    Get {
        /// The blob ID (it may begin with '-')
        #[arg(allow_hyphen_values = true)]
        blob_id: String,
        /// Write here instead of standard output
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Network status, or one blob's status on every node
    Status {
        #[arg(allow_hyphen_values = true)]
        blob_id: Option<String>,
    },
    /// Print the StorageCluster CRD (what crds/storagecluster.yaml holds)
    Crd,
    /// Compute a file's blob ID offline
    BlobId {
        file: PathBuf,
        #[arg(long, default_value_t = 100)]
        shards: u16,
    },
}

/// `floe testnet up`.
#[derive(Args, Clone)]
pub struct UpArgs {
    #[arg(long, default_value_t = 7)]
    pub nodes: usize,
    #[arg(long, default_value_t = 100)]
    pub shards: u16,
    /// Testnet directory (default: --testnet-dir)
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Epoch duration, e.g. 30s, 5m
    #[arg(long, default_value = "60s", value_parser = parse_flag)]
    pub epoch: Duration,
    /// Stay in the foreground (Ctrl-C stops the testnet)
    #[arg(long)]
    pub foreground: bool,
    /// The floe-node binary [default: next to floe, $FLOE_NODE_BIN, or PATH]
    #[arg(long)]
    pub node_bin: Option<PathBuf>,
    /// Challenge items per member per epoch [default: 1375, which catches a node missing
    /// 1 % of its slivers with probability ≥ 1 − 10⁻⁶]
    #[arg(long)]
    pub challenge_samples: Option<usize>,
    /// How long a member has to answer its challenge
    #[arg(long, default_value = "30s", value_parser = parse_flag)]
    pub challenge_timeout: Duration,
    /// Reward units split each epoch among the members that passed
    #[arg(long, default_value_t = 1_000_000)]
    pub reward_per_epoch: u64,
    /// A node unreachable this long loses its shards at the next epoch [default: 2 epochs]
    #[arg(long, value_parser = parse_flag)]
    pub unreachable_after: Option<Duration>,
    /// Report an epoch change as stuck after this long [default: a quarter epoch, 5 s–5 min]
    #[arg(long, value_parser = parse_flag)]
    pub stuck_after: Option<Duration>,
    /// TEST ONLY: INDEX=FAULT, e.g. 3=corrupt-slivers
    #[arg(long, hide = true)]
    pub fault: Vec<String>,
}

#[derive(Subcommand)]
pub enum TestnetCmd {
    /// Start nodes and the control plane (epochs, committees, challenges), supervise them.
    /// In a directory that holds a testnet, resume it (another --nodes becomes a membership
    /// change at the next epoch; --shards cannot change)
    Up(UpArgs),
    /// Epoch, phase and deadline; per node: status, shards, stake, sync, challenge, rewards
    Status,
    /// Start one more node; it joins the committee at the next epoch
    AddNode {
        #[arg(long, default_value_t = 1)]
        stake: u64,
    },
    /// Drain a node: no shards from the next epoch on; its process stops once that change completed
    RemoveNode { node: String },
    /// Change a node's stake (takes effect at the next epoch)
    SetStake { node: String, stake: u64 },
    /// Start the epoch change now instead of at the deadline, and wait for it to complete
    NextEpoch {
        /// Return once requested
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value = "300s", value_parser = parse_flag)]
        timeout: Duration,
    },
    /// SIGKILL a node (by index or name) and keep it down
    Kill { node: String },
    /// Start a stopped node again
    Restart {
        node: String,
        /// Start it with an empty data directory (it rebuilds its slivers from peers)
        #[arg(long)]
        wipe: bool,
    },
    /// Stop the testnet (data stays in the directory)
    Down,
    #[command(hide = true)]
    Supervise {
        /// UpOptions as JSON
        #[arg(long)]
        options: String,
    },
}

/// Stdout could not be written: `floe … | head` closed it before the output ended. The process
/// ends quietly with success, as ripgrep does. SIGPIPE stays ignored (Rust's default) rather
/// than set to its default action: a storage node that resets a connection while the client
/// writes to it would then kill the CLI, since hyper writes sockets with `writev`, which has no
/// `MSG_NOSIGNAL` (tier 4 found it: reads from the host during a rolling upgrade died of
/// SIGPIPE).
pub(crate) fn closed_stdout(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("floe: writing to stdout: {e}");
    std::process::exit(1);
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Cmd::Crd => {
            out!("{}", floe_operator::crd::crd_yaml()?);
            Ok(())
        }
        Cmd::Testnet { command } => testnet_cmd::run(&cli, command).await,
        Cmd::Put { file } => blob_cmd::put(&cli, file).await,
        Cmd::Get { blob_id, output } => blob_cmd::get(&cli, blob_id, output.as_ref()).await,
        Cmd::Status { blob_id } => blob_cmd::status(&cli, blob_id.as_deref()).await,
        Cmd::BlobId { file, shards } => blob_cmd::blob_id(&cli, file, *shards),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_ids_that_begin_with_a_dash_are_arguments_not_flags() {
        let id = "-TvpYwYcLb0sXpAnXn4B1Eo8lE1BGtGf7gU1q6ZrDyc";
        let cli = Cli::try_parse_from(["floe", "get", id, "-o", "out"]).unwrap();
        assert!(matches!(&cli.command, Cmd::Get { blob_id, output: Some(_) } if blob_id == id));
        let cli = Cli::try_parse_from(["floe", "status", id]).unwrap();
        assert!(matches!(&cli.command, Cmd::Status { blob_id: Some(b) } if b == id));
        assert!(blob_cmd::parse_id(id).is_ok());
    }
}
