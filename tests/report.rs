//! End-to-end tests of `nixtrace report`: real traces recorded with the real
//! probes, checked against what glibc's loader says about itself
//! (`LD_DEBUG=libs`) and against real cgroups made by the test.
//!
//! Privileged tier: needs root (every test fails, never skips, without it)
//! and Debian 12's own binaries at their Debian paths, from build-essential,
//! coreutils, perl, python3.11, bpftrace, strace and bsdutils (`script`).
//! Built only with the `privileged-tests` feature: `sudo -E cargo xtask
//! test` runs it.

mod common;

use std::{fs, process::Command};

use common::*;
use serde_json::Value;

/// Proves the libraries the report lists for an exec, in order, are exactly
/// the ones glibc's loader reports loading, and its failed lookups are the
/// loader's own failed tries, over six real programs (one with a library
/// path full of missing directories).
#[test]
fn loader_libraries_and_lookups_match_ld_debug() {
    let sandbox = Sandbox::new();
    let programs: [(&str, &[&str], &str); 6] = [
        ("/usr/bin/ls", &["/"], ""),
        ("/usr/bin/perl", &["-e", "1"], ""),
        ("/usr/bin/python3.11", &["-c", "pass"], ""),
        ("/usr/bin/strace", &["-V"], ""),
        ("/usr/bin/bpftrace", &["--version"], ""),
        ("/usr/bin/ls", &["/"], "LD_LIBRARY_PATH=/nonexistent/a:/nonexistent/b"),
    ];
    for (program, args, env) in programs {
        let log_base = sandbox.path("ld");
        for stale in fs::read_dir(sandbox.path("")).unwrap().flatten() {
            let name = stale.file_name().to_string_lossy().into_owned();
            if name.starts_with("ld.") || stale.path() == sandbox.trace_path() {
                fs::remove_file(stale.path()).unwrap();
            }
        }
        let script = format!(
            "{env} LD_DEBUG=libs LD_DEBUG_OUTPUT={} exec {program} {} >/dev/null",
            log_base.display(),
            args.join(" ")
        );
        let recording = record_command(&sandbox, &["sh", "-c", &script]);
        recording.assert_exit_code(0);
        recording.trace.assert_nothing_lost();
        let report = report_json(&sandbox.trace_path(), &[]);
        let row = process_running(&report, program);

        let pid = row["pid"].as_u64().unwrap();
        let log = fs::read_to_string(sandbox.path(&format!("ld.{pid}"))).expect("LD_DEBUG_OUTPUT log");
        let (expected_libraries, expected_failures) = ld_debug_libs(&log);
        assert!(!expected_libraries.is_empty(), "{program}: the loader loaded nothing?\n{log}");

        let libraries: Vec<&str> = row["loader"]["libraries"]
            .as_array()
            .expect("loader.libraries[]")
            .iter()
            .map(|l| l["path"].as_str().unwrap())
            .collect();
        assert_eq!(libraries, expected_libraries, "{program} {env}: libraries, in load order");
        let exec = row["execs"].as_array().unwrap().last().unwrap();
        assert_eq!(
            exec["failed_lookups"].as_u64(),
            Some(expected_failures),
            "{program} {env}: failed lookups"
        );
        if !env.is_empty() {
            assert!(expected_failures >= 2, "the missing directories were probed: {log}");
        }

        // Static facts of the program and of every library it loaded.
        let binaries = report["binaries"].as_array().expect("binaries[]");
        let binary = |path: &str| {
            binaries
                .iter()
                .find(|b| b["path"] == path)
                .unwrap_or_else(|| panic!("no binaries[] row for {path}"))
        };
        let main = binary(program);
        assert_eq!(main["interpreter"], "/lib64/ld-linux-x86-64.so.2", "{main}");
        let build_id = main["build_id"].as_str().unwrap_or_default();
        assert!(build_id.len() == 40 && build_id.bytes().all(|b| b.is_ascii_hexdigit()), "{main}");
        let needed: Vec<&str> =
            main["needed"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
        assert!(needed.contains(&"libc.so.6"), "{program} needs libc: {main}");
        for library in &libraries {
            let row = binary(library);
            assert!(row["soname"].is_string() && row["relocations"].as_u64() > Some(0), "{row}");
            assert_eq!(row["size_bytes"].as_u64(), Some(fs::metadata(library).unwrap().len()), "{row}");
        }
    }
}

/// A cgroup v2 unit directory made for one test, removed afterwards.
struct UnitCgroup {
    slice: std::path::PathBuf,
    unit: std::path::PathBuf,
    created_slice: bool,
}

impl UnitCgroup {
    fn new(slice: &str, unit: &str) -> UnitCgroup {
        let root = cgroup2_root();
        let slice = root.join(slice);
        let created_slice = !slice.exists();
        if created_slice {
            fs::create_dir(&slice).expect("create the slice cgroup");
        }
        let unit = slice.join(unit);
        fs::create_dir(&unit).expect("create the unit cgroup");
        UnitCgroup { slice, unit, created_slice }
    }
}

impl Drop for UnitCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.unit);
        if self.created_slice {
            let _ = fs::remove_dir(&self.slice);
        }
    }
}

