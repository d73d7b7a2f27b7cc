//! End-to-end tests of `nixtrace report` on programs in a real Nix store:
//! the fixture of `tests/nix/` (see its README.md), built by Debian's
//! nix-bin into `/nix/store` with real hashes and a real references
//! database. Its programs run with the store's glibc as their interpreter
//! and find their libraries through RUNPATHs of store paths, as on NixOS.
//! The report's packages are checked against what the fixture built, and
//! its loader figures against what that glibc says about itself
//! (`LD_DEBUG`).
//!
//! These tests need root (they load eBPF programs and build into
//! `/nix/store`) and Debian's nix-bin (`cargo xtask setup` installs it).

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::MetadataExt,
    process::Command,
};

use common::*;
use serde_json::Value;

/// A program of the fixture and what it is built from.
struct Program {
    /// Its package's attribute in tests/nix/default.nix.
    attr: &'static str,
    /// The program, inside its package.
    file: &'static str,
    /// The package of the libgreet.so.1 it links.
    greet: &'static str,
    /// The packages whose `lib` directories are its RUNPATH, in order.
    runpath: &'static [&'static str],
}

const HELLO: Program =
    Program { attr: "hello", file: "bin/hello", greet: "greet1", runpath: &["greet1", "zlib", "glibc"] };
const HELLO_PADDED: Program = Program {
    attr: "hello-padded",
    file: "bin/hello-padded",
    greet: "greet1",
    runpath: &[
        "padding-a",
        "padding-b",
        "padding-c",
        "padding-d",
        "padding-e",
        "padding-f",
        "padding-g",
        "padding-h",
        "greet1",
        "zlib",
        "glibc",
    ],
};
const HOLA: Program = Program {
    attr: "hola",
    file: "bin/hola",
    greet: "greet2",
    runpath: &["padding-a", "greet2", "padding-b", "zlib", "glibc"],
};
const PROGRAMS: [&Program; 3] = [&HELLO, &HELLO_PADDED, &HOLA];

/// The eight RUNPATH entries of hello-padded that hold nothing it needs.
const PADDING: [&str; 8] =
    ["padding-a", "padding-b", "padding-c", "padding-d", "padding-e", "padding-f", "padding-g", "padding-h"];

/// The wrapper (hello-wrapper's bin/hello) puts these packages' `lib`
/// directories on LD_LIBRARY_PATH before it execs hello.
const WRAPPER_LIBRARY_PATH: [&str; 2] = ["padding-c", "padding-d"];

/// The sonames every fixture program needs, in its DT_NEEDED order.
const NEEDED: [&str; 3] = ["libgreet.so.1", "libz.so.1", "libc.so.6"];

impl Program {
    fn path(&self, nix: &NixFixtures) -> String {
        nix.get(self.attr).file(self.file)
    }

    /// What its loader loads, in load order, and from which package: its
    /// DT_NEEDED, each found in its own package through the RUNPATH.
    fn libraries<'a>(&self, nix: &'a NixFixtures) -> Vec<(String, &'a NixPackage)> {
        [(self.greet, "lib/libgreet.so.1"), ("zlib", "lib/libz.so.1"), ("glibc", "lib/libc.so.6")]
            .into_iter()
            .map(|(attr, file)| (nix.get(attr).file(file), nix.get(attr)))
            .collect()
    }

    fn runpath(&self, nix: &NixFixtures) -> Vec<String> {
        self.runpath.iter().map(|attr| nix.get(attr).file("lib")).collect()
    }
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .collect()
}

fn execs(row: &Value) -> &Vec<Value> {
    row["execs"].as_array().unwrap_or_else(|| panic!("execs[]: {row}"))
}

fn exec_filenames(row: &Value) -> Vec<&str> {
    execs(row).iter().map(|e| string(e, "filename")).collect()
}

fn library_paths(row: &Value) -> Vec<&str> {
    let libraries =
        row["loader"]["libraries"].as_array().unwrap_or_else(|| panic!("loader.libraries[]: {row}"));
    libraries.iter().map(|l| string(l, "path")).collect()
}

/// The report's failed lookups of a process by (file name, directory).
fn failed_lookups(row: &Value) -> BTreeMap<(String, String), u64> {
    let failed = row["loader"]["failed"].as_array().unwrap_or_else(|| panic!("loader.failed[]: {row}"));
    failed
        .iter()
        .map(|f| ((string(f, "library").to_string(), string(f, "dir").to_string()), uint(f, "count")))
        .collect()
}

