//! The read path: rows of a table in a tier over a range, from files, pending rows and open
//! windows (rolled up to the tier), each file decoded once and its derived sums memoized.

use super::*;

pub(super) fn starts(batch: &RecordBatch) -> Result<&TimestampMillisecondArray> {
    // Projected batches keep `window_start`, not necessarily in column 0.
    let i = batch
        .schema()
        .index_of("window_start")
        .map_err(|_| cellpilot_core::error::Internal::new("a scan must keep window_start"))?;
    Ok(cellpilot_core::schema::column::<TimestampMillisecondArray>(batch, i)?)
}

/// Rows of `batches` whose window starts in `[from, to)`, and the rest.
pub(super) fn split(batches: &[RecordBatch], from: i64, to: i64) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
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
pub(super) fn overlapping(batches: Vec<RecordBatch>, width: i64, from: i64, to: i64) -> Result<Vec<RecordBatch>> {
    split(&batches, from.saturating_sub(width - 1), to).map(|(inside, _)| inside)
}

pub(super) fn project(batches: Vec<RecordBatch>, projection: Option<&[usize]>) -> Result<Vec<RecordBatch>> {
    match projection {
        None => Ok(batches),
        Some(cols) => batches.iter().map(|b| b.project(cols).map_err(Error::from)).collect(),
    }
}

pub(super) fn check_projection(projection: Option<&[usize]>) -> Result<()> {
    match projection {
        Some(cols) if !cols.contains(&0) => {
            Err(cellpilot_core::error::Internal::new("a scan's projection must keep window_start (column 0)").into())
        }
        _ => Ok(()),
    }
}

impl RollupStore {
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

    pub(super) fn derived<T: Send + Sync + 'static, E: Send + Sync + 'static>(
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
    pub(super) fn memoized<T: Send + Sync + 'static>(
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
    pub(super) fn sources(
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
    pub(super) fn finer_files_kept(state: &State, tier: Tier) -> bool {
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
    pub(super) fn fine_span(&self, tier: Tier, from_ms: i64, to_ms: i64) -> (i64, i64) {
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
    pub(super) fn rolled_up(
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

    /// Whether every window of `f` overlaps `[from_ms, to_ms)`.
    pub(super) fn wholly_inside(&self, f: &StoredFile, width: i64, from_ms: i64, to_ms: i64) -> bool {
        f.start_ms > from_ms.saturating_sub(width) && f.end_ms <= to_ms
    }

    /// The rows of `f`, decoded once and kept while the cache has room.
    pub(super) fn decoded(&self, f: &StoredFile) -> Result<Arc<Vec<RecordBatch>>> {
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
    pub(super) fn forget_damaged(&self, f: &StoredFile) {
        if let Err(e) = self.settings.storage.quarantine(f) {
            tracing::error!(error = %cellpilot_core::status::Chain(&e), "moving a damaged Parquet file to quarantine failed");
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
    pub(super) fn memory_rows(
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
