//! Helpers for nixtrace's integration tests: a per-test sandbox directory,
//! the C workload (`tests/workload.c`), running `nixtrace record` and
//! `nixtrace dump` under a timeout, picking events out of a parsed trace,
//! what glibc's loader says about itself (`LD_DEBUG`), and the Nix store
//! fixture (`tests/nix/`).
//!
//! Accessors panic with the offending event when a field is missing or has
//! the wrong JSON type, so a schema change fails loudly instead of filtering
//! events away.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsStr,
    fs::{self, File},
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tempfile::TempDir;

/// The binary under test.
pub const NIXTRACE: &str = env!("CARGO_BIN_EXE_nixtrace");
const WORKLOAD_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/workload.c");

/// Longest any single command may run before the test fails (eBPF loading
/// and BTF parsing can be slow on a loaded 2-core machine).
pub const TIMEOUT: Duration = Duration::from_secs(120);
/// Longest `nixtrace record` may take to create its output file.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Record types produced by the kernel probes (as opposed to the header,
/// seeded `process`/`cgroup` records and `stats`).
pub const KERNEL_EVENT_TYPES: [&str; 7] = ["fork", "exec", "exec_failed", "exit", "open", "mmap", "loader"];

pub const PROT_READ: u64 = 1;
pub const PROT_EXEC: u64 = 4;
pub const AT_FDCWD: i64 = -100;
pub const ENOENT: i64 = -2;

/// Every test loads eBPF programs (or shares the suite's contract): never
/// skip. The suites are only built with the `privileged-tests` feature, so
/// plain `cargo test` never gets here; run as an ordinary user with the
/// feature, every test fails, loudly.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("these tests load eBPF programs: run as root");
    }
}

/// Where the cgroup v2 hierarchy is mounted.
pub fn cgroup2_root() -> PathBuf {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            right.starts_with("cgroup2 ").then(|| PathBuf::from(left.split(' ').nth(4).unwrap()))
        })
        .expect("a cgroup v2 hierarchy is mounted")
}

// ---------------------------------------------------------------------------
// Sandbox

/// A fresh directory for one test: the compiled workload, files it works on,
/// traces and logs. Lives under cargo's target tmpdir, which is never
/// mounted noexec (the workload runs and maps PROT_EXEC from there). All
/// paths are canonical, so they compare equal to kernel-reconstructed ones.
pub struct Sandbox {
    _dir: TempDir,
    root: PathBuf,
}

