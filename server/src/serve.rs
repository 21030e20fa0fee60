//! `cellpilot serve`: binds every listener, starts the owned background tasks, prints the ready
//! line and shuts everything down on SIGINT/SIGTERM.

use crate::gate::Gate;
use crate::listen::{bind, grpc_server, incoming, serve_http};
use anyhow::Context;
use cellpilot_alerts::ControlView;
use cellpilot_control::Controller;
use cellpilot_control::StreamCaps;
use cellpilot_core::auth::Authenticator;
use cellpilot_core::clock::{SharedClock, SystemClock};
use cellpilot_core::config::Config;
use cellpilot_core::metrics::Metrics;
use cellpilot_gateways::CellWeightsService;
use cellpilot_query::{RollupStore, StoreSettings};
use cellpilot_web::AppState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

fn warn_if_open(what: &str, addr: SocketAddr, auth: &Authenticator) {
    if !addr.ip().is_loopback() && !auth.enabled() {
        tracing::warn!(%addr, "{what} listens beyond loopback with no [auth] tokens: anyone who can reach it may use it");
    }
}

/// What the alert rules see of the control loop.
struct ControlFacts(Arc<Controller>);

impl ControlView for ControlFacts {
    fn drained(&self) -> Vec<String> {
        let t = self.0.table();
        t.cells.into_iter().filter(|c| c.state == cellpilot_control::State::Drained).map(|c| c.cell).collect()
    }

    fn blocked(&self) -> std::collections::BTreeMap<String, String> {
        self.0.blocked()
    }

    fn finished_cutovers(&self, since_ms: i64) -> Vec<(String, Option<u64>, i64)> {
        self.0
            .cutovers()
            .into_iter()
            .filter(|c| c.source == cellpilot_control::Source::Observed)
            .filter(|c| c.completed_at_ms.is_some_and(|t| t >= since_ms))
            .filter_map(|c| Some((c.cell, c.decision_version, c.duration_ms?)))
            .collect()
    }

    fn leads(&self) -> bool {
        self.0.leads()
    }
}

/// Bound addresses of a running server; a listener this node's `[cluster] role` does not run
/// is `None`.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    /// OTLP/gRPC (ingest).
    pub otlp_grpc: Option<SocketAddr>,
    /// OTLP/HTTP (ingest).
    pub otlp_http: Option<SocketAddr>,
    /// Pages and the JSON API (only `/healthz`, `/readyz` and `/metrics` on an ingest node).
    pub web: SocketAddr,
    /// CellWeights (query).
    pub control: Option<SocketAddr>,
    /// xDS (ADS) (query), unless `[xds] listen` is empty.
    pub xds: Option<SocketAddr>,
    /// The internal Arrow Flight listener (an ingest node sharing an object store).
    pub cluster: Option<SocketAddr>,
}

impl std::fmt::Display for Addrs {
    /// The ready line's fields (`off` for a listener not running).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_string(), |a| a.to_string());
        write!(
            f,
            "otlp_grpc={} otlp_http={} web={} control={} xds={} cluster={}",
            show(self.otlp_grpc),
            show(self.otlp_http),
            self.web,
            show(self.control),
            show(self.xds),
            show(self.cluster)
        )
    }
}

/// A started server: its addresses and the tasks it owns.
pub struct Running {
    /// Where each listener is bound.
    pub addrs: Addrs,
    shutdown: CancellationToken,
    /// Servers and loops that run until the stop; one ending early is a failure.
    tasks: JoinSet<anyhow::Result<()>>,
    /// Work that ends by itself (warming the dashboards); a stop waits for it.
    warming: JoinSet<()>,
    ingest: Option<cellpilot_ingest::Handle>,
    _receivers: Bulkhead,
}

/// The OTLP receivers' own runtime: decoding a flood of exports keeps its worker threads busy,
/// never the ones serving pages, the API, CellWeights and the control loop.
struct Bulkhead(cellpilot_core::task::Pool);

