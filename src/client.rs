//! Command-line clients of a running server: `cellpilot query`, `cellpilot weights`.

use anyhow::{Context, bail};
use std::path::Path;

/// The PEM CA at `path`, read.
fn read_ca(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("--ca: reading {}", path.display()))
}

/// Posts `sql` to `server`'s `/api/v1/query`, asks for Arrow IPC and prints a table.
pub(crate) async fn query(server: &str, token: Option<&str>, ca: Option<&Path>, sql: &str) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/query", server.trim_end_matches('/'));
    let mut client = reqwest::Client::builder();
    if let Some(path) = ca {
        let cert = reqwest::Certificate::from_pem(&read_ca(path)?)
            .with_context(|| format!("--ca: {} is not a PEM certificate", path.display()))?;
        client = client.add_root_certificate(cert);
    }
    let mut req = client
        .build()?
        .post(&url)
        .header("accept", "application/vnd.apache.arrow.stream")
        .json(&serde_json::json!({ "sql": sql }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{status}: {msg}");
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)?;
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    eprintln!("{rows} row(s)");
    Ok(())
}

fn print_table(t: &cellpilot_gateways::pb::WeightTable) {
    use cellpilot_gateways::pb::CellState;
    let at = t.decided_at.as_ref().map_or(0, |ts| ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000);
    println!("version {} decided {}", t.version, cellpilot_core::time::format_rfc3339_ms(at));
    for c in &t.cells {
        let state =
            CellState::try_from(c.state).map(|s| s.as_str_name().trim_start_matches("CELL_STATE_").to_lowercase());
        println!("  {:<20} {:>5}  {:<10} {}", c.cell, c.weight, state.unwrap_or_else(|_| "?".into()), c.reason);
    }
}

/// Prints the CellWeights table (and with `watch`, every new version) from `server`.
pub(crate) async fn weights(server: &str, token: Option<&str>, ca: Option<&Path>, watch: bool) -> anyhow::Result<()> {
    use cellpilot_gateways::pb::cell_weights_client::CellWeightsClient;
    use cellpilot_gateways::pb::{GetWeightsRequest, WatchWeightsRequest};
    let mut endpoint = tonic::transport::Endpoint::from_shared(server.to_string())?;
    if server.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
        if let Some(path) = ca {
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read_ca(path)?));
        }
        endpoint = endpoint.tls_config(tls).context("TLS settings")?;
    }
    let channel = endpoint.connect().await.with_context(|| format!("connecting to {server}"))?;
    let auth: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> =
        token.map(|t| format!("Bearer {t}").parse()).transpose()?;
    let mut client = CellWeightsClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        if let Some(a) = &auth {
            req.metadata_mut().insert("authorization", a.clone());
        }
        Ok(req)
    });
    if !watch {
        print_table(&client.get(GetWeightsRequest {}).await?.into_inner());
        return Ok(());
    }
    let gateway = format!("cellpilot-cli-{}", std::process::id());
    let mut stream = client.watch(WatchWeightsRequest { gateway_id: gateway }).await?.into_inner();
    while let Some(t) = stream.message().await? {
        print_table(&t);
    }
    Ok(())
}