impl Sandbox {
    /// Checks for root, then creates the directory.
    pub fn new() -> Sandbox {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("nixtrace-test-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("create the test's temporary directory");
        let root = dir.path().canonicalize().expect("canonicalize the temporary directory");
        Sandbox { _dir: dir, root }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Where the test's trace goes.
    pub fn trace_path(&self) -> PathBuf {
        self.path("trace.nxt")
    }

    /// Compiles `tests/workload.c` into the sandbox; returns its absolute path.
    pub fn build_workload(&self) -> PathBuf {
        let binary = self.path("workload");
        let output = Command::new("cc")
            .args(["-O1", "-pthread", "-Wall", "-o"])
            .arg(&binary)
            .arg(WORKLOAD_SOURCE)
            .output()
            .expect("run cc (a C compiler is needed to build tests/workload.c)");
        assert!(
            output.status.success(),
            "compiling {WORKLOAD_SOURCE} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        binary
    }

    /// Creates the tree the `files` workload expects: `DIR/exists` and
    /// `DIR/sub/inner`, regular files big enough to mmap a page of.
    pub fn files_tree(&self) -> PathBuf {
        let dir = self.path("data");
        fs::create_dir_all(dir.join("sub")).expect("create data/sub");
        for file in ["exists", "sub/inner"] {
            fs::write(dir.join(file), vec![b'x'; 8192]).unwrap_or_else(|e| panic!("write {file}: {e}"));
        }
        dir
    }
}

/// A path as UTF-8 (sandbox paths always are).
pub fn text_of(path: &Path) -> &str {
    path.to_str().unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()))
}

// ---------------------------------------------------------------------------
// Running processes

/// A spawned process whose stdout and stderr go to anonymous temporary files
/// (so a chatty process never blocks on a full pipe).
pub struct Running {
    child: Child,
    stdout: File,
    stderr: File,
    description: String,
}

/// Starts `command` with stdin from /dev/null and captured output.
pub fn spawn(command: &mut Command) -> Running {
    let stdout = tempfile::tempfile().expect("create stdout capture file");
    let stderr = tempfile::tempfile().expect("create stderr capture file");
    let description = format!("{command:?}");
    let child = command
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().expect("dup stdout capture"))
        .stderr(stderr.try_clone().expect("dup stderr capture"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {description}: {e}"));
    Running { child, stdout, stderr, description }
}

/// Runs `command` to completion (at most [`TIMEOUT`]).
pub fn run(command: &mut Command) -> Output {
    spawn(command).wait(TIMEOUT)
}

fn read_all(mut file: &File) -> Vec<u8> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0)).expect("rewind capture file");
    file.read_to_end(&mut bytes).expect("read capture file");
    bytes
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain syscall; the child is not reaped yet, so its pid is still ours.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}): {}", self.child.id(), std::io::Error::last_os_error());
    }

    fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&read_all(&self.stderr)).into_owned()
    }

    /// Waits until the recorder has written the trace header to `path`,
    /// which it does only once every probe is attached; panics if the
    /// process exits first or this takes longer than [`STARTUP_TIMEOUT`].
    pub fn wait_until_recording(&mut self, path: &Path) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while fs::metadata(path).map_or(true, |m| m.len() == 0) {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "{} exited ({status}) before writing the header of {}; stderr:\n{}",
                    self.description,
                    path.display(),
                    self.stderr_so_far()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start recording into {} within {STARTUP_TIMEOUT:?}; stderr:\n{}",
                self.description,
                path.display(),
                self.stderr_so_far()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit; kills it and panics after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not finish within {timeout:?}; stderr:\n{}",
                    self.description,
                    self.stderr_so_far()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        Output { status, stdout: read_all(&self.stdout), stderr: read_all(&self.stderr) }
    }
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `nixtrace record -o TRACE`, ready for more arguments.
pub fn record_cmd(trace: &Path) -> Command {
    let mut command = Command::new(NIXTRACE);
    command.arg("record").arg("-o").arg(trace);
    command
}

// ---------------------------------------------------------------------------
// Recording a command

/// The result of `nixtrace record -o TRACE -- CMD...`.
pub struct Recording {
    pub status: ExitStatus,
    pub stderr: String,
    pub trace: Trace,
}

impl Recording {
    /// nixtrace must have exited with `expected` (CMD's status passed through).
    pub fn assert_exit_code(&self, expected: i32) {
        assert_eq!(
            self.status.code(),
            Some(expected),
            "nixtrace record exited with {}; stderr:\n{}",
            self.status,
            self.stderr
        );
    }
}

/// Records `command` into the sandbox's trace file and loads the trace.
pub fn record_command<S: AsRef<OsStr>>(sandbox: &Sandbox, command: &[S]) -> Recording {
    record_command_with(sandbox, &[], command)
}

/// [`record_command`] with more `record` arguments (`--probe stat`).
pub fn record_command_with<S: AsRef<OsStr>>(sandbox: &Sandbox, args: &[&str], command: &[S]) -> Recording {
    record_with(sandbox, record_cmd(&sandbox.trace_path()).args(args).arg("--").args(command))
}

/// [`record_command`] without the `LD_LIBRARY_PATH` that cargo gives the
/// tests (it points into target/): the traced programs search only the
/// directories they name themselves, as they do outside the tests.
pub fn record_command_without_library_path<S: AsRef<OsStr>>(sandbox: &Sandbox, command: &[S]) -> Recording {
    record_with(
        sandbox,
        record_cmd(&sandbox.trace_path()).env_remove("LD_LIBRARY_PATH").arg("--").args(command),
    )
}

