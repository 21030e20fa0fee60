//! `/api/v1/*` JSON handlers: parse parameters, call query, shape the spec's JSON.

use crate::error::ApiError;
use crate::state::AppState;
use crate::state::blocking;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use cellpilot_core::range::TimeRange;
use cellpilot_dashboards::views::decisions as views;
use serde::Deserialize;

/// Default range of `/api/v1/cells`.
const DEFAULT_RANGE_MS: i64 = 5 * 60 * 1000;

/// `from`/`to` query parameters (RFC 3339 or unix ms).
#[derive(Debug, Deserialize)]
pub struct RangeParams {
    from: Option<String>,
    to: Option<String>,
}

impl RangeParams {
    /// The bounded range, defaulting to the last `default_ms` before now.
    fn resolve(&self, state: &AppState, default_ms: i64) -> Result<TimeRange, ApiError> {
        Ok(TimeRange::parse(self.from.as_deref(), self.to.as_deref(), default_ms, state.range_bounds())?)
    }
}

/// `GET /api/v1/cells?from=&to=`: per-cell requests, errors, error rate and latency quantiles.
pub async fn cells(
    State(state): State<AppState>,
    Query(range): Query<RangeParams>,
) -> Result<Json<cellpilot_dashboards::views::cells::Cells>, ApiError> {
    let range = range.resolve(&state, DEFAULT_RANGE_MS)?;
    let (from, to) = (range.from_ms(), range.to_ms());
    let now = state.clock.now_ms();
    let st = state.clone();
    let cells =
        blocking(move || Ok(cellpilot_dashboards::views::cells::cells(&st.store, &st.controller, from, to, now)?))
            .await?;
    Ok(Json(cells))
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
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(ApiError::BadRequest("send Content-Type: application/json with {\"sql\": \"SELECT ...\"}".into()));
    }
    let q: QueryBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}; expected {{\"sql\": \"SELECT ...\"}}")))?;
    let limits = state.query_limits();
    let control = state.controller.sql_tables().map_err(|e| ApiError::Internal(e.into()))?;
    let store = state.store.clone();
    let sql = q.sql;
    let ran = state
        .sql
        .run(async move {
            let ctx = cellpilot_query::sql::context(&store, &limits, control)?;
            cellpilot_query::sql::run(&ctx, &sql, &limits).await
        })
        .await;
    if matches!(ran, Err(cellpilot_query::Error::Busy(_))) {
        state.metrics.queries_rejected.inc();
    }
    let (schema, batches) = ran?;
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

/// `GET /api/v1/series?cell=&service=&route=&from=&to=&step=`: omitted dimensions are merged.
pub async fn series(
    State(state): State<AppState>,
    Query(p): Query<SeriesParams>,
) -> Result<Json<cellpilot_dashboards::views::cells::Series>, ApiError> {
    let range = RangeParams { from: p.from, to: p.to }.resolve(&state, 60 * 60 * 1000)?;
    let (from, to) = (range.from_ms(), range.to_ms());
    let step = range.step(p.step.as_deref(), state.store.fine_ms())?;
    let sel = cellpilot_query::series::Selection { cell: p.cell, service: p.service, route: p.route };
    let store = state.store.clone();
    let series = blocking(move || Ok(cellpilot_dashboards::views::cells::series(&store, sel, from, to, step)?)).await?;
    Ok(Json(series))
}

/// `GET /api/v1/weights`: the published table.
pub async fn weights(State(state): State<AppState>) -> Json<views::Weights> {
    Json(views::weights(&state.controller))
}

/// `GET /api/v1/gateways`: every gateway of either protocol (CellWeights, xDS) with its live
/// streams, whether it holds cut-overs, its last ACK and its last NACK.
pub async fn gateways(State(state): State<AppState>) -> Json<views::Gateways> {
    Json(views::gateways(&state.controller))
}

/// `GET /api/v1/decisions`: every decision, newest first.
pub async fn decisions(State(state): State<AppState>) -> Json<views::Decisions> {
    Json(views::decisions(&state.controller))
}

/// `POST /api/v1/cells/{cell}/override` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    weight: Option<u32>,
    ttl: Option<String>,
    #[serde(default)]
    reason: String,
}

/// `POST /api/v1/cells/{cell}/override {"weight": N | null, "ttl": "1h", "reason": "..."}`:
/// pins or unpins a cell (admin token when tokens are configured).
pub async fn override_cell(
    State(state): State<AppState>,
    axum::extract::Path(cell): axum::extract::Path<String>,
    axum::Extension(who): axum::Extension<cellpilot_core::auth::Principal>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(ApiError::BadRequest("send Content-Type: application/json".into()));
    }
    let b: OverrideBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "invalid body: {e}; expected {{\"weight\": N | null, \"ttl\": \"1h\", \"reason\": \"...\"}}"
        ))
    })?;
    let ttl = b
        .ttl
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("`ttl`: {e}")))?;
    let req = cellpilot_control::PinRequest { cell, weight: b.weight, ttl, reason: b.reason };
    let max_name = state.config.ingest.max_attribute_length;
    let (controller, actor, now) = (state.controller.clone(), who.actor().to_string(), state.clock.now_ms());
    // In a cluster the pin's version is recorded in the object store first: blocking.
    let config = state.config.clone();
    let listed = move |cell: &str| config.xds.clusters.iter().any(|c| c.cells.contains_key(cell));
    let decisions = crate::state::blocking(move || Ok(controller.pin(&req, max_name, &actor, now, listed)?)).await?;
    Ok(Json(serde_json::json!({ "version": state.controller.version(), "decisions": decisions.len() })))
}

/// `GET /api/v1/cutovers`: every cut-over, newest first (in-flight ones have null completion).
pub async fn cutovers(State(state): State<AppState>) -> Json<views::Cutovers> {
    Json(views::cutovers(&state.controller))
}

/// `GET /api/v1/alerts`: pending, firing and recently resolved alerts, with delivery status.
pub async fn alerts(State(state): State<AppState>) -> Json<cellpilot_dashboards::views::alerts::Alerts> {
    Json(cellpilot_dashboards::views::alerts::alerts(&state.alerts))
}

/// `GET /api/v1/slos`: the configured SLOs.
pub async fn slos(State(state): State<AppState>) -> Json<cellpilot_dashboards::views::sla::Slos> {
    Json(cellpilot_dashboards::views::sla::slos(&state.config.slo))
}

/// `GET /api/v1/sla/{slo}?from=&to=` (default: the SLO's period): the SLA gap and what caused it.
pub async fn sla(
    State(state): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Query(range): Query<RangeParams>,
) -> Result<Json<cellpilot_dashboards::Report>, ApiError> {
    let slo = state.slo(&name)?;
    let now = state.clock.now_ms();
    let range = range.resolve(&state, slo.period.as_millis_i64())?;
    let (from, to) = (range.from_ms(), range.to_ms());
    let drains = state.drains();
    let st = state.clone();
    let report = blocking(move || st.report(&slo, &drains, from, to, now)).await?;
    Ok(Json(report))
}
