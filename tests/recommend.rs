//! End-to-end tests of `nixtrace recommend`: real programs with real
//! search paths (set with patchelf), recorded with the real probes; each
//! rule must fire on the workload built to trigger it, stay silent on its
//! close twin, and rest on evidence equal to the report's figures. The
//! printed fixes are applied and a new recording shows what they promised.
//! Needs root, and Debian's patchelf and C compiler.

mod common;

use std::{ffi::OsStr, fs, path::Path, process::Command};

use common::*;
use serde_json::{Value, json};

/// Where Debian keeps the C library and zlib.
const SYSTEM_LIBS: &str = "/lib/x86_64-linux-gnu";

fn patchelf_set_rpath(binary: &Path, rpath: &str) {
    let output = run(Command::new("patchelf").arg("--set-rpath").arg(rpath).arg(binary));
    assert!(output.status.success(), "patchelf: {}", stderr_of(&output));
}

fn rpath_of(binary: &Path) -> String {
    let output = run(Command::new("patchelf").arg("--print-rpath").arg(binary));
    assert!(output.status.success(), "patchelf: {}", stderr_of(&output));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// `nixtrace recommend TRACE --format json ARGS`, parsed.
fn recommend_json(trace: &Path, args: &[&str]) -> Value {
    let output =
        run(Command::new(NIXTRACE).arg("recommend").arg(trace).args(["--format", "json"]).args(args));
    assert!(output.status.success(), "recommend: {}", stderr_of(&output));
    serde_json::from_slice(&output.stdout).expect("recommend --format json prints JSON")
}

/// The recommendations of `rule` about `binary`.
fn about<'a>(recommendations: &'a Value, rule: &str, binary: &Path) -> Vec<&'a Value> {
    recommendations["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["rule"] == rule
                && r["subjects"].as_array().unwrap().iter().any(|s| s["name"] == text_of(binary))
        })
        .collect()
}

/// Records `binary ARGS` into `trace` and returns the report.
fn record_and_report_all(binary: &Path, args: &[&str], trace: &Path) -> Value {
    let _ = fs::remove_file(trace);
    // cargo test sets LD_LIBRARY_PATH, which the loader searches first.
    let output =
        run(record_cmd(trace).env_remove("LD_LIBRARY_PATH").arg("-q").arg("--").arg(binary).args(args));
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    report_json(trace, &[])
}

/// Records `binary ARGS` into `trace` and returns the report's row for it.
fn record_and_report(binary: &Path, args: &[&str], trace: &Path) -> Value {
    process_running(&record_and_report_all(binary, args, trace), text_of(binary)).clone()
}

