//! End-to-end tests of `nixtrace record` and `nixtrace dump`: they run as
//! root, load the real eBPF programs into the running kernel, trace real
//! processes (mostly `tests/workload.c`) and compare the trace with what
//! those processes are known to have done.
//!
//! Run with `--test-threads=1`: system-wide recordings would otherwise see
//! each other's processes.
//!
//! Privileged tier: needs root (every test fails, never skips, without it)
//! and Debian 12 with build-essential (cc, objcopy), strace, python3, sudo
//! and util-linux (setpriv, mount). Built only with the `privileged-tests`
//! feature: `sudo -E cargo xtask test` runs it.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        process::ExitStatusExt,
    },
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::Duration,
};

use common::*;
use serde_json::Value;

/// One open event, reduced to what the `files` workload controls:
/// (syscall, path, dir, errno).
type OpenSummary = (String, String, Option<String>, Option<String>);

fn open_summary(event: &Value) -> OpenSummary {
    (
        string(event, "syscall").to_owned(),
        string(event, "path").to_owned(),
        opt_string(event, "dir").map(str::to_owned),
        opt_string(event, "errno").map(str::to_owned),
    )
}

fn expected_open(syscall: &str, path: &str, dir: Option<&str>, errno: Option<&str>) -> OpenSummary {
    (syscall.to_owned(), path.to_owned(), dir.map(str::to_owned), errno.map(str::to_owned))
}

/// Proves open/openat/openat2 (paths, directories of relative opens, dirfds, errors, flags), file and executable anonymous mmaps (named through fd reuse and dup), a failed exec and the exit are recorded exactly.
#[test]
fn files_workload_is_recorded_exactly() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();
    let dir = sandbox.files_tree();
    let d = text_of(&dir);

    let recording = record_command(&sandbox, &[text_of(&workload), "files", d]);
    recording.assert_exit_code(3);
    let trace = &recording.trace;
    trace.assert_nothing_lost();

    let exec = trace.only_exec_of(&workload, "files");
    assert_eq!(argv_of(exec), [text_of(&workload), "files", d]);
    assert_eq!(string(exec, "filename"), text_of(&workload));
    assert!(!boolean(exec, "argv_truncated"));
    assert_eq!(trace.of_type("exec").len(), 1, "only the workload execs successfully");
    let pid = pid_of(exec);

    // Opens, in order.
    let relative_names = ["exists", "inner", "nope"];
    let opens: Vec<&Value> = trace
        .of_pid("open", pid)
        .into_iter()
        .filter(|e| {
            let path = string(e, "path");
            path.contains(d) || relative_names.contains(&path)
        })
        .collect();
    let sub = format!("{d}/sub");
    let expected = vec![
        expected_open("open", &format!("{d}/exists"), None, None),
        expected_open("openat", &format!("{d}/missing"), None, Some("ENOENT")),
        expected_open("openat", "exists", Some(d), None),
        expected_open("openat", &sub, None, None),
        expected_open("openat", "inner", Some(&sub), None),
        expected_open("openat", "nope", Some(&sub), Some("ENOENT")),
        expected_open("openat2", &format!("{d}/exists"), None, None),
        expected_open("openat", &format!("{d}/exists"), None, None),
        expected_open("openat", &format!("{d}/sub/inner"), None, None),
    ];
    assert_eq!(opens.iter().map(|e| open_summary(e)).collect::<Vec<_>>(), expected);

    for event in &opens {
        let ret = int(event, "ret");
        match opt_string(event, "errno") {
            None => assert!(ret >= 0, "successful open with ret {ret}: {event}"),
            Some(_) => assert_eq!(ret, ENOENT, "failed open: {event}"),
        }
        assert_eq!(int(event, "pid"), int(event, "tid"), "single-threaded: {event}");
    }
    let sub_fd = int(opens[3], "ret");
    let dfds: Vec<i64> = opens.iter().map(|e| int(e, "dfd")).collect();
    assert_eq!(dfds, [AT_FDCWD, AT_FDCWD, AT_FDCWD, AT_FDCWD, sub_fd, sub_fd, AT_FDCWD, AT_FDCWD, AT_FDCWD]);
    let cloexec: Vec<bool> = opens.iter().map(|e| uint(e, "flags") & libc::O_CLOEXEC as u64 != 0).collect();
    assert_eq!(
        cloexec,
        [false, false, false, false, false, false, true, false, false],
        "O_CLOEXEC only on openat2"
    );
    assert_ne!(uint(opens[3], "flags") & libc::O_DIRECTORY as u64, 0, "O_DIRECTORY: {}", opens[3]);
    let reused_fd = int(opens[8], "ret");
    assert_eq!(int(opens[7], "ret"), reused_fd, "the workload checks the fd is reused");

    // File mmaps name the file behind the fd at the time of the call.
    let inner = dir.join("sub/inner");
    let inner_ino = fs::metadata(&inner).expect("stat sub/inner").ino();
    let mmaps = trace.of_pid("mmap", pid);
    let inner_maps: Vec<(u64, u64, u64, i64, u64)> = mmaps
        .iter()
        .filter(|m| opt_string(m, "path") == Some(text_of(&inner)))
        .map(|m| (uint(m, "prot"), uint(m, "len"), uint(m, "offset"), int(m, "fd"), uint(m, "ino")))
        .collect();
    assert_eq!(
        inner_maps,
        [(PROT_READ, 4096, 0, reused_fd, inner_ino), (PROT_READ | PROT_EXEC, 4096, 0, 100, inner_ino)]
    );

    // Anonymous maps: the executable one only.
    let anonymous: Vec<(u64, u64)> = mmaps
        .iter()
        .filter(|m| opt_string(m, "path").is_none())
        .map(|m| (uint(m, "prot"), uint(m, "len")))
        .collect();
    assert_eq!(anonymous, [(PROT_READ | PROT_EXEC, 4096)]);
    let non_exec_anonymous: Vec<&Value> = trace
        .of_type("mmap")
        .into_iter()
        .filter(|m| opt_string(m, "path").is_none() && uint(m, "prot") & PROT_EXEC == 0)
        .collect();
    assert!(non_exec_anonymous.is_empty(), "non-executable anonymous maps recorded: {non_exec_anonymous:#?}");

    // The failed exec.
    let failed = trace.of_type("exec_failed");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(pid_of(failed[0]), pid);
    assert_eq!(string(failed[0], "filename"), "/nonexistent/nixtrace-test-prog");
    assert_eq!(int(failed[0], "ret"), ENOENT);
    assert_eq!(string(failed[0], "errno"), "ENOENT");

    // The exit.
    let exits = trace.of_pid("exit", pid);
    assert_eq!(exits.len(), 1, "one thread, one exit: {exits:#?}");
    assert_eq!(tid_of(exits[0]), pid);
    assert!(boolean(exits[0], "group_dead"));
    assert_eq!(opt_int(exits[0], "exit_code"), Some(3));
    assert_eq!(opt_int(exits[0], "signal"), None);
}

