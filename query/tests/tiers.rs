//! Closed windows flow into Parquet tiers: every tier holds the same counts, quantiles merged
//! across windows and tiers equal the quantile of the union of the samples, and all of it is
//! there again after reopening the store.

use arrow::array::{Array, UInt64Array};
use arrow::record_batch::RecordBatch;
use cellpilot_core::latency::SparseHistogram;
use cellpilot_core::schema::{ErrorsByCauseBuilder, RollupValues, RollupsBuilder, RowKey};
use cellpilot_core::store::{RollupSink, WindowBatches};
use cellpilot_query::files::Table;
use cellpilot_query::tier::{DAY_MS, HOUR_MS, Tier};
use cellpilot_query::{RollupStore, StoreSettings};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;

mod support;
use support::{FINE, LATENESS, T0, check, nearest_rank, windows};

fn settings(dir: &std::path::Path) -> StoreSettings {
    StoreSettings {
        storage: std::sync::Arc::new(cellpilot_query::storage::Storage::local(dir)),
        fine_ms: FINE,
        lateness_ms: LATENESS,
        retention_ms: [i64::MAX / 4; 3],
    }
}

#[test]
fn tiers_agree_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let mut truth = BTreeMap::new();
    let store = RollupStore::open(settings(dir.path())).unwrap();
    // A day and a half, closed an hour at a time.
    let end = T0 + DAY_MS + 12 * HOUR_MS;
    let mut t = T0;
    while t < end {
        let batch = windows(&mut rng, t, t + HOUR_MS, &mut truth);
        let mut once = Some(batch);
        store.close(t + HOUR_MS + LATENESS, &mut || Ok(once.take())).unwrap();
        t += HOUR_MS;
    }
    let fine = cellpilot_query::files::list(dir.path(), Table::Rollups, Tier::Fine).unwrap();
    assert_eq!(fine.len(), 36 * 12, "one finest-tier file per 5 minutes");
    assert_eq!(cellpilot_query::files::list(dir.path(), Table::Rollups, Tier::FiveMin).unwrap().len(), 36);
    assert_eq!(
        cellpilot_query::files::list(dir.path(), Table::Rollups, Tier::Hour).unwrap().len(),
        1,
        "one complete day"
    );
    assert_eq!(store.persisted_until(), end);
    check(&store, &truth, T0, end);
    drop(store);

    let reopened = RollupStore::open(settings(dir.path())).unwrap();
    check(&reopened, &truth, T0, end);

    // Half a bucket more, not complete yet: visible from memory, not in a file.
    let extra = windows(&mut rng, end, end + 150_000, &mut truth);
    let mut once = Some(extra);
    reopened.close(end + 150_000 + LATENESS, &mut || Ok(once.take())).unwrap();
    assert_eq!(reopened.persisted_until(), end);
    check(&reopened, &truth, T0, end + 150_000);
}

#[test]
fn files_carry_the_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(4);
    let store = RollupStore::open(settings(dir.path())).unwrap();
    let mut once = Some(windows(&mut rng, T0, T0 + 300_000, &mut BTreeMap::new()));
    store.close(T0 + 300_000 + LATENESS, &mut || Ok(once.take())).unwrap();
    let f = &cellpilot_query::files::list(dir.path(), Table::Rollups, Tier::Fine).unwrap()[0];
    let reader = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&f.path).unwrap()).unwrap();
    use parquet::file::reader::FileReader;
    let kv = reader.metadata().file_metadata().key_value_metadata().unwrap().clone();
    assert!(kv.iter().any(|k| k.key == "cellpilot.schema_version" && k.value.as_deref() == Some("2")));
}

/// Checks per-cell answers against the samples: exact counts, P99.9 within 1 %.
fn check_cells(got: &[cellpilot_query::cells::CellStats], truth: &BTreeMap<String, support::Truth>) {
    assert_eq!(got.len(), truth.len());
    for c in got {
        let t = &truth[&c.cell];
        assert_eq!((c.requests, c.errors), (t.samples.len() as u64, t.errors), "{}", c.cell);
        let exact = nearest_rank(&t.samples, 0.999);
        let rel = (c.quantiles.p999_us as f64 - exact as f64).abs() / exact as f64;
        assert!(rel <= 0.01, "{} p999 {} vs exact {exact}", c.cell, c.quantiles.p999_us);
    }
}

