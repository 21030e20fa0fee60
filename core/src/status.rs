//! One mapping from what went wrong to what a client hears. Every error a listener answers has
//! a [`StatusCode`] ([`ErrorExt::status_code`]), and its HTTP status and gRPC code come from
//! here alone, so the OTLP receivers, the web API, the gateway services and the cluster's
//! Flight service answer the same failure the same way.

use tonic::Code;

/// What kind of failure an error is, as a client should understand it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusCode {
    /// The request is wrong; the message names what (400 / INVALID_ARGUMENT).
    InvalidArgument,
    /// A content type or encoding not spoken here (415 / INVALID_ARGUMENT).
    Unsupported,
    /// What was asked for does not exist (404 / NOT_FOUND).
    NotFound,
    /// No valid credentials (401 / UNAUTHENTICATED).
    Unauthenticated,
    /// Credentials without the role asked for (403 / PERMISSION_DENIED).
    PermissionDenied,
    /// The request is over a size or count bound (413 / RESOURCE_EXHAUSTED).
    TooLarge,
    /// The caller holds as much as a cap allows (streams, gateways, names; 429 /
    /// RESOURCE_EXHAUSTED): it must give something back before asking again.
    LimitReached,
    /// Too much work right now; retry shortly (429 / UNAVAILABLE, which gRPC clients retry).
    Overloaded,
    /// This node cannot do it now (503 / UNAVAILABLE).
    Unavailable,
    /// The request did not arrive in time (408 / DEADLINE_EXCEEDED).
    Timeout,
    /// The client went away mid-request (499, as proxies say it / CANCELLED).
    Cancelled,
    /// Not served here (404 / UNIMPLEMENTED).
    Unimplemented,
    /// Our fault; the details are logged, not sent (500 / INTERNAL).
    Internal,
}

impl StatusCode {
    /// The HTTP status.
    pub fn http(self) -> u16 {
        match self {
            StatusCode::InvalidArgument => 400,
            StatusCode::Unsupported => 415,
            StatusCode::NotFound | StatusCode::Unimplemented => 404,
            StatusCode::Unauthenticated => 401,
            StatusCode::PermissionDenied => 403,
            StatusCode::TooLarge => 413,
            StatusCode::LimitReached | StatusCode::Overloaded => 429,
            StatusCode::Unavailable => 503,
            StatusCode::Timeout => 408,
            StatusCode::Cancelled => 499,
            StatusCode::Internal => 500,
        }
    }

    /// The gRPC code.
    pub fn grpc(self) -> Code {
        match self {
            StatusCode::InvalidArgument | StatusCode::Unsupported => Code::InvalidArgument,
            StatusCode::NotFound => Code::NotFound,
            StatusCode::Unauthenticated => Code::Unauthenticated,
            StatusCode::PermissionDenied => Code::PermissionDenied,
            StatusCode::TooLarge | StatusCode::LimitReached => Code::ResourceExhausted,
            StatusCode::Overloaded | StatusCode::Unavailable => Code::Unavailable,
            StatusCode::Timeout => Code::DeadlineExceeded,
            StatusCode::Cancelled => Code::Cancelled,
            StatusCode::Unimplemented => Code::Unimplemented,
            StatusCode::Internal => Code::Internal,
        }
    }

    /// A gRPC status of this kind saying `message`.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        // The one place a status is built from a code.
        #[allow(clippy::disallowed_methods)]
        tonic::Status::new(self.grpc(), message)
    }
}

/// An error that knows how a client should hear it.
pub trait ErrorExt: std::error::Error {
    /// Its kind.
    fn status_code(&self) -> StatusCode;
}

/// `e` as a gRPC status: its own message, except for internal errors, whose details (with
/// their sources) are logged and replaced by a generic message.
pub fn grpc_status<E: ErrorExt + ?Sized>(e: &E) -> tonic::Status {
    let code = e.status_code();
    if code == StatusCode::Internal {
        tracing::error!(error = %Chain(e), "request failed");
        return code.status("internal error (details are in cellpilot's log)");
    }
    code.status(e.to_string())
}

/// An error with its sources, `a: b: c`.
pub struct Chain<'a, E: ?Sized>(pub &'a E);

impl<E: std::error::Error + ?Sized> std::fmt::Display for Chain<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl ErrorExt for crate::Error {
    fn status_code(&self) -> StatusCode {
        match self {
            crate::Error::InvalidInput(_) => StatusCode::InvalidArgument,
            crate::Error::Config(_) | crate::Error::Internal(_) => StatusCode::Internal,
        }
    }
}

impl ErrorExt for crate::auth::Denied {
    fn status_code(&self) -> StatusCode {
        if self.is_forbidden() { StatusCode::PermissionDenied } else { StatusCode::Unauthenticated }
    }
}

impl ErrorExt for crate::task::Interrupted {
    fn status_code(&self) -> StatusCode {
        StatusCode::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table every listener answers by, written out: (kind, HTTP, gRPC).
    #[test]
    fn each_kind_has_one_http_status_and_one_grpc_code() {
        let table = [
            (StatusCode::InvalidArgument, 400, Code::InvalidArgument),
            (StatusCode::Unsupported, 415, Code::InvalidArgument),
            (StatusCode::NotFound, 404, Code::NotFound),
            (StatusCode::Unauthenticated, 401, Code::Unauthenticated),
            (StatusCode::PermissionDenied, 403, Code::PermissionDenied),
            (StatusCode::TooLarge, 413, Code::ResourceExhausted),
            (StatusCode::LimitReached, 429, Code::ResourceExhausted),
            (StatusCode::Overloaded, 429, Code::Unavailable),
            (StatusCode::Unavailable, 503, Code::Unavailable),
            (StatusCode::Timeout, 408, Code::DeadlineExceeded),
            (StatusCode::Cancelled, 499, Code::Cancelled),
            (StatusCode::Unimplemented, 404, Code::Unimplemented),
            (StatusCode::Internal, 500, Code::Internal),
        ];
        for (kind, http, grpc) in table {
            assert_eq!((kind.http(), kind.grpc()), (http, grpc), "{kind:?}");
        }
    }

    #[test]
    fn internal_errors_keep_their_details_out_of_the_answer() {
        let e = crate::Error::from(crate::error::Internal::new("disk /var/lib/x failed"));
        let s = grpc_status(&e);
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("/var/lib"), "{}", s.message());
        let e = crate::Error::InvalidInput("`from` is not a timestamp".into());
        assert_eq!(grpc_status(&e).message(), "invalid value: `from` is not a timestamp");
    }

    #[test]
    fn a_chain_names_every_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading the checkpoint")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("no space left"));
        assert_eq!(Chain(&e).to_string(), "reading the checkpoint: no space left");
    }
}