fn record_with(sandbox: &Sandbox, record: &mut Command) -> Recording {
    let trace_path = sandbox.trace_path();
    let output = run(record);
    let stderr = stderr_of(&output);
    assert!(trace_path.exists(), "nixtrace record ({}) wrote no trace; stderr:\n{stderr}", output.status);
    Recording { status: output.status, stderr, trace: Trace::load(&trace_path) }
}

// ---------------------------------------------------------------------------
// Dumping and parsing

/// The raw result of `nixtrace dump FILE`.
pub struct Dump {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

pub fn dump(trace: &Path) -> Dump {
    let output = run(Command::new(NIXTRACE).arg("dump").arg(trace));
    Dump {
        status: output.status,
        stdout: String::from_utf8(output.stdout).expect("dump output is UTF-8"),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Dump {
    /// Every stdout line as JSON; panics on a line that is not.
    pub fn records(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("dump line {} is not JSON ({e}): {line}", i + 1))
            })
            .collect()
    }
}

/// A parsed trace: the header, then every other record in dump order.
pub struct Trace {
    pub header: Value,
    pub records: Vec<Value>,
}

impl Trace {
    /// Dumps a trace that must be complete: dump succeeds and does not warn
    /// that the trace was cut short.
    pub fn load(path: &Path) -> Trace {
        let dump = dump(path);
        assert!(dump.status.success(), "nixtrace dump failed ({}): {}", dump.status, dump.stderr);
        assert!(
            !dump.stderr.contains("cut short"),
            "a complete trace was reported as cut short: {}",
            dump.stderr
        );
        Trace::from_records(dump.records())
    }

    /// Splits off the header, which must be the first record.
    pub fn from_records(mut records: Vec<Value>) -> Trace {
        assert!(!records.is_empty(), "dump printed nothing");
        let header = records.remove(0);
        assert_eq!(header["type"], "header", "first dump line is not the header: {header}");
        for key in ["kernel_release", "boot_id", "nixtrace_version", "probes"] {
            assert!(header.get(key).is_some(), "header lacks {key:?}: {header}");
        }
        Trace { header, records }
    }

    /// Records of one type, in time order (stable sort on `ts_ns`; records
    /// without one keep dump order).
    pub fn of_type(&self, kind: &str) -> Vec<&Value> {
        let mut selected: Vec<&Value> = self.records.iter().filter(|r| r["type"] == kind).collect();
        selected.sort_by_key(|r| r.get("ts_ns").and_then(Value::as_u64).unwrap_or(0));
        selected
    }

    /// Records of one type from process `pid`, in time order.
    pub fn of_pid(&self, kind: &str, pid: u32) -> Vec<&Value> {
        self.of_type(kind).into_iter().filter(|r| pid_of(r) == pid).collect()
    }

    /// Every record made by a kernel probe, in dump order.
    pub fn kernel_events(&self) -> impl Iterator<Item = &Value> {
        self.records.iter().filter(|r| KERNEL_EVENT_TYPES.iter().any(|t| r["type"] == *t))
    }

    /// Exec events of `program` run as `program MODE ...` (the workload's
    /// modes), in time order.
    pub fn execs_of(&self, program: &Path, mode: &str) -> Vec<&Value> {
        let program = text_of(program);
        self.of_type("exec")
            .into_iter()
            .filter(|e| {
                let argv = argv_of(e);
                argv.first() == Some(&program) && argv.get(1) == Some(&mode)
            })
            .collect()
    }

    /// The single exec of `program MODE ...`.
    pub fn only_exec_of(&self, program: &Path, mode: &str) -> &Value {
        let execs = self.execs_of(program, mode);
        assert_eq!(execs.len(), 1, "expected one exec of {} {mode}: {execs:#?}", program.display());
        execs[0]
    }

