//! The command line.

use std::{ffi::OsString, path::PathBuf};

use clap::{Args, Parser, Subcommand};

/// Trace program startup and boot with eBPF: every exec, open and mmap, with
/// the process tree and cgroups, into a compact trace file.
#[derive(Debug, Parser)]
#[command(name = "nixtrace", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record a trace of a command, some processes, or the whole system.
    ///
    /// With a command (after `--`), nixtrace runs it, follows it and all its
    /// descendants, stops when it exits and exits with its status. Without
    /// one, it traces the whole system (narrowed by --pid or --cgroup) until
    /// Ctrl-C, SIGTERM or --duration.
    ///
    /// Needs root (or CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH). Under
    /// sudo, the command runs as the invoking user.
    #[command(after_help = "Examples:\n  \
        sudo nixtrace record -o python.ntr -- python3 -c pass\n  \
        sudo nixtrace record -o boot.ntr --duration 30\n  \
        sudo nixtrace record -o unit.ntr --cgroup /system.slice/nginx.service")]
    Record(RecordArgs),
    /// Summarise a trace: processes, their dynamic-loader cost, units.
    ///
    /// Text for a terminal, Markdown for a pull request, JSON for programs
    /// (schema in docs/report-schema.md). Every format says when the trace
    /// is incomplete (events lost, or cut short).
    #[command(after_help = "Examples:\n  \
        nixtrace report python.ntr\n  \
        nixtrace report boot.ntr --format markdown --top 20 > comment.md\n  \
        nixtrace report boot.ntr --format json --unit systemd-udevd.service")]
    Report(ReportArgs),
    /// Draw a trace as a flamegraph (SVG): where startup time, disk reads
    /// or the dynamic loader's work went.
    ///
    /// Kinds: startup (wall time: unit; process chain; binary; phase), io
    /// (bytes read from disk: unit; binary; package; file), linker (loader
    /// time: binary; library; search, open and map), lookups (failed library
    /// lookups: binary; library; directory) and exec (execs by process
    /// tree). The SVG's subtitle names the host, kernel and date, and warns
    /// when the trace is incomplete. Open it in a browser: click to zoom,
    /// Ctrl-F to search.
    #[command(after_help = "Examples:\n  \
        nixtrace flamegraph boot.ntr -o boot.svg\n  \
        nixtrace flamegraph boot.ntr --kind startup --chart -o boot-chart.svg\n  \
        nixtrace flamegraph python.ntr --kind linker -o linker.svg\n  \
        nixtrace flamegraph boot.ntr --kind io --folded | grep libLLVM")]
    Flamegraph(FlamegraphArgs),
    /// Compare two traces (before and after a change): per unit and per
    /// binary, with a differential flamegraph.
    ///
    /// Compares process time (wall time summed over processes), dynamic
    /// loader time, failed library lookups and bytes read from disk, with
    /// Nix store hashes elided so a rebuilt package compares with its old
    /// self. Markdown is what a pull-request comment holds. With -o DIR it
    /// writes DIR/diff.md (or diff.json) and DIR/diff-KIND.svg.
    ///
    /// Exit status: 0; 3 when --fail-on-regression is given and something
    /// grew by more than that percentage (and more than its noise floor:
    /// 0.5 ms, 1 lookup, 64 KiB); 1 on errors.
    #[command(after_help = "Examples:\n  \
        nixtrace diff before.ntr after.ntr\n  \
        nixtrace diff before.ntr after.ntr -o diff/ --fail-on-regression 10\n  \
        nixtrace diff before.ntr after.ntr --format json | jq '.regressions'")]
    Diff(DiffArgs),
    /// Export a trace as a timeline for the Perfetto UI or chrome://tracing.
    ///
    /// Processes and threads become tracks; each process's life, its execs,
    /// the dynamic loader and the library initialisers, opens and mmaps
    /// become slices (nested strictly, as the viewers require). Open the file
    /// at https://ui.perfetto.dev (it stays in the browser) or chrome://tracing.
    #[command(after_help = "Examples:\n  \
        nixtrace export boot.ntr -o boot.json\n  \
        nixtrace export python.ntr --format chrome-json -o python.json")]
    Export(ExportArgs),
    /// Print a trace's events as JSON Lines, one object per event.
    ///
    /// The first line is the trace header; every event has `type`, `ts_ns`,
    /// `pid`, `tid` and `cgroup_id`. See docs/trace-format.md for the fields.
    Dump(DumpArgs),
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Where to write the trace.
    #[arg(short, long, value_name = "FILE", default_value = "nixtrace.ntr")]
    pub output: PathBuf,

    /// Overwrite the output file if it exists.
    #[arg(short, long)]
    pub force: bool,

    /// Stop after this many seconds (decimals allowed).
    #[arg(short, long, value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// Only trace this process and its descendants (repeatable).
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Only trace tasks in this cgroup v2 directory or below it (a path
    /// relative to the cgroup root, e.g. /system.slice/foo.service).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Size of the kernel-to-recorder ring buffer, in bytes (a power of two,
    /// at least 4096). When it fills up, events are dropped in the kernel
    /// and counted as lost.
    #[arg(long, value_name = "BYTES", default_value_t = tracer_common::RING_BUFFER_BYTES)]
    pub buffer_size: u32,

    /// Drop the page cache first (sync, then drop_caches), so the trace shows
    /// a cold start: every file is read from disk again. This slows down
    /// the whole machine for a while; nixtrace says so when it does it.
    #[arg(long)]
    pub cold: bool,

    /// Mask what matches this regular expression in every recorded command
    /// line (repeatable), e.g. --redact 'password=\S+'. Matches become
    /// `<redacted>` before anything is written.
    #[arg(long, value_name = "REGEX", value_parser = parse_redaction)]
    pub redact: Vec<regex::bytes::Regex>,

    /// Under sudo, run the command as root instead of the invoking user.
    #[arg(long)]
    pub run_as_root: bool,

    /// Record without an optional probe (repeatable), to cut what tracing
    /// costs: sched and page_cache fire the most. Reports made from the
    /// trace say what it lacks.
    #[arg(long, value_name = "PROBE", value_parser = optional_probe())]
    pub no_probe: Vec<crate::trace::Probe>,

    /// The running kernel's BTF, for a kernel without /sys/kernel/btf/vmlinux:
    /// raw BTF, or a vmlinux with a .BTF section. Without it, nixtrace
    /// also looks where libbpf does (/boot, /lib/modules, /usr/lib/debug).
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,

    /// No status line and no summary.
    #[arg(short, long)]
    pub quiet: bool,

    /// Trace this boot, as the early systemd unit does
    /// (systemd/nixtrace-boot.service): record the whole system into /run,
    /// tell systemd when the probes are attached, stop when systemd says
    /// the boot has finished (or after --duration, default 300 s), then
    /// write OUTPUT_DIR/<boot-id>.ntr with its report (.report.md,
    /// .report.json) and flamegraphs (.startup.svg, .io.svg), keeping the
    /// last --keep boots. -o is ignored.
    #[arg(long)]
    pub boot: bool,

    /// With --boot: where the boots' traces and reports go.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/nixtrace/boots", requires = "boot")]
    pub output_dir: PathBuf,

    /// With --boot: how many boots to keep (the oldest are removed).
    #[arg(long, value_name = "N", default_value_t = 10, requires = "boot")]
    pub keep: usize,

    /// The command to run and trace.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// `--no-probe`'s values, each with what the trace lacks without it.
fn optional_probe() -> impl clap::builder::TypedValueParser<Value = crate::trace::Probe> {
    let values = crate::record::optional_probes().map(|(probe, lacks)| {
        clap::builder::PossibleValue::new(probe.name()).help(format!("the trace lacks {lacks}"))
    });
    let names = clap::builder::PossibleValuesParser::new(values);
    clap::builder::TypedValueParser::try_map(names, |name| name.parse::<crate::trace::Probe>())
}

fn parse_redaction(pattern: &str) -> Result<regex::bytes::Regex, String> {
    regex::bytes::Regex::new(pattern).map_err(|e| e.to_string().replace('\n', " "))
}

fn parse_percent(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(pct) if pct.is_finite() && pct >= 0.0 => Ok(pct),
        _ => Err(format!("expected a percentage such as 10 or 2.5, not {text:?}")),
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The trace file.
    pub file: PathBuf,

    /// Output format.
    #[arg(short = 'F', long, value_enum, default_value = "text")]
    pub format: crate::report::Format,

    /// Rows per table in text and Markdown (JSON has every process).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 15)]
    pub top: usize,

    #[command(flatten)]
    pub processes: ProcessFilter,

    /// Write the report here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Which processes a report or a flamegraph covers.
#[derive(Debug, Args)]
pub struct ProcessFilter {
    /// Only processes in this systemd unit (e.g. systemd-udevd.service).
    #[arg(long, value_name = "UNIT")]
    pub unit: Option<String>,

    /// Only processes whose executable path contains this.
    #[arg(long, value_name = "TEXT")]
    pub binary: Option<String>,
}

#[derive(Debug, Args)]
pub struct FlamegraphArgs {
    /// The trace file.
    pub file: PathBuf,

    /// What to draw.
    #[arg(short, long, value_enum, default_value = "startup")]
    pub kind: crate::flamegraph::Kind,

    /// Write the collapsed stacks (`a;b;c COUNT` lines) instead of an SVG,
    /// for inferno, flamegraph.pl, speedscope or grep.
    #[arg(long)]
    pub folded: bool,

    /// A flame chart: units in the order their first process started, each
    /// unit's processes depth-first by start, instead of sorted by name
    /// (only neighbouring identical stacks merge). Best for a boot with
    /// --kind startup.
    #[arg(long)]
    pub chart: bool,

    #[command(flatten)]
    pub processes: ProcessFilter,

    /// Write the SVG (or stacks) here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The trace before the change.
    pub before: PathBuf,

    /// The trace after the change.
    pub after: PathBuf,

    /// Output format.
    #[arg(short = 'F', long, value_enum, default_value = "markdown")]
    pub format: crate::diff::Format,

    /// Write diff.md (or diff.json) and the differential flamegraph into
    /// this directory (created if needed) instead of printing.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// The kind of the differential flamegraph.
    #[arg(short, long, value_enum, default_value = "startup")]
    pub kind: crate::flamegraph::Kind,

    /// Rows per table.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10)]
    pub top: usize,

    /// Exit with status 3 when a total, a unit or a binary grew by more
    /// than this percentage.
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    pub fail_on_regression: Option<f64>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The trace file.
    pub file: PathBuf,

    /// Output format.
    #[arg(short = 'F', long, value_enum, default_value = "chrome-json")]
    pub format: crate::export::Format,

    /// Write the timeline here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The trace file.
    pub file: PathBuf,
}
