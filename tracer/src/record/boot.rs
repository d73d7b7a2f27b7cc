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
use crate::trace::{BootSetup, Event, Initrd, InitrdRun};

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
    /// Write the Parquet tables beside the report.
    pub parquet: bool,
}

impl BootPlan {
    pub fn staged(self) -> StagedBoot {
        StagedBoot {
            boot_id: self.boot_id,
            staging: self.staging,
            output_dir: self.options.output_dir,
            keep: self.options.keep,
            parquet: self.options.parquet,
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

/// What `systemd-analyze` says of the boot now (once it has finished):
/// its critical chain and blame, for the boot section and the rules to
/// read from the trace anywhere.
pub async fn systemd_analyze(ts_ns: u64) -> Event {
    async fn run(program: &str, args: &[&str]) -> Option<Vec<u8>> {
        let output = tokio::process::Command::new(program).args(args).output().await.ok()?;
        output.status.success().then_some(output.stdout)
    }
    // systemd-analyze prints times rounded to the millisecond, and only for
    // the chain and the slowest units: the timestamps themselves, for every
    // unit, come from systemctl.
    let manager =
        run("systemctl", &["show", "--property=UserspaceTimestampMonotonic,FinishTimestampMonotonic"]);
    let units = run(
        "systemctl",
        &[
            "show",
            // Without --all, a pattern matches no inactive unit (a oneshot
            // that ran and exited).
            "--all",
            "--property=Id,ActiveState,InactiveExitTimestampMonotonic,ActiveEnterTimestampMonotonic,\
             InactiveEnterTimestampMonotonic",
            "*",
        ],
    );
    let unit_times = match (manager.await, units.await) {
        (Some(mut manager), Some(units)) => {
            manager.push(b'\n');
            manager.extend(units);
            Some(manager)
        }
        _ => None,
    };
    Event::SystemdAnalyze {
        ts_ns,
        critical_chain: run("systemd-analyze", &["critical-chain", "--no-pager"]).await,
        blame: run("systemd-analyze", &["blame", "--no-pager"]).await,
        unit_times,
    }
}

/// How this boot was set up: the kernel's command line, the initrd and how
/// much the console printed before the tracer started, for the boot-config
/// recommendations to rerun anywhere. What cannot be read is left out.
pub fn setup() -> BootSetup {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let candidates = [
        // NixOS: the booted generation's initrd.
        "/run/booted-system/initrd".to_string(),
        format!("/boot/initrd.img-{release}"),
        format!("/boot/initramfs-{release}.img"),
    ];
    let initrd = candidates.iter().find_map(|path| {
        let size_bytes = fs::metadata(path).ok()?.len();
        Some(Initrd { path: path.clone(), size_bytes, compression: initrd_compression(Path::new(path)) })
    });
    let console_loglevel: Option<u32> = fs::read_to_string("/proc/sys/kernel/printk")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok());
    let kernel_cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default().trim().to_string();
    let log = kernel_log();
    BootSetup {
        initrd,
        console_loglevel,
        console_log_bytes: log
            .as_deref()
            .zip(console_loglevel)
            .map(|(log, level)| console_log_bytes(log, level)),
        initrd_run: log.as_deref().and_then(|log| initrd_run(log, &kernel_cmdline)),
        kernel_cmdline,
    }
}

/// How an initrd is compressed: the magic of its first compressed member.
/// An initrd may start with an uncompressed cpio archive (early CPU
/// microcode), so the first megabytes are searched.
fn initrd_compression(path: &Path) -> Option<String> {
    use std::io::Read as _;
    const MAGICS: [(&[u8], &str); 6] = [
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (&[0x1f, 0x8b], "gzip"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz"),
        (&[0x5d, 0x00, 0x00], "lzma"),
        (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
        (b"BZh", "bzip2"),
    ];
    let mut head = Vec::new();
    fs::File::open(path).ok()?.take(16 << 20).read_to_end(&mut head).ok()?;
    let compressed_at = |at: usize| MAGICS.iter().find(|(magic, _)| head[at..].starts_with(magic));
    if let Some((_, name)) = compressed_at(0) {
        return Some(name.to_string());
    }
    if !head.starts_with(b"070701") {
        return None;
    }
    // After the cpio archive's trailer, padded to 4 bytes, comes the next member.
    let trailer = head.windows(10).position(|w| w == b"TRAILER!!!")?;
    (trailer..head.len()).filter(|at| at % 4 == 0).find_map(compressed_at).map(|(_, name)| name.to_string())
}

/// A record of the kernel log: its level, when it was logged (µs since
/// boot) and its message's first line (continuation lines carry key=value
/// dictionaries, not printed text).
struct LogRecord {
    level: u32,
    us: u64,
    message: Vec<u8>,
}

/// The kernel log so far (`/dev/kmsg`), or None when it cannot be read.
fn kernel_log() -> Option<Vec<LogRecord>> {
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
    let mut kmsg = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg").ok()?;
    let mut record = vec![0; 8192];
    let mut log = Vec::new();
    // One record per read; EAGAIN once all are read.
    while let Ok(n) = kmsg.read(&mut record) {
        if n == 0 {
            break;
        }
        log.extend(log_record(&record[..n]));
    }
    Some(log)
}

/// A `/dev/kmsg` record: `PRIORITY,SEQUENCE,MICROSECONDS,FLAGS;MESSAGE`.
fn log_record(line: &[u8]) -> Option<LogRecord> {
    let semicolon = line.iter().position(|b| *b == b';')?;
    let prefix = String::from_utf8_lossy(&line[..semicolon]);
    let mut fields = prefix.split(',');
    let level = fields.next()?.parse::<u32>().ok()? & 7;
    let us = fields.nth(1)?.parse().ok()?;
    let message = &line[semicolon + 1..];
    let end = message.iter().position(|b| *b == b'\n').unwrap_or(message.len());
    Some(LogRecord { level, us, message: message[..end].to_vec() })
}

/// Bytes of the kernel messages with a level below `console_loglevel`:
/// those the console printed.
fn console_log_bytes(log: &[LogRecord], console_loglevel: u32) -> u64 {
    log.iter().filter(|r| r.level < console_loglevel).map(|r| r.message.len() as u64 + 1).sum()
}

/// The initrd's run, when the log says the kernel ran the initrd's init
/// (`rdinit=`, /init by default; a kernel without an initrd runs the root
/// file system's).
fn initrd_run(log: &[LogRecord], cmdline: &str) -> Option<InitrdRun> {
    let rdinit = cmdline.split_whitespace().find_map(|w| w.strip_prefix("rdinit=")).unwrap_or("/init");
    let ran = format!("Run {rdinit} as init process");
    let start = log.iter().find(|r| r.message == ran.as_bytes())?.us;
    // systemd's own words (main.c), before and since systemd 247.
    let systemd = log.iter().any(|r| {
        r.message == b"systemd[1]: Running in initrd."
            || r.message == b"systemd[1]: Running in initial RAM disk."
    });
    // A systemd initrd logs this twice: in the initrd, and after switch-root.
    let system = log.iter().rev().find(|r| {
        r.us >= start
            && r.message.starts_with(b"systemd[1]: systemd ")
            && r.message.windows(23).any(|w| w == b" running in system mode")
    });
    Some(InitrdRun { systemd, ns: system.map(|r| (r.us - start).saturating_mul(1000)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: &[&str]) -> Vec<LogRecord> {
        lines.iter().map(|l| log_record(l.as_bytes()).unwrap()).collect()
    }

    /// The records of Debian 12's boot under QEMU, whose initramfs-tools
    /// stage 1 is a script, and of a systemd stage 1 (two system-mode
    /// lines: in the initrd and after switch-root).
    #[test]
    fn the_initrd_run_is_read_from_the_kernel_log() {
        let scripted = log(&[
            "6,350,8152566,-;Run /init as init process",
            "4,410,16408927,-;systemd[1]: Failed to find module 'autofs4'",
            "6,411,16715591,-;systemd[1]: systemd 252.39-1~deb12u2 running in system mode (+PAM +AUDIT)\n SUBSYSTEM=x",
        ]);
        assert_eq!(
            initrd_run(&scripted, "console=ttyS0 root=/dev/vda"),
            Some(InitrdRun { systemd: false, ns: Some(8_563_025_000) })
        );
        assert_eq!(console_log_bytes(&scripted, 5), 44, "only the warning is below level 5");
        assert_eq!(initrd_run(&scripted, "rdinit=/sbin/other"), None, "rdinit= names another init");

        let systemd = log(&[
            "6,300,1000000,-;Run /init as init process",
            "6,301,1100000,-;systemd[1]: systemd 256 running in system mode (+PAM)",
            "6,302,1100500,-;systemd[1]: Running in initrd.",
            "6,400,2500000,-;systemd[1]: systemd 256 running in system mode (+PAM)",
        ]);
        assert_eq!(initrd_run(&systemd, ""), Some(InitrdRun { systemd: true, ns: Some(1_500_000_000) }));
        let no_initrd = log(&["6,300,1000000,-;Run /sbin/init as init process"]);
        assert_eq!(initrd_run(&no_initrd, ""), None);
    }

    #[test]
    fn initrd_compressors_are_told_by_their_magic_even_after_microcode() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        assert_eq!(initrd_compression(&write("gz", b"\x1f\x8b\x08\x00rest")).as_deref(), Some("gzip"));
        assert_eq!(initrd_compression(&write("zst", b"\x28\xb5\x2f\xfdrest")).as_deref(), Some("zstd"));
        // An uncompressed cpio archive of microcode, padded to 4 bytes, then the initrd.
        let mut early = b"070701".to_vec();
        early.extend_from_slice(b"0000000000000000TRAILER!!!");
        while !early.len().is_multiple_of(4) {
            early.push(0);
        }
        early.extend_from_slice(&[0; 8]);
        early.extend_from_slice(b"\xfd7zXZ\x00rest");
        assert_eq!(initrd_compression(&write("early", &early)).as_deref(), Some("xz"));
        assert_eq!(initrd_compression(&write("plain", b"070701no trailer")), None);
    }
}
