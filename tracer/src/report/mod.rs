//! `nixtrace report`: who paid for startup. One pass over the trace builds
//! the process table and the cgroup names; this module turns them into
//! rows (processes, units) that the text, Markdown and JSON renderers print.

pub mod boot;
mod json;
pub mod markdown;
mod text;

use crate::saturating::SaturatingSum as _;
use std::{collections::BTreeMap, fs::File, io::BufReader, path::Path};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::{
    model::{
        elf::{ElfFacts, read_elf_facts},
        io::{FileTable, IoTotals, PAGE_SIZE},
        nix::parse_store_path,
        process::{Exec, Process, ProcessTable},
        unit::CgroupNames,
    },
    trace::{
        Event, Header, Stats, ThreadTimes, TraceReader,
        event::{describe_lost, text},
    },
};

/// Version of the JSON schema (`docs/report-schema.md`).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
}

/// What to include.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Rows in the process table (all in JSON).
    pub top: usize,
    /// Only processes in this unit.
    pub unit: Option<String>,
    /// Only processes whose executable path contains this.
    pub binary: Option<String>,
}

impl Selection {
    pub fn new(top: usize, filter: &crate::cli::ProcessFilter) -> Selection {
        Selection { top, unit: filter.unit.clone(), binary: filter.binary.clone() }
    }
}

#[derive(Debug, Serialize)]
pub struct Package {
    pub name: String,
    pub version: Option<String>,
    pub store_path: String,
}

fn package_of(path: &str) -> Option<Package> {
    parse_store_path(path).map(|p| Package {
        name: p.name.to_string(),
        version: p.version.map(str::to_string),
        store_path: p.store_path.to_string(),
    })
}

#[derive(Debug, Serialize)]
pub struct LibraryRow {
    pub path: String,
    pub package: Option<Package>,
    pub exec_bytes: u64,
    /// Its open and the mmaps of its file descriptor.
    pub load_ns: u64,
}

#[derive(Debug, Serialize)]
pub struct DirProbe {
    pub dir: String,
    pub failed_lookups: u64,
}

