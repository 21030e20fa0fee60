//! Serving the HTTP listeners (OTLP/HTTP and the web) with `[transport]` limits: at most
//! `max_connections` open connections (past it, new ones wait in the kernel's backlog rather
//! than in our memory), `header_read_timeout` for a request's headers, TLS handshakes bounded
//! in time, and a graceful stop that waits a bounded time for requests in flight.

use crate::tls::Tls;
use cellpilot_core::config::TransportConfig;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How long a stop waits for requests in flight before closing their connections.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves `router` on `tcp` until `stop`, over TLS when `tls` is set.
pub(crate) async fn serve_http(
    tcp: TcpListener,
    tls: Option<Tls>,
    router: axum::Router,
    limits: TransportConfig,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout.0).keep_alive(true);
    let http = Arc::new(http);
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => break,
            s = slots.clone().acquire_owned() => s.map_err(std::io::Error::other)?,
        };
        let (stream, addr) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = tcp.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let (http, tls) = (http.clone(), tls.clone());
        // Watched before the handshake, so a stop also ends connections still negotiating TLS.
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => serve(&http, watcher, stream, service).await,
                Some(tls) => match tls.handshake(stream).await {
                    Some(stream) => serve(&http, watcher, stream, service).await,
                    None => tracing::debug!(%addr, "TLS handshake failed or timed out"),
                },
            }
        });
    }
    drop(tcp);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after {DRAIN:?}; closing their connections");
    }
    Ok(())
}

async fn serve<S>(
    http: &hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    stream: S,
    service: TowerToHyperService<axum::Router>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = http.serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}