/// Proves a three-deep fork+exec chain is followed to the end: every exec, fork link and exit code, in order.
#[test]
fn fork_exec_chain_is_followed() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();

    let recording = record_command(&sandbox, &[text_of(&workload), "chain", "3"]);
    recording.assert_exit_code(10);
    let trace = &recording.trace;
    trace.assert_nothing_lost();

    let execs = trace.execs_of(&workload, "chain");
    let argvs: Vec<Vec<&str>> = execs.iter().map(|e| argv_of(e)).collect();
    let wl = text_of(&workload);
    assert_eq!(
        argvs,
        [[wl, "chain", "3"], [wl, "chain", "2"], [wl, "chain", "1"], [wl, "chain", "0"]],
        "one exec per level, outermost first"
    );
    for exec in &execs {
        assert_eq!(string(exec, "filename"), wl);
    }
    let pids: Vec<u32> = execs.iter().map(|e| pid_of(e)).collect();
    assert_eq!(pids.iter().collect::<BTreeSet<_>>().len(), 4, "four distinct processes: {pids:?}");

    // Each level forked exactly the next one, and nothing else.
    let forks: Vec<(u32, u32, bool)> = trace
        .of_type("fork")
        .into_iter()
        .filter(|f| pids.contains(&pid_of(f)))
        .map(|f| (pid_of(f), u32::try_from(uint(f, "child_pid")).unwrap(), boolean(f, "thread")))
        .collect();
    let expected_forks: Vec<(u32, u32, bool)> = pids.windows(2).map(|w| (w[0], w[1], false)).collect();
    assert_eq!(forks, expected_forks, "fork links parent -> child");

    // Deepest exits first, each with its child's code + 1.
    let exits: Vec<(u32, Option<i64>)> = trace
        .of_type("exit")
        .into_iter()
        .filter(|e| pids.contains(&pid_of(e)))
        .map(|e| {
            assert!(boolean(e, "group_dead"), "single-threaded: {e}");
            (pid_of(e), opt_int(e, "exit_code"))
        })
        .collect();
    let expected_exits: Vec<(u32, Option<i64>)> =
        pids.iter().rev().zip(7..).map(|(pid, code)| (*pid, Some(code))).collect();
    assert_eq!(exits, expected_exits);
}

/// Proves thread creation is recorded as thread forks and each thread's open carries the process pid and that thread's tid.
#[test]
fn thread_events_carry_their_thread_ids() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();

    let recording = record_command(&sandbox, &[text_of(&workload), "threads"]);
    recording.assert_exit_code(0);
    let trace = &recording.trace;
    trace.assert_nothing_lost();
    let pid = pid_of(trace.only_exec_of(&workload, "threads"));

    let forks = trace.of_pid("fork", pid);
    assert_eq!(forks.len(), 2, "two pthread_create calls: {forks:#?}");
    let mut thread_tids = BTreeSet::new();
    for fork in &forks {
        assert!(boolean(fork, "thread"), "{fork}");
        assert_eq!(uint(fork, "child_pid"), u64::from(pid), "a thread stays in its process: {fork}");
        thread_tids.insert(u32::try_from(uint(fork, "child_tid")).unwrap());
    }
    assert_eq!(thread_tids.len(), 2);
    assert!(!thread_tids.contains(&pid));

    let dev_null_opens: Vec<&Value> =
        trace.of_pid("open", pid).into_iter().filter(|e| string(e, "path") == "/dev/null").collect();
    assert_eq!(dev_null_opens.len(), 2, "{dev_null_opens:#?}");
    for open in &dev_null_opens {
        assert!(int(open, "ret") >= 0, "{open}");
    }
    let open_tids: BTreeSet<u32> = dev_null_opens.iter().map(|e| tid_of(e)).collect();
    assert_eq!(open_tids, thread_tids, "each thread's open carries its own tid");

    // One exit per thread, and the last one ends the process.
    let exits: BTreeMap<u32, bool> =
        trace.of_pid("exit", pid).into_iter().map(|e| (tid_of(e), boolean(e, "group_dead"))).collect();
    let expected: BTreeMap<u32, bool> =
        thread_tids.iter().map(|t| (*t, false)).chain([(pid, true)]).collect();
    assert_eq!(exits, expected, "tid -> group_dead");
    assert_eq!(opt_int(trace.process_exit(pid), "exit_code"), Some(0));
}

/// Proves nixtrace sees exactly the openat calls (and failures) strace sees, over a real program's process tree.
#[test]
fn openat_counts_match_strace() {
    let sandbox = Sandbox::new();
    let (total, _) =
        assert_calls_match_strace(&sandbox, &[], &["openat"], "open", &["python3", "-c", "pass"]);
    assert!(total > 10, "python3 should open more than 10 files");
}

