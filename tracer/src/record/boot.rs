//! `record --boot`: the recorder as an early systemd unit
//! (`systemd/nixtrace-boot.service`). It records into /run (writable from
//! the first moment of boot, unlike /var), tells systemd it is ready once
//! the probes are attached, stops when systemd says the boot has finished,
//! then files the trace under the output directory with its report and
//! flamegraphs, and keeps the last N boots.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{cli::RecordArgs, flamegraph, report};

/// Where the trace grows while the machine boots.
const STAGING_DIR: &str = "/run/nixtrace";
/// Longest a boot trace runs when systemd never says the boot finished.
pub const DEFAULT_MAX_SECONDS: f64 = 300.0;
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Where this boot's files go.
#[derive(Debug)]
pub struct BootPlan {
    pub boot_id: String,
    output_dir: PathBuf,
    keep: usize,
    staging: PathBuf,
    /// The staged trace stops growing here: /run is a small tmpfs that
    /// the rest of the boot needs too.
    pub max_staged_bytes: u64,
}

/// At most half of what is free in /run, and never more than this.
const MAX_STAGED_BYTES: u64 = 512 << 20;

/// Bytes free for unprivileged use in the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let path = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str())).ok()?;
    // SAFETY: statvfs fills the zeroed struct; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(path.as_ptr(), &mut stat) } == 0).then(|| stat.f_bavail * stat.f_frsize)
}

/// Checks the arguments of `record --boot` and points the recording at
/// the staging file.
pub fn prepare(args: &mut RecordArgs) -> Result<BootPlan> {
    if !args.command.is_empty() || !args.pids.is_empty() || args.cgroup.is_some() {
        bail!("--boot records the whole system: it takes no command, --pid or --cgroup");
    }
    if args.keep == 0 {
        bail!("--keep must be at least 1");
    }
    let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .context("reading /proc/sys/kernel/random/boot_id")?
        .trim()
        .replace('-', "");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(STAGING_DIR)
        .with_context(|| format!("cannot create {STAGING_DIR}"))?;
    let staging = Path::new(STAGING_DIR).join(format!("{boot_id}.ntr"));
    args.output = staging.clone();
    args.force = true;
    args.duration.get_or_insert(DEFAULT_MAX_SECONDS);
    let max_staged_bytes =
        free_bytes(Path::new(STAGING_DIR)).map_or(MAX_STAGED_BYTES, |free| (free / 2).min(MAX_STAGED_BYTES));
    Ok(BootPlan { boot_id, output_dir: args.output_dir.clone(), keep: args.keep, staging, max_staged_bytes })
}

/// Tells systemd the unit is ready (Type=notify): the probes are attached,
/// so the rest of the boot may go on. Nothing to do outside systemd.
pub fn notify_ready() -> Result<()> {
    use std::os::{linux::net::SocketAddrExt as _, unix::net::UnixDatagram};
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(()) };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(socket.as_os_str()).to_vec();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name)?,
        None => std::os::unix::net::SocketAddr::from_pathname(Path::new(&socket))?,
    };
    let sender = UnixDatagram::unbound()?;
    sender.send_to_addr(b"READY=1\nSTATUS=recording the boot", &addr).context("notifying systemd")?;
    Ok(())
}