#[test]
fn typed_cells_mix_tiers_without_changing_the_answer() {
    use cellpilot_query::cells::{Measures, cells_from, plan};
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let store = RollupStore::open(settings(dir.path())).unwrap();
    let end = T0 + 6 * HOUR_MS;
    // A range with ragged edges: its samples are those of the finest windows overlapping it.
    let (from, to) = (T0 + 7 * 60_000 + 3_000, T0 + 5 * HOUR_MS + 17 * 60_000 + 5_000);
    let (inner_from, inner_to) = (from - from % FINE, to - to % FINE + FINE);
    let (mut all, mut inside) = (BTreeMap::new(), BTreeMap::new());
    for (a, b) in [(T0, inner_from), (inner_from, inner_to), (inner_to, end)] {
        let mut part = BTreeMap::new();
        let mut once = Some(windows(&mut rng, a, b, &mut part));
        store.close(b + LATENESS, &mut || Ok(once.take())).unwrap();
        for (cell, t) in &part {
            let u: &mut support::Truth = all.entry(cell.clone()).or_default();
            u.samples.extend(&t.samples);
            u.errors += t.errors;
        }
        if a == inner_from {
            inside = part;
        }
    }
    // The whole range from whole files' sums, the ragged one from edge files cut to its windows:
    // both derived once, then read from the memo, with the same answer the second time.
    let whole = plan(T0, end, i64::MIN);
    let parts = plan(from, to, i64::MIN);
    assert!(parts.iter().any(|p| p.tier == Tier::Hour) && parts.iter().any(|p| p.tier == Tier::FiveMin));
    for _ in 0..2 {
        check_cells(&cells_from(&store, T0, end, &whole, Measures::WithLatency).unwrap(), &all);
        check_cells(&cells_from(&store, from, to, &parts, Measures::WithLatency).unwrap(), &inside);
    }
    let mixed = cells_from(&store, from, to, &parts, Measures::WithLatency).unwrap();
    let fine_only = cellpilot_query::cells::Part { tier: Tier::Fine, from_ms: from, to_ms: to, inside: false };
    assert_eq!(mixed, cells_from(&store, from, to, &[fine_only], Measures::WithLatency).unwrap());
    let totals = cells_from(&store, from, to, &parts, Measures::Totals).unwrap();
    for (t, m) in totals.iter().zip(&mixed) {
        assert_eq!((t.requests, t.errors), (m.requests, m.errors));
    }
}

