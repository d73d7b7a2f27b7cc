//! End-to-end tests of what nixtrace draws and compares: `flamegraph`,
//! `diff` and `export`, on traces recorded with the real probes. Every SVG
//! is parsed back with an XML parser and its frames read from it; widths are
//! checked against what the kernel or the report says, exactly where the
//! quantity is exact.
//!
//! Privileged tier: needs root (every test fails, never skips, without it)
//! and Debian 12 with build-essential, coreutils and chromium. Built only
//! with the `privileged-tests` feature: `sudo -E cargo xtask test` runs it.

mod common;

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    os::unix::ffi::OsStrExt,
    path::Path,
    process::{Command, Output},
};

use common::*;
use serde_json::Value;

fn nixtrace<S: AsRef<OsStr>>(args: &[S]) -> Output {
    run(Command::new(NIXTRACE).args(args))
}

/// Runs nixtrace and insists on success.
fn nixtrace_ok<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let output = nixtrace(args);
    assert!(output.status.success(), "nixtrace failed ({}): {}", output.status, stderr_of(&output));
    output
}

/// A frame as the SVG shows it: its name and its count.
#[derive(Debug, Clone, PartialEq)]
struct Frame {
    name: String,
    count: u64,
    unit: String,
}

/// A parsed flamegraph: the title block and every frame.
#[derive(Debug)]
struct Svg {
    title: String,
    subtitle: String,
    frames: Vec<Frame>,
}

impl Svg {
    /// Parses `path` as XML (panics if it is not well-formed) and reads
    /// each frame's `<title>`: "NAME (COUNT UNIT, P%)".
    fn load(path: &Path) -> Svg {
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let doc = roxmltree::Document::parse_with_options(
            &text,
            roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() },
        )
        .unwrap_or_else(|e| panic!("{} is not well-formed XML: {e}", path.display()));
        let text_of_id = |id: &str| {
            doc.descendants()
                .find(|n| n.attribute("id") == Some(id))
                .and_then(|n| n.text())
                .unwrap_or_default()
                .to_string()
        };
        let frames = doc
            .descendants()
            .filter(|n| n.has_tag_name("g"))
            .filter_map(|g| g.children().find(|c| c.has_tag_name("title")))
            .filter_map(|t| t.text())
            .map(|title| {
                let (name, rest) = title.rsplit_once(" (").unwrap_or_else(|| panic!("frame title {title:?}"));
                let mut words = rest.split(' ');
                let count = words.next().unwrap().replace(',', "").parse().unwrap();
                let unit = words.next().unwrap().trim_end_matches(',').to_string();
                Frame { name: name.to_string(), count, unit }
            })
            .collect();
        Svg { title: text_of_id("title"), subtitle: text_of_id("subtitle"), frames }
    }

    /// The frames named `name` (one per place it appears in the graph).
    fn named(&self, name: &str) -> Vec<&Frame> {
        self.frames.iter().filter(|f| f.name == name).collect()
    }

    /// The count of the only frame named `name`.
    fn count(&self, name: &str) -> u64 {
        let frames = self.named(name);
        assert_eq!(frames.len(), 1, "one frame named {name:?} in {:#?}", self.frames);
        frames[0].count
    }
}

/// `nixtrace flamegraph TRACE ARGS -o OUT`, parsed.
fn flamegraph(trace: &Path, out: &Path, args: &[&str]) -> Svg {
    nixtrace_ok(
        &[OsStr::new("flamegraph"), trace.as_os_str(), OsStr::new("-o"), out.as_os_str()]
            .into_iter()
            .chain(args.iter().map(OsStr::new))
            .collect::<Vec<_>>(),
    );
    Svg::load(out)
}

