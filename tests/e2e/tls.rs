//! `[tls]`: every listener serves TLS with the configured certificate (a self-signed one made
//! here): OTLP over HTTPS and over gRPC with TLS is counted, the dashboard and the control API
//! answer over TLS, plaintext to the same ports gets no answer, and a certificate that does not
//! match its key stops `serve` with a message naming the files.

use crate::support::{Server, now_ns, server_span, traces};
use cellpilot_gateways::pb::GetWeightsRequest;
use cellpilot_gateways::pb::cell_weights_client::CellWeightsClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// A self-signed certificate for `localhost`: (cert PEM, cert path, key path).
fn self_signed(dir: &Path) -> (String, PathBuf, PathBuf) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    (cert.pem(), cert_path, key_path)
}

async fn grpc_channel(addr: SocketAddr, ca_pem: &str) -> Channel {
    // This process links two rustls providers too (see the server's own call).
    cellpilot_server::install_crypto_provider();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name("localhost");
    Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("TLS gRPC to {addr}: {e:?}"))
}

#[tokio::test]
async fn every_listener_serves_tls() {
    let certs = tempfile::tempdir().unwrap();
    let (ca_pem, cert, key) = self_signed(certs.path());
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let server = Server::start(&[("CELLPILOT_TLS__CERT", cert_s), ("CELLPILOT_TLS__KEY", key_s)]);
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve("localhost", "127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap();

    // OTLP/HTTP over TLS: 10 spans, 3 failing.
    let now = now_ns();
    let spans = (0..10).map(|i| server_span("tls-cell", if i < 3 { 503 } else { 200 }, now, 2_000_000)).collect();
    let resp = https
        .post(format!("https://localhost:{}/v1/traces", server.http.port()))
        .header("content-type", "application/x-protobuf")
        .body(traces(None, spans))
        .send()
        .await
        .expect("OTLP/HTTP over TLS");
    assert_eq!(resp.status(), 200);

    // OTLP/gRPC over TLS: 10 more, 1 failing.
    let spans = (0..10).map(|i| server_span("tls-cell", if i < 1 { 500 } else { 200 }, now, 2_000_000)).collect();
    let request = ExportTraceServiceRequest::decode(traces(None, spans).as_slice()).unwrap();
    let mut otlp = TraceServiceClient::new(grpc_channel(server.grpc, &ca_pem).await);
    otlp.export(request).await.expect("OTLP/gRPC over TLS");

    // The dashboard's API over TLS counts both.
    let deadline = cellpilot_core::clock::monotonic() + Duration::from_secs(10);
    loop {
        let cells: serde_json::Value = https
            .get(format!("https://localhost:{}/api/v1/cells", server.web.port()))
            .send()
            .await
            .expect("web over TLS")
            .json()
            .await
            .unwrap();
        let cell = cells["cells"].as_array().into_iter().flatten().find(|c| c["cell"] == "tls-cell").cloned();
        if let Some(c) = cell
            && c["requests"] == 20
        {
            assert_eq!(c["errors"], 4);
            break;
        }
        assert!(cellpilot_core::clock::monotonic() < deadline, "20 requests never showed: {cells}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Gateways get weights over TLS.
    let mut control = CellWeightsClient::new(grpc_channel(server.control, &ca_pem).await);
    control.get(GetWeightsRequest {}).await.expect("CellWeights.Get over TLS");
    // And xDS.
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    let mut ads = AggregatedDiscoveryServiceClient::new(grpc_channel(server.xds.unwrap(), &ca_pem).await);
    let first = DiscoveryRequest {
        node: Some(envoy_types::pb::envoy::config::core::v3::Node { id: "tls-node".into(), ..Default::default() }),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        ..Default::default()
    };
    let mut stream =
        ads.stream_aggregated_resources(futures::stream::iter([first])).await.expect("ADS over TLS").into_inner();
    assert!(stream.message().await.expect("an xDS response over TLS").is_some());

    // The command-line clients trust the server's CA when told to, and refuse it otherwise.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cellpilot")).args(args).output().expect("cellpilot client")
    };
    let (web, ctl) =
        (format!("https://localhost:{}", server.web.port()), format!("https://localhost:{}", server.control.port()));
    let sql = "SELECT cell, sum(requests) AS requests FROM rollups GROUP BY cell";
    let out = cli(&["query", "--server", &web, "--ca", cert_s, sql]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("tls-cell"), "query over TLS: {stdout} {out:?}");
    let out = cli(&["weights", "--server", &ctl, "--ca", cert_s]);
    assert!(out.status.success(), "weights over TLS: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("version "), "{out:?}");
    for args in [["query", "--server", &web, sql], ["weights", "--server", &ctl, "--watch"]] {
        let out = cli(&args);
        assert!(!out.status.success(), "{args:?} trusted a self-signed certificate without --ca");
    }

    // Plaintext to a TLS port gets no HTTP answer.
    for addr in [server.web, server.http] {
        let plain = reqwest::Client::new().get(format!("http://{addr}/healthz")).send().await;
        assert!(plain.is_err(), "plaintext HTTP to {addr} was answered: {:?}", plain.map(|r| r.status()));
    }
    let plain = TraceServiceClient::connect(format!("http://{}", server.grpc)).await;
    let answered = match plain {
        Ok(mut c) => c.export(ExportTraceServiceRequest::default()).await.is_ok(),
        Err(_) => false,
    };
    assert!(!answered, "plaintext gRPC was answered");
}

#[test]
fn a_certificate_without_its_key_stops_serve() {
    let certs = tempfile::tempdir().unwrap();
    let (_, cert, _) = self_signed(certs.path());
    // The key of another certificate.
    let other = tempfile::tempdir().unwrap();
    let (_, _, wrong_key) = self_signed(other.path());
    let data = tempfile::tempdir().unwrap();
    let cases = [
        (wrong_key.clone(), "are not a certificate and its key"),
        (certs.path().join("missing.pem"), "missing.pem"),
        (cert.clone(), "holds no PEM private key"),
    ];
    for (key, message) in cases {
        let mut child = Server::command(&["serve"], data.path())
            .env("CELLPILOT_TLS__CERT", &cert)
            .env("CELLPILOT_TLS__KEY", &key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = cellpilot_core::clock::monotonic() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if cellpilot_core::clock::monotonic() > deadline {
                let _ = child.kill();
                panic!("serve kept running with key {}", key.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "serve started with key {}", key.display());
        assert!(stderr.contains(message), "key {}: `{message}` missing from {stderr}", key.display());
    }
}