#[tokio::test]
async fn sql_quantiles_after_reopen_match_the_samples() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    let mut truth = BTreeMap::new();
    let store = RollupStore::open(settings(dir.path())).unwrap();
    let end = T0 + DAY_MS + 2 * HOUR_MS;
    let mut t = T0;
    while t < end {
        let mut once = Some(windows(&mut rng, t, t + HOUR_MS, &mut truth));
        store.close(t + HOUR_MS + LATENESS, &mut || Ok(once.take())).unwrap();
        t += HOUR_MS;
    }
    drop(store);
    let store = std::sync::Arc::new(RollupStore::open(settings(dir.path())).unwrap());
    let limits = cellpilot_query::sql::Limits {
        memory: 1 << 30,
        timeout: std::time::Duration::from_secs(60),
        max_rows: 1000,
        spill: Some((dir.path().join("spill"), 1 << 30)),
    };
    let ctx = cellpilot_query::sql::context(&store, &limits, Default::default()).unwrap();
    for table in ["rollups", "rollups_5m", "rollups_1h"] {
        let q = format!(
            "SELECT cell, sum(requests), latency_quantile(latency_hist, 0.999) FROM {table} GROUP BY cell ORDER BY cell"
        );
        let (schema, batches) = cellpilot_query::sql::run(&ctx, &q, &limits).await.unwrap();
        let json = cellpilot_query::sql::to_json(&schema, &batches).unwrap();
        for row in json["rows"].as_array().unwrap() {
            let t = &truth[row[0].as_str().unwrap()];
            assert_eq!(row[1], t.samples.len() as u64, "{table}");
            let exact = nearest_rank(&t.samples, 0.999) as f64;
            let got = row[2].as_f64().unwrap();
            assert!((got - exact).abs() / exact <= 0.01, "{table}: {got} vs {exact}");
        }
    }
    // Scanned rows count against the query's memory pool: a small pool refuses the same scan.
    let small = cellpilot_query::sql::Limits { memory: 64 << 10, ..limits.clone() };
    let ctx = cellpilot_query::sql::context(&store, &small, Default::default()).unwrap();
    let e = cellpilot_query::sql::run(&ctx, "SELECT count(*) FROM rollups", &small).await.unwrap_err();
    assert!(e.to_string().contains("esources exhausted"), "{e}");
    // Strings a query asks for are bounded by the same limit before they are made.
    let pool = cellpilot_query::sql::Limits { memory: 64 << 20, ..limits.clone() };
    let ctx = cellpilot_query::sql::context(&store, &pool, Default::default()).unwrap();
    for q in [
        "SELECT length(repeat('x', 268435456))",
        "SELECT length(lpad('x', 268435456))",
        "SELECT length(rpad('x', 268435456, 'ab'))",
        "SELECT max(length(repeat(cell, 100000000))) FROM rollups",
        "SELECT length(concat(repeat('x', 40000000), repeat('y', 40000000)))",
        "SELECT length(concat_ws(repeat('-', 20000000), 'a', 'b', 'c', 'd'))",
        "SELECT length(repeat('x', 40000000) || repeat('y', 40000000))",
        "SELECT length(concat(cell, repeat('x', 60000000), cell, repeat('x', 60000000))) FROM rollups",
    ] {
        let e = cellpilot_query::sql::run(&ctx, q, &pool).await.unwrap_err().to_string();
        assert!(e.contains("over the query's memory limit") && e.contains("[query] memory_limit"), "{q}: {e}");
    }
    let (schema, batches) =
        cellpilot_query::sql::run(&ctx, "SELECT length(repeat('ab', 1000)), lpad('7', 3, '0')", &pool).await.unwrap();
    let json = cellpilot_query::sql::to_json(&schema, &batches).unwrap();
    assert_eq!(json["rows"][0], serde_json::json!([2000, "007"]), "small ones work as before");
    let q = "SELECT concat('a', 1, 'b'), concat_ws('-', 'x', 'y'), 'p' || 'q' || 7, 'p' || NULL, concat('p', NULL)";
    let (schema, batches) = cellpilot_query::sql::run(&ctx, q, &pool).await.unwrap();
    let json = cellpilot_query::sql::to_json(&schema, &batches).unwrap();
    assert_eq!(json["rows"][0], serde_json::json!(["a1b", "x-y", "pq7", null, "p"]), "|| keeps its null rule");
    let q = "SELECT max(cell || '/' || service) FROM rollups";
    let (schema, batches) = cellpilot_query::sql::run(&ctx, q, &pool).await.unwrap();
    let json = cellpilot_query::sql::to_json(&schema, &batches).unwrap();
    assert!(json["rows"][0][0].as_str().is_some_and(|s| s.contains('/')), "{json}");
}

/// A sort larger than the memory pool spills to `spill`'s directory, up to its cap: with room
/// there it finishes, without spilling it is refused, and past the cap it fails naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorts_over_the_pool_spill_within_max_spill() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(RollupStore::open(settings(dir.path())).unwrap());
    let mut rng = StdRng::seed_from_u64(21);
    let mut truth = BTreeMap::new();
    let (step, end) = (5 * 60_000, T0 + 20 * 60_000);
    let mut t = T0;
    while t < end {
        let mut once = Some(windows(&mut rng, t, t + step, &mut truth));
        store.close(t + step + LATENESS, &mut || Ok(once.take())).unwrap();
        t += step;
    }
    // Every row, the histograms too, sorted by a key that defeats any order the files have.
    // A window over every row needs the whole sort (a LIMIT's top-k could not spill).
    let q = "SELECT max(n) + 0 * count(h) FROM (SELECT a.latency_hist AS h, row_number() OVER (ORDER BY b.window_start DESC, a.cell, b.cell) AS n FROM rollups a CROSS JOIN rollups b)";
    let limits = |spill: Option<u64>| cellpilot_query::sql::Limits {
        memory: 1 << 20,
        timeout: std::time::Duration::from_secs(60),
        max_rows: 1_000_000,
        spill: spill.map(|max| (dir.path().join("spill"), max)),
    };
    let run = |l: cellpilot_query::sql::Limits| {
        let store = store.clone();
        async move {
            let ctx = cellpilot_query::sql::context(&store, &l, Default::default()).unwrap();
            let (schema, batches) = cellpilot_query::sql::run(&ctx, q, &l).await?;
            let json = cellpilot_query::sql::to_json(&schema, &batches).unwrap();
            Ok::<_, cellpilot_query::Error>(json["rows"][0][0].as_f64().unwrap_or_else(|| panic!("{json}")))
        }
    };
    let rows = run(limits(Some(1 << 30))).await.expect("spilled and finished");
    assert_eq!(rows, 240.0 * 240.0, "every pair of rows");
    let e = run(limits(None)).await.unwrap_err().to_string();
    assert!(e.contains("esources exhausted"), "without spilling: {e}");
    let e = run(limits(Some(4 << 10))).await.unwrap_err().to_string();
    assert!(e.contains("[query] max_spill"), "past the cap: {e}");
}

