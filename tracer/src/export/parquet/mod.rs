//! `nixtrace export --format parquet`: traces as Parquet tables, one file
//! per table, for query engines (DuckDB, ClickHouse, Spark). Every table
//! except `opens` and `mmaps` renders the analysis and its recommendations
//! (`tables.rs`), so a query over the files gives the figures of
//! `report --format json`; `opens` and `mmaps` (`--events`) are a row per
//! event, from a second pass over the trace (`events.rs`).
//!
//! The column types are the ones every engine reads (docs/parquet-schema.md
//! has each table and column): signed 64-bit integers for nanoseconds,
//! bytes and counts (Spark reads unsigned 64-bit as a decimal), wall-clock
//! times as UTC microsecond timestamps (Spark rejects nanosecond ones),
//! strings dictionary-encoded, snappy pages (zstd would compress better but
//! is a C build; snappy is pure Rust), and the schema version in each
//! file's key-value metadata.

mod events;
mod tables;

use std::{
    collections::HashMap,
    fs::{self, File},
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, Result, bail};
use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{
        BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
    },
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, Encoding},
    file::{
        metadata::KeyValue,
        properties::{EnabledStatistics, WriterProperties},
    },
    schema::types::ColumnPath,
};

use crate::{
    analysis::{Analysis, Filter, analyse_file},
    recommend::{Recommendation, Selection, recommend},
    trace::Header,
};

/// Version of the tables' shape (docs/parquet-schema.md), in every file's
/// metadata under [`SCHEMA_VERSION_KEY`].
pub const SCHEMA_VERSION: u32 = 1;
pub const SCHEMA_VERSION_KEY: &str = "nixtrace.parquet_schema_version";

/// Rows per record batch of the event tables: few enough that a batch's
/// rows stay in the CPU's cache while each column is built from them (64K
/// rows took the export 15% longer), enough that the writer's cost per
/// batch does not count (1K took longer too).
const BATCH_ROWS: usize = 4 * 1024;

/// Which tables to write besides the analysis's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tables {
    /// `opens` and `mmaps`: a row per event.
    pub events: bool,
}

/// `nixtrace export --format parquet FILE... -o DIR`: every trace's rows
/// in `DIR/TABLE.parquet`.
pub fn export(files: &[PathBuf], dir: &Path, tables: &Tables) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut writer = Writer::create(|table| dir.join(format!("{table}.parquet")), tables)?;
    for file in files {
        let analysis = analyse_file(file, &Filter::default())?;
        let recommendations = recommend(&analysis, &Selection::default());
        writer.add(&analysis, &recommendations, Some(file))?;
    }
    writer.finish()
}

/// A stable id of the recording a header starts: 32 hex digits of the
/// FNV-1a 128-bit hash of its host, boot id and the two clock readings
/// taken when tracing started. It depends on nothing else (not the file's
/// name, nor header fields later versions may add), so the same trace
/// exported again, anywhere, gets the same id.
pub fn trace_id(header: &Header) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    let text = format!(
        "{}\0{}\0{}\0{}",
        header.host, header.boot_id, header.clock.boottime_ns, header.clock.realtime_ns
    );
    let hash = text.bytes().fold(OFFSET, |hash, byte| (hash ^ u128::from(byte)).wrapping_mul(PRIME));
    format!("{hash:032x}")
}

/// How a column's value is read from a row of type `R`, which decides the
/// column's Parquet type: strings, signed 64-bit integers (u64 values are
/// clamped at 2^63 - 1), 32-bit integers, booleans, UTC microsecond
/// timestamps (from Unix nanoseconds) and lists.
pub enum Get<R> {
    Text(for<'r> fn(&'r R) -> &'r str),
    OptText(for<'r> fn(&'r R) -> Option<&'r str>),
    Owned(fn(&R) -> Option<String>),
    /// A trace's bytes, as text (invalid UTF-8 replaced): the event
    /// tables keep the reader's bytes rather than a copy per row.
    Bytes(for<'r> fn(&'r R) -> &'r [u8]),
    OptBytes(for<'r> fn(&'r R) -> Option<&'r [u8]>),
    U64(fn(&R) -> u64),
    OptU64(fn(&R) -> Option<u64>),
    /// Signed, or an identity such as an inode kept bit for bit.
    I64(fn(&R) -> i64),
    I32(fn(&R) -> i32),
    OptI32(fn(&R) -> Option<i32>),
    Bool(fn(&R) -> bool),
    /// Nanoseconds since the Unix epoch, written as microseconds (UTC).
    Micros(fn(&R) -> u64),
    TextList(fn(&R) -> Vec<String>),
    I32List(fn(&R) -> Vec<i32>),
}

