//! `PUT /v1/blobs`, `GET`/`HEAD /v1/blobs/{id}` with `Range`, and the byte-range endpoint.

use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use floe_node::client::control::RegisterItem;
use floe_node::client::{BlobClient, PutOptions, Registrar, WriteError, DEFAULT_EPOCHS};
use floe_node::codec::stream::{metadata_only, SliceSource};
use floe_node::codec::{BlobId, BlobMetadata};
use floe_node::protocol::encoded_size;
use futures::StreamExt;

use super::api::{
    AlreadyCertified, BlobObject, BlobStoreResult, ByteRangeQuery, NewlyCreated, PublisherQuery,
    ResourceOperation, StorageResource,
};
use super::body::{receive, Received};
use super::error::ApiError;
use super::publisher::Purchase;
use super::range::{self, Wanted};
use super::Shared;

/// Most epochs ahead a blob may be stored for on a network that publishes no limit (one that
/// sells storage publishes its own in the committee): Walrus's mainnet allows 53, two years.
pub const MAX_EPOCHS_AHEAD: u32 = 53;

/// Cached for a year and never revalidated: a blob ID names its content.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// A blob ID from a path, or 400 saying why it is not one.
pub fn parse_blob_id(s: &str) -> Result<BlobId, ApiError> {
    s.parse()
        .map_err(|e: floe_node::codec::metadata::ParseBlobIdError| {
            ApiError::bad_request("INVALID_BLOB_ID", format!("{s:?} is not a blob ID: {e}"))
        })
}

/// The query, or 400 naming the bad parameter.
pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request("INVALID_QUERY", e.body_text()))
}

/// Checked publisher parameters: epochs ahead (default [`DEFAULT_EPOCHS`], as `floe put`) and
/// whether the blob is deletable (the default, as `floe put` and Walrus since 1.33:
/// `permanent=true` or `deletable=false` makes it permanent).
pub fn check_publisher(q: &PublisherQuery, max_epochs_ahead: u32) -> Result<(u32, bool), ApiError> {
    let epochs = q.epochs.unwrap_or(DEFAULT_EPOCHS);
    if epochs == 0 || epochs > max_epochs_ahead {
        return Err(ApiError::bad_request(
            "INVALID_EPOCHS",
            format!("epochs must be between 1 and {max_epochs_ahead} (this network's maximum ahead), got {epochs}"),
        ));
    }
    if let Some(t) = &q.encoding_type {
        if !t.eq_ignore_ascii_case("RS2") {
            return Err(ApiError::bad_request(
                "INVALID_ENCODING_TYPE",
                format!("unknown encoding type {t:?}; Floe encodes with RS2"),
            ));
        }
    }
    match (q.deletable, q.permanent) {
        (Some(true), Some(true)) => Err(ApiError::bad_request(
            "INVALID_BLOB_PERSISTENCE",
            "a blob cannot be both deletable and permanent",
        )),
        (Some(false), Some(false)) => Err(ApiError::bad_request(
            "INVALID_BLOB_PERSISTENCE",
            "a blob is either deletable or permanent; both were set to false",
        )),
        (Some(d), _) => Ok((epochs, d)),
        (None, Some(p)) => Ok((epochs, !p)),
        (None, None) => Ok((epochs, true)),
    }
}

/// The furthest ahead a blob may be stored on the network `client` writes to.
pub fn max_epochs_ahead(client: &BlobClient) -> u32 {
    client
        .committee()
        .economics
        .map_or(MAX_EPOCHS_AHEAD, |e| e.max_epochs_ahead)
}

/// Auth and body limits of a publisher request: the largest body it may send.
pub fn admit_write(gw: &Shared, headers: &HeaderMap, network_max: u64) -> Result<u64, ApiError> {
    let mut limit = gw.limits.max_body.min(network_max);
    if let Some(auth) = &gw.auth {
        let claims = auth.check(headers)?;
        if let Some(m) = claims.max_size {
            limit = limit.min(m);
        }
    }
    Ok(limit)
}