/// The syscalls the stat probe records, as strace names them.
const STAT_SYSCALLS: [&str; 9] =
    ["stat", "lstat", "newfstatat", "statx", "access", "faccessat", "faccessat2", "readlink", "readlinkat"];

/// Proves `record --probe stat` sees exactly the stat-family calls on a path (and their failures) that strace sees, for five programs that search paths in different ways.
#[test]
fn stat_counts_match_strace() {
    let sandbox = Sandbox::new();
    let missing = sandbox.path("missing");
    let pythonpath: Vec<String> = (1..=5).map(|i| format!("{}/{i}", missing.display())).collect();
    let pythonpath = format!("PYTHONPATH={}", pythonpath.join(":"));
    let programs: [&[&str]; 5] = [
        &["env", &pythonpath, "python3", "-c", "import json"],
        &["perl", "-e", "use POSIX; use File::Spec"],
        &["bash", "-c", "[ -x /bin/sh ] && command -v ls && type nosuchcommand; true"],
        &["ls", "-lL", "/usr/bin"],
        &["readlink", "-f", "/usr/bin/python3"],
    ];
    for program in programs {
        let (total, failed) =
            assert_calls_match_strace(&sandbox, &["--probe", "stat"], &STAT_SYSCALLS, "stat", program);
        assert!(total > 0, "{program:?} makes stat-family calls");
        if program[0] != "ls" && program[0] != "readlink" {
            assert!(failed > 0, "{program:?} looks up paths that are not there");
        }
    }
}

/// Records `strace -f -e trace=SYSCALLS -- COMMAND` with `record_args`, and
/// checks that the trace's `event_type` events of those syscalls, per
/// thread, are strace's calls and failures exactly. Returns (calls, failed).
fn assert_calls_match_strace(
    sandbox: &Sandbox,
    record_args: &[&str],
    syscalls: &[&str],
    event_type: &str,
    command: &[&str],
) -> (usize, usize) {
    let strace_log = sandbox.path("strace.txt");
    let filter = format!("trace={}", syscalls.join(","));
    let strace = ["strace", "-f", "-qq", "-e", &filter, "-o", text_of(&strace_log), "--"];
    let traced: Vec<&str> = strace.into_iter().chain(command.iter().copied()).collect();
    let record_args: Vec<&str> = ["--force"].into_iter().chain(record_args.iter().copied()).collect();
    let recording = record_command_with(sandbox, &record_args, &traced);
    recording.assert_exit_code(0);
    let trace = &recording.trace;
    trace.assert_nothing_lost();

    let strace = StraceCalls::parse(&fs::read_to_string(&strace_log).expect("read the strace log"), syscalls);
    let strace_tids = strace.tids();

    // strace hides what its first tracee does between fork and exec (its
    // own setup code); leave that window out of nixtrace's count too.
    let strace_exec = trace
        .of_type("exec")
        .into_iter()
        .find(|e| argv_of(e).first() == Some(&"strace"))
        .expect("an exec of strace");
    let strace_pid = pid_of(strace_exec);
    let first_tracee: Vec<u32> = trace
        .of_pid("fork", strace_pid)
        .into_iter()
        .map(|f| u32::try_from(uint(f, "child_pid")).unwrap())
        .filter(|child| strace_tids.contains(child))
        .collect();
    assert_eq!(first_tracee.len(), 1, "strace starts one tracee: {first_tracee:?}");
    let first_tracee = first_tracee[0];
    let tracee_exec_ts =
        ts_of(trace.of_pid("exec", first_tracee).first().expect("strace's tracee execs the command"));

    let mut nixtrace_tally = CallTally::new();
    for call in trace.of_type(event_type) {
        let tid = tid_of(call);
        let before_tracing = pid_of(call) == first_tracee && ts_of(call) < tracee_exec_ts;
        if !syscalls.contains(&string(call, "syscall")) || !strace_tids.contains(&tid) || before_tracing {
            continue;
        }
        let counts = nixtrace_tally.entry(tid).or_default();
        counts.0 += 1;
        if int(call, "ret") < 0 {
            counts.1 += 1;
        }
    }
    let differences = tally_differences(&strace.per_tid, &nixtrace_tally);
    let total: usize = nixtrace_tally.values().map(|c| c.0).sum();
    let failed: usize = nixtrace_tally.values().map(|c| c.1).sum();
    assert_eq!(total, strace.total(), "{command:?}: calls; per tid (strace, nixtrace): {differences:?}");
    assert_eq!(
        failed,
        strace.failed(),
        "{command:?}: failed calls; per tid (strace, nixtrace): {differences:?}"
    );
    (total, failed)
}

/// Records `sh -c SCRIPT`; returns the recording and the shell's exit event.
fn record_shell(sandbox: &Sandbox, script: &str) -> (Recording, Value) {
    let recording = record_command(sandbox, &["sh", "-c", script]);
    let shells: Vec<&Value> =
        recording.trace.of_type("exec").into_iter().filter(|e| argv_of(e) == ["sh", "-c", script]).collect();
    assert_eq!(shells.len(), 1, "one exec of the shell: {shells:#?}");
    let exit = recording.trace.process_exit(pid_of(shells[0])).clone();
    (recording, exit)
}

/// Proves `record -- CMD` exits with CMD's exit code, or 128+signal when CMD is killed, and the exit events say the same.
#[test]
fn exit_status_is_passed_through() {
    let sandbox = Sandbox::new();

    let (recording, exit) = record_shell(&sandbox, "exit 42");
    recording.assert_exit_code(42);
    assert_eq!((opt_int(&exit, "exit_code"), opt_int(&exit, "signal")), (Some(42), None), "{exit}");

    fs::remove_file(sandbox.trace_path()).expect("remove the first trace");
    let (recording, exit) = record_shell(&sandbox, "kill -9 $$");
    recording.assert_exit_code(128 + libc::SIGKILL);
    assert_eq!(
        (opt_int(&exit, "exit_code"), opt_int(&exit, "signal")),
        (None, Some(i64::from(libc::SIGKILL))),
        "{exit}"
    );
}