/// Proves library-search: a program whose RUNPATH has two entries that
/// hold nothing is told to drop exactly those, keeping the entry that only
/// a `dlopen` after startup used; the evidence equals the report's failed
/// lookups; the printed command, run, leaves exactly the failed lookups
/// the evidence predicted and no recommendation; the revert restores the
/// RUNPATH; and the twin built with the minimal RUNPATH gets none.
#[test]
fn library_search_drops_the_entries_that_hold_nothing() {
    let sandbox = Sandbox::new();
    let program = sandbox.build_workload();
    let (empty_a, plugins, empty_b) =
        (sandbox.path("empty-a"), sandbox.path("plugins"), sandbox.path("empty-b"));
    for dir in [&empty_a, &plugins, &empty_b] {
        fs::create_dir(dir).unwrap();
    }
    fs::copy(Path::new(SYSTEM_LIBS).join("libz.so.1"), plugins.join("libz.so.1")).unwrap();
    let old = format!("{}:{}:{}:{SYSTEM_LIBS}", text_of(&empty_a), text_of(&plugins), text_of(&empty_b));
    patchelf_set_rpath(&program, &old);
    let trace = sandbox.trace_path();
    let row = record_and_report(&program, &["dlopen", "libz.so.1"], &trace);
    let dlopened: Vec<&str> =
        row["loader"]["dlopened"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert!(dlopened.iter().any(|d| d.ends_with("plugins/libz.so.1")), "{dlopened:?}");

    let recommendations = recommend_json(&trace, &[]);
    let found = about(&recommendations, "library-search", &program);
    assert_eq!(found.len(), 1, "{recommendations:#}");
    let r = found[0];
    let evidence = &r["evidence"];
    let new = format!("{}:{SYSTEM_LIBS}", text_of(&plugins));
    assert_eq!(evidence["new_entries"], serde_json::json!([text_of(&plugins), SYSTEM_LIBS]), "{evidence:#}");
    let useless: Vec<&str> = evidence["useless_entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry"].as_str().unwrap())
        .collect();
    assert_eq!(useless, [text_of(&empty_a), text_of(&empty_b)]);

    // The evidence is the report's: the failed lookups the program's own
    // RUNPATH caused, and those under the dropped entries.
    let failed = row["loader"]["failed"].as_array().unwrap();
    let own: Vec<&Value> = failed.iter().filter(|f| f["searcher"] == text_of(&program)).collect();
    let sum = |items: &[&Value], key: &str| items.iter().map(|f| f[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!(evidence["failed_lookups"].as_u64(), Some(sum(&own, "count")));
    let under = |f: &&Value, dir: &Path| {
        let d = f["dir"].as_str().unwrap();
        d == text_of(dir) || d.starts_with(&format!("{}/", text_of(dir)))
    };
    let removed: Vec<&Value> =
        own.iter().copied().filter(|f| under(f, &empty_a) || under(f, &empty_b)).collect();
    assert!(!removed.is_empty(), "the empty entries were searched: {failed:#?}");
    assert_eq!(evidence["removed_failed_lookups"].as_u64(), Some(sum(&removed, "count")));
    assert_eq!(r["saving"]["time_ns"].as_u64(), Some(sum(&removed, "ns")));
    assert_eq!(r["fix"]["kind"], "command");
    assert_eq!(
        r["fix"]["text"].as_str().unwrap(),
        format!("patchelf --set-rpath {new} {}", text_of(&program))
    );

    // Apply the fix exactly as printed.
    let applied = run(Command::new("sh").arg("-c").arg(r["fix"]["text"].as_str().unwrap()));
    assert!(applied.status.success(), "{}", stderr_of(&applied));
    assert_eq!(rpath_of(&program), new);
    let after = record_and_report(&program, &["dlopen", "libz.so.1"], &sandbox.path("after.ntr"));
    assert_eq!(
        after["loader"]["failed_lookups"].as_u64(),
        evidence["remaining_failed_lookups"].as_u64(),
        "the fix leaves the failed lookups it predicted: {:#}",
        after["loader"]
    );
    assert_eq!(after["exit_code"], 0, "the dlopened library is still found");
    assert!(about(&recommend_json(&sandbox.path("after.ntr"), &[]), "library-search", &program).is_empty());
    // A diff of the two says the change resolved it.
    let diff = run(Command::new(NIXTRACE)
        .arg("diff")
        .arg(&trace)
        .arg(sandbox.path("after.ntr"))
        .args(["-F", "json"]));
    assert!(diff.status.success(), "{}", stderr_of(&diff));
    let diff: Value = serde_json::from_slice(&diff.stdout).unwrap();
    let resolved = diff["recommendations_resolved"].as_array().unwrap();
    assert_eq!(resolved.len(), 1, "{diff:#}");
    assert_eq!(resolved[0]["rule"], "library-search");
    assert_eq!(resolved[0]["subjects"][0], text_of(&program));
    assert_eq!(diff["recommendations_introduced"], serde_json::json!([]));

    // And the revert, as printed, restores the original.
    let reverted = run(Command::new("sh").arg("-c").arg(r["fix"]["revert"].as_str().unwrap()));
    assert!(reverted.status.success(), "{}", stderr_of(&reverted));
    assert_eq!(rpath_of(&program), old);

    // The twin, built with the minimal RUNPATH, gets no recommendation.
    let twin = sandbox.path("twin");
    fs::copy(&program, &twin).unwrap();
    patchelf_set_rpath(&twin, &new);
    record_and_report(&twin, &["dlopen", "libz.so.1"], &sandbox.path("twin.ntr"));
    assert!(about(&recommend_json(&sandbox.path("twin.ntr"), &[]), "library-search", &twin).is_empty());
}

/// The workload with an empty directory first in its RUNPATH, before the
/// system's libraries: library-search's simplest case.
fn workload_searching_an_empty_entry(sandbox: &Sandbox) -> std::path::PathBuf {
    let program = sandbox.build_workload();
    let empty = sandbox.path("empty");
    fs::create_dir(&empty).unwrap();
    patchelf_set_rpath(&program, &format!("{}:{SYSTEM_LIBS}", text_of(&empty)));
    program
}

/// Proves the command line's rule selection, threshold and minimum saving:
/// --rule and --threshold refuse unknown names (usage errors), a threshold
/// above what the trace shows silences the rule, and --list-rules lists
/// every rule with its thresholds.
#[test]
fn rules_thresholds_and_listing() {
    let sandbox = Sandbox::new();
    let program = workload_searching_an_empty_entry(&sandbox);
    let trace = sandbox.trace_path();
    let row = record_and_report(&program, &["sleep", "0"], &trace);
    let own =
        row["loader"]["failed"].as_array().unwrap().iter().filter(|f| f["searcher"] == text_of(&program));
    let failed: u64 = own.map(|f| f["count"].as_u64().unwrap()).sum();
    assert!(failed > 0);
    assert_eq!(
        about(&recommend_json(&trace, &["--rule", "library-search"]), "library-search", &program).len(),
        1
    );
    let above = format!("library-search.min_failed_lookups={}", failed + 1);
    assert!(about(&recommend_json(&trace, &["--threshold", &above]), "library-search", &program).is_empty());
    assert!(about(&recommend_json(&trace, &["--min-saving", "1h"]), "library-search", &program).is_empty());
    // The same threshold from a file; --threshold on top of it wins.
    let file = sandbox.path("thresholds.toml");
    fs::write(&file, format!("[library-search]\nmin_failed_lookups = {}\n", failed + 1)).unwrap();
    let from_file = ["--thresholds", text_of(&file)];
    assert!(about(&recommend_json(&trace, &from_file), "library-search", &program).is_empty());
    let overridden = [from_file[0], from_file[1], "--threshold", "library-search.min_failed_lookups=1"];
    assert_eq!(about(&recommend_json(&trace, &overridden), "library-search", &program).len(), 1);
    fs::write(&file, "[library-search]\nmin_failed_lookups = \"many\"\n").unwrap();
    let output = run(Command::new(NIXTRACE).arg("recommend").arg(&trace).args(from_file));
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert_eq!(
        stderr_of(&output).trim(),
        format!(
            "nixtrace: error: thresholds file {}: library-search.min_failed_lookups: expected a number, not a string",
            file.display()
        )
    );
    for bad in [
        &["--rule", "no-such-rule"][..],
        &["--threshold", "library-search.nope=1"],
        &["--min-saving", "soon"],
    ] {
        let output = run(Command::new(NIXTRACE).arg("recommend").arg(&trace).args(bad));
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {}", stderr_of(&output));
    }
    let list = run(Command::new(NIXTRACE).args(["recommend", "--list-rules"]));
    assert!(list.status.success(), "{}", stderr_of(&list));
    let text = String::from_utf8(list.stdout).unwrap();
    assert!(
        text.contains("library-search: ") && text.contains("--threshold library-search.min_failed_lookups=1"),
        "{text}"
    );
}

/// Proves the report carries the recommendations: the same objects in
/// JSON `recommendations[]`, and a section in text and Markdown.
#[test]
fn the_report_carries_the_recommendations() {
    let sandbox = Sandbox::new();
    let program = workload_searching_an_empty_entry(&sandbox);
    let trace = sandbox.trace_path();
    record_and_report(&program, &["sleep", "0"], &trace);
    let report = report_json(&trace, &[]);
    assert_eq!(report["recommendations"], recommend_json(&trace, &[])["recommendations"]);
    for (format, heading) in [("text", "Recommendations"), ("markdown", "**Recommendations**")] {
        let output = run(Command::new(NIXTRACE).arg("report").arg(&trace).args(["--format", format]));
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(text.contains(heading) && text.contains("library-search"), "{format}: {text}");
    }
}

/// A C project whose files each take a while to compile, with a Makefile.
fn c_project(dir: &Path, files: usize) {
    fs::create_dir_all(dir).unwrap();
    let mut objects = Vec::new();
    for i in 0..files {
        // Enough code that -O2 takes a noticeable time per file.
        let mut source = String::new();
        for f in 0..120 {
            source.push_str(&format!(
                "int f{i}_{f}(int x) {{ int s = 0; for (int k = 0; k < x; k++) s += (k * {f}) ^ (s >> 3); return s; }}\n"
            ));
        }
        fs::write(dir.join(format!("f{i}.c")), source).unwrap();
        objects.push(format!("f{i}.o"));
    }
    fs::write(dir.join("main.c"), "int main(void) { return 0; }\n").unwrap();
    let makefile = format!(
        "prog: main.o {objects}\n\t$(CC) -o $@ $^\n%.o: %.c\n\t$(CC) -O2 -c -o $@ $<\n",
        objects = objects.join(" ")
    );
    fs::write(dir.join("Makefile"), makefile).unwrap();
}

/// Records `make JOBS` in a fresh copy of the project and returns the trace.
fn record_make(sandbox: &Sandbox, name: &str, jobs: &str) -> std::path::PathBuf {
    let dir = sandbox.path(name);
    c_project(&dir, 12);
    let trace = sandbox.path(&format!("{name}.ntr"));
    let output = run(record_cmd(&trace).arg("-q").args(["--", "make", "-s", "-C"]).arg(&dir).arg(jobs));
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    trace
}

/// Proves build-parallelism: `make -j1` of twelve C files on a machine
/// with two or more CPUs is told to use them all, with evidence equal to
/// the report's (the compilers it ran, the on-CPU and waiting time of make
/// and everything below it, one compiler at a time); `make -jCPUS` of the
/// same project is not, even on a busy machine, since its compilers
/// waiting for a CPU count as asking for one.
#[test]
fn build_parallelism_finds_a_serial_make() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(cpus >= 2, "the test needs two CPUs to tell a serial build from a parallel one");
    let sandbox = Sandbox::new();
    let serial = record_make(&sandbox, "serial", "-j1");
    let recommendations = recommend_json(&serial, &["--rule", "build-parallelism"]);
    let found = recommendations["recommendations"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{recommendations:#}");
    let evidence = &found[0]["evidence"];

    let report = report_json(&serial, &[]);
    let processes = report["processes"].as_array().unwrap();
    let make = process_running(&report, "/usr/bin/make");
    let key = |p: &Value| (p["pid"].as_u64(), p["start_ns"].as_u64());
    let parent = |p: &Value| (p["ppid"].as_u64(), p["parent_start_ns"].as_u64());
    let mut tree = vec![key(make)];
    loop {
        let more: Vec<_> = processes
            .iter()
            .filter(|p| tree.contains(&parent(p)) && !tree.contains(&key(p)))
            .map(key)
            .collect();
        if more.is_empty() {
            break;
        }
        tree.extend(more);
    }
    let members: Vec<&Value> = processes.iter().filter(|p| tree.contains(&key(p))).collect();
    let compilers = members.iter().filter(|p| p["exe"].as_str().is_some_and(|e| e.ends_with("/cc1"))).count();
    assert_eq!(compilers, 13, "one cc1 per source file");
    assert_eq!(evidence["compiler_invocations"].as_u64(), Some(compilers as u64));
    assert_eq!(evidence["processes"].as_u64(), Some(members.len() as u64));
    let on_cpu: u64 = members.iter().map(|p| p["time"]["on_cpu_ns"].as_u64().unwrap()).sum();
    assert_eq!(evidence["on_cpu_ns"].as_u64(), Some(on_cpu));
    let runnable: u64 = members.iter().map(|p| p["time"]["runnable_ns"].as_u64().unwrap()).sum();
    assert_eq!(evidence["runnable_ns"].as_u64(), Some(runnable));
    assert_eq!(evidence["wall_ns"], make["wall_ns"]);
    assert_eq!(evidence["cpus"].as_u64(), Some(cpus as u64));
    assert_eq!(evidence["most_compilers_at_once"].as_u64(), Some(1), "make -j1 runs one at a time");
    assert_eq!(
        found[0]["fix"]["text"].as_str().unwrap().split_whitespace().take(2).collect::<Vec<_>>(),
        ["make", &format!("-j{cpus}")]
    );

    let parallel = record_make(&sandbox, "parallel", &format!("-j{cpus}"));
    let none = recommend_json(&parallel, &["--rule", "build-parallelism"]);
    assert_eq!(none["recommendations"], serde_json::json!([]), "make -j{cpus}: {none:#}");
}

/// `make -s -j1 -C DIR CC="CACHE cc"` with `env` set, which must succeed.
fn make_through(command: &mut Command, dir: &Path, cache: &str, env: &[(&str, &OsStr)]) {
    command.args(["make", "-s", "-j1", "-C"]).arg(dir).arg(format!("CC={cache} cc"));
    for (name, value) in env {
        command.env(name, value);
    }
    let output = run(command);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
}

/// A thirteen-file C project built once through a compiler cache (`make`
/// is that build), then six of its sources changed and every output
/// removed: the next build has seven hits and six misses.
fn half_cached_project(dir: &Path, make: impl Fn(&mut Command)) {
    c_project(dir, 12);
    make(&mut Command::new("env"));
    for i in 0..6 {
        let source = dir.join(format!("f{i}.c"));
        let text =
            fs::read_to_string(&source).unwrap() + &format!("int changed{i}(void) {{ return {i}; }}\n");
        fs::write(source, text).unwrap();
    }
    remove_outputs(dir);
}

fn remove_outputs(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "o") || path.ends_with("prog") {
            fs::remove_file(path).unwrap();
        }
    }
}

/// The one build-parallelism finding of `trace`, with the thresholds that
/// let a short build through.
fn build_finding(trace: &Path) -> Value {
    let recommendations = recommend_json(
        trace,
        &[
            "--rule",
            "build-parallelism",
            "--threshold",
            "build-parallelism.min_wall_ms=0",
            "--threshold",
            "build-parallelism.min_compilers=0",
        ],
    );
    let found = recommendations["recommendations"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{recommendations:#}");
    found[0].clone()
}

fn exe_is(process: &Value, name: &str) -> bool {
    process["exe"].as_str().is_some_and(|e| e.rsplit('/').next() == Some(name))
}

fn started_by<'a>(processes: &'a [Value], parent: &Value) -> impl Iterator<Item = &'a Value> {
    processes.iter().filter(move |p| p["ppid"] == parent["pid"] && p["parent_start_ns"] == parent["start_ns"])
}

/// Proves build-parallelism's compiler-cache figures against ccache's own
/// statistics: a `make -j1 CC="ccache cc"` of thirteen C files, seven of
/// them cached by an earlier build and six changed since, runs thirteen
/// ccache invocations (for the link ccache execs the compiler in its own
/// place); the seven direct-mode hits start no process, and that is the
/// evidence's `compiler_cache_hits`.
#[test]
fn build_parallelism_counts_ccache_hits() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path("cached");
    let cache = sandbox.path("ccache");
    let env = [("CCACHE_DIR", cache.as_os_str())];
    half_cached_project(&dir, |command| make_through(command, &dir, "ccache", &env));
    let zeroed = run(Command::new("ccache").arg("--zero-stats").env("CCACHE_DIR", &cache));
    assert!(zeroed.status.success(), "{}", stderr_of(&zeroed));
    let trace = sandbox.path("cached.ntr");
    make_through(record_cmd(&trace).args(["-q", "--"]), &dir, "ccache", &env);

    let stats = run(Command::new("ccache").arg("--print-stats").env("CCACHE_DIR", &cache));
    let stats = String::from_utf8(stats.stdout).unwrap();
    let stat = |name: &str| -> u64 {
        let line = stats.lines().find(|l| l.split('\t').next() == Some(name));
        line.and_then(|l| l.split('\t').nth(1))
            .unwrap_or_else(|| panic!("no {name} in {stats}"))
            .parse()
            .unwrap()
    };
    assert_eq!((stat("direct_cache_hit"), stat("preprocessed_cache_hit")), (7, 0), "{stats}");
    assert_eq!(stat("cache_miss"), 6, "{stats}");

    let report = report_json(&trace, &[]);
    let processes = report["processes"].as_array().unwrap();
    let ccache: Vec<&Value> = processes.iter().filter(|p| exe_is(p, "ccache")).collect();
    assert_eq!(ccache.len(), 13, "one a source file; the link is a cc by the end");
    let childless = ccache.iter().filter(|c| started_by(processes, c).next().is_none()).count();
    assert_eq!(childless, 7, "the hits start no process");

    let found = build_finding(&trace);
    let evidence = &found["evidence"];
    assert_eq!(evidence["compiler_cache_invocations"].as_u64(), Some(13), "{evidence}");
    assert_eq!(evidence["compiler_cache_hits"].as_u64(), Some(7), "{evidence}");
    assert_eq!(found["confidence"]["level"], "low", "a cached build's work is not the next one's");
}