    /// The exit event that ended process `pid` (its last thread's).
    pub fn process_exit(&self, pid: u32) -> &Value {
        let exits: Vec<&Value> =
            self.of_pid("exit", pid).into_iter().filter(|e| boolean(e, "group_dead")).collect();
        assert_eq!(exits.len(), 1, "expected one group_dead exit of pid {pid}: {exits:#?}");
        exits[0]
    }

    /// The stats record, which must be the trace's last record.
    pub fn stats(&self) -> &Value {
        let last = self.records.last().expect("trace has no records after the header");
        assert_eq!(last["type"], "stats", "the last record is not the stats record: {last}");
        last
    }

    /// No probe lost events.
    pub fn assert_nothing_lost(&self) {
        let stats = self.stats();
        assert_eq!(int(stats, "lost_total"), 0, "events were lost: {}", stats["lost"]);
    }
}

// ---------------------------------------------------------------------------
// Field accessors

fn field<'a>(record: &'a Value, key: &str) -> &'a Value {
    record.get(key).unwrap_or_else(|| panic!("record has no {key:?}: {record}"))
}

/// How nixtrace words lost events, from a stats record's `lost` object or a
/// report's `lost_by_probe`: "N events lost (open: 3, mmap: 1)".
pub fn lost_description(lost: &Value) -> String {
    let by_probe = lost.as_object().expect("an object of loss counts");
    let total: u64 = by_probe.values().map(|n| n.as_u64().unwrap()).sum();
    let nonzero: Vec<String> = by_probe
        .iter()
        .filter(|(_, n)| n.as_u64() > Some(0))
        .map(|(probe, n)| format!("{probe}: {n}"))
        .collect();
    format!("{total} events lost ({})", nonzero.join(", "))
}

pub fn int(record: &Value, key: &str) -> i64 {
    field(record, key).as_i64().unwrap_or_else(|| panic!("{key:?} is not an integer: {record}"))
}

/// An integer that may be null.
pub fn opt_int(record: &Value, key: &str) -> Option<i64> {
    match field(record, key) {
        Value::Null => None,
        value => Some(value.as_i64().unwrap_or_else(|| panic!("{key:?} is not an integer: {record}"))),
    }
}

pub fn uint(record: &Value, key: &str) -> u64 {
    field(record, key).as_u64().unwrap_or_else(|| panic!("{key:?} is not unsigned: {record}"))
}

pub fn string<'a>(record: &'a Value, key: &str) -> &'a str {
    field(record, key).as_str().unwrap_or_else(|| panic!("{key:?} is not a string: {record}"))
}

/// A string that may be null.
pub fn opt_string<'a>(record: &'a Value, key: &str) -> Option<&'a str> {
    match field(record, key) {
        Value::Null => None,
        value => Some(value.as_str().unwrap_or_else(|| panic!("{key:?} is not a string: {record}"))),
    }
}

pub fn boolean(record: &Value, key: &str) -> bool {
    field(record, key).as_bool().unwrap_or_else(|| panic!("{key:?} is not a bool: {record}"))
}

pub fn pid_of(record: &Value) -> u32 {
    u32::try_from(uint(record, "pid")).expect("pid fits u32")
}

pub fn tid_of(record: &Value) -> u32 {
    u32::try_from(uint(record, "tid")).expect("tid fits u32")
}

pub fn ts_of(record: &Value) -> u64 {
    uint(record, "ts_ns")
}

pub fn argv_of(record: &Value) -> Vec<&str> {
    field(record, "argv")
        .as_array()
        .unwrap_or_else(|| panic!("argv is not an array: {record}"))
        .iter()
        .map(|a| a.as_str().unwrap_or_else(|| panic!("argv element is not a string: {record}")))
        .collect()
}

// ---------------------------------------------------------------------------
// strace output

/// (calls, failed calls).
pub type CallCount = (usize, usize);
/// [`CallCount`] per thread id.
pub type CallTally = BTreeMap<u32, CallCount>;

