//! build-parallelism: a build (make, ninja, cargo, a Nix build) that asked
//! for fewer CPUs than it had. The figures are the scheduler's: the time
//! every process of the build spent on a CPU or waiting for one, against
//! the build's wall time and the CPUs the recording machine had, and how
//! many compilers ran at once. Waiting counts as asking: a parallel build
//! on a busy machine is not told to be more parallel.

use std::collections::HashMap;

use serde_json::json;

use super::{
    Confidence, Fix, FixKind, Level, Recommendation, Rule, Saving, Settings, Subject, SubjectKind, Threshold,
};
use crate::{
    analysis::{Analysis, ProcessFigures},
    human::{count, duration},
    saturating::SaturatingSum as _,
};

pub const RULE: Rule = Rule {
    id: "build-parallelism",
    title: "Builds that keep fewer CPUs busy than they have",
    description: "A build's processes (the build tool and everything below it) were on a CPU, or \
        waiting for one, for less of the build's wall time than the CPUs the machine had allow, \
        with several compiler invocations that could have run side by side. Says how many compilers ran at once, whether \
        a compiler cache (ccache, sccache) was used, and how to raise the build's parallelism.",
    thresholds: &[
        Threshold {
            name: "max_cpu_share",
            default: 0.75,
            help: "the busy CPUs, as a share of those available, below which a build is reported",
        },
        Threshold {
            name: "min_compilers",
            default: 4.0,
            help: "compiler invocations a build must have for parallelism to matter",
        },
        Threshold {
            name: "min_wall_ms",
            default: 500.0,
            help: "the build's wall time, in ms, before it is worth saying",
        },
    ],
    check,
};

/// Programs that drive a build.
const DRIVERS: &[&str] = &["make", "gmake", "ninja", "samu", "cargo", "nix-build", "nix"];
/// The compilers proper (not their drivers: `cc` runs `cc1`).
const COMPILERS: &[&str] = &["cc1", "cc1plus", "cc1obj", "rustc", "clang", "clang++", "javac", "ghc", "go"];
const CACHES: &[&str] = &["ccache", "sccache"];

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is(process: &ProcessFigures, names: &[&str]) -> bool {
    process.exe.as_deref().is_some_and(|exe| names.contains(&basename(exe)))
}

fn check(analysis: &Analysis, settings: &Settings) -> Vec<Recommendation> {
    let cpus = analysis.header.cpus;
    if cpus < 2 {
        return Vec::new();
    }
    let processes = &analysis.processes;
    let index: HashMap<(u32, u64), usize> =
        processes.iter().enumerate().map(|(i, p)| ((p.pid, p.start_ns), i)).collect();
    let parent: Vec<Option<usize>> = processes
        .iter()
        .map(|p| p.parent_start_ns.and_then(|start| index.get(&(p.ppid, start)).copied()))
        .collect();
    // A build is a driver whose ancestors are no drivers.
    let root_of = |mut i: usize| -> Option<usize> {
        let mut root = None;
        loop {
            if is(&processes[i], DRIVERS) {
                root = Some(i);
            }
            match parent[i] {
                Some(p) => i = p,
                None => return root,
            }
        }
    };
    let mut builds: HashMap<usize, Vec<usize>> = HashMap::new();
    for i in 0..processes.len() {
        if let Some(root) = root_of(i) {
            builds.entry(root).or_default().push(i);
        }
    }
    let mut found: Vec<Recommendation> = builds
        .into_iter()
        .filter_map(|(root, members)| build(analysis, &parent, root, &members, cpus, settings))
        .collect();
    found.sort_by_key(|r| std::cmp::Reverse(r.saving.time_ns));
    found
}