/// Store a received body as a blob: "already certified" without an upload when the network has
/// it (checked for bodies held in memory, whose ID costs little to compute), else upload.
///
/// On a network that sells storage the blob is first registered and paid for from the
/// publisher's account ([`Purchase`]); a refused registration stores nothing.
pub async fn store(
    gw: &Shared,
    client: &Arc<BlobClient>,
    body: Received,
    epochs: u32,
    deletable: bool,
    force: bool,
) -> Result<BlobStoreResult, ApiError> {
    let committee = client.committee();
    let purchase = match (&committee.economics, &gw.publisher) {
        (None, _) => None,
        (Some(_), Some(p)) => Some(Purchase::new(p.clone())),
        (Some(_), None) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NO_PUBLISHER_ACCOUNT",
                "this network sells storage and this gateway has no account to pay with \
                 (start it with --control and --account-key)",
            ))
        }
    };
    let opts = PutOptions {
        epochs: Some(epochs),
        deletable,
        registrar: purchase.clone().map(|p| p as Arc<dyn Registrar>),
    };
    let written = match body {
        Received::Memory(data) if !force => {
            let params = committee.params();
            let (data, computed) = tokio::task::spawn_blocking(move || {
                let r = metadata_only(&SliceSource(&data), params);
                (data, r)
            })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
            let (md, id) =
                computed.map_err(|e| ApiError::from(floe_node::client::WriteError::from(e)))?;
            let mut end_epoch = committee.epoch + epochs;
            if let Some(p) = &purchase {
                let shape = md.shape().map_err(|e| ApiError::internal(e.to_string()))?;
                let r = p
                    .buy(RegisterItem {
                        blob: id,
                        encoded_size: encoded_size(&shape),
                        epochs,
                        deletable,
                    })
                    .await
                    .map_err(|r| ApiError::from(&r))?;
                end_epoch = r.lifetime.lifetime.end_epoch;
            }
            if client.is_certified(&id).await {
                return Ok(BlobStoreResult::AlreadyCertified(AlreadyCertified {
                    blob_id: id.to_string(),
                    end_epoch,
                }));
            }
            client.write_with(data, &opts, None).await
        }
        Received::Memory(data) => client.write_with(data, &opts, None).await,
        Received::File(file, _) => client.write_file_with(file.path(), &opts, None).await,
    };
    let out = match written {
        Ok(out) => out,
        // the registrar's error is text: the refusal it recorded says which status it is
        Err(e @ WriteError::Registration(_)) => {
            return Err(match purchase.as_ref().and_then(|p| p.refusal()) {
                Some(r) => ApiError::from(&r),
                None => ApiError::from(e),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let (start_epoch, end_epoch, deletable, cost) = match purchase.as_ref().and_then(|p| p.bought())
    {
        Some(r) => {
            let l = r.lifetime.lifetime;
            (l.start_epoch, l.end_epoch, l.deletable, r.cost)
        }
        None => (out.epoch, out.epoch + epochs, deletable, 0),
    };
    let id = out.blob_id.to_string();
    Ok(BlobStoreResult::NewlyCreated(NewlyCreated {
        blob_object: BlobObject {
            id: id.clone(),
            registered_epoch: out.epoch,
            blob_id: id.clone(),
            size: out.size,
            encoding_type: "RS2".into(),
            certified_epoch: Some(out.epoch),
            storage: StorageResource {
                id,
                start_epoch,
                end_epoch,
                storage_size: out.encoded_size,
            },
            deletable,
        },
        resource_operation: ResourceOperation::RegisterFromScratch {
            encoded_length: out.encoded_size,
            epochs_ahead: epochs,
        },
        cost,
    }))
}

/// Store a blob.
///
/// The raw body is the blob. Bodies above the in-memory threshold are spooled to disk and
/// encoded in pieces, so the gateway never holds a large blob.
#[utoipa::path(
    put,
    path = "/v1/blobs",
    params(PublisherQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Stored, or already certified", body = BlobStoreResult),
        (status = 400, description = "Bad parameters or an incomplete body", body = super::error::ErrorBody),
        (status = 401, description = "Missing or refused bearer token", body = super::error::ErrorBody),
        (status = 402, description = "The publisher's balance cannot pay for the storage; nothing stored", body = super::error::ErrorBody),
        (status = 403, description = "The control plane refused to register the blob for this publisher", body = super::error::ErrorBody),
        (status = 413, description = "Body over the limit", body = super::error::ErrorBody),
        (status = 429, description = "Too many requests at once", body = super::error::ErrorBody),
        (status = 503, description = "Too few nodes confirmed, or the control plane is unreachable", body = super::error::ErrorBody),
    )
)]
pub async fn put_blob(
    State(gw): State<Shared>,
    q: Result<Query<PublisherQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BlobStoreResult>, ApiError> {
    let q = query(q)?;
    let client = gw.client()?;
    let (epochs, deletable) = check_publisher(&q, max_epochs_ahead(&client))?;
    let limit = admit_write(&gw, &headers, client.committee().params().max_blob_size())?;
    let m = gw.metrics.clone();
    let received = receive(
        &headers,
        body,
        limit,
        gw.limits.in_memory,
        &gw.spool_dir,
        gw.limits.body_idle,
        |n| m.bytes_in(n),
    )
    .await?;
    let r = store(
        &gw,
        &client,
        received,
        epochs,
        deletable,
        q.force.unwrap_or(false),
    )
    .await?;
    tracing::info!(blob = r.blob_id(), "stored");
    Ok(Json(r))
}

/// The content type of a response: what the blob carries (a quilt file's `content-type` tag),
/// else what the request's `Accept` names without wildcards, else octet-stream.
pub fn content_type(stored: Option<&str>, headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = stored.and_then(|s| HeaderValue::from_str(s).ok()) {
        return v;
    }
    headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .and_then(|a| a.split(',').next())
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .filter(|t| !t.is_empty() && !t.contains('*') && t.contains('/'))
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"))
}

/// True when `If-None-Match` names `etag` (or `*`): the client already has the content.
pub fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == "*" || t == etag)
}

