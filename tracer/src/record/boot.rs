//! `record --boot`: the recorder as an early systemd unit
//! (`systemd/nixtrace-boot.service`). It records into /run (writable from
//! the first moment of boot, unlike /var), tells systemd it is ready once
//! the probes are attached, and stops when systemd says the boot has
//! finished. Filing the trace with its report and flamegraphs is
//! `crate::boots`' job, above the recorder.

use std::{
    fs,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};

use super::BootOptions;

/// Where the trace grows while the machine boots.
const STAGING_DIR: &str = "/run/nixtrace";
/// Longest a boot trace runs when systemd never says the boot finished.
pub const DEFAULT_MAX_SECONDS: f64 = 300.0;
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Where this boot's trace grows, and where its files go.
#[derive(Debug)]
pub struct BootPlan {
    pub boot_id: String,
    options: BootOptions,
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

/// A boot's trace, complete in the staging directory, to be filed.
#[derive(Debug)]
pub struct StagedBoot {
    /// `/proc/sys/kernel/random/boot_id` without its dashes.
    pub boot_id: String,
    pub staging: PathBuf,
    pub output_dir: PathBuf,
    pub keep: usize,
}

impl BootPlan {
    pub fn staged(self) -> StagedBoot {
        StagedBoot {
            boot_id: self.boot_id,
            staging: self.staging,
            output_dir: self.options.output_dir,
            keep: self.options.keep,
        }
    }
}

/// Points the recording at the staging file (`output`) and gives it the
/// boot's longest `duration` unless one was asked for.
pub fn prepare(output: &mut PathBuf, duration: &mut Option<f64>, options: &BootOptions) -> Result<BootPlan> {
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
    output.clone_from(&staging);
    duration.get_or_insert(DEFAULT_MAX_SECONDS);
    let max_staged_bytes =
        free_bytes(Path::new(STAGING_DIR)).map_or(MAX_STAGED_BYTES, |free| (free / 2).min(MAX_STAGED_BYTES));
    Ok(BootPlan { boot_id, options: options.clone(), staging, max_staged_bytes })
}

/// Tells systemd the unit is ready (Type=notify): the probes are attached,
/// so the rest of the boot may go on. Nothing to do outside systemd.
pub fn notify_ready() -> Result<()> {
    use std::os::{linux::net::SocketAddrExt as _, unix::net::UnixDatagram};
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(()) };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(socket.as_os_str()).to_vec();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name),
        None => std::os::unix::net::SocketAddr::from_pathname(Path::new(&socket)),
    }
    .with_context(|| format!("NOTIFY_SOCKET {}", socket.display()))?;
    let sender = UnixDatagram::unbound().context("creating a socket to notify systemd")?;
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
