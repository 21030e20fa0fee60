//! One control loop for the cluster: the query nodes elect a leader with a lease object,
//! `<prefix>/cluster/lease.json`, written with conditional puts (create-if-absent, then
//! replace-if-unchanged by ETag), and every published version is an object of its own,
//! `<prefix>/cluster/decisions/<version, 20 digits>.json`, created only if absent.
//!
//! The leader renews the lease every third of `lease_ttl` and decides only while its last
//! renewal is younger than `lease_ttl`; a follower takes an expired lease over only after
//! following every recorded version, so versions continue where the old leader stopped. Two
//! nodes that both believe they lead (a partitioned leader before its lease runs out) cannot
//! publish different tables under one version: the second create of a version fails, and that
//! node follows the recorded entry instead. Followers read new versions every 250 ms and
//! publish them to their own CellWeights and xDS clients.

use crate::{Error, Result};
use cellpilot_control::Controller;
use cellpilot_control::{Entry, Recorded, Replication};
use cellpilot_core::task::Every;
use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often followers look for new versions.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// Largest decision-log entry read (a table of every cell with its reasons).
const MAX_ENTRY_BYTES: u64 = 64 << 20;

/// What the lease object holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseBody {
    /// The leading node.
    holder: String,
    /// Where its API answers (for a follower's refusal of a pin).
    web: String,
    /// Increases with every change of holder.
    term: u64,
    /// The last version the holder published when it wrote the lease.
    version: u64,
}

#[derive(Debug, Default)]
struct Held {
    /// The lease object as this node last wrote it (its ETag and version), while it leads.
    tag: Option<UpdateVersion>,
    term: u64,
    /// Until when this node may decide: its last successful write + `lease_ttl`.
    until: Option<Instant>,
    /// The API address of the node the lease names.
    leader_web: Option<String>,
}

/// This node's part in the election and the decision log.
#[derive(Debug)]
pub struct Leadership {
    store: Arc<dyn ObjectStore>,
    lease: Key,
    log: Key,
    node: String,
    web: String,
    ttl: Duration,
    controller: Arc<Controller>,
    runtime: tokio::runtime::Handle,
    held: Mutex<Held>,
}

fn store_err(what: &str) -> impl Fn(object_store::Error) -> Error + '_ {
    move |e| Error::store(what, e)
}

