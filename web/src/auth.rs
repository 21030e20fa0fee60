//! The web listener's one authentication layer: it runs in front of every route with the
//! [`Access`] the route table (`routes.rs`) gives it, so a request needs a token (or a client certificate
//! `[auth] cert_roles` names) with the route's role. Handlers that record an actor take the
//! [`Principal`] from the request's extensions.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use cellpilot_core::auth::{PeerCert, Principal, Role};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: probes that tell nothing about the fleet.
    Open,
    /// A caller holding this role (or one that implies it).
    Needs(Role),
}

impl Access {
    /// The word `docs/api.md` uses for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Open => "none",
            Access::Needs(role) => role.as_str(),
        }
    }
}

/// Middleware: authenticates, checks the route's role, and hands the [`Principal`] on.
pub(crate) async fn layer(
    State((state, access)): State<(AppState, Access)>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Access::Needs(role) = access {
        let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let cert = req.extensions().get::<PeerCert>();
        let who: Principal = state.auth.check_peer(header, cert, role).map_err(ApiError::Unauthorized)?;
        req.extensions_mut().insert(who);
    }
    Ok(next.run(req).await)
}
