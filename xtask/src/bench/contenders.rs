//! One run of a workload, untraced or under one contender (nixtrace
//! `record -- CMD`, nixtrace system-wide, bpftrace printing, `strace -f`,
//! the floor), and what that run measured; with the process helpers they
//! share: spawning, waiting with `wait4`, interrupting a background tracer.
use std::{
    fs::{self, File},
    io,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use super::{Bench, workloads::Workload};
use crate::{command, output, repo_root};

/// How long a tracer may take to attach before the run is abandoned.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(120);

/// bpftrace printing what nixtrace records of execs, opens and mmaps, one
/// line per tracepoint hit, as a user of bpftrace would. Each line starts
/// with one of [`PRINTED`].
const BPFTRACE_PRINT: &str = r#"
tracepoint:sched:sched_process_exec { printf("exec %d %s\n", pid, str(args->filename)); }
tracepoint:syscalls:sys_enter_openat { printf("open %d %d %s %d\n", tid, args->dfd, str(args->filename), args->flags); }
tracepoint:syscalls:sys_exit_openat { printf("opened %d %d\n", tid, args->ret); }
tracepoint:syscalls:sys_enter_mmap { printf("mmap %d %d %d %d\n", tid, args->fd, args->len, args->prot); }
tracepoint:syscalls:sys_exit_mmap { printf("mapped %d %d\n", tid, args->ret); }
"#;
const PRINTED: [&str; 5] = ["exec ", "open ", "opened ", "mmap ", "mapped "];

/// Who runs the workload: nobody, or one of the tracers compared.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Contender {
    Untraced,
    NixtraceCommand,
    /// `record --probe stat -- CMD`: what the opt-in stat probe adds, on
    /// the workloads that make such calls.
    NixtraceStat,
    NixtraceSystem,
    BpftracePrint,
    Strace,
    Floor,
}

impl Contender {
    pub(super) const TRACED: [Contender; 6] = [
        Contender::NixtraceCommand,
        Contender::NixtraceStat,
        Contender::NixtraceSystem,
        Contender::BpftracePrint,
        Contender::Strace,
        Contender::Floor,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Contender::Untraced => "untraced",
            Contender::NixtraceCommand => "`nixtrace record -- CMD`",
            Contender::NixtraceStat => "`nixtrace record --probe stat -- CMD`",
            Contender::NixtraceSystem => "`nixtrace record` (system-wide)",
            Contender::BpftracePrint => "bpftrace, printing to a file",
            Contender::Strace => "`strace -f`",
            Contender::Floor => "floor: empty BPF programs",
        }
    }

    pub(super) fn is_nixtrace(self) -> bool {
        matches!(self, Contender::NixtraceCommand | Contender::NixtraceStat | Contender::NixtraceSystem)
    }

    /// Whether it is measured on `workload`.
    pub(super) fn runs_on(self, workload: &Workload) -> bool {
        self != Contender::NixtraceStat || workload.stat_probe
    }
}

/// What `timed` wrote about the workload.
struct Timing {
    wall: Duration,
    /// The workload's CPU time (with `timed`'s own).
    cpu: Duration,
    maxrss_kib: u64,
}

/// A recorder's peak resident memory. In `record -- CMD` mode `wait4`
/// reports the largest of the recorder and the command it ran, so when the
/// command was the larger, the recorder's is only known to be at most that.
#[derive(Clone, Copy)]
pub(super) struct Rss {
    pub(super) kib: u64,
    pub(super) at_most: bool,
    /// Of it, the kernel's ring buffer mapped into the recorder.
    pub(super) ring_kib: Option<u64>,
}

/// One run of a workload under one contender.
#[derive(Default)]
pub(super) struct Run {
    pub(super) wall: Duration,
    /// nixtrace: the trace's events; bpftrace: the lines it printed.
    pub(super) events: Option<u64>,
    pub(super) lost: Option<u64>,
    pub(super) trace_bytes: Option<u64>,
    /// The recorder's own CPU time and peak memory (nixtrace).
    pub(super) tracer_cpu: Option<Duration>,
    pub(super) tracer_rss: Option<Rss>,
    /// Probes loaded and attached (nixtrace's `attach_ns`).
    pub(super) attach: Option<Duration>,
}

