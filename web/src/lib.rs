//! cellpilot-web: the HTTP surface on `[web] listen` — pages, JSON API, health and Prometheus
//! metrics. Transport only: a handler extracts its parameters, calls one domain function
//! (query, control, alerts, dashboards) and renders the answer; `web/tests/` drives
//! [`router`] in-process.
//!
//! # Layout
//! - [`api`]: `/api/v1/*` JSON handlers.
//! - [`pages`]: the HTML dashboard, one file per page (askama templates in `web/templates/`).
//! - [`routes`]: the route table, every route with the access it needs.
//! - `auth`: the one authentication layer in front of each route.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`state`]: [`AppState`], what every handler can reach.
//! - [`error`]: API errors and their one mapping to HTTP responses.

pub mod api;
mod auth;
pub mod error;
pub mod ops;
pub mod pages;
pub mod routes;
pub mod state;

pub use state::AppState;

use axum::Router;

/// Every route of the web listener ([`routes::table`]), each behind its access.
pub fn router(state: AppState) -> Router {
    routes::router(state, routes::table())
}

/// The routes of an ingest node, which serves no pages or data: health, readiness, metrics.
pub fn ops_router(state: AppState) -> Router {
    routes::router(state, routes::table().into_iter().filter(|r| r.on_ingest_nodes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn docs_api_md_lists_every_route_with_its_access() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
        let routes = crate::routes::table();
        assert!(routes.len() >= 19, "{routes:?}");
        for r in routes {
            let row = format!("| `{} {}", r.method, r.path);
            let line = doc.lines().find(|l| l.strip_prefix(&row).is_some_and(|rest| rest.starts_with(['`', '?'])));
            let line = line.unwrap_or_else(|| panic!("docs/api.md has no row for {} {}", r.method, r.path));
            let access = line.split('|').nth(2).map(str::trim);
            assert_eq!(access, Some(r.access.as_str()), "docs/api.md gives {} {} another access", r.method, r.path);
        }
    }

    #[test]
    fn every_path_is_routed_once() {
        let mut paths: Vec<_> = crate::routes::table().iter().map(|r| r.path).collect();
        let n = paths.len();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), n, "a path with two methods needs its access per method; merge them in routes::router");
    }
}