/// `nixtrace flamegraph TRACE ARGS --folded`: stack -> count.
fn folded(trace: &Path, args: &[&str]) -> BTreeMap<String, u64> {
    let mut all = vec![OsStr::new("flamegraph"), trace.as_os_str(), OsStr::new("--folded")];
    all.extend(args.iter().map(OsStr::new));
    let output = nixtrace_ok(&all);
    let mut stacks = BTreeMap::new();
    for line in String::from_utf8(output.stdout).expect("folded stacks are UTF-8").lines() {
        let (stack, count) = line.rsplit_once(' ').unwrap_or_else(|| panic!("folded line {line:?}"));
        *stacks.entry(stack.to_string()).or_default() += count.parse::<u64>().unwrap();
    }
    stacks
}

/// `nixtrace diff BEFORE AFTER --output-dir DIR`, which must succeed;
/// returns DIR's diff.md.
fn diff_into(before: &Path, after: &Path, dir: &Path) -> String {
    nixtrace_ok(&[
        OsStr::new("diff"),
        before.as_os_str(),
        after.as_os_str(),
        OsStr::new("--output-dir"),
        dir.as_os_str(),
    ]);
    fs::read_to_string(dir.join("diff.md")).expect("diff -o writes diff.md")
}

/// `nixtrace diff BEFORE AFTER -F json`, parsed.
fn diff_json(before: &Path, after: &Path) -> Value {
    let output = nixtrace_ok(&[
        OsStr::new("diff"),
        before.as_os_str(),
        after.as_os_str(),
        OsStr::new("-F"),
        OsStr::new("json"),
    ]);
    serde_json::from_slice(&output.stdout).expect("diff -F json prints JSON")
}

/// Drops `file` from the page cache, so the next read comes from disk
/// (written back first: dirty pages cannot be dropped).
fn evict(file: &Path) {
    fs::File::open(file).and_then(|f| f.sync_all()).expect("write the file back");
    let input = format!("if={}", text_of(file));
    let output = run(Command::new("dd").args([input.as_str(), "iflag=nocache", "count=0", "status=none"]));
    assert!(output.status.success(), "dd nocache: {}", stderr_of(&output));
}

/// Proves the io flamegraph charges a file read cold to its reader,
/// exactly its size, stacked unit; binary; package; file, and that the SVG
/// carries the trace's host, kernel and date.
#[test]
fn io_flamegraph_charges_a_cold_file_to_its_reader() {
    let sandbox = Sandbox::new();
    let data = sandbox.path("cold.bin");
    let size: u64 = 1 << 20;
    fs::write(&data, vec![7u8; size as usize]).unwrap();
    evict(&data);
    let trace = sandbox.trace_path();
    let input = format!("if={}", text_of(&data));
    // Without cargo's LD_LIBRARY_PATH dd finds its libraries at once.
    let output = run(record_cmd(&trace)
        .args(["-q", "--", "dd", &input, "of=/dev/null", "bs=65536", "status=none"])
        .env_remove("LD_LIBRARY_PATH"));
    assert!(output.status.success(), "{}", stderr_of(&output));

    let report = report_json(&trace, &[]);
    let unit = process_running(&report, "/usr/bin/dd")["unit"].as_str().unwrap().to_string();
    let stacks = folded(&trace, &["--kind", "io"]);
    let stack = format!("{unit};/usr/bin/dd;(not in the Nix store);{}", text_of(&data));
    assert_eq!(stacks.get(&stack), Some(&size), "the file's stack in {stacks:#?}");

    let svg = flamegraph(&trace, &sandbox.path("io.svg"), &["--kind", "io"]);
    assert_eq!(svg.count(text_of(&data)), size);
    assert!(svg.frames.iter().all(|f| f.unit == "bytes"), "{:?}", svg.frames);
    assert!(svg.title.starts_with("Disk reads"), "{}", svg.title);
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(
        svg.subtitle.contains(&format!("host {}, kernel {}", host.trim(), kernel.trim()))
            && svg.subtitle.contains("recorded 20"),
        "{}",
        svg.subtitle
    );
    assert!(!svg.subtitle.contains("INCOMPLETE"), "{}", svg.subtitle);

    // A picture of nothing is an error that says why, not an empty SVG.
    let output =
        nixtrace(&[OsStr::new("flamegraph"), trace.as_os_str(), OsStr::new("--kind"), OsStr::new("lookups")]);
    assert_eq!(output.status.code(), Some(1), "{:#?}", folded(&trace, &["--kind", "lookups"]));
    let stderr = stderr_of(&output);
    assert!(stderr.contains("nothing to draw for --kind lookups") && stderr.lines().count() == 1, "{stderr}");
}

