//! `cargo xtask bench`: what tracing costs the traced program, side by side
//! with the alternatives, and how fast nixtrace reads a large trace back.
//!
//! Four workloads (an open storm, an exec storm, repeated `python3 -c pass`,
//! a small `make -j2` build) run untraced and under each contender:
//! `nixtrace record -- CMD`, nixtrace system-wide, bpftrace printing the same
//! events to a file, `strace -f`, and the floor: bpftrace with empty programs
//! on exactly the tracepoints nixtrace attaches (what switching those hooks on
//! costs, whatever a tracer does in them). Runs go in pairs, one untraced and
//! one traced, in alternating order, so that machine drift cancels; a
//! slowdown is the median of the pairs' ratios. Every workload runs under
//! `xtask/bench/timed.c`, which times the workload alone (not the tracer's
//! start or stop), whoever starts it. For nixtrace it also collects the
//! events recorded and lost, the trace's bytes per event, the time to attach
//! the probes and the recorder's own CPU time and peak memory (`wait4`).
//!
//! Then the observer effect: the loader time glibc measures itself
//! (`LD_DEBUG=statistics`) of two programs that search for what they load,
//! untraced, under `record -- CMD` and under a system-wide recording; and
//! how fast nixtrace lets go: `record -- /bin/true` start to exit, alone
//! and back to back, and a system-wide recording from SIGINT to exit.
//!
//! Then it records a trace of 10 million events and times `nixtrace report`,
//! `nixtrace flamegraph` and `nixtrace export --format parquet --events` on
//! it, pinned to one core: events per second and peak memory, and the
//! Parquet tables' bytes per event. Last, DuckDB runs the fleet queries of
//! docs/fleet.sql over 1,000 traces' tables (real boots' tables copied
//! under many host names).
//!
//! A full run writes docs/benchmarks.md, with the machine, the command that
//! reproduces it and a verdict on each of the project's targets: only what
//! it measured, on the machine it ran on. It keeps the file's hand-written
//! section, from its marker line to the end, where what explains the
//! figures (profiles, experiments, past runs and commits) is written. `--smoke`
//! (a step of `cargo xtask test`) runs tiny sizes once and fails unless every
//! contender ran and every nixtrace trace has events and lost none; it writes
//! no file unless `-o` asks for one.
//!
//! The files, one job each:
//!
//! - `workloads.rs`: the four workloads at full and smoke sizes, and the C
//!   project the build workload compiles;
//! - `contenders.rs`: one run of a workload, untraced or under a contender,
//!   and what it measured (spawning and `wait4`, `timed`'s figures, the
//!   nixtrace trace, bpftrace's output, the floor's program);
//! - `startup.rs`: the observer effect and the exit times;
//! - `stats.rs`: medians and ratios, each contender's summary over its
//!   pairs, and the verdict on each of the targets;
//! - `fleet.rs`: the fleet queries over many traces' tables, timed;
//! - `render.rs`: docs/benchmarks.md in Markdown, written so that its
//!   hand-written section survives;
//! - this file: the command, building the tools, the pairs of runs, the
//!   analysis of a large trace and the smoke check.
mod contenders;
mod fleet;
mod render;
mod startup;
mod stats;
mod workloads;