/// One column of a table: its name and how rows give its value.
pub struct Column<R> {
    pub name: &'static str,
    pub get: Get<R>,
}

pub fn col<R>(name: &'static str, get: Get<R>) -> Column<R> {
    Column { name, get }
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn micros(ns: u64) -> i64 {
    clamp(ns / 1000)
}

impl<R> Column<R> {
    fn nullable(&self) -> bool {
        matches!(
            self.get,
            Get::OptText(_) | Get::Owned(_) | Get::OptBytes(_) | Get::OptU64(_) | Get::OptI32(_)
        )
    }

    fn data_type(&self) -> DataType {
        match self.get {
            Get::Text(_) | Get::OptText(_) | Get::Owned(_) | Get::Bytes(_) | Get::OptBytes(_) => {
                DataType::Utf8
            }
            Get::U64(_) | Get::OptU64(_) | Get::I64(_) => DataType::Int64,
            Get::I32(_) | Get::OptI32(_) => DataType::Int32,
            Get::Bool(_) => DataType::Boolean,
            Get::Micros(_) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Get::TextList(_) => DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            Get::I32List(_) => DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true))),
        }
    }

    fn array(&self, rows: &[R]) -> ArrayRef {
        let n = rows.len();
        match self.get {
            Get::Text(f) => {
                let mut b = StringBuilder::with_capacity(n, n * 16);
                rows.iter().for_each(|r| b.append_value(f(r)));
                Arc::new(b.finish())
            }
            Get::OptText(f) => {
                let mut b = StringBuilder::with_capacity(n, n * 16);
                rows.iter().for_each(|r| b.append_option(f(r)));
                Arc::new(b.finish())
            }
            Get::Owned(f) => {
                let mut b = StringBuilder::with_capacity(n, n * 16);
                rows.iter().for_each(|r| b.append_option(f(r)));
                Arc::new(b.finish())
            }
            Get::Bytes(f) => {
                let mut b = StringBuilder::with_capacity(n, n * 16);
                rows.iter().for_each(|r| b.append_value(lossy(f(r))));
                Arc::new(b.finish())
            }
            Get::OptBytes(f) => {
                let mut b = StringBuilder::with_capacity(n, n * 16);
                rows.iter().for_each(|r| b.append_option(f(r).map(lossy)));
                Arc::new(b.finish())
            }
            Get::U64(f) => int64(rows.iter().map(|r| Some(clamp(f(r)))), n),
            Get::OptU64(f) => int64(rows.iter().map(|r| f(r).map(clamp)), n),
            Get::I64(f) => int64(rows.iter().map(|r| Some(f(r))), n),
            Get::I32(f) => int32(rows.iter().map(|r| Some(f(r))), n),
            Get::OptI32(f) => int32(rows.iter().map(f), n),
            Get::Bool(f) => {
                let mut b = BooleanBuilder::with_capacity(n);
                rows.iter().for_each(|r| b.append_value(f(r)));
                Arc::new(b.finish())
            }
            Get::Micros(f) => {
                let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
                rows.iter().for_each(|r| b.append_value(micros(f(r))));
                Arc::new(b.finish())
            }
            Get::TextList(f) => {
                let mut b = ListBuilder::new(StringBuilder::new());
                for r in rows {
                    for item in f(r) {
                        b.values().append_value(item);
                    }
                    b.append(true);
                }
                Arc::new(b.finish())
            }
            Get::I32List(f) => {
                let mut b = ListBuilder::new(Int32Builder::new());
                for r in rows {
                    for item in f(r) {
                        b.values().append_value(item);
                    }
                    b.append(true);
                }
                Arc::new(b.finish())
            }
        }
    }
}