/// Proves a recording without optional probes has none of their events,
/// names them in its header, and says what the trace lacks in the report,
/// on the flamegraphs and where a picture has nothing to draw.
#[test]
fn probes_left_out_are_named_wherever_the_trace_is_shown() {
    let sandbox = Sandbox::new();
    let data = sandbox.path("cold.bin");
    fs::write(&data, vec![7u8; 1 << 20]).unwrap();
    evict(&data);
    let trace = sandbox.trace_path();
    let input = format!("if={}", text_of(&data));
    let dd = ["dd", &input, "of=/dev/null", "bs=65536", "status=none"];
    let output = run(record_cmd(&trace)
        .args(["--no-probe", "sched", "--no-probe", "page_cache", "--"])
        .args(dd)
        .env_remove("LD_LIBRARY_PATH"));
    assert!(output.status.success(), "{}", stderr_of(&output));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains(" events in ") && !stderr.contains("warning"),
        "no warning for probes left out: {stderr}"
    );

    let dumped = Trace::load(&trace);
    assert_eq!((dumped.of_type("page_cache").len(), dumped.of_type("sched").len()), (0, 0));
    let read: u64 = dumped.of_type("read").iter().map(|r| uint(r, "bytes")).sum();
    assert!(read >= 1 << 20, "the read probe still records: {read} bytes");
    let probes: Vec<&str> =
        dumped.header["probes"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(
        !probes.contains(&"sched") && !probes.contains(&"page_cache") && probes.contains(&"read"),
        "{probes:?}"
    );
    let missing: Vec<(&str, &str)> = dumped.header["missing_probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["probe"].as_str().unwrap(), m["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(missing, [("page_cache", "disabled with --no-probe"), ("sched", "disabled with --no-probe")]);

    let lacks = "recorded without page_cache (disk reads per file and process, so the io flamegraph), \
                 sched (on-CPU, runnable, blocked and sleeping times)";
    let report = String::from_utf8(nixtrace_ok(&[OsStr::new("report"), trace.as_os_str()]).stdout).unwrap();
    assert!(report.contains(&format!("incomplete: {lacks}")), "{report}");
    let svg = flamegraph(&trace, &sandbox.path("startup.svg"), &["--kind", "startup"]);
    assert!(svg.subtitle.contains(&lacks.to_uppercase()), "{}", svg.subtitle);
    let output =
        nixtrace(&[OsStr::new("flamegraph"), trace.as_os_str(), OsStr::new("--kind"), OsStr::new("io")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr_of(&output)
            .contains("nothing to draw for --kind io: it was recorded without the page_cache probe"),
        "{}",
        stderr_of(&output)
    );

    // Against a trace with every probe, disk reads are not compared: they
    // would read as growth from nothing, a regression.
    let full = sandbox.path("full.ntr");
    let output = run(record_cmd(&full).args(["-q", "--"]).args(dd).env_remove("LD_LIBRARY_PATH"));
    assert!(output.status.success(), "{}", stderr_of(&output));
    let diff = diff_json(&trace, &full);
    assert_eq!(diff["not_compared"], serde_json::json!(["disk_read_bytes"]));
    let metrics: Vec<&str> =
        diff["totals"].as_array().unwrap().iter().map(|c| c["metric"].as_str().unwrap()).collect();
    assert_eq!(metrics, ["process_time", "loader_time", "failed_lookups"]);
}

/// Proves the exec flamegraph counts every exec under the chain of
/// programs that led to it, and the flame chart variant draws the same
/// frames.
#[test]
fn exec_flamegraph_counts_execs_by_process_tree() {
    let sandbox = Sandbox::new();
    let trace = sandbox.trace_path();
    let script = "for i in 1 2 3 4 5; do /bin/true; done; /bin/echo done; /bin/sh -c /bin/true";
    let output = run(record_cmd(&trace).args(["-q", "--", "/bin/sh", "-c", script]));
    assert!(output.status.success(), "{}", stderr_of(&output));

    let stacks = folded(&trace, &["--kind", "exec"]);
    // Debian's /bin/sh is dash, which forks for the last command too.
    let expected: BTreeMap<String, u64> =
        [("sh", 1), ("sh;true", 5), ("sh;echo", 1), ("sh;sh", 1), ("sh;sh;true", 1)]
            .map(|(s, n)| (s.to_string(), n))
            .into();
    assert_eq!(stacks, expected);

    let svg = flamegraph(&trace, &sandbox.path("exec.svg"), &["--kind", "exec"]);
    assert_eq!(svg.count("echo"), 1);
    let mut sh: Vec<u64> = svg.named("sh").iter().map(|f| f.count).collect();
    sh.sort();
    assert_eq!(sh, [2, 9], "the root sh holds all 9 execs; the inner one 2");
    assert_eq!(svg.named("true").iter().map(|f| f.count).sum::<u64>(), 6);

    let chart = flamegraph(&trace, &sandbox.path("chart.svg"), &["--kind", "exec", "--chart"]);
    assert!(chart.title.contains("flame chart"), "{}", chart.title);
    assert_eq!(chart.named("echo").len(), 1);
}

/// Proves the startup flamegraph splits a process's wall time into the
/// loader's phases and the scheduler's states: a program that burns 200 ms
/// of CPU and sleeps 300 ms shows its getrusage CPU time as "running on
/// CPU" (within 5%) and at least 290 ms asleep, and its frame is its wall
/// time from the report (to rounding).
#[test]
fn startup_flamegraph_splits_wall_time_into_phases() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();
    let rusage = sandbox.path("rusage");
    let trace = sandbox.trace_path();
    let output =
        run(record_cmd(&trace).arg("-q").arg("--").arg(&workload).args(["cpu", "200", "300"]).arg(&rusage));
    assert!(output.status.success(), "{}", stderr_of(&output));
    let cpu_ns: u64 = fs::read_to_string(&rusage).unwrap().trim().parse().unwrap();

    let report = report_json(&trace, &[]);
    let row = process_running(&report, text_of(&workload));
    let wall_us = row["wall_ns"].as_u64().unwrap() / 1000;
    let prefix = format!("{};{};", row["unit"].as_str().unwrap(), text_of(&workload));
    let stacks = folded(&trace, &[]);
    let phase = |name: &str| stacks.get(&format!("{prefix}{name}")).copied().unwrap_or(0);
    let total: u64 = stacks.iter().filter(|(s, _)| s.starts_with(&prefix)).map(|(_, n)| n).sum();
    // Each phase is rounded down to a µs on its own.
    assert!(total <= wall_us && wall_us - total <= 8, "phases {total} µs vs wall {wall_us} µs: {stacks:#?}");
    let on_cpu = phase("running on CPU") as f64;
    assert!(
        (on_cpu - cpu_ns as f64 / 1000.0).abs() <= 0.05 * cpu_ns as f64 / 1000.0,
        "{on_cpu} µs vs {cpu_ns} ns"
    );
    assert!(phase("sleeping") >= 290_000, "{stacks:#?}");
    assert!(phase("loader: relocation and setup") > 0, "{stacks:#?}");

    let svg = flamegraph(&trace, &sandbox.path("startup.svg"), &[]);
    assert_eq!(svg.count(text_of(&workload)), total);
    assert!(svg.frames.iter().all(|f| f.unit == "µs"));
}

/// The workload with its library search sent through `dirs` first: each
/// missing directory costs failed lookups.
fn record_with_library_path(workload: &Path, trace: &Path, dirs: &[&str]) {
    let mut command = record_cmd(trace);
    command.args(["-q", "-f", "--"]).arg(workload).args(["sleep", "0"]);
    // cargo test sets its own LD_LIBRARY_PATH: replace it.
    command.env("LD_LIBRARY_PATH", dirs.join(":"));
    let output = run(&mut command);
    assert!(output.status.success(), "{}", stderr_of(&output));
}

/// Proves the linker and lookups flamegraphs show exactly the report's
/// failed lookups, by library and directory, and the loader's time.
#[test]
fn linker_and_lookups_flamegraphs_match_the_report() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();
    let trace = sandbox.trace_path();
    record_with_library_path(&workload, &trace, &["/nonexistent/a", "/nonexistent/b"]);
    let report = report_json(&trace, &[]);
    let loader = &process_running(&report, text_of(&workload))["loader"];
    let failed = loader["failed"].as_array().unwrap();
    assert!(!failed.is_empty(), "{loader}");

    let lookups = flamegraph(&trace, &sandbox.path("lookups.svg"), &["--kind", "lookups"]);
    assert_eq!(lookups.count(text_of(&workload)), loader["failed_lookups"].as_u64().unwrap());
    for dir in ["/nonexistent/a", "/nonexistent/b"] {
        let expected: u64 =
            failed.iter().filter(|f| f["dir"] == dir).map(|f| f["count"].as_u64().unwrap()).sum();
        assert!(expected > 0, "{dir} probed: {failed:#?}");
        assert_eq!(lookups.named(dir).iter().map(|f| f.count).sum::<u64>(), expected, "{dir}");
    }

    let linker = flamegraph(&trace, &sandbox.path("linker.svg"), &["--kind", "linker"]);
    let loader_ns = loader["total_ns"].as_u64().unwrap() + loader["init_ns"].as_u64().unwrap();
    let drawn = linker.count(text_of(&workload));
    // Searches, opens and maps, relocation and the initialisers: the
    // loader's whole time, every nanosecond of it drawn.
    assert_eq!(drawn, loader_ns, "linker {drawn} ns vs loader {loader_ns} ns");
    assert!(linker.named("libc.so.6").len() == 1, "{:#?}", linker.frames);
}

