//! The tables that render an analysis: one row per trace, process, exec,
//! library, failed lookup, file, file reader, unit, unit activation of a
//! boot, package and recommendation, each value copied from the [`Analysis`] (and the
//! recommendations made from it) as `report --format json` prints it.
//! Nothing here sums or derives a figure; the one lookup is the package of
//! a failed lookup's searcher, [`Package::of`] its path.

use super::{Column, Get, TableSchema, Writer, col, schema};
use crate::{
    analysis::{
        Analysis, FileFigures, PackageFigures, ProcessFigures, UnitFigures,
        boot::UnitActivation,
        io::ReaderRead,
        package::Package,
        process::{ExecFigures, FailedLookup, LibraryFigures},
    },
    recommend::Recommendation,
};

use anyhow::Result;

/// Pushes the three columns naming a row's Nix package (null outside the
/// store), from an expression giving an `Option<&Package>` of the row `r`.
macro_rules! package_columns {
    ($columns:ident, |$r:ident| $package:expr) => {
        $columns.push(col("package_name", Get::OptText(|$r| $package.map(|p: &Package| p.name.as_str()))));
        $columns.push(col(
            "package_version",
            Get::OptText(|$r| $package.and_then(|p: &Package| p.version.as_deref())),
        ));
        $columns.push(col(
            "package_store_path",
            Get::OptText(|$r| $package.map(|p: &Package| p.store_path.as_str())),
        ));
    };
}

fn pid(pid: u32) -> i32 {
    i32::try_from(pid).unwrap_or(i32::MAX)
}

/// A serde enum's name as the JSON report spells it.
fn serde_name<T: serde::Serialize>(value: &T) -> Option<String> {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string))
}

pub struct TraceRow<'a> {
    id: &'a str,
    a: &'a Analysis,
}

fn traced(a: &Analysis) -> &'static str {
    match (&a.header.boot, &a.header.command) {
        (Some(_), _) => "boot",
        (None, Some(_)) => "command",
        (None, None) => "system",
    }
}

fn traces<'a>() -> Vec<Column<TraceRow<'a>>> {
    vec![
        col("trace_id", Get::Text(|r| r.id)),
        col("host", Get::Text(|r| &r.a.header.host)),
        col("boot_id", Get::Text(|r| &r.a.header.boot_id)),
        col("kernel_release", Get::Text(|r| &r.a.header.kernel_release)),
        col("nixtrace_version", Get::Text(|r| &r.a.header.nixtrace_version)),
        col("recorded_at", Get::Micros(|r| r.a.header.clock.realtime_ns)),
        col("start_boottime_ns", Get::U64(|r| r.a.header.clock.boottime_ns)),
        col("duration_ns", Get::U64(|r| r.a.duration_ns)),
        col("traced", Get::Text(|r| traced(r.a))),
        col("command", Get::TextList(|r| r.a.header.command.clone().unwrap_or_default())),
        col("events", Get::U64(|r| r.a.events)),
        col("lost_events", Get::U64(|r| r.a.lost_events)),
        col(
            "missing_probes",
            Get::TextList(|r| r.a.header.missing_probes.iter().map(|m| m.probe.name().to_string()).collect()),
        ),
        col("cut_short", Get::Bool(|r| r.a.cut_short.is_some())),
        col("cut_short_reason", Get::OptText(|r| r.a.cut_short.as_deref())),
        col("attach_ns", Get::U64(|r| r.a.header.attach_ns)),
        col("cpus", Get::I32(|r| i32::try_from(r.a.header.cpus).unwrap_or(i32::MAX))),
        col("file", Get::Text(|r| &r.a.trace)),
    ]
}

pub struct ProcessRow<'a> {
    id: &'a str,
    p: &'a ProcessFigures,
}

