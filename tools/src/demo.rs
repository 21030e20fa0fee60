//! `cellpilot demo`: the whole product on one laptop — `serve` on embedded defaults (a temp data
//! dir unless `--data-dir`), four simulated cells in two regions sending real OTLP through the
//! OpenTelemetry SDK, a simulated gateway that watches CellWeights over gRPC, splits users by the
//! weights and Acks each version, an incident every few minutes (drain, cut-over, restore), the
//! URLs to look at and a live status line.

use crate::loadgen::{self, Fail, Load, Progress, Transport};
use cellpilot_core::config::Config;
use cellpilot_server::serve;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The simulated cells: two per region.
pub const CELLS: [&str; 4] = ["bj-unit-01", "bj-unit-02", "sh-unit-01", "sh-unit-02"];

/// Demo settings (the defaults make a good first impression; tests shorten them).
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the data goes (`None`: a temporary directory removed at the end).
    pub data_dir: Option<PathBuf>,
    /// Stop after this long (`None`: until Ctrl-C).
    pub duration: Option<Duration>,
    /// Spans per second over all cells.
    pub rps: f64,
    /// First incident this long after start.
    pub first_incident: Duration,
    /// Then one every...
    pub incident_every: Duration,
    /// ...lasting this long, at 20 % errors, on the next cell in turn.
    pub incident_for: Duration,
}

/// The incident schedule: cells take turns.
fn incidents(o: &Options) -> Vec<Fail> {
    (0..1000u32)
        .map(|k| {
            let from = o.first_incident + o.incident_every * k;
            Fail { cell: CELLS[k as usize % CELLS.len()].to_string(), from, until: from + o.incident_for, rate: 0.2 }
        })
        .collect()
}

