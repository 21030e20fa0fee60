//! `[tls]`: every listener serves TLS (rustls, aws-lc-rs) with the configured PEM certificate
//! chain and key, and with `client_ca` asks clients for a certificate signed by it (required or
//! optional). The gRPC listeners use tonic's own TLS; the HTTP listeners (OTLP/HTTP, web)
//! run [`Tls::handshake`] on each connection's own task (see `listen`), so a slow or silent
//! client never holds up the next connection. [`WithPeer`] hands a connection's verified
//! certificate to the handlers as a [`PeerCert`]; cluster nodes dial each other with
//! [`Tls::client`].

use anyhow::Context;
use cellpilot_core::auth::PeerCert;
use cellpilot_core::config::{ClientAuth, TlsConfig};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// A handshake that has not finished by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The loaded certificate and key, ready for both kinds of listener.
#[derive(Clone)]
pub(crate) struct Tls {
    cert_pem: Arc<Vec<u8>>,
    key_pem: Arc<Vec<u8>>,
    /// `client_ca`'s PEM and whether a certificate is required.
    client_ca: Option<(Arc<Vec<u8>>, ClientAuth)>,
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
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("[tls] protocol versions")?;
    let (builder, client_ca) = match cfg.client_ca.as_str() {
        "" => (builder.with_no_client_auth(), None),
        path => {
            let pem = std::fs::read(path).with_context(|| format!("[tls] client_ca: reading `{path}`"))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.with_context(|| format!("[tls] client_ca: `{path}` is not PEM certificates"))?;
                roots.add(c).with_context(|| format!("[tls] client_ca: a certificate in `{path}` is not a CA"))?;
            }
            anyhow::ensure!(!roots.is_empty(), "[tls] client_ca: `{path}` holds no PEM certificate");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match cfg.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().with_context(|| format!("[tls] client_ca: `{path}`"))?;
            (builder.with_client_cert_verifier(verifier), Some((Arc::new(pem), cfg.client_auth)))
        }
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .with_context(|| format!("[tls] `{}` and `{}` are not a certificate and its key", cfg.cert, cfg.key))?;
    // The HTTP listeners speak HTTP/1.1 (axum without http2).
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Tls {
        cert_pem: Arc::new(cert_pem),
        key_pem: Arc::new(key_pem),
        client_ca,
        acceptor: TlsAcceptor::from(Arc::new(server)),
    }))
}

impl Tls {
    fn identity(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(self.cert_pem.as_slice(), self.key_pem.as_slice())
    }

    /// For a tonic server.
    pub(crate) fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        let config = tonic::transport::ServerTlsConfig::new().identity(self.identity());
        match &self.client_ca {
            None => config,
            Some((ca, auth)) => config
                .client_ca_root(tonic::transport::Certificate::from_pem(ca.as_slice()))
                .client_auth_optional(*auth == ClientAuth::Optional),
        }
    }

    /// For dialing another node: this node's certificate as its client identity, the peer
    /// verified against `client_ca` and the system's roots.
    pub(crate) fn client(&self) -> tonic::transport::ClientTlsConfig {
        let config = tonic::transport::ClientTlsConfig::new().identity(self.identity()).with_native_roots();
        match &self.client_ca {
            None => config,
            Some((ca, _)) => config.ca_certificate(tonic::transport::Certificate::from_pem(ca.as_slice())),
        }
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

/// The verified client certificate of a TLS connection, if it presented one.
pub(crate) fn peer_of<S>(stream: &TlsStream<S>) -> Option<PeerCert> {
    PeerCert::from_der(stream.get_ref().1.peer_certificates()?.first()?)
}

/// A service that puts its connection's [`PeerCert`] in every request's extensions: a fixed
/// one (the HTTP listeners, which did the handshake) or the one tonic's TLS recorded. Only the
/// server sets extensions, so a client cannot forge one.
#[derive(Debug, Clone)]
pub(crate) struct WithPeer<S> {
    inner: S,
    peer: Option<PeerCert>,
}

impl<S> WithPeer<S> {
    /// Requests to `inner` carry `peer`.
    pub(crate) fn new(inner: S, peer: Option<PeerCert>) -> Self {
        Self { inner, peer }
    }
}

impl<S, B> tower::Service<axum::http::Request<B>> for WithPeer<S>
where
    S: tower::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        let peer = self.peer.clone().or_else(|| {
            let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?;
            PeerCert::from_der(info.peer_certs()?.first()?)
        });
        match peer {
            Some(p) => req.extensions_mut().insert(p),
            None => req.extensions_mut().remove::<PeerCert>(),
        };
        self.inner.call(req)
    }
}

/// [`WithPeer`] for every service of a tonic server.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PeerLayer;

impl<S> tower::Layer<S> for PeerLayer {
    type Service = WithPeer<S>;

    fn layer(&self, inner: S) -> WithPeer<S> {
        WithPeer::new(inner, None)
    }
}