fn requests(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .map(|b| arrow::compute::sum(b.column(5).as_any().downcast_ref::<UInt64Array>().unwrap()).unwrap_or(0))
        .sum()
}

/// Finer files stand in for coarse rows not written yet only while all of them are kept: once
/// retention drops some, the pending coarse rows answer, and nothing is lost.
#[test]
fn coarse_rows_outlive_their_expired_finer_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(13);
    let mut truth = BTreeMap::new();
    let store = RollupStore::open(StoreSettings {
        retention_ms: [20 * 60_000, i64::MAX / 4, i64::MAX / 4],
        ..settings(dir.path())
    })
    .unwrap();
    let (step, end) = (5 * 60_000, T0 + 50 * 60_000);
    let mut t = T0;
    while t < end {
        let mut once = Some(windows(&mut rng, t, t + step, &mut truth));
        store.close(t + step + LATENESS, &mut || Ok(once.take())).unwrap();
        t += step;
    }
    let kept = cellpilot_query::files::list(dir.path(), Table::Rollups, Tier::Fine).unwrap().len();
    assert!(kept < 10, "retention dropped finest files ({kept} kept)");
    let now = end + LATENESS;
    for _ in 0..2 {
        check_cells(&cellpilot_query::cells::cells(&store, T0, end, now).unwrap(), &truth);
    }
}