/// Proves `diff` finds a real regression (a library path full of missing
/// directories: exactly the extra failed lookups), exits 3 for it, and
/// exits 0 on a trace compared with itself; with -o it writes the Markdown
/// and a well-formed differential flamegraph.
#[test]
fn diff_finds_regressions_and_passes_unchanged_traces() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();
    let before = sandbox.path("before.ntr");
    let after = sandbox.path("after.ntr");
    record_with_library_path(&workload, &before, &[]);
    record_with_library_path(&workload, &after, &["/nonexistent/x", "/nonexistent/y", "/nonexistent/z"]);
    let lookups = |trace: &Path| {
        process_running(&report_json(trace, &[]), text_of(&workload))["loader"]["failed_lookups"]
            .as_u64()
            .unwrap()
    };
    let (lookups_before, lookups_after) = (lookups(&before), lookups(&after));
    assert!(lookups_after > lookups_before);

    let output = nixtrace(&[
        OsStr::new("diff"),
        before.as_os_str(),
        after.as_os_str(),
        OsStr::new("--format"),
        OsStr::new("json"),
        OsStr::new("--fail-on-regression"),
        OsStr::new("10"),
    ]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    let diff: Value = serde_json::from_slice(&output.stdout).unwrap();
    let binary_lookups: Vec<&Value> = diff["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["scope"] == "binary" && c["group"] == text_of(&workload) && c["metric"] == "failed_lookups"
        })
        .collect();
    assert_eq!(binary_lookups.len(), 1, "{:#}", diff["regressions"]);
    assert_eq!(
        (binary_lookups[0]["before"].as_u64(), binary_lookups[0]["after"].as_u64()),
        (Some(lookups_before), Some(lookups_after))
    );
    let message = format!("binary {}: failed lookups", text_of(&workload));
    assert!(stderr_of(&output).contains(&message), "{}", stderr_of(&output));

    let same = nixtrace(&[
        OsStr::new("diff"),
        after.as_os_str(),
        after.as_os_str(),
        OsStr::new("--fail-on-regression"),
        OsStr::new("0"),
    ]);
    assert_eq!(same.status.code(), Some(0), "{}", stderr_of(&same));
    assert!(String::from_utf8_lossy(&same.stdout).contains("No regression beyond 0%"));

    let dir = sandbox.path("diff");
    let markdown = diff_into(&before, &after, &dir);
    assert!(markdown.contains("| failed lookups |"), "{markdown}");
    let svg = Svg::load(&dir.join("diff-startup.svg"));
    assert!(svg.title.contains("red: grew"), "{}", svg.title);
    assert!(!svg.named(text_of(&workload)).is_empty());

    // The old spelling still works, and says it is deprecated.
    let old = sandbox.path("old-spelling");
    let output = nixtrace_ok(&[
        OsStr::new("diff"),
        before.as_os_str(),
        after.as_os_str(),
        OsStr::new("-o"),
        old.as_os_str(),
    ]);
    assert_eq!(fs::read_to_string(old.join("diff.md")).unwrap(), markdown);
    assert!(stderr_of(&output).contains("deprecated; use --output-dir"), "{}", stderr_of(&output));
}

