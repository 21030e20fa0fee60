//! Serving the HTTP listeners (OTLP/HTTP and the web) with `[transport]` limits: connections
//! admitted by the listener's [`Gate`] (caps, idle timeout), `header_read_timeout` for a
//! request's headers, TLS handshakes bounded in time, a graceful stop that waits a bounded time for requests in flight, and lingering
//! closes: a request refused before its body was read (overload, credentials) is answered at
//! once, and the connection then closes the way nginx and Apache do it — write side first, what
//! the client still sends read and dropped for a bounded time — so the answer reaches a client
//! that is still sending instead of being lost to a TCP reset. A client that never sent a byte
//! gets no lingering close: its place is given back at once.

use crate::gate::{self, Admitted, Gate};
use crate::tls::{Tls, WithPeer};
use cellpilot_core::config::TransportConfig;
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