/// The headers every content answer carries.
pub fn content_headers(h: &mut HeaderMap, etag: &str) {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

/// 304 for a client that has the content already.
pub fn not_modified_response(etag: &str) -> Response {
    let mut r = StatusCode::NOT_MODIFIED.into_response();
    content_headers(r.headers_mut(), etag);
    r
}

/// How a stretch of a blob is served: which stretch (`base`: the whole blob, or one quilt
/// file), its ETag and stored content type.
pub struct Served<'a> {
    pub id: BlobId,
    pub md: Arc<BlobMetadata>,
    pub base: Range<u64>,
    pub etag: &'a str,
    pub stored_type: Option<&'a str>,
    pub head: bool,
}

/// Answer a GET or HEAD of `s.base`, honouring `Range` relative to it: 200, 206 or 416, with
/// the body streamed row by row (nothing when `head`).
pub fn serve(
    gw: &Shared,
    client: &Arc<BlobClient>,
    headers: &HeaderMap,
    s: Served<'_>,
) -> Result<Response, ApiError> {
    let len = s.base.end - s.base.start;
    let range_header = match headers.get(header::RANGE) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::bad_request("INVALID_RANGE", "the Range header is not ASCII")
        })?),
    };
    // If-Range with another validator: the client's copy is something else, send it all
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim().trim_matches('"') == s.etag);
    let wanted = if if_range_ok {
        range::decide(range_header, len)
            .map_err(|e| ApiError::bad_request("INVALID_RANGE", e.to_string()))?
    } else {
        Wanted::Whole
    };
    let (status, part) = match wanted {
        Wanted::Unsatisfiable => return Err(ApiError::unsatisfiable(len)),
        Wanted::Whole => (StatusCode::OK, 0..len),
        Wanted::Part(r) => (StatusCode::PARTIAL_CONTENT, r),
    };
    Ok(respond(gw, client, headers, &s, status, part, len))
}

