//! The route table: every route of the web listener with the access it needs. A route is added
//! here or nowhere, and it cannot be added without its access; the auth layer reads the access
//! from the route that matched, and a path no route matches needs the read role (closed by
//! default, so a 404 tells an unauthenticated caller nothing).

pub use crate::auth::Access;
use crate::state::AppState;
use crate::{api, auth, ops, pages};
use axum::Router;
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

fn route(method: Method, path: &'static str, access: Access, handler: MethodRouter<AppState>) -> Route {
    Route { method, path, access, on_ingest_nodes: false, handler }
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
        route(Method::GET, "/", READ, get(pages::overview)),
        route(Method::GET, "/cells/{cell}", READ, get(pages::cell)),
        route(Method::GET, "/sla/{slo}", READ, get(pages::sla)),
        route(Method::GET, "/decisions", READ, get(pages::decisions)),
        route(Method::GET, "/alerts", READ, get(pages::alerts)),
        route(Method::GET, "/query", READ, get(pages::query)),
        ops(route(Method::GET, "/healthz", Access::Open, get(ops::healthz))),
        ops(route(Method::GET, "/readyz", Access::Open, get(ops::readyz))),
        ops(route(Method::GET, "/metrics", READ, get(ops::metrics))),
        route(Method::GET, "/api/v1/cells", READ, get(api::cells)),
        route(Method::POST, "/api/v1/query", READ, post(api::query)),
        route(Method::GET, "/api/v1/series", READ, get(api::series)),
        route(Method::GET, "/api/v1/weights", READ, get(api::weights)),
        route(Method::GET, "/api/v1/decisions", READ, get(api::decisions)),
        route(Method::GET, "/api/v1/gateways", READ, get(api::gateways)),
        route(Method::GET, "/api/v1/cutovers", READ, get(api::cutovers)),
        route(Method::GET, "/api/v1/alerts", READ, get(api::alerts)),
        route(Method::GET, "/api/v1/slos", READ, get(api::slos)),
        route(Method::GET, "/api/v1/sla/{slo}", READ, get(api::sla)),
        route(Method::POST, "/api/v1/cells/{cell}/override", ADMIN, post(api::override_cell)),
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
