//! Who is in the cluster: each node writes a heartbeat object,
//! `<prefix>/cluster/nodes/<node_id>.json`, every third of `lease_ttl`; a node whose heartbeat
//! is older than `lease_ttl` (by the store's clock of the last write) has left. No node needs a
//! static list of peers.

use crate::{Error, Result};
use cellpilot_core::clock::SharedClock;
use cellpilot_core::config::NodeRole;
use cellpilot_core::task::Every;
use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// What a node says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// `[cluster] node_id`.
    pub node_id: String,
    /// `[cluster] role`.
    pub role: Role,
    /// Where other nodes reach its internal (Arrow Flight) listener.
    pub advertise: String,
    /// When this process started, unix ms (tells a restart from a second node with the same id).
    pub started_ms: i64,
}

/// [`NodeRole`] as written in a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Ingest and query.
    All,
    /// Ingest only.
    Ingest,
    /// Query only.
    Query,
}

impl From<NodeRole> for Role {
    fn from(r: NodeRole) -> Self {
        match r {
            NodeRole::All => Role::All,
            NodeRole::Ingest => Role::Ingest,
            NodeRole::Query => Role::Query,
        }
    }
}

impl Role {
    /// Whether the node holds open windows.
    pub fn ingests(self) -> bool {
        matches!(self, Role::All | Role::Ingest)
    }
}

/// Largest heartbeat object read (a stray large object under the prefix is skipped).
const MAX_HEARTBEAT_BYTES: u64 = 4096;

/// The live nodes as last listed, and this node's heartbeat.
#[derive(Debug)]
pub struct Members {
    store: Arc<dyn ObjectStore>,
    dir: Key,
    me: Heartbeat,
    ttl: Duration,
    clock: SharedClock,
    /// Live nodes and when each last wrote its heartbeat.
    live: RwLock<Vec<(Heartbeat, std::time::SystemTime)>>,
}

impl Members {
    /// Members of the cluster under `prefix` of `store`, this node being `me`.
    /// Heartbeats' ages are read on `clock`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, me: Heartbeat, ttl: Duration, clock: SharedClock) -> Self {
        let dir =
            if prefix.is_empty() { Key::from("cluster/nodes") } else { Key::from(format!("{prefix}/cluster/nodes")) };
        Members { store, dir, me, ttl, clock, live: RwLock::new(Vec::new()) }
    }

    /// This node.
    pub fn me(&self) -> &Heartbeat {
        &self.me
    }

    /// Every live node but this one, as last listed.
    pub fn others(&self) -> Vec<Heartbeat> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.iter().map(|(h, _)| h).filter(|h| h.node_id != self.me.node_id).cloned().collect()
    }

    fn key(&self, node: &str) -> Key {
        self.dir.clone().join(format!("{node}.json"))
    }

    /// Refuses to start while another process renews a heartbeat with this node's id (two
    /// writers under one `nodes/<node_id>/` would overwrite each other's files). A heartbeat
    /// with this id that stops being renewed — this node's own, before a crash — is waited out
    /// (at most `lease_ttl`).
    pub async fn claim(&self) -> Result<()> {
        let mut first_seen: Option<std::time::SystemTime> = None;
        loop {
            self.list().await?;
            let other = {
                let live = self.live.read().unwrap_or_else(|e| e.into_inner());
                live.iter().find(|(h, _)| h.node_id == self.me.node_id && h.advertise != self.me.advertise).cloned()
            };
            let Some((other, written)) = other else { return self.beat().await };
            match first_seen {
                None => first_seen = Some(written),
                Some(before) if written > before => {
                    return Err(Error::Config(format!(
                        "[cluster] node_id `{}` is in use: a live node advertising {} renews its heartbeat; \
                         give this node another id",
                        other.node_id, other.advertise
                    )));
                }
                Some(_) => {}
            }
            tracing::info!(node = %other.node_id, at = %other.advertise, "waiting for an earlier heartbeat with this node's id to run out");
            tokio::time::sleep(self.ttl / 3).await;
        }
    }

    /// Writes this node's heartbeat.
    pub async fn beat(&self) -> Result<()> {
        let body = serde_json::to_vec(&self.me)
            .map_err(|e| cellpilot_core::error::Internal::caused("encoding the heartbeat", e))?;
        self.store
            .put(&self.key(&self.me.node_id), PutPayload::from(body))
            .await
            .map_err(|e| Error::store("writing the heartbeat", e))?;
        Ok(())
    }

    /// Lists the heartbeats and keeps those younger than `lease_ttl`.
    pub async fn list(&self) -> Result<usize> {
        let metas: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&self.dir)).try_collect().await.map_err(|e| Error::store("listing heartbeats", e))?;
        let now = self.clock.now_system();
        let mut live = Vec::new();
        for m in metas {
            let age = now.duration_since(m.last_modified.into()).unwrap_or_default();
            if age > self.ttl || m.size > MAX_HEARTBEAT_BYTES {
                continue;
            }
            let bytes = match self.store.get(&m.location).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            };
            match bytes.map(|b| serde_json::from_slice::<Heartbeat>(&b)) {
                Ok(Ok(h)) => live.push((h, m.last_modified.into())),
                Ok(Err(e)) => {
                    tracing::warn!(key = %m.location, error = %cellpilot_core::status::Chain(&e), "an unreadable heartbeat is skipped")
                }
                // Gone between the listing and the read: the node left.
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store("reading a heartbeat", e)),
            }
        }
        let n = live.len();
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = live;
        Ok(n)
    }

    /// Beats and lists every third of `lease_ttl` until `stop` resolves; failures are logged
    /// and retried on the next beat.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()> + Send) {
        let mut every = Every::new(self.ttl / 3, stop);
        while every.tick().await {
            if let Err(e) = self.beat().await {
                tracing::warn!(error = %cellpilot_core::status::Chain(&e), "heartbeat not written; other nodes drop this one after lease_ttl");
            }
            if let Err(e) = self.list().await {
                tracing::warn!(error = %cellpilot_core::status::Chain(&e), "listing the cluster's heartbeats; keeping the last list");
            }
        }
        // Leaving: other nodes stop asking at once instead of after lease_ttl.
        if let Err(e) = self.store.delete(&self.key(&self.me.node_id)).await {
            tracing::debug!(error = %cellpilot_core::status::Chain(&e), "removing the heartbeat on the way out");
        }
    }
}
