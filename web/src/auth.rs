//! The web listener's one authentication layer: every request but the allow-listed probes
//! needs a token (or a client certificate `[auth] cert_roles` names) with the role its route asks for (read, or admin for overrides), so a route
//! added later is closed by default. Handlers that record an actor take the [`Principal`] from
//! the request's extensions.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use cellpilot_core::auth::{PeerCert, Principal, Role};

/// Paths answered without credentials (probes that tell nothing about the fleet).
const OPEN: [&str; 2] = ["/healthz", "/readyz"];

/// The role a request needs, `None` for the allow-listed probes.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    if OPEN.contains(&path) {
        return None;
    }
    let is_override = path.strip_prefix("/api/v1/cells/").is_some_and(|rest| rest.ends_with("/override"));
    Some(if is_override && method != Method::GET { Role::Admin } else { Role::Read })
}

/// Middleware: authenticates, checks the route's role, and hands the [`Principal`] on.
pub async fn layer(State(state): State<AppState>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    if let Some(role) = required_role(req.method(), req.uri().path()) {
        let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let cert = req.extensions().get::<PeerCert>();
        let who: Principal = state.auth.check_peer(header, cert, role).map_err(ApiError::Unauthorized)?;
        req.extensions_mut().insert(who);
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_open_overrides_need_admin_and_the_rest_read() {
        assert_eq!(required_role(&Method::GET, "/readyz"), None);
        assert_eq!(required_role(&Method::GET, "/healthz"), None);
        assert_eq!(required_role(&Method::GET, "/healthz/"), Some(Role::Read));
        assert_eq!(required_role(&Method::POST, "/api/v1/cells/a/override"), Some(Role::Admin));
        assert_eq!(required_role(&Method::GET, "/metrics"), Some(Role::Read));
        assert_eq!(required_role(&Method::POST, "/api/v1/query"), Some(Role::Read));
        assert_eq!(required_role(&Method::GET, "/a-route-added-later"), Some(Role::Read));
    }
}
