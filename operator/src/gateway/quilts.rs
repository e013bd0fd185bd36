//! Quilts over HTTP: `PUT /v1/quilts` (multipart), a file by quilt ID and identifier or by patch
//! ID, and the list of a quilt's files. The format is `floe_node::quilt` (docs/quilt.md).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::Response;
use axum::Json;
use floe_node::client::{BlobClient, QuiltReadError};
use floe_node::codec::{BlobId, BlobMetadata};
use floe_node::quilt::{self, Entry, Item, PatchId, QuiltError};

use super::api::{
    PublisherQuery, QuiltPatchItem, QuiltPatchMetadata, QuiltStoreResult, StoredQuiltPatch,
};
use super::blobs::{
    admit_write, check_publisher, max_epochs_ahead, not_modified, not_modified_response,
    parse_blob_id, query, serve, store, Served,
};
use super::body::Received;
use super::error::ApiError;
use super::Shared;

/// The multipart field that carries identifiers' tags, as in Walrus.
pub const METADATA_FIELD: &str = "_metadata";
/// The response header naming a quilt file.
pub const PATCH_IDENTIFIER: &str = "x-quilt-patch-identifier";
/// The tag whose value a quilt file is served with as `Content-Type`.
pub const CONTENT_TYPE_TAG: &str = "content-type";

fn quilt_error(e: QuiltError) -> ApiError {
    match e {
        QuiltError::NoSuchFile(_) => ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "QUILT_PATCH_NOT_FOUND",
            e.to_string(),
        ),
        QuiltError::NotAQuilt | QuiltError::Truncated(_) | QuiltError::Malformed(_) => {
            ApiError::bad_request("NOT_A_QUILT", format!("the blob is not a quilt: {e}"))
        }
        _ => ApiError::bad_request("INVALID_QUILT", e.to_string()),
    }
}

/// The index of quilt `id`, or the error a client should see.
pub async fn read_index(
    client: &Arc<BlobClient>,
    id: &BlobId,
    md: &Arc<BlobMetadata>,
) -> Result<Vec<Entry>, ApiError> {
    client.quilt_index(id, md).await.map_err(|e| match e {
        QuiltReadError::Read(r) => r.into(),
        QuiltReadError::Quilt(q) => quilt_error(q),
    })
}

/// Store many files as one quilt.
///
/// Every multipart field is a file named by its field name; the optional `_metadata` field is
/// a JSON list of `{"identifier", "tags"}`. A file's own `Content-Type` becomes its
/// `content-type` tag unless `_metadata` sets one.
#[utoipa::path(
    put,
    path = "/v1/quilts",
    params(PublisherQuery),
    request_body(content_type = "multipart/form-data", description = "One field per file; `_metadata` as JSON"),
    responses(
        (status = 200, description = "Stored", body = QuiltStoreResult),
        (status = 400, description = "Malformed multipart, identifiers or tags", body = super::error::ErrorBody),
        (status = 401, description = "Missing or refused bearer token", body = super::error::ErrorBody),
        (status = 402, description = "The publisher's balance cannot pay for the storage; nothing stored", body = super::error::ErrorBody),
        (status = 403, description = "The control plane refused to register the quilt for this publisher", body = super::error::ErrorBody),
        (status = 413, description = "Body over the limit", body = super::error::ErrorBody),
    )
)]
pub async fn put_quilt(
    State(gw): State<Shared>,
    q: Result<Query<PublisherQuery>, QueryRejection>,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Json<QuiltStoreResult>, ApiError> {
    let q = query(q)?;
    let client = gw.client()?;
    let (epochs, deletable) = check_publisher(&q, max_epochs_ahead(&client))?;
    let limit = admit_write(&gw, &headers, client.committee().params().max_blob_size())?;
    if super::body::declared_len(&headers).is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(format!(
            "the body is larger than this gateway's limit of {limit} bytes"
        )));
    }
    let mut multipart =
        multipart.map_err(|e| ApiError::bad_request("MALFORMED_MULTIPART", e.body_text()))?;
    let malformed = |e: axum::extract::multipart::MultipartError| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(e.body_text())
        } else {
            ApiError::bad_request("MALFORMED_MULTIPART", e.body_text())
        }
    };
    let mut items: Vec<Item> = Vec::new();
    let mut meta: Vec<QuiltPatchMetadata> = Vec::new();
    let mut total = 0u64;
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_string();
        let ctype = field.content_type().map(str::to_string);
        let data = field.bytes().await.map_err(malformed)?;
        total += data.len() as u64;
        gw.metrics.bytes_in(data.len() as u64);
        if total > limit {
            return Err(ApiError::too_large(format!(
                "the files add up to more than the limit of {limit} bytes"
            )));
        }
        if name == METADATA_FIELD {
            meta = serde_json::from_slice(&data).map_err(|e| {
                ApiError::bad_request(
                    "INVALID_METADATA",
                    format!("_metadata must be a JSON list of {{identifier, tags}}: {e}"),
                )
            })?;
            continue;
        }
        quilt::check_identifier(&name).map_err(quilt_error)?;
        let mut tags = BTreeMap::new();
        if let Some(t) = ctype {
            tags.insert(CONTENT_TYPE_TAG.to_string(), t);
        }
        items.push(Item {
            identifier: name,
            tags,
            data: data.to_vec(),
        });
    }
    for m in meta {
        let Some(item) = items.iter_mut().find(|i| i.identifier == m.identifier) else {
            return Err(ApiError::bad_request(
                "INVALID_METADATA",
                format!(
                    "_metadata names {:?}, which is not a file of this upload",
                    m.identifier
                ),
            ));
        };
        item.tags.extend(m.tags);
    }
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "EMPTY_QUILT",
            "the upload holds no files",
        ));
    }
    let bytes = tokio::task::block_in_place(|| quilt::encode(&items)).map_err(quilt_error)?;
    let identifiers: Vec<String> = items.into_iter().map(|i| i.identifier).collect();
    if bytes.len() as u64 > client.committee().params().max_blob_size() {
        return Err(ApiError::too_large(format!(
            "the quilt is {} bytes; the network stores at most {}",
            bytes.len(),
            client.committee().params().max_blob_size()
        )));
    }
    let r = store(
        &gw,
        &client,
        Received::Memory(bytes),
        epochs,
        deletable,
        q.force.unwrap_or(false),
    )
    .await?;
    let quilt_id = parse_blob_id(r.blob_id())?;
    Ok(Json(QuiltStoreResult {
        stored_quilt_blobs: identifiers
            .into_iter()
            .enumerate()
            .map(|(i, identifier)| StoredQuiltPatch {
                identifier,
                quilt_patch_id: PatchId {
                    quilt_id,
                    index: i as u32,
                }
                .to_string(),
            })
            .collect(),
        blob_store_result: r,
    }))
}

