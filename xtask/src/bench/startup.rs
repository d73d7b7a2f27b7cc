//! What recording costs a program's start, and how fast nixtrace gets out
//! of the way (issue #13).
//!
//! The observer effect: the time glibc's own counter says a program spent
//! in the dynamic loader (`LD_DEBUG=statistics`), untraced and traced, for
//! programs that search for their libraries and modules: a program with a
//! long RUNPATH of directories that do not exist (xtask/bench/search-heavy.c)
//! and `python3 -c pass`. The counter's rate cancels in the ratio.
//!
//! Getting out of the way: `record -q -- /bin/true` from start to exit,
//! each run once the last one's probes are down and back to back, and a
//! system-wide recording from SIGINT to exit.
use std::{
    fs,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Bench,
    contenders::{
        check_exit, has_header, interrupt, log_file, nixtrace_record, report_json, spawn,
        wait_until_attached, wait_until_detached, wait4,
    },
};
use crate::command;

/// Directories in the search-heavy program's RUNPATH.
const RUNPATH_DIRS: usize = 200;

/// The loader's time for one program, in glibc's counter's ticks.
pub(super) struct LoaderCost {
    pub(super) what: String,
    /// `what` in a few words, for the targets.
    pub(super) short: &'static str,
    pub(super) runs: usize,
    pub(super) untraced: Vec<u64>,
    /// Each run its own `record -- CMD`.
    pub(super) command: Vec<u64>,
    /// The same runs' loader time by nixtrace with its estimated own share
    /// taken out (`loader_ns - loader_tracer_ns`), in glibc's ticks: scaled
    /// by the run's glibc ticks over its `loader_ns`.
    pub(super) corrected: Vec<u64>,
    /// Every run under one system-wide recording.
    pub(super) system: Vec<u64>,
}

/// How long nixtrace takes to let go.
pub(super) struct Exits {
    /// `record -q -- /bin/true`, start to exit, each after the last one's
    /// probes are down.
    pub(super) single: Vec<Duration>,
    /// The same, back to back: the mean of a run.
    pub(super) back_to_back: Duration,
    pub(super) back_to_back_runs: u32,
    /// A system-wide recording, from SIGINT to exit.
    pub(super) sigint: Vec<Duration>,
}

/// Builds the search-heavy program into target/bench/.
pub(super) fn build_search_heavy(dir: &Path) -> Result<std::path::PathBuf> {
    let binary = dir.join("search-heavy");
    let runpath: Vec<String> =
        (0..RUNPATH_DIRS).map(|i| format!("/nonexistent/nixtrace-bench/{i}")).collect();
    let source = crate::repo_root().join("xtask/bench/search-heavy.c");
    crate::run(
        command("cc")
            .args(["-O2", "-Wl,--enable-new-dtags"])
            .arg(format!("-Wl,-rpath,{}", runpath.join(":")))
            .arg("-o")
            .arg(&binary)
            .arg(source),
    )?;
    Ok(binary)
}

/// The observer effect on each search-heavy program, `runs` times each
/// way: untraced and `record -- CMD` in alternation, then every run
/// again under one system-wide recording.
pub(super) fn loader_costs(bench: &Bench, search_heavy: &Path, runs: usize) -> Result<Vec<LoaderCost>> {
    let programs: [(&str, String, Vec<String>); 2] = [
        (
            "long RUNPATH",
            format!("a program with {RUNPATH_DIRS} directories in its RUNPATH, none of which exists"),
            vec![search_heavy.to_str().context("target/bench is not UTF-8")?.to_string()],
        ),
        (
            "`python3 -c pass`",
            "`python3 -c pass`".to_string(),
            ["/usr/bin/python3", "-c", "pass"].map(String::from).to_vec(),
        ),
    ];
    let mut costs = Vec::new();
    for (short, what, argv) in programs {
        println!("==> observer effect: {what}");
        wait_until_detached()?;
        loader_ticks(bench, &argv, None)?; // warm-up
        let mut cost = LoaderCost {
            what,
            short,
            runs,
            untraced: Vec::new(),
            command: Vec::new(),
            corrected: Vec::new(),
            system: Vec::new(),
        };
        for round in 0..runs {
            let traced = |cost: &mut LoaderCost| -> Result<()> {
                let ticks = loader_ticks(bench, &argv, Some(&["--"]))?;
                cost.command.push(ticks);
                cost.corrected.push(corrected_ticks(bench, &argv[0], ticks)?);
                Ok(())
            };
            if round % 2 == 0 {
                cost.untraced.push(loader_ticks(bench, &argv, None)?);
                traced(&mut cost)?;
            } else {
                traced(&mut cost)?;
                cost.untraced.push(loader_ticks(bench, &argv, None)?);
            }
            wait_until_detached()?;
        }
        cost.system = under_system_recording(bench, || {
            (0..runs).map(|_| loader_ticks(bench, &argv, None)).collect::<Result<Vec<u64>>>()
        })?;
        costs.push(cost);
    }
    Ok(costs)
}

