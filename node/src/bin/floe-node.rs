//! `floe-node`: the storage-node daemon.

use clap::Parser;
use floe_node::server::{
    self,
    config::{Args, LogFormat},
};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let config = Args::parse().resolve()?;
    let filter = EnvFilter::try_from_env("FLOE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(server::run(config));
    // blocking tasks still waiting on the disk are not waited for (server::SHUTDOWN_GRACE)
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}