/// `scan_derived` answers like `scan`: whole files inside the range come derived (once per file
/// and key, then from the memo), edge files and memory rows as rows.
#[test]
fn derived_scans_cover_the_range_once_and_reuse_per_file_values() {
    use cellpilot_query::store::Piece;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    let mut truth = BTreeMap::new();
    let store = RollupStore::open(settings(dir.path())).unwrap();
    let mut t = T0;
    while t < T0 + 3 * HOUR_MS {
        let mut once = Some(windows(&mut rng, t, t + HOUR_MS, &mut truth));
        store.close(t + HOUR_MS + LATENESS, &mut || Ok(once.take())).unwrap();
        t += HOUR_MS;
    }
    // One more hour still in memory (not closed).
    let mut open = Some(windows(&mut rng, t, t + 20 * 60_000, &mut truth));
    store.close(t, &mut || Ok(open.take())).unwrap();
    let derives = AtomicUsize::new(0);
    let derive = |b: &[RecordBatch]| {
        derives.fetch_add(1, Ordering::Relaxed);
        Ok((requests(b), 8))
    };
    for tier in Tier::ALL {
        for (from, to) in [(T0 + 7 * 60_000 + 3_000, T0 + 2 * HOUR_MS + 3 * 60_000), (T0, T0 + 4 * HOUR_MS)] {
            let expected = requests(&store.scan(Table::Rollups, tier, from, to, None).unwrap());
            let sum = |key: &str| -> (u64, usize) {
                let pieces = store.scan_derived(Table::Rollups, tier, (from, to), key, derive).unwrap();
                let derived = pieces.iter().filter(|p| matches!(p, Piece::Derived(_))).count();
                let total = pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Derived(n) => **n,
                        Piece::Edge(_) => panic!("scan_derived gives no edge files"),
                        Piece::Rows(b) => requests(b),
                    })
                    .sum();
                (total, derived)
            };
            let before = derives.load(Ordering::Relaxed);
            // Keys of their own per range, so files shared with the other range count here too.
            let (k1, k2) = (format!("requests {from}"), format!("another question {from}"));
            let (first, derived) = sum(&k1);
            assert_eq!(first, expected, "{tier} {from}..{to}");
            assert_eq!(derives.load(Ordering::Relaxed) - before, derived, "each whole file derived once");
            let again = derives.load(Ordering::Relaxed);
            assert_eq!(sum(&k1).0, expected);
            assert_eq!(derives.load(Ordering::Relaxed), again, "reused, not derived again");
            assert_eq!(sum(&k2).0, expected);
            assert_eq!(derives.load(Ordering::Relaxed) - again, derived, "a different key derives anew");
        }
    }
    // Per-window values cut to the range: edge files come derived too, and the sum is the same.
    let per_window = |b: &[RecordBatch]| {
        let mut out: Vec<(i64, i64, u64)> = Vec::new();
        for b in b {
            let starts = b.column(0).as_any().downcast_ref::<arrow::array::TimestampMillisecondArray>().unwrap();
            let ends = b.column(1).as_any().downcast_ref::<arrow::array::TimestampMillisecondArray>().unwrap();
            let n = b.column(5).as_any().downcast_ref::<UInt64Array>().unwrap();
            out.extend((0..b.num_rows()).map(|i| (starts.value(i), ends.value(i), n.value(i))));
        }
        Ok((out, 8))
    };
    for tier in Tier::ALL {
        let (from, to) = (T0 + 7 * 60_000 + 3_000, T0 + 2 * HOUR_MS + 3 * 60_000);
        let expected = requests(&store.scan(Table::Rollups, tier, from, to, None).unwrap());
        let pieces = store
            .scan_derived_edges(Table::Rollups, tier, (from, to), ("requests", derive), ("per window", per_window))
            .unwrap();
        let mut edges = 0;
        let total: u64 = pieces
            .iter()
            .map(|p| match p {
                Piece::Derived(n) => **n,
                Piece::Edge(list) => {
                    edges += 1;
                    list.iter().filter(|(s, e, _)| *s < to && *e > from).map(|(_, _, n)| n).sum()
                }
                Piece::Rows(b) => requests(b),
            })
            .sum();
        assert_eq!(total, expected, "{tier}");
        if tier != Tier::Hour {
            assert!(edges > 0, "{tier}: the range's ragged edges fall inside files");
        }
    }
    // Fine tier over the whole closed range: most of it came derived.
    let pieces = store.scan_derived(Table::Rollups, Tier::Fine, (T0, T0 + 3 * HOUR_MS), "requests", derive).unwrap();
    assert!(pieces.iter().filter(|p| matches!(p, Piece::Derived(_))).count() >= 30);
}