impl Bulkhead {
    fn new() -> anyhow::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let pool = cellpilot_core::task::Pool::new("cellpilot-otlp", threads, None)
            .context("starting the OTLP receivers' runtime")?;
        Ok(Self(pool))
    }

    /// Runs `fut` there; the returned future ends with it.
    fn spawn<F>(&self, fut: F) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let run = self.0.run(fut);
        async move { run.await.context("an OTLP receiver task")? }
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    println!("cellpilot ready {}", running.addrs);
    use std::io::Write;
    std::io::stdout().flush()?;
    running.run_until(shutdown_signal()).await
}

/// Binds every listener of this node's role, replays the WAL (ingest) and starts every task;
/// ready when this returns.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let tls = crate::tls::load(&config.tls)?;
    let config = Arc::new(config);
    let clock: SharedClock = Arc::new(SystemClock);
    let metrics = Metrics::new();
    let auth = Authenticator::new(&config.auth)?;
    let shutdown = CancellationToken::new();
    let role = config.cluster.role;

    let mut bound: Vec<(&str, SocketAddr)> = Vec::new();
    let (grpc, http) = if role.ingests() {
        let grpc = bind("OTLP/gRPC", &config.ingest.grpc_listen).await?;
        let http = bind("OTLP/HTTP", &config.ingest.http_listen).await?;
        bound.extend([("OTLP/gRPC", grpc.local_addr()?), ("OTLP/HTTP", http.local_addr()?)]);
        (Some(grpc), Some(http))
    } else {
        (None, None)
    };
    let web = bind("web", &config.web.listen).await?;
    let web_addr = web.local_addr()?;
    bound.push(("web", web_addr));
    let (control, xds) = if role.queries() {
        let control = bind("control", &config.control.listen).await?;
        bound.push(("control", control.local_addr()?));
        let xds = match config.xds.listen.as_str() {
            "" => None,
            addr => Some(bind("xDS", addr).await?),
        };
        if let Some(x) = &xds {
            bound.push(("xDS", x.local_addr()?));
        }
        (Some(control), xds)
    } else {
        (None, None)
    };

    let windows = cellpilot_ingest::windows(&config.ingest);
    let store = Arc::new(RollupStore::open(StoreSettings::from_config(&config)?)?);
    let controller = Arc::new(
        Controller::open(&config.control, &config.storage.dir, clock.clone(), metrics.clone())?
            .stream_caps(StreamCaps::of(&config.xds)),
    );
    let state = AppState::new(config.clone(), clock.clone(), metrics.clone(), store, controller)?;
    let (store, controller, alerts) = (state.store.clone(), state.controller.clone(), state.alerts.clone());
    let (ready, health) = (state.ready.clone(), state.health.clone());
    if role.ingests() {
        store.set_open_source(Arc::new(windows.clone()));
    }

    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let cluster = crate::cluster::join(
        &config,
        &store,
        &controller,
        web_addr,
        (&auth, &metrics, tls.as_ref()),
        &shutdown,
        &mut tasks,
    )
    .await?;
    if let Some(addr) = cluster {
        bound.push(("cluster", addr));
    }
    for (what, addr) in &bound {
        warn_if_open(what, *addr, &auth);
    }

    // The dashboard answers (503 on /readyz) while the WAL is replayed.
    let stop = shutdown.clone();
    let web_tls = tls.clone();
    let limits = config.transport.clone();
    let app = if role.queries() { cellpilot_web::router(state) } else { cellpilot_web::ops_router(state) };
    let gate = Gate::new("web", &limits, &metrics);
    tasks.spawn(async move { serve_http(web, web_tls, app, limits, gate, stop).await.context("web server") });

    let receivers = Bulkhead::new()?;
    let ingest = match (grpc, http) {
        (Some(grpc), Some(http)) => {
            let parts = Receivers { grpc, http, windows: windows.clone(), tls: tls.clone() };
            Some(
                start_ingest(
                    &config,
                    parts,
                    &store,
                    &controller,
                    (&auth, &metrics, &clock, &health),
                    &receivers,
                    &shutdown,
                    &mut tasks,
                )
                .await?,
            )
        }
        _ => None,
    };

    if let Some(control) = control {
        let t = &config.transport;
        let weights_service =
            CellWeightsService::new(controller.clone(), clock.clone(), auth.clone(), shutdown.clone())
                .stall_after(t.keepalive_interval.0 + t.keepalive_timeout.0);
        let stop = shutdown.clone();
        // Gateways watch CellWeights here.
        let mut server = grpc_server(tls.as_ref(), &config.transport, true)?;
        let control = incoming(control, "control", &config.transport, &metrics);
        tasks.spawn(async move {
            server
                .add_service(weights_service.into_server())
                .serve_with_incoming_shutdown(control, stop.cancelled_owned())
                .await
                .context("control server")
        });
    }
    if let Some(xds) = xds {
        let t = &config.transport;
        let snapshots = Arc::new(cellpilot_gateways::Snapshots::new(controller.clone(), config.xds.clusters.clone()));
        let service = cellpilot_gateways::XdsService::new(snapshots, auth.clone(), shutdown.clone())
            .stall_after(t.keepalive_interval.0 + t.keepalive_timeout.0)
            .name_caps(&config.xds);
        let stop = shutdown.clone();
        // Envoy and proxyless gRPC clients follow the weights here.
        let mut server = grpc_server(tls.as_ref(), &config.transport, true)?;
        let xds = incoming(xds, "xds", &config.transport, &metrics);
        tasks.spawn(async move {
            server
                .add_service(service.into_server())
                .serve_with_incoming_shutdown(xds, stop.cancelled_owned())
                .await
                .context("xDS server")
        });
    }
    if role.queries() {
        let stop = shutdown.clone();
        let view: Arc<dyn ControlView> = Arc::new(ControlFacts(controller.clone()));
        let (st, cfg, m, c, a) = (store.clone(), config.clone(), metrics.clone(), clock.clone(), alerts.clone());
        tasks.spawn(async move {
            cellpilot_alerts::run(st, cfg, view, a, m, c, stop.cancelled_owned()).await;
            Ok(())
        });
        let stop = shutdown.clone();
        let (ctl, st, cfg, c) = (controller.clone(), store.clone(), config.clone(), clock.clone());
        // A query-only node sees no requests arrive: cut-overs complete on the gateways' acks.
        let activity: Arc<dyn cellpilot_core::store::CellActivity> = Arc::new(windows.clone());
        tasks.spawn(async move {
            cellpilot_control::run(ctl, st, cfg, c, activity, stop.cancelled_owned()).await;
            Ok(())
        });
    }
    let stop = shutdown.clone();
    let st = store.clone();
    tasks.spawn(async move {
        cellpilot_query::store::follow_others(st, stop.cancelled_owned()).await;
        Ok(())
    });

    let warming = if role.queries() {
        warm_dashboards(store.clone(), config.clone(), clock.clone(), shutdown.clone())
    } else {
        JoinSet::new()
    };
    ready.store(true, Ordering::Release);
    let addr_of = |what: &str| bound.iter().find(|(w, _)| *w == what).map(|(_, a)| *a);
    let addrs = Addrs {
        otlp_grpc: addr_of("OTLP/gRPC"),
        otlp_http: addr_of("OTLP/HTTP"),
        web: addr_of("web").context("the web listener")?,
        control: addr_of("control"),
        xds: addr_of("xDS"),
        cluster,
    };
    Ok(Running { addrs, shutdown, tasks, warming, ingest, _receivers: receivers })
}

