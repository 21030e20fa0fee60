//! API errors and the one place they become HTTP responses (`{"error": "..."}` JSON).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cellpilot_core::auth::Denied;
use thiserror::Error;

/// What an API handler can fail with.
#[derive(Debug, Error)]
pub enum ApiError {
    /// A parameter is wrong; the message names it.
    #[error("{0}")]
    BadRequest(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Too many requests of this kind are running; retry shortly.
    #[error("{0}")]
    Busy(String),
    /// This node cannot do it now (in a cluster: it does not lead); the message says where.
    #[error("{0}")]
    Unavailable(String),
    /// Credentials are missing or wrong (401), or lack the route's role (403).
    #[error("{0}")]
    Unauthorized(Denied),
    /// Something broke on our side; details (the source) are logged, not sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl From<cellpilot_query::Error> for ApiError {
    fn from(e: cellpilot_query::Error) -> Self {
        match e {
            cellpilot_query::Error::BadRequest(m) => ApiError::BadRequest(m),
            cellpilot_query::Error::Busy(m) => ApiError::Busy(m),
            // Ours, not the caller's: logged in full, answered 500.
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<cellpilot_control::pin::PinError> for ApiError {
    fn from(e: cellpilot_control::pin::PinError) -> Self {
        use cellpilot_control::pin::PinError;
        match e {
            PinError::NotLeader(_) | PinError::Unrecorded(_) => ApiError::Unavailable(e.to_string()),
            PinError::UnknownCell(_) => ApiError::NotFound(e.to_string()),
            _ => ApiError::BadRequest(e.to_string()),
        }
    }
}

impl From<cellpilot_core::Error> for ApiError {
    fn from(e: cellpilot_core::Error) -> Self {
        match e {
            cellpilot_core::Error::InvalidInput(m) => ApiError::BadRequest(m),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized(d) if d.is_forbidden() => StatusCode::FORBIDDEN,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "API request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut resp = (status, axum::Json(serde_json::json!({ "error": self.to_string() }))).into_response();
        if matches!(self, ApiError::Busy(_)) {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            static REJECTED: cellpilot_core::throttle::Throttle =
                cellpilot_core::throttle::Throttle::new(cellpilot_core::throttle::EVERY);
            if let Some(held_back) = REJECTED.allow() {
                tracing::warn!(reason = %self, lines_held_back = held_back, "API request rejected");
            }
        }
        if matches!(self, ApiError::Unauthorized(d) if !d.is_forbidden()) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"cellpilot\", charset=\"UTF-8\""),
            );
        }
        resp
    }
}
