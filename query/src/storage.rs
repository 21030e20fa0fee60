//! Where Parquet files live: the local data directory (the single-node default, laid out as
//! [`crate::files`] describes) or an S3-compatible object store that every node of a cluster
//! shares, each node writing under `nodes/<node_id>/<table>/<tier>/<start>-<end>.parquet`.
//!
//! The store above is synchronous (the closer thread and blocking query tasks call it), so the
//! object backend runs its requests on a small runtime of its own and waits for them: a call
//! works the same from a plain thread or from inside another runtime's blocking task.

use crate::files::{self, StoredFile, Table};
use crate::tier::Tier;
use crate::{Error, Result};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Settings of an S3-compatible store (`[storage]` url, endpoint, region, keys); empty
/// fields fall back to the usual `AWS_*` environment variables.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// `s3://bucket[/prefix]`.
    pub url: String,
    /// Endpoint of a store other than AWS; `http://` is allowed.
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: cellpilot_core::secret::Secret,
}

/// The files of every node, and this node's writes.
#[derive(Debug)]
pub struct Storage {
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Local { root: PathBuf },
    Object(Object),
}

/// An object store, the key prefix everything lives under, this node's id, and the runtime
/// its requests run on.
#[derive(Debug)]
struct Object {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    node: String,
    io: Io,
}

/// A runtime for object-store requests, shut down without blocking when dropped (the store may
/// be dropped on an async worker).
#[derive(Debug)]
struct Io(cellpilot_core::task::Pool);

impl Io {
    fn new() -> Result<Self> {
        let pool = cellpilot_core::task::Pool::new("object-store", 2, None)
            .map_err(|e| cellpilot_core::error::Internal::caused("starting the object-store runtime", e))?;
        Ok(Io(pool))
    }

    /// Runs `fut` on the object-store runtime and waits for it.
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
        // The task is awaited here, so it has an owner until it ends.
        futures::executor::block_on(self.0.run(fut))
            .map_err(|e| cellpilot_core::error::Internal::caused("an object-store request did not finish", e))?
    }
}

fn store_error(what: &str, key: &str, e: object_store::Error) -> Error {
    Error::Storage(format!("{what} {key}: {e}"))
}

impl Storage {
    /// Files under the local directory `root`, laid out as [`crate::files`] describes.
    pub fn local(root: impl Into<PathBuf>) -> Self {
        Storage { backend: Backend::Local { root: root.into() } }
    }

    /// Files in `store` under `prefix` (no leading or trailing `/`; may be empty), this node
    /// writing as `node`.
    pub fn object(store: Arc<dyn ObjectStore>, prefix: &str, node: &str) -> Result<Self> {
        let prefix = prefix.trim_matches('/').to_string();
        Ok(Storage { backend: Backend::Object(Object { store, prefix, node: node.to_string(), io: Io::new()? }) })
    }

