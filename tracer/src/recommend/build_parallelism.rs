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
        a compiler cache (ccache, sccache) was used and how often it hit, and how to raise the build's parallelism.",
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

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is(process: &ProcessFigures, names: &[&str]) -> bool {
    process.exe.as_deref().is_some_and(|exe| names.contains(&basename(exe)))
}

/// The arguments of the program it ran last; none for a fork that never
/// ran one of its own.
fn argv(process: &ProcessFigures) -> &[String] {
    process.execs.last().map_or(&[], |exec| &exec.argv)
}

/// A compiler that compiled: not a preprocessor run (`-E`), which is how
/// a compiler cache hashes a source before it knows whether it hits.
fn compiles(process: &ProcessFigures) -> bool {
    is(process, COMPILERS) && !argv(process).iter().any(|a| a == "-E")
}

/// C and C++ compiler drivers as a build names them: `cc`, `c++`,
/// `gcc-12`, `x86_64-linux-gnu-g++`, `clang++`.
fn c_family(program: &str) -> bool {
    let name = basename(program);
    matches!(name, "cc" | "c++") || ["gcc", "g++", "clang"].iter().any(|n| name.contains(n))
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
        members.iter().map(|i| &processes[*i]).filter(|p| compiles(p)).collect();
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
    let cache = CacheUse::of(processes, parent, members);
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
        "compiler_cache_invocations": cache.invocations,
        "compiler_cache_hits": cache.hits,
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
            level: if cache.invocations == 0 { Level::Medium } else { Level::Low },
            reason: format!(
                "the scheduler's on-CPU time of every process of the build; the estimate assumes the compilers are independent, which the build's dependency graph may not allow{}",
                match (cache.invocations, cache.hits) {
                    (0, _) => String::new(),
                    (n, Some(hits)) => format!(
                        ", and a compiler cache was in use ({hits} of {n} invocations were answered from it), so this run's work may not be the next one's"
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

/// A build's compiler-cache invocations: `ccache cc ...` and `sccache cc ...`
/// (not sccache's server, nor `sccache --show-stats`).
struct CacheUse {
    invocations: usize,
    /// How many were answered from the cache; None when the trace cannot
    /// tell (see `sccache_hits`).
    hits: Option<usize>,
}

impl CacheUse {
    fn of(processes: &[ProcessFigures], parent: &[Option<usize>], members: &[usize]) -> CacheUse {
        // What an invocation started, not counting the sccache server the
        // first sccache request starts.
        let mut ran_something = vec![false; processes.len()];
        for (child, p) in processes.iter().zip(parent) {
            if let Some(p) = p
                && !is(child, &["sccache"])
            {
                ran_something[*p] = true;
            }
        }
        // A ccache hit in direct mode answers from the cache without
        // running anything. A miss runs the preprocessor and the compiler,
        // a call it cannot cache (a link) execs the compiler in ccache's
        // place, and a preprocessor-mode hit runs the preprocessor, which
        // this cannot tell from a miss.
        let ccache: Vec<usize> =
            members.iter().copied().filter(|i| is(&processes[*i], &["ccache"])).collect();
        let ccache_hits = ccache.iter().filter(|i| !ran_something[**i]).count();
        let sccache: Vec<usize> =
            members.iter().copied().filter(|i| sccache_request(&processes[*i])).collect();
        let sccache_hits = if sccache.is_empty() {
            Some(0)
        } else {
            sccache_hits(processes, parent, &ran_something, &sccache)
        };
        CacheUse {
            invocations: ccache.len() + sccache.len(),
            hits: sccache_hits.map(|hits| hits + ccache_hits),
        }
    }
}

/// `sccache PROGRAM ARGS...`: a request, not the server or `--show-stats`.
fn sccache_request(process: &ProcessFigures) -> bool {
    is(process, &["sccache"]) && argv(process).get(1).is_some_and(|a| !a.starts_with('-'))
}

/// sccache's hits among its `requests`. A request the client cannot have
/// cached (a link) it runs itself; the others it hands to its server,
/// which runs the preprocessor (`-E`) to hash the source and, on a miss,
/// the compile (`-c`), while the client waits. So the hits are the
/// requests that started nothing, less the server's compiles during them.
/// None when a request was for a compiler other than C's or C++'s (whose
/// server-side runs differ), or when the server ran nothing during one of
/// them: the trace did not see the server (started before a `-- CMD`
/// recording), or an sccache that answers without preprocessing.
fn sccache_hits(
    processes: &[ProcessFigures],
    parent: &[Option<usize>],
    ran_something: &[bool],
    requests: &[usize],
) -> Option<usize> {
    if !requests.iter().all(|i| argv(&processes[*i]).get(1).is_some_and(|program| c_family(program))) {
        return None;
    }
    let span = |p: &ProcessFigures| (p.start_ns, p.start_ns.saturating_add(p.wall_ns));
    let mut handed_over: Vec<(u64, u64)> =
        requests.iter().filter(|i| !ran_something[**i]).map(|i| span(&processes[*i])).collect();
    handed_over.sort_unstable();
    let mut by_server: Vec<&ProcessFigures> = processes
        .iter()
        .zip(parent)
        .filter(|(_, p)| {
            p.is_some_and(|p| is(&processes[p], &["sccache"]) && !sccache_request(&processes[p]))
        })
        .map(|(run, _)| run)
        .collect();
    by_server.sort_unstable_by_key(|run| run.start_ns);
    let starts: Vec<u64> = by_server.iter().map(|run| run.start_ns).collect();
    let ran_during = |&(from, to): &(u64, u64)| {
        starts.get(starts.partition_point(|s| *s < from)).is_some_and(|s| *s <= to)
    };
    if !handed_over.iter().all(ran_during) {
        return None;
    }
    // Requests overlap in a parallel build: a compile is during one if it
    // is during their union.
    let mut union: Vec<(u64, u64)> = Vec::new();
    for &(from, to) in &handed_over {
        match union.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => union.push((from, to)),
        }
    }
    let during_one =
        |at: u64| union.get(union.partition_point(|(_, to)| *to < at)).is_some_and(|(from, _)| *from <= at);
    let misses = by_server
        .iter()
        .filter(|run| {
            let args = argv(run);
            args.first().is_some_and(|program| c_family(program))
                && args.iter().any(|a| a == "-c")
                && !args.iter().any(|a| a == "-E")
                && during_one(run.start_ns)
        })
        .count();
    Some(handed_over.len().saturating_sub(misses))
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