/// The report's `binaries[]` row for `path`.
fn binary<'a>(report: &'a Value, path: &str) -> &'a Value {
    let rows: Vec<&Value> =
        report["binaries"].as_array().expect("binaries[]").iter().filter(|b| b["path"] == path).collect();
    assert_eq!(rows.len(), 1, "one binaries[] row for {path}: {:#?}", report["binaries"]);
    rows[0]
}

/// `/nix/store/<hash>-<name>` of a path inside the store.
fn store_path_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/nix/store/")?;
    Some(format!("/nix/store/{}", rest.split('/').next()?))
}

/// Removes the sandbox's trace and LD_DEBUG logs from a previous round.
fn clear(sandbox: &Sandbox) {
    for stale in fs::read_dir(sandbox.path("")).unwrap().flatten() {
        let name = stale.file_name().to_string_lossy().into_owned();
        if name.starts_with("ld.") || stale.path() == sandbox.trace_path() {
            fs::remove_file(stale.path()).unwrap();
        }
    }
}

/// Records `sh -c 'LD_DEBUG=libs LD_DEBUG_OUTPUT=... exec COMMAND'`,
/// without cargo's LD_LIBRARY_PATH; returns the report, the row of the
/// process whose last exec was `last_program`, and that process's
/// LD_DEBUG runs (those of COMMAND and of what it exec'd).
fn record_with_ld_debug_libs(
    sandbox: &Sandbox,
    command: &str,
    last_program: &str,
) -> (Value, Value, Vec<LdDebugRun>) {
    clear(sandbox);
    let log_base = sandbox.path("ld");
    let script = format!("LD_DEBUG=libs LD_DEBUG_OUTPUT={} exec {command} >/dev/null", log_base.display());
    let recording = record_command_without_library_path(sandbox, &["sh", "-c", &script]);
    recording.assert_exit_code(0);
    recording.trace.assert_nothing_lost();
    let report = report_json(&sandbox.trace_path(), &[]);
    let row = process_running(&report, last_program).clone();
    let log_path = sandbox.path(&format!("ld.{}", uint(&row, "pid")));
    let log = fs::read_to_string(&log_path).unwrap_or_else(|e| panic!("{}: {e}", log_path.display()));
    (report, row, ld_debug_runs(&log))
}

/// Proves that for every exec and every library of each fixture program
/// (run with the store's glibc, found through RUNPATHs of store paths), the
/// report names the package the fixture built it in, with its name, version
/// and store path: `processes[].package`, `loader.libraries[].package` and
/// `binaries[].package`, and that `binaries[]` holds exactly the program and
/// those libraries, with the interpreter, RUNPATH and DT_NEEDED the fixture
/// gave them. Also that the loader probes were attached to the store's
/// loader (the trace header lists its inode).
#[test]
fn store_programs_and_libraries_are_attributed_to_their_packages() {
    let sandbox = Sandbox::new();
    let nix = nix_fixtures();
    let loader = nix.get("glibc").file("lib/ld-linux-x86-64.so.2");
    let loader_ino = fs::metadata(&loader).unwrap_or_else(|e| panic!("{loader}: {e}")).ino();
    for program in PROGRAMS {
        clear(&sandbox);
        let path = program.path(nix);
        let recording = record_command_without_library_path(&sandbox, &[&path]);
        recording.assert_exit_code(0);
        recording.trace.assert_nothing_lost();
        let loaders = recording.trace.header["loaders"].as_array().expect("header.loaders[]");
        assert!(
            loaders.iter().any(|l| l["path"] == loader.as_str() && l["ino"] == loader_ino),
            "the loader probes are not on the store's loader {loader} (inode {loader_ino}): {loaders:#?}"
        );

        let report = report_json(&sandbox.trace_path(), &[]);
        let package = nix.get(program.attr);
        let row = process_running(&report, &path);
        assert_eq!(row["package"], package.report_json(), "{path}: processes[].package");
        assert_eq!(exec_filenames(row), [path.as_str()], "{path}: its only exec");
        assert!(opt_int(&execs(row)[0], "loader_ns").is_some(), "{path}: its store loader was timed: {row}");

        let expected = program.libraries(nix);
        let libraries = row["loader"]["libraries"].as_array().expect("loader.libraries[]");
        let expected_paths: Vec<&str> = expected.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(library_paths(row), expected_paths, "{path}: libraries, in load order");
        for (library, (_, owner)) in libraries.iter().zip(&expected) {
            assert_eq!(
                library["package"],
                owner.report_json(),
                "{path}: loader.libraries[].package of {library}"
            );
        }

        let binaries: BTreeSet<&str> =
            report["binaries"].as_array().unwrap().iter().map(|b| string(b, "path")).collect();
        let wanted: BTreeSet<&str> = expected_paths.iter().copied().chain([path.as_str()]).collect();
        assert_eq!(binaries, wanted, "{path}: binaries[] is the program and its libraries");
        let main = binary(&report, &path);
        assert_eq!(main["package"], package.report_json(), "{path}: binaries[].package");
        assert_eq!(main["interpreter"], loader.as_str(), "{main}");
        assert_eq!(strings(&main["runpath"]), program.runpath(nix), "{main}");
        assert_eq!(strings(&main["needed"]), NEEDED, "{main}");
        for (library, owner) in &expected {
            let row = binary(&report, library);
            assert_eq!(row["package"], owner.report_json(), "binaries[].package of {library}");
            assert_eq!(row["error"], Value::Null, "{row}");
        }
    }
}