/// Proves processes are attributed to the systemd unit of their cgroup, even
/// when the unit's cgroup is gone by the time the report is made, and that
/// unit totals add up.
#[test]
fn processes_are_attributed_to_units_from_real_cgroups() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();
    let trace_path = sandbox.trace_path();
    let unit_name = format!("nixtrace-test-{}.service", std::process::id());
    let cgroup = UnitCgroup::new("system.slice", &unit_name);

    let mut recorder = spawn(record_cmd(&trace_path).args(["--cgroup", "/system.slice", "--duration", "4"]));
    recorder.wait_until_recording(&trace_path);
    let procs = cgroup.unit.join("cgroup.procs");
    let script = format!(
        "echo $$ > {}; {} chain 2; exec {} opens 2 /etc/hostname",
        procs.display(),
        workload.display(),
        workload.display()
    );
    let unit_run = run(Command::new("sh").args(["-c", &script]));
    assert!(unit_run.status.success(), "{}", stderr_of(&unit_run));
    let output = recorder.wait(TIMEOUT);
    assert_eq!(output.status.code(), Some(0), "record: {}", stderr_of(&output));
    drop(cgroup); // The unit has ended; the report must still name it.

    let report = report_json(&trace_path, &["--unit", &unit_name]);
    let processes = report["processes"].as_array().unwrap();
    // sh, then `workload chain 2` and its two descendants.
    assert_eq!(processes.len(), 4, "{processes:#?}");
    for p in processes {
        assert_eq!(p["unit"], unit_name.as_str(), "{p}");
        assert_eq!(p["cgroup"], format!("/system.slice/{unit_name}").as_str(), "{p}");
    }
    let units = report["units"].as_array().unwrap();
    assert_eq!(units.len(), 1, "{units:#?}");
    assert_eq!(units[0]["name"], unit_name.as_str());
    assert_eq!(units[0]["processes"], 4);
    // sh ran before it joined the unit; inside it, each process exec'd once.
    assert_eq!(units[0]["execs"], 4);
}

/// Proves every format says when events were lost, and that the text and
/// Markdown reports carry the same totals as the JSON one.
#[test]
fn every_format_reports_lost_events() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();
    let trace_path = sandbox.trace_path();
    let output = run(record_cmd(&trace_path).args(["--buffer-size", "4096", "--"]).arg(&workload).args([
        "opens",
        "100000",
        "/nix/store/nixtrace-test-missing",
    ]));
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));

    let json = report_json(&trace_path, &[]);
    let lost = json["lost_events"].as_u64().unwrap();
    assert!(json["lost_by_probe"]["open"].as_u64() > Some(0), "a 4 KiB buffer should overflow");
    let warning = format!("incomplete: {}", lost_description(&json["lost_by_probe"]));
    assert!(warning.starts_with(&format!("incomplete: {lost} events lost")), "{warning}");
    for format in ["text", "markdown"] {
        let output = run(Command::new(NIXTRACE).arg("report").arg(&trace_path).args(["--format", format]));
        assert!(output.status.success(), "{}", stderr_of(&output));
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(text.contains(&warning), "{format} lacks {warning:?}:\n{text}");
        if format == "markdown" {
            assert_tables_are_rectangular(&text);
        }
    }
}

