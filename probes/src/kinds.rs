//! One probe of one target: TCP connect, or an HTTP GET read to 64 KiB with its body checks.
//! Every probe ends within the timeout; every failure is an [`Outcome`] saying why, never a panic.

use crate::target::Target;
use cellpilot_core::config::ProbeKind;
use std::time::Duration;

/// The most of an HTTP body a probe reads; a longer body fails the probe.
pub const MAX_BODY: usize = 64 * 1024;

/// What one probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Healthy.
    pub ok: bool,
    /// How long it took, µs.
    pub latency_us: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// The checked fields' values (http).
    pub values: Vec<(String, f64)>,
}

impl Outcome {
    /// A failure that took no time.
    pub fn failed(why: &str) -> Self {
        Outcome { ok: false, latency_us: 0, error: Some(why.to_string()), values: Vec::new() }
    }
}

/// Probes `target`, giving up after `timeout`.
pub(crate) async fn probe(target: &Target, http: &reqwest::Client, timeout: Duration) -> Outcome {
    let started = cellpilot_core::clock::monotonic();
    let result = match tokio::time::timeout(timeout, attempt(target, http)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}", humanize(timeout))),
    };
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match result {
        Ok(values) => Outcome { ok: true, latency_us, error: None, values },
        Err(e) => Outcome { ok: false, latency_us, error: Some(e), values: Vec::new() },
    }
}

async fn attempt(target: &Target, http: &reqwest::Client) -> Result<Vec<(String, f64)>, String> {
    match target.kind {
        ProbeKind::Tcp => {
            tokio::net::TcpStream::connect(&target.at).await.map_err(|e| e.to_string())?;
            Ok(Vec::new())
        }
        ProbeKind::Http => {
            let mut resp = http.get(&target.at).send().await.map_err(|e| chain(&e))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(format!("HTTP {}", status.as_u16()));
            }
            if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
                return Err(format!("the body is over {} KiB", MAX_BODY / 1024));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| chain(&e))? {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(format!("the body is over {} KiB", MAX_BODY / 1024));
                }
                body.extend_from_slice(&chunk);
            }
            crate::check::run(&target.checks, &body)
        }
        // `target::targets` refuses the kinds not built yet.
        kind => Err(format!("{} probes are not available in this build", kind.as_str())),
    }
}

/// reqwest's message with its causes (`... : tcp connect error: Connection refused (os error 111)`).
fn chain(e: &reqwest::Error) -> String {
    cellpilot_core::status::Chain(e).to_string()
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}
