//! The rollup store: every tier's Parquet files, the rows not yet in a file, and a view of the
//! windows ingest still has open, so readers see data received so far and nothing twice.
//!
//! Rows move in one direction under the store lock: open window -> `pending[Fine]` -> Parquet
//! file of the finest tier, whose 5-minute rollup goes to `pending[FiveMin]` -> file -> hourly
//! rollup in `pending[Hour]` -> file. A row is in exactly one place at any moment.
//!
//! This module is the read path (files, pending rows and open windows over a range); `flush` is
//! the write path (closed windows in, buckets to Parquet, retention).

mod flush;
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

fn starts(batch: &RecordBatch) -> Result<&TimestampMillisecondArray> {
    // Projected batches keep `window_start`, not necessarily in column 0.
    let i =
        batch.schema().index_of("window_start").map_err(|_| Error::Internal("a scan must keep window_start".into()))?;
    Ok(cellpilot_core::schema::column::<TimestampMillisecondArray>(batch, i)?)
}

/// Rows of `batches` whose window starts in `[from, to)`, and the rest.
fn split(batches: &[RecordBatch], from: i64, to: i64) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
    let mut inside = Vec::new();
    let mut outside = Vec::new();
    for b in batches {
        let s = starts(b)?;
        let mask: BooleanArray = s.iter().map(|v| v.map(|v| v >= from && v < to)).collect();
        let keep = arrow::compute::filter_record_batch(b, &mask)?;
        let rest = arrow::compute::filter_record_batch(b, &arrow::compute::not(&mask)?)?;
        if keep.num_rows() > 0 {
            inside.push(keep);
        }
        if rest.num_rows() > 0 {
            outside.push(rest);
        }
    }
    Ok((inside, outside))
}

/// Rows of `batches` whose window overlaps `[from, to)` given windows of `width`.
fn overlapping(batches: Vec<RecordBatch>, width: i64, from: i64, to: i64) -> Result<Vec<RecordBatch>> {
    split(&batches, from.saturating_sub(width - 1), to).map(|(inside, _)| inside)
}

fn project(batches: Vec<RecordBatch>, projection: Option<&[usize]>) -> Result<Vec<RecordBatch>> {
    match projection {
        None => Ok(batches),
        Some(cols) => batches.iter().map(|b| b.project(cols).map_err(Error::from)).collect(),
    }
}