/// The calls of some syscalls on a path in an `strace -f -o FILE -e
/// trace=...` log: calls on an empty path (`newfstatat(3, "", ...)`, which
/// is fstat) are left out, as nixtrace's stat probe leaves them out.
#[derive(Debug, Default)]
pub struct StraceCalls {
    /// Keyed by strace's first column, which is a thread id.
    pub per_tid: CallTally,
}

impl StraceCalls {
    /// Parses lines like `1234 openat(AT_FDCWD, "x", O_RDONLY) = 3` or
    /// `... = -1 ENOENT (...)`. A call split into `<unfinished ...>` and
    /// `<... openat resumed>` is counted once, at its resumed line. Other
    /// lines (signals, exits) only register their thread, with no calls.
    pub fn parse(log: &str, syscalls: &[&str]) -> StraceCalls {
        let mut parsed = StraceCalls::default();
        // Threads inside a call on an empty path, until it resumes.
        let mut empty_unfinished: BTreeSet<u32> = BTreeSet::new();
        for line in log.lines() {
            let Some((tid, call)) = line.trim_start().split_once(char::is_whitespace) else { continue };
            let Ok(tid) = tid.parse::<u32>() else { continue };
            // Threads strace saw (if only through a signal) but that made no
            // such call count too: nixtrace must see none from them either.
            let counts = parsed.per_tid.entry(tid).or_default();
            let call = call.trim_start();
            let started = syscalls.iter().any(|s| call.starts_with(&format!("{s}(")));
            let resumed = syscalls.iter().any(|s| call.starts_with(&format!("<... {s} resumed>")));
            let on_empty_path = started
                && call.split_once('(').is_some_and(|(_, args)| {
                    args.starts_with("\"\"")
                        || args.split_once(", ").is_some_and(|(_, rest)| rest.starts_with("\"\""))
                });
            if started && call.ends_with("<unfinished ...>") {
                if on_empty_path {
                    empty_unfinished.insert(tid);
                }
                continue;
            }
            if on_empty_path || (resumed && empty_unfinished.remove(&tid)) || !(started || resumed) {
                continue;
            }
            // strace pads before " = RESULT"; a path containing " = " comes earlier.
            let result = call
                .rsplit_once(" = ")
                .map(|(_, r)| r.split_whitespace().next().unwrap_or(""))
                .unwrap_or_else(|| panic!("strace line without a result: {line}"));
            let ret: i64 =
                result.parse().unwrap_or_else(|_| panic!("strace line with an unknown result: {line}"));
            counts.0 += 1;
            if ret < 0 {
                counts.1 += 1;
            }
        }
        parsed
    }

    pub fn tids(&self) -> BTreeSet<u32> {
        self.per_tid.keys().copied().collect()
    }

    pub fn total(&self) -> usize {
        self.per_tid.values().map(|c| c.0).sum()
    }

    pub fn failed(&self) -> usize {
        self.per_tid.values().map(|c| c.1).sum()
    }
}

