//! Admission for every listener, HTTP and gRPC alike: at most `max_connections` open connections
//! per listener and `max_connections_per_ip` from one address, counted on accept; the excess is
//! closed at once (accept never waits, so one client's idle sockets cannot hold the backlog). A
//! connection that sends nothing for `idle_timeout` after it opens is closed, and accept errors
//! (out of descriptors) back off instead of spinning.

use cellpilot_core::config::TransportConfig;
use cellpilot_core::metrics::Metrics;
use cellpilot_core::throttle::Throttle;
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_stream::Stream;

/// Pause after a failed accept (EMFILE and the like) before the next.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// One listener's open connections.
#[derive(Debug)]
pub(crate) struct Gate {
    listener: &'static str,
    max: usize,
    per_ip: usize,
    idle: Duration,
    open: Mutex<Open>,
    metrics: Metrics,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Total,
    PerIp,
}

impl Refused {
    fn reason(self) -> &'static str {
        match self {
            Refused::Total => "max_connections",
            Refused::PerIp => "max_connections_per_ip",
        }
    }
}

impl Gate {
    /// The gate of the listener named `listener` (a metrics label), with `limits`.
    pub(crate) fn new(listener: &'static str, limits: &TransportConfig, metrics: &Metrics) -> Arc<Self> {
        metrics.connections_open.with_label_values(&[listener]).set(0);
        for r in ["max_connections", "max_connections_per_ip", "idle_timeout"] {
            metrics.connections_refused.with_label_values(&[listener, r]);
        }
        Arc::new(Self {
            listener,
            max: limits.max_connections,
            per_ip: limits.max_connections_per_ip,
            idle: limits.idle_timeout.0,
            open: Mutex::new(Open::default()),
            metrics: metrics.clone(),
        })
    }

    /// Lets a connection from `ip` in, or says why not (and counts it).
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let from_ip = open.by_ip.get(&ip).copied().unwrap_or(0);
        let refused = if open.total >= self.max {
            Some(Refused::Total)
        } else if from_ip >= self.per_ip {
            Some(Refused::PerIp)
        } else {
            None
        };
        if let Some(why) = refused {
            drop(open);
            self.metrics.connections_refused.with_label_values(&[self.listener, why.reason()]).inc();
            static LINES: Throttle = Throttle::new(cellpilot_core::throttle::EVERY);
            if let Some(held_back) = LINES.allow() {
                tracing::warn!(listener = self.listener, %ip, reason = why.reason(), lines_held_back = held_back, "connection closed at once");
            }
            return Err(why);
        }
        open.total += 1;
        *open.by_ip.entry(ip).or_default() += 1;
        self.metrics.connections_open.with_label_values(&[self.listener]).set(open.total as i64);
        Ok(Admitted { gate: self.clone(), ip })
    }

    /// The listener's name.
    pub(crate) fn listener(&self) -> &'static str {
        self.listener
    }

    /// Wraps an accepted stream: admitted, or `None` (the stream dropped, so closed).
    pub(crate) fn wrap(self: &Arc<Self>, stream: TcpStream) -> Option<Conn<TcpStream>> {
        let ip = stream.peer_addr().ok()?.ip();
        let admitted = self.admit(ip).ok()?;
        Some(Conn::new(stream, admitted, self.idle))
    }

    fn release(&self, ip: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.by_ip.remove(&ip);
            }
        }
        self.metrics.connections_open.with_label_values(&[self.listener]).set(open.total as i64);
    }
}

/// A connection let in; its place is given back when this drops.
#[derive(Debug)]
pub(crate) struct Admitted {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.gate.release(self.ip);
    }
}

/// An admitted connection: closed (a read fails with `TimedOut`) if its first byte does not
/// arrive within the idle timeout.
pub(crate) struct Conn<S> {
    inner: S,
    gate: Arc<Gate>,
    admitted: Option<Admitted>,
    /// Until the first byte.
    idle: Option<Pin<Box<Sleep>>>,
    /// Whether the client has sent anything (a silent one is not worth a lingering close).
    spoke: Arc<AtomicBool>,
}

impl<S> Conn<S> {
    fn new(inner: S, admitted: Admitted, idle: Duration) -> Self {
        Self {
            inner,
            gate: admitted.gate.clone(),
            admitted: Some(admitted),
            idle: Some(Box::pin(tokio::time::sleep(idle))),
            spoke: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set once the client has sent a byte.
    pub(crate) fn spoke(&self) -> Arc<AtomicBool> {
        self.spoke.clone()
    }

    /// The connection's place, to hold past the connection (a lingering close).
    pub(crate) fn take_admitted(&mut self) -> Option<Admitted> {
        self.admitted.take()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if this.idle.is_some() && buf.filled().len() > before {
                    this.idle = None;
                    this.spoke.store(true, Ordering::Relaxed);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let Some(idle) = this.idle.as_mut() else { return Poll::Pending };
                ready!(idle.as_mut().poll(cx));
                this.idle = None;
                let gate = &this.gate;
                gate.metrics.connections_refused.with_label_values(&[gate.listener, "idle_timeout"]).inc();
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the connection sent nothing within [transport] idle_timeout",
                )))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Conn<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// A gRPC listener's connections through its [`Gate`]: tonic's `TcpIncoming` (nodelay, TCP
/// keepalive) with refused connections closed at once and accept errors backing off.
pub(crate) struct Incoming<I> {
    incoming: I,
    gate: Arc<Gate>,
    backoff: Option<Pin<Box<Sleep>>>,
}

impl<I> Incoming<I> {
    pub(crate) fn new(incoming: I, gate: Arc<Gate>) -> Self {
        Self { incoming, gate, backoff: None }
    }
}

impl<I> Stream for Incoming<I>
where
    I: Stream<Item = std::io::Result<TcpStream>> + Unpin,
{
    type Item = std::io::Result<Conn<TcpStream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(b) = this.backoff.as_mut() {
                ready!(b.as_mut().poll(cx));
                this.backoff = None;
            }
            match ready!(Pin::new(&mut this.incoming).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => {
                    accept_failed(this.gate.listener, &e);
                    this.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_BACKOFF)));
                }
                Some(Ok(stream)) => {
                    if let Some(conn) = this.gate.wrap(stream) {
                        return Poll::Ready(Some(Ok(conn)));
                    }
                }
            }
        }
    }
}

/// Logs a failed accept, at most a line a minute.
pub(crate) fn accept_failed(listener: &str, e: &std::io::Error) {
    static LINES: Throttle = Throttle::new(cellpilot_core::throttle::EVERY);
    if let Some(held_back) = LINES.allow() {
        tracing::warn!(listener, error = %e, lines_held_back = held_back, "accepting a connection failed; backing off");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: usize) -> TransportConfig {
        TransportConfig { max_connections: max, max_connections_per_ip: per_ip, ..TransportConfig::default() }
    }

    #[test]
    fn caps_count_on_admit_and_free_on_drop() {
        let metrics = Metrics::new();
        let gate = Gate::new("test", &limits(3, 2), &metrics);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Refused::PerIp);
        let _b1 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(c).unwrap_err(), Refused::Total);
        drop(a1);
        let _c1 = gate.admit(c).unwrap();
        assert_eq!(gate.open.lock().unwrap().total, 3);
        let refused = |r| metrics.connections_refused.with_label_values(&["test", r]).get();
        assert_eq!((refused("max_connections"), refused("max_connections_per_ip")), (1, 1));
        assert_eq!(metrics.connections_open.with_label_values(&["test"]).get(), 3);
    }
}
