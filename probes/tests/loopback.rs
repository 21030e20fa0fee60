//! Probes against real servers on loopback: a TCP listener that stops and comes back, and an
//! axum `/healthz` whose status and JSON body flip; the states follow the thresholds, failures
//! say why, and a server that accepts and never answers costs one probe its timeout.

// Tests spawn freely and join or abort what they spawn before they end.
#![allow(clippy::disallowed_methods)]

use cellpilot_core::clock::{SharedClock, SystemClock};
use cellpilot_core::config::{Config, Dur, ProbeCheck, ProbeKind, ProbeTarget};
use cellpilot_probes::{Probes, State, TargetView};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn target(cell: &str, kind: ProbeKind, name: &str, at: &str, checks: Vec<ProbeCheck>) -> ProbeTarget {
    let (address, url) =
        if kind == ProbeKind::Http { (None, Some(at.to_string())) } else { (Some(at.to_string()), None) };
    ProbeTarget { cell: cell.into(), kind, name: Some(name.into()), address, url, service: None, checks }
}

fn config(targets: Vec<ProbeTarget>) -> Config {
    let mut c = Config::default();
    c.probes.interval = Dur(Duration::from_millis(100));
    c.probes.timeout = Dur(Duration::from_millis(80));
    c.probes.unhealthy_threshold = 3;
    c.probes.healthy_threshold = 2;
    c.probes.targets = targets;
    c.validate().expect("valid");
    c
}

/// Runs the prober until `until` holds for its targets (or 10 s pass).
async fn wait_for(probes: &Arc<Probes>, what: &str, until: impl Fn(&[TargetView]) -> bool) -> Vec<TargetView> {
    let deadline = cellpilot_core::clock::monotonic() + Duration::from_secs(10);
    loop {
        let t = probes.targets();
        if until(&t) {
            return t;
        }
        assert!(cellpilot_core::clock::monotonic() < deadline, "{what}: {t:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn state_of(t: &[TargetView], name: &str) -> State {
    t.iter().find(|x| x.name == name).map(|x| x.state).expect(name)
}

#[tokio::test]
async fn a_tcp_target_goes_unhealthy_when_its_listener_stops_and_healthy_when_it_returns() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let probes = Arc::new(
        Probes::new(&config(vec![target("c1", ProbeKind::Tcp, "db", &addr.to_string(), vec![])]), clock).unwrap(),
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(probes.clone().run(stop.clone().cancelled_owned()));

    let t = wait_for(&probes, "healthy while listening", |t| state_of(t, "db") == State::Healthy).await;
    assert!(t[0].attempts >= 2 && t[0].failures == 0, "{t:?}");
    assert!(probes.failing_cells(0.5).is_empty());

    drop(listener);
    let t = wait_for(&probes, "unhealthy once closed", |t| state_of(t, "db") == State::Unhealthy).await;
    let error = t[0].last_error.clone().unwrap_or_default();
    assert!(error.to_lowercase().contains("refused"), "the failure says why: {error}");
    let failing = probes.failing_cells(0.5);
    assert_eq!(failing["c1"].failing, [("db".to_string(), error)]);
    assert_eq!(failing["c1"].known, 1);

    let _back = std::net::TcpListener::bind(addr).unwrap();
    wait_for(&probes, "healthy again", |t| state_of(t, "db") == State::Healthy).await;
    assert!(probes.failing_cells(0.5).is_empty());
    stop.cancel();
    run.await.unwrap();
}

#[tokio::test]
async fn an_http_target_follows_its_status_and_its_checked_fields() {
    // 0: healthy body; 1: backlog over its bound; 2: 503; 3: body not JSON; 4: body over 64 KiB.
    let mode = Arc::new(AtomicU32::new(0));
    let m = mode.clone();
    let app = axum::Router::new().route(
        "/healthz",
        axum::routing::get(move || {
            let m = m.clone();
            async move {
                use axum::http::StatusCode;
                match m.load(Ordering::Relaxed) {
                    0 => (StatusCode::OK, r#"{"db":{"available_ratio":0.8},"mq_backlog":12}"#.to_string()),
                    1 => (StatusCode::OK, r#"{"db":{"available_ratio":0.8},"mq_backlog":52000}"#.to_string()),
                    2 => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
                    3 => (StatusCode::OK, "<html>ok</html>".to_string()),
                    _ => (StatusCode::OK, "x".repeat(65 * 1024)),
                }
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/healthz?cell=c1", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let checks = vec![
        ProbeCheck { field: "db.available_ratio".into(), min: Some(0.2), max: None },
        ProbeCheck { field: "mq_backlog".into(), min: None, max: Some(10000.0) },
    ];
    let clock: SharedClock = Arc::new(SystemClock);
    let probes =
        Arc::new(Probes::new(&config(vec![target("c1", ProbeKind::Http, "healthz", &url, checks)]), clock).unwrap());
    let stop = CancellationToken::new();
    let run = tokio::spawn(probes.clone().run(stop.clone().cancelled_owned()));

    let t = wait_for(&probes, "healthy", |t| state_of(t, "healthz") == State::Healthy).await;
    assert_eq!(t[0].last_values.get("mq_backlog"), Some(&12.0));
    for (m, why) in [(1, "mq_backlog 52000 > 10000"), (2, "HTTP 503"), (3, "not JSON"), (4, "over 64 KiB")] {
        mode.store(0, Ordering::Relaxed);
        wait_for(&probes, "healthy between", |t| state_of(t, "healthz") == State::Healthy).await;
        mode.store(m, Ordering::Relaxed);
        let t = wait_for(&probes, why, |t| state_of(t, "healthz") == State::Unhealthy).await;
        let error = t[0].last_error.clone().unwrap_or_default();
        assert!(error.contains(why), "mode {m}: {error}");
    }
    stop.cancel();
    run.await.unwrap();
    server.abort();
}

#[tokio::test]
async fn a_target_that_accepts_and_never_answers_fails_within_the_timeout() {
    // Accepts (the kernel's backlog does) and never writes a byte.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/healthz", silent.local_addr().unwrap());
    let clock: SharedClock = Arc::new(SystemClock);
    let probes = Arc::new(Probes::new(&config(vec![target("c1", ProbeKind::Http, "h", &url, vec![])]), clock).unwrap());
    let stop = CancellationToken::new();
    let run = tokio::spawn(probes.clone().run(stop.clone().cancelled_owned()));
    let t = wait_for(&probes, "unhealthy", |t| state_of(t, "h") == State::Unhealthy).await;
    assert!(t[0].last_error.as_deref().is_some_and(|e| e.contains("no answer within 80ms")), "{t:?}");
    // The timeout (80 ms) is under the interval (100 ms): no turn found its last probe running.
    assert!(t[0].last_latency_us.is_some_and(|us| (80_000..1_000_000).contains(&us)), "{t:?}");
    stop.cancel();
    run.await.unwrap();
    drop(silent);
}