/// Proves the exported timeline is valid trace-event JSON whose slices
/// nest strictly on every track, with the workload's exec (and its argv)
/// and the dynamic loader inside it.
#[test]
fn export_timeline_nests_strictly() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();
    let trace = sandbox.trace_path();
    let dir = sandbox.files_tree();
    let output = run(record_cmd(&trace).arg("-q").arg("--").arg(&workload).arg("files").arg(&dir));
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    let out = sandbox.path("timeline.json");
    nixtrace_ok(&[OsStr::new("export"), trace.as_os_str(), OsStr::new("-o"), out.as_os_str()]);
    let timeline: Value = serde_json::from_str(&fs::read_to_string(&out).unwrap()).unwrap();
    let events = timeline["traceEvents"].as_array().unwrap();

    // Viewers read µs with ns precision: compare in whole ns, as they do.
    let ns = |e: &Value, key: &str| (e[key].as_f64().unwrap() * 1000.0).round() as u64;
    // (pid, tid) -> (start, end, name) of each slice.
    type Tracks<'a> = BTreeMap<(u64, u64), Vec<(u64, u64, &'a str)>>;
    let mut tracks = Tracks::new();
    for e in events.iter().filter(|e| e["ph"] == "X") {
        let ts = ns(e, "ts");
        tracks.entry((e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap())).or_default().push((
            ts,
            ts + ns(e, "dur"),
            e["name"].as_str().unwrap(),
        ));
    }
    for (track, slices) in &mut tracks {
        slices.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut open: Vec<u64> = Vec::new();
        for (start, end, name) in slices.iter() {
            while open.last().is_some_and(|e| *e <= *start) {
                open.pop();
            }
            if let Some(parent_end) = open.last() {
                assert!(end <= parent_end, "{name} on {track:?} overlaps its parent");
            }
            open.push(*end);
        }
    }
    let exec = events
        .iter()
        .find(|e| e["cat"] == "exec" && e["args"]["filename"] == text_of(&workload))
        .expect("the workload's exec slice");
    assert_eq!(exec["args"]["argv"][1], "files");
    let (start, end) =
        (exec["ts"].as_f64().unwrap(), exec["ts"].as_f64().unwrap() + exec["dur"].as_f64().unwrap());
    let loader = events
        .iter()
        .find(|e| e["name"] == "dynamic loader" && e["pid"] == exec["pid"])
        .expect("the loader slice");
    let ts = loader["ts"].as_f64().unwrap();
    assert!(start <= ts && ts + loader["dur"].as_f64().unwrap() <= end, "{loader} inside {exec}");
    let opened =
        events.iter().any(|e| e["cat"] == "open" && e["args"]["path"] == text_of(&dir.join("exists")));
    assert!(opened, "the workload's open of data/exists");
}

