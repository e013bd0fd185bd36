//! Errors as the gateway answers them: an HTTP status and a JSON body in the shape of Walrus's
//! daemon (`{"error": {"code", "status", "message", "details": [{"reason", "domain"}]}}`), so a
//! client can branch on `reason` instead of parsing the message.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use floe_node::client::control::Refused;
use floe_node::client::{ReadError, WriteError};
use floe_node::protocol::Gone;
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
            402 => "FAILED_PRECONDITION",
            403 => "PERMISSION_DENIED",
            404 | 410 => "NOT_FOUND",
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
            ReadError::Gone { gone, .. } => Self::new(
                StatusCode::GONE,
                match gone {
                    Gone::Expired { .. } => "BLOB_EXPIRED",
                    Gone::Deleted => "BLOB_DELETED",
                },
                e.to_string(),
            ),
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

/// A registration the control plane refused (nothing was charged, nothing stored): 402 when the
/// publisher's balance is short (the one refusal that money fixes), 403 when the blob may not
/// be registered by this account, 400 for epochs out of range, 503 while the control plane is
/// unreachable or has no market yet. The control plane's message is kept.
impl From<&Refused> for ApiError {
    fn from(r: &Refused) -> Self {
        let message = format!("the control plane refused the registration: {}", r.message);
        match r.code {
            tonic::Code::FailedPrecondition => Self::new(
                StatusCode::PAYMENT_REQUIRED,
                "INSUFFICIENT_BALANCE",
                message,
            ),
            tonic::Code::InvalidArgument => Self::bad_request("INVALID_EPOCHS", message),
            tonic::Code::PermissionDenied | tonic::Code::NotFound | tonic::Code::OutOfRange => {
                Self::new(StatusCode::FORBIDDEN, "REGISTRATION_REFUSED", message)
            }
            tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted
            | tonic::Code::Cancelled => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "CONTROL_PLANE_UNAVAILABLE",
                message,
            ),
            _ => Self::internal(message),
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

#[cfg(test)]
mod tests {
    use super::*;
    use floe_node::codec::BlobId;

    fn refused(code: tonic::Code) -> ApiError {
        ApiError::from(&Refused {
            code,
            message: "insufficient balance: this costs 120 units, the account holds 7".into(),
        })
    }

    #[test]
    fn refusals_become_statuses_with_the_control_planes_message() {
        let e = refused(tonic::Code::FailedPrecondition);
        assert_eq!(
            (e.status, e.reason),
            (StatusCode::PAYMENT_REQUIRED, "INSUFFICIENT_BALANCE")
        );
        assert!(e.message.contains("costs 120 units"), "{}", e.message);
        assert_eq!(
            refused(tonic::Code::InvalidArgument).status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            refused(tonic::Code::PermissionDenied).status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            refused(tonic::Code::Unavailable).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            refused(tonic::Code::Internal).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn gone_blobs_are_410_naming_why() {
        let blob = BlobId([1; 32]);
        let e = ApiError::from(ReadError::Gone {
            blob,
            gone: Gone::Expired { end_epoch: 4 },
        });
        assert_eq!((e.status, e.reason), (StatusCode::GONE, "BLOB_EXPIRED"));
        assert!(e.message.contains("expired"), "{}", e.message);
        let e = ApiError::from(ReadError::Gone {
            blob,
            gone: Gone::Deleted,
        });
        assert_eq!((e.status, e.reason), (StatusCode::GONE, "BLOB_DELETED"));
        assert!(e.message.contains("deleted"), "{}", e.message);
        assert_eq!(e.status_word(), "NOT_FOUND");
    }
}
