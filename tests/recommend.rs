//! End-to-end tests of `nixtrace recommend`: real programs with real
//! search paths (set with patchelf), recorded with the real probes; each
//! rule must fire on the workload built to trigger it, stay silent on its
//! close twin, and rest on evidence equal to the report's figures. The
//! printed fixes are applied and a new recording shows what they promised.
//! Needs root, and Debian's patchelf and C compiler.

mod common;

use std::{fs, path::Path, process::Command};

use common::*;
use serde_json::Value;

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
        "prog: main.o {objects}\n\tcc -o $@ $^\n%.o: %.c\n\tcc -O2 -c -o $@ $<\n",
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
