//! End-to-end tests of `nixtrace export --format parquet`, read back by a
//! real engine: DuckDB, from the `duckdb` wheel that `cargo xtask setup`
//! installs into a venv in cargo's target directory (`duckdb-venv/`), run
//! by `tests/parquet/query.py`. Three real recordings of different
//! workloads (a program in a Nix store path whose RUNPATH misses, a shell
//! running several programs, a read from disk) are exported, and SQL over
//! the files must give exactly what `nixtrace report --format json` says
//! of each trace, and their sums over all of them. The fleet queries of
//! docs/fleet.md (docs/fleet.sql) run over the same files.
//!
//! Needs root (the recordings load eBPF programs), Debian's python3-venv,
//! patchelf and C compiler, and the duckdb wheel (`cargo xtask setup`).
//! The store program lives in `/nix/store/<pid padded to 32>-nixtrace-parquet-test-1.0`
//! while the test runs, and is removed after it.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    os::unix::io::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
};

use common::*;
use serde_json::{Value, json};

const QUERY_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/parquet/query.py");
const FLEET_SQL: &str = include_str!("../docs/fleet.sql");
const FLEET_CLICKHOUSE: &str = include_str!("../docs/fleet-clickhouse.sql");
const FLEET_SPARK: &str = include_str!("../docs/fleet-spark.sql");
const ENGINES_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/parquet/engines.py");
const FLEET_DOC: &str = include_str!("../docs/fleet.md");
const SYSTEM_LIBS: &str = "/lib/x86_64-linux-gnu";

/// The venv's python, with the duckdb wheel.
fn duckdb_python() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target/tmp has a parent");
    let python = target.join("duckdb-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask setup`, which installs the duckdb wheel there",
        python.display()
    );
    python
}

/// Runs `setup`, then each of `queries`, with DuckDB in `cwd`; the rows of
/// each query by name.
fn duckdb(cwd: &Path, setup: &[String], queries: &[(&str, String)]) -> BTreeMap<String, Vec<Value>> {
    let request = json!({
        "cwd": text_of(cwd),
        "setup": setup,
        "queries": queries.iter().map(|(n, q)| (n.to_string(), Value::from(q.as_str()))).collect::<serde_json::Map<_, _>>(),
    });
    let file = cwd.join("request.json");
    fs::write(&file, request.to_string()).unwrap();
    let output = run(Command::new(duckdb_python()).arg(QUERY_SCRIPT).arg(&file));
    assert!(output.status.success(), "DuckDB: {}", stderr_of(&output));
    let answers: Value = serde_json::from_slice(&output.stdout).expect("query.py prints JSON");
    answers
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, answer)| (name.clone(), answer["rows"].as_array().unwrap().clone()))
        .collect()
}

/// One query's rows.
fn sql(cwd: &Path, query: &str) -> Vec<Value> {
    duckdb(cwd, &[], &[("q", query.to_string())]).remove("q").unwrap()
}

/// A Nix store path made by hand for the test, removed when dropped (with
/// /nix/store and /nix when the test made them).
struct StorePackage {
    root: PathBuf,
    made: Vec<PathBuf>,
}