/// Proves `--pid` seeds the already-running process from /proc and records its events and nobody else's.
#[test]
fn pid_filter_follows_only_that_process() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();
    let trace_path = sandbox.trace_path();

    let sleeper = spawn(Command::new(&workload).args(["sleep", "3"]));
    let pid = sleeper.pid();
    let output = run(record_cmd(&trace_path).args(["--pid", &pid.to_string(), "--duration", "6"]));
    assert!(output.status.success(), "nixtrace record failed ({}): {}", output.status, stderr_of(&output));
    let sleeper_output = sleeper.wait(TIMEOUT);
    assert!(sleeper_output.status.success(), "workload sleep: {}", sleeper_output.status);

    let trace = Trace::load(&trace_path);
    trace.assert_nothing_lost();
    let seeded = trace.of_pid("process", pid);
    assert_eq!(seeded.len(), 1, "one seeded record of the sleeper: {seeded:#?}");
    assert_eq!(uint(seeded[0], "ppid"), u64::from(std::process::id()));
    assert_eq!(string(seeded[0], "exe"), text_of(&workload));
    assert_eq!(argv_of(seeded[0]), [text_of(&workload), "sleep", "3"]);

    let foreign: Vec<&Value> = trace.kernel_events().filter(|e| pid_of(e) != pid).collect();
    assert!(foreign.is_empty(), "events from outside the --pid tree: {foreign:#?}");
    assert!(trace.of_type("exec").is_empty());
    let exit = trace.process_exit(pid);
    assert_eq!(opt_int(exit, "exit_code"), Some(0));
}

/// Proves SIGINT stops a system-wide recording cleanly: exit 0, a complete trace ending in stats, with an exec that ran meanwhile.
#[test]
fn sigint_stops_system_wide_recording_cleanly() {
    let sandbox = Sandbox::new();
    let trace_path = sandbox.trace_path();

    let mut recorder = spawn(&mut record_cmd(&trace_path));
    recorder.wait_until_recording(&trace_path);
    thread::sleep(Duration::from_secs(1));
    let true_run = spawn(&mut Command::new("/bin/true"));
    let true_pid = true_run.pid();
    assert!(true_run.wait(TIMEOUT).status.success());
    recorder.signal(libc::SIGINT);
    let output = recorder.wait(TIMEOUT);
    assert_eq!(output.status.code(), Some(0), "nixtrace after SIGINT; stderr:\n{}", stderr_of(&output));

    let trace = Trace::load(&trace_path);
    trace.stats();
    let execs = trace.of_pid("exec", true_pid);
    assert_eq!(execs.len(), 1, "one exec of /bin/true: {execs:#?}");
    let filename = string(execs[0], "filename");
    assert!(["/bin/true", "/usr/bin/true"].contains(&filename), "{}", execs[0]);
    assert_eq!(argv_of(execs[0]), ["/bin/true"]);
}

/// The ids of the BPF programs loaded in the kernel now.
fn loaded_program_ids() -> BTreeSet<u32> {
    aya::programs::loaded_programs().map(|info| info.expect("reading a loaded program's info").id()).collect()
}

