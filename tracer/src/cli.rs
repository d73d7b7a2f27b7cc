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

    /// No status line and no summary.
    #[arg(short, long)]
    pub quiet: bool,

    /// The command to run and trace.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

fn parse_redaction(pattern: &str) -> Result<regex::bytes::Regex, String> {
    regex::bytes::Regex::new(pattern).map_err(|e| e.to_string().replace('\n', " "))
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

    /// Only processes in this systemd unit (e.g. systemd-udevd.service).
    #[arg(long, value_name = "UNIT")]
    pub unit: Option<String>,

    /// Only processes whose executable path contains this.
    #[arg(long, value_name = "TEXT")]
    pub binary: Option<String>,

    /// Write the report here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The trace file.
    pub file: PathBuf,
}
