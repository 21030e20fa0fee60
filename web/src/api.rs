//! `/api/v1/*` JSON handlers: parse parameters, call query, shape the spec's JSON.

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use cellpilot_core::time::{format_rfc3339_ms, parse_api_time_ms};
use serde::{Deserialize, Serialize};

/// Default range of `/api/v1/cells`.
const DEFAULT_RANGE_MS: i64 = 5 * 60 * 1000;

/// `from`/`to` query parameters (RFC 3339 or unix ms).
#[derive(Debug, Deserialize)]
pub struct RangeParams {
    from: Option<String>,
    to: Option<String>,
}

impl RangeParams {
    /// The range in unix ms, defaulting to the last `default_ms` before now.
    fn resolve(&self, now_ms: i64, default_ms: i64) -> Result<(i64, i64), ApiError> {
        let parse = |name: &str, v: &Option<String>| {
            v.as_deref()
                .map(|s| parse_api_time_ms(s).map_err(|e| ApiError::BadRequest(format!("`{name}`: {e}"))))
                .transpose()
        };
        let to = parse("to", &self.to)?.unwrap_or(now_ms);
        let from = parse("from", &self.from)?.unwrap_or(to - default_ms);
        if from >= to {
            return Err(ApiError::BadRequest("`from` must be before `to`".into()));
        }
        Ok((from, to))
    }
}

/// One cell in `/api/v1/cells`.
#[derive(Debug, Serialize)]
pub struct CellJson {
    cell: String,
    state: &'static str,
    weight: u32,
    requests: u64,
    errors: u64,
    error_rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    latency_exact: bool,
}

/// `/api/v1/cells` response.
#[derive(Debug, Serialize)]
pub struct CellsJson {
    from: String,
    to: String,
    cells: Vec<CellJson>,
}

fn auth_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

/// `GET /api/v1/cells?from=&to=`: per-cell requests, errors, error rate and latency quantiles.
pub async fn cells(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(range): Query<RangeParams>,
) -> Result<Json<CellsJson>, ApiError> {
    state.authorize(auth_header(&headers))?;
    let (from, to) = range.resolve(state.clock.now_ms(), DEFAULT_RANGE_MS)?;
    let store = state.store.clone();
    let now = state.clock.now_ms();
    let stats = tokio::task::spawn_blocking(move || cellpilot_query::cells::cells(&store, from, to, now))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let cells = stats
        .into_iter()
        .map(|c| CellJson {
            weight: state.base_weight(&c.cell),
            // Until the control loop runs, every cell is active at its base weight.
            state: "active",
            requests: c.requests,
            errors: c.errors,
            error_rate: c.error_rate(),
            p50_ms: c.quantiles.p50_us as f64 / 1000.0,
            p99_ms: c.quantiles.p99_us as f64 / 1000.0,
            p999_ms: c.quantiles.p999_us as f64 / 1000.0,
            latency_exact: c.latency_exact,
            cell: c.cell,
        })
        .collect();
    Ok(Json(CellsJson { from: format_rfc3339_ms(from), to: format_rfc3339_ms(to), cells }))
}

/// `POST /api/v1/query` body.
#[derive(Debug, Deserialize)]
pub struct QueryBody {
    sql: String,
}

/// The Arrow IPC stream media type.
const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// `POST /api/v1/query {"sql": "..."}`: read-only SQL; JSON rows, or an Arrow IPC stream when
/// `Accept: application/vnd.apache.arrow.stream`.
pub async fn query(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    state.authorize(auth_header(&headers))?;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(ApiError::BadRequest("send Content-Type: application/json with {\"sql\": \"SELECT ...\"}".into()));
    }
    let q: QueryBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}; expected {{\"sql\": \"SELECT ...\"}}")))?;
    let limits = state.query_limits();
    let ctx = cellpilot_query::sql::context(&state.store, &limits)?;
    let (schema, batches) = cellpilot_query::sql::run(&ctx, &q.sql, &limits).await?;
    let wants_arrow =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains(ARROW_STREAM));
    if wants_arrow {
        let bytes = cellpilot_query::sql::to_ipc(&schema, &batches)?;
        return Ok(([(header::CONTENT_TYPE, ARROW_STREAM)], bytes).into_response());
    }
    Ok(Json(cellpilot_query::sql::to_json(&schema, &batches)?).into_response())
}

/// `GET /api/v1/series` parameters.
#[derive(Debug, Deserialize)]
pub struct SeriesParams {
    cell: Option<String>,
    service: Option<String>,
    route: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// Bucket width, e.g. `1m`; default: about 60 points.
    step: Option<String>,
}

/// One point in `/api/v1/series`.
#[derive(Debug, Serialize)]
pub struct PointJson {
    t: String,
    requests: u64,
    errors: u64,
    error_rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
}

/// `GET /api/v1/series?cell=&service=&route=&from=&to=&step=`: omitted dimensions are merged.
pub async fn series(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<SeriesParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(auth_header(&headers))?;
    let range = RangeParams { from: p.from.clone(), to: p.to.clone() };
    let (from, to) = range.resolve(state.clock.now_ms(), 60 * 60 * 1000)?;
    let fine = state.store.fine_ms();
    let step = match &p.step {
        Some(s) => {
            let d = humantime::parse_duration(s).map_err(|e| ApiError::BadRequest(format!("`step`: {e}")))?;
            i64::try_from(d.as_millis()).map_err(|_| ApiError::BadRequest("`step` is too large".into()))?
        }
        // About 60 points, on a whole number of windows, snapped to the tiers when coarse.
        None => {
            let raw = ((to - from) / 60).max(fine);
            let snap = [3_600_000, 300_000].into_iter().find(|t| raw >= *t).unwrap_or(fine);
            raw - raw % snap
        }
    };
    let sel =
        cellpilot_query::series::Selection { cell: p.cell.clone(), service: p.service.clone(), route: p.route.clone() };
    let store = state.store.clone();
    let points = tokio::task::spawn_blocking(move || cellpilot_query::series::series(&store, &sel, from, to, step))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let ms = |us: u64| us as f64 / 1000.0;
    let points: Vec<PointJson> = points
        .into_iter()
        .map(|pt| PointJson {
            t: format_rfc3339_ms(pt.t_ms),
            requests: pt.requests,
            errors: pt.errors,
            error_rate: if pt.requests == 0 { 0.0 } else { pt.errors as f64 / pt.requests as f64 },
            p50_ms: ms(pt.quantiles.p50_us),
            p99_ms: ms(pt.quantiles.p99_us),
            p999_ms: ms(pt.quantiles.p999_us),
        })
        .collect();
    Ok(Json(serde_json::json!({
        "from": format_rfc3339_ms(from),
        "to": format_rfc3339_ms(to),
        "step_ms": step,
        "series": [{"cell": p.cell, "service": p.service, "route": p.route, "points": points}],
    })))
}