/// A directory name with everything that breaks naive SVG, HTML, Markdown
/// or folded-stack writers: markup, quotes, the frame separator, a newline,
/// an escape sequence and a byte that is not UTF-8.
fn hostile_name() -> &'static [u8] {
    b"evil<svg onload=alert(1)>&amp;\"';\n\x1b[31m\xff"
}

/// Proves hostile names stay escaped: a program and a file whose paths
/// hold markup, quotes, `;`, a newline, an escape sequence and invalid
/// UTF-8, plus a file 4 KiB deep, go through every kind of flamegraph, the
/// diff's flamegraph and Markdown, the report and the export, and every
/// SVG parses as XML with the names escaped in its frames.
#[test]
fn hostile_names_stay_escaped_in_every_output() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();
    let hostile_dir = sandbox.path("x").join(OsStr::from_bytes(hostile_name()));
    fs::create_dir_all(&hostile_dir).unwrap();
    let program = hostile_dir.join(OsStr::from_bytes(b"prog;<b>\"&\xfe"));
    fs::copy(&workload, &program).unwrap();
    // Close to PATH_MAX: 15 directories of 250 characters.
    let mut deep = sandbox.path("deep");
    for i in 0..15 {
        deep.push(format!("{i:02}{}", "d".repeat(248)));
    }
    fs::create_dir_all(&deep).unwrap();
    let deep_file = deep.join("f<&>");
    fs::write(&deep_file, vec![1u8; 8192]).unwrap();
    let files = hostile_dir.join("data");
    fs::create_dir_all(files.join("sub")).unwrap();
    for file in ["exists", "sub/inner"] {
        fs::write(files.join(file), vec![b'x'; 8192]).unwrap();
    }
    evict(&deep_file);

    let trace = sandbox.trace_path();
    let mut script = Vec::new();
    script.extend_from_slice(b"\"$0\" files \"$1\"; dd if=\"$2\" of=/dev/null status=none");
    let output = run(record_cmd(&trace)
        .args(["-q", "--", "/bin/sh", "-c"])
        .arg(OsStr::from_bytes(&script))
        .arg(&program)
        .arg(&files)
        .arg(&deep_file));
    assert!(output.status.success(), "{}", stderr_of(&output));

    let lossy = String::from_utf8_lossy(hostile_name()).into_owned();
    // How a frame shows the directory: `;`, controls and `\` escaped,
    // invalid UTF-8 as U+FFFD, markup kept as text.
    let shown = lossy.replace(';', "\\x3b").replace('\n', "\\x0a").replace('\u{1b}', "\\x1b");
    let mut parsed = 0;
    for kind in ["startup", "io", "linker", "exec"] {
        let svg = flamegraph(&trace, &sandbox.path(&format!("{kind}.svg")), &["--kind", kind]);
        parsed += 1;
        let names: Vec<&str> = svg.frames.iter().map(|f| f.name.as_str()).collect();
        // The io graph has the deep file (the hostile ones were cached).
        assert!(
            names
                .iter()
                .any(|n| n.contains(&shown) || n.contains("prog\\x3b<b>\"&\u{fffd}") || n.ends_with("/f<&>")),
            "{kind}: the hostile name, escaped, in {names:#?}"
        );
    }
    let chart = flamegraph(&trace, &sandbox.path("chart.svg"), &["--chart"]);
    assert!(!chart.frames.is_empty());
    // Against a plain trace, the hostile program is a binary "only after".
    let plain = sandbox.path("plain.ntr");
    let output = run(record_cmd(&plain).args(["-q", "--", "/bin/true"]));
    assert!(output.status.success(), "{}", stderr_of(&output));
    let dir = sandbox.path("diff");
    let markdown = diff_into(&plain, &trace, &dir);
    Svg::load(&dir.join("diff-startup.svg"));
    assert!(
        !markdown.contains("<svg") && markdown.contains("&lt;svg onload=alert(1)&gt;"),
        "Markdown escapes markup: {markdown}"
    );

    let report = nixtrace_ok(&[
        OsStr::new("report"),
        trace.as_os_str(),
        OsStr::new("--format"),
        OsStr::new("markdown"),
    ]);
    let report = String::from_utf8(report.stdout).unwrap();
    assert!(!report.contains("<svg") && report.contains("&lt;svg"), "{report}");
    let export = nixtrace_ok(&[OsStr::new("export"), trace.as_os_str()]);
    let timeline: Value = serde_json::from_slice(&export.stdout).expect("the export is JSON");
    assert!(timeline["traceEvents"].as_array().unwrap().len() > 10);
    assert_eq!(parsed, 4);
}

