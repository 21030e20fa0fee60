//! The route table: every route of the web listener with the access it needs. A route is added
//! here or nowhere, and it cannot be added without its access; the auth layer reads the access
//! from the route that matched, and a path no route matches needs the read role (closed by
//! default, so a 404 tells an unauthenticated caller nothing).

pub use crate::auth::Access;
use crate::state::AppState;
use crate::{api, auth, ops, pages};
use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodRouter, any, get, post};
use cellpilot_core::auth::Role;

/// One route: what it answers, who may call it, and where it is served.
#[derive(Debug)]
pub struct Route {
    /// The one method it answers (others are 405).
    pub method: Method,
    /// The axum path pattern.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Served by an ingest node too (it serves no pages or data, only its own health).
    pub on_ingest_nodes: bool,
    handler: MethodRouter<AppState>,
}

/// A `GET` route: the method is said once, so the table cannot name one and serve another.
fn get_route<H: Handler<T, AppState>, T: 'static>(path: &'static str, access: Access, handler: H) -> Route {
    Route { method: Method::GET, path, access, on_ingest_nodes: false, handler: get(handler) }
}

/// A `POST` route.
fn post_route<H: Handler<T, AppState>, T: 'static>(path: &'static str, access: Access, handler: H) -> Route {
    Route { method: Method::POST, path, access, on_ingest_nodes: false, handler: post(handler) }
}

const READ: Access = Access::Needs(Role::Read);
const ADMIN: Access = Access::Needs(Role::Admin);

/// Every route of the web listener.
pub fn table() -> Vec<Route> {
    let ops = |mut r: Route| {
        r.on_ingest_nodes = true;
        r
    };
    vec![
        get_route("/", READ, pages::overview),
        get_route("/cells/{cell}", READ, pages::cell),
        get_route("/sla/{slo}", READ, pages::sla),
        get_route("/decisions", READ, pages::decisions),
        get_route("/alerts", READ, pages::alerts),
        get_route("/query", READ, pages::query),
        ops(get_route("/healthz", Access::Open, ops::healthz)),
        ops(get_route("/readyz", Access::Open, ops::readyz)),
        ops(get_route("/metrics", READ, ops::metrics)),
        get_route("/api/v1/cells", READ, api::cells),
        post_route("/api/v1/query", READ, api::query),
        get_route("/api/v1/series", READ, api::series),
        get_route("/api/v1/weights", READ, api::weights),
        get_route("/api/v1/decisions", READ, api::decisions),
        get_route("/api/v1/gateways", READ, api::gateways),
        get_route("/api/v1/cutovers", READ, api::cutovers),
        get_route("/api/v1/alerts", READ, api::alerts),
        get_route("/api/v1/slos", READ, api::slos),
        get_route("/api/v1/sla/{slo}", READ, api::sla),
        post_route("/api/v1/cells/{cell}/override", ADMIN, api::override_cell),
    ]
}

/// A router over `routes`, each behind the auth layer with its own access; unmatched paths need
/// the read role and then answer 404.
pub(crate) fn router(state: AppState, routes: impl IntoIterator<Item = Route>) -> Router {
    let gate = |access: Access| axum::middleware::from_fn_with_state((state.clone(), access), auth::layer);
    let mut router = Router::new();
    for r in routes {
        router = router.route(r.path, r.handler.layer(gate(r.access)));
    }
    router.fallback_service(any(not_found).layer(gate(READ)).with_state(state.clone())).with_state(state)
}

async fn not_found() -> crate::error::ApiError {
    crate::error::ApiError::NotFound("no such route (see docs/api.md)".into())
}