/// One line per cell from `/api/v1/cells`: requests/s, error rate, P99.9.
async fn status(client: &reqwest::Client, web: std::net::SocketAddr, started_ms: i64) -> String {
    // Rates over the last minute, or since the start when that is shorter.
    let from = (now_ms() - 60_000).max(started_ms);
    let secs = ((now_ms() - from) as f64 / 1000.0).max(1.0);
    let url = format!("http://{web}/api/v1/cells?from={from}");
    let Ok(resp) = client.get(url).send().await else { return "dashboard unreachable".into() };
    let Ok(v) = resp.json::<serde_json::Value>().await else { return "no data yet".into() };
    let cells = v["cells"].as_array().cloned().unwrap_or_default();
    if cells.is_empty() {
        return "waiting for the first spans".into();
    }
    cells
        .iter()
        .map(|c| {
            format!(
                "{} {} w{} {:.0}/s {:.1}% p99.9 {:.0}ms",
                c["cell"].as_str().unwrap_or("?"),
                c["state"].as_str().unwrap_or("?"),
                c["weight"].as_u64().unwrap_or(0),
                c["requests"].as_f64().unwrap_or(0.0) / secs,
                c["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
                c["p999_ms"].as_f64().unwrap_or(0.0),
            )
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A gateway: applies every table it is sent and Acks it.
async fn gateway_loop(control: String, weights: loadgen::Weights) {
    use cellpilot_gateways::pb::cell_weights_client::CellWeightsClient;
    use cellpilot_gateways::pb::{AckRequest, WatchWeightsRequest};
    let run = async {
        let mut client = CellWeightsClient::connect(control).await?;
        let mut stream = client.watch(WatchWeightsRequest { gateway_id: "demo-gateway".into() }).await?.into_inner();
        use rand::{RngExt, SeedableRng};
        let mut jitter = rand::rngs::SmallRng::seed_from_u64(9);
        while let Some(t) = stream.message().await? {
            // A real gateway takes a moment to push a new table to its proxies.
            tokio::time::sleep(std::time::Duration::from_millis(jitter.random_range(200..800))).await;
            {
                let mut w = weights.write().unwrap_or_else(|e| e.into_inner());
                w.clear();
                w.extend(t.cells.iter().map(|c| (c.cell.clone(), c.weight)));
            }
            client.ack(AckRequest { gateway_id: "demo-gateway".into(), version: t.version, applied_at: None }).await?;
        }
        anyhow::Ok(())
    };
    if let Err(e) = run.await {
        tracing::warn!(error = %e, "the demo gateway stopped");
    }
}

fn now_ms() -> i64 {
    cellpilot_core::clock::Clock::now_ms(&cellpilot_core::clock::SystemClock)
}

/// Runs the demo until the duration passes or Ctrl-C.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let mut config = Config::load(None, std::env::vars())?;
    if config.slo.is_empty() {
        // An SLO over every demo cell, so alerts fire and the SLA page has a gap to explain.
        config.slo.push(cellpilot_core::config::SloConfig {
            name: "demo".into(),
            availability: 0.999,
            latency_p999_ms: Some(2_500.0),
            cutover_ms: Some(2_000),
            period: cellpilot_core::config::Dur::days(30),
            selector: Default::default(),
        });
    }
    let temp = match &options.data_dir {
        Some(dir) => {
            config.storage.dir = dir.clone();
            None
        }
        None => {
            let t = tempfile::Builder::new().prefix("cellpilot-demo-").tempdir()?;
            config.storage.dir = t.path().to_path_buf();
            Some(t)
        }
    };
    let running = serve::start(config.clone()).await?;
    let a = running.addrs;
    println!("cellpilot ready {a}");
    println!();
    println!(
        "  cellpilot demo: {} simulated cells in 2 regions, {:.0} spans/s over real OTLP/gRPC",
        CELLS.len(),
        options.rps
    );
    println!("  dashboard  http://{}/", a.web);
    println!("  cells      http://{}/api/v1/cells    weights  http://{}/api/v1/weights", a.web, a.web);
    println!("  cut-overs  http://{}/api/v1/cutovers  decisions  http://{}/api/v1/decisions", a.web, a.web);
    let (control, otlp) = (
        anyhow::Context::context(a.control, "the demo runs every role")?,
        anyhow::Context::context(a.otlp_grpc, "the demo runs every role")?,
    );
    println!("  gateway    a simulated gateway watches CellWeights on {control} and splits users by weight");
    println!("  alerts     http://{}/api/v1/alerts      SLA gap  http://{}/api/v1/sla/demo", a.web, a.web);
    println!(
        "  SQL        cellpilot query --server http://{} \"SELECT cell, sum(errors) FROM rollups GROUP BY cell\"",
        a.web
    );
    println!("  data dir   {}", config.storage.dir.display());
    println!(
        "  incidents  every {} for {} at 20 % errors, cells in turn, first after {}",
        humantime::format_duration(options.incident_every),
        humantime::format_duration(options.incident_for),
        humantime::format_duration(options.first_incident)
    );
    println!();
    use std::io::Write;
    std::io::stdout().flush()?;

    // The simulated gateway: watches CellWeights, splits users by the weights, Acks each version.
    let weights: loadgen::Weights = Arc::default();
    let mut gateway = tokio::task::JoinSet::new();
    gateway.spawn(gateway_loop(format!("http://{control}"), weights.clone()));
    let load = Load {
        endpoint: format!("http://{otlp}"),
        transport: Transport::Grpc,
        cells: CELLS.iter().map(|c| c.to_string()).collect(),
        services: 3,
        rps: options.rps,
        duration: None,
        fails: incidents(&options),
        token: None,
        weights: Some(weights.clone()),
    };
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s) = (progress.clone(), stop.clone());
    // The gRPC exporter needs this runtime's reactor on its thread.
    let runtime = tokio::runtime::Handle::current();
    let sender = std::thread::Builder::new().name("cellpilot-demo-load".into()).spawn(move || {
        let _entered = runtime.enter();
        loadgen::run(&load, p, &s)
    })?;

    let sent: Arc<std::sync::Mutex<Option<_>>> = Arc::default();
    let progress_end = progress.clone();
    let started = cellpilot_core::clock::monotonic();
    let started_ms = now_ms();
    let tty = std::io::stderr().is_terminal();
    let web = a.web;
    let until = async {
        let client = reqwest::Client::new();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
        let signal = serve::shutdown_signal();
        tokio::pin!(signal);
        let mut lines = 0u64;
        loop {
            tokio::select! {
                _ = &mut signal => break,
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
                _ = tick.tick() => {
                    let line = format!("[{:>4}s] {}  ·  {}", started.elapsed().as_secs(), status(&client, web, started_ms).await, loadgen::progress_line(&progress, started.elapsed()));
                    if tty {
                        eprint!("\r\x1b[2K{line}");
                    } else if lines.is_multiple_of(5) {
                        eprintln!("{line}");
                    }
                    lines += 1;
                }
            }
        }
        if tty {
            eprintln!();
        }
        // Stop and flush the load before the servers go away.
        stop.store(true, Ordering::Relaxed);
        let joined = cellpilot_core::task::blocking(move || sender.join()).await;
        *sent.lock().unwrap_or_else(|e| e.into_inner()) = Some(joined);
    };
    running.run_until(until).await?;
    gateway.shutdown().await;
    let joined = sent.lock().unwrap_or_else(|e| e.into_inner()).take();
    match joined {
        Some(Ok(Ok(r))) => r?,
        Some(_) => anyhow::bail!("the load generator failed"),
        None => {}
    }
    eprintln!("{}", loadgen::progress_line(&progress_end, started.elapsed()));
    drop(temp);
    Ok(())
}
