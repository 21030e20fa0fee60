//! Command-line clients of a running server: `cellpilot query`.

use anyhow::{Context, bail};

/// Posts `sql` to `server`'s `/api/v1/query`, asks for Arrow IPC and prints a table.
pub(crate) async fn query(server: &str, token: Option<&str>, sql: &str) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/query", server.trim_end_matches('/'));
    let mut req = reqwest::Client::new()
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
