//! The rollup store: every tier's Parquet files, the rows not yet in a file, and a view of the
//! windows ingest still has open, so readers see data received so far and nothing twice.
//!
//! Rows move in one direction under the store lock: open window -> `pending[Fine]` -> Parquet
//! file of the finest tier, whose 5-minute rollup goes to `pending[FiveMin]` -> file -> hourly
//! rollup in `pending[Hour]` -> file. A row is in exactly one place at any moment.
//!
//! `read` is the read path (files, pending rows and open windows over a range); `flush` is the
//! write path (closed windows in, buckets to Parquet, retention).

mod flush;
mod read;
mod remote;

use crate::cache::ByteLru;
use crate::files::{StoredFile, Table};
use crate::rollup;
use crate::storage::Storage;
use crate::tier::Tier;
use crate::{Error, Result};
use arrow::array::{BooleanArray, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;
use cellpilot_core::store::{OpenWindowSource, WindowBatches};
use read::{split, starts};
use remote::{Remote, Source};
use std::any::Any;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Where the files are.
    pub storage: Arc<Storage>,
    /// Width of the finest window.
    pub fine_ms: i64,
    /// `allowed_lateness`: a bucket is complete once its end plus this has passed.
    pub lateness_ms: i64,
    /// Retention per tier (fine, 5m, 1h).
    pub retention_ms: [i64; 3],
}

impl StoreSettings {
    /// The store `config` describes: `[storage]` (where and how long) and `[ingest]`'s window.
    pub fn from_config(config: &cellpilot_core::config::Config) -> Result<Self> {
        let s = &config.storage;
        let spec = cellpilot_core::window::WindowSpec::new(config.ingest.window.0, config.ingest.allowed_lateness.0);
        Ok(StoreSettings {
            storage: Arc::new(Storage::from_config(s, &config.cluster.node_id())?),
            fine_ms: spec.width_ms,
            lateness_ms: spec.lateness_ms,
            retention_ms: [s.retention_10s, s.retention_5m, s.retention_1h].map(|d| d.as_millis_i64()),
        })
    }
}

#[derive(Debug)]
struct TierState {
    rollups_files: Vec<StoredFile>,
    errors_files: Vec<StoredFile>,
    pending_rollups: Vec<RecordBatch>,
    pending_errors: Vec<RecordBatch>,
    /// Everything this node wrote before this is in files (or was empty).
    persisted_until: i64,
    /// End of the latest of this node's files dropped while running (retention, damage):
    /// coarser pending rows may hold rows no file has any more.
    dropped_until: i64,
}

