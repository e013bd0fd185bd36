//! `floe put-quilt`, `get-quilt`, `ls-quilt`: many small files as one blob (docs/quilt.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use floe_node::quilt::{self, Item, PatchId};
use serde_json::json;

use crate::blob_cmd::{client, parse_id};
use crate::table::{self, Col};
use crate::Cli;

/// The content type browsers need for a file, from its extension (stored as the
/// `content-type` tag, which the gateway serves as `Content-Type`).
fn content_type(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "txt" | "md" => "text/plain",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "pdf" => "application/pdf",
        "wasm" => "application/wasm",
        _ => return None,
    })
}

/// The regular files of `dir` (not its subdirectories), by name.
fn items(dir: &Path) -> anyhow::Result<Vec<Item>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let identifier = p
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("{} has a name that is not UTF-8", p.display()))?
                .to_string();
            let mut tags = BTreeMap::new();
            if let Some(t) = content_type(&p) {
                tags.insert("content-type".to_string(), t.to_string());
            }
            let data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            Ok(Item {
                identifier,
                tags,
                data,
            })
        })
        .collect()
}

pub async fn put(cli: &Cli, dir: &Path) -> anyhow::Result<()> {
    let items = items(dir)?;
    if items.is_empty() {
        bail!("{} holds no files", dir.display());
    }
    let c = client(cli).await?;
    let max = c.committee().params().max_blob_size();
    let size = quilt::encoded_len(&items);
    if size > max {
        bail!("the quilt of {} would be {size} bytes; this network stores at most {max} bytes per blob (split the directory)", dir.display());
    }
    let start = Instant::now();
    let bytes = quilt::encode(&items)?;
    let out = c.write(bytes, None).await?;
    let files: Vec<serde_json::Value> = items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            json!({"identifier": it.identifier, "size": it.data.len(),
                "patch_id": PatchId { quilt_id: out.blob_id, index: i as u32 }.to_string()})
        })
        .collect();
    if cli.json {
        println!(
            "{}",
            json!({"quilt_id": out.blob_id.to_string(), "size": out.size, "files": files,
                "ms": start.elapsed().as_millis() as u64})
        );
    } else {
        println!("quilt ID: {}", out.blob_id);
        println!(
            "{} files, {} bytes, stored in {:.2?}",
            items.len(),
            out.size,
            start.elapsed()
        );
        table::print(
            &[
                Col("IDENTIFIER", "identifier"),
                Col("SIZE", "size"),
                Col("PATCH ID", "patch_id"),
            ],
            &files,
        );
    }
    Ok(())
}

pub async fn get(
    cli: &Cli,
    quilt_id: &str,
    identifier: &str,
    output: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let id = parse_id(quilt_id)?;
    let c = Arc::new(client(cli).await?);
    let (_, data) = c.quilt_file(&id, identifier).await?;
    match output {
        Some(p) => std::fs::write(p, &data).with_context(|| format!("writing {}", p.display()))?,
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&data)?;
        }
    }
    Ok(())
}

pub async fn ls(cli: &Cli, quilt_id: &str) -> anyhow::Result<()> {
    let id = parse_id(quilt_id)?;
    let c = Arc::new(client(cli).await?);
    let md = c.locate(&id).await?;
    let index = c.quilt_index(&id, &md).await?;
    let rows: Vec<serde_json::Value> = index
        .iter()
        .enumerate()
        .map(|(i, e)| {
            json!({"identifier": e.identifier, "size": e.length, "tags": e.tags,
                "tags_text": e.tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
                "patch_id": PatchId { quilt_id: id, index: i as u32 }.to_string()})
        })
        .collect();
    if cli.json {
        println!("{}", json!({"quilt_id": id.to_string(), "files": rows}));
    } else {
        table::print(
            &[
                Col("IDENTIFIER", "identifier"),
                Col("SIZE", "size"),
                Col("TAGS", "tags_text"),
                Col("PATCH ID", "patch_id"),
            ],
            &rows,
        );
    }
    Ok(())
}