/// Runs `work` while a system-wide recording runs, started before it and
/// stopped with SIGINT after it.
fn under_system_recording<T>(bench: &Bench, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let trace = bench.dir.join("startup-system.ntr");
    let _ = fs::remove_file(&trace);
    let (log_path, log) = log_file(bench)?;
    let mut recorder = spawn(&mut nixtrace_record(bench, &trace), &log)?;
    wait_until_attached(&mut recorder, &log_path, || has_header(&trace))?;
    let done = work();
    let finished = interrupt(recorder)?;
    check_exit("nixtrace record (system-wide)", finished.status, &log_path)?;
    wait_until_detached()?;
    done
}

/// One run of `argv` with `LD_DEBUG=statistics`, under `record ARGS` when
/// given: the loader's startup time, in ticks of glibc's counter.
fn loader_ticks(bench: &Bench, argv: &[String], record: Option<&[&str]>) -> Result<u64> {
    let trace = bench.dir.join("startup-command.ntr");
    let mut cmd = match record {
        Some(args) => {
            let mut cmd = nixtrace_record(bench, &trace);
            cmd.args(args).args(argv);
            cmd
        }
        None => {
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            cmd
        }
    };
    cmd.env("LD_DEBUG", "statistics");
    let (log_path, log) = log_file(bench)?;
    let finished = wait4(spawn(&mut cmd, &log)?)?;
    check_exit(&argv.join(" "), finished.status, &log_path)?;
    let stderr = fs::read_to_string(&log_path)?;
    // The recorder's own start is not in the log: LD_DEBUG reaches it too,
    // but its loader statistics come first, so the program's are the last.
    let ticks = stderr
        .lines()
        .filter_map(|line| line.split("total startup time in dynamic loader:").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .next_back();
    match ticks {
        Some(ticks) => Ok(ticks),
        None => bail!("{}: no loader statistics in its LD_DEBUG output: {}", argv.join(" "), stderr.trim()),
    }
}

/// The loader time of the last `record -- CMD` run of `program`, by its
/// report, with the tracer's estimated share taken out, in glibc's ticks
/// (`ticks` is glibc's figure for the same run).
fn corrected_ticks(bench: &Bench, program: &str, ticks: u64) -> Result<u64> {
    let report = report_json(bench, &bench.dir.join("startup-command.ntr"))?;
    let exec = report["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["execs"].as_array().into_iter().flatten())
        .rfind(|e| e["filename"] == program)
        .with_context(|| format!("the report has no exec of {program}"))?;
    let traced = exec["loader_ns"].as_u64().with_context(|| format!("{program}: no loader time: {exec}"))?;
    let share =
        exec["loader_tracer_ns"].as_u64().with_context(|| format!("{program}: no tracer share: {exec}"))?;
    Ok((ticks as f64 * traced.saturating_sub(share) as f64 / traced.max(1) as f64).round() as u64)
}

/// How fast nixtrace exits: `runs` single runs, as many back to back, and
/// `runs` system-wide recordings stopped with SIGINT.
pub(super) fn exits(bench: &Bench, runs: u32) -> Result<Exits> {
    println!("==> getting out of the way: record -- /bin/true, and SIGINT");
    let trace = bench.dir.join("exit.ntr");
    let record_true = || -> Result<Duration> {
        let (log_path, log) = log_file(bench)?;
        let started = Instant::now();
        let finished = wait4(spawn(nixtrace_record(bench, &trace).args(["--", "/bin/true"]), &log)?)?;
        let elapsed = started.elapsed();
        check_exit("nixtrace record -- /bin/true", finished.status, &log_path)?;
        Ok(elapsed)
    };
    let readable = |trace: &Path| -> Result<()> {
        let (log_path, log) = log_file(bench)?;
        let finished = wait4(spawn(command(&bench.nixtrace).arg("report").arg(trace), &log)?)?;
        check_exit("nixtrace report", finished.status, &log_path)
    };
    let mut single = Vec::new();
    for _ in 0..runs {
        wait_until_detached()?;
        single.push(record_true()?);
        readable(&trace)?;
    }
    wait_until_detached()?;
    let started = Instant::now();
    for _ in 0..runs {
        record_true()?;
    }
    let back_to_back = started.elapsed() / runs;
    let mut sigint = Vec::new();
    let system = bench.dir.join("exit-system.ntr");
    for _ in 0..runs {
        wait_until_detached()?;
        let (log_path, log) = log_file(bench)?;
        let mut recorder = spawn(&mut nixtrace_record(bench, &system), &log)?;
        wait_until_attached(&mut recorder, &log_path, || has_header(&system))?;
        thread::sleep(Duration::from_millis(500));
        let stopped = Instant::now();
        let finished = interrupt(recorder)?;
        sigint.push(stopped.elapsed());
        check_exit("nixtrace record (system-wide)", finished.status, &log_path)?;
        readable(&system)?;
    }
    wait_until_detached()?;
    Ok(Exits { single, back_to_back, back_to_back_runs: runs, sigint })
}
