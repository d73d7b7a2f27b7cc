//! The on-disk layout shared by the writer and the reader; the prose
//! version is `docs/trace-format.md`.
//!
//! ```text
//! file   = "NIXTRACE" version:u32le header_len:u32le header:JSON block*
//! block  = payload_len:u32le crc32(payload):u32le payload
//! payload = record*
//! record = tag:u8 fields...
//! ```
//! Fields are LEB128 varints (signed ones zigzag-encoded). Strings are
//! written once, as a `STRING` record that takes the next id, and then
//! referred to by id. Event timestamps are deltas from the previous event's.

use serde::{Deserialize, Serialize};

use super::Probe;

pub const MAGIC: &[u8; 8] = b"NIXTRACE";
/// 2 added the `BINARY`, `STORE_PATH` and `STORE_GRAPH` records and the
/// loader's variables of an exec; 3 added the `STAT` record; 4 the
/// `SYSTEMD_ANALYZE` record; 5 its `unit_times`. Older files read as before.
pub const VERSION: u32 = 5;
/// A block is written when its payload reaches this size (and at least once
/// a second), so a crash loses at most one block.
pub const BLOCK_TARGET: usize = 256 * 1024;
/// Larger blocks are refused by the reader as corrupt.
pub const BLOCK_MAX: usize = 64 * 1024 * 1024;
/// Longer strings are refused by the reader as corrupt: the recorder's are
/// paths (at most 4 KiB) and argv (at most `argv_max`).
pub const STRING_MAX: usize = 1024 * 1024;
/// Larger headers are refused by the reader as corrupt.
pub const HEADER_MAX: usize = 1024 * 1024;

pub mod tag {
    pub const STRING: u8 = 0x01;
    pub const FORK: u8 = 0x10;
    pub const EXEC: u8 = 0x11;
    pub const EXEC_FAILED: u8 = 0x12;
    pub const EXIT: u8 = 0x13;
    pub const OPEN: u8 = 0x14;
    pub const MMAP: u8 = 0x15;
    pub const CGROUP: u8 = 0x16;
    pub const PROCESS: u8 = 0x17;
    pub const STATS: u8 = 0x18;
    pub const LOADER: u8 = 0x19;
    pub const PAGE_CACHE: u8 = 0x1a;
    pub const BLOCK_IO: u8 = 0x1b;
    pub const SCHED: u8 = 0x1c;
    pub const FILE_READ: u8 = 0x1d;
    pub const BINARY: u8 = 0x1e;
    pub const STORE_PATH: u8 = 0x1f;
    pub const STORE_GRAPH: u8 = 0x20;
    pub const STAT: u8 = 0x21;
    pub const SYSTEMD_ANALYZE: u8 = 0x22;
    /// Written once by a recorder that stopped cleanly.
    pub const END: u8 = 0x7f;
}

/// Flag bits packed into one varint per record.
pub mod flag {
    pub const ARGV_TRUNCATED: u64 = 1;
    pub const ENV_TRUNCATED: u64 = 2;
    pub const GROUP_DEAD: u64 = 1;
    pub const DIR_TRUNCATED: u64 = 1;
    pub const PATH_TRUNCATED: u64 = 1;
    pub const SEEDED: u64 = 1;
    pub const WRITE: u64 = 1;
    pub const BIND_NOW: u64 = 1;
    pub const IS_DYNAMIC: u64 = 2;
    pub const COMPLETE: u64 = 1;
}

/// The self-describing JSON header at the start of every trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub nixtrace_version: String,
    pub host: String,
    pub kernel_release: String,
    /// `/proc/sys/kernel/random/boot_id`: timestamps are only comparable
    /// within one boot.
    pub boot_id: String,
    pub clock: ClockReference,
    /// The probes that were attached, in attach order.
    pub probes: Vec<Probe>,
    /// The optional probes that were not, and why (a default, as traces
    /// recorded before probes were optional lack the field).
    #[serde(default)]
    pub missing_probes: Vec<MissingProbe>,
    /// Nanoseconds from starting to load the probes to the last one attached.
    pub attach_ns: u64,
    /// What tracing added to each call the dynamic loader makes, measured
    /// when recording started; null when it was not measured (`--cgroup`,
    /// or traces that predate it).
    #[serde(default)]
    pub tracer_cost: Option<TracerCost>,
    /// The dynamic loaders the loader probes are attached to. The kernel
    /// maps them at exec without an mmap call, so this names their reads.
    pub loaders: Vec<FileId>,
    /// Bytes of argv captured per exec.
    pub argv_max: usize,
    /// CPUs the recorder could run on when it started (0 in traces that
    /// predate the field):
    /// what a build could have run on.
    #[serde(default)]
    pub cpus: u32,
    /// What was recorded: the command, or null for the whole system.
    pub command: Option<Vec<String>>,
    /// How this boot was set up, read by `record --boot` when it started;
    /// null for other recordings.
    #[serde(default)]
    pub boot: Option<BootSetup>,
    pub filters: Filters,
}