/// Every row of every Markdown table has as many cells as its header.
fn assert_tables_are_rectangular(markdown: &str) {
    let cells = |line: &str| line.replace("\\|", "").matches('|').count();
    let mut header: Option<(usize, &str)> = None;
    for line in markdown.lines() {
        if !line.starts_with('|') {
            header = None;
            continue;
        }
        match header {
            None => header = Some((cells(line), line)),
            Some((count, head)) => {
                assert_eq!(cells(line), count, "row {line:?} does not fit header {head:?}")
            }
        }
    }
}

/// Proves `--cold` makes every page come from disk again, and that the
/// report charges those reads to the file (exactly its size, both as pages
/// read from disk and as bytes read(2)) and to the process that read it,
/// with the block requests behind them.
#[test]
fn cold_reads_are_charged_to_files_and_processes() {
    let sandbox = Sandbox::new();
    let data = sandbox.path("cold.bin");
    let size: u64 = 1 << 20;
    let pattern: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&data, &pattern).expect("write the data file");
    let data_text = text_of(&data);

    let trace_path = sandbox.trace_path();
    // dd reads with read(2) whatever its output is (cat copies file to file
    // with copy_file_range, which read accounting does not see).
    let input = format!("if={data_text}");
    let output = run(record_cmd(&trace_path).args([
        "--cold",
        "--",
        "dd",
        &input,
        "of=/dev/null",
        "bs=65536",
        "status=none",
    ]));
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains("--cold: dropping the page cache"),
        "no warning: {}",
        stderr_of(&output)
    );

    let report = report_json(&trace_path, &[]);
    let dd = process_running(&report, "/usr/bin/dd");
    let pid = dd["pid"].as_u64().unwrap();
    let file: Vec<&Value> =
        report["files"].as_array().unwrap().iter().filter(|f| f["path"] == data_text).collect();
    assert_eq!(file.len(), 1, "the data file is listed once: {:#?}", report["files"]);
    assert_eq!(file[0]["disk_read_bytes"].as_u64(), Some(size), "every page of the file, once");
    assert_eq!(file[0]["read_bytes"].as_u64(), Some(size), "dd read(2) the whole file");
    assert_eq!(file[0]["readers"], serde_json::json!([pid]));

    let io = &dd["io"];
    assert!(io["disk_read_bytes"].as_u64().unwrap() >= size, "{io}");
    assert!(io["block_read_bytes"].as_u64().unwrap() >= size, "{io}");
    assert!(
        io["block_requests"].as_u64().unwrap() > 0 && io["block_latency_ns"].as_u64().unwrap() > 0,
        "{io}"
    );
    assert_eq!(io["block_write_bytes"], 0, "{io}");
    assert!(dd["time"]["blocked_ns"].as_u64().unwrap() > 0, "dd waited for the disk: {}", dd["time"]);
}

/// Time that /proc/stat says the CPUs spent on interrupts or lost to the
/// hypervisor (irq, softirq and steal, summed over CPUs), in ns.
fn taken_from_tasks_ns() -> u64 {
    let stat = fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let cpu: Vec<u64> =
        stat.lines().next().unwrap().split_whitespace().skip(1).map(|n| n.parse().unwrap()).collect();
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    // user nice system idle iowait irq softirq steal ...
    (cpu[5] + cpu[6] + cpu[7]) * (1_000_000_000 / ticks_per_s)
}

