//! Delivery off the evaluation path: one task and one bounded queue per receiver
//! (Alertmanager, each webhook). Evaluation only offers a batch to every queue, never waits on
//! a receiver; a receiver that hangs fills its own queue (later batches for it are dropped and
//! counted, firing alerts are re-sent every `resend_interval` anyway) and holds up nobody else.
//! The tasks belong to [`Outboxes`]: dropping it stops them, in-flight requests included.

use crate::deliver::{self, DeliveryStatus};
use crate::engine::Alert;
use crate::view::AlertsView;
use cellpilot_core::clock::SharedClock;
use cellpilot_core::config::AlertsConfig;
use cellpilot_core::metrics::Metrics;
use std::sync::Arc;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinSet;

/// Batches waiting per receiver before new ones for it are dropped.
pub(crate) const QUEUE: usize = 32;

/// Where a receiver's batches go.
#[derive(Debug, Clone)]
enum Target {
    /// `POST /api/v2/alerts`, every alert in one body.
    Alertmanager { url: String },
    /// Alertmanager's webhook payload, one POST per (alertname, cell) group.
    Webhook { url: String },
}

/// What every receiver task shares.
#[derive(Clone)]
struct Shared {
    client: reqwest::Client,
    external: String,
    view: Arc<AlertsView>,
    metrics: Metrics,
    clock: SharedClock,
}

/// The receivers' queues and the tasks draining them.
pub(crate) struct Outboxes {
    queues: Vec<(String, mpsc::Sender<Arc<Vec<Alert>>>)>,
    metrics: Metrics,
    _tasks: JoinSet<()>,
}

impl std::fmt::Debug for Outboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outboxes").field("receivers", &self.queues.iter().map(|q| &q.0).collect::<Vec<_>>()).finish()
    }
}

impl Outboxes {
    /// A queue and a task for Alertmanager (when configured) and each webhook; links in
    /// payloads point at `external`.
    pub(crate) fn start(
        config: &AlertsConfig,
        external: String,
        view: Arc<AlertsView>,
        metrics: Metrics,
        clock: SharedClock,
    ) -> Self {
        let shared = Shared { client: reqwest::Client::new(), external, view, metrics: metrics.clone(), clock };
        let mut targets = Vec::new();
        if !config.alertmanager_url.is_empty() {
            let url = format!("{}/api/v2/alerts", config.alertmanager_url.trim_end_matches('/'));
            targets.push(("alertmanager".to_string(), Target::Alertmanager { url }));
        }
        for hook in &config.webhooks {
            targets.push((hook.name.clone(), Target::Webhook { url: hook.url.clone() }));
        }
        let mut tasks = JoinSet::new();
        let mut queues = Vec::new();
        for (name, target) in targets {
            let (tx, rx) = mpsc::channel(QUEUE);
            tasks.spawn(drain(name.clone(), target, rx, shared.clone()));
            queues.push((name, tx));
        }
        Self { queues, metrics, _tasks: tasks }
    }

    /// Queues `alerts` for every receiver without waiting; a full queue drops the batch for
    /// that receiver alone (counted as `result="dropped"`).
    pub(crate) fn offer(&self, alerts: Vec<Alert>) {
        let batch = Arc::new(alerts);
        for (name, tx) in &self.queues {
            match tx.try_send(batch.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.metrics.alert_deliveries.with_label_values(&[name, "dropped"]).inc();
                    tracing::warn!(receiver = %name, queued = QUEUE, "alert receiver is behind; a batch was dropped");
                }
                Err(TrySendError::Closed(_)) => {
                    tracing::error!(receiver = %name, "alert receiver task ended");
                }
            }
        }
    }
}

async fn drain(name: String, target: Target, mut rx: mpsc::Receiver<Arc<Vec<Alert>>>, s: Shared) {
    while let Some(batch) = rx.recv().await {
        let now = || s.clock.now_ms();
        match &target {
            Target::Alertmanager { url } => {
                let body = serde_json::Value::Array(batch.iter().map(|a| deliver::am_alert(a, &s.external)).collect());
                let status = deliver::post(&s.client, url, &body, now).await;
                record(&s, &name, status);
            }
            Target::Webhook { url } => {
                for (group, alerts) in deliver::groups(&batch) {
                    let body = deliver::webhook_payload(&name, &group, &alerts, &s.external);
                    let status = deliver::post(&s.client, url, &body, now).await;
                    record(&s, &name, status);
                }
            }
        }
    }
}