async fn serve_file(
    gw: &Shared,
    headers: &HeaderMap,
    method: &Method,
    quilt_id: BlobId,
    pick: impl FnOnce(&[Entry]) -> Result<(usize, Entry), ApiError>,
) -> Result<Response, ApiError> {
    let client = gw.client()?;
    let md = client.locate(&quilt_id).await?;
    let index = read_index(&client, &quilt_id, &md).await?;
    let (i, entry) = pick(&index)?;
    let patch = PatchId {
        quilt_id,
        index: i as u32,
    }
    .to_string();
    if not_modified(headers, &patch) {
        return Ok(not_modified_response(&patch));
    }
    let mut r = serve(
        gw,
        &client,
        headers,
        Served {
            id: quilt_id,
            md,
            base: entry.range(),
            etag: &patch,
            stored_type: entry.tags.get(CONTENT_TYPE_TAG).map(String::as_str),
            head: method == Method::HEAD,
        },
    )?;
    if let Ok(v) = HeaderValue::from_str(&entry.identifier) {
        r.headers_mut()
            .insert(HeaderName::from_static(PATCH_IDENTIFIER), v);
    }
    Ok(r)
}

/// A file of a quilt by the quilt's ID and the file's identifier (`Range` honoured).
#[utoipa::path(
    get,
    path = "/v1/blobs/by-quilt-id/{quilt_id}/{identifier}",
    params(
        ("quilt_id" = String, Path, description = "The quilt's blob ID"),
        ("identifier" = String, Path, description = "The file's identifier"),
    ),
    responses(
        (status = 200, description = "The file; its identifier in X-Quilt-Patch-Identifier", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 206, description = "The requested range of the file", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 404, description = "No such quilt or file", body = super::error::ErrorBody),
        (status = 410, description = "The quilt expired or was deleted", body = super::error::ErrorBody),
    )
)]
pub async fn get_by_identifier(
    State(gw): State<Shared>,
    method: Method,
    Path((quilt_id, identifier)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let quilt_id = parse_blob_id(&quilt_id)?;
    serve_file(&gw, &headers, &method, quilt_id, |index| {
        index
            .iter()
            .enumerate()
            .find(|(_, e)| e.identifier == identifier)
            .map(|(i, e)| (i, e.clone()))
            .ok_or_else(|| quilt_error(QuiltError::NoSuchFile(identifier.clone())))
    })
    .await
}

/// A file of a quilt by its patch ID (`Range` honoured).
#[utoipa::path(
    get,
    path = "/v1/blobs/by-quilt-patch-id/{patch_id}",
    params(("patch_id" = String, Path, description = "Quilt patch ID")),
    responses(
        (status = 200, description = "The file", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "Not a patch ID", body = super::error::ErrorBody),
        (status = 404, description = "No such quilt or file", body = super::error::ErrorBody),
    )
)]
pub async fn get_by_patch_id(
    State(gw): State<Shared>,
    method: Method,
    Path(patch): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let p: PatchId = patch
        .parse()
        .map_err(|e: QuiltError| ApiError::bad_request("INVALID_PATCH_ID", e.to_string()))?;
    serve_file(&gw, &headers, &method, p.quilt_id, |index| {
        index
            .get(p.index as usize)
            .map(|e| (p.index as usize, e.clone()))
            .ok_or_else(|| quilt_error(QuiltError::NoSuchFile(format!("#{}", p.index))))
    })
    .await
}

/// The files of a quilt: identifier, patch ID, size and tags.
#[utoipa::path(
    get,
    path = "/v1/quilts/{quilt_id}/patches",
    params(("quilt_id" = String, Path, description = "The quilt's blob ID")),
    responses(
        (status = 200, description = "The quilt's files", body = Vec<QuiltPatchItem>),
        (status = 400, description = "Not a blob ID, or the blob is not a quilt", body = super::error::ErrorBody),
        (status = 404, description = "No such quilt", body = super::error::ErrorBody),
    )
)]
pub async fn list_patches(
    State(gw): State<Shared>,
    Path(quilt_id): Path<String>,
) -> Result<Json<Vec<QuiltPatchItem>>, ApiError> {
    let quilt_id = parse_blob_id(&quilt_id)?;
    let client = gw.client()?;
    let md = client.locate(&quilt_id).await?;
    let index = read_index(&client, &quilt_id, &md).await?;
    Ok(Json(
        index
            .into_iter()
            .enumerate()
            .map(|(i, e)| QuiltPatchItem {
                patch_id: PatchId {
                    quilt_id,
                    index: i as u32,
                }
                .to_string(),
                identifier: e.identifier,
                size: e.length,
                tags: e.tags,
            })
            .collect(),
    ))
}