/// Proves a flamegraph renders the way a person sees it: headless Chromium
/// draws the SVG into a PNG without errors, and the PNG holds the frames'
/// warm colours (a broken SVG renders as an error page in black and white).
#[test]
fn flamegraph_renders_in_chromium() {
    let sandbox = Sandbox::new();
    let trace = sandbox.trace_path();
    let output = run(record_cmd(&trace).args(["-q", "--", "/bin/sh", "-c", "ls / >/dev/null; /bin/true"]));
    assert!(output.status.success(), "{}", stderr_of(&output));
    let svg = sandbox.path("startup.svg");
    flamegraph(&trace, &svg, &[]);
    let png = sandbox.path("startup.png");
    let output = run(Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,600"])
        .arg(format!("--screenshot={}", text_of(&png)))
        .arg(format!("file://{}", text_of(&svg))));
    assert!(output.status.success(), "chromium failed: {}", stderr_of(&output));

    let decoder =
        png::Decoder::new(std::io::BufReader::new(fs::File::open(&png).expect("chromium wrote the PNG")));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).expect("PNG pixels");
    assert_eq!((info.width, info.height), (1200, 600));
    let channels = info.color_type.samples();
    let warm = pixels[..info.buffer_size()]
        .chunks(channels)
        .filter(|p| p[0] > 200 && p[1] > 60 && p[1] < 230 && p[2] < 120)
        .count();
    // The hot palette: reds, oranges and yellows over much of the picture.
    assert!(warm > 10_000, "only {warm} warm pixels: the SVG did not render as a flamegraph");
}

