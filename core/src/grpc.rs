//! Authentication of the gRPC listeners of gateways and peers (CellWeights, xDS, cluster Flight):
//! one interceptor that checks a bearer token or a verified client certificate for a role,
//! hands handlers the caller, and answers refusals with the codes every listener uses.

use crate::auth::{Authenticator, Denied, PeerCert, Principal, Role};
use tonic::{Request, Status};

/// Lets in callers holding `role`; handlers read who with [`caller`].
#[derive(Debug, Clone)]
pub struct RoleGuard {
    auth: Authenticator,
    role: Role,
}

impl RoleGuard {
    /// Callers of `auth` holding `role`.
    pub fn new(auth: Authenticator, role: Role) -> Self {
        Self { auth, role }
    }

    /// Lets `req` in, recording its caller for [`caller`], or refuses it.
    pub fn admit<T>(&self, req: &mut Request<T>) -> Result<(), Status> {
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let who = self.auth.check_peer(header, req.extensions().get::<PeerCert>(), self.role).map_err(status)?;
        req.extensions_mut().insert(who);
        Ok(())
    }
}

impl tonic::service::Interceptor for RoleGuard {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        self.admit(&mut req)?;
        Ok(req)
    }
}

/// The caller a [`RoleGuard`] let in (anonymous where none guards the service).
pub fn caller<T>(req: &Request<T>) -> Principal {
    req.extensions().get::<Principal>().cloned().unwrap_or(Principal::Anonymous)
}

/// A refusal as gRPC says it: PERMISSION_DENIED for a known caller without the role,
/// UNAUTHENTICATED otherwise.
pub fn status(d: Denied) -> Status {
    crate::status::grpc_status(&d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthConfig;
    use tonic::service::Interceptor;

    #[test]
    fn refusals_by_kind_and_the_caller_handed_on() {
        let auth = AuthConfig {
            read_tokens: vec!["peer=r3ad".into()],
            gateway_tokens: vec!["gw=g4te".into()],
            ..Default::default()
        };
        let mut guard = RoleGuard::new(Authenticator::new(&auth).unwrap(), Role::Read);
        let mut ask = |token: Option<&str>| {
            let mut req = Request::new(());
            if let Some(t) = token {
                req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            guard.call(req)
        };
        assert_eq!(ask(None).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(ask(Some("nope")).unwrap_err().code(), tonic::Code::Unauthenticated);
        let known = ask(Some("g4te")).unwrap_err();
        assert_eq!(known.code(), tonic::Code::PermissionDenied, "known, without the read role");
        assert!(known.message().contains("`read` role"), "{}", known.message());
        let let_in = ask(Some("r3ad")).unwrap();
        assert_eq!(caller(&let_in).actor(), "peer");
        assert_eq!(caller(&Request::new(())), Principal::Anonymous);
    }
}
