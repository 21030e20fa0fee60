//! OTLP/HTTP receiver: `POST /v1/traces`, `/v1/metrics`, `/v1/logs`. Decodes, authenticates and
//! hands the request to the [`Ingest`] pipeline; maps errors to HTTP statuses in one place.

use crate::decode::{self, Encoding};
use crate::error::Error;
use crate::pipeline::{Ingest, Logs, MetricsSignal, Signal, Traces, Transport};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cellpilot_core::auth::PeerCert;
use cellpilot_core::throttle::Throttle;
use std::sync::Arc;

/// The OTLP/HTTP routes.
pub fn router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .route("/v1/logs", post(logs))
        // Bodies are read with our own cap (max_request_size) below.
        .layer(DefaultBodyLimit::disable())
        .with_state(ingest)
}

/// A connection's verified client certificate, when it presented one.
type Peer = Option<Extension<PeerCert>>;

async fn traces(State(ingest): State<Arc<Ingest>>, peer: Peer, headers: HeaderMap, body: Body) -> Response {
    handle::<Traces>(&ingest, peer.as_deref(), &headers, body).await
}

async fn metrics(State(ingest): State<Arc<Ingest>>, peer: Peer, headers: HeaderMap, body: Body) -> Response {
    handle::<MetricsSignal>(&ingest, peer.as_deref(), &headers, body).await
}

async fn logs(State(ingest): State<Arc<Ingest>>, peer: Peer, headers: HeaderMap, body: Body) -> Response {
    handle::<Logs>(&ingest, peer.as_deref(), &headers, body).await
}

async fn handle<S: Signal>(ingest: &Ingest, peer: Option<&PeerCert>, headers: &HeaderMap, body: Body) -> Response {
    let header_str = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    // Errors before the content type is known are answered in JSON, the readable choice.
    let enc = Encoding::from_content_type(header_str(header::CONTENT_TYPE));
    let reply_enc = *enc.as_ref().unwrap_or(&Encoding::Json);
    let mut unread = Some(body);
    let result = async {
        let who = ingest.authorize(header_str(header::AUTHORIZATION), peer)?;
        let enc = enc?;
        let limit = ingest.max_request_size();
        // Room is taken before the body is read: a slot, then its declared size (or the limit).
        let _slot = ingest.admit_request()?;
        let declared = header_str(header::CONTENT_LENGTH).and_then(|v| v.trim().parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(Error::TooLarge { limit });
        }
        let mut permit = ingest.admit(declared.unwrap_or(limit))?;
        let body = unread.take().ok_or_else(|| Error::Internal("the request body was taken twice".into()))?;
        let raw = decode::read_body(body, limit, ingest.body_read_timeout(), "the request body").await?;
        let raw: Bytes = decode::decompress(raw, header_str(header::CONTENT_ENCODING), limit)?;
        let decoded = ingest.prescan::<S>(&raw, enc)?;
        permit.resize(raw.len().saturating_add(decoded))?;
        match enc {
            // Protobuf bodies go on (and to the WAL) as they came; JSON ones are decoded here.
            Encoding::Protobuf => ingest.export_protobuf::<S>(raw, &who).await,
            Encoding::Json => ingest.export::<S>(decode::decode(&raw, enc)?, None, &who).await,
        }
    }
    .await;
    ingest.count_request(S::LABEL, Transport::Http, result.as_ref().err());
    match result {
        Ok(resp) => {
            ([(header::CONTENT_TYPE, reply_enc.content_type())], decode::encode(&resp, reply_enc)).into_response()
        }
        Err(e) => {
            let mut resp = error_response(&e, reply_enc);
            if unread.is_some() {
                // Answered before the body was read: this connection cannot carry another
                // request; the listener's lingering close lets the answer arrive first.
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
    }
}

/// An ingest error as an HTTP response (status and retry hint from [`Error::status`]).
fn error_response(e: &Error, enc: Encoding) -> Response {
    let answer = e.status();
    match e {
        Error::Internal(detail) => tracing::error!(%detail, "OTLP/HTTP export failed"),
        Error::Unauthenticated(d) => {
            static REJECTED: Throttle = Throttle::new(cellpilot_core::throttle::EVERY);
            if let Some(held_back) = REJECTED.allow() {
                tracing::warn!(reason = %d, lines_held_back = held_back, "OTLP/HTTP request rejected");
            }
        }
        other => tracing::debug!(error = %other, "OTLP/HTTP request rejected"),
    }
    let body = decode::status_body(answer.grpc as i32, &e.to_string(), enc);
    let status = StatusCode::from_u16(answer.http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, [(header::CONTENT_TYPE, enc.content_type())], body).into_response();
    if let Some(wait) = answer.retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
    }
    if answer.http == 401 {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}