/// The `nixtrace-detach` helper `recorder` forked, waiting for it to name
/// itself (it does so first thing).
fn detach_helper_of(recorder: u32) -> u32 {
    let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
    loop {
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
            // pid (comm) state ppid ...
            let Some((head, rest)) = stat.rsplit_once(") ") else { continue };
            let ppid = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
            if head.ends_with("(nixtrace-detach") && ppid == Some(recorder) {
                return head.split(' ').next().unwrap().parse().unwrap();
            }
        }
        assert!(std::time::Instant::now() < deadline, "recorder {recorder} has no nixtrace-detach helper");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Has process `pid` exited (gone, or a zombie nobody reaped yet)?
fn has_exited(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
}

/// Proves the probes come down after `record` has exited, by the helper
/// it forked when it started (tracer/src/record/release.rs): the helper
/// holds none of the caller's descriptors (a caller reading the output to
/// its end is not kept waiting), only its socket to the recorder; it
/// outlives the recorder; and once it has exited, not one of the programs
/// the recording loaded is left in the kernel.
#[test]
fn probes_come_down_after_the_recorder_exits() {
    let sandbox = Sandbox::new();
    let trace = sandbox.trace_path();
    let before = loaded_program_ids();
    let mut recorder = spawn(record_cmd(&trace).args(["-q", "--", "sleep", "1"]));
    recorder.wait_until_recording(&trace);
    let ours: BTreeSet<u32> = loaded_program_ids().difference(&before).copied().collect();
    assert!(ours.len() >= 20, "the recording loaded {} programs: {ours:?}", ours.len());
    let helper = detach_helper_of(recorder.pid());
    let mut held: Vec<(u32, String)> = fs::read_dir(format!("/proc/{helper}/fd"))
        .unwrap()
        .flatten()
        .map(|fd| {
            let target = fs::read_link(fd.path()).unwrap().to_string_lossy().into_owned();
            let kind = if target.starts_with("socket:") { "socket".to_string() } else { target };
            (fd.file_name().to_str().unwrap().parse().unwrap(), kind)
        })
        .collect();
    held.sort();
    let held: Vec<(u32, &str)> = held.iter().map(|(fd, kind)| (*fd, kind.as_str())).collect();
    assert_eq!(held[..3], [(0, "/dev/null"), (1, "/dev/null"), (2, "/dev/null")], "{held:?}");
    assert_eq!(held[3..].iter().map(|(_, kind)| *kind).collect::<Vec<_>>(), ["socket"], "{held:?}");

    let output = recorder.wait(TIMEOUT);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let recorded = Trace::load(&trace);
    let execs: Vec<&str> = recorded.of_type("exec").into_iter().map(|e| string(e, "filename")).collect();
    assert_eq!(execs.len(), 1, "one exec, of sleep: {execs:?}");
    assert!(execs[0].ends_with("/sleep"), "{execs:?}");
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !(has_exited(helper) && loaded_program_ids().is_disjoint(&ours)) {
        assert!(
            std::time::Instant::now() < deadline,
            "{TIMEOUT:?} after the recorder exited: helper exited {}, programs left {:?}",
            has_exited(helper),
            loaded_program_ids().intersection(&ours).collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Proves a recording killed with SIGKILL leaves a trace dump still reads, with a "cut short" warning and exit 0.
#[test]
fn sigkilled_recording_dumps_as_cut_short() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();
    let trace_path = sandbox.trace_path();

    let mut recorder = spawn(record_cmd(&trace_path).arg("--").arg(&workload).args(["sleep", "3"]));
    recorder.wait_until_recording(&trace_path);
    thread::sleep(Duration::from_millis(1500));
    recorder.signal(libc::SIGKILL);
    let output = recorder.wait(TIMEOUT);
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGKILL),
        "nixtrace ended before it was killed ({}): {}",
        output.status,
        stderr_of(&output)
    );
    // The orphaned workload ends by itself within two seconds.

    let dump = dump(&trace_path);
    assert!(dump.status.success(), "dump of a cut-short trace failed ({}): {}", dump.status, dump.stderr);
    assert!(dump.stderr.contains("cut short"), "no cut-short warning: {:?}", dump.stderr);
    Trace::from_records(dump.records());
}

/// Proves dump rejects a file that is not a trace with a one-line error naming it, without panicking.
#[test]
fn dump_rejects_a_non_trace_file() {
    let sandbox = Sandbox::new();
    let text_file = sandbox.path("notatrace.txt");
    fs::write(&text_file, "this is not a nixtrace trace\n".repeat(100)).expect("write the text file");

    let dump = dump(&text_file);
    assert!(!dump.status.success(), "dump accepted a text file");
    assert!(dump.stdout.is_empty(), "dump printed records of a text file: {}", dump.stdout);
    let message = dump.stderr.trim();
    assert!(!message.contains("panicked"), "dump panicked: {message}");
    assert_eq!(message.lines().count(), 1, "expected a one-line error: {message:?}");
    assert!(message.contains("notatrace.txt"), "the error does not name the file: {message:?}");
}

/// Proves record refuses to overwrite an existing file (leaving it intact) unless given --force.
#[test]
fn record_refuses_to_overwrite_without_force() {
    let sandbox = Sandbox::new();
    let existing = sandbox.path("existing.trace");
    fs::write(&existing, "precious\n").expect("write the existing file");

    let refused = run(record_cmd(&existing).args(["--", "true"]));
    assert!(!refused.status.success(), "record overwrote {}", existing.display());
    let message = stderr_of(&refused);
    assert!(message.contains("existing.trace"), "the error does not name the file: {message:?}");
    assert_eq!(fs::read_to_string(&existing).unwrap(), "precious\n", "the existing file was modified");

    let forced = run(record_cmd(&existing).args(["--force", "--", "true"]));
    assert_eq!(forced.status.code(), Some(0), "record --force: {}", stderr_of(&forced));
    Trace::load(&existing).stats();
}

/// Proves outputs written over an existing world-readable file end up
/// private (0600), as new ones are: a trace with --force, a report with -o.
#[test]
fn overwritten_outputs_end_up_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let sandbox = Sandbox::new();
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    let trace = sandbox.path("public.ntr");
    fs::write(&trace, "old\n").unwrap();
    fs::set_permissions(&trace, fs::Permissions::from_mode(0o644)).unwrap();
    let forced = run(record_cmd(&trace).args(["-q", "--force", "--", "true"]));
    assert_eq!(forced.status.code(), Some(0), "{}", stderr_of(&forced));
    assert_eq!(mode(&trace), 0o600, "the trace");

    let report = sandbox.path("public.txt");
    fs::write(&report, "old\n").unwrap();
    fs::set_permissions(&report, fs::Permissions::from_mode(0o644)).unwrap();
    let output = run(Command::new(NIXTRACE).arg("report").arg(&trace).arg("-o").arg(&report));
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert_eq!(mode(&report), 0o600, "the report");
    assert!(fs::read_to_string(&report).unwrap().starts_with("nixtrace report:"));
}

/// Proves a recording that never started leaves nothing behind: a command
/// that does not exist gets an error, no trace file (nor a hidden partial
/// one), an existing file given with --force is left as it was, and the
/// next run is not refused with "already exists".
#[test]
fn a_failed_start_leaves_nothing_behind() {
    let sandbox = Sandbox::new();
    let trace = sandbox.path("never.ntr");
    let failed = run(record_cmd(&trace).args(["-q", "--", "/nonexistent/program"]));
    assert_eq!(failed.status.code(), Some(1), "{}", stderr_of(&failed));
    assert!(stderr_of(&failed).contains("/nonexistent/program"), "{}", stderr_of(&failed));
    let left: Vec<String> = fs::read_dir(sandbox.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!left.iter().any(|name| name.contains("never.ntr")), "left behind: {left:?}");

    let existing = sandbox.path("existing.ntr");
    fs::write(&existing, "precious\n").unwrap();
    let failed = run(record_cmd(&existing).args(["-q", "--force", "--", "/nonexistent/program"]));
    assert_eq!(failed.status.code(), Some(1), "{}", stderr_of(&failed));
    assert_eq!(fs::read_to_string(&existing).unwrap(), "precious\n", "a failed start replaced the file");

    let next = run(record_cmd(&trace).args(["-q", "--", "true"]));
    assert_eq!(next.status.code(), Some(0), "{}", stderr_of(&next));
    Trace::load(&trace).stats();
}