fn processes<'a>() -> Vec<Column<ProcessRow<'a>>> {
    let mut columns: Vec<Column<ProcessRow<'a>>> = vec![
        col("trace_id", Get::Text(|r| r.id)),
        col("pid", Get::I32(|r| pid(r.p.pid))),
        col("start_ns", Get::U64(|r| r.p.start_ns)),
        col("ppid", Get::I32(|r| pid(r.p.ppid))),
        col("parent_start_ns", Get::OptU64(|r| r.p.parent_start_ns)),
        col("exe", Get::OptText(|r| r.p.exe.as_deref())),
    ];
    package_columns!(columns, |r| r.p.package.as_ref());
    columns.extend::<Vec<Column<ProcessRow<'a>>>>(vec![
        col("unit", Get::Text(|r| &r.p.unit)),
        col("cgroup", Get::OptText(|r| r.p.cgroup.as_deref())),
        col("wall_ns", Get::U64(|r| r.p.wall_ns)),
        col("seeded", Get::Bool(|r| r.p.seeded)),
        col("running", Get::Bool(|r| r.p.running)),
        col("orphaned_ns", Get::OptU64(|r| r.p.orphaned_ns)),
        col("exit_code", Get::OptI32(|r| r.p.exit_code)),
        col("signal", Get::OptI32(|r| r.p.signal)),
        col("execs", Get::U64(|r| r.p.execs.len() as u64)),
        col("loader_ns", Get::OptU64(|r| r.p.loader.as_ref().map(|l| l.total_ns))),
        col("search_ns", Get::OptU64(|r| r.p.loader.as_ref().map(|l| l.search_ns))),
        col("open_ns", Get::OptU64(|r| r.p.loader.as_ref().map(|l| l.open_ns))),
        col("map_ns", Get::OptU64(|r| r.p.loader.as_ref().map(|l| l.map_ns))),
        col("rest_ns", Get::OptU64(|r| r.p.loader.as_ref().map(|l| l.rest_ns))),
        col("init_ns", Get::OptU64(|r| r.p.loader.as_ref().map(|l| l.init_ns))),
        col("failed_lookups", Get::OptU64(|r| r.p.loader.as_ref().map(|l| l.failed_lookups))),
        col("disk_read_bytes", Get::U64(|r| r.p.io.disk_read_bytes)),
        col("block_read_bytes", Get::U64(|r| r.p.io.block_read_bytes)),
        col("block_write_bytes", Get::U64(|r| r.p.io.block_write_bytes)),
        col("block_requests", Get::U64(|r| r.p.io.block_requests)),
        col("block_latency_ns", Get::U64(|r| r.p.io.block_latency_ns)),
        col("read_bytes", Get::U64(|r| r.p.io.read_bytes)),
        col("on_cpu_ns", Get::U64(|r| r.p.time.on_cpu_ns)),
        col("runnable_ns", Get::U64(|r| r.p.time.runnable_ns)),
        col("blocked_ns", Get::U64(|r| r.p.time.blocked_ns)),
        col("sleeping_ns", Get::U64(|r| r.p.time.sleeping_ns)),
    ]);
    columns
}

pub struct ExecRow<'a> {
    id: &'a str,
    p: &'a ProcessFigures,
    index: usize,
    e: &'a ExecFigures,
    package: Option<Package>,
}

fn execs<'a>() -> Vec<Column<ExecRow<'a>>> {
    let mut columns: Vec<Column<ExecRow<'a>>> = vec![
        col("trace_id", Get::Text(|r| r.id)),
        col("pid", Get::I32(|r| pid(r.p.pid))),
        col("process_start_ns", Get::U64(|r| r.p.start_ns)),
        col("exec_index", Get::I32(|r| i32::try_from(r.index).unwrap_or(i32::MAX))),
        col("unit", Get::Text(|r| &r.p.unit)),
        col("ts_ns", Get::U64(|r| r.e.ts_ns)),
        col("filename", Get::Text(|r| &r.e.filename)),
    ];
    package_columns!(columns, |r| r.package.as_ref());
    columns.extend::<Vec<Column<ExecRow<'a>>>>(vec![
        col("argv", Get::TextList(|r| r.e.argv.clone())),
        col(
            "loader_env",
            Get::TextList(|r| r.e.loader_env.iter().map(|(name, value)| format!("{name}={value}")).collect()),
        ),
        col("loader_ns", Get::OptU64(|r| r.e.loader_ns)),
        col("to_entry_ns", Get::OptU64(|r| r.e.to_entry_ns)),
        col("failed_lookups", Get::OptU64(|r| r.e.failed_lookups)),
        col("loader_start_ns", Get::OptU64(|r| r.e.loader_start_ns)),
        col("loader_done_ns", Get::OptU64(|r| r.e.loader_done_ns)),
        col("entry_ns", Get::OptU64(|r| r.e.entry_ns)),
    ]);
    columns
}

