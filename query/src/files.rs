//! Parquet files of closed windows: `<dir>/<table>/<tier>/<start_ms>-<end_ms>.parquet`, one per
//! bucket, written atomically (temp file, fsync, rename) with `cellpilot.schema_version` in the
//! file metadata. The name's time span lets readers skip files without opening them.

use crate::tier::Tier;
use crate::{Error, Result};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use cellpilot_core::fs::FileError;
use cellpilot_core::schema::{READABLE_VERSIONS, SCHEMA_VERSION, rollup_col};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Metadata key carrying the schema version.
pub const VERSION_KEY: &str = "cellpilot.schema_version";

/// Which table a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// `rollups*`
    Rollups,
    /// `errors_by_cause*`
    ErrorsByCause,
}

impl Table {
    /// Both tables.
    pub const ALL: [Table; 2] = [Table::Rollups, Table::ErrorsByCause];

    /// The directory (key segment) of this table's files.
    pub fn dir_name(self) -> &'static str {
        match self {
            Table::Rollups => "rollups",
            Table::ErrorsByCause => "errors_by_cause",
        }
    }
}

/// One stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Where it is.
    pub path: PathBuf,
    /// First window start covered (inclusive), unix ms.
    pub start_ms: i64,
    /// Last window end covered (exclusive), unix ms.
    pub end_ms: i64,
}

/// Directory of `table` in `tier`.
pub fn tier_dir(root: &Path, table: Table, tier: Tier) -> PathBuf {
    root.join(table.dir_name()).join(tier.dir_name())
}

/// Every file of `table`/`tier`, sorted by start.
pub fn list(root: &Path, table: Table, tier: Tier) -> Result<Vec<StoredFile>> {
    let dir = tier_dir(root, table, tier);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(FileError::new("listing", &dir, e).into()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| FileError::new("listing", &dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if let Some((start_ms, end_ms)) = parse_name(name) {
            out.push(StoredFile { path, start_ms, end_ms });
        }
    }
    out.sort_by_key(|f| f.start_ms);
    Ok(out)
}

/// The span of a file named `<start_ms>-<end_ms>.parquet`.
pub fn parse_name(name: &str) -> Option<(i64, i64)> {
    let (a, b) = name.strip_suffix(".parquet")?.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Moves a damaged file to `<root>/quarantine/`, keeping its name and tier directory.
pub fn quarantine(root: &Path, file: &StoredFile) -> Result<()> {
    let rel = file.path.strip_prefix(root).unwrap_or(&file.path);
    let to = root.join("quarantine").join(rel);
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| FileError::new("creating", dir, e))?;
    }
    Ok(std::fs::rename(&file.path, &to).map_err(|e| FileError::new("quarantining", &file.path, e))?)
}

/// Writes `batch` as the file covering `[start_ms, end_ms)` of `table`/`tier`, atomically.
pub fn write(
    root: &Path,
    table: Table,
    tier: Tier,
    start_ms: i64,
    end_ms: i64,
    batch: &RecordBatch,
) -> Result<StoredFile> {
    let dir = tier_dir(root, table, tier);
    std::fs::create_dir_all(&dir).map_err(|e| FileError::new("creating", &dir, e))?;
    let path = dir.join(format!("{start_ms}-{end_ms}.parquet"));
    let tmp = dir.join(format!(".{start_ms}-{end_ms}.parquet.tmp"));
    let io = |e: std::io::Error| FileError::new("writing", &tmp, e);
    let file = File::create(&tmp).map_err(io)?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(writer_properties()))?;
    writer.write(batch)?;
    let file = writer.into_inner()?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io)?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(StoredFile { path, start_ms, end_ms })
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_key_value_metadata(Some(vec![KeyValue::new(VERSION_KEY.to_string(), SCHEMA_VERSION.to_string())]))
        .build()
}

/// `batch` as the bytes of a Parquet file (for an object store, which takes it whole).
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(writer_properties()))?;
    writer.write(batch)?;
    Ok(writer.into_inner()?)
}

/// The rows of the Parquet file `bytes` (named `name` in errors), keeping only the columns in
/// `projection`.
pub fn decode(name: &str, bytes: bytes::Bytes, projection: Option<&[usize]>) -> Result<Vec<RecordBatch>> {
    std::panic::catch_unwind(|| read_from(name, bytes, projection))
        .unwrap_or_else(|_| Err(Error::Corrupt(format!("{name}: the Parquet reader panicked on this file"))))
}

