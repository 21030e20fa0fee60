//! OTLP/gRPC receiver: the three collector `Export` services on one tonic server.
//!
//! The services are written against tonic's server API rather than the generated servers so a
//! malformed protobuf is INVALID_ARGUMENT (the OTLP spec) instead of the generated codec's
//! INTERNAL, so credentials and admission are checked before a body is read, and so the message
//! is unframed and decompressed here with our limits (see `unframe`). The codec hands the message
//! on as bytes: traces are mapped from the wire, other signals decoded by the pipeline.

use crate::error::Error;
use crate::limiter::Permit;
use crate::pipeline::{Ingest, Signal, Transport};
use cellpilot_core::auth::Principal;
use cellpilot_core::status::StatusCode;
use cellpilot_core::throttle::Throttle;
use prost::bytes::Bytes;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstEncoder;
use tonic_types::{ErrorDetails, StatusExt};

/// An ingest error as a gRPC status (code and RetryInfo from [`Error::status`]).
pub fn to_status(e: &Error) -> Status {
    let answer = e.status();
    if let Error::Internal(detail) = e {
        tracing::error!(detail = %cellpilot_core::status::Chain(detail.as_ref()), "OTLP/gRPC export failed");
    }
    match answer.retry_after {
        Some(wait) => Status::with_error_details(answer.grpc, e.to_string(), ErrorDetails::with_retry_info(Some(wait))),
        None => cellpilot_core::status::ErrorExt::status_code(e).status(e.to_string()),
    }
}

/// The tonic routes serving the three OTLP collector services.
pub fn routes(ingest: Arc<Ingest>) -> tonic::service::Routes {
    use crate::pipeline::{Logs, MetricsSignal, Traces};
    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(OtlpService::<Traces>::new(ingest.clone()))
        .add_service(OtlpService::<MetricsSignal>::new(ingest.clone()))
        .add_service(OtlpService::<Logs>::new(ingest));
    routes.routes()
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

impl<S: Signal> UnaryService<Bytes> for Export<S> {
    type Response = S::Resp;
    type Future = BoxFuture<Response<S::Resp>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let ingest = self.0.clone();
        Box::pin(async move {
            let who = request.extensions().get::<Principal>().cloned().unwrap_or(Principal::Anonymous);
            let body = request.into_inner();
            let result = ingest.export_protobuf::<S>(body, &who).await;
            ingest.count_request(S::LABEL, Transport::Grpc, result.as_ref().err());
            result.map(Response::new).map_err(|e| to_status(&e))
        })
    }
}

impl<S, B> Service<http::Request<B>> for OtlpService<S>
where
    S: Signal,
    B: tonic::codegen::Body + Send + 'static,
    B::Data: Send,
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
                return Ok(StatusCode::Unimplemented
                    .status(format!("{} is not served here", req.uri().path()))
                    .into_http());
            }
            let mut req = req;
            let auth = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            match ingest.authorize(auth, req.extensions().get::<cellpilot_core::auth::PeerCert>()) {
                Ok(who) => {
                    req.extensions_mut().insert(who);
                }
                Err(e) => {
                    ingest.count_request(S::LABEL, Transport::Grpc, Some(&e));
                    static REJECTED: Throttle = Throttle::new(cellpilot_core::throttle::EVERY);
                    if let Some(held_back) = REJECTED.allow() {
                        tracing::warn!(error = %e, lines_held_back = held_back, "OTLP/gRPC request rejected");
                    }
                    return Ok(to_status(&e).into_http());
                }
            }
            let refuse = |e: Error| {
                ingest.count_request(S::LABEL, Transport::Grpc, Some(&e));
                Ok(to_status(&e).into_http())
            };
            // A slot before the body is read, bytes once its message is whole.
            let _slot = match ingest.admit_request() {
                Ok(s) => s,
                Err(e) => return refuse(e),
            };
            let (req, _permit) = match unframe::<S, B>(req, &ingest).await {
                Ok(r) => r,
                Err(e) => return refuse(e),
            };
            let mut grpc = tonic::server::Grpc::new(OtlpCodec::<S>(PhantomData))
                .apply_max_message_size_config(Some(ingest.max_request_size()), None);
            Ok(grpc.unary(Export::<S>(ingest.clone(), PhantomData), req).await)
        })
    }
}

