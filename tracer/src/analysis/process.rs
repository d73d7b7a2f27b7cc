//! Per process and per exec: its life, what it ran, the dynamic loader's
//! run for each exec (phases, failed lookups, libraries), its I/O and its
//! scheduler time.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{io::IoFigures, package::Package};
use crate::{
    model::{
        binary::BinaryTable,
        cache::{CacheFile, CacheOutcome},
        closure::{ClosureGraph, GraphStatus},
        path::absolute,
        process::{Exec, LoaderRun, PathLookups, Process},
        unit::CgroupNames,
    },
    saturating::SaturatingSum as _,
    trace::{ThreadTimes, TracerCost, event::text},
};

#[derive(Debug, Clone, Serialize)]
pub struct LibraryFigures {
    pub path: String,
    pub package: Option<Package>,
    pub exec_bytes: u64,
    /// Its open and the mmaps of its file descriptor.
    pub load_ns: u64,
    /// Whether its store path is outside the closure of the program's
    /// store path: something loaded it from elsewhere (`LD_LIBRARY_PATH`,
    /// `/run/current-system/sw/lib`, a `dlopen` by absolute path). Null
    /// when the trace has no store graph, or either is not in the store.
    pub outside_closure: Option<bool>,
    /// The store paths in the program's closure whose references include
    /// the library's: the packages that pull it in.
    pub pulled_in_by: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DirProbe {
    pub dir: String,
    pub failed_lookups: u64,
}

/// Failed opens of one candidate path while the loader searched for a
/// library: `dir` holds no `library`.
#[derive(Debug, Clone, Serialize)]
pub struct FailedLookup {
    pub library: String,
    pub dir: String,
    pub count: u64,
    pub ns: u64,
    /// The object (the program, or a library) whose RUNPATH or RPATH put
    /// `dir` in the search: the first, in load order, that lists it or its
    /// parent (the loader tries an entry's `glibc-hwcaps` subdirectories
    /// first). Null when none does: `LD_LIBRARY_PATH`, the system's
    /// directories, or no ELF facts in the trace.
    pub searcher: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LoaderFigures {
    /// Loader entry to `_dl_start_user`, summed over the process's execs.
    pub total_ns: u64,
    /// Of `total_ns`, what tracing the loader's calls added, by the
    /// trace's calibration (`header.tracer_cost`); null without one.
    pub tracer_ns: Option<u64>,
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
    pub failed: Vec<FailedLookup>,
    /// Libraries of the last exec, in load order.
    pub libraries: Vec<LibraryFigures>,
    /// Files the last exec mapped executable after the loader was done
    /// (`dlopen`), by the kernel's name, in order.
    pub dlopened: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExecFigures {
    pub ts_ns: u64,
    pub filename: String,
    pub argv: Vec<String>,
    /// The dynamic loader's variables in its environment (`LD_*`), by name.
    pub loader_env: BTreeMap<String, String>,
    pub loader_ns: Option<u64>,
    /// Of `loader_ns`, what tracing the loader's calls added; null without
    /// the trace's calibration or a finished loader run.
    pub loader_tracer_ns: Option<u64>,
    /// From the exec to the program's entry point (loader, initialisers).
    pub to_entry_ns: Option<u64>,
    pub failed_lookups: Option<u64>,
    /// When the loader started, was done relocating, and jumped to the
    /// program (CLOCK_BOOTTIME ns; null where the probes did not see it).
    pub loader_start_ns: Option<u64>,
    pub loader_done_ns: Option<u64>,
    pub entry_ns: Option<u64>,
    /// Its stat-family lookups outside the loader; null when the trace was
    /// recorded without the stat probe.
    pub lookups: Option<LookupFigures>,
    /// Cache files it looked for in vain and then wrote, or could not
    /// write, and caches it created in a home directory's dot-entry.
    pub caches: Vec<CacheFigures>,
}

/// One cache file of an exec, from its opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheFigures {
    /// The file looked for (or created, for a cache created unasked).
    pub path: String,
    pub outcome: CacheOutcomeName,
    /// The path written: the file itself or a temporary renamed over it.
    pub written_as: Option<String>,
    /// Why the create failed (`EROFS`, ...).
    pub errno: Option<String>,
    /// When it was looked for in vain; null when it was not.
    pub missing_ns: Option<u64>,
    /// When it was opened and found, for stale bytecode that was then
    /// written again (or tried); null otherwise.
    pub found_ns: Option<u64>,
    /// From the failed lookup (or the stale bytecode's open) to the write
    /// or the failed create; for bytecode never written, to the next open
    /// after its source.
    pub gap_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcomeName {
    Created,
    NotWritable,
    BytecodeMissing,
}

impl CacheFigures {
    fn of(file: &CacheFile) -> CacheFigures {
        let (outcome, written_as, errno) = match &file.outcome {
            CacheOutcome::Created { as_path } => (CacheOutcomeName::Created, Some(text(as_path)), None),
            CacheOutcome::NotWritable { errno } => {
                let name = format!("{:?}", nix::errno::Errno::from_raw(i32::try_from(*errno).unwrap_or(0)));
                (CacheOutcomeName::NotWritable, None, Some(name))
            }
            CacheOutcome::BytecodeMissing => (CacheOutcomeName::BytecodeMissing, None, None),
        };
        CacheFigures {
            path: text(&file.path),
            outcome,
            written_as,
            errno,
            missing_ns: file.missing_ns,
            found_ns: file.found_ns,
            gap_ns: file.gap_ns,
        }
    }
}

/// An exec's stat, access and readlink calls outside the loader: how an
/// interpreter or shell searched its module or command path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LookupFigures {
    pub calls: u64,
    pub ns: u64,
    pub failed: u64,
    pub failed_ns: u64,
    /// Every directory looked up in, by the failed lookups in it, most
    /// first.
    pub dirs: Vec<LookupDir>,
    /// Paths that failed more than once, most first: a search-path entry
    /// that does not exist is looked up again and again.
    pub repeated: Vec<RepeatedLookup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LookupDir {
    pub dir: String,
    pub failed: u64,
    pub ns: u64,
    /// Distinct names that were not there.
    pub names: u64,
    /// Lookups in it that did not find nothing: they found the path, or
    /// failed otherwise than `ENOENT` or `ENOTDIR`.
    pub found: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepeatedLookup {
    pub path: String,
    pub count: u64,
}

impl LookupFigures {
    fn of(lookups: &PathLookups) -> LookupFigures {
        let mut figures = LookupFigures { calls: lookups.calls, ns: lookups.ns, ..LookupFigures::default() };
        // By the directory's bytes: two names that display alike stay two.
        let mut dirs: BTreeMap<&[u8], LookupDir> = BTreeMap::new();
        let new_dir = |raw: &[u8]| LookupDir { dir: text(raw), failed: 0, ns: 0, names: 0, found: 0 };
        for ((raw_dir, name), failed) in &lookups.failed {
            figures.failed = figures.failed.saturating_add(failed.count);
            figures.failed_ns = figures.failed_ns.saturating_add(failed.ns);
            let dir = dirs.entry(raw_dir).or_insert_with(|| new_dir(raw_dir));
            dir.failed = dir.failed.saturating_add(failed.count);
            dir.ns = dir.ns.saturating_add(failed.ns);
            dir.names += 1;
            if failed.count > 1 {
                let path = text(&absolute(name, Some(raw_dir)));
                figures.repeated.push(RepeatedLookup { path, count: failed.count });
            }
        }
        for (raw_dir, found) in &lookups.found {
            dirs.entry(raw_dir).or_insert_with(|| new_dir(raw_dir)).found = *found;
        }
        figures.dirs = dirs.into_values().collect();
        figures.dirs.sort_by(|a, b| b.failed.cmp(&a.failed).then_with(|| a.dir.cmp(&b.dir)));
        figures.repeated.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
        figures
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessFigures {
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
    pub execs: Vec<ExecFigures>,
    /// None when no exec of this process went through a probed loader.
    pub loader: Option<LoaderFigures>,
    pub io: IoFigures,
    /// Where its threads' time went (summed over threads).
    pub time: ThreadTimes,
}

impl ProcessFigures {
    /// Dynamic loader time including the initialisers: what startup spent
    /// before the program's own code ran.
    pub fn loader_and_init_ns(&self) -> u64 {
        self.loader.as_ref().map_or(0, |l| l.total_ns.saturating_add(l.init_ns))
    }

    pub fn failed_lookups(&self) -> u64 {
        self.loader.as_ref().map_or(0, |l| l.failed_lookups)
    }
}

fn exec_figures(exec: &Exec, stat_recorded: bool, tracer_cost: Option<&TracerCost>) -> ExecFigures {
    let loader = exec.loader.as_ref();
    ExecFigures {
        ts_ns: exec.ts_ns,
        filename: text(&exec.filename),
        argv: exec.argv.iter().map(|a| text(a)).collect(),
        loader_env: exec.loader_env.iter().map(|(name, value)| (text(name), text(value))).collect(),
        loader_ns: loader.and_then(|l| l.total_ns()),
        loader_tracer_ns: loader.zip(tracer_cost).and_then(|(l, cost)| l.tracer_ns(cost)),
        to_entry_ns: loader.and_then(|l| l.entry_ns).map(|entry| entry.saturating_sub(exec.ts_ns)),
        failed_lookups: loader.map(|l| l.failed_lookups),
        loader_start_ns: loader.map(|l| l.start_ns),
        loader_done_ns: loader.and_then(|l| l.done_ns),
        entry_ns: loader.and_then(|l| l.entry_ns),
        lookups: stat_recorded.then(|| LookupFigures::of(&exec.lookups)),
        caches: exec.caches.files.iter().map(CacheFigures::of).collect(),
    }
}

fn loader_figures(
    process: &Process,
    recorded: &BinaryTable,
    graph: &ClosureGraph,
    tracer_cost: Option<&TracerCost>,
) -> Option<LoaderFigures> {
    let runs: Vec<_> = process.execs.iter().filter_map(|e| Some((e, e.loader.as_ref()?))).collect();
    let (last_exec, last) = runs.last()?;
    let mut figures = LoaderFigures {
        tracer_ns: tracer_cost
            .map(|cost| runs.iter().map(|(_, run)| run.tracer_ns(cost).unwrap_or(0)).saturating_sum()),
        ..LoaderFigures::default()
    };
    let mut lookups: BTreeMap<(String, String, Option<String>), (u64, u64)> = BTreeMap::new();
    for (exec, run) in &runs {
        let searchers = searchers(exec, run, recorded);
        figures.total_ns = figures.total_ns.saturating_add(run.total_ns().unwrap_or(0));
        figures.search_ns = figures.search_ns.saturating_add(run.search_ns);
        figures.open_ns = figures.open_ns.saturating_add(run.open_ns);
        figures.map_ns = figures.map_ns.saturating_add(run.map_ns);
        figures.rest_ns = figures.rest_ns.saturating_add(run.rest_ns().unwrap_or(0));
        figures.init_ns = figures.init_ns.saturating_add(run.init_ns().unwrap_or(0));
        figures.failed_lookups = figures.failed_lookups.saturating_add(run.failed_lookups);
        for ((dir, library), failed) in &run.lookups {
            let dir = text(dir);
            let searcher = searchers.iter().find(|(_, dirs)| dirs.iter().any(|d| searched_for(&dir, d)));
            let sum =
                lookups.entry((text(library), dir, searcher.map(|(path, _)| path.clone()))).or_default();
            sum.0 = sum.0.saturating_add(failed.count);
            sum.1 = sum.1.saturating_add(failed.ns);
        }
    }
    let mut dirs: BTreeMap<&str, u64> = BTreeMap::new();
    for ((_, dir, _), (count, _)) in &lookups {
        let failed = dirs.entry(dir).or_default();
        *failed = failed.saturating_add(*count);
    }
    figures.dirs_probed = dirs
        .into_iter()
        .map(|(dir, failed_lookups)| DirProbe { dir: dir.to_string(), failed_lookups })
        .collect();
    figures
        .dirs_probed
        .sort_by(|a, b| b.failed_lookups.cmp(&a.failed_lookups).then_with(|| a.dir.cmp(&b.dir)));
    figures.failed = lookups
        .into_iter()
        .map(|((library, dir, searcher), (count, ns))| FailedLookup { library, dir, count, ns, searcher })
        .collect();
    let program = Package::of(&text(&last_exec.filename)).map(|p| p.store_path);
    let closure = match (&program, graph.status()) {
        (Some(program), GraphStatus::Complete) => Some(graph.closure(program)),
        _ => None,
    };
    figures.libraries = last
        .libraries
        .iter()
        .map(|l| {
            let path = text(&l.path);
            let package = Package::of(&text(&l.mapped_path)).or_else(|| Package::of(&path));
            let (outside_closure, pulled_in_by) = match (&closure, &package) {
                (Some(closure), Some(package)) => (
                    Some(!closure.contains(package.store_path.as_str())),
                    graph
                        .referrers(&package.store_path)
                        .into_iter()
                        .filter(|r| closure.contains(r))
                        .map(str::to_string)
                        .collect(),
                ),
                _ => (None, Vec::new()),
            };
            LibraryFigures {
                path,
                package,
                exec_bytes: l.exec_bytes,
                load_ns: l.load_ns,
                outside_closure,
                pulled_in_by,
            }
        })
        .collect();
    figures.dlopened = last_exec.late_libraries.iter().map(|p| text(p)).collect();
    Some(figures)
}

/// The objects whose search paths the loader walked for `exec`, each with
/// its RUNPATH and RPATH entries as the loader reads them: the program,
/// then its libraries in load order.
fn searchers(exec: &Exec, run: &LoaderRun, recorded: &BinaryTable) -> Vec<(String, Vec<String>)> {
    std::iter::once((text(&exec.filename), exec.dev, exec.ino))
        .chain(run.libraries.iter().map(|l| (text(&l.path), l.dev, l.ino)))
        .filter_map(|(path, dev, ino)| {
            let facts = &recorded.get(dev, ino)?.facts;
            let dirs = facts.runpath.iter().chain(&facts.rpath).map(|d| expand_origin(d, &path)).collect();
            Some((path, dirs))
        })
        .collect()
}

/// A RUNPATH entry as the loader reads it: `$ORIGIN` (or `${ORIGIN}`) is
/// the directory of the object that holds it; trailing slashes go.
pub fn expand_origin(entry: &str, object: &str) -> String {
    let origin = object.rsplit_once('/').map_or(".", |(dir, _)| if dir.is_empty() { "/" } else { dir });
    let expanded = entry.replace("${ORIGIN}", origin).replace("$ORIGIN", origin);
    let trimmed = expanded.trim_end_matches('/');
    if trimmed.is_empty() { expanded } else { trimmed.to_string() }
}

/// Did the loader probe `dir` because `entry` was in a search path? It
/// probes the entry itself and, before it, the entry's `glibc-hwcaps/*`
/// subdirectories (and, in older glibcs, `tls/` and platform ones).
pub fn searched_for(dir: &str, entry: &str) -> bool {
    dir == entry || dir.strip_prefix(entry).is_some_and(|rest| rest.starts_with('/'))
}

/// The model's tables a process's figures also read.
pub struct Tables<'a> {
    pub cgroups: &'a CgroupNames,
    pub binaries: &'a BinaryTable,
    pub graph: &'a ClosureGraph,
    /// The trace has the stat probe's lookups.
    pub stat_recorded: bool,
    /// What tracing added to each loader call, when the trace measured it.
    pub tracer_cost: Option<TracerCost>,
}

/// The figures of one process of a trace that ran from `trace_start` to
/// `trace_end`.
pub fn process_figures(
    process: &Process,
    tables: &Tables,
    trace_start: u64,
    trace_end: u64,
) -> ProcessFigures {
    let Tables { cgroups, binaries: recorded, graph, stat_recorded, tracer_cost } = tables;
    let exe = process.exe().map(text);
    let start = process.key.start_ns.max(trace_start);
    let (exit_code, signal) = match process.exit_status {
        Some(status) if status & 0x7f == 0 => (Some((status >> 8) & 0xff), None),
        Some(status) => (None, Some(status & 0x7f)),
        None => (None, None),
    };
    ProcessFigures {
        pid: process.key.pid,
        ppid: process.ppid,
        start_ns: process.key.start_ns,
        parent_start_ns: process.parent.map(|p| p.start_ns),
        package: exe.as_deref().and_then(Package::of),
        exe,
        unit: cgroups.unit(process.cgroup_id),
        cgroup: cgroups.path(process.cgroup_id),
        wall_ns: process.end_ns.unwrap_or(trace_end).saturating_sub(start),
        seeded: process.seeded,
        running: process.end_ns.is_none(),
        orphaned_ns: process.orphaned_ns,
        exit_code,
        signal,
        execs: process
            .execs
            .iter()
            .map(|exec| exec_figures(exec, *stat_recorded, tracer_cost.as_ref()))
            .collect(),
        loader: loader_figures(process, recorded, graph, tracer_cost.as_ref()),
        io: IoFigures::from(&process.io),
        time: process.times,
    }
}