    /// An S3-compatible store from `s3` (unset fields from `AWS_*`), this node writing as `node`.
    pub fn s3(s3: &S3Settings, node: &str) -> Result<Self> {
        let rest = s3
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::Storage(format!("`{}` is not an s3://bucket[/prefix] url", s3.url)))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
        if !s3.endpoint.is_empty() {
            b = b.with_endpoint(&s3.endpoint).with_allow_http(s3.endpoint.starts_with("http://"));
        }
        if !s3.region.is_empty() {
            b = b.with_region(&s3.region);
        }
        if !s3.access_key_id.is_empty() {
            b = b.with_access_key_id(&s3.access_key_id);
        }
        if !s3.secret_access_key.is_empty() {
            b = b.with_secret_access_key(s3.secret_access_key.expose());
        }
        let store = b.build().map_err(|e| Error::Storage(format!("S3 store {}: {e}", s3.url)))?;
        Self::object(Arc::new(store), prefix, node)
    }

    /// What `[storage]` names: `dir` when `url` is empty, else the S3 store at `url`, this node
    /// writing as `node`.
    pub fn from_config(c: &cellpilot_core::config::StorageConfig, node: &str) -> Result<Self> {
        if c.url.is_empty() {
            return Ok(Self::local(&c.dir));
        }
        let s3 = S3Settings {
            url: c.url.clone(),
            endpoint: c.endpoint.clone(),
            region: c.region.clone(),
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.clone(),
        };
        Self::s3(&s3, node)
    }

    /// Whether files are on the local disk (the layout without node prefixes).
    pub fn is_local(&self) -> bool {
        matches!(self.backend, Backend::Local { .. })
    }

    /// This node's id in an object store; `None` on local disk, where every file is this node's.
    pub fn node(&self) -> Option<&str> {
        match &self.backend {
            Backend::Local { .. } => None,
            Backend::Object(o) => Some(&o.node),
        }
    }

    /// Whether this node wrote `listed`.
    pub fn is_own(&self, listed: &Listed) -> bool {
        listed.node.as_deref() == self.node()
    }

    /// Where it is, for messages.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Local { root } => root.display().to_string(),
            Backend::Object(o) => format!("object store {} prefix `{}`", o.store, o.prefix),
        }
    }

    /// Every file of `table`/`tier` (of every node, in an object store), sorted by start.
    pub fn list(&self, table: Table, tier: Tier) -> Result<Vec<StoredFile>> {
        Ok(self.list_all()?.into_iter().filter(|l| (l.table, l.tier) == (table, tier)).map(|l| l.file).collect())
    }

    /// Every file of every table and tier, sorted by start.
    pub fn list_all(&self) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        match &self.backend {
            Backend::Local { root } => {
                for table in Table::ALL {
                    for tier in Tier::ALL {
                        let node = None;
                        out.extend(files::list(root, table, tier)?.into_iter().map(|file| Listed {
                            node: node.clone(),
                            table,
                            tier,
                            file,
                        }));
                    }
                }
            }
            Backend::Object(o) => {
                let store = o.store.clone();
                let root = o.key("nodes");
                let metas: Vec<object_store::ObjectMeta> = o.io.run(async move {
                    store.list(Some(&root)).try_collect().await.map_err(|e| store_error("listing", "nodes/", e))
                })?;
                for m in metas {
                    let full = m.location.as_ref();
                    let rel = if o.prefix.is_empty() { full } else { &full[(o.prefix.len() + 1).min(full.len())..] };
                    if let Some(listed) = parse_key(rel) {
                        out.push(listed);
                    }
                }
            }
        }
        out.sort_by_key(|l| l.file.start_ms);
        Ok(out)
    }

    /// Writes `batch` as this node's file covering `[start_ms, end_ms)` of `table`/`tier`:
    /// atomically (a local file is renamed into place after an fsync; an object PUT is whole).
    pub fn write(
        &self,
        table: Table,
        tier: Tier,
        start_ms: i64,
        end_ms: i64,
        batch: &RecordBatch,
    ) -> Result<StoredFile> {
        match &self.backend {
            Backend::Local { root } => files::write(root, table, tier, start_ms, end_ms, batch),
            Backend::Object(o) => {
                let rel =
                    format!("nodes/{}/{}/{}/{start_ms}-{end_ms}.parquet", o.node, table.dir_name(), tier.dir_name());
                let bytes = files::encode(batch)?;
                let (store, key, what) = (o.store.clone(), o.key(&rel), rel.clone());
                o.io.run(async move {
                    store.put(&key, PutPayload::from(bytes)).await.map_err(|e| store_error("writing", &what, e))
                })?;
                Ok(StoredFile { path: PathBuf::from(rel), start_ms, end_ms })
            }
        }
    }

    /// Reads `file`, keeping only the columns in `projection` (all when `None`).
    pub fn read(&self, file: &StoredFile, projection: Option<&[usize]>) -> Result<Vec<RecordBatch>> {
        match &self.backend {
            Backend::Local { .. } => files::read(file, projection),
            Backend::Object(o) => {
                let rel = file.path.to_string_lossy().into_owned();
                let (store, key, what) = (o.store.clone(), o.key(&rel), rel.clone());
                let bytes: Bytes = o.io.run(async move {
                    let got = store.get(&key).await.map_err(|e| store_error("reading", &what, e))?;
                    got.bytes().await.map_err(|e| store_error("reading", &what, e))
                })?;
                files::decode(&rel, bytes, projection)
            }
        }
    }

    /// Moves a damaged file aside (`quarantine/` beside the files), keeping its name.
    pub fn quarantine(&self, file: &StoredFile) -> Result<()> {
        match &self.backend {
            Backend::Local { root } => files::quarantine(root, file),
            Backend::Object(o) => {
                let rel = file.path.to_string_lossy().into_owned();
                let (store, from, to, what) =
                    (o.store.clone(), o.key(&rel), o.key(&format!("quarantine/{rel}")), rel.clone());
                o.io.run(async move {
                    store.copy(&from, &to).await.map_err(|e| store_error("quarantining", &what, e))?;
                    store.delete(&from).await.map_err(|e| store_error("quarantining", &what, e))
                })
            }
        }
    }

    /// Removes this node's files that end at or before `horizon(tier)`; returns how many.
    pub fn expire(&self, horizon: impl Fn(Tier) -> i64) -> Result<usize> {
        match &self.backend {
            Backend::Local { root } => {
                let mut n = 0;
                for table in Table::ALL {
                    for tier in Tier::ALL {
                        n += files::expire(root, table, tier, horizon(tier))?;
                    }
                }
                Ok(n)
            }
            Backend::Object(o) => {
                let keys: Vec<Key> = self
                    .list_all()?
                    .into_iter()
                    .filter(|l| l.file.end_ms <= horizon(l.tier) && self.is_own(l))
                    .map(|l| o.key(&l.file.path.to_string_lossy()))
                    .collect();
                let (n, store) = (keys.len(), o.store.clone());
                o.io.run(async move {
                    for k in keys {
                        match store.delete(&k).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                            Err(e) => return Err(store_error("removing", k.as_ref(), e)),
                        }
                    }
                    Ok(())
                })?;
                Ok(n)
            }
        }
    }

    /// The object store and the prefix everything lives under, when files are in one (for the
    /// cluster's own objects: heartbeats, the lease).
    pub fn shared(&self) -> Option<(Arc<dyn ObjectStore>, &str)> {
        match &self.backend {
            Backend::Local { .. } => None,
            Backend::Object(o) => Some((o.store.clone(), &o.prefix)),
        }
    }

    /// The local data directory, when files are on local disk.
    pub fn local_root(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Local { root } => Some(root),
            Backend::Object(_) => None,
        }
    }
}

