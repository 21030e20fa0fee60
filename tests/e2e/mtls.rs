//! `[tls] client_ca`: every listener asks for a client certificate signed by it. Required, a
//! handshake without one (or with one from another CA) fails on the web, OTLP/HTTP, OTLP/gRPC
//! and CellWeights listeners; `[auth] cert_roles` turns a certificate into a caller with roles,
//! bound to the gateway id its CN names; a token still wins over the certificate. Optional, a
//! client without a certificate is served on its token, and an offered certificate is still
//! verified.

use crate::support::{Server, now_ns, server_span, traces};
use cellpilot_gateways::pb::WatchWeightsRequest;
use cellpilot_gateways::pb::cell_weights_client::CellWeightsClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use rcgen::{CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A certificate authority of the test.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM and as files.
pub(crate) struct Leaf {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA's certificate to `dir/<file>`.
    pub(crate) fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, self.pem()).unwrap();
        path
    }

    /// A certificate for subject CN `cn`, valid for server and client use on `localhost` and
    /// 127.0.0.1, written to `dir/<cn>.{crt,key}`.
    pub(crate) fn leaf(&self, dir: &Path, cn: &str) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), cert: cert_path, key: key_path }
    }
}

/// An HTTPS client trusting `ca`, presenting `me` when given.
pub(crate) fn https(ca: &Ca, me: Option<&Leaf>) -> reqwest::Client {
    let mut b =
        reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap());
    if let Some(me) = me {
        let pem = format!("{}{}", me.cert_pem, me.key_pem);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// A gRPC channel to `addr` over TLS trusting `ca`, presenting `me` when given; `Err` when the
/// handshake fails.
async fn grpc(addr: SocketAddr, ca: &Ca, me: Option<&Leaf>) -> Result<Channel, tonic::transport::Error> {
    cellpilot_server::install_crypto_provider();
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())).domain_name("localhost");
    if let Some(me) = me {
        tls = tls.identity(Identity::from_pem(&me.cert_pem, &me.key_pem));
    }
    Channel::from_shared(format!("https://localhost:{}", addr.port())).unwrap().tls_config(tls).unwrap().connect().await
}

fn bearer<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req
}