fn record(s: &Shared, receiver: &str, status: DeliveryStatus) {
    let result = if status.ok { "ok" } else { "failed" };
    s.metrics.alert_deliveries.with_label_values(&[receiver, result]).inc();
    if !status.ok {
        tracing::warn!(%receiver, error = ?status.error, "alert delivery failed after retries");
    }
    s.view.record_delivery(receiver, status);
}

#[cfg(test)]
// Tests spawn freely and join or abort what they spawn before they end.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::engine::AlertState;
    use cellpilot_core::clock::TestClock;
    use cellpilot_core::config::WebhookConfig;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn alert(n: usize) -> Alert {
        Alert {
            fingerprint: format!("f{n}"),
            labels: [("alertname".to_string(), "CellDrained".to_string()), ("cell".to_string(), format!("c{n}"))]
                .into(),
            annotations: Default::default(),
            state: AlertState::Firing,
            active_since_ms: 0,
            starts_at_ms: Some(0),
            ends_at_ms: None,
            page: "/".into(),
        }
    }

    /// Length of the first whole HTTP request in `buf`, if there is one.
    fn whole_request(buf: &[u8]) -> Option<usize> {
        let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
        let len = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        (buf.len() >= head + len).then_some(head + len)
    }

    /// Answers 200 to each request and reports it; or, with `hang`, reads requests and never
    /// answers. Reports when the client closes the connection.
    async fn receiver(hang: bool) -> (String, mpsc::UnboundedReceiver<&'static str>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = vec![0u8; 64 << 10];
                    loop {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => {
                                let _ = tx.send("closed");
                                return;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        while let Some(len) = whole_request(&buf) {
                            buf.drain(..len);
                            if !hang {
                                let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
                            }
                            let _ = tx.send("request");
                        }
                    }
                });
            }
        });
        (url, rx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_receiver_holds_up_only_its_own_queue() {
        let (hung_url, mut hung) = receiver(true).await;
        let (good_url, mut good) = receiver(false).await;
        let config = AlertsConfig {
            webhooks: vec![
                WebhookConfig { name: "hung".into(), url: hung_url },
                WebhookConfig { name: "good".into(), url: good_url },
            ],
            ..AlertsConfig::default()
        };
        let metrics = Metrics::new();
        let view = Arc::new(AlertsView::default());
        let clock: SharedClock = Arc::new(TestClock::new(0));
        let outboxes = Outboxes::start(&config, "http://x".into(), view.clone(), metrics.clone(), clock);
        // Waits for the next request at `rx`; a request that outlived its timeout on a loaded
        // machine is re-sent on a new connection and the old one closes, which is not a request.
        async fn next_request(rx: &mut mpsc::UnboundedReceiver<&'static str>) {
            loop {
                match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("a request arrives") {
                    Some("request") => return,
                    Some(_) => continue,
                    None => panic!("the receiver stopped"),
                }
            }
        }
        outboxes.offer(vec![alert(0)]);
        next_request(&mut hung).await;
        next_request(&mut good).await;
        let dropped = |r: &str| metrics.alert_deliveries.with_label_values(&[r, "dropped"]).get();
        // The hung receiver holds its first batch in flight and the next QUEUE fill its queue;
        // the good one delivers every batch while that happens.
        for n in 1..=QUEUE + 5 {
            outboxes.offer(vec![alert(n)]);
            next_request(&mut good).await;
        }
        assert_eq!(dropped("hung"), 5, "offering never waits on a full queue");
        assert_eq!(dropped("good"), 0);
        assert!(view.deliveries()["good"].ok);
        // Dropping the outboxes stops the tasks, the hung request included.
        drop(outboxes);
        loop {
            match tokio::time::timeout(Duration::from_secs(30), hung.recv()).await.expect("the connection is closed") {
                Some("closed") => break,
                Some(_) => continue,
                None => panic!("the receiver stopped"),
            }
        }
    }
}