/// Threads whose (calls, failed) differ between two per-tid tallies, for
/// assertion messages.
pub fn tally_differences(expected: &CallTally, actual: &CallTally) -> Vec<(u32, CallCount, CallCount)> {
    expected
        .keys()
        .chain(actual.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter_map(|tid| {
            let e = expected.get(tid).copied().unwrap_or_default();
            let a = actual.get(tid).copied().unwrap_or_default();
            (e != a).then_some((*tid, e, a))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Reports

/// `nixtrace report TRACE --format json`, parsed.
pub fn report_json(trace: &Path, extra: &[&str]) -> Value {
    let output = run(Command::new(NIXTRACE).arg("report").arg(trace).args(["--format", "json"]).args(extra));
    assert!(output.status.success(), "report failed: {}", stderr_of(&output));
    serde_json::from_slice(&output.stdout).expect("the JSON report parses")
}

/// The report's row for the process whose last exec ran `program`.
pub fn process_running<'a>(report: &'a Value, program: &str) -> &'a Value {
    let rows: Vec<&Value> = report["processes"]
        .as_array()
        .expect("processes[]")
        .iter()
        .filter(|p| p["execs"].as_array().and_then(|e| e.last()).is_some_and(|e| e["filename"] == program))
        .collect();
    assert_eq!(rows.len(), 1, "one process ran {program}: {rows:#?}");
    rows[0]
}

// ---------------------------------------------------------------------------
// What glibc's loader says about itself

/// One run of glibc's dynamic loader as `LD_DEBUG=libs` logs it, up to
/// "transferring control" to the program.
#[derive(Debug, Default)]
pub struct LdDebugRun {
    /// The path of each library found, in load order.
    pub libraries: Vec<String>,
    /// Every file it tried in vain before finding a library, in order.
    pub failed: Vec<String>,
    /// The program it transferred control to; `None` if the log ends first.
    pub program: Option<String>,
}

impl LdDebugRun {
    /// The failed tries by (file name sought, directory probed).
    pub fn failed_by_library_and_dir(&self) -> BTreeMap<(String, String), u64> {
        tally_failed(self.failed.iter())
    }
}

/// `paths` tried in vain, counted by (file name, directory).
pub fn tally_failed<'a>(paths: impl Iterator<Item = &'a String>) -> BTreeMap<(String, String), u64> {
    let mut tally = BTreeMap::new();
    for path in paths {
        let (dir, library) = path.rsplit_once('/').unwrap_or_else(|| panic!("LD_DEBUG tried {path:?}"));
        *tally.entry((library.to_string(), dir.to_string())).or_default() += 1;
    }
    tally
}

/// The loader runs in one process's `LD_DEBUG=libs` log, in order (a
/// process that execs again appends another run to the same file).
pub fn ld_debug_runs(log: &str) -> Vec<LdDebugRun> {
    let mut runs = vec![LdDebugRun::default()];
    let mut last_try: Option<String> = None;
    for line in log.lines() {
        let text = line.split_once(':').map_or(line, |(_, rest)| rest).trim();
        let run = runs.last_mut().unwrap();
        if let Some(path) = text.strip_prefix("trying file=") {
            // A new try means the one before failed.
            if let Some(failed) = last_try.replace(path.to_string()) {
                run.failed.push(failed);
            }
        } else if text.starts_with("find library=")
            || text.starts_with("calling init:")
            || text.starts_with("transferring control:")
        {
            if let Some(path) = last_try.take() {
                run.libraries.push(path);
            }
            if let Some(program) = text.strip_prefix("transferring control:") {
                run.program = Some(program.trim().to_string());
                runs.push(LdDebugRun::default());
            }
        }
    }
    let last = runs.last().unwrap();
    if last.program.is_none() && last.libraries.is_empty() && last.failed.is_empty() {
        runs.pop();
    }
    runs
}

/// What `LD_DEBUG=libs` says the loader did, over every run in `log`: the
/// path of each library found, in load order, and how many candidate files
/// it tried in vain first.
pub fn ld_debug_libs(log: &str) -> (Vec<String>, u64) {
    let runs = ld_debug_runs(log);
    let libraries = runs.iter().flat_map(|r| r.libraries.iter().cloned()).collect();
    (libraries, runs.iter().map(|r| r.failed.len() as u64).sum())
}

/// glibc's `LD_DEBUG=statistics` reports "total startup time in dynamic
/// loader" in ticks of its own counter. This finds that counter's rate the
/// way the task says ("convert cycles with the measured rate"): make the
/// loader's work longer by a known amount of wall-clock time (a library
/// path of missing directories it must probe) and divide the difference in
/// ticks by the difference in time, over untraced runs of `program` (which
/// must run quietly with no arguments and exit 0), whose loader is the one
/// measured.
pub fn ld_debug_ticks_per_ns(sandbox: &Sandbox, program: &str) -> f64 {
    let missing: Vec<String> = (0..400).map(|i| format!("/nonexistent/nixtrace-{i}")).collect();
    let log = sandbox.path("calibrate");
    let run_once = |library_path: Option<&str>| -> (f64, f64) {
        let mut command = Command::new(program);
        command.env("LD_DEBUG", "statistics").env("LD_DEBUG_OUTPUT", &log).stdout(Stdio::null());
        match library_path {
            Some(path) => command.env("LD_LIBRARY_PATH", path),
            None => command.env_remove("LD_LIBRARY_PATH"),
        };
        let started = Instant::now();
        let child = command.spawn().unwrap_or_else(|e| panic!("run {program}: {e}"));
        let pid = child.id();
        let status = child.wait_with_output().expect("wait").status;
        let wall_ns = started.elapsed().as_nanos() as f64;
        assert!(status.success(), "{program} failed: {status}");
        let path = format!("{}.{pid}", log.display());
        let text = fs::read_to_string(&path).expect("the LD_DEBUG log");
        fs::remove_file(&path).expect("remove the LD_DEBUG log");
        (wall_ns, startup_ticks(&text) as f64)
    };
    let joined = missing.join(":");
    let (mut short, mut long) = ((0.0, 0.0), (0.0, 0.0));
    for _ in 0..30 {
        let (w, t) = run_once(None);
        short = (short.0 + w, short.1 + t);
        let (w, t) = run_once(Some(&joined));
        long = (long.0 + w, long.1 + t);
    }
    (long.1 - short.1) / (long.0 - short.0)
}

/// "total startup time in dynamic loader: N cycles" from an LD_DEBUG log.
pub fn startup_ticks(log: &str) -> u64 {
    log.lines()
        .find_map(|l| l.split("total startup time in dynamic loader:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no startup time in the LD_DEBUG log:\n{log}"))
}

/// How far nixtrace's loader time may be from glibc's own figure for the
/// same run: 25% or 0.2 ms, whichever is more.
pub fn loader_time_allowance_ns(glibc_ns: f64) -> f64 {
    (glibc_ns * 0.25).max(200_000.0)
}

/// Runs `measure` (one recorded run of a program: nixtrace's loader time
/// and glibc's, in ns) until the two agree within
/// [`loader_time_allowance_ns`], at most three times. Panics, naming
/// `program` and every run, when no run agrees. Why not once: these VMs
/// stall for milliseconds now and then (time the host takes, which the
/// guest's scheduler does not see), and a stall between glibc's reading
/// of its counter and the probe's makes one run disagree by it; an error
/// of nixtrace's makes every run disagree.
pub fn agreeing_loader_time(program: &str, mut measure: impl FnMut() -> (f64, f64)) -> String {
    let mut runs = Vec::new();
    for _ in 0..3 {
        let (ours, glibc) = measure();
        runs.push(format!("nixtrace {ours:.0} ns, glibc {glibc:.0} ns"));
        if (ours - glibc).abs() <= loader_time_allowance_ns(glibc) {
            return format!("{program}: {}", runs.join("; "));
        }
    }
    panic!("{program}: loader time off by more than 25% or 0.2 ms in every run: {}", runs.join("; "))
}

// ---------------------------------------------------------------------------
// The Nix store fixture

const NIX_FIXTURES_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/nix/default.nix");

/// Options for every nix command the tests run. No sandbox: the builders
/// run the host's /bin/sh, cc and patchelf. No build users: Debian's
/// nix-bin creates no `nixbld` group, so builds run as the calling root.
/// No binary cache: nothing here is in one, and without this nix asks
/// cache.nixos.org about every package (or, offline, retries for seconds).
pub const NIX_OPTIONS: [&str; 9] =
    ["--option", "sandbox", "false", "--option", "build-users-group", "", "--option", "substituters", ""];

/// One package of the fixture, as `tests/nix/default.nix` built it.
#[derive(Debug)]
pub struct NixPackage {
    /// Its attribute in default.nix.
    pub attr: String,
    /// `/nix/store/<hash>-<pname>-<version>`.
    pub store_path: String,
    pub pname: String,
    pub version: String,
}

impl NixPackage {
    /// A file in the package.
    pub fn file(&self, inside: &str) -> String {
        format!("{}/{inside}", self.store_path)
    }

    /// The package as nixtrace's JSON report should name it.
    pub fn report_json(&self) -> Value {
        serde_json::json!({ "name": self.pname, "version": self.version, "store_path": self.store_path })
    }
}

/// Every package of the fixture, by attribute.
#[derive(Debug)]
pub struct NixFixtures {
    pub packages: BTreeMap<String, NixPackage>,
}

impl NixFixtures {
    pub fn get(&self, attr: &str) -> &NixPackage {
        self.packages.get(attr).unwrap_or_else(|| panic!("the Nix fixture has no package {attr:?}"))
    }

    /// The fixture package `path` lies in.
    pub fn owner(&self, path: &str) -> Option<&NixPackage> {
        self.packages.values().find(|p| {
            path.strip_prefix(p.store_path.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}

/// The fixture's packages, built on first use in this test process:
/// `nix-build tests/nix -A manifest`, with the out-link (a GC root) in
/// `target/nix-fixtures/`. Nix builds what is missing from its store and
/// otherwise only evaluates, so this is cheap after the first time on a
/// machine. As root, nix-build creates `/nix/store` and `/nix/var/nix`
/// itself and needs no `nix.conf`.
pub fn nix_fixtures() -> &'static NixFixtures {
    static FIXTURES: OnceLock<NixFixtures> = OnceLock::new();
    FIXTURES.get_or_init(build_nix_fixtures)
}

/// `args` as a shell would need them typed (for messages).
fn shell_words<S: AsRef<OsStr>>(args: &[S]) -> String {
    let words: Vec<String> = args
        .iter()
        .map(|a| {
            let a = a.as_ref().to_string_lossy();
            if a.is_empty() || a.contains(|c: char| !c.is_ascii_alphanumeric() && !"/-_.=+:".contains(c)) {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a.into_owned()
            }
        })
        .collect();
    words.join(" ")
}

fn build_nix_fixtures() -> NixFixtures {
    require_root();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target directory");
    let dir = target.join("nix-fixtures");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let link = dir.join("manifest");
    let mut args: Vec<&OsStr> = NIX_OPTIONS.iter().map(OsStr::new).collect();
    args.extend([NIX_FIXTURES_SOURCE, "-A", "manifest", "--out-link"].map(OsStr::new));
    args.push(link.as_os_str());
    let description = format!("nix-build {}", shell_words(&args));
    let output = match Command::new("nix-build").args(&args).env_remove("LD_LIBRARY_PATH").output() {
        Ok(output) => output,
        Err(e) => panic!(
            "could not run `{description}` ({e}): the Nix tests need Debian's nix-bin (`cargo xtask setup` installs it)"
        ),
    };
    assert!(
        output.status.success(),
        "building the Nix fixture failed: `{description}` exited with {} (it needs root and Debian's nix-bin); its output:\n{}",
        output.status,
        stderr_of(&output)
    );
    let text = fs::read_to_string(&link).unwrap_or_else(|e| panic!("read {}: {e}", link.display()));
    let manifest: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not the manifest ({e}): {text}", link.display()));
    let packages = manifest
        .into_iter()
        .map(|(attr, mut fields)| {
            let mut take = |key: &str| fields.remove(key).unwrap_or_else(|| panic!("{attr} lacks {key:?}"));
            let package = NixPackage {
                store_path: take("path"),
                pname: take("pname"),
                version: take("version"),
                attr: attr.clone(),
            };
            assert!(
                Path::new(&package.store_path).is_dir(),
                "{} is not in the store after `{description}`",
                package.store_path
            );
            (attr, package)
        })
        .collect();
    NixFixtures { packages }
}