pub struct LibraryRow<'a> {
    id: &'a str,
    p: &'a ProcessFigures,
    exec_index: usize,
    order: usize,
    l: &'a LibraryFigures,
}

fn libraries<'a>() -> Vec<Column<LibraryRow<'a>>> {
    let mut columns: Vec<Column<LibraryRow<'a>>> = vec![
        col("trace_id", Get::Text(|r| r.id)),
        col("pid", Get::I32(|r| pid(r.p.pid))),
        col("process_start_ns", Get::U64(|r| r.p.start_ns)),
        col("exec_index", Get::I32(|r| i32::try_from(r.exec_index).unwrap_or(i32::MAX))),
        col("load_order", Get::I32(|r| i32::try_from(r.order).unwrap_or(i32::MAX))),
        col("path", Get::Text(|r| &r.l.path)),
    ];
    package_columns!(columns, |r| r.l.package.as_ref());
    columns.extend::<Vec<Column<LibraryRow<'a>>>>(vec![
        col("exec_bytes", Get::U64(|r| r.l.exec_bytes)),
        col("load_ns", Get::U64(|r| r.l.load_ns)),
    ]);
    columns
}

pub struct FailedRow<'a> {
    id: &'a str,
    p: &'a ProcessFigures,
    f: &'a FailedLookup,
    package: Option<Package>,
}

fn failed_lookups<'a>() -> Vec<Column<FailedRow<'a>>> {
    let mut columns: Vec<Column<FailedRow<'a>>> = vec![
        col("trace_id", Get::Text(|r| r.id)),
        col("pid", Get::I32(|r| pid(r.p.pid))),
        col("process_start_ns", Get::U64(|r| r.p.start_ns)),
        col("unit", Get::Text(|r| &r.p.unit)),
        col("library", Get::Text(|r| &r.f.library)),
        col("dir", Get::Text(|r| &r.f.dir)),
        col("searcher", Get::OptText(|r| r.f.searcher.as_deref())),
    ];
    package_columns!(columns, |r| r.package.as_ref());
    columns.extend::<Vec<Column<FailedRow<'a>>>>(vec![
        col("count", Get::U64(|r| r.f.count)),
        col("ns", Get::U64(|r| r.f.ns)),
    ]);
    columns
}

pub struct FileRow<'a> {
    id: &'a str,
    f: &'a FileFigures,
}

fn files<'a>() -> Vec<Column<FileRow<'a>>> {
    let mut columns: Vec<Column<FileRow<'a>>> = vec![
        col("trace_id", Get::Text(|r| r.id)),
        col("path", Get::OptText(|r| r.f.path.as_deref())),
        col("dev", Get::U64(|r| u64::from(r.f.dev))),
        col("ino", Get::I64(|r| r.f.ino as i64)),
    ];
    package_columns!(columns, |r| r.f.package.as_ref());
    columns.extend::<Vec<Column<FileRow<'a>>>>(vec![
        col("disk_read_bytes", Get::U64(|r| r.f.disk_read_bytes)),
        col("read_bytes", Get::U64(|r| r.f.read_bytes)),
        col("readers", Get::I32List(|r| r.f.readers.iter().map(|p| pid(*p)).collect())),
    ]);
    columns
}

pub struct ReaderRow<'a> {
    id: &'a str,
    f: &'a FileFigures,
    r: &'a ReaderRead,
}

fn file_readers<'a>() -> Vec<Column<ReaderRow<'a>>> {
    vec![
        col("trace_id", Get::Text(|r| r.id)),
        col("path", Get::OptText(|r| r.f.path.as_deref())),
        col("dev", Get::U64(|r| u64::from(r.f.dev))),
        col("ino", Get::I64(|r| r.f.ino as i64)),
        col("pid", Get::I32(|r| pid(r.r.pid))),
        col("disk_read_bytes", Get::U64(|r| r.r.disk_read_bytes)),
    ]
}

pub struct UnitRow<'a> {
    id: &'a str,
    u: &'a UnitFigures,
}

