//! The `cellpilot` binary: parses the command line and wires the crates together.

mod bench;
mod client;
mod serve;

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
    Demo,
    /// Run read-only SQL on a running server and print the result as a table.
    Query {
        /// The statement, e.g. "SELECT cell, sum(requests) FROM rollups GROUP BY cell".
        sql: String,
        /// The server's web address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Bearer token, when the server has `[auth]` tokens.
        #[arg(long, env = "CELLPILOT_TOKEN")]
        token: Option<String>,
    },
    /// Measure a part of cellpilot against a baseline run in the same process.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// OTLP decode + map + aggregate throughput vs decode alone, and aggregator memory per series.
    Ingest {
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
        /// Timed passes over the generated requests (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CELLPILOT_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    match Cli::parse().command {
        Command::Serve { config } => {
            let config = cellpilot_core::config::Config::load(config.as_deref(), std::env::vars())
                .context("loading configuration")?;
            tokio::runtime::Runtime::new()?.block_on(serve::serve(config))
        }
        Command::Demo => {
            eprintln!(
                "`cellpilot demo` (simulated cells, gateway and incidents) is not built yet; \
                 run `cellpilot serve` and point an OpenTelemetry exporter at 127.0.0.1:4317."
            );
            std::process::exit(2);
        }
        Command::Bench { what: BenchWhat::Ingest { json, runs } } => bench::ingest::run(json, runs),
        Command::Query { sql, server, token } => {
            tokio::runtime::Runtime::new()?.block_on(client::query(&server, token.as_deref(), &sql))
        }
    }
}
