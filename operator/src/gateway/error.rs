//! Errors as the gateway answers them: an HTTP status and a JSON body in the shape of Walrus's
//! daemon (`{"error": {"code", "status", "message", "details": [{"reason", "domain"}]}}`), so a
//! client can branch on `reason` instead of parsing the message.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use floe_node::client::{ReadError, WriteError};
use serde::Serialize;
use utoipa::ToSchema;

/// The domain in every error's details.
pub const DOMAIN: &str = "gateway.floe.dev";

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Machine-readable, e.g. `BLOB_NOT_FOUND`.
    pub reason: &'static str,
    pub message: String,
    /// `Content-Range: bytes */len` of a 416.
    pub blob_len: Option<u64>,
}

/// The body of an error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorStatus,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorStatus {
    /// The HTTP status code.
    pub code: u16,
    /// The status as a word (`NOT_FOUND`, `INVALID_ARGUMENT`, ...).
    pub status: String,
    pub message: String,
    pub details: Vec<ErrorInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorInfo {
    #[serde(rename = "@type")]
    pub kind: String,
    pub reason: String,
    pub domain: String,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
            blob_len: None,
        }
    }
    pub fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "BLOB_TOO_LARGE", message)
    }
    pub fn unsatisfiable(len: u64) -> Self {
        Self {
            blob_len: Some(len),
            ..Self::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RANGE_NOT_SATISFIABLE",
                format!("the range lies outside the blob's {len} bytes"),
            )
        }
    }

    fn status_word(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 416 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            408 | 504 => "DEADLINE_EXCEEDED",
            413 | 429 => "RESOURCE_EXHAUSTED",
            503 => "UNAVAILABLE",
            _ => "INTERNAL",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorStatus {
                code: self.status.as_u16(),
                status: self.status_word().to_string(),
                message: self.message.clone(),
                details: vec![ErrorInfo {
                    kind: "ErrorInfo".into(),
                    reason: self.reason.into(),
                    domain: DOMAIN.into(),
                }],
            },
        };
        let mut r = (self.status, Json(body)).into_response();
        if let Some(len) = self.blob_len {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(axum::http::header::CONTENT_RANGE, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match &e {
            ReadError::NotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "BLOB_NOT_FOUND", e.to_string())
            }
            ReadError::Invalid(_) => {
                Self::new(StatusCode::NOT_FOUND, "BLOB_INVALID", e.to_string())
            }
            ReadError::NotEnoughSlivers { .. } | ReadError::Unavailable { .. } => {
                Self::unavailable(e.to_string())
            }
            ReadError::Codec(_) | ReadError::Io(_) => Self::internal(e.to_string()),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match &e {
            WriteError::NoQuorum { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "INSUFFICIENT_CONFIRMATIONS",
                e.to_string(),
            ),
            WriteError::Codec(floe_node::codec::CodecError::BlobTooLarge { .. }) => {
                Self::too_large(e.to_string())
            }
            _ => Self::internal(e.to_string()),
        }
    }
}
