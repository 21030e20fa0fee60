//! The `cellpilot` binary: parses the command line and wires the crates together.

mod client;

use cellpilot_server::serve;
use cellpilot_tools::{bench, demo, generate, loadgen};

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "cellpilot", version, about = "SLA analytics and cell-weight control for cell-based fleets")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every listener: OTLP (gRPC, HTTP), the dashboard/API and the control service.
    Serve {
        /// TOML configuration file; defaults need none. `CELLPILOT_SECTION__KEY` env vars override.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The whole product on embedded defaults with live simulated cells.
    Demo {
        /// Keep data here instead of a temporary directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Stop after this long, e.g. "2m" (default: until Ctrl-C).
        #[arg(long)]
        duration: Option<humantime::Duration>,
        /// Spans per second over all cells.
        #[arg(long, default_value_t = 200.0, value_parser = loadgen::parse_rps)]
        rps: f64,
        /// When the first incident starts.
        #[arg(long, default_value = "45s")]
        first_incident: humantime::Duration,
        /// Time between incidents.
        #[arg(long, default_value = "4m")]
        incident_every: humantime::Duration,
        /// How long an incident lasts.
        #[arg(long, default_value = "90s")]
        incident_for: humantime::Duration,
    },
    /// Send realistic spans for simulated cells through the OpenTelemetry SDK.
    Loadgen {
        /// OTLP endpoint: http://HOST:4317 for gRPC, http://HOST:4318 for HTTP.
        #[arg(long, default_value = "http://127.0.0.1:4317")]
        endpoint: String,
        /// Number of cells (`cell-00`, `cell-01`, ...).
        #[arg(long, default_value_t = 4, value_parser = loadgen::parse_cells)]
        cells: usize,
        /// Services (one tracer provider each).
        #[arg(long, default_value_t = 3, value_parser = loadgen::parse_services)]
        services: usize,
        /// Spans per second over all cells.
        #[arg(long, default_value_t = 500.0, value_parser = loadgen::parse_rps)]
        rps: f64,
        /// Stop after this long, e.g. "1m" (default: until Ctrl-C).
        #[arg(long)]
        duration: Option<humantime::Duration>,
        /// Transport.
        #[arg(long, value_enum, default_value = "grpc")]
        protocol: loadgen::Transport,
        /// Error burst CELL@START+DURATION:RATE, e.g. cell-01@30s+1m:0.2 (repeatable).
        #[arg(long)]
        fail: Vec<loadgen::Fail>,
        /// Bearer token, when the server has `[auth]` tokens.
        #[arg(long, env = "CELLPILOT_TOKEN")]
        token: Option<String>,
    },
    /// Run read-only SQL on a running server and print the result as a table.
    Query {
        /// The statement, e.g. "SELECT cell, sum(requests) FROM rollups GROUP BY cell".
        sql: String,
        /// The server's web address (https:// when it serves `[tls]`).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Bearer token, when the server has `[auth]` tokens.
        #[arg(long, env = "CELLPILOT_TOKEN")]
        token: Option<String>,
        /// PEM CA certificate to trust for an https:// server, besides the system's.
        #[arg(long)]
        ca: Option<std::path::PathBuf>,
    },
    /// Show the cell-weight table over gRPC, as a gateway sees it.
    Weights {
        /// Keep watching and print every new version.
        #[arg(long)]
        watch: bool,
        /// The CellWeights gRPC address (https:// when it serves `[tls]`).
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        server: String,
        /// Bearer token, when the server has `[auth]` tokens.
        #[arg(long, env = "CELLPILOT_TOKEN")]
        token: Option<String>,
        /// PEM CA certificate to trust for an https:// server, besides the system's.
        #[arg(long)]
        ca: Option<std::path::PathBuf>,
    },
    /// Write synthetic history straight into every storage tier of a data directory.
    Generate {
        /// Data directory (the server's `[storage] dir`).
        #[arg(long, required_unless_present = "url")]
        data_dir: Option<PathBuf>,
        /// An object store instead (the server's `[storage] url`, `s3://bucket/prefix`); endpoint,
        /// region and keys come from the `AWS_*` variables.
        #[arg(long, conflicts_with = "data_dir")]
        url: Option<String>,
        /// The node the history is written as in the object store (`nodes/<node>/`).
        #[arg(long, default_value = "history")]
        node: String,
        /// Days of history (5-minute and hourly tiers).
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Hours of finest-tier history, ending now.
        #[arg(long, default_value_t = 24)]
        fine_hours: u32,
        /// Cells (`cell-00`, `cell-01`, ...).
        #[arg(long, default_value_t = 10)]
        cells: usize,
        /// Services per cell.
        #[arg(long, default_value_t = 10)]
        services: usize,
        /// Routes per service.
        #[arg(long, default_value_t = 10)]
        routes: usize,
        /// Requests per second per series.
        #[arg(long, default_value_t = 1.0)]
        rps: f64,
        /// Error bursts: CELL@AGO+DURATION:RATE, e.g. cell-03@2h+10m:0.2 (repeatable).
        #[arg(long)]
        incident: Vec<String>,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Measure a part of cellpilot against a baseline run in the same process.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
        /// Run the bench with `--json` and write its figures as its section of
        /// docs/benchmarks.md (run from the repository root).
        #[arg(long, global = true)]
        markdown: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// Server-side render time of `/` and `/sla/{slo}` for 100 cells over 24 h.
    Web {
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
        /// Renders of each page (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Acknowledged spans/s of a `serve` on loopback over OTLP/HTTP, gRPC and gRPC+gzip, from a
    /// sender that only replays pre-encoded requests.
    E2e {
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
        /// Runs of each phase (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Length of each phase.
        #[arg(long, default_value = "5s")]
        load: humantime::Duration,
    },
    /// Fresh on-time exports from N senders for minutes against `serve` on its defaults: spans
    /// counted per second, refused fraction, WAL bytes, checkpoint age and memory every 10 s, and
    /// at the end the server's count against every acknowledged span.
    Sustained {
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
        /// Length of the run, in seconds.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// Concurrent senders.
        #[arg(long, default_value_t = 8)]
        senders: usize,
        /// Spans/s the senders aim at together (default: as fast as they are answered).
        #[arg(long)]
        rate: Option<f64>,
        /// Which transports the senders use.
        #[arg(long, value_enum, default_value = "both")]
        transport: cellpilot_tools::bench::sustained::Transports,
    },
    /// Decision-to-delivery latency with 100 gateways watching CellWeights and 100 xDS nodes over gRPC.
    Control {
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
        /// Drains to time.
        #[arg(long, default_value_t = 200)]
        drains: usize,
    },
    /// Two ingest nodes and a query node sharing a local S3 server (`s3s-fs` on PATH): spans/s
    /// per ingest node, and the 24 h per-cell P99.9 over the object store vs local disk.
    Cluster {
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
        /// Timed runs of each query (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// A few seconds of load and a few hundred series: checks the benchmark runs, measures nothing.
        #[arg(long)]
        small: bool,
    },
    /// Typed per-cell queries over 30 days of generated history vs single-tier baselines, and
    /// WAL-on vs WAL-off ingest throughput.
    Query {
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
        /// Timed runs of each query (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// OTLP decode + map + aggregate throughput vs decode alone, and aggregator memory per series.
    Ingest {
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
        /// Timed passes over the generated requests (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Measure only the memory of this many cells' series and print it (the benchmark runs
        /// each memory point in a fresh process of its own, so freed memory is not reused).
        #[arg(long, hide = true)]
        memory_cells: Option<usize>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cellpilot_server::install_crypto_provider();
    // Servers narrate at info; one-shot tools only speak up when something is wrong.
    let default = match cli.command {
        Command::Serve { .. } | Command::Demo { .. } => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CELLPILOT_LOG").unwrap_or_else(|_| default.into()),
        )
        .init();
    match cli.command {
        Command::Serve { config } => {
            let config = cellpilot_core::config::Config::load(config.as_deref(), std::env::vars())
                .context("loading configuration")?;
            tokio::runtime::Runtime::new()?.block_on(serve::serve(config))
        }
        Command::Demo { data_dir, duration, rps, first_incident, incident_every, incident_for } => {
            let options = demo::Options {
                data_dir,
                duration: duration.map(Into::into),
                rps,
                first_incident: first_incident.into(),
                incident_every: incident_every.into(),
                incident_for: incident_for.into(),
            };
            tokio::runtime::Runtime::new()?.block_on(demo::run(options))
        }
        Command::Loadgen { endpoint, cells, services, rps, duration, protocol, fail, token } => {
            let load = loadgen::Load {
                endpoint,
                transport: protocol,
                cells: (0..cells).map(|i| format!("cell-{i:02}")).collect(),
                services,
                rps,
                duration: duration.map(Into::into),
                fails: fail,
                token,
                weights: None,
            };
            loadgen::run_with_progress(&load)
        }
        Command::Bench { what, markdown: true } => bench_markdown(bench_name(&what)),
        Command::Bench { what: BenchWhat::Ingest { memory_cells: Some(cells), .. }, .. } => {
            bench::ingest::memory(cells)
        }
        Command::Bench { what: BenchWhat::Ingest { json, runs, memory_cells: None }, .. } => {
            bench::ingest::run(json, runs)
        }
        Command::Bench { what: BenchWhat::Query { json, runs }, .. } => bench::query::run(json, runs),
        Command::Bench { what: BenchWhat::Cluster { json, runs, small }, .. } => bench::cluster::run(
            json,
            runs,
            if small { bench::cluster::Size::SMALL } else { bench::cluster::Size::FULL },
        ),
        Command::Bench { what: BenchWhat::Control { json, drains }, .. } => bench::control::run(json, drains),
        Command::Bench { what: BenchWhat::E2e { json, runs, load }, .. } => bench::e2e::run(json, runs, load.into()),
        Command::Bench { what: BenchWhat::Web { json, runs }, .. } => bench::web::run(json, runs),
        Command::Bench { what: BenchWhat::Sustained { json, seconds, senders, rate, transport }, .. } => {
            bench::sustained::run(json, bench::sustained::Plan { seconds, senders, rate, transports: transport })
        }
        Command::Generate { data_dir, url, node, days, fine_hours, cells, services, routes, rps, incident, seed } => {
            let storage = generate::storage(data_dir, url, &node)?;
            let now = cellpilot_core::clock::Clock::now_ms(&cellpilot_core::clock::SystemClock);
            let incidents = incident.iter().map(|i| generate::Incident::parse(i, now)).collect::<Result<_, _>>()?;
            let plan = generate::Plan {
                days,
                cells,
                services,
                routes,
                rps,
                fine_hours,
                incidents,
                seed,
                ..generate::Plan::ending_before(storage, now)
            };
            let t = cellpilot_core::clock::monotonic();
            let g = generate::run(&plan)?;
            println!(
                "generated {} requests: {} rows in the 10s tier, {} in 5m, {} in 1h ({:.1}s) under {}",
                g.requests,
                g.fine_rows,
                g.five_min_rows,
                g.hour_rows,
                t.elapsed().as_secs_f64(),
                plan.storage.describe()
            );
            Ok(())
        }
        Command::Weights { watch, server, token, ca } => {
            tokio::runtime::Runtime::new()?.block_on(client::weights(&server, token.as_deref(), ca.as_deref(), watch))
        }
        Command::Query { sql, server, token, ca } => {
            tokio::runtime::Runtime::new()?.block_on(client::query(&server, token.as_deref(), ca.as_deref(), &sql))
        }
    }
}

/// The name a bench goes by on the command line (and in docs/benchmarks.md).
fn bench_name(what: &BenchWhat) -> &'static str {
    match what {
        BenchWhat::Web { .. } => "web",
        BenchWhat::E2e { .. } => "e2e",
        BenchWhat::Ingest { .. } => "ingest",
        BenchWhat::Query { .. } => "query",
        BenchWhat::Cluster { .. } => "cluster",
        BenchWhat::Control { .. } => "control",
        BenchWhat::Sustained { .. } => "sustained",
    }
}

/// `bench --markdown NAME ...`: this binary runs `bench NAME ... --json`, and its last line
/// becomes NAME's section of docs/benchmarks.md.
fn bench_markdown(name: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--markdown").collect();
    let mut child_args = args.clone();
    if !child_args.iter().any(|a| a == "--json") {
        child_args.push("--json".into());
    }
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(&child_args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the bench")?;
    anyhow::ensure!(out.status.success(), "bench {name} failed ({})", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).context("the bench printed no figures")?;
    let figures: serde_json::Value = serde_json::from_str(last).context("the bench's last line is not JSON")?;
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_string(), |o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let now = cellpilot_core::clock::Clock::now_ms(&cellpilot_core::clock::SystemClock);
    let provenance = bench::markdown::Provenance {
        command: format!("cellpilot {}", args.join(" ")),
        date: cellpilot_core::time::format_rfc3339_ms(now).chars().take(10).collect(),
        commit,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
    };
    let path = std::path::Path::new("docs/benchmarks.md");
    bench::markdown::write(path, name, &provenance, &figures)?;
    println!("{last}");
    eprintln!("wrote the `bench {name}` section of {}", path.display());
    Ok(())
}