fn respond(
    gw: &Shared,
    client: &Arc<BlobClient>,
    headers: &HeaderMap,
    s: &Served<'_>,
    status: StatusCode,
    part: Range<u64>,
    len: u64,
) -> Response {
    let body = if s.head || part.is_empty() {
        Body::empty()
    } else {
        let abs = s.base.start + part.start..s.base.start + part.end;
        let m = gw.metrics.clone();
        let stream = client
            .read_range_stream(s.id, s.md.clone(), abs, gw.limits.read_window)
            .map(move |r| {
                if let Ok(b) = &r {
                    m.bytes_out(b.len() as u64);
                }
                r.inspect_err(|e| tracing::warn!("read stopped mid-body: {e}"))
            });
        Body::from_stream(stream)
    };
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    content_headers(h, s.etag);
    h.insert(header::CONTENT_TYPE, content_type(s.stored_type, headers));
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(part.end - part.start),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&range::content_range(&part, len)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    r
}

async fn blob(
    gw: &Shared,
    id: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    let id = parse_blob_id(id)?;
    let etag = id.to_string();
    if not_modified(headers, &etag) {
        return Ok(not_modified_response(&etag));
    }
    let client = gw.client()?;
    let md = client.locate(&id).await?;
    let len = md
        .shape()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .len;
    serve(
        gw,
        &client,
        headers,
        Served {
            id,
            md,
            base: 0..len,
            etag: &etag,
            stored_type: None,
            head,
        },
    )
}

/// Read a blob, whole or a `Range` of it (`bytes=a-b`, `bytes=a-`, `bytes=-n`).
///
/// Only the rows of the blob that hold the requested bytes are fetched, each verified.
#[utoipa::path(
    get,
    path = "/v1/blobs/{blob_id}",
    params(("blob_id" = String, Path, description = "Blob ID, URL-safe base64 without padding")),
    responses(
        (status = 200, description = "The blob", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 206, description = "The requested range", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
        (status = 400, description = "Not a blob ID, or a malformed Range", body = super::error::ErrorBody),
        (status = 404, description = "No such blob", body = super::error::ErrorBody),
        (status = 410, description = "The blob expired or was deleted (reason BLOB_EXPIRED or BLOB_DELETED)", body = super::error::ErrorBody),
        (status = 416, description = "The range lies outside the blob", body = super::error::ErrorBody),
        (status = 503, description = "Too few nodes answered", body = super::error::ErrorBody),
    )
)]
pub async fn get_blob(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    blob(&gw, &id, &headers, false).await
}

/// The headers of `GET /v1/blobs/{blob_id}` without its body.
#[utoipa::path(
    head,
    path = "/v1/blobs/{blob_id}",
    params(("blob_id" = String, Path, description = "Blob ID")),
    responses(
        (status = 200, description = "The blob exists; Content-Length is its size"),
        (status = 404, description = "No such blob"),
        (status = 410, description = "The blob expired or was deleted"),
    )
)]
pub async fn head_blob(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    blob(&gw, &id, &headers, true).await
}

/// `length` bytes of a blob from `start` (Walrus's byte-range endpoint).
#[utoipa::path(
    get,
    path = "/v1/blobs/{blob_id}/byte-range",
    params(("blob_id" = String, Path, description = "Blob ID"), ByteRangeQuery),
    responses(
        (status = 206, description = "The bytes", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "Bad parameters", body = super::error::ErrorBody),
        (status = 404, description = "No such blob", body = super::error::ErrorBody),
        (status = 416, description = "start lies past the blob's end", body = super::error::ErrorBody),
    )
)]
pub async fn get_byte_range(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    q: Result<Query<ByteRangeQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let id = parse_blob_id(&id)?;
    if q.length == 0 {
        return Err(ApiError::bad_request(
            "INVALID_RANGE",
            "length must be at least 1",
        ));
    }
    let client = gw.client()?;
    let md = client.locate(&id).await?;
    let len = md
        .shape()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .len;
    if q.start >= len {
        return Err(ApiError::unsatisfiable(len));
    }
    let part = q.start..q.start.saturating_add(q.length).min(len);
    let etag = id.to_string();
    let s = Served {
        id,
        md,
        base: 0..len,
        etag: &etag,
        stored_type: None,
        head: false,
    };
    Ok(respond(
        &gw,
        &client,
        &headers,
        &s,
        StatusCode::PARTIAL_CONTENT,
        part,
        len,
    ))
}