impl Header {
    /// Whether the trace was recorded with `probe` attached.
    pub fn has_probe(&self, probe: Probe) -> bool {
        self.probes.contains(&probe)
    }
}

/// How the machine booted, as `record --boot` found it when it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootSetup {
    /// `/proc/cmdline`.
    pub kernel_cmdline: String,
    /// The initrd the machine booted with, when it could be found.
    pub initrd: Option<Initrd>,
    /// The console log level (`/proc/sys/kernel/printk`'s first field):
    /// messages below it are printed on the console.
    pub console_loglevel: Option<u32>,
    /// Bytes of kernel messages below the console log level, logged
    /// before the tracer started (`/dev/kmsg`): what the console printed.
    pub console_log_bytes: Option<u64>,
    /// What the kernel log says of the initrd's run, when the kernel ran
    /// one; null without an initrd, or in traces older than this field.
    #[serde(default)]
    pub initrd_run: Option<InitrdRun>,
}

/// The initrd's run, from the kernel log (`/dev/kmsg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitrdRun {
    /// Whether systemd ran in the initrd (its "Running in initrd."), or a
    /// scripted stage 1 did.
    pub systemd: bool,
    /// From the kernel running the initrd's init ("Run /init as init
    /// process") to the system's own systemd starting (the last "systemd
    /// NNN running in system mode"): the initrd's time. Null when the log
    /// has no such systemd line.
    pub ns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Initrd {
    pub path: String,
    pub size_bytes: u64,
    /// `gzip`, `zstd`, `xz`, `lzma`, `lz4`, `bzip2`, or null when none was
    /// recognised (an uncompressed cpio archive).
    pub compression: Option<String>,
}

/// An optional probe a trace was recorded without.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingProbe {
    pub probe: Probe,
    /// "disabled with --no-probe", or what the kernel lacks.
    pub reason: String,
    /// What the trace lacks without it.
    pub lacks: String,
}

/// What tracing added to one call of each kind the dynamic loader makes
/// (`record/calibrate.rs`), in ns: the analysis takes it out of loader times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracerCost {
    /// An open that fails: the library search.
    pub failed_open_ns: u64,
    /// An open that succeeds.
    pub open_ns: u64,
    /// An mmap of a file.
    pub mmap_ns: u64,
}

/// Event timestamps are CLOCK_BOOTTIME; this pair, read together at start,
/// maps them to wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockReference {
    pub boottime_ns: u64,
    pub realtime_ns: u64,
}

/// A file and its (device, inode), with the device as the kernel numbers it
/// (`MKDEV(major, minor)` = `major << 20 | minor`), as events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub path: String,
    pub dev: u32,
    pub ino: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    pub pids: Vec<u32>,
    pub cgroup: Option<String>,
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header of docs/trace-format.md: probes are read and written as
    /// their names.
    #[test]
    fn the_documented_header_reads_and_writes_back() {
        let json = r#"{
          "nixtrace_version": "0.1.0",
          "host": "vm",
          "kernel_release": "6.18.44",
          "boot_id": "664ca74b-2531-4836-a863-4f3516e781bb",
          "clock": { "boottime_ns": 970738919597, "realtime_ns": 1795887029603246353 },
          "probes": ["fork", "exec", "exit", "open", "mmap", "cgroup_mkdir", "page_cache", "block_io", "read", "loader"],
          "missing_probes": [
            { "probe": "sched", "reason": "disabled with --no-probe", "lacks": "on-CPU, runnable, blocked and sleeping times" }
          ],
          "attach_ns": 48213117,
          "tracer_cost": { "failed_open_ns": 787, "open_ns": 1198, "mmap_ns": 1404 },
          "loaders": [{ "path": "/lib64/ld-linux-x86-64.so.2", "dev": 266338304, "ino": 325843 }],
          "argv_max": 1024,
          "cpus": 2,
          "command": ["/bin/echo", "hello"],
          "boot": null,
          "filters": { "pids": [], "cgroup": null }
        }"#;
        let header: Header = serde_json::from_str(json).unwrap();
        assert!(header.has_probe(Probe::Loader) && header.has_probe(Probe::PageCache));
        assert!(!header.has_probe(Probe::Sched));
        assert_eq!(header.missing_probes[0].probe, Probe::Sched);
        let written = serde_json::to_value(&header).unwrap();
        assert_eq!(written, serde_json::from_str::<serde_json::Value>(json).unwrap());
    }

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0, 1, -1, 63, -64, i64::MAX, i64::MIN, -4095] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }
}