/// Proves the running kernel has every tracepoint the probes use, laid out
/// as they read it: a recording with no `--no-probe` attaches every probe,
/// the loader uprobes included, and leaves none out. (The unit tests choose
/// probes from a copy of a kernel's tracepoint formats; this is the running
/// kernel's tracefs.)
#[test]
fn every_probe_attaches_on_this_kernel() {
    let sandbox = Sandbox::new();
    let trace = sandbox.trace_path();
    let default = [
        "fork",
        "exec",
        "exit",
        "open",
        "mmap",
        "cgroup_mkdir",
        "page_cache",
        "block_io",
        "sched",
        "read",
        "loader",
    ];
    let mut with_stat = default.to_vec();
    with_stat.insert(10, "stat");
    // The opt-in stat probe is off unless asked for, and not missing then.
    for (args, expected) in [(&[][..], default.to_vec()), (&["--probe", "stat"][..], with_stat)] {
        let output = run(record_cmd(&trace).arg("-qf").args(args).args(["--", "/bin/true"]));
        assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
        let header = Trace::load(&trace).header;
        let probes: Vec<&str> =
            header["probes"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert_eq!(probes, expected, "{header}");
        assert_eq!(header["missing_probes"], Value::Array(Vec::new()), "{header}");
    }
}

/// Proves the kernel's types can come from a vmlinux file's .BTF section,
/// as on kernels without /sys/kernel/btf/vmlinux: a vmlinux made with
/// objcopy records the same exec, and a file without BTF is a one-line
/// error that leaves no trace behind.
#[test]
fn record_reads_btf_from_a_vmlinux_file() {
    let sandbox = Sandbox::new();
    let vmlinux = sandbox.path("vmlinux");
    let objcopy = run(Command::new("objcopy")
        .args(["--add-section", ".BTF=/sys/kernel/btf/vmlinux", "/bin/true"])
        .arg(&vmlinux));
    assert!(objcopy.status.success(), "objcopy: {}", stderr_of(&objcopy));

    let trace = sandbox.trace_path();
    let output = run(record_cmd(&trace).arg("--btf").arg(&vmlinux).args(["-q", "--", "/bin/echo", "btf"]));
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    Trace::load(&trace).only_exec_of(Path::new("/bin/echo"), "btf");

    let other = sandbox.path("other.ntr");
    let refused = run(record_cmd(&other).args(["--btf", "/bin/true", "--", "/bin/true"]));
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(stderr_of(&refused), "nixtrace: error: /bin/true has no .BTF section\n");
    assert!(!other.exists(), "a failed start left a trace behind");
}

/// Records `workload opens N PATH` with the given extra record arguments.
fn record_opens(sandbox: &Sandbox, workload: &Path, count: u32, extra: &[&str]) -> (Output, Trace) {
    let trace_path = sandbox.trace_path();
    let _ = fs::remove_file(&trace_path);
    let output = run(record_cmd(&trace_path).args(extra).arg("--").arg(workload).args([
        "opens",
        &count.to_string(),
        "/nix/store/nixtrace-test-missing",
    ]));
    assert_eq!(output.status.code(), Some(0), "record: {}", stderr_of(&output));
    (output, Trace::load(&trace_path))
}

/// Proves events that do not fit the ring buffer are counted per probe in the kernel, written to the trace and shown to the user: recorded + lost equals what the program did, exactly.
#[test]
fn lost_events_are_counted_exactly() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();
    // The opens the dynamic loader makes before `main`, with room to spare.
    let (_, baseline) = record_opens(&sandbox, &workload, 0, &[]);
    baseline.assert_nothing_lost();
    let loader_opens = baseline.of_type("open").len() as u64;
    let loader_mmaps = baseline.of_type("mmap").len() as u64;

    let storm = 200_000;
    let (output, trace) = record_opens(&sandbox, &workload, storm, &["--buffer-size", "4096"]);
    let stats = trace.stats();
    let lost = &stats["lost"];
    let lost_opens = uint(lost, "open");
    assert!(lost_opens > 0, "a 4 KiB ring buffer should overflow: {stats}");
    // Every open and mmap the program made is either in the trace or
    // counted as lost, for each probe.
    let recorded = |kind: &str| trace.of_type(kind).len() as u64;
    assert_eq!(recorded("open") + lost_opens, u64::from(storm) + loader_opens, "{stats}");
    assert_eq!(recorded("mmap") + uint(lost, "mmap"), loader_mmaps, "{stats}");
    let stderr = stderr_of(&output);
    let warning = format!("incomplete trace: {}", lost_description(lost));
    assert!(stderr.contains(&warning), "the user is not told {warning:?}: {stderr}");
    let sum: u64 = lost.as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(uint(stats, "lost_total"), sum, "{stats}");
}

/// A cgroup v2 directory made for one test, removed afterwards.
struct TestCgroup {
    path: PathBuf,
    /// Relative to the cgroup v2 root.
    name: String,
}

impl TestCgroup {
    fn new(tag: &str) -> TestCgroup {
        let root = cgroup2_root();
        let name = format!("/nixtrace-test-{tag}-{}", std::process::id());
        let path = root.join(&name[1..]);
        fs::create_dir(&path).expect("create the test cgroup");
        TestCgroup { path, name }
    }