/// A GROUP BY over windows keeps one small group per window: the histogram aggregates stay small
/// enough for thousands of groups in a modest memory pool, and every group's quantile is that of
/// its own samples.
#[tokio::test]
async fn many_small_groups_fit_the_memory_pool() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(RollupStore::open(settings(dir.path())).unwrap());
    let mut rng = StdRng::seed_from_u64(21);
    let mut truth: BTreeMap<(i64, String), Vec<u64>> = BTreeMap::new();
    let mut rollups = RollupsBuilder::default();
    // 12 hours of 10 s windows for two cells: 8,640 groups.
    for w in 0..4_320i64 {
        let ws = T0 + w * FINE;
        for cell in ["a", "b"] {
            let mut h = SparseHistogram::default();
            let samples: Vec<u64> = (0..rng.random_range(1..8)).map(|_| rng.random_range(1_000..2_000_000)).collect();
            for v in &samples {
                h.record(*v);
            }
            let key = RowKey { window_start_ms: ws, window_end_ms: ws + FINE, cell, service: "s", route: "r" };
            let v = RollupValues {
                requests: samples.len() as u64,
                errors: 0,
                hist: &h.serialize(),
                error_hist: Some(&[]),
                quantiles: h.quantiles(),
                exact: true,
            };
            rollups.push(key, v);
            truth.insert((ws, cell.to_string()), samples);
        }
    }
    let errors = ErrorsByCauseBuilder::default().finish().unwrap();
    store.add_closed(WindowBatches { rollups: rollups.finish().unwrap(), errors_by_cause: errors });
    // A dense histogram per group would need 8,640 × 2 × 26 KiB ≈ 450 MB.
    let limits = cellpilot_query::sql::Limits {
        memory: 64 << 20,
        timeout: std::time::Duration::from_secs(120),
        max_rows: 100_000,
        spill: None,
    };
    let ctx = cellpilot_query::sql::context(&store, &limits, Default::default()).unwrap();
    let q = "SELECT CAST(window_start AS BIGINT) AS ws, cell, latency_quantile(latency_hist, 0.999), \
             hdr_quantile(hdr_merge(latency_hist), 0.5) FROM rollups GROUP BY window_start, cell";
    let (schema, batches) = cellpilot_query::sql::run(&ctx, q, &limits).await.unwrap();
    let json = cellpilot_query::sql::to_json(&schema, &batches).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), truth.len());
    for row in rows {
        let samples = &truth[&(row[0].as_i64().unwrap(), row[1].as_str().unwrap().to_string())];
        for (col, q) in [(2, 0.999), (3, 0.5)] {
            let exact = nearest_rank(samples, q) as f64;
            let got = row[col].as_f64().unwrap();
            assert!((got - exact).abs() / exact <= 0.01, "q{q}: {got} vs {exact} ({samples:?})");
        }
    }
}

#[test]
fn damaged_files_are_quarantined_and_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let mut truth = BTreeMap::new();
    let store = RollupStore::open(settings(dir.path())).unwrap();
    // Half an hour: fine files whose 5-minute and hourly rows are rebuilt from them on open.
    let mut once = Some(windows(&mut rng, T0, T0 + HOUR_MS / 2, &mut truth));
    store.close(T0 + HOUR_MS / 2 + LATENESS, &mut || Ok(once.take())).unwrap();
    drop(store);
    let fine_dir = dir.path().join("rollups").join("10s");
    let mut damaged = 0;
    for (i, entry) in std::fs::read_dir(&fine_dir).unwrap().enumerate() {
        let path = entry.unwrap().path();
        // Garbage, a file cut short, and a footer that claims more metadata than there is.
        let mut bytes = std::fs::read(&path).unwrap();
        match i % 3 {
            0 => bytes = b"PAR1 this is not parquet PAR1".to_vec(),
            1 => bytes.truncate(bytes.len() / 2),
            _ => {
                let at = bytes.len() - 8;
                bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            }
        }
        std::fs::write(&path, bytes).unwrap();
        damaged += 1;
    }
    assert!(damaged > 0);
    let store = RollupStore::open(settings(dir.path())).expect("opens on damaged files");
    let quarantined = std::fs::read_dir(dir.path().join("quarantine").join("rollups").join("10s")).unwrap().count();
    assert!(quarantined > 0, "damaged files are moved aside");
    // What remains answers, and a damaged file met by a query is moved aside too.
    assert!(store.scan(Table::Rollups, Tier::FiveMin, T0, T0 + HOUR_MS, None).is_ok());
    assert!(store.scan(Table::Rollups, Tier::Fine, T0, T0 + HOUR_MS, None).is_ok());
    let left = std::fs::read_dir(&fine_dir).unwrap().count();
    assert_eq!(left, 0, "every damaged finest-tier file is in quarantine");
}

/// One 10 s window of cell `a` whose failures outnumber its slow requests: 20 fast failures
/// (1 ms), 2 slow failures and 3 slow successes (800 ms), 75 fast successes.
fn failures_outnumber_slow() -> RecordBatch {
    let (mut all, mut failed) = (SparseHistogram::default(), SparseHistogram::default());
    for (us, n, fails) in [(1_000, 20, true), (800_000, 2, true), (800_000, 3, false), (1_000, 75, false)] {
        all.record_n(us, n);
        if fails {
            failed.record_n(us, n);
        }
    }
    let mut q = all.quantiles();
    q.max_us = 800_000;
    let mut b = RollupsBuilder::default();
    let key = RowKey { window_start_ms: T0, window_end_ms: T0 + FINE, cell: "a", service: "s", route: "r" };
    let v = RollupValues {
        requests: 100,
        errors: 22,
        hist: &all.serialize(),
        error_hist: Some(&failed.serialize()),
        quantiles: q,
        exact: true,
    };
    b.push(key, v);
    b.finish().unwrap()
}

