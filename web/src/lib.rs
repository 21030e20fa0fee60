//! cellpilot-web: the HTTP surface on `[web] listen` — pages, JSON API, health and Prometheus
//! metrics. Transport only: a handler extracts its parameters, calls one domain function
//! (query, control, alerts, dashboards) and renders the answer; `web/tests/` drives
//! [`router`] in-process.
//!
//! # Layout
//! - [`api`]: `/api/v1/*` JSON handlers.
//! - [`pages`]: the HTML dashboard, one file per page (askama templates in `web/templates/`).
//! - [`auth`]: the one authentication layer and the role each route needs.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`state`]: [`AppState`], what every handler can reach.
//! - [`error`]: API errors and their one mapping to HTTP responses.

pub mod api;
pub mod auth;
pub mod error;
pub mod ops;
pub mod pages;
pub mod state;

pub use state::AppState;

use axum::Router;
use axum::routing::get;

/// Every route of the web listener.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/cells/{cell}", get(pages::cell))
        .route("/sla/{slo}", get(pages::sla))
        .route("/decisions", get(pages::decisions))
        .route("/alerts", get(pages::alerts))
        .route("/query", get(pages::query))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api/v1/cells", get(api::cells))
        .route("/api/v1/query", axum::routing::post(api::query))
        .route("/api/v1/series", get(api::series))
        .route("/api/v1/weights", get(api::weights))
        .route("/api/v1/decisions", get(api::decisions))
        .route("/api/v1/gateways", get(api::gateways))
        .route("/api/v1/cutovers", get(api::cutovers))
        .route("/api/v1/alerts", get(api::alerts))
        .route("/api/v1/slos", get(api::slos))
        .route("/api/v1/sla/{slo}", get(api::sla))
        .route("/api/v1/cells/{cell}/override", axum::routing::post(api::override_cell))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::layer))
        .with_state(state)
}

/// The routes of an ingest node, which serves no pages or data: health, readiness, metrics.
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::layer))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    /// `(method, path)` of every `.route(…)` above.
    fn declared_routes() -> Vec<(String, String)> {
        include_str!("lib.rs")
            .split(".route(\"")
            .skip(1)
            .filter_map(|r| {
                let (path, rest) = r.split_once('"')?;
                let method = if rest.lines().next()?.contains("post(") { "POST" } else { "GET" };
                Some((method.to_string(), path.to_string()))
            })
            .collect()
    }

    #[test]
    fn docs_api_md_lists_every_route() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
        let routes = declared_routes();
        assert!(routes.len() >= 19, "{routes:?}");
        for (method, path) in routes {
            assert!(doc.contains(&format!("| `{method} {path}")), "docs/api.md has no row for {method} {path}");
        }
    }
}
