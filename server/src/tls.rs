//! `[tls]`: every listener serves TLS (rustls, aws-lc-rs) with the configured PEM certificate
//! chain and key. The gRPC listeners use tonic's own TLS; the HTTP listeners (OTLP/HTTP, web)
//! run [`Tls::handshake`] on each connection's own task (see `listen`), so a slow or silent
//! client never holds up the next connection.

use anyhow::Context;
use cellpilot_core::config::TlsConfig;
use std::sync::Arc;
use std::time::Duration;
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

/// Makes aws-lc-rs the process's rustls provider. Two providers are linked (the object-store
/// client's HTTP stack brings ring), and rustls then refuses to pick one for the configs that
/// ask for the default (tonic's TLS listeners and clients); call before building any of them.
pub fn install_crypto_provider() {
    // An error means one is installed already: the first choice stands.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Reads `[tls]`; `None` when it is not set. Errors name the file and what is wrong with it.
pub(crate) fn load(cfg: &TlsConfig) -> anyhow::Result<Option<Tls>> {
    install_crypto_provider();
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

    /// The server side of a TLS handshake on `stream`, bounded in time.
    pub(crate) async fn handshake<S>(&self, stream: S) -> Option<TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => None,
        }
    }
}
