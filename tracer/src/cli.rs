//! The command line: clap parses it into the argument structs here, and
//! each becomes the options type its command owns (`record::Options`,
//! `report::Options`, ...). Nothing below this module knows about clap,
//! and every usage error is clap's: exit status 2, with the usage.

use std::{ffi::OsString, io::IsTerminal as _, path::PathBuf};

use clap::{
    Args, Parser, Subcommand, ValueEnum,
    builder::{PossibleValue, PossibleValuesParser, TypedValueParser},
};

use crate::{analysis::Filter, diff, export, flamegraph, recommend, record, report, trace::Probe};

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
    /// self. Markdown is what a pull-request comment holds. With
    /// --output-dir DIR it writes DIR/diff.md (or diff.json) and
    /// DIR/diff-KIND.svg.
    ///
    /// Exit status: 0; 3 when --fail-on-regression is given and something
    /// grew by more than that percentage (and more than its noise floor:
    /// 0.5 ms, 1 lookup, 64 KiB); 1 on errors.
    #[command(after_help = "Examples:\n  \
        nixtrace diff before.ntr after.ntr\n  \
        nixtrace diff before.ntr after.ntr --output-dir diff/ --fail-on-regression 10\n  \
        nixtrace diff before.ntr after.ntr --format json | jq '.regressions'")]
    Diff(DiffArgs),
    /// Export a trace as a timeline for the Perfetto UI or chrome://tracing,
    /// traces as Parquet tables for query engines, or a trace's preload list.
    ///
    /// chrome-json: processes and threads become tracks; each process's
    /// life, its execs, the dynamic loader and the library initialisers,
    /// opens and mmaps become slices (nested strictly, as the viewers
    /// require). Open the file at https://ui.perfetto.dev (it stays in the
    /// browser) or chrome://tracing.
    ///
    /// parquet: one or more traces into DIR/TABLE.parquet, one file per
    /// table (traces, processes, execs, libraries, failed_lookups, files,
    /// file_readers, units, unit_activations, packages, recommendations; with
    /// --events also
    /// opens and mmaps), every row with its trace's id. The figures are
    /// those of `report --format json`. Tables and columns:
    /// docs/parquet-schema.md; queries: docs/fleet.md.
    ///
    /// preload: the pages the trace saw come from disk, file by file in
    /// the order they were first used, for `nixtrace preload`.
    #[command(after_help = "Examples:\n  \
        nixtrace export boot.ntr -o boot.json\n  \
        nixtrace export python.ntr --format chrome-json -o python.json\n  \
        nixtrace export /var/lib/nixtrace/boots/*.ntr --format parquet -o fleet/$(hostname)")]
    Export(ExportArgs),
    /// Say what to change: rules that read a trace and recommend fixes,
    /// each with its evidence, an estimated saving and a pasteable,
    /// opt-in, reversible fix.
    ///
    /// Ranked by the time each would save, then bytes. --list-rules prints
    /// every rule, what it looks for and its thresholds; --threshold
    /// changes one. The JSON shape is in docs/recommendations.md.
    #[command(after_help = "Examples:\n  \
        nixtrace recommend python.ntr\n  \
        nixtrace recommend boot.ntr --format markdown --min-saving 1ms > comment.md\n  \
        nixtrace recommend boot.ntr --rule library-search --format json\n  \
        nixtrace recommend --list-rules")]
    Recommend(RecommendArgs),
    /// Read the files a preload list names into the page cache, ahead of
    /// the programs that need them.
    ///
    /// A list holds the pages a trace saw come from disk, file by file in
    /// the order they were first used: `record --boot` writes one beside
    /// every boot (<boot-id>.preload, and latest.preload for the next
    /// boot), `export --format preload` makes one from any trace. Reading
    /// uses readahead(2), which queues the reads and returns; nothing is
    /// written, and listed files that are gone are skipped. It prints what
    /// of the listed pages was cached before and after. At boot,
    /// nixtrace-preload.service runs it (the boot-io recommendation, and
    /// services.nixtrace.optimizations.preload on NixOS).
    #[command(after_help = "Examples:\n  \
        sudo nixtrace preload /var/lib/nixtrace/boots/latest.preload\n  \
        nixtrace export firefox.ntr --format preload -o firefox.preload\n  \
        nixtrace preload --check firefox.preload")]
    Preload(PreloadArgs),
    /// Print a trace's events as JSON Lines, one object per event.
    ///
    /// The first line is the trace header; every event has `type`, `ts_ns`,
    /// `pid`, `tid` and `cgroup_id`. See docs/trace-format.md for the fields.
    Dump(DumpArgs),
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("narrowing").multiple(true).args(["pids", "cgroup", "duration"]))]
pub struct RecordArgs {
    /// Where to write the trace.
    #[arg(short, long, value_name = "FILE", default_value = "nixtrace.ntr")]
    output: PathBuf,

    /// Overwrite the output file if it exists.
    #[arg(short, long)]
    force: bool,

    /// Stop after this many seconds (decimals allowed). Only without a
    /// command: with one, nixtrace stops when it exits.
    #[arg(short, long, value_name = "SECONDS", value_parser = parse_seconds)]
    duration: Option<f64>,

    /// Only trace this process and its descendants (repeatable). Only
    /// without a command.
    #[arg(short, long = "pid", value_name = "PID")]
    pids: Vec<u32>,

    /// Only trace tasks in this cgroup v2 directory or below it (a path
    /// relative to the cgroup root, e.g. /system.slice/foo.service). Only
    /// without a command.
    #[arg(long, value_name = "PATH")]
    cgroup: Option<PathBuf>,

    /// Size of the kernel-to-recorder ring buffer, in bytes (a power of two,
    /// at least 4096). When it fills up, events are dropped in the kernel
    /// and counted as lost.
    #[arg(long, value_name = "BYTES", default_value_t = tracer_common::RING_BUFFER_BYTES, value_parser = parse_buffer_size)]
    buffer_size: u32,

    /// Drop the page cache first (sync, then drop_caches), so the trace shows
    /// a cold start: every file is read from disk again. This slows down
    /// the whole machine for a while; nixtrace says so when it does it.
    #[arg(long)]
    cold: bool,

    /// Mask what matches this regular expression in every recorded command
    /// line (repeatable), e.g. --redact 'password=\S+'. Matches become
    /// `<redacted>` before anything is written.
    #[arg(long, value_name = "REGEX", value_parser = parse_redaction)]
    redact: Vec<regex::bytes::Regex>,

    /// Under sudo, run the command as root instead of the invoking user.
    #[arg(long)]
    run_as_root: bool,

    /// Record without an optional probe (repeatable), to cut what tracing
    /// costs: sched and page_cache fire the most. Reports made from the
    /// trace say what it lacks.
    #[arg(long, value_name = "PROBE", value_parser = optional_probe())]
    no_probe: Vec<Probe>,

    /// Also record with a probe that is off unless asked for (repeatable).
    /// `stat` records every stat, access and readlink call on a path, which
    /// is how interpreters and shells search their module and command
    /// paths (the interpreter-search recommendation reads it). These calls
    /// are far more frequent than opens: in docs/benchmarks.md's last run,
    /// 200 `python3 -c pass` starts went from 1.05x to 1.17x of their
    /// untraced time with it, and their trace had twice the events.
    #[arg(long, value_name = "PROBE", value_parser = opt_in_probe())]
    probe: Vec<Probe>,

    /// The running kernel's BTF, for a kernel without /sys/kernel/btf/vmlinux:
    /// raw BTF, or a vmlinux with a .BTF section. Without it, nixtrace
    /// also looks where libbpf does (/boot, /lib/modules, /usr/lib/debug).
    #[arg(long, value_name = "FILE")]
    btf: Option<PathBuf>,

    /// No status line and no summary.
    #[arg(short, long)]
    quiet: bool,

    /// When to colour the status line.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    color: ColorWhen,

    /// Trace this boot, as the early systemd unit does
    /// (systemd/nixtrace-boot.service): record the whole system into /run,
    /// tell systemd when the probes are attached, stop when systemd says
    /// the boot has finished (or after --duration, default 300 s), then
    /// write OUTPUT_DIR/<boot-id>.ntr with its report (.report.md,
    /// .report.json), flamegraphs (.startup.svg, .io.svg) and, with
    /// --parquet, its tables (.TABLE.parquet), keeping the last --keep boots.
    #[arg(long, conflicts_with_all = ["output", "force", "pids", "cgroup", "command"])]
    boot: bool,

    /// With --boot: where the boots' traces and reports go.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/nixtrace/boots", requires = "boot")]
    output_dir: PathBuf,

    /// With --boot: also write the boot's Parquet tables beside its report,
    /// OUTPUT_DIR/<boot-id>.TABLE.parquet (docs/parquet-schema.md), for
    /// queries across boots and hosts (docs/fleet.md).
    #[arg(long, requires = "boot")]
    parquet: bool,

    /// With --boot: how many boots to keep (the oldest are removed).
    #[arg(long, value_name = "N", default_value_t = 10, requires = "boot",
          value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    keep: usize,

    /// The command to run and trace.
    #[arg(last = true, value_name = "COMMAND", conflicts_with = "narrowing")]
    command: Vec<OsString>,
}

impl From<RecordArgs> for record::Options {
    fn from(args: RecordArgs) -> record::Options {
        record::Options {
            output: args.output,
            force: args.force,
            duration: args.duration,
            pids: args.pids,
            cgroup: args.cgroup,
            buffer_size: args.buffer_size,
            cold: args.cold,
            redact: args.redact,
            run_as_root: args.run_as_root,
            no_probe: args.no_probe,
            probe: args.probe,
            btf: args.btf,
            quiet: args.quiet,
            color: args.color.enabled_on_stderr(),
            boot: args.boot.then_some(record::BootOptions {
                output_dir: args.output_dir,
                keep: args.keep,
                parquet: args.parquet,
            }),
            command: args.command,
        }
    }
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    Always,
    Never,
}

impl ColorWhen {
    fn enabled(self, terminal: bool) -> bool {
        match self {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            // https://no-color.org: set and not empty.
            ColorWhen::Auto => terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    fn enabled_on_stderr(self) -> bool {
        self.enabled(std::io::stderr().is_terminal())
    }
}

/// A value parser for one of a domain enum's `ALL` values, by `name`.
fn one_of<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
    help: fn(T) -> &'static str,
) -> impl TypedValueParser<Value = T> {
    let values = all.iter().map(move |v| PossibleValue::new(name(*v)).help(help(*v)));
    PossibleValuesParser::new(values).map(move |chosen| {
        *all.iter().find(|v| name(**v) == chosen).expect("clap admits only the possible values")
    })
}

/// `--no-probe`'s values, each with what the trace lacks without it.
fn optional_probe() -> impl TypedValueParser<Value = Probe> {
    probe_parser(crate::record::optional_probes(), "the trace lacks")
}

/// `--probe`'s values, each with what the trace gets with it.
fn opt_in_probe() -> impl TypedValueParser<Value = Probe> {
    probe_parser(crate::record::opt_in_probes(), "the trace gets")
}

fn probe_parser(
    probes: impl Iterator<Item = (Probe, &'static str)>,
    what: &'static str,
) -> impl TypedValueParser<Value = Probe> {
    let values =
        probes.map(move |(probe, data)| PossibleValue::new(probe.name()).help(format!("{what} {data}")));
    PossibleValuesParser::new(values).try_map(|name| name.parse::<Probe>())
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

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 => Ok(seconds),
        _ => Err(format!("expected a positive number of seconds such as 30 or 0.5, not {text:?}")),
    }
}

fn parse_buffer_size(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(size) if size.is_power_of_two() && size >= 4096 => Ok(size),
        _ => Err(format!("expected a power of two of at least 4096 bytes, not {text:?}")),
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The trace file.
    file: PathBuf,

    /// Output format.
    #[arg(short = 'F', long, default_value = "text",
          value_parser = one_of(&report::Format::ALL, report::Format::name, report_format_help))]
    format: report::Format,

    /// Rows per table in text and Markdown (JSON has every process).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 15)]
    top: usize,

    #[command(flatten)]
    processes: ProcessFilter,

    /// Write the report here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// When to colour the text format.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    color: ColorWhen,
}

fn report_format_help(format: report::Format) -> &'static str {
    match format {
        report::Format::Text => "tables for a terminal",
        report::Format::Markdown => "a pull-request comment: the summary first, tables folded",
        report::Format::Json => "for programs (docs/report-schema.md)",
    }
}

impl From<ReportArgs> for report::Options {
    fn from(args: ReportArgs) -> report::Options {
        // Colour only where it is seen: on a terminal, not in a file.
        let terminal = args.output.is_none() && std::io::stdout().is_terminal();
        report::Options {
            file: args.file,
            format: args.format,
            top: args.top,
            filter: args.processes.into(),
            output: args.output,
            color: args.color.enabled(terminal),
        }
    }
}

/// Which processes a report or a flamegraph covers.
#[derive(Debug, Args)]
pub struct ProcessFilter {
    /// Only processes in this systemd unit (e.g. systemd-udevd.service).
    #[arg(long, value_name = "UNIT")]
    unit: Option<String>,

    /// Only processes whose executable path contains this.
    #[arg(long, value_name = "TEXT")]
    binary: Option<String>,

    /// Only processes whose executable is in this Nix package: its name
    /// (zlib), name and version (zlib-1.2.13) or store path.
    #[arg(long, value_name = "PACKAGE")]
    package: Option<String>,
}

impl From<ProcessFilter> for Filter {
    fn from(filter: ProcessFilter) -> Filter {
        Filter { unit: filter.unit, binary: filter.binary, package: filter.package }
    }
}

fn kind_parser() -> impl TypedValueParser<Value = flamegraph::Kind> {
    one_of(&flamegraph::Kind::ALL, flamegraph::Kind::name, flamegraph::Kind::help)
}

#[derive(Debug, Args)]
pub struct FlamegraphArgs {
    /// The trace file.
    file: PathBuf,

    /// What to draw.
    #[arg(short, long, default_value = "startup", value_parser = kind_parser())]
    kind: flamegraph::Kind,

    /// Write the collapsed stacks (`a;b;c COUNT` lines) instead of an SVG,
    /// for inferno, flamegraph.pl, speedscope or grep.
    #[arg(long)]
    folded: bool,

    /// A flame chart: units in the order their first process started, each
    /// unit's processes depth-first by start, instead of sorted by name
    /// (only neighbouring identical stacks merge). Best for a boot with
    /// --kind startup.
    #[arg(long)]
    chart: bool,

    #[command(flatten)]
    processes: ProcessFilter,

    /// Write the SVG (or stacks) here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

impl From<FlamegraphArgs> for flamegraph::Options {
    fn from(args: FlamegraphArgs) -> flamegraph::Options {
        flamegraph::Options {
            file: args.file,
            kind: args.kind,
            folded: args.folded,
            chart: args.chart,
            filter: args.processes.into(),
            output: args.output,
        }
    }
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The trace before the change.
    before: PathBuf,

    /// The trace after the change.
    after: PathBuf,

    /// Output format.
    #[arg(short = 'F', long, default_value = "markdown",
          value_parser = one_of(&diff::Format::ALL, diff::Format::name, diff_format_help))]
    format: diff::Format,

    /// Write diff.md (or diff.json) and the differential flamegraph into
    /// this directory (created if needed) instead of printing.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,

    /// Deprecated spelling of --output-dir (a directory, unlike every other
    /// command's -o).
    #[arg(short = 'o', long = "output", value_name = "DIR", hide = true, conflicts_with = "output_dir")]
    deprecated_output: Option<PathBuf>,

    /// The kind of the differential flamegraph.
    #[arg(short, long, default_value = "startup", value_parser = kind_parser())]
    kind: flamegraph::Kind,

    /// Rows per table.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10)]
    top: usize,

    /// Exit with status 3 when a total, a unit or a binary grew by more
    /// than this percentage.
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    fail_on_regression: Option<f64>,
}

fn diff_format_help(format: diff::Format) -> &'static str {
    match format {
        diff::Format::Markdown => "a pull-request comment",
        diff::Format::Json => "for programs (docs/diff-schema.md)",
    }
}

impl From<DiffArgs> for diff::Options {
    fn from(args: DiffArgs) -> diff::Options {
        if args.deprecated_output.is_some() {
            eprintln!("nixtrace: warning: `diff -o DIR` is deprecated; use --output-dir DIR");
        }
        diff::Options {
            before: args.before,
            after: args.after,
            format: args.format,
            output_dir: args.output_dir.or(args.deprecated_output),
            kind: args.kind,
            top: args.top,
            fail_on_regression: args.fail_on_regression,
        }
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The trace file: one for chrome-json and preload, one or more for
    /// parquet (their rows go into the same tables).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Output format.
    #[arg(short = 'F', long, default_value = "chrome-json",
          value_parser = one_of(&export::Format::ALL, export::Format::name, export::Format::help))]
    format: export::Format,

    /// chrome-json and preload: write to this file instead of standard
    /// output. parquet: the directory (created if needed) to write
    /// TABLE.parquet into; required.
    #[arg(short, long, value_name = "FILE|DIR")]
    output: Option<PathBuf>,

    /// parquet: also write the opens and mmaps tables, one row per event.
    #[arg(long)]
    events: bool,
}

/// `nixtrace export`: checks what clap cannot (how many traces and where
/// they go depend on --format), as usage errors, then exports.
pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    use clap::{CommandFactory as _, error::ErrorKind};

    let usage = |message: &str| -> ! {
        let mut cli = Cli::command();
        // Building names the subcommand "nixtrace export" in the usage line.
        cli.build();
        cli.find_subcommand_mut("export")
            .expect("export is a subcommand")
            .error(ErrorKind::ArgumentConflict, message)
            .exit()
    };
    match args.format {
        export::Format::ChromeJson | export::Format::Preload if args.files.len() > 1 => usage(&format!(
            "--format {} exports one trace, not {}; --format parquet takes several",
            args.format.name(),
            args.files.len()
        )),
        export::Format::ChromeJson | export::Format::Preload if args.events => {
            usage(&format!("--events is for --format parquet, not {}", args.format.name()))
        }
        export::Format::Parquet if args.output.is_none() => {
            usage("--format parquet writes a file per table: name their directory with -o DIR")
        }
        _ => {}
    }
    export::run(&export::Options {
        files: args.files,
        format: args.format,
        output: args.output,
        events: args.events,
    })
}

#[derive(Debug, Args)]
pub struct PreloadArgs {
    /// The preload lists (their files are read in list order, list after list).
    #[arg(required = true, value_name = "LIST")]
    lists: Vec<PathBuf>,

    /// Only count how much of the listed pages is in the page cache; read nothing.
    #[arg(long)]
    check: bool,

    /// Output format: text (one line on standard error) or json (standard output).
    #[arg(short = 'F', long, value_enum, default_value = "text")]
    format: PreloadFormat,

    /// Print nothing (text format).
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PreloadFormat {
    Text,
    Json,
}

impl From<PreloadArgs> for crate::preload::Options {
    fn from(args: PreloadArgs) -> crate::preload::Options {
        crate::preload::Options {
            lists: args.lists,
            check: args.check,
            format: match args.format {
                PreloadFormat::Text => crate::preload::Format::Text,
                PreloadFormat::Json => crate::preload::Format::Json,
            },
            quiet: args.quiet,
        }
    }
}

#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// The trace file.
    #[arg(required_unless_present = "list_rules")]
    file: Option<PathBuf>,

    /// Output format.
    #[arg(short = 'F', long, default_value = "text",
          value_parser = one_of(&recommend::Format::ALL, recommend::Format::name, recommend_format_help))]
    format: recommend::Format,

    /// Only this rule (repeatable; see --list-rules).
    #[arg(long = "rule", value_name = "ID", value_parser = rule_id())]
    rules: Vec<String>,

    /// Leave out recommendations that save less time than this (e.g.
    /// 500us, 2ms, 1s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    min_saving: std::time::Duration,

    /// Change a rule's threshold (repeatable), e.g.
    /// --threshold library-search.min_failed_lookups=10.
    #[arg(long = "threshold", value_name = "RULE.NAME=VALUE", value_parser = parse_threshold)]
    thresholds: Vec<String>,

    /// Read thresholds from this TOML file: a table per rule, e.g.
    /// `[library-search]` then `min_failed_lookups = 10`. --threshold
    /// overrides it.
    #[arg(long = "thresholds", value_name = "FILE")]
    thresholds_file: Option<PathBuf>,

    /// List every rule, what it looks for and its thresholds, and exit.
    #[arg(long, conflicts_with_all = ["rules", "thresholds", "thresholds_file"])]
    list_rules: bool,

    /// Write the recommendations here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

fn recommend_format_help(format: recommend::Format) -> &'static str {
    match format {
        recommend::Format::Text => "for a terminal",
        recommend::Format::Markdown => "a pull-request comment: a table, then each fix folded",
        recommend::Format::Json => "for programs (docs/recommendations.md)",
    }
}

fn rule_id() -> PossibleValuesParser {
    PossibleValuesParser::new(
        recommend::RULES.iter().map(|rule| PossibleValue::new(rule.id).help(rule.title)),
    )
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. 500us, 2ms or 1s)"))
}

fn parse_threshold(text: &str) -> Result<String, String> {
    recommend::Settings::default().set(text).map(|()| text.to_string()).map_err(|e| e.to_string())
}

/// `nixtrace recommend`, or its `--list-rules`.
pub fn recommend(args: RecommendArgs) -> anyhow::Result<()> {
    if args.list_rules {
        return crate::output::write_or_print(args.output.as_deref(), recommend::list_rules().as_bytes());
    }
    let mut settings = recommend::Settings::default();
    if let Some(file) = &args.thresholds_file {
        settings.read_file(file)?;
    }
    for assignment in &args.thresholds {
        settings.set(assignment)?;
    }
    let options = recommend::Options {
        file: args.file.expect("clap requires the file without --list-rules"),
        format: args.format,
        selection: recommend::Selection {
            rules: args.rules,
            min_saving_ns: u64::try_from(args.min_saving.as_nanos()).unwrap_or(u64::MAX),
            settings,
        },
        output: args.output,
    };
    recommend::run(&options)
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The trace file.
    pub file: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `record --no-probe` takes the names of the optional probes, and only those.
    #[test]
    fn no_probe_takes_the_optional_probes() {
        use clap::Parser as _;

        let parse = |args: &[&str]| Cli::try_parse_from(["nixtrace", "record"].iter().chain(args));
        let cli = parse(&["--no-probe", "sched", "--no-probe", "page_cache", "--", "true"]).unwrap();
        let Command::Record(args) = cli.command else { panic!("not record: {cli:?}") };
        assert_eq!(record::Options::from(args).no_probe, [Probe::Sched, Probe::PageCache]);
        let error = parse(&["--no-probe", "fork"]).unwrap_err().to_string();
        assert!(
            error.contains("[possible values: cgroup_mkdir, page_cache, block_io, sched, read]"),
            "{error}"
        );
        let error = parse(&["--no-probe", "stat"]).unwrap_err().to_string();
        assert!(error.contains("invalid value 'stat'"), "{error}");
    }

    /// `record --probe` takes the opt-in probes, and only those.
    #[test]
    fn probe_takes_the_opt_in_probes() {
        use clap::Parser as _;

        let parse = |args: &[&str]| Cli::try_parse_from(["nixtrace", "record"].iter().chain(args));
        let cli = parse(&["--probe", "stat", "--", "true"]).unwrap();
        let Command::Record(args) = cli.command else { panic!("not record: {cli:?}") };
        assert_eq!(record::Options::from(args).probe, [Probe::Stat]);
        let error = parse(&["--probe", "sched"]).unwrap_err().to_string();
        assert!(error.contains("[possible values: stat]"), "{error}");
    }
}