fn build(
    analysis: &Analysis,
    parent: &[Option<usize>],
    root: usize,
    members: &[usize],
    cpus: u32,
    settings: &Settings,
) -> Option<Recommendation> {
    let processes = &analysis.processes;
    let driver = &processes[root];
    let wall = driver.wall_ns;
    let compilers: Vec<&ProcessFigures> =
        members.iter().map(|i| &processes[*i]).filter(|p| is(p, COMPILERS)).collect();
    let on_cpu: u64 = members.iter().map(|i| processes[*i].time.on_cpu_ns).saturating_sum();
    let runnable: u64 = members.iter().map(|i| processes[*i].time.runnable_ns).saturating_sum();
    let busy = on_cpu as f64 / wall.max(1) as f64;
    let demand = on_cpu.saturating_add(runnable) as f64 / wall.max(1) as f64;
    let share = demand / f64::from(cpus);
    if (wall as f64) < settings.get(&RULE, "min_wall_ms") * 1e6
        || (compilers.len() as f64) < settings.get(&RULE, "min_compilers")
        || share >= settings.get(&RULE, "max_cpu_share")
    {
        return None;
    }
    let most_at_once = most_at_once(&compilers, analysis.header.clock.boottime_ns);
    let compile_ns: u64 = compilers.iter().map(|p| p.wall_ns).saturating_sum();
    let longest = compilers.iter().map(|p| p.wall_ns).max().unwrap_or(0);
    let ideal = (on_cpu / u64::from(cpus)).max(longest);
    let saving = wall.saturating_sub(ideal);
    let caches: Vec<usize> = members.iter().copied().filter(|i| is(&processes[*i], CACHES)).collect();
    let cache_hits = cache_hits(processes, parent, members, &caches);
    let exe = driver.exe.clone().unwrap_or_default();
    let tool = basename(&exe).to_string();
    // Nix builds run in the daemon's cgroup, or below nix-build itself.
    let under_nix = is(driver, &["nix-build", "nix"]) || driver.unit == "nix-daemon.service";
    let evidence = json!({
        "driver": exe,
        "pid": driver.pid,
        "wall_ns": wall,
        "cpus": cpus,
        "on_cpu_ns": on_cpu,
        "runnable_ns": runnable,
        "busy_cpus": (busy * 100.0).round() / 100.0,
        "cpus_asked_for": (demand * 100.0).round() / 100.0,
        "processes": members.len(),
        "compiler_invocations": compilers.len(),
        "compile_ns": compile_ns,
        "most_compilers_at_once": most_at_once,
        "compiler_cache_invocations": caches.len(),
        "compiler_cache_hits": cache_hits,
    });
    let fix = if under_nix {
        Fix {
            kind: FixKind::NixExpression,
            text: format!(
                "# In the derivation of the package being built (or through overrideAttrs):\n\
                 enableParallelBuilding = true;\n\
                 # and let Nix give each build the machine's CPUs (configuration.nix):\n\
                 nix.settings.cores = 0;   # 0: all {cpus}; cores x max-jobs threads can run at once"
            ),
            revert: "Remove `enableParallelBuilding` (the default is false for plain make builds) and `nix.settings.cores`.".into(),
            risk: Some("A build whose makefile misses a dependency can fail, or worse produce a different result, only when run in parallel: check its output.".into()),
        }
    } else {
        Fix {
            kind: FixKind::Command,
            text: match tool.as_str() {
                "make" | "gmake" => format!("{tool} -j{cpus}   # or: export MAKEFLAGS=-j{cpus}"),
                "ninja" | "samu" => format!("{tool} -j{cpus}"),
                "cargo" => format!("cargo build -j {cpus}   # or: export CARGO_BUILD_JOBS={cpus}"),
                _ => format!("{tool} with -j{cpus} (its parallel-jobs option)"),
            },
            revert: format!("Drop the -j option: {tool} goes back to its default."),
            risk: Some("A makefile that misses a dependency can fail only when run in parallel; parallel jobs also need the memory of as many compilers at once.".into()),
        }
    };
    Some(Recommendation {
        rule: RULE.id,
        title: format!(
            "{tool} asked for {demand:.1} of {cpus} CPUs over {} ({}; at most {} at once)",
            duration(wall),
            count(compilers.len() as u64, "compiler invocation", "compiler invocations"),
            most_at_once
        ),
        subjects: vec![Subject { kind: SubjectKind::ProcessTree, name: format!("{exe} [{}]", driver.pid) }],
        evidence,
        saving: Saving {
            time_ns: Some(saving),
            bytes: None,
            how: format!(
                "the build's wall time less the longer of its CPU work spread over {cpus} CPUs and its longest compiler run: the best a parallel build of the same work could do"
            ),
        },
        confidence: Confidence {
            level: if caches.is_empty() { Level::Medium } else { Level::Low },
            reason: format!(
                "the scheduler's on-CPU time of every process of the build; the estimate assumes the compilers are independent, which the build's dependency graph may not allow{}",
                match (caches.len(), cache_hits) {
                    (0, _) => String::new(),
                    (n, Some(hits)) => format!(
                        ", and a compiler cache was in use ({hits} of {n} ccache invocations were answered from it), so this run's work may not be the next one's"
                    ),
                    (_, None) => {
                        ", and a compiler cache was in use, so this run's work may not be the next one's"
                            .to_string()
                    }
                }
            ),
        },
        fix,
    })
}

/// The ccache invocations among `caches` that started no process: hits in
/// ccache's direct mode, which answers from the cache without running
/// anything. A miss runs the preprocessor and the compiler, a link or any
/// other call it cannot cache runs the compiler driver, and a
/// preprocessor-mode hit runs the preprocessor, which this cannot tell
/// from a miss. None when sccache was among them: it compiles in its
/// server, outside the invocation's process tree.
fn cache_hits(
    processes: &[ProcessFigures],
    parent: &[Option<usize>],
    members: &[usize],
    caches: &[usize],
) -> Option<usize> {
    if caches.iter().any(|i| !is(&processes[*i], &["ccache"])) {
        return None;
    }
    let started_any = |cache: usize| members.iter().any(|i| parent[*i] == Some(cache));
    Some(caches.iter().filter(|cache| !started_any(**cache)).count())
}

/// The most compiler processes alive at any one moment.
fn most_at_once(compilers: &[&ProcessFigures], trace_start: u64) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for p in compilers {
        let start = p.start_ns.max(trace_start);
        edges.push((start, 1));
        edges.push((start.saturating_add(p.wall_ns), -1));
    }
    // Ends before starts at the same instant: back-to-back is not overlap.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        most = most.max(now);
    }
    most as usize
}