/// Proves that for each fixture program the libraries the report lists, in
/// order, are exactly those the store's glibc reports loading
/// (`LD_DEBUG=libs`), and that its failed lookups are that loader's failed
/// tries: the count for the exec, and every (file name, directory) pair
/// with how often it was tried, summed into `dirs_probed` per directory.
#[test]
fn store_libraries_and_failed_lookups_match_ld_debug() {
    let sandbox = Sandbox::new();
    let nix = nix_fixtures();
    for program in PROGRAMS {
        let path = program.path(nix);
        let (_, row, runs) = record_with_ld_debug_libs(&sandbox, &path, &path);
        assert_eq!(runs.len(), 1, "{path}: one loader run in the LD_DEBUG log: {runs:#?}");
        let run = &runs[0];
        assert_eq!(run.program.as_deref(), Some(path.as_str()), "{run:#?}");
        assert!(!run.failed.is_empty(), "{path}: the RUNPATH search failed somewhere: {run:#?}");

        assert_eq!(library_paths(&row), run.libraries, "{path}: libraries, in load order");
        let built: Vec<String> = program.libraries(nix).into_iter().map(|(path, _)| path).collect();
        assert_eq!(run.libraries, built, "{path}: glibc loaded what the fixture built it against");
        let execs = execs(&row);
        assert_eq!(exec_filenames(&row)[1..], [path.as_str()], "{path}: sh, then the program");
        // sh (the host's) finds libc in /etc/ld.so.cache at the first try,
        // so every failed lookup of the process is the program's.
        assert_eq!(opt_int(&execs[0], "failed_lookups"), Some(0), "{path}: sh's lookups: {row}");
        assert_eq!(
            opt_int(&execs[1], "failed_lookups"),
            Some(run.failed.len() as i64),
            "{path}: failed lookups of the exec"
        );
        assert_eq!(
            failed_lookups(&row),
            run.failed_by_library_and_dir(),
            "{path}: failed lookups by file and dir"
        );
        let mut per_dir: BTreeMap<String, u64> = BTreeMap::new();
        for ((_, dir), count) in run.failed_by_library_and_dir() {
            *per_dir.entry(dir).or_default() += count;
        }
        let dirs: BTreeMap<String, u64> = row["loader"]["dirs_probed"]
            .as_array()
            .expect("loader.dirs_probed[]")
            .iter()
            .map(|d| (string(d, "dir").to_string(), uint(d, "failed_lookups")))
            .collect();
        assert_eq!(dirs, per_dir, "{path}: dirs_probed");
    }
}

/// Proves the report tells the cost of useless RUNPATH entries: the program
/// with eight store paths that hold nothing it needs before the ones that
/// do loads the same libraries as its twin with the minimal RUNPATH, and
/// fails exactly the twin's lookups plus, in each of the eight `lib`
/// directories, one lookup of each library it needs (and, for the first,
/// of the hardware-capability subdirectories there); the twin probes none
/// of them.
#[test]
fn useless_runpath_entries_cost_exactly_their_lookups() {
    let sandbox = Sandbox::new();
    let nix = nix_fixtures();
    let mut rows = Vec::new();
    for program in [&HELLO, &HELLO_PADDED] {
        clear(&sandbox);
        let path = program.path(nix);
        let recording = record_command_without_library_path(&sandbox, &[&path]);
        recording.assert_exit_code(0);
        recording.trace.assert_nothing_lost();
        let report = report_json(&sandbox.trace_path(), &[]);
        rows.push(process_running(&report, &path).clone());
    }
    let (minimal, padded) = (&rows[0], &rows[1]);
    assert_eq!(library_paths(padded), library_paths(minimal), "the twins load the same libraries");

    let padding_dirs: Vec<String> = PADDING.iter().map(|attr| nix.get(attr).file("lib")).collect();
    let in_padding = |dir: &str| {
        padding_dirs
            .iter()
            .any(|p| dir.strip_prefix(p.as_str()).is_some_and(|r| r.is_empty() || r.starts_with('/')))
    };
    let minimal_failed = failed_lookups(minimal);
    assert!(!minimal_failed.is_empty(), "even the minimal RUNPATH has subdirectories to miss: {minimal}");
    assert!(
        minimal_failed.keys().all(|(_, dir)| !in_padding(dir)),
        "the minimal twin probed a padding directory: {minimal_failed:#?}"
    );
    let (padding_failed, rest): (BTreeMap<_, _>, BTreeMap<_, _>) =
        failed_lookups(padded).into_iter().partition(|((_, dir), _)| in_padding(dir));
    assert_eq!(rest, minimal_failed, "beyond the padding, the padded twin searched as the minimal one");
    for dir in &padding_dirs {
        for library in NEEDED {
            assert_eq!(
                padding_failed.get(&(library.to_string(), dir.clone())),
                Some(&1),
                "{library} was looked for once in {dir}: {padding_failed:#?}"
            );
        }
    }
    let lookups = |row: &Value| uint(&row["loader"], "failed_lookups");
    let padding_total: u64 = padding_failed.values().sum();
    assert_eq!(lookups(padded), lookups(minimal) + padding_total, "{padded}");
}