use std::{
    fmt::Write as _,
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::{command, repo_root, target_dir};
use contenders::{Contender, Run, check_exit, log_file, report_count, run_contender, wait4};
use render::{mib, seconds};
use stats::ratio;
use workloads::{FULL, SMOKE, Workload, workloads};

#[derive(clap::Args)]
pub struct Args {
    /// Tiny sizes, one pair each: only check that every contender runs and
    /// that nixtrace loses no events (what `cargo xtask test` runs). Writes
    /// no file unless -o is given.
    #[arg(long)]
    pub smoke: bool,
    /// Untraced/traced pairs per workload and contender [default: 5, 3 for
    /// the python3 startups; 1 with --smoke].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: Option<u32>,
    /// Where to write the Markdown results [default: docs/benchmarks.md; none with --smoke].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Ring buffer size for the nixtrace contenders, in bytes [default:
    /// nixtrace's]. A tiny one (4096) makes events get lost, which --smoke
    /// must then report as a failure.
    #[arg(long, value_name = "BYTES")]
    pub buffer_size: Option<u32>,
}

/// Pairs per workload and contender in a full run, and for the slowest
/// workload (python3 startups): about 12 minutes in all.
const DEFAULT_RUNS: u32 = 5;
const SLOW_WORKLOAD_RUNS: u32 = 3;

/// The ring buffer of the analysis recording: 10 million events in a few
/// seconds must not overflow it.
const ANALYSIS_BUFFER: &str = "268435456";

const DEFAULT_OUTPUT: &str = "docs/benchmarks.md";

/// Paths of the bench's tools and scratch files (all under target/bench/).
struct Bench {
    dir: PathBuf,
    nixtrace: PathBuf,
    timed: PathBuf,
    open_storm: PathBuf,
    search_heavy: PathBuf,
    /// `--buffer-size` for the nixtrace contenders, when given.
    buffer_size: Option<u32>,
}

/// A workload's runs: the untraced half and the traced half of each pair.
struct Measured {
    name: &'static str,
    what: String,
    pairs: Vec<(Contender, Vec<(Duration, Run)>)>,
}

/// A command that reads the big trace, as `wait4` saw it.
struct Analysed {
    what: &'static str,
    wall: Duration,
    cpu: Duration,
    maxrss_kib: u64,
}

/// What recording costs a program's start, and how fast it lets go.
struct Startup {
    loader: Vec<startup::LoaderCost>,
    exits: startup::Exits,
}

/// The big trace, and the commands that read it.
struct Analysis {
    opens: u64,
    events: u64,
    trace_bytes: u64,
    /// The Parquet tables `export --format parquet --events` wrote of it.
    parquet_bytes: u64,
    commands: Vec<Analysed>,
}

pub fn run(args: &Args) -> Result<()> {
    if !crate::is_root() {
        bail!(
            "the benchmarks load eBPF programs into the kernel: run them as root (sudo -E cargo xtask bench)"
        );
    }
    let sizes = if args.smoke { &SMOKE } else { &FULL };
    // Pairs per workload: --runs, else the workload's default.
    let runs = |default: u32| args.runs.unwrap_or(if args.smoke { 1 } else { default });
    let started = Instant::now();
    let bench = prepare(args.buffer_size)?;
    let mut measured = Vec::new();
    for workload in workloads(&bench, sizes)? {
        let runs = runs(if workload.slow { SLOW_WORKLOAD_RUNS } else { DEFAULT_RUNS });
        measured.push(measure(&bench, &workload, runs)?);
    }
    let startup = Startup {
        loader: startup::loader_costs(&bench, &bench.search_heavy, sizes.observer_runs)?,
        exits: startup::exits(&bench, sizes.exit_runs)?,
    };
    let analysis = analyse(&bench, sizes.analysis_opens)?;
    let fleet = fleet::measure(&bench, sizes.fleet_traces)?;
    let markdown =
        render::document(&command_line(args), &render::machine()?, &measured, &startup, &analysis, &fleet);
    println!("benchmarks took {:.0} s", started.elapsed().as_secs_f64());
    let output = args.output.clone().or_else(|| (!args.smoke).then(|| repo_root().join(DEFAULT_OUTPUT)));
    match output {
        Some(path) => {
            render::write(&path, &markdown)?;
            println!("wrote {}", path.display());
        }
        None => println!("{markdown}"),
    }
    if args.smoke {
        check_smoke(&measured)?;
        println!("bench smoke run: every contender ran, nixtrace lost no events");
    }
    Ok(())
}

/// `cargo xtask bench --smoke`, as a step of `cargo xtask test`.
pub fn smoke() -> Result<()> {
    run(&Args { smoke: true, runs: None, output: None, buffer_size: None })
}

/// The command that reproduces a run, for the document.
fn command_line(args: &Args) -> String {
    let mut line = "sudo -E cargo xtask bench".to_string();
    if args.smoke {
        line.push_str(" --smoke");
    }
    if let Some(runs) = args.runs {
        write!(line, " --runs {runs}").unwrap();
    }
    if let Some(size) = args.buffer_size {
        write!(line, " --buffer-size {size}").unwrap();
    }
    line
}

/// Builds the release nixtrace and the C helpers into target/bench/.
fn prepare(buffer_size: Option<u32>) -> Result<Bench> {
    crate::run(&mut crate::cargo(["build", "--release"]))?;
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let compile = |name: &str| -> Result<PathBuf> {
        let binary = dir.join(name);
        let source = repo_root().join("xtask/bench").join(format!("{name}.c"));
        crate::run(command("cc").args(["-O2", "-Wall", "-o"]).arg(&binary).arg(source))?;
        Ok(binary)
    };
    Ok(Bench {
        timed: compile("timed")?,
        open_storm: compile("open-storm")?,
        search_heavy: startup::build_search_heavy(&dir)?,
        nixtrace: target_dir().join("release/nixtrace"),
        dir,
        buffer_size,
    })
}

/// One warm-up run, then `runs` rounds of one pair per contender, the
/// untraced half first in even rounds and second in odd ones.
fn measure(bench: &Bench, workload: &Workload, runs: u32) -> Result<Measured> {
    println!("==> {}: {}", workload.name, workload.what);
    run_contender(bench, Contender::Untraced, workload).context("warm-up run")?;
    let mut pairs: Vec<(Contender, Vec<(Duration, Run)>)> =
        Contender::TRACED.iter().filter(|c| c.runs_on(workload)).map(|c| (*c, Vec::new())).collect();
    for round in 0..runs {
        for (contender, done) in &mut pairs {
            let context = || format!("{}, {}, round {}", workload.name, contender.label(), round + 1);
            let (untraced, traced) = if round % 2 == 0 {
                let untraced = run_contender(bench, Contender::Untraced, workload).with_context(context)?;
                (untraced, run_contender(bench, *contender, workload).with_context(context)?)
            } else {
                let traced = run_contender(bench, *contender, workload).with_context(context)?;
                (run_contender(bench, Contender::Untraced, workload).with_context(context)?, traced)
            };
            println!(
                "    round {}/{runs}, {}: {} ({:.2}x of {})",
                round + 1,
                contender.label(),
                seconds(traced.wall),
                ratio(traced.wall, untraced.wall),
                seconds(untraced.wall),
            );
            done.push((untraced.wall, traced));
        }
    }
    Ok(Measured { name: workload.name, what: workload.what.clone(), pairs })
}

/// Records the open storm into one big trace, then times `report` and
/// `flamegraph` reading it, each pinned to one core.
fn analyse(bench: &Bench, opens: u64) -> Result<Analysis> {
    println!("==> analysis: recording {opens} opens, then report and flamegraph on one core");
    let trace = bench.dir.join("analysis.ntr");
    crate::run(
        command(&bench.nixtrace)
            .args(["record", "-q", "--force", "--buffer-size", ANALYSIS_BUFFER, "-o"])
            .arg(&trace)
            .arg("--")
            .arg(&bench.open_storm)
            .arg(opens.to_string()),
    )?;
    let report = bench.dir.join("analysis.json");
    let svg = bench.dir.join("analysis.svg");
    let tables = bench.dir.join("analysis-parquet");
    let tables_arg = tables.to_str().context("target/bench is not UTF-8")?;
    let export_log = bench.dir.join("analysis-export.out");
    let _ = fs::remove_dir_all(&tables);
    let mut commands = Vec::new();
    for (what, args, out) in [
        ("`nixtrace report --format json`", &["report", "--format", "json"][..], &report),
        ("`nixtrace flamegraph` (SVG)", &["flamegraph"][..], &svg),
        (
            "`nixtrace export --format parquet --events`",
            &["export", "--format", "parquet", "--events", "-o", tables_arg][..],
            &export_log,
        ),
    ] {
        let mut cmd = command("taskset");
        cmd.args(["--cpu-list", "0"]).arg(&bench.nixtrace).args(args).arg(&trace);
        commands.push(time_reader(bench, what, &mut cmd, out)?);
    }
    let mut parquet_bytes = 0;
    for entry in fs::read_dir(&tables).with_context(|| format!("listing {}", tables.display()))? {
        parquet_bytes += entry?.metadata()?.len();
    }
    fs::remove_dir_all(&tables)?;
    fs::remove_file(&export_log)?;
    let json: Value = serde_json::from_str(&fs::read_to_string(&report)?).context("parsing the report")?;
    let events = report_count(&json, "/events")?;
    let lost = report_count(&json, "/lost_events")?;
    ensure!(lost == 0, "the analysis trace lost {lost} events: its figures would be of a different trace");
    ensure!(events >= opens, "the analysis trace has {events} events, fewer than its {opens} opens");
    let trace_bytes = fs::metadata(&trace)?.len();
    for file in [&trace, &report, &svg] {
        fs::remove_file(file)?;
    }
    Ok(Analysis { opens, events, trace_bytes, parquet_bytes, commands })
}

/// Runs a command that reads a trace, its stdout into `out`, and measures it.
fn time_reader(bench: &Bench, what: &'static str, cmd: &mut Command, out: &Path) -> Result<Analysed> {
    let (log_path, log) = log_file(bench)?;
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(out)?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let finished = wait4(child)?;
    let wall = start.elapsed();
    check_exit(what, finished.status, &log_path)?;
    println!("    {what}: {}, peak {}", seconds(wall), mib(finished.maxrss_kib));
    Ok(Analysed { what, wall, cpu: finished.cpu, maxrss_kib: finished.maxrss_kib })
}

/// `--smoke`: every nixtrace contender recorded events and lost none, and
/// bpftrace printed events. (That every contender ran, and that each run's
/// workload succeeded, the runs checked already.)
fn check_smoke(measured: &[Measured]) -> Result<()> {
    let mut failures = Vec::new();
    for m in measured {
        for (contender, pairs) in &m.pairs {
            for (_, run) in pairs {
                let events = run.events.unwrap_or(0);
                let lost = run.lost.unwrap_or(0);
                if (contender.is_nixtrace() || *contender == Contender::BpftracePrint) && events == 0 {
                    failures.push(format!("{}, {}: no events recorded", m.name, contender.label()));
                }
                if contender.is_nixtrace() && lost > 0 {
                    failures.push(format!("{}, {}: {lost} events lost", m.name, contender.label()));
                }
            }
        }
    }
    if !failures.is_empty() {
        bail!("bench smoke run failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}