fn units<'a>() -> Vec<Column<UnitRow<'a>>> {
    vec![
        col("trace_id", Get::Text(|r| r.id)),
        col("unit", Get::Text(|r| &r.u.name)),
        col("processes", Get::U64(|r| r.u.processes)),
        col("execs", Get::U64(|r| r.u.execs)),
        col("loader_ns", Get::U64(|r| r.u.loader_ns)),
        col("failed_lookups", Get::U64(|r| r.u.failed_lookups)),
        col("disk_read_bytes", Get::U64(|r| r.u.io.disk_read_bytes)),
        col("block_read_bytes", Get::U64(|r| r.u.io.block_read_bytes)),
        col("block_write_bytes", Get::U64(|r| r.u.io.block_write_bytes)),
        col("block_requests", Get::U64(|r| r.u.io.block_requests)),
        col("block_latency_ns", Get::U64(|r| r.u.io.block_latency_ns)),
        col("read_bytes", Get::U64(|r| r.u.io.read_bytes)),
        col("on_cpu_ns", Get::U64(|r| r.u.time.on_cpu_ns)),
        col("runnable_ns", Get::U64(|r| r.u.time.runnable_ns)),
        col("blocked_ns", Get::U64(|r| r.u.time.blocked_ns)),
        col("sleeping_ns", Get::U64(|r| r.u.time.sleeping_ns)),
    ]
}

pub struct UnitActivationRow<'a> {
    id: &'a str,
    u: &'a UnitActivation,
}

fn unit_activations<'a>() -> Vec<Column<UnitActivationRow<'a>>> {
    vec![
        col("trace_id", Get::Text(|r| r.id)),
        col("unit", Get::Text(|r| &r.u.unit)),
        col("activating_at_ns", Get::OptU64(|r| r.u.activating_at_ns)),
        col("active_at_ns", Get::U64(|r| r.u.active_at_ns)),
        col("activating_ns", Get::OptU64(|r| r.u.activating_ns)),
        col("state", Get::Text(|r| &r.u.state)),
    ]
}

pub struct PackageRow<'a> {
    id: &'a str,
    p: &'a PackageFigures,
}

fn packages<'a>() -> Vec<Column<PackageRow<'a>>> {
    let mut columns: Vec<Column<PackageRow<'a>>> = vec![col("trace_id", Get::Text(|r| r.id))];
    package_columns!(columns, |r| Some(&r.p.package));
    columns.extend::<Vec<Column<PackageRow<'a>>>>(vec![
        col("processes", Get::U64(|r| r.p.processes)),
        col("execs", Get::U64(|r| r.p.execs)),
        col("loader_ns", Get::U64(|r| r.p.loader_ns)),
        col("failed_lookups", Get::U64(|r| r.p.failed_lookups)),
        col("failed_lookups_caused", Get::U64(|r| r.p.failed_lookups_caused)),
        col("disk_read_bytes", Get::U64(|r| r.p.disk_read_bytes)),
        col("mapped_bytes", Get::U64(|r| r.p.mapped_bytes)),
    ]);
    columns
}

pub struct RecommendationRow<'a> {
    id: &'a str,
    rank: usize,
    r: &'a Recommendation,
}

fn recommendations<'a>() -> Vec<Column<RecommendationRow<'a>>> {
    vec![
        col("trace_id", Get::Text(|r| r.id)),
        col("rank", Get::I32(|r| i32::try_from(r.rank).unwrap_or(i32::MAX))),
        col("rule", Get::Text(|r| r.r.rule)),
        col("title", Get::Text(|r| &r.r.title)),
        col(
            "subject_kinds",
            Get::TextList(|r| r.r.subjects.iter().filter_map(|s| serde_name(&s.kind)).collect()),
        ),
        col("subjects", Get::TextList(|r| r.r.subjects.iter().map(|s| s.name.clone()).collect())),
        col("saving_ns", Get::OptU64(|r| r.r.saving.time_ns)),
        col("saving_bytes", Get::OptU64(|r| r.r.saving.bytes)),
        col("saving_how", Get::Text(|r| &r.r.saving.how)),
        col("confidence", Get::Owned(|r| serde_name(&r.r.confidence.level))),
        col("confidence_reason", Get::Text(|r| &r.r.confidence.reason)),
        col("fix_kind", Get::Owned(|r| serde_name(&r.r.fix.kind))),
        col("fix", Get::Text(|r| &r.r.fix.text)),
        col("fix_revert", Get::Text(|r| &r.r.fix.revert)),
        col("fix_risk", Get::OptText(|r| r.r.fix.risk.as_deref())),
        col("evidence", Get::Owned(|r| Some(r.r.evidence.to_string()))),
    ]
}