/// Proves the loader time the report gives for each fixture program (whose
/// loader is the store's glibc) agrees with that glibc's own measurement of
/// the same run (`LD_DEBUG=statistics`), within the tolerance the Debian
/// programs are held to (25% or 0.2 ms, in one of three runs each: see
/// `agreeing_loader_time`), with the counter's rate measured on the
/// store's loader.
#[test]
fn store_loader_time_matches_ld_debug_statistics() {
    let sandbox = Sandbox::new();
    let nix = nix_fixtures();
    let ticks_per_ns = ld_debug_ticks_per_ns(&sandbox, &HELLO.path(nix));
    assert!(ticks_per_ns > 0.01, "implausible LD_DEBUG counter rate {ticks_per_ns} ticks/ns");
    let mut comparisons = Vec::new();
    for program in PROGRAMS {
        let path = program.path(nix);
        comparisons.push(agreeing_loader_time(&path, || {
            clear(&sandbox);
            // The statistics go to stderr (a pipe), which never makes the
            // loader wait between glibc's measurement and nixtrace's.
            let script = format!("LD_DEBUG=statistics exec {path} >/dev/null");
            let recording = record_command_without_library_path(&sandbox, &["sh", "-c", &script]);
            recording.assert_exit_code(0);
            recording.trace.assert_nothing_lost();
            let report = report_json(&sandbox.trace_path(), &[]);
            let row = process_running(&report, &path);
            let glibc_ns = startup_ticks(&recording.stderr) as f64 / ticks_per_ns;
            let exec = execs(row).last().unwrap();
            let ours = opt_int(exec, "loader_ns").expect("loader time") as f64;
            let to_entry = opt_int(exec, "to_entry_ns").expect("the program was entered") as f64;
            assert!(to_entry > ours, "{path}: exec to entry {to_entry} ns includes the loader's {ours} ns");
            assert!(
                row["loader"]["init_ns"].as_u64() > Some(0),
                "{path}: initialisers ran: {}",
                row["loader"]
            );
            (ours, glibc_ns)
        }));
    }
    // Shown with --nocapture: how close each one was.
    eprintln!("LD_DEBUG counter: {ticks_per_ns:.3} ticks/ns\n{}", comparisons.join("\n"));
}