/// Reads a unary call's one message and undoes its compression here rather than in tonic, so
/// every size check answers RESOURCE_EXHAUSTED (compressed or not), a bad gzip or zstd body is
/// INVALID_ARGUMENT, and multi-member gzip is read whole; then pre-scans it and charges its
/// size and estimated decoded size to the byte budget. Returns the call with the message
/// uncompressed, and the byte permit it holds.
async fn unframe<S: Signal, B>(
    req: http::Request<B>,
    ingest: &Ingest,
) -> Result<(http::Request<http_body_util::Full<Bytes>>, Permit), Error>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<StdError> + Send + 'static,
{
    let limit = ingest.max_request_size();
    let (mut parts, body) = req.into_parts();
    // Compressed bodies may be a little larger than what they hold.
    let wire_limit = limit + limit / 64 + 1024;
    // Charged from the prefix's declared length before the message is read.
    let (body, permit) =
        crate::decode::read_grpc_body(body, wire_limit, ingest.body_read_timeout(), |n| ingest.admit(n))
            .await
            .map_err(|e| if matches!(e, Error::TooLarge { .. }) { Error::TooLarge { limit } } else { e })?;
    if body.len() < 5 {
        return Err(Error::BadInput("the call holds no complete gRPC message".into()));
    }
    let compressed = match body[0] {
        0 => false,
        1 => true,
        f => return Err(Error::BadInput(format!("invalid gRPC compression flag {f}"))),
    };
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if len != body.len() - 5 {
        return Err(Error::BadInput(format!(
            "the gRPC message declares {len} bytes but the call holds {}: send exactly one message",
            body.len() - 5
        )));
    }
    // Uncompressed, the call goes on as it came (no copy); compressed, it is inflated behind a
    // new frame header.
    let framed: Bytes = if compressed {
        let encoding = parts.headers.remove("grpc-encoding");
        let encoding = encoding.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("identity");
        let mut framed = vec![0u8; 5];
        decompress(encoding, &body[5..], limit, &mut framed)?;
        let n = u32::try_from(framed.len() - 5).unwrap_or(u32::MAX);
        framed[1..5].copy_from_slice(&n.to_be_bytes());
        framed.into()
    } else if len > limit {
        return Err(Error::TooLarge { limit });
    } else {
        body
    };
    let message = &framed[5..];
    let decoded = ingest.prescan::<S>(message, crate::decode::Encoding::Protobuf)?;
    let bytes = message.len().saturating_add(decoded);
    let permit = match permit {
        Some(mut p) => {
            p.resize(bytes)?;
            p
        }
        None => ingest.admit(bytes)?,
    };
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Ok((http::Request::from_parts(parts, http_body_util::Full::new(framed)), permit))
}

/// A compressed gRPC message, inflated onto the end of `out`, at most `limit` bytes of it.
fn decompress(encoding: &str, wire: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), Error> {
    use std::io::Read;
    let start = out.len();
    let read = match encoding {
        "gzip" => flate2::read::MultiGzDecoder::new(wire).take(limit as u64 + 1).read_to_end(out),
        "zstd" => zstd::stream::read::Decoder::new(wire).and_then(|d| d.take(limit as u64 + 1).read_to_end(out)),
        other => {
            return Err(Error::Unsupported(format!(
                "unsupported grpc-encoding `{other}` on a compressed message: use gzip or zstd"
            )));
        }
    };
    read.map_err(|e| Error::BadInput(format!("the message is not valid {encoding}: {e}")))?;
    if out.len() - start > limit {
        return Err(Error::TooLarge { limit });
    }
    Ok(())
}

/// Prost encoding for responses; requests are taken as their bytes (pre-scanned in `unframe`).
struct OtlpCodec<S>(PhantomData<S>);

impl<S: Signal> Codec for OtlpCodec<S> {
    type Encode = S::Resp;
    type Decode = Bytes;
    type Encoder = ProstEncoder<S::Resp>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        use prost::bytes::Buf;
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}
