//! Joining a cluster when `[storage] url` names an object store: this node's heartbeat, the
//! internal Arrow Flight listener of an ingest node, the peers a query node asks for their
//! open windows, and a query node's part in the one control loop (lease and decision log).

use anyhow::Context;
use cellpilot_cluster::flight::{Peers, UnwrittenService};
use cellpilot_cluster::lease::Leadership;
use cellpilot_cluster::members::{Heartbeat, Members};
use cellpilot_control::Controller;
use cellpilot_core::auth::Authenticator;
use cellpilot_core::config::Config;
use cellpilot_query::RollupStore;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Joins the cluster of nodes sharing this node's object store (nothing on local disk); returns
/// the internal listener's address when this node runs one.
pub(crate) async fn join(
    config: &Config,
    store: &Arc<RollupStore>,
    controller: &Arc<Controller>,
    web_addr: SocketAddr,
    (auth, metrics, tls): (&Authenticator, &cellpilot_core::metrics::Metrics, Option<&crate::tls::Tls>),
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some((objects, prefix)) = store.storage().shared() else { return Ok(None) };
    let c = &config.cluster;
    let role = c.role;
    let listener = match role.ingests() {
        true => Some(crate::listen::bind("cluster", &c.listen).await?),
        false => None,
    };
    let bound = listener.as_ref().map(tokio::net::TcpListener::local_addr).transpose()?;
    let advertise = match (c.advertise.as_str(), bound) {
        ("", Some(addr)) => addr.to_string(),
        _ => c.advertise().to_string(),
    };
    let me = Heartbeat { node_id: c.node_id(), role: role.into(), advertise, started_ms: controller.clock().now_ms() };
    let members = Arc::new(Members::new(objects.clone(), prefix, me, c.lease_ttl.0, controller.clock().clone()));
    members.claim().await.context("joining the cluster")?;
    let (m, stop) = (members.clone(), shutdown.clone());
    tasks.spawn(async move {
        m.run(stop.cancelled_owned()).await;
        Ok(())
    });
    if let Some(listener) = listener {
        let service = UnwrittenService::new(store.clone(), auth.clone()).into_server();
        let stop = shutdown.clone();
        // The `[transport]` stream and keepalive limits and `[tls]`, as on every gRPC listener.
        let mut server = crate::listen::grpc_server(tls, &config.transport, false)?;
        let incoming = crate::listen::incoming(listener, "cluster", &config.transport, metrics);
        tasks.spawn(async move {
            server
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
                .context("cluster (Arrow Flight) server")
        });
    }
    if role.queries() {
        let token = (!c.token.is_empty()).then(|| c.token.clone());
        // Peers' answers are bounded by the query memory limit; with `[tls]` they are dialed
        // over TLS, verified, and shown this node's certificate.
        let peers = Peers::new(members, tokio::runtime::Handle::current(), token)
            .max_answer_bytes(config.query.memory_limit.as_usize());
        let peers = match tls {
            Some(t) => peers.tls(t.client()),
            None => peers,
        };
        store.set_other_nodes(Arc::new(peers));
        // One control loop: the query node holding the lease decides; the others follow its log.
        let web = if config.web.external_url.is_empty() {
            format!("http://{web_addr}")
        } else {
            config.web.external_url.clone()
        };
        let leadership = Arc::new(Leadership::new(
            objects.clone(),
            prefix,
            (c.node_id(), web),
            c.lease_ttl.0,
            controller.clone(),
            tokio::runtime::Handle::current(),
        ));
        leadership.follow().await.context("reading the cluster's decision log")?;
        controller.set_replication(leadership.clone());
        let stop = shutdown.clone();
        tasks.spawn(async move {
            leadership.run(stop.cancelled_owned()).await;
            Ok(())
        });
    }
    tracing::info!(node = %c.node_id(), role = ?role, "joined the cluster");
    Ok(bound)
}