impl Leadership {
    /// Node `node` (API at `web`) of the cluster under `prefix`, publishing through
    /// `controller`; blocking calls run on `runtime`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        (node, web): (String, String),
        ttl: Duration,
        controller: Arc<Controller>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let at = |rel: &str| if prefix.is_empty() { Key::from(rel) } else { Key::from(format!("{prefix}/{rel}")) };
        Leadership {
            store,
            lease: at("cluster/lease.json"),
            log: at("cluster/decisions"),
            node,
            web,
            ttl,
            controller,
            runtime,
            held: Mutex::new(Held::default()),
        }
    }

    fn entry_key(&self, version: u64) -> Key {
        self.log.clone().join(format!("{version:020}.json"))
    }

    /// Publishes every recorded version newer than the controller's, in order; returns how many.
    pub async fn follow(&self) -> Result<usize> {
        let after = self.entry_key(self.controller.version());
        let mut metas: Vec<object_store::ObjectMeta> = self
            .store
            .list_with_offset(Some(&self.log), &after)
            .try_collect()
            .await
            .map_err(store_err("listing the decision log"))?;
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        let mut n = 0;
        for m in metas {
            if m.size > MAX_ENTRY_BYTES {
                return Err(cellpilot_core::error::Internal::new(format!(
                    "{} is {} bytes, over {MAX_ENTRY_BYTES}",
                    m.location, m.size
                ))
                .into());
            }
            let bytes = self
                .store
                .get(&m.location)
                .await
                .map_err(store_err("reading the decision log"))?
                .bytes()
                .await
                .map_err(store_err("reading the decision log"))?;
            let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| {
                cellpilot_core::error::Internal::caused(format!("{} is not a decision-log entry", m.location), e)
            })?;
            // Off the async workers: publishing takes the policy lock, which a decision holds
            // while it waits for the store.
            let controller = self.controller.clone();
            let published = cellpilot_core::task::blocking(move || controller.follow(&entry))
                .await
                .map_err(|e| cellpilot_core::error::Internal::caused("publishing a followed version", e))?;
            if published {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Renews the lease this node holds, or takes over one that ran out, or creates the first.
    async fn tend(&self) -> Result<()> {
        let started = cellpilot_core::clock::monotonic();
        let current = match self.store.get(&self.lease).await {
            Ok(got) => {
                let meta = got.meta.clone();
                let bytes = got.bytes().await.map_err(store_err("reading the lease"))?;
                let body: LeaseBody = serde_json::from_slice(&bytes)
                    .map_err(|e| cellpilot_core::error::Internal::caused("the lease object is not a lease", e))?;
                Some((body, meta))
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(Error::store("reading the lease", e)),
        };
        let (mode, term) = match &current {
            None => (PutMode::Create, 1),
            Some((body, meta)) => {
                let tag = UpdateVersion { e_tag: meta.e_tag.clone(), version: meta.version.clone() };
                if body.holder == self.node {
                    (PutMode::Update(tag), body.term)
                } else {
                    self.held.lock().unwrap_or_else(|e| e.into_inner()).leader_web = Some(body.web.clone());
                    let age = self
                        .controller
                        .clock()
                        .now_system()
                        .duration_since(meta.last_modified.into())
                        .unwrap_or_default();
                    if age <= self.ttl {
                        self.step_down(&body.holder);
                        return Ok(());
                    }
                    // Versions continue where the old leader stopped: follow all it recorded first.
                    self.follow().await?;
                    if self.controller.version() < body.version {
                        return Err(cellpilot_core::error::Internal::new(format!(
                            "the lease names version {} but the decision log ends at {}: not taking over yet",
                            body.version,
                            self.controller.version()
                        ))
                        .into());
                    }
                    (PutMode::Update(tag), body.term + 1)
                }
            }
        };
        let body =
            LeaseBody { holder: self.node.clone(), web: self.web.clone(), term, version: self.controller.version() };
        let payload = PutPayload::from(
            serde_json::to_vec(&body).map_err(|e| cellpilot_core::error::Internal::caused("encoding the lease", e))?,
        );
        match self.store.put_opts(&self.lease, payload, PutOptions::from(mode)).await {
            Ok(res) => {
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                if held.until.is_none() || held.term != term {
                    tracing::info!(node = %self.node, term, version = body.version, "leading the control loop");
                }
                *held = Held {
                    tag: Some(UpdateVersion { e_tag: res.e_tag, version: res.version }),
                    term,
                    until: Some(started + self.ttl),
                    leader_web: Some(self.web.clone()),
                };
                Ok(())
            }
            // Another node wrote the lease in between: it leads.
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                self.step_down("another node");
                Ok(())
            }
            Err(e) => Err(Error::store("writing the lease", e)),
        }
    }

    fn step_down(&self, to: &str) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.until.take().is_some() {
            tracing::warn!(node = %self.node, leader = %to, "no longer leading the control loop");
        }
        held.tag = None;
    }

    /// Follows the decision log every 250 ms and tends the lease every third of `lease_ttl`
    /// until `stop` resolves; failures are logged and retried.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()> + Send) {
        let mut every = Every::new(FOLLOW_EVERY, stop);
        let mut next_tend = cellpilot_core::clock::monotonic();
        while every.tick().await {
            if let Err(e) = self.follow().await {
                tracing::warn!(error = %cellpilot_core::status::Chain(&e), "following the decision log");
            }
            if cellpilot_core::clock::monotonic() >= next_tend {
                next_tend = cellpilot_core::clock::monotonic() + self.ttl / 3;
                if let Err(e) = self.tend().await {
                    tracing::warn!(error = %cellpilot_core::status::Chain(&e), "tending the control-loop lease");
                }
            }
        }
    }
}

impl Replication for Leadership {
    fn leads(&self) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .until
            .is_some_and(|t| cellpilot_core::clock::monotonic() < t)
    }

    fn record(&self, entry: &Entry) -> std::result::Result<Recorded, String> {
        let body = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
        let (store, key) = (self.store.clone(), self.entry_key(entry.table.version));
        let put = async move { store.put_opts(&key, PutPayload::from(body), PutOptions::from(PutMode::Create)).await };
        // Awaited here: the task has an owner until it ends.
        match futures::executor::block_on(self.runtime.spawn(put)) {
            Ok(Ok(_)) => Ok(Recorded::Done),
            Ok(Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. })) => {
                Ok(Recorded::Taken)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("recording did not finish: {e}")),
        }
    }

    fn leader(&self) -> Option<String> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).leader_web.clone()
    }
}
