//! The analysis layer: every figure the outputs show, computed once from
//! the model of a trace. One pass over the events builds the model
//! (processes, cgroups, files, binaries); this layer turns it into figures
//! per process, exec, unit, file and binary. `report`, `flamegraph`,
//! `diff` and `export` only render an [`Analysis`]; none of them reads the
//! events or the filesystem again.

pub mod binary;
pub mod boot;
pub mod io;
pub mod package;
pub mod preload;
pub mod process;
pub mod unit;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs::File,
    io::BufReader,
    path::Path,
};

use anyhow::{Context as _, Result};
use serde::Serialize;

pub use self::{
    binary::BinaryFigures, io::FileFigures, package::PackageFigures, process::ProcessFigures,
    unit::UnitFigures,
};
use crate::{
    model::{
        binary::BinaryTable,
        closure::{ClosureGraph, GraphStatus},
        io::FileTable,
        process::ProcessTable,
        unit::CgroupNames,
    },
    saturating::SaturatingSum as _,
    trace::{
        Event, Header, Probe, Stats, TraceReader,
        event::{describe_lost, text},
    },
};

/// Version of the JSON schema (`docs/report-schema.md`).
pub const SCHEMA_VERSION: u32 = 2;

/// Which processes an analysis covers.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only processes in this unit.
    pub unit: Option<String>,
    /// Only processes whose executable path contains this.
    pub binary: Option<String>,
    /// Only processes whose executable is in this Nix package (its name,
    /// name and version, or store path).
    pub package: Option<String>,
}

impl Filter {
    fn admits(&self, process: &ProcessFigures) -> bool {
        self.unit.as_ref().is_none_or(|unit| &process.unit == unit)
            && self
                .binary
                .as_ref()
                .is_none_or(|b| process.exe.as_deref().is_some_and(|exe| exe.contains(b.as_str())))
            && self
                .package
                .as_ref()
                .is_none_or(|wanted| process.package.as_ref().is_some_and(|p| p.is(wanted)))
    }
}

/// Everything the outputs know about a trace.
#[derive(Debug, Serialize)]
pub struct Analysis {
    pub schema_version: u32,
    pub trace: String,
    pub header: Header,
    /// Why the trace is incomplete, if it is.
    pub cut_short: Option<String>,
    pub duration_ns: u64,
    pub events: u64,
    pub lost_events: u64,
    pub lost_by_probe: BTreeMap<String, u64>,
    /// The selected processes, longest wall time first.
    pub processes: Vec<ProcessFigures>,
    pub units: Vec<UnitFigures>,
    /// The Nix packages (store paths) of the selected processes' programs,
    /// libraries and files, most loader time first.
    pub packages: Vec<PackageFigures>,
    /// Files read by the selected processes: most read from disk first,
    /// then most bytes read.
    pub files: Vec<FileFigures>,
    /// Every executable and library the selected processes ran, by path,
    /// with the static ELF facts recorded while they ran.
    pub binaries: Vec<BinaryFigures>,
    /// Whether the trace carries the Nix store's graph (which package
    /// pulls in which): `complete`, `unavailable` (with why) or
    /// `not_recorded`.
    pub store_graph: StoreGraph,
    /// For a trace `record --boot` made: what the trace missed of the
    /// boot, and systemd's view of it (the trace's `systemd_analyze`
    /// record, written when the recording stopped). Null otherwise.
    pub boot: Option<boot::BootSection>,
    /// What `nixtrace preload` would read back: a list, not a figure the
    /// report shows (`record --boot` writes it beside the report).
    #[serde(skip)]
    pub preload: preload::PreloadList,
}

#[derive(Debug, Serialize)]
pub struct StoreGraph {
    pub status: &'static str,
    /// Why it is unavailable; null otherwise.
    pub reason: Option<String>,
}

impl From<GraphStatus> for StoreGraph {
    fn from(status: GraphStatus) -> StoreGraph {
        match status {
            GraphStatus::Complete => StoreGraph { status: "complete", reason: None },
            GraphStatus::Unavailable(reason) => StoreGraph { status: "unavailable", reason: Some(reason) },
            GraphStatus::NotRecorded => StoreGraph { status: "not_recorded", reason: None },
        }
    }
}

/// Reads the trace at `path` and analyses it.
pub fn analyse_file(path: &Path, filter: &Filter) -> Result<Analysis> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    analyse(BufReader::new(file), &path.display().to_string(), filter)
}

