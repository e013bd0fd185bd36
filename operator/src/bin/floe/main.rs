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

mod account_cmd;
mod blob_cmd;
mod control_cmd;
mod progress;
mod quilt_cmd;
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
    /// The control plane's client API (host:port) for accounts and registrations [default: the
    /// local testnet's]
    #[arg(long, global = true, env = "FLOE_CONTROL")]
    pub control: Option<String>,
    /// The account's Ed25519 key file [default: $FLOE_CONFIG_DIR, $XDG_CONFIG_HOME/floe or
    /// ~/.config/floe, file account.key]
    #[arg(long, global = true, env = "FLOE_ACCOUNT_FILE")]
    pub account_file: Option<PathBuf>,
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
    Put {
        file: PathBuf,
        /// Epochs to store it for (from the first epoch billed) [default: 5]
        #[arg(long)]
        epochs: Option<u32>,
        /// The owner may delete it before it expires (the default)
        #[arg(long, conflicts_with = "permanent")]
        deletable: bool,
        /// Nobody may delete it before it expires
        #[arg(long)]
        permanent: bool,
    },
    /// Keep a blob longer: add epochs to its lifetime (before it expires; paid by the account)
    Extend {
        #[arg(allow_hyphen_values = true)]
        blob_id: String,
        #[arg(long)]
        epochs: u32,
    },
    /// Delete a deletable blob (its owner only); every node collects it
    Delete {
        #[arg(allow_hyphen_values = true)]
        blob_id: String,
    },
    /// The account that pays for storage
    Account {
        #[command(subcommand)]
        command: AccountCmd,
    },
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
    /// Store every file of a directory as one quilt; prints the quilt ID and each file's patch ID
    PutQuilt { dir: PathBuf },
    /// Read one file of a quilt by its identifier
    GetQuilt {
        #[arg(allow_hyphen_values = true)]
        quilt_id: String,
        identifier: String,
        /// Write here instead of standard output
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// List the files of a quilt
    LsQuilt {
        #[arg(allow_hyphen_values = true)]
        quilt_id: String,
    },
    /// A network's market as a process (what a StorageCluster's control pod runs)
    Control {
        #[command(subcommand)]
        command: control_cmd::ControlCmd,
    },
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
    /// A node's price votes, INDEX=STORAGE,WRITE (units per MiB of encoded size: per epoch,
    /// and once per write), e.g. 2=300,40 [default: each node's own, 100,20]
    #[arg(long)]
    pub price_vote: Vec<String>,
    /// The furthest a blob's lifetime may end beyond the current epoch
    #[arg(long, default_value_t = 53)]
    pub max_epochs_ahead: u32,
    /// TEST ONLY: INDEX=FAULT, e.g. 3=corrupt-slivers
    #[arg(long, hide = true)]
    pub fault: Vec<String>,
}

#[derive(Subcommand)]
pub enum AccountCmd {
    /// Create the account key file (refuses to replace one)
    New,
    /// The account's ID (its public key) and key file
    Show,
    /// The account's balance at the control plane
    Balance,
}

#[derive(Subcommand)]
pub enum TestnetCmd {
    /// Credit an account from the testnet's faucet
    Faucet {
        /// Account ID (hex) [default: this CLI's account]
        #[arg(long)]
        account: Option<String>,
        /// Units [default: the testnet's grant]
        #[arg(long, default_value_t = 0)]
        amount: u64,
    },
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
        Cmd::Put {
            file,
            epochs,
            deletable: _,
            permanent,
        } => blob_cmd::put(&cli, file, *epochs, !*permanent).await,
        Cmd::Extend { blob_id, epochs } => account_cmd::extend(&cli, blob_id, *epochs).await,
        Cmd::Delete { blob_id } => account_cmd::delete(&cli, blob_id).await,
        Cmd::Account { command } => account_cmd::account(&cli, command).await,
        Cmd::Get { blob_id, output } => blob_cmd::get(&cli, blob_id, output.as_ref()).await,
        Cmd::Status { blob_id } => blob_cmd::status(&cli, blob_id.as_deref()).await,
        Cmd::Control { command } => control_cmd::run(command).await,
        Cmd::BlobId { file, shards } => blob_cmd::blob_id(&cli, file, *shards),
        Cmd::PutQuilt { dir } => quilt_cmd::put(&cli, dir).await,
        Cmd::GetQuilt {
            quilt_id,
            identifier,
            output,
        } => quilt_cmd::get(&cli, quilt_id, identifier, output.as_ref()).await,
        Cmd::LsQuilt { quilt_id } => quilt_cmd::ls(&cli, quilt_id).await,
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