    fn id(&self) -> u64 {
        fs::metadata(&self.path).unwrap().ino()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in [self.path.join("child"), self.path.clone()] {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Proves `--cgroup` traces only tasks in that cgroup, and that a cgroup created while recording is recorded with its id and path.
#[test]
fn cgroup_filter_and_cgroup_creation() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();
    let trace_path = sandbox.trace_path();
    let cgroup = TestCgroup::new("filter");

    let mut recorder = spawn(record_cmd(&trace_path).args(["--cgroup", &cgroup.name, "--duration", "4"]));
    recorder.wait_until_recording(&trace_path);
    thread::sleep(Duration::from_millis(500));
    fs::create_dir(cgroup.path.join("child")).expect("create a child cgroup");
    let procs = cgroup.path.join("cgroup.procs");
    let script = format!("echo $$ > {}; exec {} opens 3 /etc/hostname", procs.display(), workload.display());
    let inside = run(Command::new("sh").args(["-c", &script]));
    assert!(inside.status.success(), "workload in the cgroup: {}", stderr_of(&inside));
    let outside = run(Command::new(&workload).args(["opens", "3", "/etc/hostname"]));
    assert!(outside.status.success());
    let output = recorder.wait(TIMEOUT);
    assert_eq!(output.status.code(), Some(0), "record: {}", stderr_of(&output));

    let trace = Trace::load(&trace_path);
    trace.assert_nothing_lost();
    let id = cgroup.id();
    let foreign: Vec<&Value> = trace.kernel_events().filter(|e| uint(e, "cgroup_id") != id).collect();
    assert!(foreign.is_empty(), "events from outside --cgroup: {foreign:#?}");
    let execs = trace.execs_of(&workload, "opens");
    assert_eq!(execs.len(), 1, "only the workload inside the cgroup: {execs:#?}");
    let hostname_opens = trace
        .of_pid("open", pid_of(execs[0]))
        .into_iter()
        .filter(|e| string(e, "path") == "/etc/hostname")
        .count();
    assert_eq!(hostname_opens, 3);

    let child_id = fs::metadata(cgroup.path.join("child")).unwrap().ino();
    let created: Vec<(u64, u64, String, bool)> = trace
        .of_type("cgroup")
        .into_iter()
        .filter(|c| string(c, "path").starts_with(&cgroup.name))
        .map(|c| (uint(c, "id"), uint(c, "level"), string(c, "path").to_owned(), boolean(c, "seeded")))
        .collect();
    assert_eq!(
        created,
        [(id, 1, cgroup.name.clone(), true), (child_id, 2, format!("{}/child", cgroup.name), false)]
    );
}

/// Proves that under sudo the command runs as the invoking user (from SUDO_UID/SUDO_GID), and as root with --run-as-root; and that the trace is private to its owner.
#[test]
fn command_runs_as_the_sudo_user() {
    let sandbox = Sandbox::new();
    let trace_path = sandbox.trace_path();
    let ids = sandbox.path("ids");
    let script = format!("id -u > {0}; id -g >> {0}", ids.display());
    let as_user = |extra: &[&str]| {
        let _ = fs::remove_file(&trace_path);
        let _ = fs::remove_file(&ids);
        let output = run(record_cmd(&trace_path)
            .env("SUDO_UID", "65534")
            .env("SUDO_GID", "65534")
            .env("SUDO_USER", "nobody")
            .args(extra)
            .args(["--", "sh", "-c", &script]));
        assert_eq!(output.status.code(), Some(0), "record: {}", stderr_of(&output));
        fs::read_to_string(&ids).expect("the command wrote its ids")
    };
    // The sandbox must be writable by nobody for the first run.
    fs::set_permissions(sandbox.path(""), fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(as_user(&[]), "65534\n65534\n");
    assert_eq!(as_user(&["--run-as-root"]), "0\n0\n");
    assert_eq!(fs::metadata(&trace_path).unwrap().mode() & 0o777, 0o600, "trace file mode");
}

/// Proves that without the privileges it needs, record says which ones are
/// missing in one line, exits non-zero and leaves no file behind.
#[test]
fn unprivileged_record_names_what_is_missing() {
    let sandbox = Sandbox::new();
    fs::set_permissions(sandbox.path(""), fs::Permissions::from_mode(0o777)).unwrap();
    let trace_path = sandbox.trace_path();
    let output = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", NIXTRACE, "record", "-o"])
        .arg(&trace_path)
        .args(["--", "true"]));
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    let message = stderr_of(&output);
    assert_eq!(message.trim().lines().count(), 1, "one line: {message:?}");
    for needed in ["root", "CAP_BPF", "CAP_PERFMON", "sudo"] {
        assert!(message.contains(needed), "does not mention {needed}: {message}");
    }
    assert!(!trace_path.exists(), "a failed start left {}", trace_path.display());
}

/// A small tmpfs mounted for one test, unmounted afterwards.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn new(dir: PathBuf, size: &str) -> SmallDisk {
        fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(mounted.success(), "mount a tmpfs on {}", dir.display());
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Proves a full disk stops the recording with a one-line error naming the
/// problem and a non-zero exit, and that what was written before reads back
/// (as a trace cut short).
#[test]
fn a_full_disk_stops_recording_without_corrupting_the_trace() {
    let sandbox = Sandbox::new();
    let workload = sandbox.build_workload();
    let disk = SmallDisk::new(sandbox.path("small"), "512k");
    let trace_path = disk.0.join("trace.ntr");
    let output = run(record_cmd(&trace_path).arg("--").arg(&workload).args([
        "opens",
        "300000",
        "/nix/store/nixtrace-test-missing",
    ]));
    let message = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("No space left on device"), "{message}");
    assert_eq!(message.lines().filter(|l| l.starts_with("nixtrace: error")).count(), 1, "{message}");

    let dump = dump(&trace_path);
    assert!(dump.status.success(), "the partial trace reads back: {}", dump.stderr);
    assert!(dump.stderr.contains("cut short"), "{}", dump.stderr);
    let trace = Trace::from_records(dump.records());
    assert!(trace.of_type("open").len() > 1000, "what was written before the disk filled is there");
}

/// Proves --redact masks what it matches in every recorded command line,
/// and that the secret appears nowhere in the trace file's bytes; and that
/// a bad pattern is refused before anything runs.
#[test]
fn redact_keeps_secrets_out_of_the_trace() {
    let sandbox = Sandbox::new();
    let trace_path = sandbox.trace_path();
    let output = run(record_cmd(&trace_path).args([
        "--redact",
        "hunter[0-9]+",
        "--",
        "sh",
        "-c",
        "true",
        "argv0",
        "--password=hunter22",
    ]));
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let raw = fs::read(&trace_path).unwrap();
    assert!(!raw.windows(8).any(|w| w == b"hunter22"), "the secret is in the trace file");
    let trace = Trace::load(&trace_path);
    let shells: Vec<&Value> =
        trace.of_type("exec").into_iter().filter(|e| argv_of(e).first() == Some(&"sh")).collect();
    assert_eq!(shells.len(), 1);
    assert_eq!(argv_of(shells[0]), ["sh", "-c", "true", "argv0", "--password=<redacted>"]);

    let refused = run(record_cmd(&sandbox.path("other.ntr")).args(["--redact", "(", "--", "true"]));
    assert_eq!(refused.status.code(), Some(2), "{}", stderr_of(&refused));
    assert!(stderr_of(&refused).contains("--redact"), "{}", stderr_of(&refused));
    assert!(!sandbox.path("other.ntr").exists());
}

/// Two store paths built in this machine's Nix store (a derivation without
/// inputs, built by `/bin/sh` with the test's `PATH`): `proga`, whose
/// `bin/prog` names `libb`, so that Nix records the reference. Returns
/// their store paths (proga, libb); the out-links stay in the sandbox.
fn build_store_pair(sandbox: &Sandbox) -> (String, String) {
    let expression = sandbox.path("pair.nix");
    fs::write(
        &expression,
        r#"
let
  drv = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = builtins.getEnv "PATH";
    args = [ "-c" script ];
  };
  libb = drv "nixtrace-test-libb-1.0" "mkdir -p $out/lib && echo b > $out/lib/libb.txt";
  proga = drv "nixtrace-test-proga-1.0" ''
    mkdir -p $out/bin && printf '#!/bin/sh\necho uses ${libb}\n' > $out/bin/prog && chmod +x $out/bin/prog
  '';
in { inherit libb proga; }
"#,
    )
    .expect("write pair.nix");
    let output = run(Command::new("nix-build")
        .args(["--option", "sandbox", "false", "--option", "build-users-group", ""])
        .args(["--option", "substituters", "", "-A", "proga", "-A", "libb", "-o"])
        .arg(sandbox.path("result"))
        .arg(&expression));
    assert!(output.status.success(), "nix-build failed ({}): {}", output.status, stderr_of(&output));
    let stdout = String::from_utf8(output.stdout).expect("nix-build prints UTF-8");
    let paths: Vec<&str> = stdout.lines().collect();
    let [proga, libb] = paths[..] else { panic!("nix-build printed {stdout:?}") };
    (proga.to_owned(), libb.to_owned())
}