fn check_projection(projection: Option<&[usize]>) -> Result<()> {
    match projection {
        Some(cols) if !cols.contains(&0) => {
            Err(Error::Internal("a scan's projection must keep window_start (column 0)".into()))
        }
        _ => Ok(()),
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

    /// Rows of `table` in `tier` whose windows overlap `[from_ms, to_ms)`: files, pending rows
    /// and (rolled up to the tier) the finer rows not yet in it, open windows included.
    pub fn scan(
        &self,
        table: Table,
        tier: Tier,
        from_ms: i64,
        to_ms: i64,
        projection: Option<&[usize]>,
    ) -> Result<Vec<RecordBatch>> {
        check_projection(projection)?;
        let width = tier.width_ms(self.settings.fine_ms);
        let (file_list, memory) = self.sources(table, tier, (from_ms, to_ms), false)?;
        let mut out = project(overlapping(memory, width, from_ms, to_ms)?, projection)?;
        for Source { file: f, tier: of } in &file_list {
            let rows = if *of != tier {
                self.rolled_up(f, table, tier, from_ms, to_ms)?
            } else if self.wholly_inside(f, width, from_ms, to_ms) {
                // A file wholly inside the range needs no row filter.
                self.decoded(f)?.as_ref().clone()
            } else {
                overlapping(self.decoded(f)?.as_ref().clone(), width, from_ms, to_ms)?
            };
            out.extend(project(rows, projection)?);
        }
        Ok(out)
    }

    /// Like [`RollupStore::scan`], but every file wholly inside the range comes as what
    /// `derive` makes of its rows, computed once per file and `key` and then reused (a file
    /// already derived is not even decoded again). `key` names what is derived: two callers
    /// deriving different things must pass different keys. `derive` returns the value and its
    /// approximate size in bytes, which the memo's budget counts.
    pub fn scan_derived<T: Send + Sync + 'static>(
        &self,
        table: Table,
        tier: Tier,
        range: (i64, i64),
        key: &str,
        derive: impl Fn(&[RecordBatch]) -> Result<(T, usize)>,
    ) -> Result<Vec<Piece<T>>> {
        self.derived(table, tier, range, (key, &derive), None::<(&str, &Derive<T>)>)
    }

    /// Like [`RollupStore::scan_derived`], and files overlapping the range's edges come derived
    /// too, as [`Piece::Edge`], by `edge`: values the caller cuts to the range (kept per window).
    /// `whole` and `edge` are each a (key, derive) pair.
    pub fn scan_derived_edges<T: Send + Sync + 'static, E: Send + Sync + 'static>(
        &self,
        table: Table,
        tier: Tier,
        range: (i64, i64),
        whole: (&str, impl Fn(&[RecordBatch]) -> Result<(T, usize)>),
        edge: (&str, impl Fn(&[RecordBatch]) -> Result<(E, usize)>),
    ) -> Result<Vec<Piece<T, E>>> {
        self.derived(table, tier, range, whole, Some(edge))
    }

    fn derived<T: Send + Sync + 'static, E: Send + Sync + 'static>(
        &self,
        table: Table,
        tier: Tier,
        (from_ms, to_ms): (i64, i64),
        (key, derive): (&str, impl Fn(&[RecordBatch]) -> Result<(T, usize)>),
        edge: Option<(&str, impl Fn(&[RecordBatch]) -> Result<(E, usize)>)>,
    ) -> Result<Vec<Piece<T, E>>> {
        let width = tier.width_ms(self.settings.fine_ms);
        let (file_list, memory) = self.sources(table, tier, (from_ms, to_ms), edge.is_some())?;
        let mut out = vec![Piece::Rows(overlapping(memory, width, from_ms, to_ms)?)];
        for Source { file: f, tier: of } in &file_list {
            let whole = self.wholly_inside(f, width, from_ms, to_ms);
            if *of != tier {
                // A finer file inside the range sums like the coarse rows it stands for: a
                // finer bucket never straddles a coarse window.
                if whole && edge.is_some() {
                    out.push(Piece::Derived(self.memoized(f, key, &derive)?));
                } else {
                    out.push(Piece::Rows(self.rolled_up(f, table, tier, from_ms, to_ms)?));
                }
            } else if whole {
                out.push(Piece::Derived(self.memoized(f, key, &derive)?));
            } else if let Some((key, derive)) = &edge {
                out.push(Piece::Edge(self.memoized(f, key, derive)?));
            } else {
                out.push(Piece::Rows(overlapping(self.decoded(f)?.as_ref().clone(), width, from_ms, to_ms)?));
            }
        }
        Ok(out)
    }

    /// What `derive` makes of the rows of `f`, from the memo or computed and kept there.
    fn memoized<T: Send + Sync + 'static>(
        &self,
        f: &StoredFile,
        key: &str,
        derive: impl Fn(&[RecordBatch]) -> Result<(T, usize)>,
    ) -> Result<Arc<T>> {
        let memo_key = (f.path.clone(), key.to_string());
        let known = self.memo.lock().unwrap_or_else(|e| e.into_inner()).get(&memo_key);
        if let Some(v) = known.and_then(|v| v.downcast::<T>().ok()) {
            return Ok(v);
        }
        let (v, bytes) = derive(&self.decoded(f)?)?;
        let v = Arc::new(v);
        let bytes = bytes + memo_key.0.as_os_str().len() + memo_key.1.len() + 64;
        self.memo.lock().unwrap_or_else(|e| e.into_inner()).put(memo_key, v.clone(), bytes);
        Ok(v)
    }

    /// The files answering `table`/`tier` over `[from_ms, to_ms)` (this node's, then other
    /// nodes') and the memory rows (this node's, then other nodes' unwritten ones).
    ///
    /// With `files_first`, this node's coarse rows not written yet come as the finer files
    /// holding them (as other nodes' do) rather than as the rows rolled up in memory, so that
    /// they can be derived per file.
    fn sources(
        &self,
        table: Table,
        tier: Tier,
        (from_ms, to_ms): (i64, i64),
        files_first: bool,
    ) -> Result<(Vec<Source>, Vec<RecordBatch>)> {
        let (lo, hi) = self.fine_span(tier, from_ms, to_ms);
        let others = self.others.read().unwrap_or_else(|e| e.into_inner()).clone();
        let fetched = match others {
            Some(o) => o.unwritten(table, lo, hi)?,
            None => Vec::new(),
        };
        let mut relisted = false;
        loop {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            // A node that wrote a bucket after the last listing has rows in neither place: list again.
            let behind = fetched.iter().any(|u| u.persisted_until > state.remote.fine_until(&u.node));
            if behind && !relisted {
                drop(state);
                self.refresh()?;
                relisted = true;
                continue;
            }
            // Rows of buckets the listing already has as files (written since the fetch) are not counted twice.
            let mut extra = Vec::new();
            for u in &fetched {
                extra.extend(split(&u.rows, state.remote.fine_until(&u.node), i64::MAX)?.0);
            }
            // Finer files stand in for this node's coarse rows only while retention has deleted
            // none of them; otherwise the pending coarse rows are the only copy.
            let files_first = files_first && Self::finer_files_kept(&state, tier);
            let mut file_list = Vec::new();
            let tier_files = |t: Tier| {
                let ts = &state.tiers[idx(t)];
                let fs = match table {
                    Table::Rollups => &ts.rollups_files,
                    Table::ErrorsByCause => &ts.errors_files,
                };
                (fs.as_slice(), ts.persisted_until)
            };
            remote::layered(tier, files_first, (from_ms, to_ms), tier_files, &mut file_list);
            file_list.extend(state.remote.sources(table, tier, from_ms, to_ms));
            let memory = self.memory_rows(&state, table, tier, (lo, hi), extra, !files_first)?;
            return Ok((file_list, memory));
        }
    }

    /// Whether every finer file of this node past its coarser tiers' last buckets, up to `tier`,
    /// is still there: none was dropped (retention, damage) past those buckets.
    fn finer_files_kept(state: &State, tier: Tier) -> bool {
        let mut boundary = i64::MIN;
        for t in Tier::ALL.into_iter().rev().filter(|t| *t <= tier) {
            let ts = &state.tiers[idx(t)];
            if t < tier && ts.dropped_until > boundary {
                return false;
            }
            boundary = boundary.max(ts.persisted_until);
        }
        true
    }

    /// The span of finest windows whose rows, rolled up, answer `tier` over `[from_ms, to_ms)`:
    /// whole buckets of the tier.
    fn fine_span(&self, tier: Tier, from_ms: i64, to_ms: i64) -> (i64, i64) {
        let w = tier.width_ms(self.settings.fine_ms);
        let up_to = to_ms.saturating_add(w - 1);
        if tier == Tier::Fine {
            (from_ms, to_ms)
        } else {
            (from_ms - from_ms.rem_euclid(w), up_to - up_to.rem_euclid(w))
        }
    }

    /// The rows of `f`, a file of a finer tier than `tier`, rolled up to `tier`'s windows (once
    /// per file and tier, then kept in the memo) and cut to those overlapping `[from_ms, to_ms)`.
    fn rolled_up(
        &self,
        f: &StoredFile,
        table: Table,
        tier: Tier,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<RecordBatch>> {
        let w = tier.width_ms(self.settings.fine_ms);
        let key = (f.path.clone(), format!("rolled up to {}", tier.dir_name()));
        let known = self.memo.lock().unwrap_or_else(|e| e.into_inner()).get(&key);
        let up = match known.and_then(|v| v.downcast::<Vec<RecordBatch>>().ok()) {
            Some(up) => up,
            None => {
                let rows = self.decoded(f)?;
                let up: Vec<RecordBatch> = match table {
                    Table::Rollups => rollup::rollups(&rows, w)?,
                    Table::ErrorsByCause => rollup::errors_by_cause(&rows, w)?,
                }
                .into_iter()
                .collect();
                let up = Arc::new(up);
                let bytes = up.iter().map(RecordBatch::get_array_memory_size).sum::<usize>() + key.1.len() + 64;
                self.memo.lock().unwrap_or_else(|e| e.into_inner()).put(key, up.clone(), bytes);
                up
            }
        };
        overlapping(up.as_ref().clone(), w, from_ms, to_ms)
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

    /// Whether every window of `f` overlaps `[from_ms, to_ms)`.
    fn wholly_inside(&self, f: &StoredFile, width: i64, from_ms: i64, to_ms: i64) -> bool {
        f.start_ms > from_ms.saturating_sub(width) && f.end_ms <= to_ms
    }

    /// The rows of `f`, decoded once and kept while the cache has room.
    fn decoded(&self, f: &StoredFile) -> Result<Arc<Vec<RecordBatch>>> {
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&f.path);
        Ok(match cached {
            Some(b) => b,
            None => match self.settings.storage.read(f, None) {
                Ok(b) => {
                    let b = Arc::new(b);
                    let bytes = b.iter().map(RecordBatch::get_array_memory_size).sum();
                    self.cache.lock().unwrap_or_else(|e| e.into_inner()).put(f.path.clone(), b.clone(), bytes);
                    b
                }
                // One damaged file must not fail every query over its range from now on.
                Err(Error::Corrupt(why)) => {
                    tracing::error!(%why, "damaged Parquet file moved to quarantine; its rows are left out");
                    self.forget_damaged(f);
                    Arc::new(Vec::new())
                }
                Err(e) => return Err(e),
            },
        })
    }

    /// Moves a damaged file aside and out of the index.
    fn forget_damaged(&self, f: &StoredFile) {
        if let Err(e) = self.settings.storage.quarantine(f) {
            tracing::error!(error = %e, "moving a damaged Parquet file to quarantine failed");
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        for t in &mut state.tiers {
            let before = t.rollups_files.len() + t.errors_files.len();
            t.rollups_files.retain(|x| x.path != f.path);
            t.errors_files.retain(|x| x.path != f.path);
            if t.rollups_files.len() + t.errors_files.len() < before {
                t.dropped_until = t.dropped_until.max(f.end_ms);
            }
        }
        state.remote.forget(f);
    }

    /// Memory rows of `tier`: its pending rows plus finer memory rows (this node's and `others`,
    /// finest rows of other nodes) rolled up on the fly. Finer rows are rolled up whole buckets at
    /// a time: only those of the tier's buckets overlapping the range, `[lo, hi)`, are needed.
    /// Without `coarse_pending`, the coarse tiers' pending rows are left out (the caller reads the
    /// finer files they were rolled up from).
    fn memory_rows(
        &self,
        state: &State,
        table: Table,
        tier: Tier,
        (lo, hi): (i64, i64),
        others: Vec<RecordBatch>,
        coarse_pending: bool,
    ) -> Result<Vec<RecordBatch>> {
        let pending = |t: Tier| -> Result<Vec<RecordBatch>> {
            if t != Tier::Fine && !coarse_pending {
                return Ok(Vec::new());
            }
            let s = &state.tiers[idx(t)];
            let rows = match table {
                Table::Rollups => &s.pending_rollups,
                Table::ErrorsByCause => &s.pending_errors,
            };
            if t == tier { Ok(rows.clone()) } else { Ok(split(rows, lo, hi)?.0) }
        };
        let mut fine = pending(Tier::Fine)?;
        fine.extend(self.open_rows(table, lo, hi)?);
        fine.extend(others);
        let up = |rows: &[RecordBatch], t: Tier| -> Result<Vec<RecordBatch>> {
            let w = t.width_ms(self.settings.fine_ms);
            Ok(match table {
                Table::Rollups => rollup::rollups(rows, w)?,
                Table::ErrorsByCause => rollup::errors_by_cause(rows, w)?,
            }
            .into_iter()
            .collect())
        };
        match tier {
            Tier::Fine => Ok(fine),
            Tier::FiveMin => {
                let mut out = pending(Tier::FiveMin)?;
                out.extend(up(&fine, Tier::FiveMin)?);
                Ok(out)
            }
            Tier::Hour => {
                let mut five = pending(Tier::FiveMin)?;
                five.extend(up(&fine, Tier::FiveMin)?);
                let mut out = pending(Tier::Hour)?;
                out.extend(up(&five, Tier::Hour)?);
                Ok(out)
            }
        }
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
            Ok(Err(e)) => tracing::warn!(error = %e, "listing other nodes' files; keeping the last listing"),
            Err(e) => tracing::warn!(error = %e, "listing other nodes' files did not finish"),
        }
    }
}