/// Proves the scheduler accounting: a process that burns 300 ms of CPU and
/// then sleeps 400 ms shows its own getrusage CPU time as on-CPU time
/// (within 3%, plus what the hypervisor stole and interrupts took during
/// the run, which on-CPU time holds and getrusage does not), at least the
/// 400 ms as sleep, and its wall time covered by the four states.
#[test]
fn time_is_split_by_scheduler_state() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();
    let usage = sandbox.path("rusage");
    let taken_before = taken_from_tasks_ns();
    let recording = record_command(&sandbox, &[text_of(&workload), "cpu", "300", "400", text_of(&usage)]);
    let taken = taken_from_tasks_ns() - taken_before;
    recording.assert_exit_code(0);
    recording.trace.assert_nothing_lost();
    let rusage_ns: u64 = fs::read_to_string(&usage).unwrap().trim().parse().unwrap();

    let report = report_json(&sandbox.trace_path(), &[]);
    let row = process_running(&report, text_of(&workload));
    let time = &row["time"];
    let field = |name: &str| time[name].as_u64().unwrap_or_else(|| panic!("time.{name}: {time}"));
    let on_cpu = field("on_cpu_ns");
    // The tracepoints mark a switch a little before the kernel's own
    // accounting does, so each context switch's cost is charged to the
    // incoming thread: on a loaded 2-core machine that reaches 1-2%. And
    // on-CPU time runs from switch-in to switch-out, so it also holds what
    // the hypervisor stole and the interrupts served meanwhile, which
    // getrusage leaves out: at most what /proc/stat counted of those on
    // all CPUs during the run.
    let tolerance = rusage_ns * 3 / 100;
    assert!(
        on_cpu <= rusage_ns + tolerance + taken && rusage_ns <= on_cpu + tolerance,
        "on CPU {on_cpu} ns, getrusage {rusage_ns} ns, stolen or in interrupts on all CPUs {taken} ns"
    );
    assert!((400_000_000..450_000_000).contains(&field("sleeping_ns")), "{time}");
    let accounted = on_cpu + field("runnable_ns") + field("blocked_ns") + field("sleeping_ns");
    let wall = row["wall_ns"].as_u64().unwrap();
    // The process's threads are accounted from fork to exit, its wall time
    // from fork to exit too: within scheduling-tick noise of each other.
    assert!(accounted.abs_diff(wall) <= wall / 100, "accounted {accounted} ns of a {wall} ns life: {time}");
}

/// Proves the loader time the report gives for an exec agrees with glibc's
/// own measurement of the same run (`LD_DEBUG=statistics`), within 25% or
/// 0.2 ms, over five real dynamically linked programs (in one of three
/// runs each: see `agreeing_loader_time`).
#[test]
fn loader_time_matches_ld_debug_statistics() {
    let sandbox = Sandbox::new();
    let ticks_per_ns = ld_debug_ticks_per_ns(&sandbox, "/usr/bin/true");
    assert!(ticks_per_ns > 0.01, "implausible LD_DEBUG counter rate {ticks_per_ns} ticks/ns");
    let programs: [(&str, &str); 5] = [
        ("/usr/bin/ls", "/"),
        ("/usr/bin/perl", "-e 1"),
        ("/usr/bin/python3.11", "-c pass"),
        ("/usr/bin/strace", "-V"),
        ("/usr/bin/bpftrace", "--version"),
    ];
    let mut comparisons = Vec::new();
    for (program, args) in programs {
        comparisons.push(agreeing_loader_time(program, || {
            let _ = fs::remove_file(sandbox.trace_path());
            // The statistics go to stderr (a pipe), which never makes the
            // loader wait between glibc's measurement and nixtrace's.
            let script = format!("LD_DEBUG=statistics exec {program} {args} >/dev/null");
            let recording = record_command(&sandbox, &["sh", "-c", &script]);
            recording.assert_exit_code(0);
            recording.trace.assert_nothing_lost();
            let report = report_json(&sandbox.trace_path(), &[]);
            let row = process_running(&report, program);
            let glibc_ns = startup_ticks(&recording.stderr) as f64 / ticks_per_ns;
            let exec = row["execs"].as_array().unwrap().last().unwrap();
            let ours = exec["loader_ns"].as_u64().expect("loader time");
            let to_entry = exec["to_entry_ns"].as_u64().expect("the program was entered");
            assert!(
                to_entry > ours,
                "{program}: exec to entry {to_entry} ns includes the loader's {ours} ns"
            );
            assert!(
                row["loader"]["init_ns"].as_u64() > Some(0),
                "{program}: initialisers ran: {}",
                row["loader"]
            );
            (ours as f64, glibc_ns)
        }));
    }
    // Shown with --nocapture: how close each one was.
    eprintln!("LD_DEBUG counter: {ticks_per_ns:.3} ticks/ns\n{}", comparisons.join("\n"));
}