/// A child's exit status and resource usage, from `wait4`.
pub(super) struct Finished {
    pub(super) status: ExitStatus,
    pub(super) cpu: Duration,
    pub(super) maxrss_kib: u64,
}

/// Runs the workload once under `contender`.
pub(super) fn run_contender(bench: &Bench, contender: Contender, workload: &Workload) -> Result<Run> {
    if let Some(prepare) = &workload.prepare {
        output(command(&prepare[0]).args(&prepare[1..]))?;
    }
    // A run starts only once the last recording's probes are down, so
    // that their teardown never overlaps the next run.
    wait_until_detached()?;
    match contender {
        Contender::Untraced => untraced(bench, workload),
        Contender::NixtraceCommand => nixtrace_command(bench, workload, &[]),
        Contender::NixtraceStat => nixtrace_command(bench, workload, &["--probe", "stat"]),
        Contender::NixtraceSystem => nixtrace_system(bench, workload),
        Contender::BpftracePrint => bpftrace(bench, workload, BPFTRACE_PRINT),
        Contender::Strace => strace(bench, workload),
        Contender::Floor => bpftrace(bench, workload, &floor_program()?),
    }
}

/// Waits until no `nixtrace-detach` helper is left taking a recording's
/// probes down (tracer/src/record/release.rs): it does so after the
/// recorder exits.
pub(super) fn wait_until_detached() -> Result<()> {
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    let detaching = || {
        fs::read_dir("/proc").into_iter().flatten().flatten().any(|entry| {
            // "PID (COMM) STATE ...": a zombie has let go of everything.
            fs::read_to_string(entry.path().join("stat")).is_ok_and(|stat| {
                stat.split_once(" (nixtrace-detach) ").is_some_and(|(_, rest)| !rest.starts_with('Z'))
            })
        })
    };
    while detaching() {
        ensure!(Instant::now() < deadline, "a nixtrace-detach helper still runs after {ATTACH_TIMEOUT:?}");
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// `timed FILE WORKLOAD...`, and FILE.
fn timed_argv(bench: &Bench, workload: &Workload) -> (Vec<String>, PathBuf) {
    let file = bench.dir.join("timing");
    let mut argv = vec![bench.timed.display().to_string(), file.display().to_string()];
    argv.extend(workload.argv.iter().cloned());
    (argv, file)
}

/// Reads what `timed` wrote (and removes it, so no run reads another's).
fn read_timing(file: &Path) -> Result<Timing> {
    let text = fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    fs::remove_file(file)?;
    let numbers: Vec<u64> = text.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    let [wall_ns, cpu_us, maxrss_kib, status] = numbers[..] else {
        bail!("{}: unexpected `{}`", file.display(), text.trim())
    };
    ensure!(status == 0, "the workload failed (exit status {status})");
    Ok(Timing { wall: Duration::from_nanos(wall_ns), cpu: Duration::from_micros(cpu_us), maxrss_kib })
}

/// Where a child's stderr goes, to be quoted when it fails.
pub(super) fn log_file(bench: &Bench) -> Result<(PathBuf, File)> {
    let path = bench.dir.join("stderr.log");
    Ok((path.clone(), File::create(&path)?))
}

/// Fails, quoting the child's stderr, unless it exited with status 0.
pub(super) fn check_exit(what: &str, status: ExitStatus, log: &Path) -> Result<()> {
    if !status.success() {
        let stderr = fs::read_to_string(log).unwrap_or_default();
        bail!("{what} failed ({status}): {}", stderr.trim());
    }
    Ok(())
}

/// Spawns `cmd` with stdin and stdout closed, stderr into `log`.
pub(super) fn spawn(cmd: &mut Command, log: &File) -> Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.try_clone()?)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))
}