/// The bytes as text, invalid UTF-8 replaced. `str::from_utf8` first:
/// it checks ASCII a word at a time, where the lossy decoder goes byte by
/// byte, and paths are nearly always valid.
fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.into(),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

fn int64(values: impl Iterator<Item = Option<i64>>, n: usize) -> ArrayRef {
    let mut b = Int64Builder::with_capacity(n);
    values.for_each(|v| b.append_option(v));
    Arc::new(b.finish())
}

fn int32(values: impl Iterator<Item = Option<i32>>, n: usize) -> ArrayRef {
    let mut b = Int32Builder::with_capacity(n);
    values.for_each(|v| b.append_option(v));
    Arc::new(b.finish())
}

pub fn schema<R>(columns: &[Column<R>]) -> SchemaRef {
    Arc::new(Schema::new(
        columns.iter().map(|c| Field::new(c.name, c.data_type(), c.nullable())).collect::<Vec<_>>(),
    ))
}

/// A table's name and its schema.
pub struct TableSchema {
    pub name: &'static str,
    pub schema: SchemaRef,
}

/// Every table, in the order docs/parquet-schema.md describes them; the
/// event tables last.
pub fn all_tables(tables: &Tables) -> Vec<TableSchema> {
    let mut all = tables::schemas();
    if tables.events {
        all.extend(events::schemas());
    }
    all
}

/// One table's file being written: under a hidden name until
/// [`Writer::finish`] gives it its own.
struct TableFile {
    writer: ArrowWriter<File>,
    hidden: PathBuf,
    path: PathBuf,
}

/// Snappy pages, dictionary-encoded columns and the metadata; for the event
/// tables, a row per event and most of an export's time, what does the
/// same for less: timestamps, durations, addresses, ids and inodes change
/// little from one row to the next and are delta-encoded without a
/// dictionary (a quarter of the bytes, and no hash per value), and paths
/// get no min/max statistics (a comparison per row that no query prunes
/// on).
fn properties(table: &str, metadata: Vec<KeyValue>) -> WriterProperties {
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(true)
        .set_key_value_metadata(Some(metadata));
    if events::TABLES.contains(&table) {
        for column in events::DELTA_COLUMNS {
            properties = properties
                .set_column_dictionary_enabled(ColumnPath::from(*column), false)
                .set_column_encoding(ColumnPath::from(*column), Encoding::DELTA_BINARY_PACKED);
        }
        for column in events::UNSORTED_COLUMNS {
            properties =
                properties.set_column_statistics_enabled(ColumnPath::from(*column), EnabledStatistics::None);
        }
    }
    properties.build()
}

/// The open table files of one export, to which each trace adds its rows.
pub struct Writer {
    files: HashMap<&'static str, TableFile>,
    tables: Tables,
    /// Trace id → the trace it came from, to refuse one trace twice.
    seen: HashMap<String, String>,
}