fn config(dir: &Path, server: &Leaf, ca: &Path, client_auth: &str) -> PathBuf {
    let file = dir.join("cellpilot.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[tls]
cert = "{}"
key = "{}"
client_ca = "{}"
client_auth = "{client_auth}"

[auth]
ingest_tokens = ["collector=1ng"]

[auth.cert_roles]
"CN=gw-eu-*" = "gateway"
"CN=viewer" = "read,ingest"
"#,
            server.cert.display(),
            server.key.display(),
            ca.display()
        ),
    )
    .unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_stand_for_their_cert_roles() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("cellpilot test CA"), Ca::new("someone else's CA"));
    let server_cert = ca.leaf(dir.path(), "localhost");
    let (gw, viewer) = (ca.leaf(dir.path(), "gw-eu-1"), ca.leaf(dir.path(), "viewer"));
    let impostor = other.leaf(dir.path(), "gw-eu-2");
    let file = config(dir.path(), &server_cert, &ca.write(dir.path(), "ca.pem"), "required");
    let data = tempfile::tempdir().unwrap();
    let server = Server::spawn(&["serve", "--config", file.to_str().unwrap()], data.path(), &[]);
    let web = |path: &str| format!("https://localhost:{}{path}", server.web.port());

    // Web: no certificate, or one from another CA, fails the handshake; the token alone is not
    // enough.
    for (who, client) in [("none", https(&ca, None)), ("impostor", https(&ca, Some(&impostor)))] {
        let r = client.get(web("/healthz")).bearer_auth("1ng").send().await;
        assert!(r.is_err(), "{who}: served without a valid client certificate: {:?}", r.map(|r| r.status()));
    }
    // A certificate stands for its cert_roles entry: viewer reads, a gateway may not.
    let r = https(&ca, Some(&viewer)).get(web("/api/v1/cells")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = https(&ca, Some(&gw)).get(web("/api/v1/cells")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("`read` role"));
    // A token sent wins over the certificate.
    let r = https(&ca, Some(&gw)).get(web("/api/v1/cells")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);

    // OTLP/HTTP: viewer holds ingest too; the gateway's certificate with the collector's token.
    let spans = || traces(None, (0..5).map(|_| server_span("m-cell", 200, now_ns(), 1_000_000)).collect());
    let post = |client: reqwest::Client, token: Option<&'static str>| {
        let body = spans();
        let url = format!("https://localhost:{}/v1/traces", server.http.port());
        async move {
            let mut req = client.post(url).header("content-type", "application/x-protobuf").body(body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req.send().await
        }
    };
    assert_eq!(post(https(&ca, Some(&viewer)), None).await.unwrap().status(), 200);
    assert_eq!(post(https(&ca, Some(&gw)), None).await.unwrap().status(), 403);
    assert_eq!(post(https(&ca, Some(&gw)), Some("1ng")).await.unwrap().status(), 200);
    assert!(post(https(&ca, None), Some("1ng")).await.is_err(), "OTLP/HTTP without a certificate");

    // OTLP/gRPC.
    let request = || ExportTraceServiceRequest::decode(spans().as_slice()).unwrap();
    let mut otlp = TraceServiceClient::new(grpc(server.grpc, &ca, Some(&viewer)).await.unwrap());
    otlp.export(request()).await.expect("OTLP/gRPC with the viewer's certificate");
    let mut otlp = TraceServiceClient::new(grpc(server.grpc, &ca, Some(&gw)).await.unwrap());
    assert_eq!(otlp.export(request()).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    let refused = match grpc(server.grpc, &ca, Some(&impostor)).await {
        Err(_) => true,
        Ok(ch) => TraceServiceClient::new(ch).export(bearer(request(), Some("1ng"))).await.is_err(),
    };
    assert!(refused, "OTLP/gRPC served a certificate from another CA");

    // CellWeights: the gateway's certificate watches as its own CN only.
    let mut cw = CellWeightsClient::new(grpc(server.control, &ca, Some(&gw)).await.unwrap());
    let own = cw.watch(WatchWeightsRequest { gateway_id: "gw-eu-1".into() }).await;
    assert!(own.is_ok(), "{:?}", own.err());
    let e = cw.watch(WatchWeightsRequest { gateway_id: "gw-eu-2".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.message().contains("gw-eu-2"), "{}", e.message());
    let refused = match grpc(server.control, &ca, None).await {
        Err(_) => true,
        Ok(ch) => CellWeightsClient::new(ch).watch(WatchWeightsRequest { gateway_id: "gw-eu-1".into() }).await.is_err(),
    };
    assert!(refused, "CellWeights served a client without a certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates_are_verified_when_offered() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("cellpilot test CA"), Ca::new("someone else's CA"));
    let server_cert = ca.leaf(dir.path(), "localhost");
    let viewer = ca.leaf(dir.path(), "viewer");
    let impostor = other.leaf(dir.path(), "viewer");
    let file = config(dir.path(), &server_cert, &ca.write(dir.path(), "ca.pem"), "optional");
    let data = tempfile::tempdir().unwrap();
    let server = Server::spawn(&["serve", "--config", file.to_str().unwrap()], data.path(), &[]);
    let url = format!("https://localhost:{}/v1/traces", server.http.port());
    let post = |client: reqwest::Client, token: Option<&'static str>| {
        let mut req = client
            .post(url.clone())
            .header("content-type", "application/x-protobuf")
            .body(traces(None, vec![server_span("o-cell", 200, now_ns(), 1_000_000)]));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(post(https(&ca, None), Some("1ng")).await.unwrap().status(), 200, "a token without a certificate");
    assert_eq!(post(https(&ca, None), None).await.unwrap().status(), 401, "neither");
    assert_eq!(post(https(&ca, Some(&viewer)), None).await.unwrap().status(), 200, "a certificate without a token");
    assert!(post(https(&ca, Some(&impostor)), Some("1ng")).await.is_err(), "an offered certificate is verified");
}