/// `sccache --show-stats`' figure on the line named `name`.
fn sccache_stat(env: &[(&str, &OsStr)], name: &str) -> u64 {
    let mut command = Command::new("sccache");
    command.arg("--show-stats").envs(env.iter().copied());
    let output = run(&mut command);
    let stats = String::from_utf8(output.stdout).unwrap();
    let line = stats.lines().find(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with("  ")));
    line.and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no {name} in {stats}"))
        .parse()
        .unwrap()
}

fn sccache(env: &[(&str, &OsStr)], option: &str) {
    let output = run(Command::new("sccache").arg(option).envs(env.iter().copied()));
    assert!(output.status.success(), "sccache {option}: {}", stderr_of(&output));
}

/// Proves build-parallelism's sccache hits against sccache's own
/// statistics: the same half-cached build through `CC="sccache cc"` makes
/// fourteen requests (the link the client runs itself); the server its
/// first request starts (a child sccache, the only process a handed-over
/// request starts) runs the preprocessor for each of the other
/// thirteen and a compile for each miss, and the requests less those
/// compiles are the seven hits sccache counts. With the server started
/// before the recording, the trace cannot see it, and the hits are null.
#[test]
fn build_parallelism_counts_sccache_hits() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path("cached");
    let cache = sandbox.path("sccache");
    // A port of its own, so that no other sccache server answers.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let env = [("SCCACHE_DIR", cache.as_os_str()), ("SCCACHE_SERVER_PORT", OsStr::new(&port))];
    half_cached_project(&dir, |command| make_through(command, &dir, "sccache", &env));
    // Its statistics start again with the next server.
    sccache(&env, "--stop-server");
    let trace = sandbox.path("cached.ntr");
    make_through(record_cmd(&trace).args(["-q", "--"]), &dir, "sccache", &env);
    let (hits, misses) = (sccache_stat(&env, "Cache hits"), sccache_stat(&env, "Cache misses"));
    sccache(&env, "--stop-server");
    assert_eq!((hits, misses), (7, 6));

    let report = report_json(&trace, &[]);
    let processes = report["processes"].as_array().unwrap();
    let requests: Vec<&Value> =
        processes.iter().filter(|p| exe_is(p, "sccache") && p["execs"][0]["argv"][1] == "cc").collect();
    assert_eq!(requests.len(), 14, "thirteen compiles and the link");
    let handed_over =
        requests.iter().filter(|r| started_by(processes, r).all(|child| exe_is(child, "sccache"))).count();
    assert_eq!(handed_over, 13, "the client runs the link itself");
    let compiles = processes
        .iter()
        .filter(|server| exe_is(server, "sccache") && !requests.contains(server))
        .flat_map(|server| started_by(processes, server))
        .filter(|run| {
            let argv = run["execs"][0]["argv"].as_array();
            argv.is_some_and(|argv| argv.contains(&json!("-c")) && !argv.contains(&json!("-E")))
        })
        .count();
    assert_eq!(compiles as u64, misses, "the server compiles each miss");

    let found = build_finding(&trace);
    let evidence = &found["evidence"];
    assert_eq!(evidence["compiler_cache_invocations"].as_u64(), Some(14), "{evidence}");
    assert_eq!(evidence["compiler_cache_hits"].as_u64(), Some(hits), "{evidence}");
    assert_eq!(evidence["compiler_invocations"].as_u64(), Some(misses), "preprocessor runs are no compiles");

    remove_outputs(&dir);
    sccache(&env, "--start-server");
    let unseen = sandbox.path("unseen.ntr");
    make_through(record_cmd(&unseen).args(["-q", "--"]), &dir, "sccache", &env);
    sccache(&env, "--stop-server");
    let evidence = &build_finding(&unseen)["evidence"];
    assert_eq!(evidence["compiler_cache_invocations"].as_u64(), Some(14), "{evidence}");
    assert_eq!(evidence["compiler_cache_hits"], Value::Null, "the server ran outside the trace: {evidence}");
}