/// Writes `batch` without its last column and marked schema version 1, as builds before the
/// failures' histogram did.
fn write_version_1(dir: &std::path::Path, batch: &RecordBatch) {
    let f = cellpilot_query::files::write(dir, Table::Rollups, Tier::Fine, T0, T0 + 300_000, batch).unwrap();
    let old = batch.project(&(0..batch.num_columns() - 1).collect::<Vec<_>>()).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            "cellpilot.schema_version".to_string(),
            "1".to_string(),
        )]))
        .build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&f.path).unwrap(), old.schema(), Some(props))
            .unwrap();
    w.write(&old).unwrap();
    w.close().unwrap();
}

/// The latency objective counts slow successes exactly, from the failures' own histogram, even
/// where a window's failures outnumber its slow requests (subtracting the failure count would
/// say none). Files of schema version 1 still read: the column comes back null and their rows
/// keep the old estimate; a roll-up over them does not pretend to know.
#[test]
fn slow_successes_are_exact_and_version_1_files_still_read() {
    use cellpilot_query::slo::{Selector, counts};
    let (to, now, threshold) = (T0 + 300_000, T0 + DAY_MS, Some(100_000));
    let batch = failures_outnumber_slow();

    let current = tempfile::tempdir().unwrap();
    cellpilot_query::files::write(current.path(), Table::Rollups, Tier::Fine, T0, to, &batch).unwrap();
    let store = RollupStore::open(settings(current.path())).unwrap();
    let c = counts(&store, &Selector::default(), T0, to, now, threshold).unwrap();
    assert_eq!((c.requests, c.errors, c.slow), (100, 22, 3), "three slow successes");

    let old = tempfile::tempdir().unwrap();
    write_version_1(old.path(), &batch);
    let store = RollupStore::open(settings(old.path())).unwrap();
    let c = counts(&store, &Selector::default(), T0, to, now, threshold).unwrap();
    assert_eq!((c.requests, c.errors, c.slow), (100, 22, 0), "version 1: 5 slow less 22 failures");
    let read = store.scan(Table::Rollups, Tier::Fine, T0, to, None).unwrap();
    let columns = cellpilot_core::schema::RollupColumns::of(&read[0]).unwrap();
    assert!(columns.error_hist.is_null(0));
    assert_eq!(read[0].schema(), cellpilot_core::schema::rollups_schema());

    let rolled = cellpilot_query::rollup::rollups(&[read[0].clone(), batch.clone()], 300_000).unwrap().unwrap();
    assert!(cellpilot_core::schema::RollupColumns::of(&rolled).unwrap().error_hist.is_null(0));
    let rolled = cellpilot_query::rollup::rollups(&[batch.clone(), batch], 300_000).unwrap().unwrap();
    let r = cellpilot_core::schema::RollupColumns::of(&rolled).unwrap();
    assert_eq!(r.slow_successes(0, 100_000).unwrap(), 6, "merged, still exact");
}

/// A peer's batch in the current schema passes, one of a version 1 peer gains a null failures'
/// histogram, and any other shape is refused with its schema named.
#[test]
fn batches_from_elsewhere_are_conformed_or_refused() {
    use cellpilot_query::files::conform;
    let batch = failures_outnumber_slow();
    assert_eq!(conform(Table::Rollups, batch.clone()).unwrap(), batch);
    let old = batch.project(&(0..batch.num_columns() - 1).collect::<Vec<_>>()).unwrap();
    let upgraded = conform(Table::Rollups, old).unwrap();
    assert_eq!(upgraded.schema(), cellpilot_core::schema::rollups_schema());
    assert!(cellpilot_core::schema::RollupColumns::of(&upgraded).unwrap().error_hist.is_null(0));
    let short = batch.project(&[0, 1, 2]).unwrap();
    let e = conform(Table::Rollups, short).unwrap_err().to_string();
    assert!(e.contains("rollups batch with another schema") && e.contains("window_start"), "{e}");
    assert!(conform(Table::ErrorsByCause, batch).is_err(), "a rollups batch is not an errors_by_cause one");
}