/// Proves the tracer's own cost is measured when recording starts and its
/// share of an exec's loader time is that cost times the loader's calls:
/// the trace's header carries what tracing added to a failed open, an open
/// and an mmap; the report's `loader_tracer_ns` for a program with a
/// 30-directory RUNPATH (none of them there) is exactly the failed opens,
/// opens and mmaps the trace holds between its loader's start and done,
/// each times its cost; the text report says it; the calibration's own
/// calls never reach the trace; and a `--cgroup` recording, whose cgroup
/// the calibration would not run in, has none.
#[test]
fn the_tracers_share_of_loader_time_is_its_cost_per_call() {
    let sandbox = Sandbox::new();
    let program = sandbox.path("searcher");
    let runpath: Vec<String> = (0..30).map(|i| format!("/nonexistent/nixtrace-test/{i}")).collect();
    let source = sandbox.path("searcher.c");
    fs::write(&source, "int main(void) { return 0; }\n").unwrap();
    let built = run(Command::new("cc")
        .args(["-O1", "-Wl,--enable-new-dtags"])
        .arg(format!("-Wl,-rpath,{}", runpath.join(":")))
        .arg("-o")
        .arg(&program)
        .arg(&source));
    assert!(built.status.success(), "cc: {}", stderr_of(&built));

    let recording = record_command(&sandbox, &[text_of(&program)]);
    recording.assert_exit_code(0);
    let cost = &recording.trace.header["tracer_cost"];
    let per_call = |kind: &str| cost[kind].as_u64().unwrap_or_else(|| panic!("no {kind} in {cost}"));
    let (failed_cost, open_cost, mmap_cost) =
        (per_call("failed_open_ns"), per_call("open_ns"), per_call("mmap_ns"));
    for (kind, ns) in [("failed open", failed_cost), ("open", open_cost), ("mmap", mmap_cost)] {
        assert!(ns > 0, "tracing added nothing to a {kind}: {cost}");
    }
    let pid = pid_of(
        recording
            .trace
            .of_type("exec")
            .into_iter()
            .find(|e| string(e, "filename") == text_of(&program))
            .expect("the program's exec"),
    );
    let phase_ts = |phase: &str| {
        let event = recording.trace.of_pid("loader", pid).into_iter().find(|e| e["phase"] == phase);
        ts_of(event.unwrap_or_else(|| panic!("no loader {phase} of pid {pid}")))
    };
    let (start, done) = (phase_ts("start"), phase_ts("done"));
    let in_loader = |kind: &str| -> Vec<&Value> {
        recording.trace.of_pid(kind, pid).into_iter().filter(|e| (start..=done).contains(&ts_of(e))).collect()
    };
    let opens = in_loader("open");
    let failed = opens.iter().filter(|e| int(e, "ret") < 0).count() as u64;
    let succeeded = opens.len() as u64 - failed;
    let mmaps = in_loader("mmap").len() as u64;
    assert!(failed >= 30, "{failed} failed opens for 30 RUNPATH directories");

    let report = report_json(&sandbox.trace_path(), &[]);
    let exec = &process_running(&report, text_of(&program))["execs"][0];
    assert_eq!(exec["failed_lookups"].as_u64(), Some(failed), "{exec}");
    let expected = failed * failed_cost + succeeded * open_cost + mmaps * mmap_cost;
    assert_eq!(
        exec["loader_tracer_ns"].as_u64(),
        Some(expected.min(exec["loader_ns"].as_u64().unwrap())),
        "{failed} failed opens, {succeeded} opens, {mmaps} mmaps at {cost}: {exec}"
    );
    let text = run(Command::new(NIXTRACE).arg("report").arg(sandbox.trace_path()));
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("of it nixtrace's own, estimated"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let calibration = recording
        .trace
        .of_type("open")
        .into_iter()
        .filter(|e| string(e, "path").contains("nixtrace-calibration"))
        .count();
    assert_eq!(calibration, 0, "the calibration's opens reached the trace");

    let _ = fs::remove_file(sandbox.trace_path());
    let output = run(record_cmd(&sandbox.trace_path()).args(["-q", "--cgroup", "/", "--duration", "0.2"]));
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(Trace::load(&sandbox.trace_path()).header["tracer_cost"], Value::Null);
}

/// Proves the ELF facts come from the trace, read while the program ran,
/// not from whatever is at its path when the report is made: a copy of
/// /bin/true is recorded, then overwritten with text, and the report still
/// gives the build id, interpreter and size of the program that ran.
#[test]
fn elf_facts_are_those_of_the_file_that_ran() {
    let sandbox = Sandbox::new();
    let program = sandbox.path("copied-true");
    fs::copy("/bin/true", &program).unwrap();
    let size = fs::metadata(&program).unwrap().len();
    let recording = record_command(&sandbox, &[&program]);
    recording.assert_exit_code(0);
    let binary_records = recording.trace.of_type("binary");
    let recorded = binary_records
        .iter()
        .find(|b| b["path"] == text_of(&program))
        .unwrap_or_else(|| panic!("no binary record for the program: {binary_records:#?}"));
    fs::write(&program, "not an ELF file any more\n").unwrap();

    let report = report_json(&sandbox.trace_path(), &[]);
    let row = report["binaries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["path"] == text_of(&program))
        .unwrap_or_else(|| panic!("no binaries[] row: {}", report["binaries"]));
    assert_eq!(row["error"], Value::Null, "{row}");
    assert_eq!(row["size_bytes"].as_u64(), Some(size), "{row}");
    assert_eq!(row["interpreter"], "/lib64/ld-linux-x86-64.so.2", "{row}");
    let build_id = row["build_id"].as_str().unwrap_or_default();
    assert!(build_id.len() == 40 && build_id.bytes().all(|b| b.is_ascii_hexdigit()), "{row}");
    assert_eq!(row["build_id"], recorded["facts"]["build_id"], "{row} vs {recorded}");
    assert_eq!(
        (row["dev"].as_u64(), row["ino"].as_u64()),
        (recorded["dev"].as_u64(), recorded["ino"].as_u64())
    );
}

/// Proves `--color`: `always` colours the text report and `never` does not,
/// and on a real terminal (script(1) gives the report a pty) `auto`
/// colours unless NO_COLOR is set.
#[test]
fn colour_follows_color_and_no_color() {
    let sandbox = Sandbox::new();
    record_command(&sandbox, &["/bin/true"]).assert_exit_code(0);
    let trace = sandbox.trace_path();
    let report = |color: &str| {
        let output = run(Command::new(NIXTRACE).arg("report").arg(&trace).args(["--color", color]));
        assert!(output.status.success(), "{}", stderr_of(&output));
        String::from_utf8(output.stdout).unwrap()
    };
    assert!(report("always").contains("\x1b["), "--color always");
    assert!(!report("never").contains('\x1b'), "--color never");
    assert!(!report("auto").contains('\x1b'), "--color auto into a pipe");
    let on_a_terminal = |no_color: Option<&str>| {
        let mut script = Command::new("script");
        script.args(["-q", "-e", "-c", &format!("{NIXTRACE} report {}", text_of(&trace)), "/dev/null"]);
        script.env_remove("NO_COLOR");
        if let Some(value) = no_color {
            script.env("NO_COLOR", value);
        }
        let output = run(&mut script);
        assert!(output.status.success(), "script: {}", stderr_of(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(on_a_terminal(None).contains("\x1b[1m"), "auto on a terminal");
    assert!(!on_a_terminal(Some("1")).contains("\x1b[1m"), "NO_COLOR=1 on a terminal");
}