/// A program that needs zlib (`-l:libz.so.1`), built in the sandbox.
fn zlib_program(sandbox: &Sandbox) -> std::path::PathBuf {
    let source = sandbox.path("usez.c");
    fs::write(
        &source,
        "extern const char *zlibVersion(void);\nint main(void) { return zlibVersion()[0] ? 0 : 1; }\n",
    )
    .unwrap();
    let program = sandbox.path("usez");
    let output = run(Command::new("cc").arg("-o").arg(&program).arg(&source).arg("-l:libz.so.1"));
    assert!(output.status.success(), "cc: {}", stderr_of(&output));
    program
}

/// Proves loader-environment: a wrapper script that sets LD_LIBRARY_PATH
/// (an empty directory, then the one holding the program's zlib) and
/// `exec`s the program is reported, with the failed lookups in those
/// entries equal to the report's and the script named as what set it; the
/// printed fix (the directory into the program's RUNPATH) makes the
/// program find its zlib there without the wrapper. `LD_PRELOAD` of a
/// library into /bin/true is reported too, with the preloaded library's
/// load time; the same programs without the variables are not. Only the
/// loader's own variables are in the trace.
#[test]
fn loader_environment_finds_wrapper_variables() {
    let sandbox = Sandbox::new();
    let program = zlib_program(&sandbox);
    let (empty, libs) = (sandbox.path("empty"), sandbox.path("libs"));
    fs::create_dir(&empty).unwrap();
    fs::create_dir(&libs).unwrap();
    fs::copy(Path::new(SYSTEM_LIBS).join("libz.so.1"), libs.join("libz.so.1")).unwrap();
    let wrapper = sandbox.path("wrapper");
    let value = format!("{}:{}", text_of(&empty), text_of(&libs));
    fs::write(
        &wrapper,
        format!("#!/bin/sh\nLD_LIBRARY_PATH={value} NOT_RECORDED=secret exec {} \"$@\"\n", text_of(&program)),
    )
    .unwrap();
    run(Command::new("chmod").arg("+x").arg(&wrapper));
    let trace = sandbox.trace_path();
    let report = record_and_report_all(&wrapper, &[], &trace);
    let row = process_running(&report, text_of(&program));
    assert_eq!(row["exit_code"], 0);
    let exec = row["execs"].as_array().unwrap().last().unwrap();
    assert_eq!(exec["filename"], text_of(&program), "the wrapper execs the program in the same process");
    assert_eq!(exec["loader_env"], serde_json::json!({ "LD_LIBRARY_PATH": value }));
    let raw = fs::read(&trace).unwrap();
    assert!(!raw.windows(6).any(|w| w == b"secret"), "a variable that is not the loader's is in the trace");

    let recommendations = recommend_json(&trace, &["--rule", "loader-environment"]);
    let found = about(&recommendations, "loader-environment", &program);
    assert_eq!(found.len(), 1, "{recommendations:#}");
    let evidence = &found[0]["evidence"];
    assert_eq!(evidence["variable"], "LD_LIBRARY_PATH");
    assert_eq!(evidence["execs"], 1);
    assert_eq!(evidence["entries_that_held_libraries"], serde_json::json!([text_of(&libs)]));
    let failed = row["loader"]["failed"].as_array().unwrap();
    let in_entries: Vec<&Value> = failed
        .iter()
        .filter(|f| f["searcher"].is_null())
        .filter(|f| [&empty, &libs].iter().any(|d| f["dir"].as_str().unwrap().starts_with(text_of(d))))
        .collect();
    assert!(!in_entries.is_empty(), "{failed:#?}");
    assert_eq!(
        evidence["failed_lookups"].as_u64(),
        Some(in_entries.iter().map(|f| f["count"].as_u64().unwrap()).sum())
    );
    assert_eq!(found[0]["fix"]["kind"], "command");
    let text = found[0]["fix"]["text"].as_str().unwrap();
    let command = text.split("   #").next().unwrap();
    assert_eq!(command, format!("patchelf --add-rpath {} {}", text_of(&libs), text_of(&program)));
    let applied = run(Command::new("sh").arg("-c").arg(command));
    assert!(applied.status.success(), "{}", stderr_of(&applied));
    let after = record_and_report(&program, &[], &sandbox.path("after.ntr"));
    let zlib = after["loader"]["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["path"] == text_of(&libs.join("libz.so.1")));
    assert!(zlib, "the program finds its zlib through RUNPATH now: {:#}", after["loader"]);
    assert!(
        recommend_json(&sandbox.path("after.ntr"), &["--rule", "loader-environment"])["recommendations"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // LD_PRELOAD of a library /bin/true does not need.
    let preload = Path::new(SYSTEM_LIBS).join("libz.so.1");
    let preloaded = sandbox.path("preload.ntr");
    let output = run(record_cmd(&preloaded)
        .env_remove("LD_LIBRARY_PATH")
        .arg("-q")
        .args(["--", "env"])
        .arg(format!("LD_PRELOAD={}", text_of(&preload)))
        .arg("/bin/true"));
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let found = recommend_json(&preloaded, &["--rule", "loader-environment"]);
    let found = about(&found, "loader-environment", Path::new("/bin/true"));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["evidence"]["variable"], "LD_PRELOAD");
    let report = report_json(&preloaded, &[]);
    let truth = process_running(&report, "/bin/true");
    let load_ns = truth["loader"]["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["path"] == text_of(&preload))
        .unwrap()["load_ns"]
        .clone();
    assert_eq!(found[0]["evidence"]["preloaded_load_ns"], load_ns);

    // Without the variables: nothing.
    let plain = sandbox.path("plain.ntr");
    let output = run(record_cmd(&plain).env_remove("LD_LIBRARY_PATH").args(["-q", "--", "/bin/true"]));
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_eq!(
        recommend_json(&plain, &["--rule", "loader-environment"])["recommendations"],
        serde_json::json!([])
    );
}

/// `record --probe stat -- env PYTHONPATH=... python3 -c pass` into `trace`.
fn record_python(trace: &Path, pythonpath: &str, probe: bool) {
    let _ = fs::remove_file(trace);
    let probe: &[&str] = if probe { &["--probe", "stat"] } else { &[] };
    let python = ["env", &format!("PYTHONPATH={pythonpath}"), "/usr/bin/python3", "-c", "pass"];
    let output = run(record_cmd(trace).arg("-q").args(probe).arg("--").args(python));
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
}

/// Proves interpreter-search finds a PYTHONPATH of twenty directories that do not exist, with evidence equal to the report's lookups, and that its printed fix, run in a shell, drops exactly them; plain python3 is not flagged, and a trace without the stat probe says how to record one.
#[test]
fn interpreter_search_finds_a_long_pythonpath() {
    let sandbox = Sandbox::new();
    let python = Path::new("/usr/bin/python3");
    let missing: Vec<String> =
        (1..=20).map(|i| format!("{}/{i}", sandbox.path("missing").display())).collect();
    let pythonpath = missing.join(":");
    let trace = sandbox.path("long.ntr");
    record_python(&trace, &pythonpath, true);
    let recommendations = recommend_json(&trace, &[]);
    let found = about(&recommendations, "interpreter-search", python);
    assert_eq!(found.len(), 1, "{recommendations:#}");
    let evidence = &found[0]["evidence"];

    // The evidence is the report's lookups of the python3 exec.
    let report = report_json(&trace, &[]);
    let execs: Vec<&Value> = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["execs"].as_array().unwrap())
        .filter(|e| e["filename"] == text_of(python))
        .collect();
    assert_eq!(execs.len(), 1, "one exec of python3");
    let lookups = &execs[0]["lookups"];
    assert_eq!(evidence["execs"].as_u64(), Some(1));
    assert_eq!(evidence["lookups"], lookups["calls"]);
    assert_eq!(evidence["failed_lookups"], lookups["failed"]);
    assert_eq!(evidence["failed_lookups_ns"], lookups["failed_ns"]);
    assert_eq!(found[0]["saving"]["time_ns"], lookups["failed_ns"]);
    assert_eq!(evidence["variable"], "PYTHONPATH");
    // Python looks each missing entry up at least twice (a path hook,
    // then the import system), and nothing below it.
    let repeated: Vec<&str> =
        lookups["repeated"].as_array().unwrap().iter().map(|r| r["path"].as_str().unwrap()).collect();
    for dir in &missing {
        assert!(repeated.contains(&dir.as_str()), "{dir} is among the repeated misses: {repeated:?}");
    }
    let dropped: Vec<&str> =
        evidence["drop"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert_eq!(dropped, repeated);
    assert!(lookups["failed"].as_u64().unwrap() >= 40, "{lookups:#}");

    // The fix, pasted into a shell that has the PYTHONPATH, keeps only
    // what exists; the revert brings it back.
    let kept = sandbox.path("kept");
    fs::create_dir(&kept).unwrap();
    let fix = found[0]["fix"]["text"].as_str().unwrap();
    let revert = found[0]["fix"]["revert"].as_str().unwrap();
    let script = format!("{fix}\nprintf '%s\\n' \"$PYTHONPATH\"\n{revert}\nprintf '%s\\n' \"$PYTHONPATH\"");
    let with_kept = format!("{pythonpath}:{}", kept.display());
    let shell = run(Command::new("bash").arg("-c").arg(&script).env("PYTHONPATH", &with_kept));
    assert!(shell.status.success(), "{}", stderr_of(&shell));
    let printed = String::from_utf8(shell.stdout).unwrap();
    assert_eq!(printed, format!("{}\n{with_kept}\n", kept.display()));

    // python3 with the PYTHONPATH the fix left is not flagged.
    let fixed = sandbox.path("fixed.ntr");
    record_python(&fixed, printed.lines().next().unwrap(), true);
    assert!(about(&recommend_json(&fixed, &[]), "interpreter-search", python).is_empty());

    // Without the probe the rule cannot see searches, and says so.
    let without = sandbox.path("without.ntr");
    record_python(&without, &pythonpath, false);
    let said = recommend_json(&without, &["--rule", "interpreter-search"]);
    let said = said["recommendations"].as_array().unwrap();
    assert_eq!(said.len(), 1, "{said:#?}");
    assert_eq!(said[0]["evidence"]["stat_probe"], false);
    assert_eq!(said[0]["saving"]["time_ns"], Value::Null);
    let fix = said[0]["fix"]["text"].as_str().unwrap();
    assert!(fix.starts_with("nixtrace record --probe stat -o with-stat.ntr -- env "), "{fix}");
}

/// Records `sh -c SCRIPT` with `env` into `trace`; returns the report.
fn record_script(trace: &Path, script: &str, env: &[(&str, &str)]) -> Value {
    let _ = fs::remove_file(trace);
    let mut record = record_cmd(trace);
    record.arg("-q").envs(env.iter().copied()).args(["--", "sh", "-c", script]);
    let output = run(&mut record);
    assert_eq!(output.status.code(), Some(0), "{script}: {}", stderr_of(&output));
    report_json(trace, &[])
}

/// Every `caches[]` entry of the execs of `binary` in a report.
fn caches_of<'a>(report: &'a Value, binary: &str) -> Vec<&'a Value> {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["execs"].as_array().unwrap())
        .filter(|e| e["filename"] == binary)
        .flat_map(|e| e["caches"].as_array().unwrap())
        .collect()
}

/// Proves startup-cache finds Python modules whose bytecode is missing and never written, with the report's figures as evidence, and that its printed compileall command, run, makes the next start find every one; the same modules with bytecode written are not flagged.
#[test]
fn startup_cache_finds_bytecode_never_written() {
    let sandbox = Sandbox::new();
    let python = Path::new("/usr/bin/python3");
    let modules = sandbox.path("modules");
    fs::create_dir(&modules).unwrap();
    for name in ["nt_alpha", "nt_beta"] {
        fs::write(modules.join(format!("{name}.py")), format!("NAME = {name:?}\n")).unwrap();
    }
    let script = "/usr/bin/python3 -c 'import nt_alpha, nt_beta'";
    let env = [("PYTHONPATH", text_of(&modules)), ("PYTHONDONTWRITEBYTECODE", "1")];
    let trace = sandbox.path("unwritten.ntr");
    let report = record_script(&trace, script, &env);
    let recommendations = recommend_json(&trace, &[]);
    let found = about(&recommendations, "startup-cache", python);
    assert_eq!(found.len(), 1, "{found:#?}");
    let evidence = &found[0]["evidence"];
    let caches = caches_of(&report, text_of(python));
    let missing: Vec<&Value> =
        caches.iter().copied().filter(|c| c["outcome"] == "bytecode_missing").collect();
    let tag = format!("cpython-3{}", python_minor());
    let expected: Vec<String> = ["nt_alpha", "nt_beta"]
        .iter()
        .map(|m| format!("{}/__pycache__/{m}.{tag}.pyc", modules.display()))
        .collect();
    let paths: Vec<&str> = missing.iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(paths, expected, "{caches:#?}");
    assert_eq!(evidence["modules"].as_u64(), Some(2));
    assert_eq!(evidence["bytecode"], serde_json::json!(expected));
    let compile: u64 = missing.iter().map(|c| c["gap_ns"].as_u64().unwrap()).sum();
    assert_eq!(evidence["compile_ns"].as_u64(), Some(compile));
    assert!(compile > 0, "compiling takes time");
    assert_eq!(found[0]["saving"]["time_ns"].as_u64(), Some(compile));

    // The printed command writes exactly the missing bytecode.
    let fix = &found[0]["fix"];
    assert_eq!(fix["kind"], "command");
    let applied = run(Command::new("sh").arg("-c").arg(fix["text"].as_str().unwrap()));
    assert!(applied.status.success(), "{}", stderr_of(&applied));
    for pyc in &expected {
        assert!(Path::new(pyc).is_file(), "{pyc} written by the fix");
    }
    let fixed = sandbox.path("fixed.ntr");
    let report = record_script(&fixed, script, &env);
    assert!(about(&recommend_json(&fixed, &[]), "startup-cache", python).is_empty());
    assert_eq!(caches_of(&report, text_of(python)), Vec::<&Value>::new());
    let reverted = run(Command::new("sh").arg("-c").arg(fix["revert"].as_str().unwrap()));
    assert!(reverted.status.success(), "{}", stderr_of(&reverted));
    assert!(expected.iter().all(|pyc| !Path::new(pyc).exists()), "the revert removes the bytecode");
    assert!(!modules.join("__pycache__").exists(), "and the __pycache__ directory the fix made");
}

/// The running python3's minor version, for its bytecode's file names.
fn python_minor() -> String {
    let output =
        run(Command::new("/usr/bin/python3").args(["-c", "import sys; print(sys.version_info.minor)"]));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Builds, with nix-build, a package of two Python modules and no
/// bytecode, its build script ending with `fixup`; returns its store path.
fn python_modules_package(sandbox: &Sandbox, name: &str, fixup: &str) -> String {
    let expression = sandbox.path(&format!("{name}.nix"));
    fs::write(
        &expression,
        format!(
            "derivation {{\n  name = \"{name}\";\n  system = \"x86_64-linux\";\n  builder = \"/bin/sh\";\n  \
             args = [\"-e\" \"-c\" ''\n    export PATH=/usr/bin:/bin\n    mkdir -p $out/lib/python\n    \
             echo 'NAME = 1' > $out/lib/python/nt_store_alpha.py\n    \
             echo 'NAME = 2' > $out/lib/python/nt_store_beta.py\n{fixup}\n  ''];\n}}\n"
        ),
    )
    .unwrap();
    let output = run(Command::new("nix-build").args(NIX_OPTIONS).arg("--no-out-link").arg(&expression));
    assert!(output.status.success(), "nix-build {}: {}", expression.display(), stderr_of(&output));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// The two-module package built again as `name` with the postFixup body
/// of startup-cache's printed Nix fix `text` (python3.interpreter being the
/// host's); returns its store path.
fn package_built_with_printed_fix(sandbox: &Sandbox, name: &str, text: &str) -> String {
    let body = text.split_once("+ ''\n").and_then(|(_, rest)| rest.split_once("\n'';")).map(|(body, _)| body);
    let body = body.unwrap_or_else(|| panic!("no postFixup string in {text}"));
    python_modules_package(sandbox, name, &body.replace("${python3.interpreter}", "/usr/bin/python3"))
}

/// Proves startup-cache's Nix expression for modules in the store, where
/// bytecode is never written: the modules of a store package imported
/// without bytecode are reported with a postFixup naming the package; the
/// package rebuilt with that postFixup (python3.interpreter being the
/// host's) makes the next start load both modules' bytecode and open
/// neither source, so the recommendation is gone.
#[test]
fn startup_cache_fixes_store_bytecode_at_build_time() {
    let sandbox = Sandbox::new();
    let python = Path::new("/usr/bin/python3");
    let script = "/usr/bin/python3 -c 'import nt_store_alpha, nt_store_beta'";
    // Root could write into the store: keep Python from doing so, as the
    // read-only store of a real system does.
    let record = |package: &str, trace: &str| {
        let env = [("PYTHONPATH", format!("{package}/lib/python")), ("PYTHONDONTWRITEBYTECODE", "1".into())];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let trace = sandbox.path(trace);
        let report = record_script(&trace, script, &env);
        (trace, report)
    };
    let plain = python_modules_package(&sandbox, "nt-store-modules-1.0", "");
    let (trace, report) = record(&plain, "store.ntr");
    let recommendations = recommend_json(&trace, &[]);
    let found = about(&recommendations, "startup-cache", python);
    assert_eq!(found.len(), 1, "{recommendations:#}");
    let tag = format!("cpython-3{}", python_minor());
    let expected: Vec<String> = ["nt_store_alpha", "nt_store_beta"]
        .iter()
        .map(|m| format!("{plain}/lib/python/__pycache__/{m}.{tag}.pyc"))
        .collect();
    assert_eq!(found[0]["evidence"]["bytecode"], serde_json::json!(expected));
    let missing = caches_of(&report, text_of(python));
    assert_eq!(missing.len(), 2, "{missing:#?}");
    let fix = &found[0]["fix"];
    assert_eq!(fix["kind"], "nix-expression");
    let text = fix["text"].as_str().unwrap();
    assert!(text.lines().any(|l| l == format!("#   {plain}")), "the fix names the package: {text}");

    // The postFixup's body, built into the package.
    let fixed = package_built_with_printed_fix(&sandbox, "nt-store-modules-1.1", text);
    let (trace, report) = record(&fixed, "fixed.ntr");
    assert!(about(&recommend_json(&trace, &[]), "startup-cache", python).is_empty());
    assert_eq!(caches_of(&report, text_of(python)), Vec::<&Value>::new());
    let dump = run(Command::new(NIXTRACE).arg("dump").arg(&trace));
    let dump = String::from_utf8(dump.stdout).unwrap();
    let opened = |suffix: &str| {
        dump.lines()
            .filter(|l| l.contains("\"type\":\"open\"") && l.contains(&fixed) && l.contains(suffix))
            .filter(|l| !l.contains("\"ret\":-"))
            .count()
    };
    assert_eq!(opened(".pyc\""), 2, "both modules' bytecode loaded");
    assert_eq!(opened(".py\""), 0, "and neither source compiled");
}

/// Proves startup-cache finds stale bytecode where it cannot be written
/// again: a store package whose bytecode was compiled at build time in
/// Python's default timestamp mode (what the rule's fix printed before),
/// after which Nix gave every source the mtime 1, imported by a user who
/// cannot write the store. Python opens each module's bytecode, finds it
/// stale, compiles the source and fails to write new bytecode (EACCES), at
/// every start: both modules are reported as stale, with the report's
/// figures as evidence. The package built with the fix printed now is not.
#[test]
fn startup_cache_finds_stale_store_bytecode() {
    let sandbox = Sandbox::new();
    let python = Path::new("/usr/bin/python3");
    // As nobody, who cannot write the store, as on a real system (where
    // it is read-only); root could. And letting Python try to write
    // bytecode, whatever the test's environment says.
    let script = "env -u PYTHONDONTWRITEBYTECODE setpriv --reuid=65534 --regid=65534 --clear-groups \
                  /usr/bin/python3 -c 'import nt_store_alpha, nt_store_beta'";
    let record = |package: &str, trace: &str| {
        let trace = sandbox.path(trace);
        let report = record_script(&trace, script, &[("PYTHONPATH", &format!("{package}/lib/python"))]);
        (trace, report)
    };
    let stale = python_modules_package(
        &sandbox,
        "nt-stale-modules-1.0",
        "    /usr/bin/python3 -m compileall -q $out",
    );
    let (trace, report) = record(&stale, "stale.ntr");
    let tag = format!("cpython-3{}", python_minor());
    let expected: Vec<String> = ["nt_store_alpha", "nt_store_beta"]
        .iter()
        .map(|m| format!("{stale}/lib/python/__pycache__/{m}.{tag}.pyc"))
        .collect();
    let caches = caches_of(&report, text_of(python));
    assert_eq!(
        caches.iter().map(|c| c["path"].as_str().unwrap()).collect::<Vec<_>>(),
        expected,
        "{caches:#?}"
    );
    for cache in &caches {
        assert_eq!(
            (&cache["outcome"], &cache["errno"], &cache["missing_ns"]),
            (&json!("not_writable"), &json!("EACCES"), &Value::Null),
            "{cache:#}"
        );
        assert!(cache["found_ns"].is_u64() && cache["gap_ns"].as_u64() > Some(0), "{cache:#}");
    }
    let recommendations = recommend_json(&trace, &[]);
    let found = about(&recommendations, "startup-cache", python);
    assert_eq!(found.len(), 1, "{recommendations:#}");
    let evidence = &found[0]["evidence"];
    assert_eq!((&evidence["bytecode"], &evidence["stale"]), (&json!(expected), &json!(2)), "{evidence:#}");
    let gaps: u64 = caches.iter().map(|c| c["gap_ns"].as_u64().unwrap()).sum();
    assert_eq!(evidence["compile_ns"].as_u64(), Some(gaps));
    assert!(found[0]["title"].as_str().unwrap().contains("stale"), "{}", found[0]["title"]);
    let text = found[0]["fix"]["text"].as_str().unwrap();
    assert!(text.lines().any(|l| l == format!("#   {stale}")), "the fix names the package: {text}");

    let fixed = package_built_with_printed_fix(&sandbox, "nt-stale-modules-1.1", text);
    let (trace, report) = record(&fixed, "fixed.ntr");
    assert_eq!(caches_of(&report, text_of(python)), Vec::<&Value>::new());
    assert!(about(&recommend_json(&trace, &[]), "startup-cache", python).is_empty());
}

/// Proves startup-cache finds a cache that two runs of one program both rebuilt (it deletes it at exit), with the rebuild times as evidence, and not one that the second run found.
#[test]
fn startup_cache_finds_a_cache_rebuilt_at_every_start() {
    let sandbox = Sandbox::new();
    let python = Path::new("/usr/bin/python3");
    let cache = sandbox.path("app.cache");
    let program = sandbox.path("app.py");
    let write = |remove: bool| {
        let source = format!(
            "import os\np = {cache:?}\ntry:\n    open(p).read()\nexcept FileNotFoundError:\n    \
             with open(p + '.tmp', 'w') as f:\n        f.write('built')\n    os.rename(p + '.tmp', p)\n{}",
            if remove { "os.remove(p)\n" } else { "" },
            cache = text_of(&cache)
        );
        fs::write(&program, source).unwrap();
    };
    let script = format!("/usr/bin/python3 {0} && /usr/bin/python3 {0}", text_of(&program));

    write(true);
    let trace = sandbox.path("rebuilt.ntr");
    let report = record_script(&trace, &script, &[]);
    let recommendations = recommend_json(&trace, &[]);
    let found = about(&recommendations, "startup-cache", python);
    assert_eq!(found.len(), 1, "{found:#?}");
    let evidence = &found[0]["evidence"];
    assert_eq!(evidence["path"], text_of(&cache));
    assert_eq!(evidence["rebuilds"].as_u64(), Some(2));
    let tmp = format!("{}.tmp", cache.display());
    assert_eq!(evidence["written_as"], serde_json::json!([tmp, tmp]));
    let rebuilt: Vec<&Value> =
        caches_of(&report, text_of(python)).into_iter().filter(|c| c["path"] == text_of(&cache)).collect();
    let gaps: u64 = rebuilt.iter().map(|c| c["gap_ns"].as_u64().unwrap()).sum();
    assert_eq!(evidence["rebuild_ns"].as_u64(), Some(gaps));
    assert_eq!(found[0]["saving"]["time_ns"].as_u64(), Some(gaps));

    write(false);
    let _ = fs::remove_file(&cache);
    let kept = sandbox.path("kept.ntr");
    record_script(&kept, &script, &[]);
    assert!(about(&recommend_json(&kept, &[]), "startup-cache", python).is_empty());
}

/// A home directory under /home for one test, removed when it ends.
struct TestHome(std::path::PathBuf);

impl TestHome {
    fn new() -> TestHome {
        let home = Path::new("/home").join(format!("nixtrace-test-{}", std::process::id()));
        fs::create_dir_all(&home).unwrap();
        TestHome(home)
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Proves startup-cache finds a cache written to `$HOME/.foo-cache` and not one written under `$XDG_CACHE_HOME`, and that its printed fix moves the cache under ~/.cache with a link the program still writes through, and its revert puts it back.
#[test]
fn startup_cache_finds_a_cache_outside_xdg_cache_home() {
    let sandbox = Sandbox::new();
    let home = TestHome::new();
    let home_dir = text_of(&home.0);
    let xdg = format!("{home_dir}/.cache");
    let env = [("HOME", home_dir), ("XDG_CACHE_HOME", xdg.as_str())];
    let trace = sandbox.path("home.ntr");
    record_script(&trace, "echo built > \"$HOME/.foo-cache\"", &env);
    let recommendations = recommend_json(&trace, &[]);
    let found: Vec<&Value> = recommendations["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["rule"] == "startup-cache")
        .collect();
    assert_eq!(found.len(), 1, "{recommendations:#}");
    let dot = format!("{home_dir}/.foo-cache");
    assert_eq!(found[0]["evidence"]["path"], dot.as_str());
    assert!(found[0]["subjects"][0]["name"].as_str().unwrap().ends_with("sh"), "{:#}", found[0]);

    let fix = run(Command::new("sh").arg("-c").arg(found[0]["fix"]["text"].as_str().unwrap()));
    assert!(fix.status.success(), "{}", stderr_of(&fix));
    let moved = format!("{home_dir}/.cache/foo-cache");
    assert_eq!(fs::read_link(&dot).unwrap(), Path::new(&moved));
    assert_eq!(fs::read_to_string(&moved).unwrap(), "built\n");
    let revert = run(Command::new("sh").arg("-c").arg(found[0]["fix"]["revert"].as_str().unwrap()));
    assert!(revert.status.success(), "{}", stderr_of(&revert));
    assert!(!fs::symlink_metadata(&dot).unwrap().file_type().is_symlink());
    assert_eq!(fs::read_to_string(&dot).unwrap(), "built\n");

    let xdg_trace = sandbox.path("xdg.ntr");
    record_script(
        &xdg_trace,
        "mkdir -p \"$XDG_CACHE_HOME/foo\" && echo built > \"$XDG_CACHE_HOME/foo/cache\"",
        &env,
    );
    let none = recommend_json(&xdg_trace, &["--rule", "startup-cache"]);
    assert_eq!(none["recommendations"], serde_json::json!([]), "{none:#}");
}

/// Writes back everything dirty, then drops the clean page cache.
fn drop_caches() {
    assert!(run(&mut Command::new("sync")).status.success(), "sync");
    fs::write("/proc/sys/vm/drop_caches", "3\n").expect("write /proc/sys/vm/drop_caches");
}

/// The runs (first page, pages) of `path` in the page cache, by
/// mincore(2): the kernel's own answer, not nixtrace's.
fn resident_runs(path: &Path) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd as _;
    let file = fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    let mut pages = vec![0u8; len.div_ceil(4096)];
    // SAFETY: a read-only mapping of the whole file, only passed to mincore.
    unsafe {
        let map =
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0);
        assert_ne!(map, libc::MAP_FAILED, "mmap {}", path.display());
        assert_eq!(libc::mincore(map, len, pages.as_mut_ptr()), 0, "mincore {}", path.display());
        libc::munmap(map, len);
    }
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (page, _) in pages.iter().enumerate().filter(|(_, p)| **p & 1 != 0) {
        match runs.last_mut() {
            Some((first, n)) if *first + *n == page as u64 => *n += 1,
            _ => runs.push((page as u64, 1)),
        }
    }
    runs
}

/// Pages of each file in the page cache, by util-linux's fincore.
fn fincore_pages(files: &[&Path]) -> Vec<u64> {
    let output =
        run(Command::new("fincore").args(["--noheadings", "--raw", "--output", "PAGES"]).args(files));
    assert!(output.status.success(), "fincore: {}", stderr_of(&output));
    String::from_utf8(output.stdout).unwrap().lines().map(|l| l.trim().parse().unwrap()).collect()
}

/// A list's lines as (runs, path).
fn list_lines(list: &str) -> Vec<(Vec<(u64, u64)>, String)> {
    list.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|line| {
            let (runs, path) = line.split_once('\t').unwrap();
            let runs = runs
                .split(',')
                .map(|run| {
                    let (first, n) = run.split_once('+').unwrap();
                    (first.parse().unwrap(), n.parse().unwrap())
                })
                .collect();
            (runs, path.to_string())
        })
        .collect()
}

/// Proves the preload list and `nixtrace preload` (boot-io): after
/// dropping the page cache, a command reads two files whole and two pages
/// of a third; the list `export --format preload` makes names exactly
/// those three, in the order they were first read, each with exactly the
/// pages the kernel then holds (mincore), and not the file nobody read.
/// With the cache dropped again, `nixtrace preload` brings exactly those
/// pages back (mincore and fincore agree), and counts a listed file that
/// is gone.
#[test]
fn preload_reads_back_what_a_cold_start_read() {
    let sandbox = Sandbox::new();
    let sizes = [("a", 50), ("b", 30), ("c", 64), ("unread", 20)];
    let files: Vec<std::path::PathBuf> = sizes
        .iter()
        .map(|(name, pages)| {
            let path = sandbox.path(name);
            fs::write(&path, vec![name.as_bytes()[0]; pages * 4096]).unwrap();
            path
        })
        .collect();
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    drop_caches();
    assert_eq!(fincore_pages(&paths), [0, 0, 0, 0], "dropping the cache left pages of the files");

    let trace = sandbox.trace_path();
    let script = format!(
        "cat {b} {a} >/dev/null; dd if={c} bs=4096 skip=10 count=2 status=none of=/dev/null",
        a = text_of(&files[0]),
        b = text_of(&files[1]),
        c = text_of(&files[2])
    );
    let output = run(record_cmd(&trace).args(["-q", "--", "sh", "-c", &script]));
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let read: Vec<Vec<(u64, u64)>> = paths.iter().map(|p| resident_runs(p)).collect();
    assert_eq!(read[0], [(0, 50)], "cat reads a whole");
    assert_eq!(read[1], [(0, 30)], "cat reads b whole");
    assert!(
        read[2].iter().any(|(first, n)| *first <= 10 && first + n >= 12),
        "dd read pages 10 and 11 of c: {:?}",
        read[2]
    );
    assert_eq!(read[3], [], "nobody read unread");

    let list_path = sandbox.path("list.preload");
    let output = run(Command::new(NIXTRACE)
        .arg("export")
        .arg(&trace)
        .args(["--format", "preload", "-o"])
        .arg(&list_path));
    assert!(output.status.success(), "export --format preload: {}", stderr_of(&output));
    let list = fs::read_to_string(&list_path).unwrap();
    assert!(list.starts_with("# nixtrace preload list 1\n"), "{list}");
    let ours: Vec<(Vec<(u64, u64)>, String)> = list_lines(&list)
        .into_iter()
        .filter(|(_, path)| path.starts_with(text_of(&sandbox.path(""))))
        .collect();
    let expected: Vec<(Vec<(u64, u64)>, String)> = [(1, &read[1]), (0, &read[0]), (2, &read[2])]
        .iter()
        .map(|(i, runs)| ((*runs).clone(), text_of(&files[*i]).to_string()))
        .collect();
    assert_eq!(ours, expected, "the list's files, in first-read order, with the pages read:\n{list}");

    // A listed file that is gone (an older generation's) is skipped and counted.
    let gone = format!("{list}0+1\t{}\n", text_of(&sandbox.path("gone")));
    fs::write(&list_path, gone).unwrap();
    drop_caches();
    assert_eq!(fincore_pages(&paths), [0, 0, 0, 0], "dropping the cache left pages of the files");
    let output = run(Command::new(NIXTRACE).arg("preload").arg(&list_path).args(["--format", "json"]));
    assert!(output.status.success(), "preload: {}", stderr_of(&output));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    let listed = list_lines(&list).len() as u64;
    assert_eq!(
        (summary["files"].as_u64(), summary["missing"].as_u64()),
        (Some(listed + 1), Some(1)),
        "{summary}"
    );
    assert_eq!(summary["read_ahead"], true);
    for (i, path) in paths.iter().enumerate() {
        assert_eq!(resident_runs(path), read[i], "{} after nixtrace preload", path.display());
    }
    let pages: Vec<u64> = read.iter().map(|runs| runs.iter().map(|(_, n)| n).sum()).collect();
    assert_eq!(fincore_pages(&paths), pages, "fincore after nixtrace preload");

    // --check counts and reads nothing.
    drop_caches();
    let output =
        run(Command::new(NIXTRACE).arg("preload").arg("--check").arg(&list_path).args(["-F", "json"]));
    assert!(output.status.success(), "preload --check: {}", stderr_of(&output));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["read_ahead"], false);
    assert_eq!(fincore_pages(&paths), [0, 0, 0, 0], "preload --check read the files");
}