/// The schemas of the tables above, in the order the docs list them.
pub fn schemas() -> Vec<TableSchema> {
    vec![
        TableSchema { name: "traces", schema: schema(&traces()) },
        TableSchema { name: "processes", schema: schema(&processes()) },
        TableSchema { name: "execs", schema: schema(&execs()) },
        TableSchema { name: "libraries", schema: schema(&libraries()) },
        TableSchema { name: "failed_lookups", schema: schema(&failed_lookups()) },
        TableSchema { name: "files", schema: schema(&files()) },
        TableSchema { name: "file_readers", schema: schema(&file_readers()) },
        TableSchema { name: "units", schema: schema(&units()) },
        TableSchema { name: "unit_activations", schema: schema(&unit_activations()) },
        TableSchema { name: "packages", schema: schema(&packages()) },
        TableSchema { name: "recommendations", schema: schema(&recommendations()) },
    ]
}

/// The rows of one trace in every table.
pub fn write(w: &mut Writer, id: &str, a: &Analysis, made: &[Recommendation]) -> Result<()> {
    w.write("traces", &traces(), &[TraceRow { id, a }])?;
    let rows: Vec<ProcessRow> = a.processes.iter().map(|p| ProcessRow { id, p }).collect();
    w.write("processes", &processes(), &rows)?;
    let rows: Vec<ExecRow> = a
        .processes
        .iter()
        .flat_map(|p| {
            p.execs.iter().enumerate().map(move |(index, e)| ExecRow {
                id,
                p,
                index,
                e,
                package: Package::of(&e.filename),
            })
        })
        .collect();
    w.write("execs", &execs(), &rows)?;
    // The analysis keeps the libraries of each process's last loader run,
    // which is its last exec that went through a probed loader.
    let rows: Vec<LibraryRow> = a
        .processes
        .iter()
        .filter_map(|p| {
            let exec_index = p.execs.iter().rposition(|e| e.loader_start_ns.is_some())?;
            let libraries = &p.loader.as_ref()?.libraries;
            Some(libraries.iter().enumerate().map(move |(order, l)| LibraryRow {
                id,
                p,
                exec_index,
                order,
                l,
            }))
        })
        .flatten()
        .collect();
    w.write("libraries", &libraries(), &rows)?;
    let rows: Vec<FailedRow> = a
        .processes
        .iter()
        .flat_map(|p| {
            p.loader.iter().flat_map(|l| &l.failed).map(move |f| FailedRow {
                id,
                p,
                f,
                package: f.searcher.as_deref().and_then(Package::of),
            })
        })
        .collect();
    w.write("failed_lookups", &failed_lookups(), &rows)?;
    let rows: Vec<FileRow> = a.files.iter().map(|f| FileRow { id, f }).collect();
    w.write("files", &files(), &rows)?;
    let rows: Vec<ReaderRow> = a
        .files
        .iter()
        .flat_map(|f| f.disk_read_by_reader.iter().map(move |r| ReaderRow { id, f, r }))
        .collect();
    w.write("file_readers", &file_readers(), &rows)?;
    let rows: Vec<UnitRow> = a.units.iter().map(|u| UnitRow { id, u }).collect();
    w.write("units", &units(), &rows)?;
    let rows: Vec<UnitActivationRow> =
        a.boot.iter().flat_map(|b| &b.unit_activations).map(|u| UnitActivationRow { id, u }).collect();
    w.write("unit_activations", &unit_activations(), &rows)?;
    let rows: Vec<PackageRow> = a.packages.iter().map(|p| PackageRow { id, p }).collect();
    w.write("packages", &packages(), &rows)?;
    let rows: Vec<RecommendationRow> =
        made.iter().enumerate().map(|(i, r)| RecommendationRow { id, rank: i + 1, r }).collect();
    w.write("recommendations", &recommendations(), &rows)
}