impl Default for TierState {
    fn default() -> Self {
        TierState {
            rollups_files: Vec::new(),
            errors_files: Vec::new(),
            pending_rollups: Vec::new(),
            pending_errors: Vec::new(),
            persisted_until: i64::MIN,
            dropped_until: i64::MIN,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// This node's files and rows.
    tiers: [TierState; 3],
    /// Other nodes' files (an object store shared by a cluster), as last listed.
    remote: Remote,
    last_expiry_ms: i64,
}

/// Bytes of decoded files kept (dashboards refresh every 30 s: repeated reads skip the decode).
const CACHE_BYTES: usize = 256 << 20;
/// Bytes of values derived from whole files ([`RollupStore::scan_derived`]) kept.
const MEMO_BYTES: usize = 64 << 20;

/// What a caller of [`RollupStore::scan_derived`] makes of a file's rows: the value and its
/// approximate size in bytes.
type Derive<T> = dyn Fn(&[RecordBatch]) -> Result<(T, usize)>;

/// Decoded files by path.
type FileCache = ByteLru<PathBuf, Arc<Vec<RecordBatch>>>;
/// Derived values by (file, the caller's key).
type Memo = ByteLru<(PathBuf, String), Arc<dyn Any + Send + Sync>>;

/// One source of [`RollupStore::scan_derived`].
#[derive(Debug)]
pub enum Piece<T, E = T> {
    /// Rows read as [`RollupStore::scan`] would (memory rows, files at the range's edges).
    Rows(Vec<RecordBatch>),
    /// What the caller's `derive` made of one whole file inside the range.
    Derived(Arc<T>),
    /// What the edge derivation made of one whole file overlapping the range's edge
    /// ([`RollupStore::scan_derived_edges`]): the caller cuts it to the range.
    Edge(Arc<E>),
}

/// What one node holds that is in no file yet: its open windows and the closed finest rows of
/// buckets not written, as of the end of its files.
#[derive(Debug, Clone)]
pub struct Unwritten {
    /// The node.
    pub node: String,
    /// End of its last finest-tier file (`i64::MIN` when none): its rows before this are in files.
    pub persisted_until: i64,
    /// Finest-tier rows.
    pub rows: Vec<RecordBatch>,
}

/// The other nodes of a cluster, asked for their [`Unwritten`] rows at each scan.
pub trait OtherNodes: Send + Sync + std::fmt::Debug {
    /// Every live node's unwritten rows of `table` with windows starting in `[from_ms, to_ms)`.
    fn unwritten(&self, table: Table, from_ms: i64, to_ms: i64) -> Result<Vec<Unwritten>>;
}

/// Closed windows (files + pending) and open windows (ingest).
#[derive(Debug)]
pub struct RollupStore {
    settings: StoreSettings,
    cache: Mutex<FileCache>,
    memo: Mutex<Memo>,
    state: RwLock<State>,
    open: RwLock<Option<Arc<dyn OpenWindowSource>>>,
    /// Where other nodes' rows not yet in any file come from (a query node of a cluster).
    others: RwLock<Option<Arc<dyn OtherNodes>>>,
    /// Serializes flushes (the closer is the only writer, but tests may call directly).
    flush: Mutex<()>,
}

fn idx(t: Tier) -> usize {
    match t {
        Tier::Fine => 0,
        Tier::FiveMin => 1,
        Tier::Hour => 2,
    }
}

impl RollupStore {
    /// Opens the store under `settings.dir`, indexing existing files and rebuilding the pending
    /// coarse rows of the current hour and day from the finer files.
    pub fn open(settings: StoreSettings) -> Result<Self> {
        let mut state = State::default();
        let storage = &settings.storage;
        let (own, others): (Vec<_>, Vec<_>) = storage.list_all()?.into_iter().partition(|l| storage.is_own(l));
        for l in own {
            let t = &mut state.tiers[idx(l.tier)];
            t.persisted_until = t.persisted_until.max(l.file.end_ms);
            match l.table {
                Table::Rollups => t.rollups_files.push(l.file),
                Table::ErrorsByCause => t.errors_files.push(l.file),
            }
        }
        state.remote = Remote::from_listing(others);
        // Coarse rows of buckets whose own file is not written yet come from the finer files.
        for tier in [Tier::Fine, Tier::FiveMin] {
            let Some(coarse) = tier.coarser() else { continue };
            let from = state.tiers[idx(coarse)].persisted_until;
            let width = coarse.width_ms(settings.fine_ms);
            let fine = &state.tiers[idx(tier)];
            let read = |fs: &[StoredFile]| -> Result<(Vec<RecordBatch>, Vec<StoredFile>)> {
                let (mut out, mut damaged) = (Vec::new(), Vec::new());
                for f in fs.iter().filter(|f| f.start_ms >= from) {
                    match storage.read(f, None) {
                        Ok(b) => out.extend(b),
                        Err(Error::Corrupt(why)) => {
                            tracing::error!(%why, "damaged Parquet file moved to quarantine");
                            damaged.push(f.clone());
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok((out, damaged))
            };
            let ((r, bad_r), (e, bad_e)) = (read(&fine.rollups_files)?, read(&fine.errors_files)?);
            for f in bad_r.iter().chain(&bad_e) {
                storage.quarantine(f)?;
            }
            let t = &mut state.tiers[idx(tier)];
            t.rollups_files.retain(|f| !bad_r.iter().any(|b| b.path == f.path));
            t.errors_files.retain(|f| !bad_e.iter().any(|b| b.path == f.path));
            let mut coarse_pending_r: Vec<RecordBatch> = rollup::rollups(&r, width)?.into_iter().collect();
            let mut coarse_pending_e: Vec<RecordBatch> = rollup::errors_by_cause(&e, width)?.into_iter().collect();
            let c = &mut state.tiers[idx(coarse)];
            c.pending_rollups.append(&mut coarse_pending_r);
            c.pending_errors.append(&mut coarse_pending_e);
        }
        Ok(Self {
            settings,
            cache: Mutex::new(FileCache::new(CACHE_BYTES)),
            memo: Mutex::new(Memo::new(MEMO_BYTES)),
            state: RwLock::new(state),
            open: RwLock::new(None),
            others: RwLock::new(None),
            flush: Mutex::new(()),
        })
    }

    /// Where the files are.
    pub fn storage(&self) -> &Storage {
        &self.settings.storage
    }

    /// Width of the finest window.
    pub fn fine_ms(&self) -> i64 {
        self.settings.fine_ms
    }

    /// How long `tier` keeps files.
    pub fn retention_ms(&self, tier: Tier) -> i64 {
        self.settings.retention_ms[idx(tier)]
    }

    /// Where open windows are read from.
    pub fn set_open_source(&self, source: Arc<dyn OpenWindowSource>) {
        *self.open.write().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// Where other nodes' unwritten rows are read from.
    pub fn set_other_nodes(&self, others: Arc<dyn OtherNodes>) {
        *self.others.write().unwrap_or_else(|e| e.into_inner()) = Some(others);
    }

    /// This node's rows of `table` in no file yet (pending finest rows and open windows) whose
    /// windows start in `[from_ms, to_ms)`, and the end of its finest files, read together so
    /// that a bucket being written is in exactly one of them.
    pub fn unwritten(&self, table: Table, from_ms: i64, to_ms: i64) -> Result<(i64, Vec<RecordBatch>)> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let t = &state.tiers[0];
        let pending = match table {
            Table::Rollups => &t.pending_rollups,
            Table::ErrorsByCause => &t.pending_errors,
        };
        let mut rows = split(pending, from_ms, to_ms)?.0;
        rows.extend(self.open_rows(table, from_ms, to_ms)?);
        Ok((t.persisted_until, rows))
    }

    /// Open windows of `table` starting in `[from_ms, to_ms)`, if ingest is attached.
    fn open_rows(&self, table: Table, from_ms: i64, to_ms: i64) -> Result<Option<RecordBatch>> {
        let open = self.open.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(open) = open else { return Ok(None) };
        let WindowBatches { rollups, errors_by_cause } = open.open_windows(from_ms, to_ms)?;
        let b = match table {
            Table::Rollups => rollups,
            Table::ErrorsByCause => errors_by_cause,
        };
        Ok((b.num_rows() > 0).then_some(b))
    }

    /// End of the last finest-tier bucket in Parquet: windows before it are durable.
    pub fn persisted_until(&self) -> i64 {
        self.state.read().unwrap_or_else(|e| e.into_inner()).tiers[0].persisted_until
    }

    /// Lists the store again for other nodes' files (a query node sees what ingest nodes
    /// wrote since); this node's own index is kept. Returns (nodes, files) seen.
    pub fn refresh(&self) -> Result<(usize, usize)> {
        let storage = &self.settings.storage;
        if storage.is_local() {
            return Ok((0, 0));
        }
        let others = storage.list_all()?.into_iter().filter(|l| !storage.is_own(l));
        let mut remote = Remote::from_listing(others);
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if state.last_expiry_ms > 0 {
            let now = state.last_expiry_ms;
            remote.expire(|tier| now - self.settings.retention_ms[idx(tier)]);
        }
        let counts = remote.counts();
        state.remote = remote;
        Ok(counts)
    }
}

/// How often a node of a cluster lists the object store for other nodes' new files.
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Lists other nodes' files every [`REFRESH_EVERY`] until `stop` resolves (nothing to do on
/// local disk). A failed listing keeps the last one and is logged; the next one retries.
pub async fn follow_others(store: Arc<RollupStore>, stop: impl Future<Output = ()> + Send) {
    if store.storage().is_local() {
        return stop.await;
    }
    let mut every = cellpilot_core::task::Every::new(REFRESH_EVERY, stop);
    while every.tick().await {
        let s = store.clone();
        match cellpilot_core::task::blocking(move || s.refresh()).await {
            Ok(Ok((nodes, files))) => tracing::debug!(nodes, files, "other nodes' files listed"),
            Ok(Err(e)) => {
                tracing::warn!(error = %cellpilot_core::status::Chain(&e), "listing other nodes' files; keeping the last listing")
            }
            Err(e) => {
                tracing::warn!(error = %cellpilot_core::status::Chain(&e), "listing other nodes' files did not finish")
            }
        }
    }
}
