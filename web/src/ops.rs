//! Operational endpoints: liveness, readiness and Prometheus metrics.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 once every listener is bound and replay is done and while every health
/// check passes; 503 with one line per reason otherwise.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let problems = state.not_ready();
    let notices: String = state.health.notices().iter().map(|n| format!("notice: {n}\n")).collect();
    if problems.is_empty() {
        (StatusCode::OK, format!("ready\n{notices}")).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{}\n{notices}", problems.join("\n"))).into_response()
    }
}

/// `GET /metrics`: Prometheus text format; follows the API's auth.
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render()).into_response())
}
