//! `[tls]`: every listener serves TLS (rustls, aws-lc-rs) with the configured PEM certificate
//! chain and key. The gRPC listeners use tonic's own TLS; the HTTP listeners (OTLP/HTTP, web)
//! accept through [`TlsListener`], which runs each handshake on its own task so a slow or silent
//! client never holds up the next connection.

use anyhow::Context;
use cellpilot_core::config::TlsConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

/// A handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The loaded certificate and key, ready for both kinds of listener.
#[derive(Clone)]
pub(crate) struct Tls {
    cert_pem: Arc<Vec<u8>>,
    key_pem: Arc<Vec<u8>>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

/// Reads `[tls]`; `None` when it is not set. Errors name the file and what is wrong with it.
pub(crate) fn load(cfg: &TlsConfig) -> anyhow::Result<Option<Tls>> {
    if cfg.cert.is_empty() && cfg.key.is_empty() {
        return Ok(None);
    }
    let cert_pem = std::fs::read(&cfg.cert).with_context(|| format!("[tls] cert: reading `{}`", cfg.cert))?;
    let key_pem = std::fs::read(&cfg.key).with_context(|| format!("[tls] key: reading `{}`", cfg.key))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("[tls] cert: `{}` is not a PEM certificate chain", cfg.cert))?;
    anyhow::ensure!(!certs.is_empty(), "[tls] cert: `{}` holds no PEM certificate", cfg.cert);
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("[tls] key: `{}` holds no PEM private key", cfg.key))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("[tls] protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("[tls] `{}` and `{}` are not a certificate and its key", cfg.cert, cfg.key))?;
    // The HTTP listeners speak HTTP/1.1 (axum without http2).
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Tls {
        cert_pem: Arc::new(cert_pem),
        key_pem: Arc::new(key_pem),
        acceptor: TlsAcceptor::from(Arc::new(server)),
    }))
}

impl Tls {
    /// For a tonic server.
    pub(crate) fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(self.cert_pem.as_slice(), self.key_pem.as_slice()))
    }

    /// Accepts TLS connections on `tcp` for an axum server.
    pub(crate) fn listener(&self, tcp: TcpListener) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = self.acceptor.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: back off rather than spin.
                        tracing::warn!(error = %e, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local, task })
    }
}

/// Connections whose TLS handshake is done.
pub(crate) struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop never ends on its own; only shutdown drops it.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
