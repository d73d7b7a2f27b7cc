//! `nixtrace record`: load and attach the probes, seed what already exists
//! from /proc, run the command if there is one, and stream every event from
//! the ring buffer into the trace file until it is time to stop.

mod binaries;
mod boot;
mod btf;
mod calibrate;
mod command;
pub mod decode;
mod elf;
mod helper;
pub mod load;
mod loader;
mod loader_probes;
mod probes;
pub mod procfs;
mod release;
mod status;
mod store;
mod tracefs;

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fs::File,
    io,
    os::unix::{ffi::OsStrExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{
    human::{bytes, duration},
    output::PendingFile,
    trace::{ClockReference, Common, Event, Filters, Header, Stats, TraceWriter, event::describe_lost},
};
pub use boot::StagedBoot;
use load::{Filter, Probes};
pub use probes::{opt_in_probes, optional_probes};
use status::StatusLine;

/// Completed blocks and a stats record reach the file at least this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const STATUS_EVERY: Duration = Duration::from_millis(250);

/// What `nixtrace record` was asked for (usage checked by the command line).
#[derive(Debug, Clone)]
pub struct Options {
    pub output: PathBuf,
    pub force: bool,
    /// Without a command: stop after this many seconds.
    pub duration: Option<f64>,
    /// Without a command: only these processes and their descendants.
    pub pids: Vec<u32>,
    /// Without a command: only this cgroup v2 subtree.
    pub cgroup: Option<PathBuf>,
    /// The ring buffer's size: a power of two, at least 4096.
    pub buffer_size: u32,
    pub cold: bool,
    pub redact: Vec<regex::bytes::Regex>,
    pub run_as_root: bool,
    /// Optional probes to leave out.
    pub no_probe: Vec<crate::trace::Probe>,
    /// Opt-in probes to add.
    pub probe: Vec<crate::trace::Probe>,
    pub btf: Option<PathBuf>,
    pub quiet: bool,
    /// Colour the status line.
    pub color: bool,
    /// Trace this boot (`--boot`).
    pub boot: Option<BootOptions>,
    /// The command to run and follow; empty for the whole system.
    pub command: Vec<OsString>,
}

/// Where `record --boot` files the boots, and how many it keeps.
#[derive(Debug, Clone)]
pub struct BootOptions {
    pub output_dir: PathBuf,
    /// At least 1.
    pub keep: usize,
    /// Also the Parquet tables beside the report (`--parquet`).
    pub parquet: bool,
}

/// What a recording left.
#[derive(Debug)]
pub struct Recorded {
    /// The command's exit status (128 + signal if it was killed), or 0.
    pub exit_code: i32,
    /// With `--boot`: the staged trace, for `boots::file` to file.
    pub boot: Option<StagedBoot>,
}

pub fn run(options: Options) -> Result<Recorded> {
    // Before the event loop's and the loader's threads: the helpers are
    // forks of this process. Without the releaser (no process to be had),
    // the probes come down the slow way, here; without the calibrator, the
    // trace has no tracer cost and loader times keep it.
    let releaser = release::Releaser::start().ok();
    // A helper outside the --cgroup would not be traced.
    let calibrator = if options.cgroup.is_none() { calibrator(options.quiet) } else { None };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the recorder's event loop")?;
    runtime.block_on(record(options, releaser, calibrator))
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a local.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_BOOTTIME, the clock of every event timestamp.
fn boottime_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

fn header(args: &Options, probes: &Probes, tracer_cost: Option<crate::trace::TracerCost>) -> Header {
    let boottime_ns = boottime_ns();
    let realtime_ns = clock_ns(libc::CLOCK_REALTIME);
    Header {
        nixtrace_version: env!("CARGO_PKG_VERSION").to_string(),
        host: read_trimmed("/proc/sys/kernel/hostname"),
        kernel_release: read_trimmed("/proc/sys/kernel/osrelease"),
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        clock: ClockReference { boottime_ns, realtime_ns },
        probes: probes.attached.clone(),
        missing_probes: probes.missing.clone(),
        attach_ns: probes.attach_time.as_nanos() as u64,
        tracer_cost,
        loaders: probes.loaders.clone(),
        argv_max: tracer_common::ARGV_MAX,
        cpus: std::thread::available_parallelism().map_or(0, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        command: (!args.command.is_empty()).then(|| {
            let mut argv: Vec<Vec<u8>> = args.command.iter().map(|a| a.as_bytes().to_vec()).collect();
            redact(&mut argv, &args.redact);
            argv.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect()
        }),
        boot: args.boot.as_ref().map(|_| boot::setup()),
        filters: Filters {
            pids: args.pids.clone(),
            cgroup: args.cgroup.as_ref().map(|c| c.display().to_string()),
        },
    }
}

/// Per-type counts for the closing summary.
#[derive(Default)]
struct Counts {
    by_type: BTreeMap<&'static str, u64>,
    failed_opens: u64,
    malformed: u64,
}

impl Counts {
    fn add(&mut self, event: &Event) {
        *self.by_type.entry(event.type_name()).or_default() += 1;
        if let Event::Open { ret, .. } = event
            && *ret < 0
        {
            self.failed_opens += 1;
        }
    }
}

/// Everything the loop needs to turn ring-buffer records into trace events.
struct Sink {
    writer: TraceWriter<File>,
    counts: Counts,
    binaries: binaries::BinaryReader,
    /// The store paths the events named, for the store's graph at the end.
    store_paths: store::StorePaths,
    /// `--redact` patterns, applied to every argv and loader variable
    /// before it is written.
    redactions: Vec<regex::bytes::Regex>,
    decoder: decode::Decoder,
    /// The calibration helper's records, which are dropped.
    calibrator_pid: Option<u32>,
}

impl Sink {
    /// Writes `event`, with `--redact` applied to its command line.
    fn write(&mut self, mut event: Event) -> Result<()> {
        if let Event::Exec { argv, .. } | Event::Process { argv, .. } = &mut event {
            redact(argv, &self.redactions);
        }
        if let Event::Exec { loader_env, .. } = &mut event {
            for (_, value) in loader_env.iter_mut() {
                redact(std::slice::from_mut(value), &self.redactions);
            }
        }
        self.binaries.observe(&event);
        self.store_paths.observe(&event);
        self.counts.add(&event);
        self.writer.write(&event).context("writing the trace")
    }

    /// Moves every record waiting in the ring buffer into the trace.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<()> {
        while let Some(record) = ring.next() {
            if self.calibrator_pid.is_some() && decode::pid_of(&record) == self.calibrator_pid {
                continue;
            }
            match self.decoder.decode(&record) {
                Ok(event) => {
                    drop(record);
                    self.write(event)?;
                }
                Err(_) => self.counts.malformed += 1,
            }
        }
        Ok(())
    }

    /// The ELF facts read since last time.
    fn write_binaries(&mut self) -> Result<()> {
        for event in self.binaries.ready() {
            self.write(event)?;
        }
        Ok(())
    }

    /// Where the time of threads still running went, up to now: they will
    /// not exit inside the trace, so the kernel never sends it.
    fn write_running_threads(&mut self, probes: &Probes) -> Result<()> {
        let now = boottime_ns();
        for (tid, mut times) in probes.running_threads()? {
            times.close_interval(now);
            let common = Common { ts_ns: now, pid: times.pid, tid, cgroup_id: 0 };
            self.write(Event::Sched { common, times: decode::thread_times(&times) })?;
        }
        Ok(())
    }

    /// What each process read from each file, summed in the kernel.
    fn write_read_totals(&mut self, probes: &Probes) -> Result<()> {
        let now = boottime_ns();
        for (key, bytes) in probes.read_totals()? {
            let common = Common { ts_ns: now, pid: key.pid, tid: key.pid, cgroup_id: 0 };
            self.write(Event::FileRead { common, dev: key.dev, ino: key.ino, bytes })?;
        }
        Ok(())
    }

    fn stats(&self, probes: &Probes) -> Result<Stats> {
        let mut lost = probes.lost()?;
        if self.counts.malformed > 0 {
            lost.insert("malformed".into(), self.counts.malformed);
        }
        Ok(Stats { ts_ns: boottime_ns(), events: self.writer.events(), lost })
    }
}

/// Replaces what any of `patterns` matches in each argument.
fn redact(argv: &mut [Vec<u8>], patterns: &[regex::bytes::Regex]) {
    for arg in argv.iter_mut() {
        for pattern in patterns {
            if pattern.is_match(arg) {
                *arg = pattern.replace_all(arg, &b"<redacted>"[..]).into_owned();
            }
        }
    }
}

/// Narrowing asked for on the command line, checked against the system.
struct Scope {
    filter: Filter,
    /// Pids to follow from the start (`--pid` and their descendants).
    followed: Vec<u32>,
    /// Cgroup path prefix processes must be in to be seeded (`--cgroup`).
    cgroup_path: Option<Vec<u8>>,
}

fn scope(args: &Options, procs: &[procfs::ProcInfo]) -> Result<Scope> {
    let has_command = !args.command.is_empty();
    for pid in &args.pids {
        if !procs.iter().any(|p| p.pid == *pid) {
            bail!("--pid {pid}: no such process");
        }
    }
    let size = args.buffer_size;
    let cgroup = match &args.cgroup {
        Some(path) => {
            let root = procfs::cgroup2_root().context("--cgroup: no cgroup v2 hierarchy is mounted")?;
            let dir = procfs::cgroup_id(&root, path).with_context(|| {
                format!("--cgroup {}: no such cgroup under {}", path.display(), root.display())
            })?;
            Some(dir)
        }
        None => None,
    };
    Ok(Scope {
        filter: Filter {
            follow_only: has_command || !args.pids.is_empty(),
            follow_own_children: has_command,
            cgroup: cgroup.as_ref().map(|c| (c.id, c.level)),
            buffer_bytes: size,
            calibrator_pid: 0,
        },
        followed: procfs::descendants(procs, &args.pids),
        cgroup_path: cgroup.map(|c| c.path),
    })
}

/// Is cgroup `path` the cgroup `prefix` or below it?
fn cgroup_within(path: &[u8], prefix: &[u8]) -> bool {
    prefix == b"/" || path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
}

/// Writes the cgroups and processes that exist now, within the scope, but
/// the recorder's own (`own_pids`).
fn seed(
    sink: &mut Sink,
    scope: &Scope,
    procs: &[procfs::ProcInfo],
    system_wide: bool,
    own_pids: &[u32],
) -> Result<()> {
    let now = boottime_ns();
    let Some(root) = procfs::cgroup2_root() else { return Ok(()) };
    let mut ids = std::collections::HashMap::new();
    for dir in procfs::cgroups(&root) {
        ids.insert(dir.path.clone(), dir.id);
        let common = Common { ts_ns: now, ..Common::default() };
        sink.write(Event::Cgroup { common, id: dir.id, level: dir.level, path: dir.path, seeded: true })?;
    }
    for p in procs.iter().filter(|p| !own_pids.contains(&p.pid)) {
        let wanted = if !scope.followed.is_empty() {
            scope.followed.contains(&p.pid)
        } else if let Some(prefix) = &scope.cgroup_path {
            p.cgroup.as_deref().is_some_and(|c| cgroup_within(c, prefix))
        } else {
            system_wide
        };
        if wanted {
            sink.write(Event::Process {
                ts_ns: now,
                pid: p.pid,
                ppid: p.ppid,
                start_ns: p.start_ns,
                cgroup_id: p.cgroup.as_ref().and_then(|c| ids.get(c)).copied().unwrap_or(0),
                exe: p.exe.clone(),
                argv: p.argv.clone(),
            })?;
        }
    }
    Ok(())
}

/// `--cold`: writes dirty pages back, then empties the page cache. It always
/// warns, even with `-q`: it affects every program on the machine.
fn drop_page_cache() -> Result<()> {
    eprintln!(
        "nixtrace: warning: --cold: dropping the page cache; the whole machine starts cold for a while"
    );
    // SAFETY: no arguments.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n")
        .context("--cold: cannot drop the page cache (/proc/sys/vm/drop_caches)")
}

/// Waits for the command, or forever when there is none.
async fn wait_for(child: &mut Option<tokio::process::Child>) -> io::Result<std::process::ExitStatus> {
    match child {
        Some(child) => child.wait().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The calibration helper, its untraced calls timed; None, with a warning
/// unless `quiet`, when it cannot be had.
fn calibrator(quiet: bool) -> Option<calibrate::Calibrator> {
    calibrate::Calibrator::start().inspect_err(|e| warn_uncalibrated(quiet, e)).ok()
}

/// Says, unless `quiet`, that the calibration failed and what that costs.
fn warn_uncalibrated(quiet: bool, error: &anyhow::Error) {
    if !quiet {
        eprintln!("nixtrace: warning: {error:#}; loader times will include the tracer's own cost");
    }
}

async fn record(
    mut args: Options,
    releaser: Option<release::Releaser>,
    calibrator: Option<calibrate::Calibrator>,
) -> Result<Recorded> {
    let boot = match &args.boot {
        Some(options) => Some(boot::prepare(&mut args.output, &mut args.duration, options)?),
        None => None,
    };
    if boot.is_some() && boot::already_finished().await {
        // Started on a running system (say, when the unit was first
        // enabled): tell systemd all is well and leave the boots alone.
        boot::notify_ready()?;
        eprintln!("nixtrace: the boot has already finished; nothing to trace until the next one");
        return Ok(Recorded { exit_code: 0, boot: None });
    }
    let has_command = !args.command.is_empty();
    let procs = if has_command { Vec::new() } else { procfs::processes() };
    let mut scope = scope(&args, &procs)?;
    // Named only once recording has started: a failed start leaves no
    // trace behind, and an existing one as it was.
    let mut output = PendingFile::create(&args.output, args.force || boot.is_some())?;
    let calibrator_pid = calibrator.as_ref().map(calibrate::Calibrator::pid);
    scope.filter.calibrator_pid = calibrator_pid.unwrap_or(0);
    let own_pids = [Some(std::process::id()), releaser.as_ref().map(release::Releaser::pid), calibrator_pid];
    let own_pids: Vec<u32> = own_pids.into_iter().flatten().collect();
    let mut probes = Probes::load(
        std::process::id(),
        releaser,
        scope.filter,
        &args.no_probe,
        &args.probe,
        args.btf.as_deref(),
    )?;
    if !args.quiet {
        for warning in &probes.warnings {
            eprintln!("nixtrace: warning: {warning}");
        }
    }
    probes.follow(scope.followed.iter().copied())?;
    let tracer_cost = match calibrator {
        Some(calibrator) => {
            if scope.filter.follow_only {
                probes.follow([calibrator.pid()])?;
            }
            calibrator.finish().inspect_err(|e| warn_uncalibrated(args.quiet, e)).ok()
        }
        None => None,
    };
    let mut ring = probes.take_events()?;
    let mut sink = Sink {
        writer: TraceWriter::new(output.file()?, &header(&args, &probes, tracer_cost))
            .context("writing the trace header")?,
        counts: Counts::default(),
        binaries: binaries::BinaryReader::start()?,
        store_paths: store::StorePaths::default(),
        redactions: args.redact.clone(),
        decoder: decode::Decoder::default(),
        calibrator_pid,
    };
    seed(&mut sink, &scope, &procs, !has_command, &own_pids)?;
    // The calibration's records (dropped here) must not fill a small ring
    // before the command starts.
    sink.drain(&mut ring)?;

    if args.cold {
        drop_page_cache()?;
    }
    if !has_command && !args.quiet {
        eprintln!(
            "nixtrace: recording into {}; Ctrl-C or SIGTERM to stop",
            String::from_utf8_lossy(args.output.as_os_str().as_bytes())
        );
    }
    let mut child = if has_command { Some(command::spawn(&args.command, args.run_as_root)?) } else { None };
    output.commit()?;
    if boot.is_some() {
        boot::notify_ready()?;
    }
    let child_pid = child.as_ref().and_then(|c| c.id());
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    // SAFETY: the ring buffer owns its fd and outlives this registration.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("polling the ring buffer")?;
    let mut sigint = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut tick = tokio::time::interval(STATUS_EVERY);
    let mut status = StatusLine::new(args.quiet, args.color);
    let mut last_flush = Instant::now();
    let mut forwarded = false;
    let mut exit_status = None;
    let booting = boot.is_some();
    let mut boot_finished =
        std::pin::pin!(
            async move { if booting { boot::finished().await } else { std::future::pending().await } }
        );

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("polling the ring buffer")?;
                sink.drain(guard.get_inner_mut())?;
                guard.clear_ready();
            }
            _ = tick.tick() => {
                // The programs wake us only once an eighth of the ring is
                // pending (emit.rs): what is left below that waits for us.
                sink.drain(ring.get_mut())?;
                sink.write_binaries()?;
                if let Some(plan) = &boot
                    && std::fs::metadata(&args.output).is_ok_and(|m| m.len() >= plan.max_staged_bytes)
                {
                    eprintln!(
                        "nixtrace: warning: the boot trace reached {} (half of what /run had free, at most 512 MiB); stopping",
                        bytes(plan.max_staged_bytes)
                    );
                    break;
                }
                let stats = sink.stats(&probes)?;
                status.update(stats.events, stats.lost_total());
                if last_flush.elapsed() >= FLUSH_EVERY {
                    sink.write(Event::Stats(stats))?;
                    sink.writer.flush_block().context("writing the trace")?;
                    last_flush = Instant::now();
                }
            }
            result = wait_for(&mut child) => {
                exit_status = Some(result.context("waiting for the command")?);
                break;
            }
            _ = sigint.recv() => {
                // Ctrl-C reached the command too: give it the chance to exit.
                if child_pid.is_none() || forwarded { break; }
                forwarded = true;
            }
            _ = sigterm.recv() => {
                match child_pid {
                    Some(pid) if !forwarded => {
                        forwarded = true;
                        // SAFETY: plain kill(2) of our own child.
                        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                    }
                    _ => break,
                }
            }
            _ = sleep_until(deadline) => break,
            () = &mut boot_finished => break,
        }
    }
    sink.drain(ring.get_mut())?;
    for event in sink.binaries.finish() {
        sink.write(event)?;
    }
    sink.write_running_threads(&probes)?;
    sink.write_read_totals(&probes)?;
    status.clear();
    // The recording ends here: its time and losses. The store's graph is
    // read after it (the queries are the recorder's, not the command's, and
    // their processes are not drained), and adds only records of its own.
    let mut stats = sink.stats(&probes)?;
    let elapsed = status.elapsed();
    for event in store::graph(&sink.store_paths, stats.ts_ns).await {
        sink.write(event)?;
    }
    if booting {
        sink.write(boot::systemd_analyze(stats.ts_ns).await)?;
    }
    stats.events = sink.writer.events();
    let Sink { writer, counts, .. } = sink;
    writer.finish(&stats).context("writing the trace")?;
    let size = std::fs::metadata(&args.output).map_or(0, |m| m.len());
    if !args.quiet {
        summarize(&args.output, &counts, &stats, size, elapsed);
    }
    let exit_code = match exit_status {
        Some(status) => status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        None => 0,
    };
    Ok(Recorded { exit_code, boot: boot.map(boot::BootPlan::staged) })
}

fn summarize(output: &Path, counts: &Counts, stats: &Stats, bytes: u64, elapsed: Duration) {
    let parts: Vec<String> = counts
        .by_type
        .iter()
        // What the recorder wrote itself, not the kernel's events.
        .filter(|(kind, _)| {
            !matches!(**kind, "stats" | "cgroup" | "process" | "binary" | "store_path" | "store_graph")
        })
        .map(|(kind, n)| match *kind {
            "open" => format!("{n} open ({} failed)", counts.failed_opens),
            _ => format!("{n} {kind}"),
        })
        .collect();
    eprintln!(
        "nixtrace: {} events in {} ({}); {} lost; wrote {} ({} KiB)",
        stats.events,
        duration(elapsed.as_nanos() as u64),
        parts.join(", "),
        stats.lost_total(),
        String::from_utf8_lossy(output.as_os_str().as_bytes()),
        bytes.div_ceil(1024)
    );
    if let Some(lost) = describe_lost(&stats.lost) {
        eprintln!("nixtrace: warning: incomplete trace: {lost}");
    }
}

#[cfg(test)]
mod tests {
    use super::{cgroup_within, redact};

    #[test]
    fn redaction_masks_matches_only() {
        let patterns =
            [regex::bytes::Regex::new(r"password=\S+").unwrap(), regex::bytes::Regex::new("tok").unwrap()];
        let mut argv = vec![b"login".to_vec(), b"--password=hunter2".to_vec(), b"token".to_vec()];
        redact(&mut argv, &patterns);
        assert_eq!(argv, [&b"login"[..], b"--<redacted>", b"<redacted>en"]);
    }

    #[test]
    fn cgroup_prefixes_match_whole_components() {
        assert!(cgroup_within(b"/system.slice/a.service", b"/system.slice"));
        assert!(cgroup_within(b"/system.slice", b"/system.slice"));
        assert!(cgroup_within(b"/anything", b"/"));
        assert!(!cgroup_within(b"/system.slice2/a", b"/system.slice"));
    }
}