impl Object {
    fn key(&self, rel: &str) -> Key {
        if self.prefix.is_empty() { Key::from(rel) } else { Key::from(format!("{}/{rel}", self.prefix)) }
    }
}

/// One file found by [`Storage::list_all`].
#[derive(Debug, Clone)]
pub struct Listed {
    /// The node that wrote it (`None` on local disk).
    pub node: Option<String>,
    /// Its table.
    pub table: Table,
    /// Its tier.
    pub tier: Tier,
    /// The file.
    pub file: StoredFile,
}

/// `nodes/<node>/<table>/<tier>/<start>-<end>.parquet`, or `None` for anything else.
fn parse_key(rel: &str) -> Option<Listed> {
    let mut parts = rel.split('/');
    let (nodes, node, table, tier, name) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if nodes != "nodes" || parts.next().is_some() {
        return None;
    }
    let table = Table::ALL.into_iter().find(|t| t.dir_name() == table)?;
    let tier = Tier::ALL.into_iter().find(|t| t.dir_name() == tier)?;
    let (start_ms, end_ms) = files::parse_name(name)?;
    Some(Listed {
        node: Some(node.to_string()),
        table,
        tier,
        file: StoredFile { path: PathBuf::from(rel), start_ms, end_ms },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        let l = parse_key("nodes/n-1/rollups/10s/0-300000.parquet").unwrap();
        assert_eq!(
            (l.node.as_deref(), l.table, l.tier, l.file.start_ms, l.file.end_ms),
            (Some("n-1"), Table::Rollups, Tier::Fine, 0, 300_000)
        );
        for bad in [
            "nodes/n-1/rollups/10s/x.parquet",
            "nodes/n-1/other/10s/0-1.parquet",
            "nodes/n-1/rollups/10s/0-1.parquet/more",
            "quarantine/nodes/n-1/rollups/10s/0-1.parquet",
            "nodes/n-1/rollups/7m/0-1.parquet",
        ] {
            assert!(parse_key(bad).is_none(), "{bad}");
        }
    }
}
