//! `floe put`, `get`, `status`, `blob-id`: the client side.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _};
use floe_node::client::FileSource;
use floe_node::client::{BlobClient, ClientConfig, NodeClient};
use floe_node::codec::stream::metadata_only;
use floe_node::codec::{BlobId, BlobSource, EncodingParams};
use floe_node::proto;
use floe_operator::local::TestnetState;
use serde_json::json;

use crate::table::{self, Col};
use crate::{progress, Cli};

pub async fn client(cli: &Cli) -> anyhow::Result<BlobClient> {
    let addresses = if cli.connect.is_empty() {
        TestnetState::load(&cli.testnet_dir)?.addresses()
    } else {
        cli.connect.clone()
    };
    BlobClient::connect(&addresses, ClientConfig::default())
        .await
        .context("learning the committee from the nodes")
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// A blob ID as given on the command line (IDs may begin with `-`).
pub fn parse_id(s: &str) -> anyhow::Result<BlobId> {
    s.trim()
        .parse()
        .map_err(|e: floe_node::codec::metadata::ParseBlobIdError| anyhow::anyhow!("{e}"))
}

pub async fn put(
    cli: &Cli,
    file: &Path,
    epochs: Option<u32>,
    deletable: bool,
) -> anyhow::Result<()> {
    let len = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let c = client(cli).await?;
    let committee = c.committee();
    let max = committee.params().max_blob_size();
    if len > max {
        bail!(
            "{} is {len} bytes; the largest blob this {}-shard network stores is {max} bytes ({:.1} MiB)",
            file.display(),
            committee.n_shards,
            mib(max)
        );
    }
    let opts = floe_node::client::PutOptions {
        epochs,
        deletable,
        registrar: crate::account_cmd::registrar(cli).await?,
    };
    // large files are read in pieces by the streaming encoder, never held whole
    let out = c
        .write_file_with(file, &opts, progress::reporter("put", cli.json))
        .await
        .with_context(|| format!("writing {}", file.display()))?;
    if cli.json {
        outln!(
            "{}",
            json!({"blob_id": out.blob_id.to_string(), "size": out.size, "encoded_size": out.encoded_size,
                "epoch": out.epoch, "confirmed_shards": out.confirmed_shards, "quorum": out.quorum,
                "certified_nodes": out.certified_nodes, "encode_ms": out.encode_time.as_millis() as u64,
                "upload_ms": out.upload_time.as_millis() as u64, "total_ms": out.total_time.as_millis() as u64})
        );
    } else {
        outln!("blob ID:       {}", out.blob_id);
        outln!(
            "size:          {} bytes, encoded {:.1} MiB",
            out.size,
            mib(out.encoded_size)
        );
        outln!(
            "confirmations: {} of {} shards (quorum {}) in epoch {}, certificate on {} nodes",
            out.confirmed_shards,
            committee.n_shards,
            out.quorum,
            out.epoch,
            out.certified_nodes
        );
        outln!(
            "time:          {:.2?} (encode {:.2?}, upload {:.2?}) = {:.1} MiB/s",
            out.total_time,
            out.encode_time,
            out.upload_time,
            mib(out.size) / out.total_time.as_secs_f64()
        );
    }
    Ok(())
}

pub async fn get(cli: &Cli, blob_id: &str, output: Option<&PathBuf>) -> anyhow::Result<()> {
    let id = parse_id(blob_id)?;
    let c = client(cli).await?;
    let start = Instant::now();
    match output {
        Some(p) => {
            let size = c
                .read_to_file(&id, p, progress::reporter("get", cli.json))
                .await?;
            if cli.json {
                outln!(
                    "{}",
                    json!({"blob_id": id.to_string(), "size": size, "ms": start.elapsed().as_millis() as u64})
                );
            } else {
                eprintln!("{size} bytes in {:.2?} → {}", start.elapsed(), p.display());
            }
        }
        None => {
            use std::io::Write;
            let data = c.read(&id, progress::reporter("get", true)).await?;
            std::io::stdout().write_all(&data)?;
        }
    }
    Ok(())
}

pub fn status_name(s: i32) -> &'static str {
    match proto::NodeStatus::try_from(s) {
        Ok(proto::NodeStatus::Active) => "active",
        Ok(proto::NodeStatus::Recovering) => "recovering",
        Ok(proto::NodeStatus::Syncing) => "syncing",
        _ => "standby",
    }
}