/// The OTLP listeners and what they feed.
struct Receivers {
    grpc: TcpListener,
    http: TcpListener,
    windows: cellpilot_ingest::SharedAggregator,
    tls: Option<crate::tls::Tls>,
}

/// Starts ingest (it replays the WAL first), then serves its OTLP receivers (on the bulkhead) and
/// runs its window closer.
#[allow(clippy::too_many_arguments)]
async fn start_ingest(
    config: &Arc<Config>,
    Receivers { grpc, http, windows, tls }: Receivers,
    store: &Arc<RollupStore>,
    controller: &Arc<Controller>,
    (auth, metrics, clock, health): (&Authenticator, &Metrics, &SharedClock, &cellpilot_core::health::Health),
    receivers: &Bulkhead,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<cellpilot_ingest::Handle> {
    let deps = cellpilot_ingest::Deps {
        auth: auth.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
        health: health.clone(),
        sink: store.clone(),
        cutovers: Some(controller.clone()),
    };
    let ingest = cellpilot_ingest::start(config, windows, deps).await?;

    let stop = shutdown.clone();
    let routes = ingest.grpc_routes();
    let mut server = grpc_server(tls.as_ref(), &config.transport, false)?;
    let grpc = grpc.into_std()?;
    let (limits, m) = (config.transport.clone(), metrics.clone());
    tasks.spawn(receivers.spawn(async move {
        let grpc = TcpListener::from_std(grpc)?;
        server
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming(grpc, "otlp_grpc", &limits, &m), stop.cancelled_owned())
            .await
            .context("OTLP/gRPC server")
    }));
    let stop = shutdown.clone();
    let otlp_http = ingest.http_router();
    let (limits, m) = (config.transport.clone(), metrics.clone());
    let http = http.into_std()?;
    tasks.spawn(receivers.spawn(async move {
        let http = TcpListener::from_std(http)?;
        let gate = Gate::new("otlp_http", &limits, &m);
        serve_http(http, tls, otlp_http, limits, gate, stop).await.context("OTLP/HTTP server")
    }));
    let closer = ingest.closer(shutdown.clone().cancelled_owned());
    tasks.spawn(async move {
        closer.await;
        Ok(())
    });
    Ok(ingest)
}