/// Failed opens of one candidate path while the loader searched for a
/// library: `dir` holds no `library`.
#[derive(Debug, Serialize)]
pub struct FailedLookupRow {
    pub library: String,
    pub dir: String,
    pub count: u64,
    pub ns: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct LoaderRow {
    /// Loader entry to `_dl_start_user`, summed over the process's execs.
    pub total_ns: u64,
    pub search_ns: u64,
    pub open_ns: u64,
    pub map_ns: u64,
    /// Relocation, symbol lookup and the loader's own work.
    pub rest_ns: u64,
    /// The libraries' initialisers, after relocation, before the program.
    pub init_ns: u64,
    pub failed_lookups: u64,
    /// Directories probed in vain, most failures first.
    pub dirs_probed: Vec<DirProbe>,
    /// Every failed lookup, by library sought and directory probed.
    pub failed: Vec<FailedLookupRow>,
    /// Libraries of the last exec, in load order.
    pub libraries: Vec<LibraryRow>,
}

/// I/O charged to a process (or summed over a unit).
#[derive(Debug, Default, Serialize)]
pub struct IoRow {
    /// Bytes read into the page cache: what really came from disk.
    pub disk_read_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub block_requests: u64,
    /// Issue to completion, summed over the requests.
    pub block_latency_ns: u64,
    /// Bytes returned by read/pread64 (from the cache or the disk).
    pub read_bytes: u64,
}

impl From<&IoTotals> for IoRow {
    fn from(io: &IoTotals) -> IoRow {
        IoRow {
            disk_read_bytes: io.disk_read_bytes(),
            block_read_bytes: io.block_read_bytes,
            block_write_bytes: io.block_write_bytes,
            block_requests: io.block_requests,
            block_latency_ns: io.block_latency_ns,
            read_bytes: io.read_bytes,
        }
    }
}

impl IoRow {
    fn add(&mut self, other: &IoRow) {
        self.disk_read_bytes = self.disk_read_bytes.saturating_add(other.disk_read_bytes);
        self.block_read_bytes = self.block_read_bytes.saturating_add(other.block_read_bytes);
        self.block_write_bytes = self.block_write_bytes.saturating_add(other.block_write_bytes);
        self.block_requests = self.block_requests.saturating_add(other.block_requests);
        self.block_latency_ns = self.block_latency_ns.saturating_add(other.block_latency_ns);
        self.read_bytes = self.read_bytes.saturating_add(other.read_bytes);
    }
}

/// A file that was read, from the disk or the page cache.
#[derive(Debug, Serialize)]
pub struct FileRow {
    /// Null when the trace never saw it opened or mapped.
    pub path: Option<String>,
    pub dev: u32,
    pub ino: u64,
    pub package: Option<Package>,
    pub disk_read_bytes: u64,
    /// Bytes read from it with read/pread64, from the cache or the disk.
    pub read_bytes: u64,
    /// The processes that read it or whose reads brought it in.
    pub readers: Vec<u32>,
    /// What each of those brought in from disk (`disk_read_bytes` split).
    pub disk_read_by_reader: Vec<ReaderRead>,
}

#[derive(Debug, Serialize)]
pub struct ReaderRead {
    pub pid: u32,
    pub disk_read_bytes: u64,
}

impl FileRow {
    /// Its path, or its inode when the trace never named it.
    pub fn display_name(&self) -> String {
        self.path.clone().unwrap_or_else(|| format!("inode {} on device {}", self.ino, device(self.dev)))
    }
}

/// "254:0" for a kernel `dev_t` (`major << 20 | minor`).
fn device(dev: u32) -> String {
    format!("{}:{}", dev >> 20, dev & 0xfffff)
}

/// Static facts about an executable or library the processes ran, read
/// from the file when the report is made (so they describe the file as it
/// is now, on this machine).
#[derive(Debug, Serialize)]
pub struct BinaryRow {
    pub path: String,
    pub package: Option<Package>,
    /// File size in bytes (null when it could not be read).
    pub size_bytes: Option<u64>,
    /// Null when the file could not be read here; `error` says why.
    pub build_id: Option<String>,
    pub interpreter: Option<String>,
    pub soname: Option<String>,
    pub needed: Vec<String>,
    pub runpath: Vec<String>,
    pub rpath: Vec<String>,
    pub bind_now: bool,
    pub relocations: u64,
    pub dynamic_symbols: u64,
    pub error: Option<String>,
}

fn binary_row(path: &str) -> BinaryRow {
    let (facts, error) = match read_elf_facts(std::path::Path::new(path)) {
        Ok(facts) => (facts, None),
        Err(e) => (ElfFacts::default(), Some(format!("{e:#}"))),
    };
    BinaryRow {
        path: path.to_string(),
        package: package_of(path),
        size_bytes: std::fs::metadata(path).ok().map(|m| m.len()),
        build_id: facts.build_id,
        interpreter: facts.interpreter,
        soname: facts.soname,
        needed: facts.needed,
        runpath: facts.runpath,
        rpath: facts.rpath,
        bind_now: facts.bind_now,
        relocations: facts.relocations,
        dynamic_symbols: facts.dynamic_symbols,
        error,
    }
}

#[derive(Debug, Serialize)]
pub struct ExecRow {
    pub ts_ns: u64,
    pub filename: String,
    pub argv: Vec<String>,
    pub loader_ns: Option<u64>,
    /// From the exec to the program's entry point (loader, initialisers).
    pub to_entry_ns: Option<u64>,
    pub failed_lookups: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ProcessRow {
    pub pid: u32,
    pub ppid: u32,
    pub start_ns: u64,
    /// The parent's start, when the trace saw the parent: with `ppid` it
    /// names the parent exactly, even when pids were reused.
    pub parent_start_ns: Option<u64>,
    pub exe: Option<String>,
    pub package: Option<Package>,
    pub unit: String,
    pub cgroup: Option<String>,
    /// From start (or the start of tracing) to exit (or the end of it).
    pub wall_ns: u64,
    /// Was running before tracing started.
    pub seeded: bool,
    /// Still running when the trace ended.
    pub running: bool,
    /// When its parent exited while it still ran (it was reparented).
    pub orphaned_ns: Option<u64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub execs: Vec<ExecRow>,
    /// None when no exec of this process went through a probed loader.
    pub loader: Option<LoaderRow>,
    pub io: IoRow,
    /// Where its threads' time went (summed over threads).
    pub time: ThreadTimes,
}

#[derive(Debug, Default, Serialize)]
pub struct UnitRow {
    pub name: String,
    pub processes: u64,
    pub execs: u64,
    pub loader_ns: u64,
    pub failed_lookups: u64,
    pub io: IoRow,
    pub time: ThreadTimes,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub trace: String,
    pub header: Header,
    /// Why the trace is incomplete, if it is.
    pub cut_short: Option<String>,
    pub duration_ns: u64,
    pub events: u64,
    pub lost_events: u64,
    pub lost_by_probe: BTreeMap<String, u64>,
    pub processes: Vec<ProcessRow>,
    pub units: Vec<UnitRow>,
    /// Files read by the selected processes: most read from disk first,
    /// then most bytes read.
    pub files: Vec<FileRow>,
    /// Every executable and library the selected processes ran, by path,
    /// with their static ELF facts.
    pub binaries: Vec<BinaryRow>,
    /// Made by `record --boot`: what the trace missed of the boot, and
    /// systemd's view of it. Null otherwise.
    pub boot: Option<boot::BootSection>,
}

fn exec_row(exec: &Exec) -> ExecRow {
    ExecRow {
        ts_ns: exec.ts_ns,
        filename: text(&exec.filename),
        argv: exec.argv.iter().map(|a| text(a)).collect(),
        loader_ns: exec.loader.as_ref().and_then(|l| l.total_ns()),
        to_entry_ns: exec
            .loader
            .as_ref()
            .and_then(|l| l.entry_ns)
            .map(|entry| entry.saturating_sub(exec.ts_ns)),
        failed_lookups: exec.loader.as_ref().map(|l| l.failed_lookups),
    }
}

fn loader_row(process: &Process) -> Option<LoaderRow> {
    let runs: Vec<_> = process.execs.iter().filter_map(|e| e.loader.as_ref()).collect();
    let last = runs.last()?;
    let mut row = LoaderRow::default();
    let mut lookups: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for run in &runs {
        row.total_ns = row.total_ns.saturating_add(run.total_ns().unwrap_or(0));
        row.search_ns = row.search_ns.saturating_add(run.search_ns);
        row.open_ns = row.open_ns.saturating_add(run.open_ns);
        row.map_ns = row.map_ns.saturating_add(run.map_ns);
        row.rest_ns = row.rest_ns.saturating_add(run.rest_ns().unwrap_or(0));
        row.init_ns = row.init_ns.saturating_add(run.init_ns().unwrap_or(0));
        row.failed_lookups = row.failed_lookups.saturating_add(run.failed_lookups);
        for ((dir, library), failed) in &run.lookups {
            let sum = lookups.entry((text(library), text(dir))).or_default();
            sum.0 = sum.0.saturating_add(failed.count);
            sum.1 = sum.1.saturating_add(failed.ns);
        }
    }
    let mut dirs: BTreeMap<&str, u64> = BTreeMap::new();
    for ((_, dir), (count, _)) in &lookups {
        let failed = dirs.entry(dir).or_default();
        *failed = failed.saturating_add(*count);
    }
    row.dirs_probed = dirs
        .into_iter()
        .map(|(dir, failed_lookups)| DirProbe { dir: dir.to_string(), failed_lookups })
        .collect();
    row.dirs_probed.sort_by(|a, b| b.failed_lookups.cmp(&a.failed_lookups).then_with(|| a.dir.cmp(&b.dir)));
    row.failed = lookups
        .into_iter()
        .map(|((library, dir), (count, ns))| FailedLookupRow { library, dir, count, ns })
        .collect();
    row.libraries = last
        .libraries
        .iter()
        .map(|l| {
            let path = text(&l.path);
            let package = package_of(&text(&l.mapped_path)).or_else(|| package_of(&path));
            LibraryRow { path, package, exec_bytes: l.exec_bytes, load_ns: l.load_ns }
        })
        .collect();
    Some(row)
}

fn process_row(process: &Process, cgroups: &CgroupNames, trace_start: u64, trace_end: u64) -> ProcessRow {
    let exe = process.exe().map(text);
    let start = process.key.start_ns.max(trace_start);
    let (exit_code, signal) = match process.exit_status {
        Some(status) if status & 0x7f == 0 => (Some((status >> 8) & 0xff), None),
        Some(status) => (None, Some(status & 0x7f)),
        None => (None, None),
    };
    ProcessRow {
        pid: process.key.pid,
        ppid: process.ppid,
        start_ns: process.key.start_ns,
        parent_start_ns: process.parent.map(|p| p.start_ns),
        package: exe.as_deref().and_then(package_of),
        exe,
        unit: cgroups.unit(process.cgroup_id),
        cgroup: cgroups.path(process.cgroup_id),
        wall_ns: process.end_ns.unwrap_or(trace_end).saturating_sub(start),
        seeded: process.seeded,
        running: process.end_ns.is_none(),
        orphaned_ns: process.orphaned_ns,
        exit_code,
        signal,
        execs: process.execs.iter().map(exec_row).collect(),
        loader: loader_row(process),
        io: IoRow::from(&process.io),
        time: process.times,
    }
}

fn selected(row: &ProcessRow, selection: &Selection) -> bool {
    selection.unit.as_ref().is_none_or(|unit| &row.unit == unit)
        && selection
            .binary
            .as_ref()
            .is_none_or(|b| row.exe.as_deref().is_some_and(|exe| exe.contains(b.as_str())))
}

/// Reads the trace at `path` and builds its report.
pub fn build(path: &Path, selection: &Selection) -> Result<Report> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    build_from(BufReader::new(file), &path.display().to_string(), selection)
}

/// Builds the report of the trace `input` holds; `name` names it in errors
/// and in the report.
pub fn build_from(input: impl std::io::Read, name: &str, selection: &Selection) -> Result<Report> {
    let mut reader = TraceReader::new(input).with_context(|| name.to_string())?;
    let mut table = ProcessTable::default();
    let mut cgroups = CgroupNames::default();
    let mut files = FileTable::default();
    for loader in &reader.header().loaders {
        files.name(loader.dev, loader.ino, &loader.path);
    }
    let mut last_stats: Option<Stats> = None;
    let mut events = 0;
    for event in reader.by_ref() {
        let event = event.with_context(|| name.to_string())?;
        match &event {
            Event::Stats(stats) => last_stats = Some(stats.clone()),
            _ => events += 1,
        }
        cgroups.add(&event);
        files.add(&event);
        table.add(&event);
    }
    let header = reader.header().clone();
    let trace_start = header.clock.boottime_ns;
    let trace_end = table.last_ts.max(trace_start);
    let mut processes: Vec<ProcessRow> = table
        .processes
        .iter()
        .map(|p| process_row(p, &cgroups, trace_start, trace_end))
        .filter(|row| selected(row, selection))
        .collect();
    processes.sort_by(|a, b| b.wall_ns.cmp(&a.wall_ns).then(a.pid.cmp(&b.pid)));

    let mut units: BTreeMap<String, UnitRow> = BTreeMap::new();
    for row in &processes {
        let unit = units
            .entry(row.unit.clone())
            .or_insert_with(|| UnitRow { name: row.unit.clone(), ..UnitRow::default() });
        unit.processes += 1;
        unit.execs = unit.execs.saturating_add(row.execs.len() as u64);
        unit.io.add(&row.io);
        unit.time.add(&row.time);
        if let Some(loader) = &row.loader {
            unit.loader_ns = unit.loader_ns.saturating_add(loader.total_ns);
            unit.failed_lookups = unit.failed_lookups.saturating_add(loader.failed_lookups);
        }
    }
    let mut units: Vec<UnitRow> = units.into_values().collect();
    units.sort_by(|a, b| b.loader_ns.cmp(&a.loader_ns).then_with(|| a.name.cmp(&b.name)));

    let selected_pids: std::collections::HashSet<u32> = processes.iter().map(|p| p.pid).collect();
    let known_devices: std::collections::HashSet<u32> =
        files.files.iter().filter(|(_, f)| f.path.is_some()).map(|((dev, _), _)| *dev).collect();
    let files = files
        .read()
        .into_iter()
        .filter(|(_, f)| f.readers.keys().any(|pid| selected_pids.contains(pid)))
        .map(|((dev, ino), f)| {
            // A block device's own page cache holds file-system metadata;
            // its inode number is the device number of the files on it.
            let block_device =
                f.path.is_none() && known_devices.contains(&(*ino as u32)) && *ino <= u64::from(u32::MAX);
            let path = match &f.path {
                Some(path) => Some(text(path)),
                None if block_device => Some(format!("[metadata of block device {}]", device(*ino as u32))),
                None => None,
            };
            FileRow {
                package: path.as_deref().and_then(package_of),
                path,
                dev: *dev,
                ino: *ino,
                disk_read_bytes: f.disk_read_pages.saturating_mul(PAGE_SIZE),
                read_bytes: f.read_bytes,
                readers: f.readers.keys().copied().collect(),
                disk_read_by_reader: f
                    .readers
                    .iter()
                    .filter(|(_, pages)| **pages > 0)
                    .map(|(pid, pages)| ReaderRead {
                        pid: *pid,
                        disk_read_bytes: pages.saturating_mul(PAGE_SIZE),
                    })
                    .collect(),
            }
        })
        .collect();

    let mut binary_paths = std::collections::BTreeSet::new();
    for row in &processes {
        binary_paths.extend(row.execs.iter().map(|e| e.filename.clone()));
        if let Some(loader) = &row.loader {
            binary_paths.extend(loader.libraries.iter().map(|l| l.path.clone()));
        }
    }
    // Each file is parsed once, however many processes ran it.
    let binaries = binary_paths.into_iter().map(|path| binary_row(&path)).collect();

    let lost_by_probe = last_stats.as_ref().map(|s| s.lost.clone()).unwrap_or_default();
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        trace: name.to_string(),
        cut_short: reader.cut_short().map(str::to_string),
        duration_ns: trace_end - trace_start,
        events,
        lost_events: lost_by_probe.values().copied().saturating_sum(),
        lost_by_probe,
        header,
        processes,
        units,
        files,
        binaries,
        boot: None,
    })
}