/// `floe status [BLOB_ID]`: every member of the current committee, or one blob on each.
pub async fn status(cli: &Cli, blob: Option<&str>) -> anyhow::Result<()> {
    let id = blob.map(parse_id).transpose()?;
    let c = client(cli).await?;
    let committee = c.committee();
    let mut rows = Vec::new();
    for m in &committee.members {
        let node = NodeClient::new(&m.address, 16 << 20)?;
        let row = match &id {
            None => match node.info().await {
                Ok(i) => {
                    json!({"node": m.node_id.short(), "address": m.address, "status": status_name(i.status),
                    "epoch": i.epoch, "shards": i.shards.len(), "stored_bytes": i.stored_bytes, "blobs": i.blobs,
                    "recovery_backlog": i.recovery_backlog})
                }
                Err(e) => {
                    json!({"node": m.node_id.short(), "address": m.address, "status": "unreachable", "error": e.to_string()})
                }
            },
            Some(id) => match node.blob_status(id).await {
                Ok(s) => json!({"node": m.node_id.short(), "address": m.address,
                    "state": format!("{:?}", proto::BlobState::try_from(s.state).unwrap_or(proto::BlobState::Unknown)).to_lowercase(),
                    "pairs_stored": s.pairs_stored, "pairs_owned": s.pairs_owned, "size": s.size,
                    "pairs": format!("{}/{}", s.pairs_stored, s.pairs_owned)}),
                Err(e) => {
                    json!({"node": m.node_id.short(), "address": m.address, "state": "unreachable", "error": e.to_string()})
                }
            },
        };
        rows.push(row);
    }
    if cli.json {
        outln!(
            "{}",
            json!({"epoch": committee.epoch, "n_shards": committee.n_shards, "nodes": rows})
        );
        return Ok(());
    }
    outln!(
        "epoch {} · {} shards · {} nodes",
        committee.epoch,
        committee.n_shards,
        committee.members.len()
    );
    if id.is_none() {
        table::print(
            &[
                Col("NODE", "node"),
                Col("ADDRESS", "address"),
                Col("STATUS", "status"),
                Col("EPOCH", "epoch"),
                Col("SHARDS", "shards"),
                Col("STORED", "stored_bytes"),
                Col("BLOBS", "blobs"),
                Col("BACKLOG", "recovery_backlog"),
            ],
            &rows,
        );
    } else {
        table::print(
            &[
                Col("NODE", "node"),
                Col("ADDRESS", "address"),
                Col("STATE", "state"),
                Col("PAIRS", "pairs"),
            ],
            &rows,
        );
    }
    Ok(())
}

pub fn blob_id(cli: &Cli, file: &Path, shards: u16) -> anyhow::Result<()> {
    // metadata only, the file read in pieces: the expansion is hashed stripe by stripe and
    // never held, nor is the file (peak: Q, half the blob at n = 1000, and the leaf matrix)
    let source = FileSource::open(file).with_context(|| format!("reading {}", file.display()))?;
    let size = source.len();
    let (_, id) = metadata_only(&source, EncodingParams::new(shards as usize)?)
        .with_context(|| format!("encoding {}", file.display()))?;
    if cli.json {
        outln!(
            "{}",
            json!({"blob_id": id.to_string(), "size": size, "shards": shards})
        );
    } else {
        outln!("{id}");
    }
    Ok(())
}