/// Proves a makeWrapper-style wrapper and the program it execs are both in
/// the report: the process execs the wrapper script, then the program, each
/// attributed to its own package; the program's failed lookups include each
/// LD_LIBRARY_PATH directory the wrapper set, once per library it needs;
/// and each exec's failed lookups, the libraries and every failed
/// (file name, directory) are what glibc reports for the same run.
#[test]
fn wrapper_and_the_program_it_execs_are_both_traced() {
    let sandbox = Sandbox::new();
    let nix = nix_fixtures();
    let wrapper_package = nix.get("hello-wrapper");
    let wrapper = wrapper_package.file("bin/hello");
    let hello = HELLO.path(nix);
    let library_path: Vec<String> =
        WRAPPER_LIBRARY_PATH.iter().map(|attr| nix.get(attr).file("lib")).collect();
    let script = fs::read_to_string(&wrapper).unwrap_or_else(|e| panic!("{wrapper}: {e}"));
    assert!(
        script.contains(&format!("export LD_LIBRARY_PATH='{}'", library_path.join(":"))),
        "the wrapper sets another LD_LIBRARY_PATH than this test expects:\n{script}"
    );

    let (report, row, runs) = record_with_ld_debug_libs(&sandbox, &wrapper, &hello);
    assert_eq!(
        exec_filenames(&row)[1..],
        [wrapper.as_str(), hello.as_str()],
        "sh, the wrapper, then hello: {row}"
    );
    assert_eq!(row["package"], nix.get("hello").report_json(), "processes[].package");
    assert_eq!(binary(&report, &wrapper)["package"], wrapper_package.report_json(), "the wrapper's package");
    assert_eq!(binary(&report, &hello)["package"], nix.get("hello").report_json(), "hello's package");

    // The wrapper's interpreter (the host's /bin/sh), then hello.
    let programs: Vec<Option<&str>> = runs.iter().map(|r| r.program.as_deref()).collect();
    assert_eq!(programs, [Some("/bin/sh"), Some(hello.as_str())], "LD_DEBUG runs: {runs:#?}");
    let execs = execs(&row);
    assert_eq!(opt_int(&execs[0], "failed_lookups"), Some(0), "sh -c: {row}");
    for (exec, run) in execs[1..].iter().zip(&runs) {
        assert_eq!(opt_int(exec, "failed_lookups"), Some(run.failed.len() as i64), "{exec}: failed lookups");
    }
    assert_eq!(library_paths(&row), runs[1].libraries, "hello's libraries, in load order");
    let expected = tally_failed(runs.iter().flat_map(|r| r.failed.iter()));
    let failed = failed_lookups(&row);
    assert_eq!(failed, expected, "failed lookups by file and dir, over the process");
    for dir in &library_path {
        for library in NEEDED {
            assert_eq!(
                failed.get(&(library.to_string(), dir.clone())),
                Some(&1),
                "{library} was looked for once in the wrapper's {dir}: {failed:#?}"
            );
        }
    }
}