/// The "incomplete" line every output carries when the trace is.
pub fn completeness_warning(report: &Report) -> Option<String> {
    let mut parts = Vec::new();
    parts.extend(describe_lost(&report.lost_by_probe));
    if let Some(reason) = &report.cut_short {
        parts.push(format!("the trace was cut short: {reason}"));
    }
    let missing = &report.header.missing_probes;
    if !missing.is_empty() {
        let probes: Vec<String> = missing.iter().map(|m| format!("{} ({})", m.probe, m.lacks)).collect();
        parts.push(format!("recorded without {}", probes.join(", ")));
    }
    (!parts.is_empty()).then(|| format!("incomplete: {}", parts.join("; ")))
}

/// `nixtrace report`.
pub fn run(args: &crate::cli::ReportArgs) -> Result<()> {
    use std::io::IsTerminal;
    let selection = Selection::new(args.top, &args.processes);
    let report = build(&args.file, &selection)?;
    let color = args.output.is_none() && args.format == Format::Text && std::io::stdout().is_terminal();
    let text = render(&report, args.format, &selection, color);
    crate::output::write_or_print(args.output.as_deref(), text.as_bytes())
}

pub fn render(report: &Report, format: Format, selection: &Selection, color: bool) -> String {
    match format {
        Format::Text => text::render(report, selection.top, color),
        Format::Markdown => markdown::render(report, selection.top),
        Format::Json => json::render(report),
    }
}

impl ProcessRow {
    /// Loader time, search time, failed lookups and libraries, formatted
    /// for a table; None without a probed loader run.
    pub fn loader_cells(&self) -> Option<[String; 4]> {
        self.loader.as_ref().map(|l| {
            [
                duration(l.total_ns),
                duration(l.search_ns),
                l.failed_lookups.to_string(),
                l.libraries.len().to_string(),
            ]
        })
    }
}

/// "1 process", "3 processes": a count and its noun, agreeing.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "12.3 ms", "1.20 s", "850 µs".
pub fn duration(ns: u64) -> String {
    match ns {
        0..1_000_000 => format!("{:.0} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// "0 B", "12.0 KiB", "3.4 MiB".
pub fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.2} GiB", n as f64 / 1_073_741_824.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(12 * 1024), "12.0 KiB");
        assert_eq!(bytes(3_565_158), "3.4 MiB");
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(1, "process", "processes"), "1 process");
        assert_eq!(count(0, "process", "processes"), "0 processes");
        assert_eq!(count(2, "process", "processes"), "2 processes");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(850_000), "850 µs");
        assert_eq!(duration(12_345_678), "12.35 ms");
        assert_eq!(duration(1_200_000_000), "1.20 s");
    }
}
