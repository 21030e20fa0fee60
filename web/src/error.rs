//! API errors and the one place they become HTTP responses (`{"error": "..."}` JSON), with the
//! status `core::status` gives their kind.

use axum::http::{self, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use cellpilot_core::auth::Denied;
use cellpilot_core::status::{Chain, ErrorExt, StatusCode};
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

impl ApiError {
    /// `e` as the API answers it, by its [`StatusCode`]: the caller's mistakes and the
    /// retryable refusals keep their message, anything else is internal (logged with its
    /// sources, answered 500).
    fn of<E: ErrorExt + Send + Sync + 'static>(e: E) -> Self {
        match e.status_code() {
            StatusCode::InvalidArgument | StatusCode::Unsupported | StatusCode::TooLarge => {
                ApiError::BadRequest(e.to_string())
            }
            StatusCode::NotFound | StatusCode::Unimplemented => ApiError::NotFound(e.to_string()),
            StatusCode::Overloaded | StatusCode::LimitReached => ApiError::Busy(e.to_string()),
            StatusCode::Unavailable => ApiError::Unavailable(e.to_string()),
            _ => ApiError::Internal(Box::new(e)),
        }
    }
}

impl ErrorExt for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::InvalidArgument,
            ApiError::NotFound(_) => StatusCode::NotFound,
            ApiError::Busy(_) => StatusCode::Overloaded,
            ApiError::Unavailable(_) => StatusCode::Unavailable,
            ApiError::Unauthorized(d) => d.status_code(),
            ApiError::Internal(_) => StatusCode::Internal,
        }
    }
}

impl From<cellpilot_query::Error> for ApiError {
    fn from(e: cellpilot_query::Error) -> Self {
        ApiError::of(e)
    }
}

impl From<cellpilot_control::PinError> for ApiError {
    fn from(e: cellpilot_control::PinError) -> Self {
        ApiError::of(e)
    }
}

impl From<cellpilot_core::Error> for ApiError {
    fn from(e: cellpilot_core::Error) -> Self {
        ApiError::of(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(detail = %Chain(detail.as_ref()), "API request failed");
        }
        let status =
            http::StatusCode::from_u16(self.status_code().http()).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
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