/// Analyses the trace `input` holds; `name` names it in errors and in the
/// outputs.
pub fn analyse(input: impl std::io::Read, name: &str, filter: &Filter) -> Result<Analysis> {
    let mut reader = TraceReader::new(input).with_context(|| name.to_string())?;
    let mut table = ProcessTable::default();
    let mut cgroups = CgroupNames::default();
    let mut files = FileTable::default();
    let mut recorded_binaries = BinaryTable::default();
    let mut graph = ClosureGraph::default();
    for loader in &reader.header().loaders {
        files.name(loader.dev, loader.ino, &loader.path);
    }
    let mut last_stats: Option<Stats> = None;
    let mut systemd_analyze = None;
    let mut events = 0;
    for event in reader.by_ref() {
        let event = event.with_context(|| name.to_string())?;
        match &event {
            Event::Stats(stats) => last_stats = Some(stats.clone()),
            Event::SystemdAnalyze { critical_chain, blame, unit_times, .. } => {
                systemd_analyze =
                    Some([critical_chain, blame, unit_times].map(|output| output.as_deref().map(text)));
                events += 1;
            }
            _ => events += 1,
        }
        cgroups.add(&event);
        files.add(&event);
        recorded_binaries.add(&event);
        graph.add(&event);
        table.add(&event);
    }
    let header = reader.header().clone();
    let trace_start = header.clock.boottime_ns;
    let trace_end = table.last_ts.max(trace_start);
    let tables = process::Tables {
        cgroups: &cgroups,
        binaries: &recorded_binaries,
        graph: &graph,
        stat_recorded: header.has_probe(Probe::Stat),
        tracer_cost: header.tracer_cost,
    };
    let mut selected: Vec<(ProcessFigures, usize)> = table
        .processes
        .iter()
        .enumerate()
        .map(|(i, p)| (process::process_figures(p, &tables, trace_start, trace_end), i))
        .filter(|(figures, _)| filter.admits(figures))
        .collect();
    selected.sort_by(|(a, _), (b, _)| b.wall_ns.cmp(&a.wall_ns).then(a.pid.cmp(&b.pid)));
    let binaries = binary::binaries(selected.iter().map(|(_, i)| &table.processes[*i]), &recorded_binaries);
    let pids: HashSet<u32> = selected.iter().map(|(p, _)| p.pid).collect();
    let units: HashMap<u32, &str> = selected.iter().map(|(p, _)| (p.pid, p.unit.as_str())).collect();
    let preload = preload::preload_list(&files, &units, trace_start);
    let files = io::files_read(&files, &pids);
    let packages = package::packages(
        selected.iter().map(|(figures, i)| (figures, &table.processes[*i])),
        &files,
        &graph,
    );
    let processes: Vec<ProcessFigures> = selected.into_iter().map(|(figures, _)| figures).collect();
    let lost_by_probe = last_stats.map(|s| s.lost).unwrap_or_default();
    let mut analysis = Analysis {
        schema_version: SCHEMA_VERSION,
        trace: name.to_string(),
        cut_short: reader.cut_short().map(str::to_string),
        duration_ns: trace_end - trace_start,
        events,
        lost_events: lost_by_probe.values().copied().saturating_sum(),
        lost_by_probe,
        header,
        units: unit::units(&processes),
        packages,
        files,
        binaries,
        processes,
        store_graph: graph.status().into(),
        boot: None,
        preload,
    };
    if let Some([critical_chain, blame, unit_times]) = systemd_analyze {
        analysis.boot = Some(boot::section(
            &analysis,
            critical_chain.as_deref(),
            blame.as_deref(),
            unit_times.as_deref(),
        ));
    }
    Ok(analysis)
}

/// The dynamic loader over the selected processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderSummary {
    /// Processes with a probed loader run.
    pub processes: u64,
    pub total_ns: u64,
    /// Of it, what tracing added (null without the trace's calibration).
    pub tracer_ns: Option<u64>,
    pub failed_lookups: u64,
}

impl Analysis {
    /// The loader's time and failed lookups over the selected processes.
    pub fn loader_summary(&self) -> LoaderSummary {
        let runs: Vec<_> = self.processes.iter().filter_map(|p| p.loader.as_ref()).collect();
        LoaderSummary {
            processes: runs.len() as u64,
            total_ns: runs.iter().map(|l| l.total_ns).saturating_sum(),
            tracer_ns: self
                .header
                .tracer_cost
                .map(|_| runs.iter().map(|l| l.tracer_ns.unwrap_or(0)).saturating_sum()),
            failed_lookups: runs.iter().map(|l| l.failed_lookups).saturating_sum(),
        }
    }

    /// The "incomplete" line every output carries when the trace is.
    pub fn incomplete(&self) -> Option<String> {
        let mut parts = Vec::new();
        parts.extend(describe_lost(&self.lost_by_probe));
        if let Some(reason) = &self.cut_short {
            parts.push(format!("the trace was cut short: {reason}"));
        }
        let missing = &self.header.missing_probes;
        if !missing.is_empty() {
            let probes: Vec<String> = missing.iter().map(|m| format!("{} ({})", m.probe, m.lacks)).collect();
            parts.push(format!("recorded without {}", probes.join(", ")));
        }
        (!parts.is_empty()).then(|| format!("incomplete: {}", parts.join("; ")))
    }
}
