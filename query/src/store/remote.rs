//! Other nodes' files in a shared object store, as last listed, and which of them answer a scan
//! of one tier.
//!
//! A node writes each tier's buckets in time order, and a coarser bucket only after every finer
//! bucket inside it, so at any moment a node's data is: its hourly files up to `until[Hour]`,
//! then its 5-minute files up to `until[FiveMin]`, then its finest files, then rows it still
//! holds in memory. A scan of a coarse tier therefore takes, per node, that tier's files and
//! the finer files past the node's coarse boundary, rolled up: nothing is missed or counted
//! twice, whatever the node has written so far.

use super::idx;
use crate::files::{StoredFile, Table};
use crate::storage::Listed;
use crate::tier::Tier;
use std::collections::BTreeMap;

/// One node's files of one tier, sorted by start.
#[derive(Debug, Default, Clone)]
struct TierFiles {
    rollups: Vec<StoredFile>,
    errors: Vec<StoredFile>,
    /// End of the last bucket written (either table); `i64::MIN` when none.
    until: i64,
}

impl TierFiles {
    fn of(&self, table: Table) -> &[StoredFile] {
        match table {
            Table::Rollups => &self.rollups,
            Table::ErrorsByCause => &self.errors,
        }
    }
}

/// Files of every node but this one.
#[derive(Debug, Default, Clone)]
pub(super) struct Remote {
    nodes: BTreeMap<String, [TierFiles; 3]>,
}

/// A file answering a scan, and the tier it belongs to (finer than the scan's when its rows
/// must be rolled up first).
#[derive(Debug, Clone)]
pub(super) struct Source {
    pub(super) file: StoredFile,
    pub(super) tier: Tier,
}

impl Remote {
    /// The index of other nodes' `listed` files.
    pub(super) fn from_listing(listed: impl IntoIterator<Item = Listed>) -> Self {
        let mut nodes: BTreeMap<String, [TierFiles; 3]> = BTreeMap::new();
        for Listed { node, table, tier, file: f } in listed {
            let node = node.unwrap_or_default();
            let t = &mut nodes
                .entry(node)
                .or_insert_with(|| std::array::from_fn(|_| TierFiles { until: i64::MIN, ..TierFiles::default() }))
                [idx(tier)];
            t.until = t.until.max(f.end_ms);
            match table {
                Table::Rollups => t.rollups.push(f),
                Table::ErrorsByCause => t.errors.push(f),
            }
        }
        for tiers in nodes.values_mut() {
            for t in tiers.iter_mut() {
                t.rollups.sort_by_key(|f| f.start_ms);
                t.errors.sort_by_key(|f| f.start_ms);
            }
        }
        Remote { nodes }
    }

    /// End of `node`'s last finest-tier file as listed (`i64::MIN` when none).
    pub(super) fn fine_until(&self, node: &str) -> i64 {
        self.nodes.get(node).map_or(i64::MIN, |t| t[0].until)
    }

    /// How many nodes and files it holds.
    pub(super) fn counts(&self) -> (usize, usize) {
        let files = self.nodes.values().flatten().map(|t| t.rollups.len() + t.errors.len()).sum();
        (self.nodes.len(), files)
    }

    /// Every file whose rows answer `table` in `tier` over `[from_ms, to_ms)`: per node, the
    /// tier's own files, then finer files past the node's coarser boundaries.
    pub(super) fn sources(&self, table: Table, tier: Tier, from_ms: i64, to_ms: i64) -> Vec<Source> {
        let mut out = Vec::new();
        for tiers in self.nodes.values() {
            layered(tier, true, (from_ms, to_ms), |t| (tiers[idx(t)].of(table), tiers[idx(t)].until), &mut out);
        }
        out
    }

    /// Drops `f` (found damaged and moved aside).
    pub(super) fn forget(&mut self, f: &StoredFile) {
        for t in self.nodes.values_mut().flatten() {
            t.rollups.retain(|x| x.path != f.path);
            t.errors.retain(|x| x.path != f.path);
        }
    }

    /// Drops files that end at or before `horizon(tier)`.
    pub(super) fn expire(&mut self, horizon: impl Fn(Tier) -> i64) {
        for tiers in self.nodes.values_mut() {
            for tier in Tier::ALL {
                let h = horizon(tier);
                let t = &mut tiers[idx(tier)];
                t.rollups.retain(|f| f.end_ms > h);
                t.errors.retain(|f| f.end_ms > h);
            }
        }
    }
}

/// One node's files answering `tier` over `[from_ms, to_ms)`, into `out`: the tier's own files,
/// then (with `finer`) the finer tiers' files past what the coarser ones hold, coarsest first.
/// `tier_files(t)` is the node's files of tier `t` and the end of its last bucket.
pub(super) fn layered<'a>(
    tier: Tier,
    finer: bool,
    (from_ms, to_ms): (i64, i64),
    tier_files: impl Fn(Tier) -> (&'a [StoredFile], i64),
    out: &mut Vec<Source>,
) {
    let mut boundary = i64::MIN;
    for t in Tier::ALL.into_iter().rev().filter(|t| *t == tier || (finer && *t < tier)) {
        let (files, until) = tier_files(t);
        out.extend(
            files
                .iter()
                .filter(|f| f.start_ms >= boundary && f.start_ms < to_ms && f.end_ms > from_ms)
                .map(|f| Source { file: f.clone(), tier: t }),
        );
        boundary = boundary.max(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::{DAY_MS, FIVE_MIN_MS, HOUR_MS};
    use std::path::PathBuf;

    fn file(tier: Tier, start: i64) -> StoredFile {
        StoredFile { path: PathBuf::from(format!("{tier}/{start}")), start_ms: start, end_ms: start + tier.bucket_ms() }
    }

    #[test]
    fn a_coarse_scan_takes_finer_files_only_past_the_coarser_boundary() {
        // Node n: day 0 hourly; hours 0..26 in 5-minute files; 5-minute buckets up to 26h10m fine.
        let at = |tier: Tier, start: i64| Listed {
            node: Some("n".into()),
            table: Table::Rollups,
            tier,
            file: file(tier, start),
        };
        let mut listed = vec![at(Tier::Hour, 0)];
        listed.extend((0..26).map(|h| at(Tier::FiveMin, h * HOUR_MS)));
        listed.extend((0..(26 * 12 + 2)).map(|b| at(Tier::Fine, b * FIVE_MIN_MS)));
        let r = Remote::from_listing(listed);
        let hour = r.sources(Table::Rollups, Tier::Hour, 0, 2 * DAY_MS);
        let by = |t: Tier| hour.iter().filter(|s| s.tier == t).map(|s| s.file.start_ms).collect::<Vec<_>>();
        assert_eq!(by(Tier::Hour), vec![0]);
        assert_eq!(by(Tier::FiveMin), vec![24 * HOUR_MS, 25 * HOUR_MS]);
        assert_eq!(by(Tier::Fine), vec![26 * HOUR_MS, 26 * HOUR_MS + FIVE_MIN_MS]);
        let fine = r.sources(Table::Rollups, Tier::Fine, 0, 2 * DAY_MS);
        assert!(fine.iter().all(|s| s.tier == Tier::Fine) && fine.len() == 26 * 12 + 2);
        assert!(r.sources(Table::ErrorsByCause, Tier::Hour, 0, 2 * DAY_MS).is_empty());
    }
}