/// Proves two builds of one library (libgreet.so.1 from greet-1.0 and from
/// greet-2.0) pulled in by two programs in one trace are told apart: each
/// program's library row names its own build's path and package, and
/// `binaries[]` has a row for each, with the same soname and different
/// build ids.
#[test]
fn two_builds_of_one_library_are_told_apart() {
    let sandbox = Sandbox::new();
    let nix = nix_fixtures();
    let (hello, hola) = (HELLO.path(nix), HOLA.path(nix));
    let script = format!("{hello} && {hola}");
    let recording = record_command_without_library_path(&sandbox, &["sh", "-c", &script]);
    recording.assert_exit_code(0);
    recording.trace.assert_nothing_lost();
    let report = report_json(&sandbox.trace_path(), &[]);

    let mut build_ids = BTreeSet::new();
    for (path, attr) in [(&hello, "greet1"), (&hola, "greet2")] {
        let greet = nix.get(attr);
        let library = greet.file("lib/libgreet.so.1");
        let row = process_running(&report, path);
        let rows: Vec<&Value> = row["loader"]["libraries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| string(l, "path").ends_with("/libgreet.so.1"))
            .collect();
        assert_eq!(rows.len(), 1, "{path} loaded one libgreet.so.1: {row}");
        assert_eq!(rows[0]["path"], library.as_str(), "{path}: its own build of libgreet");
        assert_eq!(rows[0]["package"], greet.report_json(), "{path}: its own build's package");
        let facts = binary(&report, &library);
        assert_eq!(facts["package"], greet.report_json(), "{facts}");
        assert_eq!(facts["soname"], "libgreet.so.1", "{facts}");
        build_ids.insert(string(facts, "build_id").to_string());
    }
    assert_eq!(build_ids.len(), 2, "the two builds differ: {build_ids:?}");
}

/// Proves the static facts the report reads from store binaries name the
/// store paths Nix's own database records as their references: for every
/// program and library of the fixture programs, the store paths named by
/// its interpreter and RUNPATH are exactly `nix-store --query
/// --references` of its package (itself left out).
#[test]
fn elf_facts_name_the_references_nix_recorded() {
    let sandbox = Sandbox::new();
    let nix = nix_fixtures();
    let paths: Vec<String> = PROGRAMS.iter().map(|p| p.path(nix)).collect();
    let recording = record_command_without_library_path(&sandbox, &["sh", "-c", &paths.join(" && ")]);
    recording.assert_exit_code(0);
    recording.trace.assert_nothing_lost();
    let report = report_json(&sandbox.trace_path(), &[]);

    let mut checked = 0;
    for row in report["binaries"].as_array().unwrap() {
        let path = string(row, "path");
        let Some(own) = store_path_of(path) else { continue };
        let mut named: BTreeSet<String> =
            strings(&row["runpath"]).into_iter().filter_map(store_path_of).collect();
        named.extend(opt_string(row, "interpreter").and_then(store_path_of));
        named.remove(&own);

        let output = run(Command::new("nix-store").args(NIX_OPTIONS).args(["--query", "--references", &own]));
        assert!(output.status.success(), "nix-store --query --references {own}: {}", stderr_of(&output));
        let mut references: BTreeSet<String> =
            String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect();
        references.remove(&own);
        assert_eq!(named, references, "{path}: store paths named by its ELF facts vs. Nix's references");
        checked += 1;
    }
    // Three programs, two builds of libgreet, zlib and glibc's libc.
    assert_eq!(checked, 7, "{:#?}", report["binaries"]);
}

/// `nixtrace recommend TRACE --format json ARGS`, parsed.
fn recommend_json(trace: &std::path::Path, args: &[&str]) -> Value {
    let output =
        run(Command::new(NIXTRACE).arg("recommend").arg(trace).args(["--format", "json"]).args(args));
    assert!(output.status.success(), "recommend: {}", stderr_of(&output));
    serde_json::from_slice(&output.stdout).expect("recommend --format json prints JSON")
}

/// Records `sh -c SCRIPT` without cargo's LD_LIBRARY_PATH; returns the report.
fn record_script(sandbox: &Sandbox, script: &str) -> Value {
    let recording = record_command_without_library_path(sandbox, &["sh", "-c", script]);
    recording.assert_exit_code(0);
    recording.trace.assert_nothing_lost();
    report_json(&sandbox.trace_path(), &[])
}

/// Proves the per-package figures on real store paths: hello-padded's
/// package caused exactly the failed lookups its RUNPATH put in the search
/// (the report's failed lookups whose searcher is its program), its
/// processes and execs are counted, each library's package mapped what
/// the loader mapped from it, the store graph gives each package its
/// references as `nix-store --query --references` does, and `--package`
/// narrows the report to the processes of that package.
#[test]
fn packages_count_what_they_cost_and_what_their_runpath_caused() {
    let sandbox = Sandbox::new();
    let nix = nix_fixtures();
    let (hello, padded) = (HELLO.path(nix), HELLO_PADDED.path(nix));
    let report = record_script(&sandbox, &format!("{hello} && {padded}"));
    assert_eq!(report["store_graph"]["status"], "complete", "{}", report["store_graph"]);
    let package = |attr: &str| {
        let store_path = nix.get(attr).store_path.as_str();
        report["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["store_path"] == store_path)
            .unwrap_or_else(|| panic!("no packages[] row for {store_path}: {:#}", report["packages"]))
    };
    let row = process_running(&report, &padded);
    let caused: u64 = row["loader"]["failed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["searcher"] == padded.as_str())
        .map(|f| uint(f, "count"))
        .sum();
    assert!(caused > 0);
    let p = package("hello-padded");
    assert_eq!((uint(p, "processes"), uint(p, "execs")), (1, 1));
    assert_eq!(uint(p, "failed_lookups_caused"), caused);
    assert_eq!(uint(p, "failed_lookups"), uint(&row["loader"], "failed_lookups"));
    assert_eq!(uint(p, "loader_ns"), uint(&row["loader"], "total_ns"));
    // zlib was loaded by both programs: what the loader mapped from it.
    let mapped: u64 = [&hello, &padded]
        .iter()
        .map(|program| {
            let row = process_running(&report, program);
            let libraries = row["loader"]["libraries"].as_array().unwrap();
            let zlib = libraries.iter().find(|l| l["package"]["name"] == "zlib").unwrap();
            uint(zlib, "exec_bytes")
        })
        .sum();
    assert_eq!(uint(package("zlib"), "mapped_bytes"), mapped);
    for attr in ["hello", "hello-padded", "greet1", "zlib"] {
        let store_path = nix.get(attr).store_path.clone();
        let output = run(Command::new("nix-store").args(["--query", "--references", &store_path]));
        let mut expected: Vec<String> =
            String::from_utf8(output.stdout).unwrap().lines().map(str::to_string).collect();
        expected.sort();
        let mut references: Vec<String> =
            strings(&package(attr)["references"]).iter().map(|s| s.to_string()).collect();
        references.sort();
        assert_eq!(references, expected, "{attr}'s references");
        assert!(package(attr)["deriver"].as_str().is_some_and(|d| d.ends_with(".drv")), "{attr}'s deriver");
    }
    // --package narrows to the processes of that package.
    let narrowed = report_json(&sandbox.trace_path(), &["--package", "hello-padded-1.0"]);
    let exes: Vec<&str> =
        narrowed["processes"].as_array().unwrap().iter().map(|p| string(p, "exe")).collect();
    assert_eq!(exes, [padded.as_str()]);
}

/// Proves the closure check: hello run with LD_LIBRARY_PATH pointing at
/// greet-2.0 loads that libgreet, which is outside hello's closure and is
/// flagged so; its zlib and glibc are inside it, pulled in by the
/// packages of hello's closure that refer to them.
#[test]
fn a_library_from_outside_the_programs_closure_is_flagged() {
    let sandbox = Sandbox::new();
    let nix = nix_fixtures();
    let hello = HELLO.path(nix);
    let greet2 = nix.get("greet2");
    let report = record_script(&sandbox, &format!("LD_LIBRARY_PATH={} exec {hello}", greet2.file("lib")));
    let row = process_running(&report, &hello);
    let libraries = row["loader"]["libraries"].as_array().unwrap();
    let by_package = |attr: &str| {
        let store_path = nix.get(attr).store_path.as_str();
        libraries
            .iter()
            .find(|l| l["package"]["store_path"] == store_path)
            .unwrap_or_else(|| panic!("{attr}: {libraries:#?}"))
    };
    assert_eq!(by_package("greet2")["outside_closure"], true);
    assert_eq!(by_package("zlib")["outside_closure"], false);
    assert_eq!(by_package("glibc")["outside_closure"], false);
    let mut pulled: Vec<&str> = strings(&by_package("zlib")["pulled_in_by"]);
    pulled.sort();
    let mut expected = vec![nix.get("hello").store_path.as_str(), nix.get("greet1").store_path.as_str()];
    expected.sort();
    assert_eq!(pulled, expected, "hello and greet-1.0 refer to zlib");
}

/// Proves duplicate-libraries: hello and hola in one trace load
/// libgreet.so.1 from greet-1.0 and greet-2.0; the recommendation names
/// both copies with the package that pulled each in (from the store
/// graph) and overrides the other copy's referrer; hello alone gets none.
#[test]
fn duplicate_libraries_names_both_builds_and_who_pulled_them_in() {
    let sandbox = Sandbox::new();
    let nix = nix_fixtures();
    let (hello, hola) = (HELLO.path(nix), HOLA.path(nix));
    record_script(&sandbox, &format!("{hello} && {hola}"));
    let found = recommend_json(&sandbox.trace_path(), &["--rule", "duplicate-libraries"]);
    let found = found["recommendations"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:#?}");
    let evidence = &found[0]["evidence"];
    assert_eq!(evidence["soname"], "libgreet.so.1");
    let copies = evidence["copies"].as_array().unwrap();
    let copy =
        |attr: &str| copies.iter().find(|c| c["store_path"] == nix.get(attr).store_path.as_str()).unwrap();
    assert_eq!(strings(&copy("greet1")["pulled_in_by"]), [nix.get("hello").store_path.as_str()]);
    assert_eq!(strings(&copy("greet2")["pulled_in_by"]), [nix.get("hola").store_path.as_str()]);
    assert_eq!(strings(&copy("greet1")["programs"]), [hello.as_str()]);
    assert_eq!(
        uint(copy("greet2"), "size_bytes"),
        fs::metadata(nix.get("greet2").file("lib/libgreet.so.1")).unwrap().len()
    );
    let fix = string(&found[0]["fix"], "text");
    assert!(
        fix.contains("hola = prev.hola.override { greet = final.greet; };")
            || fix.contains("hello = prev.hello.override { greet = final.greet; };"),
        "{fix}"
    );

    let alone = Sandbox::new();
    record_script(&alone, &hello);
    assert_eq!(
        recommend_json(&alone.trace_path(), &["--rule", "duplicate-libraries"])["recommendations"],
        serde_json::json!([])
    );
}

/// Proves library-search on a store program: hello-padded's eight padding
/// entries are the ones to drop, as a Nix expression for its package
/// (postFixup with the new RUNPATH); the same program copied out of the
/// store gets the patchelf command, which, run, leaves exactly the failed
/// lookups the evidence predicted; its twin hello gets no recommendation.
#[test]
fn library_search_on_a_store_program() {
    let sandbox = Sandbox::new();
    let nix = nix_fixtures();
    let padded = HELLO_PADDED.path(nix);
    record_script(&sandbox, &padded);
    let found = recommend_json(&sandbox.trace_path(), &["--rule", "library-search"]);
    let found = found["recommendations"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:#?}");
    let evidence = &found[0]["evidence"];
    let useless: Vec<&str> =
        evidence["useless_entries"].as_array().unwrap().iter().map(|e| string(e, "entry")).collect();
    let padding: Vec<String> = PADDING.iter().map(|attr| nix.get(attr).file("lib")).collect();
    assert_eq!(useless, padding);
    let new: Vec<String> = ["greet1", "zlib", "glibc"].iter().map(|attr| nix.get(attr).file("lib")).collect();
    assert_eq!(strings(&evidence["new_entries"]), new);
    assert_eq!(found[0]["fix"]["kind"], "nix-expression");
    let text = string(&found[0]["fix"], "text");
    assert!(
        text.contains(&format!("patchelf --set-rpath {} $out/bin/hello-padded", new.join(":"))),
        "{text}"
    );

    // Out of the store, the command form, applied.
    let copy = sandbox.path("hello-padded");
    fs::copy(&padded, &copy).unwrap();
    let copied = Sandbox::new();
    record_script(&copied, text_of(&copy));
    let found = recommend_json(&copied.trace_path(), &["--rule", "library-search"]);
    let r = &found["recommendations"][0];
    assert_eq!(r["fix"]["kind"], "command", "{found:#}");
    let applied = run(Command::new("sh").arg("-c").arg(string(&r["fix"], "text")));
    assert!(applied.status.success(), "{}", stderr_of(&applied));
    let after = Sandbox::new();
    let report = record_script(&after, text_of(&copy));
    let row = process_running(&report, text_of(&copy));
    assert_eq!(uint(&row["loader"], "failed_lookups"), uint(&r["evidence"], "remaining_failed_lookups"));

    let twin = Sandbox::new();
    record_script(&twin, &HELLO.path(nix));
    assert_eq!(
        recommend_json(&twin.trace_path(), &["--rule", "library-search"])["recommendations"],
        serde_json::json!([])
    );
}

/// `nixtrace flamegraph TRACE --folded ARGS`: stack -> count.
fn folded(trace: &std::path::Path, args: &[&str]) -> BTreeMap<String, u64> {
    let output = run(Command::new(NIXTRACE).arg("flamegraph").arg(trace).arg("--folded").args(args));
    assert!(output.status.success(), "flamegraph: {}", stderr_of(&output));
    let mut stacks = BTreeMap::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let (stack, count) = line.rsplit_once(' ').unwrap();
        *stacks.entry(stack.to_string()).or_insert(0) += count.parse::<u64>().unwrap();
    }
    stacks
}

/// Proves the packages flamegraph and the diff per package: the packages
/// kind draws the startup kind's total, under each process's package
/// (hello-1.0 and hola-2.0 among them, store hashes elided); and a diff of
/// hello against hello with LD_LIBRARY_PATH full of padding directories
/// reports hello-1.0's failed lookups growing by exactly the difference of
/// the two reports.
#[test]
fn packages_flamegraph_and_diff_per_package() {
    let sandbox = Sandbox::new();
    let nix = nix_fixtures();
    let (hello, hola) = (HELLO.path(nix), HOLA.path(nix));
    record_script(&sandbox, &format!("{hello} && {hola}"));
    let trace = sandbox.trace_path();
    let packages = folded(&trace, &["--kind", "packages"]);
    let startup = folded(&trace, &["--kind", "startup"]);
    assert_eq!(packages.values().sum::<u64>(), startup.values().sum::<u64>());
    let roots: BTreeSet<&str> = packages.keys().map(|k| k.split(';').next().unwrap()).collect();
    assert!(roots.contains("hello-1.0") && roots.contains("hola-2.0"), "{roots:?}");

    let before = Sandbox::new();
    let report_before = record_script(&before, &hello);
    let after = Sandbox::new();
    let padding: Vec<String> = PADDING.iter().map(|attr| nix.get(attr).file("lib")).collect();
    let report_after = record_script(&after, &format!("LD_LIBRARY_PATH={} exec {hello}", padding.join(":")));
    let lookups = |report: &Value| uint(&process_running(report, &hello)["loader"], "failed_lookups");
    let output = run(Command::new(NIXTRACE)
        .arg("diff")
        .arg(before.trace_path())
        .arg(after.trace_path())
        .args(["-F", "json"]));
    assert!(output.status.success(), "{}", stderr_of(&output));
    let diff: Value = serde_json::from_slice(&output.stdout).unwrap();
    let change = diff["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["group"] == "hello-1.0" && c["metric"] == "failed_lookups")
        .unwrap_or_else(|| panic!("no package change: {:#}", diff["packages"]));
    assert_eq!(change["scope"], "package");
    assert_eq!(
        (uint(change, "before"), uint(change, "after")),
        (lookups(&report_before), lookups(&report_after))
    );
    assert!(uint(change, "after") > uint(change, "before"));
}
