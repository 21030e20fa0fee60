//! Serving the HTTP listeners (OTLP/HTTP and the web) with `[transport]` limits: connections
//! admitted by the listener's [`Gate`] (caps, idle timeout), `header_read_timeout` for a
//! request's headers, TLS handshakes bounded in time, a graceful stop that waits a bounded time for requests in flight, and lingering
//! closes: a request refused before its body was read (overload, credentials) is answered at
//! once, and the connection then closes the way nginx and Apache do it — write side first, what
//! the client still sends read and dropped for a bounded time — so the answer reaches a client
//! that is still sending instead of being lost to a TCP reset. A client that never sent a byte
//! gets no lingering close: its place is given back at once.

use crate::gate::{self, Admitted, Gate, Incoming};
use crate::tls::{Tls, WithPeer};
use anyhow::Context as _;
use cellpilot_core::config::TransportConfig;
use cellpilot_core::metrics::Metrics;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

/// How long a stop waits for requests in flight before closing their connections.
const DRAIN: Duration = Duration::from_secs(10);
/// How long, and how many bytes, a closing connection keeps reading and dropping.
const LINGER: Duration = Duration::from_secs(30);
const LINGER_BYTES: usize = 64 << 20;

/// Serves `router` on `tcp` until `stop`, over TLS when `tls` is set, its connections admitted
/// by `gate`.
pub(crate) async fn serve_http(
    tcp: TcpListener,
    tls: Option<Tls>,
    router: axum::Router,
    limits: TransportConfig,
    gate: Arc<Gate>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout.0).keep_alive(true);
    let http = Arc::new(http);
    // Every connection's task; finished ones are reaped as new ones arrive, and the rest end
    // with the drain below.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (stream, addr) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = tcp.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off rather than spin.
                    gate::accept_failed(gate.listener(), &e);
                    tokio::time::sleep(gate::ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Refused: dropped here, so closed at once.
        let Some(mut stream) = gate.wrap(stream) else { continue };
        let slot = Slot { _place: stream.take_admitted(), spoke: stream.spoke() };
        let (http, tls, router) = (http.clone(), tls.clone(), router.clone());
        // Watched before the handshake, so a stop also ends connections still negotiating TLS.
        let watcher = graceful.watcher();
        conns.spawn(async move {
            match tls {
                None => serve(&http, watcher, stream, service(router, None), slot).await,
                Some(tls) => match tls.handshake(stream).await {
                    Some(stream) => {
                        let peer = crate::tls::peer_of(&stream);
                        serve(&http, watcher, stream, service(router, peer), slot).await
                    }
                    None => tracing::debug!(%addr, "TLS handshake failed or timed out"),
                },
            }
        });
    }
    drop(tcp);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after {DRAIN:?}; closing their connections");
    }
    conns.shutdown().await;
    Ok(())
}

type Service = TowerToHyperService<WithPeer<axum::Router>>;

fn service(router: axum::Router, peer: Option<cellpilot_core::auth::PeerCert>) -> Service {
    TowerToHyperService::new(WithPeer::new(router, peer))
}

async fn serve<S>(
    http: &hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    stream: S,
    service: Service,
    slot: Slot,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = http.serve_connection(TokioIo::new(Lingering(Some((stream, slot)))), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// A connection's place at its listener, held until its close ends.
struct Slot {
    /// Given back when the slot drops.
    _place: Option<Admitted>,
    /// Whether the client sent anything.
    spoke: Arc<AtomicBool>,
}

/// A connection whose close lingers (see the module docs); it keeps its place at the listener
/// until the lingering ends, so lingering sockets count against `max_connections` too.
struct Lingering<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(Option<(S, Slot)>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Lingering<S> {
    fn drop(&mut self) {
        let Some((mut stream, slot)) = self.0.take() else { return };
        // Nothing was sent, so nothing is owed an answer: no lingering.
        if !slot.spoke.load(Ordering::Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        rt.spawn(async move {
            let _ = stream.shutdown().await;
            let mut buf = vec![0u8; 64 << 10];
            let mut read = 0;
            let _ = tokio::time::timeout(LINGER, async {
                while read < LINGER_BYTES {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
            })
            .await;
            drop(slot);
        });
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Lingering<S> {
    fn inner(&mut self) -> Pin<&mut S> {
        // Only `drop` takes the stream out.
        Pin::new(&mut self.0.as_mut().expect("a lingering stream is used only before it is dropped").0)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Lingering<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().inner().poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Lingering<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.get_mut().inner().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().inner().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().inner().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().inner().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.as_ref().is_some_and(|(s, _)| s.is_write_vectored())
    }
}

/// Binds `addr` for the listener named `what`.
pub(crate) async fn bind(what: &str, addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("binding {what} on {addr}"))
}

/// A gRPC listener's connections, admitted by a [`Gate`] named `listener`.
pub(crate) fn incoming(
    tcp: TcpListener,
    listener: &'static str,
    limits: &TransportConfig,
    metrics: &Metrics,
) -> Incoming<TcpIncoming> {
    let tcp = TcpIncoming::from(tcp).with_nodelay(Some(true)).with_keepalive(Some(limits.keepalive_interval.0));
    Incoming::new(tcp, Gate::new(listener, limits, metrics))
}

/// Largest header block a gRPC client may send (hyper's default is 16 MiB per stream).
const MAX_HEADER_LIST: u32 = 64 << 10;
/// Streams a client may open and reset before they are accepted, and streams the server may
/// reset for a client's errors, before the connection is closed (the rapid-reset floods).
const MAX_PENDING_RESETS: usize = 20;
const MAX_ERROR_RESETS: usize = 64;

/// A gRPC listener's server: [`crate::tls::PeerLayer`] hands handlers the client's certificate.
pub(crate) type GrpcServer =
    tonic::transport::Server<tower::layer::util::Stack<crate::tls::PeerLayer, tower::layer::util::Identity>>;

/// A tonic server with the `[transport]` limits, over TLS when `[tls]` is set. `pings`: HTTP/2
/// keepalive PINGs, for the CellWeights listener, where a gateway that vanished must be noticed
/// (it holds cut-overs back); OTLP clients keep their own keepalives, and one busy encoding a
/// large export must not be cut off for a late PING answer (TCP keepalive still applies).
pub(crate) fn grpc_server(
    tls: Option<&crate::tls::Tls>,
    limits: &TransportConfig,
    pings: bool,
) -> anyhow::Result<GrpcServer> {
    let mut server = tonic::transport::Server::builder()
        .http2_max_header_list_size(MAX_HEADER_LIST)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
        .http2_max_local_error_reset_streams(Some(MAX_ERROR_RESETS))
        .max_concurrent_streams(Some(limits.max_concurrent_streams))
        .concurrency_limit_per_connection(limits.concurrency_per_connection)
        .tcp_keepalive(Some(limits.keepalive_interval.0));
    if pings {
        server = server
            .http2_keepalive_interval(Some(limits.keepalive_interval.0))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout.0));
    }
    let server = match tls {
        Some(t) => server.tls_config(t.grpc()).context("[tls] for a gRPC listener")?,
        None => server,
    };
    Ok(server.layer(crate::tls::PeerLayer))
}