impl StorePackage {
    fn new() -> StorePackage {
        let made =
            ["/nix", "/nix/store"].iter().map(PathBuf::from).filter(|d| !d.exists()).collect::<Vec<_>>();
        // Digits are nix-base32, so a pid padded to 32 is a valid hash.
        let root = PathBuf::from(format!("/nix/store/{:0>32}-nixtrace-parquet-test-1.0", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for dir in ["bin", "lib/empty-a", "lib/empty-b"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        StorePackage { root, made }
    }

    fn store_path(&self) -> &str {
        text_of(&self.root)
    }
}

impl Drop for StorePackage {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
        for dir in self.made.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// A recorded trace and its JSON report.
struct Recorded {
    trace: PathBuf,
    report: Value,
}

/// Records `command`, which must exit with `code`.
fn record(trace: &Path, command: &[&str], code: i32) -> Recorded {
    let _ = fs::remove_file(trace);
    // cargo test sets LD_LIBRARY_PATH, which the loader would search first.
    let output = run(record_cmd(trace).env_remove("LD_LIBRARY_PATH").arg("-q").arg("--").args(command));
    assert_eq!(output.status.code(), Some(code), "record {command:?}: {}", stderr_of(&output));
    Recorded { trace: trace.to_path_buf(), report: report_json(trace, &[]) }
}

/// Three recordings of different workloads: a program in a store path
/// whose RUNPATH has two empty entries, a chain of three processes that
/// exec it again (its exit status counts them: 10); a
/// shell running ls, python and env with a missing LD_LIBRARY_PATH; and a
/// read of a 4 MiB file whose pages were dropped from the cache, then a
/// one-second sleep (so this trace is the longest).
fn record_three(sandbox: &Sandbox, store: &StorePackage) -> Vec<Recorded> {
    let program = store.root.join("bin/workload");
    fs::copy(sandbox.build_workload(), &program).unwrap();
    let runpath = format!("{0}/lib/empty-a:{0}/lib/empty-b:{SYSTEM_LIBS}", store.store_path());
    let output = run(Command::new("patchelf").arg("--set-rpath").arg(&runpath).arg(&program));
    assert!(output.status.success(), "patchelf: {}", stderr_of(&output));

    let data = sandbox.path("cold.bin");
    {
        let mut file = fs::File::create(&data).unwrap();
        file.write_all(&vec![7u8; 4 << 20]).unwrap();
        file.sync_all().unwrap();
        // SAFETY: plain syscall on a descriptor we own.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise");
    }
    let script = "ls / >/dev/null; python3 -c pass; /usr/bin/env LD_LIBRARY_PATH=/opt/none /usr/bin/true";
    let cat = format!("cat {} >/dev/null; sleep 1", text_of(&data));
    vec![
        record(&sandbox.path("store.ntr"), &[text_of(&program), "chain", "3"], 10),
        record(&sandbox.path("shell.ntr"), &["/bin/sh", "-c", script], 0),
        record(&sandbox.path("cold.ntr"), &["/bin/sh", "-c", &cat], 0),
    ]
}

fn export(traces: &[&Path], dir: &Path, extra: &[&str]) {
    let output = run(Command::new(NIXTRACE)
        .arg("export")
        .args(traces)
        .args(["--format", "parquet", "-o"])
        .arg(dir)
        .args(extra));
    assert!(output.status.success(), "export: {}", stderr_of(&output));
}

fn u(value: &Value) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("not an unsigned integer: {value}"))
}

fn array(value: &Value) -> &Vec<Value> {
    value.as_array().unwrap_or_else(|| panic!("not an array: {value}"))
}

/// What SQL must give for one trace, from its report: (query, rows).
/// `traced` is what the trace is of: "command" or "boot".
fn expected_of(id: &str, r: &Value, traced: &str) -> Vec<(String, String, Vec<Value>)> {
    let processes = array(&r["processes"]);
    let execs: u64 = processes.iter().map(|p| array(&p["execs"]).len() as u64).sum();
    let mut rows_by_process: Vec<Value> = processes
        .iter()
        .map(|p| {
            json!([
                p["pid"],
                p["start_ns"],
                p["exe"],
                p["unit"],
                p["wall_ns"],
                array(&p["execs"]).len(),
                p["loader"].get("total_ns").cloned().unwrap_or(Value::Null),
                p["loader"].get("failed_lookups").cloned().unwrap_or(Value::Null),
                p["io"]["disk_read_bytes"],
                p["time"]["on_cpu_ns"],
            ])
        })
        .collect();
    rows_by_process.sort_by_key(|row| (u(&row[0]), u(&row[1])));
    let units = |f: &dyn Fn(&Value) -> Value| -> Vec<Value> {
        let mut rows: Vec<Value> = array(&r["units"]).iter().map(f).collect();
        rows.sort_by_key(|row| row[0].as_str().unwrap().to_string());
        rows
    };
    let mut caused: Vec<Value> = array(&r["packages"])
        .iter()
        .filter(|p| u(&p["failed_lookups_caused"]) > 0)
        .map(|p| json!([p["store_path"], p["failed_lookups_caused"]]))
        .collect();
    caused.sort_by_key(|row| row[0].as_str().unwrap().to_string());
    let mut files: Vec<Value> = array(&r["files"])
        .iter()
        .map(|f| json!([f["dev"], f["ino"], f["path"], f["disk_read_bytes"], f["read_bytes"]]))
        .collect();
    files.sort_by_key(|row| (u(&row[0]), u(&row[1])));
    let mut libraries: Vec<Value> = processes
        .iter()
        .flat_map(|p| {
            p["loader"]["libraries"].as_array().into_iter().flatten().enumerate().map(move |(i, l)| {
                json!([
                    p["pid"],
                    p["start_ns"],
                    i,
                    l["path"],
                    l["package"].get("store_path").cloned().unwrap_or(Value::Null),
                    l["exec_bytes"]
                ])
            })
        })
        .collect();
    libraries.sort_by_key(|row| (u(&row[0]), u(&row[1]), u(&row[2])));
    let recommendations: Vec<Value> = array(&r["recommendations"])
        .iter()
        .map(|rec| {
            json!([
                rec["rule"],
                rec["saving"]["time_ns"],
                rec["subjects"].as_array().unwrap().iter().map(|s| s["name"].clone()).collect::<Vec<_>>()
            ])
        })
        .collect();
    let header = &r["header"];
    let w = format!("WHERE trace_id = '{id}'");
    vec![
        (
            "trace".into(),
            format!(
                "SELECT host, boot_id, duration_ns, events, lost_events, traced, command, cut_short FROM 'all/traces.parquet' {w}"
            ),
            vec![json!([
                header["host"],
                header["boot_id"],
                r["duration_ns"],
                r["events"],
                r["lost_events"],
                traced,
                if header["command"].is_null() { json!([]) } else { header["command"].clone() },
                !r["cut_short"].is_null()
            ])],
        ),
        (
            "process and exec counts".into(),
            format!(
                "SELECT count(*), sum(execs), (SELECT count(*) FROM 'all/execs.parquet' {w}) FROM 'all/processes.parquet' {w}"
            ),
            vec![json!([processes.len(), execs, execs])],
        ),
        (
            "processes".into(),
            format!(
                "SELECT pid, start_ns, exe, unit, wall_ns, execs, loader_ns, failed_lookups, disk_read_bytes, on_cpu_ns FROM 'all/processes.parquet' {w} ORDER BY pid, start_ns"
            ),
            rows_by_process,
        ),
        (
            "loader time per unit, summed over processes".into(),
            format!(
                "SELECT unit, coalesce(sum(loader_ns), 0) FROM 'all/processes.parquet' {w} GROUP BY unit ORDER BY unit"
            ),
            units(&|u| json!([u["name"], u["loader_ns"]])),
        ),
        (
            "units".into(),
            format!(
                "SELECT unit, processes, execs, loader_ns, failed_lookups, disk_read_bytes FROM 'all/units.parquet' {w} ORDER BY unit"
            ),
            units(&|u| {
                json!([
                    u["name"],
                    u["processes"],
                    u["execs"],
                    u["loader_ns"],
                    u["failed_lookups"],
                    u["io"]["disk_read_bytes"]
                ])
            }),
        ),
        (
            "failed lookups per package whose RUNPATH caused them".into(),
            format!(
                "SELECT package_store_path, sum(count) FROM 'all/failed_lookups.parquet' {w} AND package_store_path IS NOT NULL GROUP BY 1 ORDER BY 1"
            ),
            caused,
        ),
        (
            "disk read per file".into(),
            format!(
                "SELECT dev, ino, path, disk_read_bytes, read_bytes FROM 'all/files.parquet' {w} ORDER BY dev, ino"
            ),
            files,
        ),
        (
            "libraries".into(),
            format!(
                "SELECT pid, process_start_ns, load_order, path, package_store_path, exec_bytes FROM 'all/libraries.parquet' {w} ORDER BY pid, process_start_ns, load_order"
            ),
            libraries,
        ),
        (
            "recommendations, in the report's order".into(),
            format!("SELECT rule, saving_ns, subjects FROM 'all/recommendations.parquet' {w} ORDER BY rank"),
            recommendations,
        ),
    ]
}

/// Runs `checks` (name, SQL, the rows it must give) in one DuckDB run.
fn assert_queries(cwd: &Path, checks: &[(String, String, Vec<Value>)]) {
    let queries: Vec<(&str, String)> = checks.iter().map(|(name, q, _)| (name.as_str(), q.clone())).collect();
    let answers = duckdb(cwd, &[], &queries);
    for (name, query, expected) in checks {
        assert_eq!(&answers[name], expected, "{name}: {query}");
    }
}

/// Proves every table holds the report's figures, exactly: over three
/// real recordings of different workloads, exported together into one
/// directory and each into its own, SQL run by DuckDB gives for each trace
/// the report's process and exec counts, each process's figures, loader
/// time per unit, failed lookups per package whose RUNPATH caused them,
/// disk read per file, the libraries in load order and the
/// recommendations; a query across all the per-trace directories at once
/// equals the sum of the three reports; an export of a trace again gives it
/// the same id; `--events` has a row for each open and mmap `dump` shows;
/// and the files have the promised types, encodings and metadata.
#[test]
fn every_table_gives_the_figures_of_the_report() {
    let sandbox = Sandbox::new();
    let store = StorePackage::new();
    let recorded = record_three(&sandbox, &store);
    let root = sandbox.path("");
    let traces: Vec<&Path> = recorded.iter().map(|r| r.trace.as_path()).collect();
    export(&traces, &sandbox.path("all"), &["--events"]);
    for (i, trace) in traces.iter().enumerate() {
        export(&[trace], &sandbox.path(&format!("fleet/t{i}")), &[]);
    }

    // Trace ids: one per trace, by the file each came from.
    let ids: BTreeMap<String, String> = sql(&root, "SELECT file, trace_id FROM 'all/traces.parquet'")
        .iter()
        .map(|row| (row[0].as_str().unwrap().to_string(), row[1].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(ids.values().collect::<BTreeSet<_>>().len(), 3, "three distinct ids: {ids:?}");
    let id_of = |r: &Recorded| ids[text_of(&r.trace)].clone();

    // The workloads did what they are for, so no check below is vacuous.
    let store_report = &recorded[0].report;
    assert!(
        array(&store_report["packages"])
            .iter()
            .any(|p| p["store_path"] == store.store_path() && u(&p["failed_lookups_caused"]) > 0),
        "the store program's RUNPATH caused failed lookups: {:#}",
        store_report["packages"]
    );
    assert!(
        array(&store_report["recommendations"]).iter().any(|r| r["rule"] == "library-search"),
        "library-search fired: {:#}",
        store_report["recommendations"]
    );
    assert!(array(&recorded[1].report["processes"]).len() >= 4, "the shell ran several programs");
    assert!(
        array(&recorded[2].report["files"])
            .iter()
            .any(|f| f["path"].as_str().is_some_and(|p| p.ends_with("/cold.bin"))
                && u(&f["disk_read_bytes"]) > 0),
        "cold.bin was read from disk: {:#}",
        recorded[2].report["files"]
    );

    for r in &recorded {
        assert_queries(&root, &expected_of(&id_of(r), &r.report, "command"));
    }

    // Across all traces at once: one directory per trace, and the one
    // directory they were exported into together, give the reports' sums.
    let reports: Vec<&Value> = recorded.iter().map(|r| &r.report).collect();
    let processes: usize = reports.iter().map(|r| array(&r["processes"]).len()).sum();
    let execs: usize =
        reports.iter().flat_map(|r| array(&r["processes"])).map(|p| array(&p["execs"]).len()).sum();
    let loader: u64 = reports.iter().flat_map(|r| array(&r["units"])).map(|unit| u(&unit["loader_ns"])).sum();
    let caused: u64 =
        reports.iter().flat_map(|r| array(&r["packages"])).map(|p| u(&p["failed_lookups_caused"])).sum();
    let disk: u64 = reports.iter().flat_map(|r| array(&r["files"])).map(|f| u(&f["disk_read_bytes"])).sum();
    let recommendations: usize = reports.iter().map(|r| array(&r["recommendations"]).len()).sum();
    let totals = json!([processes, execs, loader, caused, disk, recommendations]);
    for glob in ["fleet/*", "all"] {
        let query = format!(
            "SELECT (SELECT count(*) FROM read_parquet('{glob}/processes.parquet')), \
                    (SELECT count(*) FROM read_parquet('{glob}/execs.parquet')), \
                    (SELECT sum(loader_ns) FROM read_parquet('{glob}/processes.parquet')), \
                    (SELECT sum(count) FROM read_parquet('{glob}/failed_lookups.parquet') WHERE package_store_path IS NOT NULL), \
                    (SELECT sum(disk_read_bytes) FROM read_parquet('{glob}/files.parquet')), \
                    (SELECT count(*) FROM read_parquet('{glob}/recommendations.parquet'))"
        );
        assert_eq!(sql(&root, &query), vec![totals.clone()], "{glob}: the sum of the reports");
    }

    // The same trace exported again, elsewhere, keeps its id.
    export(&[traces[0]], &sandbox.path("again"), &[]);
    assert_eq!(sql(&root, "SELECT trace_id FROM 'again/traces.parquet'"), vec![json!([id_of(&recorded[0])])]);

    // --events: a row per open and per mmap of the trace.
    for r in &recorded {
        let trace = Trace::load(&r.trace);
        let query = format!(
            "SELECT (SELECT count(*) FROM 'all/opens.parquet' WHERE trace_id = '{0}'), \
                    (SELECT count(*) FROM 'all/mmaps.parquet' WHERE trace_id = '{0}'), \
                    (SELECT count(*) FROM 'all/opens.parquet' WHERE trace_id = '{0}' AND process_start_ns IS NULL)",
            id_of(r)
        );
        let counts = json!([trace.of_type("open").len(), trace.of_type("mmap").len(), 0]);
        assert_eq!(
            sql(&root, &query),
            vec![counts],
            "{}: opens, mmaps, opens of no process",
            r.trace.display()
        );
    }

    // Types every engine reads; dictionary-encoded strings; snappy; the
    // schema version in every file's metadata.
    let checks = [
        (
            "unsigned or nanosecond columns",
            "SELECT file_name, name, converted_type, logical_type FROM parquet_schema('all/*.parquet') \
             WHERE converted_type LIKE 'UINT%' OR logical_type::VARCHAR LIKE '%NanoSeconds%' \
                OR logical_type::VARCHAR ILIKE '%isSigned=0%' OR logical_type::VARCHAR ILIKE '%isSigned=false%'",
            vec![],
        ),
        (
            "recorded_at",
            "SELECT type, converted_type, logical_type::VARCHAR LIKE 'TimestampType(isAdjustedToUTC=1, %MICROS=MicroSeconds()%' \
             FROM parquet_schema('all/traces.parquet') WHERE name = 'recorded_at'",
            vec![json!(["INT64", "TIMESTAMP_MICROS", true])],
        ),
        (
            "string columns not dictionary-encoded",
            "SELECT file_name, path_in_schema, encodings FROM parquet_metadata('all/*.parquet') \
             WHERE type = 'BYTE_ARRAY' AND num_values > 0 AND encodings NOT LIKE '%RLE_DICTIONARY%'",
            vec![],
        ),
        (
            "compressions",
            "SELECT DISTINCT compression FROM parquet_metadata('all/*.parquet')",
            vec![json!(["SNAPPY"])],
        ),
        (
            "files without the schema version",
            "SELECT count(DISTINCT file_name) FROM parquet_kv_metadata('all/*.parquet') \
             WHERE key::VARCHAR = 'nixtrace.parquet_schema_version' AND value::VARCHAR = '1'",
            vec![json!([13])],
        ),
    ];
    let checks: Vec<(String, String, Vec<Value>)> =
        checks.into_iter().map(|(n, q, e)| (n.to_string(), q.to_string(), e)).collect();
    assert_queries(&root, &checks);
}

/// docs/fleet.sql, split at its `-- name:` lines.
fn fleet_queries() -> BTreeMap<&'static str, String> {
    named_queries(FLEET_SQL)
}

/// A queries file split at its `-- name:` lines.
fn named_queries(file: &'static str) -> BTreeMap<&'static str, String> {
    let mut queries = BTreeMap::new();
    for part in file.split("-- name: ").skip(1) {
        let (name, body) = part.split_once('\n').unwrap();
        queries.insert(name.trim(), body.trim().to_string());
    }
    queries
}

/// The median and 95th percentile DuckDB's median and quantile_cont give:
/// linear interpolation between the closest ranks.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (position.floor() as usize, position.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (position - lo as f64)
}

fn close(a: &Value, b: f64) -> bool {
    let a = a.as_f64().unwrap_or_else(|| panic!("not a number: {a}"));
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// Proves the fleet queries of docs/fleet.md give what the reports say,
/// on the files the export writes: every query of docs/fleet.sql appears
/// in docs/fleet.md exactly, and over three exported traces (each in its
/// own directory, as hosts' would be) the slowest units are none (they are
/// systemd's, checked over real boots by
/// `real_boots_give_the_figures_of_their_reports`), the slower "boots" are the traces that took more than 20% longer
/// than the one before on the same host (command traces stand in for
/// boots, which cannot be recorded here: the `boots` view is run with
/// `traced = 'command'` and their duration as their length), and the RUNPATH culprits are the packages'
/// `failed_lookups_caused` summed by name.
#[test]
fn the_fleet_queries_give_the_reports_answers() {
    let queries = fleet_queries();
    assert_eq!(
        queries.keys().copied().collect::<Vec<_>>(),
        ["runpath_culprits", "slower_boots", "slowest_units", "views"]
    );
    for (file, text) in [
        ("fleet.sql", FLEET_SQL),
        ("fleet-clickhouse.sql", FLEET_CLICKHOUSE),
        ("fleet-spark.sql", FLEET_SPARK),
    ] {
        for (name, query) in named_queries(text) {
            assert!(
                FLEET_DOC.contains(query.as_str()),
                "docs/fleet.md shows the {name} query as docs/{file} has it"
            );
        }
    }

    let sandbox = Sandbox::new();
    let store = StorePackage::new();
    let recorded = record_three(&sandbox, &store);
    for (i, r) in recorded.iter().enumerate() {
        export(&[&r.trace], &sandbox.path(&format!("fleet/host{i}")), &[]);
    }
    // Command traces stand in for boots: the `boots` view takes them, and
    // their length is their duration (they start at the machine's uptime,
    // where a boot's trace starts just after the kernel).
    let as_commands = |query: &str| {
        query
            .replace("traced = 'boot'", "traced = 'command'")
            .replace("start_boottime_ns + duration_ns", "duration_ns")
    };
    let views = as_commands(&queries["views"]);
    assert!(
        views.contains("traced = 'command'") && !views.contains("start_boottime_ns + duration_ns"),
        "the boots view as docs/fleet.sql has it: {}",
        queries["views"]
    );
    let setup: Vec<String> =
        views.split(";\n").map(str::trim).filter(|s| !s.is_empty()).map(|s| s.to_string()).collect();
    let names = ["slowest_units", "slower_boots", "runpath_culprits"];
    let asked: Vec<(&str, String)> = names.iter().map(|n| (*n, queries[n].clone())).collect();
    let answers = duckdb(&sandbox.path(""), &setup, &asked);

    // Slowest units: command traces have no unit activations (the test
    // of real boots below checks the figures).
    assert_eq!(answers["slowest_units"], Vec::<Value>::new());

    // Slower boots: by recorded_at, each trace against the one before.
    let mut by_time: Vec<(u64, &Value)> =
        recorded.iter().map(|r| (u(&r.report["header"]["clock"]["realtime_ns"]), &r.report)).collect();
    by_time.sort_by_key(|(t, _)| *t);
    let length = |r: &Value| u(&r["duration_ns"]);
    let slower: Vec<u64> = by_time
        .windows(2)
        .filter(|w| length(w[1].1) as f64 > length(w[0].1) as f64 * 1.2)
        .map(|w| length(w[1].1))
        .collect();
    let found: Vec<u64> = answers["slower_boots"].iter().map(|row| u(&row[4])).collect();
    assert_eq!(found.iter().collect::<BTreeSet<_>>(), slower.iter().collect::<BTreeSet<_>>());
    let longest = by_time.iter().map(|(_, r)| length(r)).max().unwrap();
    assert!(found.contains(&longest), "the trace with the sleep is slower than the one before it");

    // RUNPATH culprits: failed lookups caused, summed by package name.
    let reports: Vec<&Value> = recorded.iter().map(|r| &r.report).collect();
    let found = assert_runpath_culprits(&reports, &answers["runpath_culprits"]);
    assert!(found.contains_key("nixtrace-parquet-test"), "{found:?}");

    // `cargo xtask test --engines`: ClickHouse and Spark give DuckDB's answers.
    if let Some(python) = std::env::var_os("NIXTRACE_ENGINES_PYTHON") {
        assert_engines_agree(Path::new(&python), &sandbox.path(""), &names, &answers, &as_commands);
    }
}

/// Checks the runpath_culprits query's `rows` against the reports: the
/// packages' failed lookups caused, summed by package name. Returns them.
fn assert_runpath_culprits(reports: &[&Value], rows: &[Value]) -> BTreeMap<String, u64> {
    let mut caused: BTreeMap<String, u64> = BTreeMap::new();
    for p in reports.iter().flat_map(|r| array(&r["packages"])) {
        if u(&p["failed_lookups_caused"]) > 0 {
            *caused.entry(p["name"].as_str().unwrap().to_string()).or_default() +=
                u(&p["failed_lookups_caused"]);
        }
    }
    let found: BTreeMap<String, u64> =
        rows.iter().map(|row| (row[0].as_str().unwrap().to_string(), u(&row[3]))).collect();
    assert_eq!(found, caused);
    found
}

/// Runs the ClickHouse and Spark versions of the fleet queries `names`
/// (rewritten by `rewrite`, as DuckDB's were) in `cwd` with `python`'s
/// chdb and pyspark, and checks every row against DuckDB's `answers`.
fn assert_engines_agree(
    python: &Path,
    cwd: &Path,
    names: &[&str],
    answers: &BTreeMap<String, Vec<Value>>,
    rewrite: &dyn Fn(&str) -> String,
) {
    for (engine, file) in [("clickhouse", FLEET_CLICKHOUSE), ("spark", FLEET_SPARK)] {
        let queries = named_queries(file);
        let setup: Vec<String> = queries.get("views").map_or_else(Vec::new, |views| {
            rewrite(views).split(";\n").map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
        });
        let asked: serde_json::Map<String, Value> =
            names.iter().map(|n| (n.to_string(), Value::from(rewrite(&queries[n])))).collect();
        let request = cwd.join(format!("{engine}.json"));
        let body = json!({ "cwd": text_of(cwd), "engine": engine, "setup": setup, "queries": asked });
        fs::write(&request, body.to_string()).unwrap();
        let output = run(Command::new(python).arg(ENGINES_SCRIPT).arg(&request));
        assert!(output.status.success(), "{engine}: {}", stderr_of(&output));
        let theirs: Value = serde_json::from_slice(&output.stdout).expect("engines.py prints JSON");
        for name in names {
            let (ours, theirs) = (&answers[*name], array(&theirs[*name]));
            assert_eq!(ours.len(), theirs.len(), "{engine} {name}: {theirs:?} vs DuckDB's {ours:?}");
            for (a, b) in ours.iter().zip(theirs) {
                for (x, y) in array(a).iter().zip(array(b)) {
                    let same = match (x.as_f64(), y.as_f64()) {
                        (Some(x), Some(_)) => close(y, x),
                        _ => x == y,
                    };
                    assert!(same, "{engine} {name}: {b} vs DuckDB's {a}");
                }
            }
        }
    }
}

/// Usage errors are clap's, status 2: chrome-json takes one trace, parquet
/// needs a directory, --events is for parquet.
#[test]
fn export_usage_errors_name_the_fix() {
    let sandbox = Sandbox::new();
    let trace = sandbox.trace_path();
    fs::write(&trace, "not read").unwrap();
    let cases: [(&[&str], &str); 3] = [
        (&["--format", "chrome-json"], "--format chrome-json exports one trace, not 2"),
        (&["--format", "parquet"], "name their directory with -o DIR"),
        (&["--events"], "--events is for --format parquet"),
    ];
    for (args, message) in cases {
        let mut command = Command::new(NIXTRACE);
        command.arg("export").arg(&trace);
        if args[0] == "--format" && args[1] == "chrome-json" {
            command.arg(&trace);
        }
        let output = run(command.args(args));
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr_of(&output));
        assert!(stderr_of(&output).contains(message), "{args:?}: {}", stderr_of(&output));
        assert!(stderr_of(&output).contains("Usage: nixtrace export"), "{}", stderr_of(&output));
    }
}

/// Proves `record --boot --parquet` files the boot's tables beside its
/// report, `<boot-id>.TABLE.parquet`, holding the figures of the
/// `report.json` it files with them, as a trace `traced` "boot"; and that
/// the fleet views of docs/fleet.sql, run as they are over a directory
/// holding a boot's files, read them, with the boot's length from the
/// kernel's start. (It records the whole system for two seconds; outside
/// a real boot, --duration ends it.)
#[test]
fn boot_tables_are_filed_beside_the_report() {
    let sandbox = Sandbox::new();
    let boots = sandbox.path("fleet/this-host");
    let output = run(Command::new(NIXTRACE)
        .args(["record", "--boot", "--parquet", "-q", "--duration", "2", "--output-dir"])
        .arg(&boots));
    assert!(output.status.success(), "record --boot: {}", stderr_of(&output));
    let report_file = fs::read_dir(&boots)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| text_of(p).ends_with(".report.json"))
        .expect("the boot's report.json");
    let stem = text_of(&report_file).trim_end_matches(".report.json").to_string();
    let report: Value = serde_json::from_slice(&fs::read(&report_file).unwrap()).unwrap();
    for table in [
        "traces",
        "processes",
        "execs",
        "libraries",
        "failed_lookups",
        "files",
        "file_readers",
        "units",
        "unit_activations",
        "packages",
        "recommendations",
    ] {
        assert!(Path::new(&format!("{stem}.{table}.parquet")).exists(), "{stem}.{table}.parquet");
    }

    let queries = fleet_queries();
    let setup: Vec<String> = queries["views"]
        .split(";\n")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.to_string())
        .collect();
    let loader: u64 = array(&report["units"]).iter().map(|unit| u(&unit["loader_ns"])).sum();
    let execs: usize = array(&report["processes"]).iter().map(|p| array(&p["execs"]).len()).sum();
    let length = u(&report["header"]["clock"]["boottime_ns"]) + u(&report["duration_ns"]);
    let checks = [
        (
            "boots",
            "SELECT boot_id, boot_ns FROM boots".to_string(),
            json!([[report["header"]["boot_id"], length]]),
        ),
        (
            "processes",
            "SELECT count(*), sum(execs), coalesce(sum(loader_ns), 0) FROM processes".to_string(),
            json!([[array(&report["processes"]).len(), execs, loader]]),
        ),
        (
            "recommendations",
            format!("SELECT count(*) FROM '{stem}.recommendations.parquet'"),
            json!([[array(&report["recommendations"]).len()]]),
        ),
    ];
    let asked: Vec<(&str, String)> = checks.iter().map(|(n, q, _)| (*n, q.clone())).collect();
    let answers = duckdb(&sandbox.path(""), &setup, &asked);
    for (name, query, expected) in &checks {
        assert_eq!(&Value::from(answers[*name].clone()), expected, "{name}: {query}");
    }
}

/// Proves the tables of real boots hold the figures of their reports: the
/// two boots of a Debian guest (its 6.1 kernel, under QEMU) that `cargo
/// xtask boot-test` traces with the boot unit, whose traces it names in
/// NIXTRACE_BOOT_TRACES (a `:`-separated list) when it runs this test. SQL
/// over the exported tables gives each boot's report figures (as
/// `every_table_gives_the_figures_of_the_report` checks them for command
/// traces) and systemd's activation of every unit, and the fleet queries of
/// docs/fleet.sql, run as they are, give the reports' answers: the slowest
/// units by their activation times over the two boots, the second boot when
/// it took over 20% longer than the first, and the RUNPATH culprits.
#[test]
#[ignore = "needs the traces of real boots: `cargo xtask boot-test` runs it with them"]
fn real_boots_give_the_figures_of_their_reports() {
    let traces: Vec<PathBuf> = std::env::var_os("NIXTRACE_BOOT_TRACES")
        .map(|v| std::env::split_paths(&v).collect())
        .expect("NIXTRACE_BOOT_TRACES names the boot test's traces (`cargo xtask boot-test` sets it)");
    assert_eq!(traces.len(), 2, "two boots: {traces:?}");
    let sandbox = Sandbox::new();
    let root = sandbox.path("");
    let reports: Vec<Value> = traces.iter().map(|t| report_json(t, &[])).collect();
    let traces: Vec<&Path> = traces.iter().map(PathBuf::as_path).collect();
    export(&traces, &sandbox.path("all"), &[]);
    export(&traces, &sandbox.path("fleet/guest"), &[]);

    let ids: BTreeMap<String, String> = sql(&root, "SELECT file, trace_id FROM 'all/traces.parquet'")
        .iter()
        .map(|row| (row[0].as_str().unwrap().to_string(), row[1].as_str().unwrap().to_string()))
        .collect();
    let activations = |r: &Value| array(&r["boot"]["unit_activations"]).clone();
    for (trace, report) in traces.iter().zip(&reports) {
        // Real boots: systemd activated units, some of them with a start
        // that took time, so no check below is vacuous.
        let mut units = activations(report);
        assert!(
            units.iter().any(|u| u["unit"] == "systemd-journald.service" && u["activating_ns"].is_u64()),
            "{}: journald's activation: {units:#?}",
            trace.display()
        );
        let id = &ids[text_of(trace)];
        let mut checks = expected_of(id, report, "boot");
        units.sort_by_key(|u| u["unit"].as_str().unwrap().to_string());
        checks.push((
            "unit activations".into(),
            format!(
                "SELECT unit, activating_at_ns, active_at_ns, activating_ns, state \
                 FROM 'all/unit_activations.parquet' WHERE trace_id = '{id}' ORDER BY unit"
            ),
            units
                .iter()
                .map(|u| {
                    json!([
                        u["unit"],
                        u["activating_at_ns"],
                        u["active_at_ns"],
                        u["activating_ns"],
                        u["state"]
                    ])
                })
                .collect(),
        ));
        assert_queries(&root, &checks);
    }

    let queries = fleet_queries();
    let setup: Vec<String> =
        queries["views"].split(";\n").map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    let names = ["slowest_units", "slower_boots", "runpath_culprits"];
    let asked: Vec<(&str, String)> = names.iter().map(|n| (*n, queries[n].clone())).collect();
    let answers = duckdb(&root, &setup, &asked);

    // Slowest units: per unit, over the boots, the median and p95 of its
    // activation and of its time to active; the 20 slowest activations.
    let mut per_unit: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for u in reports.iter().flat_map(activations) {
        if let Some(took) = u["activating_ns"].as_u64() {
            let (took_all, at_all) = per_unit.entry(u["unit"].as_str().unwrap().to_string()).or_default();
            took_all.push(took as f64);
            at_all.push(self::u(&u["active_at_ns"]) as f64);
        }
    }
    let mut expected: Vec<(String, usize, [f64; 4])> = per_unit
        .into_iter()
        .map(|(unit, (mut took, mut at))| {
            took.sort_by(f64::total_cmp);
            at.sort_by(f64::total_cmp);
            let figures =
                [quantile(&took, 0.5), quantile(&took, 0.95), quantile(&at, 0.5), quantile(&at, 0.95)];
            (unit, took.len(), figures)
        })
        .collect();
    expected.sort_by(|a, b| b.2[1].total_cmp(&a.2[1]).then(a.0.cmp(&b.0)));
    expected.truncate(20);
    let rows = &answers["slowest_units"];
    assert_eq!(rows.len(), expected.len(), "{rows:#?}");
    for (row, (unit, boots, figures)) in rows.iter().zip(&expected) {
        assert_eq!((&row[0], u(&row[1]), u(&row[2])), (&json!(unit), 1, *boots as u64), "{row}");
        for (value, want) in array(row)[3..].iter().zip(figures) {
            assert!(close(value, *want), "{row}: {figures:?}");
        }
    }

    // Slower boots: the later boot, when it took over 20% longer.
    let mut boots: Vec<(u64, &Value, u64)> = reports
        .iter()
        .map(|r| {
            let clock = &r["header"]["clock"];
            (
                u(&clock["realtime_ns"]),
                &r["header"]["boot_id"],
                u(&clock["boottime_ns"]) + u(&r["duration_ns"]),
            )
        })
        .collect();
    boots.sort_by_key(|b| b.0);
    let ((_, first_id, first_ns), (_, second_id, second_ns)) = (boots[0], boots[1]);
    let slower: Vec<Value> = if second_ns as f64 > first_ns as f64 * 1.2 {
        vec![json!([second_id, first_id, first_ns, second_ns])]
    } else {
        Vec::new()
    };
    let found: Vec<Value> =
        answers["slower_boots"].iter().map(|row| json!([row[1], row[2], row[3], row[4]])).collect();
    assert_eq!(found, slower, "boots of {first_ns} and {second_ns} ns");

    // RUNPATH culprits (none in a Debian guest, which has no store).
    assert_runpath_culprits(&reports.iter().collect::<Vec<_>>(), &answers["runpath_culprits"]);

    if let Some(python) = std::env::var_os("NIXTRACE_ENGINES_PYTHON") {
        assert_engines_agree(Path::new(&python), &root, &names, &answers, &|query| query.to_string());
    }
}