/// Reads a file, keeping only the columns in `projection` (all when `None`).
pub fn read(file: &StoredFile, projection: Option<&[usize]>) -> Result<Vec<RecordBatch>> {
    // The Parquet reader trusts the file more than a damaged one deserves: a panic is an error.
    std::panic::catch_unwind(|| read_unguarded(file, projection)).unwrap_or_else(|_| {
        Err(Error::Corrupt(format!("{}: the Parquet reader panicked on this file", file.path.display())))
    })
}

fn read_unguarded(file: &StoredFile, projection: Option<&[usize]>) -> Result<Vec<RecordBatch>> {
    let f = File::open(&file.path).map_err(|e| FileError::new("opening", &file.path, e))?;
    read_from(&file.path.display().to_string(), f, projection)
}

fn read_from<R: parquet::file::reader::ChunkReader + 'static>(
    name: &str,
    source: R,
    projection: Option<&[usize]>,
) -> Result<Vec<RecordBatch>> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(source).map_err(|e| Error::Corrupt(format!("{name}: {e}")))?;
    let version = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == VERSION_KEY).and_then(|k| k.value.clone()));
    if !version.as_deref().is_some_and(|v| READABLE_VERSIONS.contains(&v)) {
        return Err(cellpilot_core::error::Internal::new(format!(
            "{name} has schema version {version:?}, this build reads {READABLE_VERSIONS:?}"
        ))
        .into());
    }
    // Version 1 rollups lack the failures' histogram, the last column: read the rest and add
    // it as null (unknown), so every reader sees one schema.
    let fields = builder.schema().fields().len();
    let missing = version.as_deref() == Some("1") && fields == rollup_col::ERROR_LATENCY_HIST;
    let wants_missing = missing && projection.is_none_or(|cols| cols.contains(&rollup_col::ERROR_LATENCY_HIST));
    let builder = match projection {
        Some(cols) => {
            let mask = ProjectionMask::roots(builder.parquet_schema(), cols.iter().copied().filter(|&c| c < fields));
            builder.with_projection(mask)
        }
        None => builder,
    };
    let reader = builder.with_batch_size(64 * 1024).build()?;
    let batches =
        reader.collect::<std::result::Result<Vec<_>, _>>().map_err(|e| Error::Corrupt(format!("{name}: {e}")))?;
    if !wants_missing {
        return Ok(batches);
    }
    batches.into_iter().map(with_unknown_error_latency).collect()
}

/// A whole `table` batch from elsewhere (a peer's open windows) in this build's schema: the
/// current schema as it is, version 1 rollups (a node not yet upgraded) with the failures'
/// histogram added as null; any other shape is refused, naming it.
pub fn conform(table: Table, batch: RecordBatch) -> Result<RecordBatch> {
    let want = schema(table);
    let got = batch.schema();
    if got.fields() == want.fields() {
        return Ok(batch);
    }
    let version_1 = table == Table::Rollups
        && got.fields().len() == rollup_col::ERROR_LATENCY_HIST
        && got.fields().iter().zip(want.fields().iter()).all(|(a, b)| a == b);
    if version_1 {
        return with_unknown_error_latency(batch);
    }
    Err(Error::Corrupt(format!("a {} batch with another schema: {got}", table.dir_name())))
}

/// `batch` (version 1 rollups) with a null `error_latency_hist` appended.
fn with_unknown_error_latency(batch: RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(cellpilot_core::schema::error_latency_field()));
    let mut columns = batch.columns().to_vec();
    columns.push(arrow::array::new_null_array(&arrow::datatypes::DataType::Binary, batch.num_rows()));
    let schema = arrow::datatypes::Schema::new_with_metadata(fields, schema.metadata().clone());
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

/// Removes files of `table`/`tier` that end at or before `horizon_ms`.
pub fn expire(root: &Path, table: Table, tier: Tier, horizon_ms: i64) -> Result<usize> {
    let mut n = 0;
    for f in list(root, table, tier)? {
        if f.end_ms <= horizon_ms {
            std::fs::remove_file(&f.path).map_err(|e| FileError::new("removing", &f.path, e))?;
            n += 1;
        }
    }
    Ok(n)
}

/// The schema of `table`.
pub fn schema(table: Table) -> SchemaRef {
    match table {
        Table::Rollups => cellpilot_core::schema::rollups_schema(),
        Table::ErrorsByCause => cellpilot_core::schema::errors_by_cause_schema(),
    }
}