impl Writer {
    /// Opens a file for each table, named by `path_of(table)`.
    pub fn create(path_of: impl Fn(&str) -> PathBuf, tables: &Tables) -> Result<Writer> {
        let mut files = HashMap::new();
        for table in all_tables(tables) {
            let path = path_of(table.name);
            let name = path.file_name().with_context(|| format!("{} names no file", path.display()))?;
            let hidden =
                path.with_file_name(format!(".{}.{}.partial", name.to_string_lossy(), std::process::id()));
            let file = crate::output::create_private(&hidden, true)?;
            let metadata = vec![
                KeyValue::new(SCHEMA_VERSION_KEY.to_string(), SCHEMA_VERSION.to_string()),
                KeyValue::new("nixtrace.table".to_string(), table.name.to_string()),
                KeyValue::new("nixtrace.version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
            ];
            let properties = properties(table.name, metadata);
            let writer = ArrowWriter::try_new(file, table.schema, Some(properties))
                .with_context(|| format!("starting {}", path.display()))?;
            files.insert(table.name, TableFile { writer, hidden, path });
        }
        Ok(Writer { files, tables: *tables, seen: HashMap::new() })
    }

    /// Writes `rows` into `table`.
    fn write<R>(&mut self, table: &str, columns: &[Column<R>], rows: &[R]) -> Result<()> {
        let file = self.files.get_mut(table).with_context(|| format!("no table {table}"))?;
        let arrays: Vec<ArrayRef> = columns.iter().map(|c| c.array(rows)).collect();
        let batch = RecordBatch::try_new(schema(columns), arrays)
            .with_context(|| format!("making a batch of {table}"))?;
        file.writer.write(&batch).with_context(|| format!("writing {}", file.path.display()))
    }

    /// Adds one trace: its analysis and recommendations, and with
    /// `--events` the events of `trace` (its file).
    pub fn add(
        &mut self,
        analysis: &Analysis,
        recommendations: &[Recommendation],
        trace: Option<&Path>,
    ) -> Result<()> {
        let id = trace_id(&analysis.header);
        if let Some(first) = self.seen.insert(id.clone(), analysis.trace.clone()) {
            bail!("{} and {first} are the same recording (trace id {id}): export it once", analysis.trace);
        }
        tables::write(self, &id, analysis, recommendations)?;
        if self.tables.events {
            let Some(trace) = trace else { bail!("the event tables need the trace file") };
            events::write(self, &id, analysis, trace)?;
        }
        Ok(())
    }

    /// Closes every file and gives each its name.
    pub fn finish(mut self) -> Result<()> {
        let mut result = Ok(());
        for (_, file) in std::mem::take(&mut self.files) {
            if result.is_ok() {
                result = file.close();
            } else {
                let _ = fs::remove_file(&file.hidden);
            }
        }
        result
    }
}

impl TableFile {
    fn close(self) -> Result<()> {
        let closed = self.writer.close().with_context(|| format!("finishing {}", self.path.display()));
        let renamed = closed.and_then(|_| {
            fs::rename(&self.hidden, &self.path)
                .with_context(|| format!("renaming {} to {}", self.hidden.display(), self.path.display()))
        });
        if renamed.is_err() {
            let _ = fs::remove_file(&self.hidden);
        }
        renamed
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // What `finish` did not name: a failed export leaves no table.
        for file in self.files.values() {
            let _ = fs::remove_file(&file.hidden);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const DOC: &str = include_str!("../../../../docs/parquet-schema.md");

    /// The columns docs/parquet-schema.md lists for `table`: the backticked
    /// names in the first cell of each row of its section's table.
    fn documented(table: &str) -> BTreeSet<String> {
        let heading = format!("## `{table}`");
        let section = DOC.split("\n## ").map(|s| format!("## {s}")).find(|s| s.starts_with(&heading));
        let section = section.unwrap_or_else(|| panic!("docs/parquet-schema.md has no {heading}"));
        section
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .flat_map(|line| {
                let cell = line.split(" |").next().unwrap_or_default();
                cell.split(", ").map(|name| name.trim_matches('`').to_string()).collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every table and column is documented, and nothing else is.
    #[test]
    fn the_schema_doc_lists_every_column() {
        for table in all_tables(&Tables { events: true }) {
            let columns: BTreeSet<String> = table.schema.fields().iter().map(|f| f.name().clone()).collect();
            assert_eq!(documented(table.name), columns, "table {}", table.name);
        }
    }

    /// No unsigned 64-bit or nanosecond-timestamp column, which Spark
    /// cannot read as such.
    #[test]
    fn every_column_has_a_type_every_engine_reads() {
        for table in all_tables(&Tables { events: true }) {
            for field in table.schema.fields() {
                let ok = matches!(
                    field.data_type(),
                    DataType::Utf8
                        | DataType::Int64
                        | DataType::Int32
                        | DataType::Boolean
                        | DataType::List(_)
                ) || field.data_type()
                    == &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
                assert!(ok, "{}.{}: {}", table.name, field.name(), field.data_type());
            }
        }
    }
}
