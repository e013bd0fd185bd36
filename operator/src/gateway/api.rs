//! The JSON the gateway answers with, in Walrus's shapes (camelCase), and the OpenAPI document
//! generated from these types and the handlers' annotations (`GET /v1/api`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::error::{ErrorBody, ErrorInfo, ErrorStatus};

/// Query of `PUT /v1/blobs` and `PUT /v1/quilts`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PublisherQuery {
    /// Epochs to store the blob for, from the first epoch billed (5 by default, as `floe put`;
    /// at most the network's maximum ahead).
    #[serde(default)]
    pub epochs: Option<u32>,
    /// Store the blob as deletable by its owner (the default, as Walrus since 1.33).
    #[serde(default)]
    pub deletable: Option<bool>,
    /// Store the blob as permanent: kept until it expires; contradicts `deletable=true`.
    #[serde(default)]
    pub permanent: Option<bool>,
    /// Upload even when the blob is already certified.
    #[serde(default)]
    pub force: Option<bool>,
    /// Accepted for compatibility with Walrus clients; Floe has no on-chain objects to send.
    #[serde(default)]
    pub send_object_to: Option<String>,
    /// Accepted for compatibility; Floe has one encoding (`RS2`).
    #[serde(default)]
    pub encoding_type: Option<String>,
}

/// Query of `GET /v1/blobs/{blob_id}/byte-range`.
#[derive(Debug, Clone, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ByteRangeQuery {
    /// First byte (0-based).
    pub start: u64,
    /// Number of bytes.
    pub length: u64,
}

/// The storage resource a blob occupies: the epochs it was paid for, `[startEpoch, endEpoch)`
/// (on a network that sells storage, the lifetime the control plane signed).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageResource {
    pub id: String,
    pub start_epoch: u32,
    pub end_epoch: u32,
    pub storage_size: u64,
}

/// A stored blob. Floe has no chain objects: `id` is the blob ID.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlobObject {
    pub id: String,
    pub registered_epoch: u32,
    pub blob_id: String,
    pub size: u64,
    pub encoding_type: String,
    pub certified_epoch: Option<u32>,
    pub storage: StorageResource,
    pub deletable: bool,
}

/// How the storage was obtained.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum ResourceOperation {
    #[serde(rename_all = "camelCase")]
    RegisterFromScratch {
        encoded_length: u64,
        epochs_ahead: u32,
    },
}

/// The blob was uploaded and certified by this request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewlyCreated {
    pub blob_object: BlobObject,
    pub resource_operation: ResourceOperation,
    /// Units the publisher's account paid for this request (0 on a network that sells nothing,
    /// or when the blob's lifetime already reached as far).
    pub cost: u64,
}

/// The blob was certified before this request: nothing was uploaded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlreadyCertified {
    pub blob_id: String,
    pub end_epoch: u32,
}

/// Answer of `PUT /v1/blobs`: exactly one of the two keys.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum BlobStoreResult {
    NewlyCreated(NewlyCreated),
    AlreadyCertified(AlreadyCertified),
}

impl BlobStoreResult {
    pub fn blob_id(&self) -> &str {
        match self {
            BlobStoreResult::NewlyCreated(n) => &n.blob_object.blob_id,
            BlobStoreResult::AlreadyCertified(a) => &a.blob_id,
        }
    }
}

/// One file of a stored quilt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredQuiltPatch {
    pub identifier: String,
    pub quilt_patch_id: String,
}

/// Answer of `PUT /v1/quilts`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuiltStoreResult {
    pub blob_store_result: BlobStoreResult,
    pub stored_quilt_blobs: Vec<StoredQuiltPatch>,
}

/// One entry of `GET /v1/quilts/{quilt_id}/patches`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuiltPatchItem {
    pub identifier: String,
    pub patch_id: String,
    pub size: u64,
    pub tags: BTreeMap<String, String>,
}

/// One entry of the `_metadata` field of a quilt upload.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuiltPatchMetadata {
    pub identifier: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// Answer of `GET /status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    pub version: String,
    /// Whether the gateway knows a committee yet.
    pub connected: bool,
    pub epoch: Option<u32>,
    pub n_shards: Option<u16>,
    pub members: Option<usize>,
    /// Largest blob the network stores, in bytes.
    pub max_blob_size: Option<u64>,
    /// Largest body this gateway accepts, in bytes.
    pub max_body_size: u64,
    pub publisher_auth: bool,
    /// The account the publisher pays for storage from (Ed25519 public key, hex), when it has
    /// one.
    pub publisher_account: Option<String>,
    /// The control plane the publisher registers blobs with.
    pub control: Option<String>,
    /// Whether the network sells storage (its committee carries a control key).
    pub sells_storage: Option<bool>,
}

/// The OpenAPI document: every route, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Floe gateway",
        description = "Walrus-compatible HTTP publisher and aggregator for Floe"
    ),
    paths(
        super::blobs::put_blob,
        super::blobs::get_blob,
        super::blobs::head_blob,
        super::blobs::get_byte_range,
        super::quilts::put_quilt,
        super::quilts::get_by_identifier,
        super::quilts::get_by_patch_id,
        super::quilts::list_patches,
        super::ops::status,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        super::ops::api_doc,
    ),
    components(schemas(
        BlobStoreResult,
        NewlyCreated,
        AlreadyCertified,
        BlobObject,
        StorageResource,
        ResourceOperation,
        QuiltStoreResult,
        StoredQuiltPatch,
        QuiltPatchItem,
        QuiltPatchMetadata,
        GatewayStatus,
        ErrorBody,
        ErrorStatus,
        ErrorInfo
    ))
)]
pub struct ApiDoc;