/// Proves `record` writes the store's graph of the store paths the command
/// touched and of their closure: the program's store path, with its deriver
/// and the library's store path as its reference, and the library's (which
/// only the closure brings in: nothing else in the trace names it), each
/// once; then exactly one `store_graph` record, complete, after them.
#[test]
fn the_closure_of_the_touched_store_paths_is_recorded() {
    let sandbox = Sandbox::new();
    let (proga, libb) = build_store_pair(&sandbox);
    let recording = record_command(&sandbox, &[format!("{proga}/bin/prog")]);
    recording.assert_exit_code(0);
    let trace = &recording.trace;
    assert!(trace.of_type("exec").iter().any(|e| string(e, "filename") == format!("{proga}/bin/prog")));

    let store_paths = trace.of_type("store_path");
    let by_path: BTreeMap<&str, &Value> = store_paths.iter().map(|r| (string(r, "path"), *r)).collect();
    assert_eq!(by_path.len(), store_paths.len(), "a store path recorded twice: {store_paths:#?}");
    let a =
        by_path.get(proga.as_str()).unwrap_or_else(|| panic!("no store_path of {proga}: {store_paths:#?}"));
    assert_eq!(a["references"], serde_json::json!([libb]), "{a}");
    assert!(string(a, "deriver").ends_with("-nixtrace-test-proga-1.0.drv"), "{a}");
    let b = by_path.get(libb.as_str()).unwrap_or_else(|| panic!("no store_path of {libb}: {store_paths:#?}"));
    assert_eq!(b["references"], serde_json::json!([]), "{b}");
    assert!(string(b, "deriver").ends_with("-nixtrace-test-libb-1.0.drv"), "{b}");
    let naming_libb: Vec<&Value> =
        trace.records.iter().filter(|r| r["type"] != "store_path" && r.to_string().contains(&libb)).collect();
    assert!(naming_libb.is_empty(), "only the closure should name {libb}: {naming_libb:#?}");

    let graphs: Vec<usize> = trace
        .records
        .iter()
        .enumerate()
        .filter(|(_, r)| r["type"] == "store_graph")
        .map(|(i, _)| i)
        .collect();
    let [graph] = graphs[..] else { panic!("{} store_graph records", graphs.len()) };
    let record = &trace.records[graph];
    assert!(boolean(record, "complete") && opt_string(record, "error").is_none(), "{record}");
    let last_store_path = trace.records.iter().rposition(|r| r["type"] == "store_path").unwrap();
    assert!(last_store_path < graph, "the store_graph record comes after every store_path record");
}