/// Reads every SLO's period and the last day's cells once in the background, so the first page
/// an SRE opens finds the files decoded and their per-file sums derived (a cold 30-day report
/// decodes over a thousand files; warm, it reads a few thousand sums). A stop ends it between
/// two questions.
fn warm_dashboards(
    store: Arc<RollupStore>,
    config: Arc<Config>,
    clock: SharedClock,
    stop: CancellationToken,
) -> JoinSet<()> {
    let mut owner = JoinSet::new();
    owner.spawn_blocking(move || {
        let t = cellpilot_core::clock::monotonic();
        let now = clock.now_ms();
        for slo in &config.slo {
            if stop.is_cancelled() {
                return;
            }
            let from = now - slo.period.as_millis_i64();
            let req = cellpilot_dashboards::ReportRequest {
                store: &store,
                slo,
                settings: cellpilot_dashboards::ReportSettings::from_config(&config),
                drains: &[],
                from_ms: from,
                to_ms: now,
                now_ms: now,
            };
            // The report and the overview's card (which reads no histogram: its own sums).
            let warmed = cellpilot_dashboards::report(&req)
                .and_then(|_| cellpilot_dashboards::summary(&store, slo, from, now, now, false));
            if let Err(e) = warmed {
                tracing::warn!(slo = %slo.name, error = %cellpilot_core::status::Chain(&e), "warming the SLA report");
            }
        }
        // The last day's histograms, for the cell pages' 24 h range (over an object store, a
        // cold one fetches every 10-second file of the day: bench cluster's `p999_24h_s3_cold_ms`).
        if !stop.is_cancelled()
            && let Err(e) = cellpilot_query::cells::cells(&store, now - cellpilot_query::tier::DAY_MS, now, now)
        {
            tracing::warn!(error = %cellpilot_core::status::Chain(&e), "warming the last day's cells");
        }
        tracing::info!(ms = t.elapsed().as_millis() as u64, slos = config.slo.len(), "dashboards warmed");
    });
    owner
}

impl Running {
    /// Serves until `stop` resolves or a server fails, then shuts everything down in order.
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let Running { shutdown, mut tasks, mut warming, mut ingest, _receivers: receivers, .. } = self;
        let mut failure = None;
        tokio::select! {
            _ = stop => tracing::info!("shutting down"),
            Some(res) = tasks.join_next() => {
                failure = Some(match res {
                    Ok(Ok(())) => anyhow::anyhow!("a server stopped unexpectedly"),
                    Ok(Err(e)) => e,
                    Err(e) => anyhow::anyhow!(e),
                });
            }
        }
        shutdown.cancel();
        while let Some(res) = tasks.join_next().await {
            if let Ok(Err(e)) = res {
                tracing::warn!(error = %e, "during shutdown");
            }
        }
        warming.shutdown().await;
        // Every server is gone, so this is the last handle: finish the queued exports, sync the WAL.
        if let Some(ingest) = ingest.as_mut()
            && !tokio::task::block_in_place(|| ingest.shutdown())
        {
            tracing::warn!("an OTLP listener still holds the export path; it stops when that lets go");
        }
        drop(receivers);
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
