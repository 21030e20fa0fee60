//! OTLP/gRPC receiver: the three collector `Export` services on one tonic server.
//!
//! The services are written against tonic's server API rather than the generated servers so a
//! malformed protobuf is INVALID_ARGUMENT (the OTLP spec) instead of the generated codec's
//! INTERNAL, and so credentials are checked before a body is decoded.

use crate::error::Error;
use crate::pipeline::{Ingest, Signal, Transport};
use cellpilot_core::auth::Principal;
use prost::Message;
use prost::bytes::Buf;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings};
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstEncoder;
use tonic_types::{ErrorDetails, StatusExt};

/// The one place ingest errors become gRPC statuses.
pub fn to_status(e: &Error) -> Status {
    match e {
        Error::BadInput(m) | Error::Unsupported(m) => Status::invalid_argument(m.clone()),
        Error::TooLarge { .. } | Error::TooMany(_) => Status::resource_exhausted(e.to_string()),
        Error::Unauthenticated(d) if d.is_forbidden() => Status::permission_denied(d.to_string()),
        Error::Unauthenticated(d) => Status::unauthenticated(d.to_string()),
        Error::Overloaded { retry_after } | Error::Unavailable { retry_after } => Status::with_error_details(
            Code::Unavailable,
            e.to_string(),
            ErrorDetails::with_retry_info(Some(*retry_after)),
        ),
        Error::Internal(detail) => {
            tracing::error!(%detail, "OTLP/gRPC export failed");
            Status::internal(e.to_string())
        }
    }
}

/// A tonic service for signal `S`.
#[derive(Debug)]
pub struct OtlpService<S> {
    ingest: Arc<Ingest>,
    _signal: PhantomData<S>,
}

impl<S> Clone for OtlpService<S> {
    fn clone(&self) -> Self {
        Self { ingest: self.ingest.clone(), _signal: PhantomData }
    }
}

impl<S: Signal> OtlpService<S> {
    /// The service over `ingest`.
    pub fn new(ingest: Arc<Ingest>) -> Self {
        Self { ingest, _signal: PhantomData }
    }
}

impl<S: Signal> NamedService for OtlpService<S> {
    const NAME: &'static str = S::SERVICE;
}

struct Export<S>(Arc<Ingest>, PhantomData<S>);

impl<S: Signal> UnaryService<S::Req> for Export<S> {
    type Response = S::Resp;
    type Future = BoxFuture<Response<S::Resp>, Status>;

    fn call(&mut self, request: Request<S::Req>) -> Self::Future {
        let ingest = self.0.clone();
        Box::pin(async move {
            let who = request.extensions().get::<Principal>().cloned().unwrap_or(Principal::Anonymous);
            let req = request.into_inner();
            let result = ingest.export::<S>(req, None, &who).await;
            ingest.count_request(S::LABEL, Transport::Grpc, result.as_ref().err());
            result.map(Response::new).map_err(|e| to_status(&e))
        })
    }
}

impl<S, B> Service<http::Request<B>> for OtlpService<S>
where
    S: Signal,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let ingest = self.ingest.clone();
        Box::pin(async move {
            let is_export =
                req.uri().path().strip_prefix('/').and_then(|p| p.strip_prefix(S::SERVICE)) == Some("/Export");
            if !is_export {
                return Ok(Status::unimplemented(format!("{} is not served here", req.uri().path())).into_http());
            }
            let mut req = req;
            let auth = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            match ingest.authorize(auth) {
                Ok(who) => {
                    req.extensions_mut().insert(who);
                }
                Err(e) => {
                    ingest.count_request(S::LABEL, Transport::Grpc, Some(&e));
                    tracing::warn!(error = %e, "OTLP/gRPC request rejected");
                    return Ok(to_status(&e).into_http());
                }
            }
            // A slot before the body is read; bytes once the message is whole (in the decoder).
            let _slot = match ingest.admit_request() {
                Ok(s) => s,
                Err(e) => {
                    ingest.count_request(S::LABEL, Transport::Grpc, Some(&e));
                    return Ok(to_status(&e).into_http());
                }
            };
            let held: Held = Arc::default();
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            accept.enable(CompressionEncoding::Zstd);
            let mut grpc = tonic::server::Grpc::new(OtlpCodec::<S>(ingest.clone(), held.clone(), PhantomData))
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(ingest.max_request_size()), None);
            Ok(grpc.unary(Export::<S>(ingest.clone(), PhantomData), req).await)
        })
    }
}

/// Prost encoding with a decoder that counts the request's items and decoded size first
/// ([`Ingest::prescan`]) and reports malformed payloads as INVALID_ARGUMENT.
struct OtlpCodec<S>(Arc<Ingest>, Held, PhantomData<S>);

/// The byte permit the decoder takes, held until the call is answered.
type Held = Arc<std::sync::Mutex<Option<crate::limiter::Permit>>>;

impl<S: Signal> Codec for OtlpCodec<S> {
    type Encode = S::Resp;
    type Decode = S::Req;
    type Encoder = ProstEncoder<S::Resp>;
    type Decoder = OtlpDecoder<S>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        OtlpDecoder(self.0.clone(), self.1.clone(), PhantomData)
    }
}

struct OtlpDecoder<S>(Arc<Ingest>, Held, PhantomData<S>);

impl<S: Signal> Decoder for OtlpDecoder<S> {
    type Item = S::Req;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<S::Req>, Status> {
        // The whole message is buffered (and contiguous) by now.
        let bytes = &buf.chunk()[..buf.remaining().min(buf.chunk().len())];
        if let Err(e) = self.0.prescan::<S>(bytes, crate::decode::Encoding::Protobuf) {
            self.0.count_request(S::LABEL, Transport::Grpc, Some(&e));
            return Err(to_status(&e));
        }
        match self.0.admit(bytes.len()) {
            Ok(p) => *self.1.lock().unwrap_or_else(|e| e.into_inner()) = Some(p),
            Err(e) => {
                self.0.count_request(S::LABEL, Transport::Grpc, Some(&e));
                return Err(to_status(&e));
            }
        }
        S::Req::decode(buf).map(Some).map_err(|e| Status::invalid_argument(format!("invalid protobuf payload: {e}")))
    }
}