/// Waits for `child` with `wait4`, which also gives its resource usage
/// (and that of the children it waited for).
pub(super) fn wait4(child: Child) -> Result<Finished> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data, valid when zeroed.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals; `child` is ours and not yet waited for.
    while unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err).context("wait4");
        }
    }
    let time = |t: libc::timeval| Duration::from_micros(t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64);
    Ok(Finished {
        status: ExitStatus::from_raw(status),
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
        maxrss_kib: usage.ru_maxrss as u64,
    })
}

/// Sends SIGINT to a background tracer and waits for it to finish writing.
pub(super) fn interrupt(child: Child) -> Result<Finished> {
    // SAFETY: plain syscall on our own child's pid.
    if unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) } != 0 {
        return Err(io::Error::last_os_error()).context("sending SIGINT to the tracer");
    }
    wait4(child)
}

/// Polls `ready` until it holds; fails if `child` exits first or after
/// [`ATTACH_TIMEOUT`].
pub(super) fn wait_until_attached(child: &mut Child, log: &Path, ready: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    while !ready() {
        if let Some(status) = child.try_wait()? {
            check_exit("the tracer", status, log)?;
            bail!("the tracer exited before attaching");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the tracer did not attach within {ATTACH_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Runs the timed workload directly (also while a background tracer runs).
fn run_timed(bench: &Bench, workload: &Workload) -> Result<Timing> {
    let (argv, file) = timed_argv(bench, workload);
    let (log_path, log) = log_file(bench)?;
    let finished = wait4(spawn(command(&argv[0]).args(&argv[1..]), &log)?)?;
    check_exit(workload.name, finished.status, &log_path)?;
    read_timing(&file)
}

fn untraced(bench: &Bench, workload: &Workload) -> Result<Run> {
    Ok(Run { wall: run_timed(bench, workload)?.wall, ..Run::default() })
}

/// `nixtrace record`, quiet, into `trace`, with `--buffer-size` if given.
pub(super) fn nixtrace_record(bench: &Bench, trace: &Path) -> Command {
    let mut cmd = command(&bench.nixtrace);
    cmd.args(["record", "-q", "--force", "-o"]).arg(trace);
    if let Some(size) = bench.buffer_size {
        cmd.arg("--buffer-size").arg(size.to_string());
    }
    cmd
}

/// `nixtrace record ARGS -- timed WORKLOAD`: the recorder starts the
/// workload once its probes are attached and follows its process tree.
fn nixtrace_command(bench: &Bench, workload: &Workload, args: &[&str]) -> Result<Run> {
    let trace = bench.dir.join("command.ntr");
    let _ = fs::remove_file(&trace);
    let (argv, file) = timed_argv(bench, workload);
    let (log_path, log) = log_file(bench)?;
    let recorder = spawn(nixtrace_record(bench, &trace).args(args).arg("--").args(&argv), &log)?;
    let ring_kib = ring_buffer_kib(recorder.id(), &trace);
    let finished = wait4(recorder)?;
    check_exit("nixtrace record -- CMD", finished.status, &log_path)?;
    let timing = read_timing(&file)?;
    // wait4 counts the recorder and every child it waited for: `timed`,
    // which reported itself and the workload.
    let tracer_rss = if finished.maxrss_kib > timing.maxrss_kib {
        Rss { kib: finished.maxrss_kib, at_most: false, ring_kib }
    } else {
        Rss { kib: timing.maxrss_kib, at_most: true, ring_kib }
    };
    let tracer = Finished { cpu: finished.cpu.saturating_sub(timing.cpu), ..finished };
    trace_run(bench, &trace, timing.wall, &tracer, tracer_rss)
}

/// `nixtrace record` system-wide in the background: the workload starts
/// once the trace has its header (written when every probe is attached)
/// and the recorder stops on SIGINT after it.
fn nixtrace_system(bench: &Bench, workload: &Workload) -> Result<Run> {
    let trace = bench.dir.join("system.ntr");
    let _ = fs::remove_file(&trace);
    let (log_path, log) = log_file(bench)?;
    let mut recorder = spawn(&mut nixtrace_record(bench, &trace), &log)?;
    wait_until_attached(&mut recorder, &log_path, || has_header(&trace))?;
    let ring_kib = ring_buffer_kib(recorder.id(), &trace);
    let timing = run_timed(bench, workload);
    let finished = interrupt(recorder)?;
    let timing = timing?;
    check_exit("nixtrace record (system-wide)", finished.status, &log_path)?;
    let rss = Rss { kib: finished.maxrss_kib, at_most: false, ring_kib };
    trace_run(bench, &trace, timing.wall, &finished, rss)
}

/// Whether the recorder has written the trace's header, which it does once
/// every probe is attached.
pub(super) fn has_header(trace: &Path) -> bool {
    fs::metadata(trace).is_ok_and(|m| m.len() > 0)
}

/// How much of the recorder's resident memory is the ring buffer it maps
/// from the kernel (its mappings of BPF maps, from /proc/PID/smaps), read
/// once the trace has its header: the ring buffer is mapped by then. None
/// when the recorder ends first. Never reaps the recorder.
fn ring_buffer_kib(pid: u32, trace: &Path) -> Option<u64> {
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    while !has_header(trace) {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The state follows the command name, which is in parentheses.
        let state = stat.rsplit_once(')')?.1.trim_start();
        if state.starts_with(['Z', 'X']) || Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let (mut in_bpf_map, mut kib) = (false, 0);
    for line in smaps.lines() {
        // A mapping's line starts with its address range; its fields
        // ("Rss:   131076 kB") with a name and a colon.
        let first = line.split_whitespace().next().unwrap_or("");
        if !first.ends_with(':') {
            in_bpf_map = line.ends_with("anon_inode:bpf-map");
        } else if in_bpf_map && let Some(rss) = line.strip_prefix("Rss:") {
            kib += rss.trim().trim_end_matches("kB").trim().parse::<u64>().ok()?;
        }
    }
    Some(kib)
}

/// A nixtrace run's figures, from the trace (`report --format json`) and
/// the recorder's resource usage; removes the trace.
fn trace_run(bench: &Bench, trace: &Path, wall: Duration, recorder: &Finished, rss: Rss) -> Result<Run> {
    let report = report_json(bench, trace)?;
    let run = Run {
        wall,
        events: Some(report_count(&report, "/events")?),
        lost: Some(report_count(&report, "/lost_events")?),
        trace_bytes: Some(fs::metadata(trace)?.len()),
        tracer_cpu: Some(recorder.cpu),
        tracer_rss: Some(rss),
        attach: Some(Duration::from_nanos(report_count(&report, "/header/attach_ns")?)),
    };
    fs::remove_file(trace)?;
    Ok(run)
}

/// `nixtrace report TRACE --format json`, parsed.
pub(super) fn report_json(bench: &Bench, trace: &Path) -> Result<Value> {
    let json = output(command(&bench.nixtrace).arg("report").arg(trace).args(["--format", "json"]))?;
    serde_json::from_str(&json).context("parsing nixtrace's JSON report")
}

/// A count in nixtrace's JSON report, at a JSON pointer (`/events`).
pub(super) fn report_count(report: &Value, pointer: &str) -> Result<u64> {
    report.pointer(pointer).and_then(Value::as_u64).with_context(|| format!("report JSON has no {pointer}"))
}

/// bpftrace running `program` while it runs the workload (`-c`: bpftrace
/// starts the command once every probe is attached, and stops after it),
/// printing into a file whose event lines are counted.
fn bpftrace(bench: &Bench, workload: &Workload, program: &str) -> Result<Run> {
    let printed = bench.dir.join("bpftrace.out");
    let (argv, file) = timed_argv(bench, workload);
    let (log_path, log) = log_file(bench)?;
    // `-c` splits its command at spaces, without quoting: a script takes
    // the workload's words (and `exec`s it, so the timing is the same).
    let script = bench.dir.join("bpftrace-command.sh");
    fs::write(&script, format!("exec {}\n", shell_words(&argv)))?;
    let mut cmd = command("bpftrace");
    cmd.arg("-o").arg(&printed).args(["-e", program, "-c"]).arg(format!("/bin/sh {}", script.display()));
    let finished = wait4(spawn(&mut cmd, &log)?)?;
    check_exit("bpftrace", finished.status, &log_path)?;
    let timing = read_timing(&file)?;
    let out = fs::read_to_string(&printed).with_context(|| format!("reading {}", printed.display()))?;
    fs::remove_file(&printed)?;
    let events = out.lines().filter(|line| PRINTED.iter().any(|p| line.starts_with(p))).count() as u64;
    let stderr = fs::read_to_string(&log_path).unwrap_or_default();
    // bpftrace warns "Lost N events" when its perf buffers overflow.
    let lost = out
        .lines()
        .chain(stderr.lines())
        .filter_map(|line| line.trim().strip_prefix("Lost ")?.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    let printing = program == BPFTRACE_PRINT;
    Ok(Run {
        wall: timing.wall,
        events: printing.then_some(events),
        lost: printing.then_some(lost),
        ..Run::default()
    })
}

/// Words joined into one line that a shell splits back into them.
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|word| {
            if word.chars().all(|c| c.is_ascii_alphanumeric() || "/._-=+:,".contains(c)) {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `strace -f` on the syscalls nixtrace records, writing to /dev/null.
fn strace(bench: &Bench, workload: &Workload) -> Result<Run> {
    let (argv, file) = timed_argv(bench, workload);
    let (log_path, log) = log_file(bench)?;
    let mut cmd = command("strace");
    cmd.args(["-f", "-e", "trace=execve,openat,mmap", "-o", "/dev/null"]).args(&argv);
    let finished = wait4(spawn(&mut cmd, &log)?)?;
    check_exit("strace", finished.status, &log_path)?;
    Ok(Run { wall: read_timing(&file)?.wall, ..Run::default() })
}

/// The floor: a bpftrace program with empty actions on every tracepoint
/// nixtrace attaches.
fn floor_program() -> Result<String> {
    let probes: Vec<String> = nixtrace_tracepoints()?.iter().map(|tp| format!("tracepoint:{tp}")).collect();
    Ok(format!("{} {{ }}", probes.join(",")))
}

/// Where tracefs lists the tracepoints this kernel has.
const TRACEFS_EVENTS: &str = "/sys/kernel/tracing/events";

/// The tracepoints of nixtrace's default probes that this kernel has, as
/// `category:name`, read from `PROBES` in tracer/src/record/probes.rs
/// (entries `tp("name", "category")`), so that the floor follows what
/// nixtrace attaches.
fn nixtrace_tracepoints() -> Result<Vec<String>> {
    let path = repo_root().join("tracer/src/record/probes.rs");
    let source = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let table = source
        .split_once("const PROBES")
        .and_then(|(_, rest)| rest.split_once("\n];"))
        .with_context(|| format!("{} has no PROBES table", path.display()))?
        .0;
    let mut tracepoints = Vec::new();
    // Not the opt-in probes' (a default recording leaves them off); the
    // `tp_if_present` entries too: they are attached where the kernel has them.
    let default_probes: String =
        table.split("ProbeSpec {").filter(|spec| !spec.contains("opt_in: true")).collect();
    for entry in default_probes.replace("tp_if_present(\"", "tp(\"").split("tp(\"").skip(1) {
        let fields: Vec<&str> = entry.splitn(4, '"').collect();
        let [name, ", ", category, _] = fields[..] else {
            bail!(
                "{}: cannot read the PROBES entry `tp(\"{}`",
                path.display(),
                entry.lines().next().unwrap_or("")
            );
        };
        if Path::new(TRACEFS_EVENTS).join(category).join(name).is_dir() {
            tracepoints.push(format!("{category}:{name}"));
        }
    }
    ensure!(!tracepoints.is_empty(), "{}: PROBES lists no tracepoints", path.display());
    Ok(tracepoints)
}