/// systemd's state: "initializing" and "starting" while the boot runs.
async fn system_state() -> Option<String> {
    let output = tokio::process::Command::new("systemctl").arg("is-system-running").output().await.ok()?;
    Some(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// systemd has finished booting already (the unit was started on a
/// running system, e.g. when first enabled): there is no boot to trace.
pub async fn already_finished() -> bool {
    !matches!(system_state().await.as_deref(), Some("initializing" | "starting" | "" | "offline") | None)
}

/// Returns once systemd says the boot has finished (the default target
/// reached and the job queue empty). Without systemd (no systemctl, or
/// "offline") it never returns, and the recording runs until --duration or
/// a signal; a poll that fails otherwise is tried again.
pub async fn finished() {
    loop {
        match system_state().await.as_deref() {
            Some("offline") | None => return std::future::pending().await,
            Some("initializing" | "starting" | "") => {}
            Some(_) => return,
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The output of a systemd-analyze subcommand, or None without one.
fn systemd_analyze(args: &[&str]) -> Option<String> {
    let output = std::process::Command::new("systemd-analyze").args(args).arg("--no-pager").output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Files the staged trace: moves it to `<dir>/<boot-id>.ntr`, writes the
/// report (Markdown and JSON) and the startup and io flamegraphs beside
/// it, and removes the oldest boots beyond --keep. Returns the trace's path.
pub fn finish(plan: &BootPlan) -> Result<PathBuf> {
    let dir = &plan.output_dir;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let trace = dir.join(format!("{}.ntr", plan.boot_id));
    // /run and /var are different file systems: copy, then remove.
    fs::copy(&plan.staging, &trace)
        .with_context(|| format!("copying {} to {}", plan.staging.display(), trace.display()))?;
    fs::set_permissions(&trace, fs::Permissions::from_mode(0o600))?;
    fs::remove_file(&plan.staging).with_context(|| format!("removing {}", plan.staging.display()))?;

    let stem = dir.join(&plan.boot_id);
    let mut report = report::build(&trace, &report::Selection::default())?;
    report.boot = Some(report::boot::section(
        &report,
        systemd_analyze(&["critical-chain"]).as_deref(),
        systemd_analyze(&["blame"]).as_deref(),
    ));
    let selection = report::Selection { top: 20, ..Default::default() };
    for (format, extension) in
        [(report::Format::Markdown, "report.md"), (report::Format::Json, "report.json")]
    {
        let text = report::render(&report, format, &selection, false);
        crate::output::write_private(&stem.with_extension(extension), text.as_bytes())?;
    }
    for kind in [flamegraph::Kind::Startup, flamegraph::Kind::Io] {
        let stacks = flamegraph::stacks(&report, kind);
        match flamegraph::svg(&stacks, kind, &report, kind == flamegraph::Kind::Startup) {
            Ok(svg) => {
                crate::output::write_private(&stem.with_extension(format!("{}.svg", kind.name())), &svg)?
            }
            Err(e) => eprintln!("nixtrace: warning: no {} flamegraph: {e:#}", kind.name()),
        }
    }
    prune(dir, plan.keep, &plan.boot_id)?;
    Ok(trace)
}

/// A boot id as the files are named: 32 hex digits.
fn is_boot_id(stem: &str) -> bool {
    stem.len() == 32 && stem.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Removes every file of the boots older than the `keep` newest traces,
/// never those of `current` (a clock not yet set at boot may make it look
/// oldest) and nothing that is not named after a boot.
fn prune(dir: &Path, keep: usize, current: &str) -> Result<()> {
    let mut traces: Vec<(std::time::SystemTime, String)> = fs::read_dir(dir)?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let id = name.strip_suffix(".ntr").filter(|id| is_boot_id(id) && *id != current)?.to_string();
            Some((entry.metadata().ok()?.modified().ok()?, id))
        })
        .collect();
    traces.sort();
    let old = traces.len().saturating_sub(keep.saturating_sub(1));
    for (_, id) in &traces[..old] {
        for entry in fs::read_dir(dir)?.filter_map(|e| e.ok()) {
            let name = entry.file_name();
            if name.to_string_lossy().split('.').next() == Some(id.as_str()) {
                fs::remove_file(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_boots_and_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let [a, b, c] = ["a", "b", "c"].map(|x| x.repeat(32));
        for (i, id) in [&c, &a, &b].iter().enumerate() {
            for ext in ["ntr", "report.md", "startup.svg"] {
                let path = dir.path().join(format!("{id}.{ext}"));
                fs::write(&path, "x").unwrap();
                let when = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + i as u64);
                fs::File::options().write(true).open(&path).unwrap().set_modified(when).unwrap();
            }
        }
        fs::write(dir.path().join("unrelated.ntr"), "x").unwrap();
        // c is this boot, with the oldest time (the clock was not set yet).
        prune(dir.path(), 2, &c).unwrap();
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let expected: Vec<String> = [&b, &c]
            .iter()
            .flat_map(|id| ["ntr", "report.md", "startup.svg"].map(|ext| format!("{id}.{ext}")))
            .chain(["unrelated.ntr".to_string()])
            .collect();
        assert_eq!(left, expected, "a (the oldest other boot) is gone");
    }
}