/// Proves lost events are stamped on every picture and comparison made
/// from the trace: a 4 KiB ring buffer overflowed by an open storm makes
/// the flamegraph's subtitle and the diff (Markdown and JSON) say how many
/// events were lost.
#[test]
fn lost_events_are_stamped_on_flamegraphs_and_diffs() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();
    let trace = sandbox.trace_path();
    let output = run(record_cmd(&trace).args(["-q", "--buffer-size", "4096", "--"]).arg(&workload).args([
        "opens",
        "100000",
        "/nonexistent/storm",
    ]));
    assert!(output.status.success(), "{}", stderr_of(&output));
    let lost = report_json(&trace, &[])["lost_events"].as_u64().unwrap();
    assert!(lost > 0, "a 4 KiB buffer cannot hold 100000 opens");

    let svg = flamegraph(&trace, &sandbox.path("lossy.svg"), &["--kind", "exec"]);
    assert!(svg.subtitle.contains(&format!("INCOMPLETE: {lost} EVENTS LOST")), "{}", svg.subtitle);
    let markdown = diff_into(&trace, &trace, &sandbox.path("diff"));
    assert!(markdown.contains(&format!("incomplete: {lost} events lost")), "{markdown}");
    let diff = diff_json(&trace, &trace);
    assert!(diff["after"]["incomplete"].as_str().unwrap().contains(&format!("{lost} events lost")));
}
