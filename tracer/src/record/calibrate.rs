//! What tracing costs each call the dynamic loader makes, measured on this
//! machine when recording starts, so that the analysis can take the
//! tracer's own share out of the loader times it reports.
//!
//! A helper forked before the probes are attached times three loops: opens
//! of a library path that does not exist (the library search), opens and
//! closes of a file that does, and mmaps and munmaps of it (the cheapest of
//! several rounds of each, before attaching). Once the probes are attached
//! (and it is followed, when the recording follows processes) it times them
//! again. The difference per call is the cost. Its events never reach the
//! trace: the recorder drops every record of its pid.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use super::helper::{Helper, fork_helper};
use crate::trace::TracerCost;

/// Calls per loop, and rounds of each (the cheapest round counts): many
/// short rounds, so that one of them misses whatever else ran.
const CALLS: u32 = 40;
const ROUNDS: u32 = 15;
/// Shaped like a path the loader tries in a RUNPATH directory.
const MISSING: &std::ffi::CStr = c"/nonexistent/nixtrace-calibration/glibc-hwcaps/x86-64-v3/libc.so.6";
/// How long the recorder waits for the helper's figures.
const TIMEOUT_MS: i32 = 5_000;

/// Nanoseconds per call of each loop.
#[derive(Debug, Clone, Copy, Default)]
struct PerCall {
    failed_open: f64,
    open: f64,
    mmap: f64,
}

impl PerCall {
    const BYTES: usize = 24;

    fn to_bytes(self) -> [u8; Self::BYTES] {
        let mut bytes = [0; Self::BYTES];
        for (chunk, value) in bytes.chunks_mut(8).zip([self.failed_open, self.open, self.mmap]) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    fn from_bytes(bytes: &[u8; Self::BYTES]) -> Self {
        let value = |i: usize| f64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        PerCall { failed_open: value(0), open: value(1), mmap: value(2) }
    }
}

/// The recorder's end of the helper, its untraced figures in.
pub struct Calibrator {
    helper: Helper,
    untraced: PerCall,
}

impl Calibrator {
    /// Forks the helper and waits for its untraced figures. Must run before
    /// this process starts a thread and before the probes are attached.
    pub fn start() -> Result<Self> {
        let file = std::env::current_exe().context("finding nixtrace's own executable")?;
        let file = CString::new(file.as_os_str().as_bytes()).context("nixtrace's path has a NUL")?;
        let helper = fork_helper(c"nixtrace-calib", move |socket| measure(&socket, &file))
            .context("starting the calibration helper")?;
        let untraced = receive(&helper.socket).context("calibrating: the untraced calls")?;
        Ok(Calibrator { helper, untraced })
    }

    /// The helper's pid, whose records the recorder drops.
    pub fn pid(&self) -> u32 {
        self.helper.pid
    }

    /// Lets the helper make its calls again, traced, and returns what
    /// tracing added to each. Call once the probes are attached and the
    /// helper is traced.
    pub fn finish(self) -> Result<TracerCost> {
        send(&self.helper.socket, b"go").context("calibrating")?;
        let traced = receive(&self.helper.socket).context("calibrating: the traced calls")?;
        let added = |traced: f64, untraced: f64| (traced - untraced).max(0.0).round() as u64;
        Ok(TracerCost {
            failed_open_ns: added(traced.failed_open, self.untraced.failed_open),
            open_ns: added(traced.open, self.untraced.open),
            mmap_ns: added(traced.mmap, self.untraced.mmap),
        })
    }
}

fn send(socket: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: a plain write of a local buffer.
    let sent = unsafe { libc::write(socket.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    if sent == bytes.len() as isize { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Waits (at most [`TIMEOUT_MS`]) for the helper's figures.
fn receive(socket: &OwnedFd) -> Result<PerCall> {
    let mut poll = libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut poll, 1, TIMEOUT_MS) } != 1 {
        bail!("the helper did not answer within {TIMEOUT_MS} ms");
    }
    let mut bytes = [0u8; PerCall::BYTES];
    // SAFETY: reads into a local buffer of its length.
    let read = unsafe { libc::read(socket.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len()) };
    if read != PerCall::BYTES as isize {
        bail!("the helper stopped before it sent its figures");
    }
    Ok(PerCall::from_bytes(&bytes))
}

/// The helper's work: the loops untraced, then, when told, traced.
fn measure(socket: &OwnedFd, file: &CString) {
    stay_on_this_cpu();
    let Ok(existing) = File::open(std::ffi::OsStr::from_bytes(file.as_bytes())) else { return };
    if send(socket, &time_calls(file, &existing).to_bytes()).is_err() {
        return;
    }
    let mut go = [0u8; 2];
    // SAFETY: reads into a local buffer of its length.
    if unsafe { libc::read(socket.as_raw_fd(), go.as_mut_ptr().cast(), go.len()) } != 2 {
        return;
    }
    let _ = send(socket, &time_calls(file, &existing).to_bytes());
}

/// Pins the helper to the CPU it runs on, so that both halves are timed on
/// the same one.
fn stay_on_this_cpu() {
    // SAFETY: plain calls on this process, with a zeroed cpu set.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The cheapest of [`ROUNDS`] rounds of each loop, per call.
fn time_calls(file: &CString, existing: &File) -> PerCall {
    let cheapest = |call: &dyn Fn()| {
        (0..ROUNDS)
            .map(|_| {
                let started = Instant::now();
                (0..CALLS).for_each(|_| call());
                started.elapsed().as_nanos() as f64 / f64::from(CALLS)
            })
            .fold(f64::INFINITY, f64::min)
    };
    let flags = libc::O_RDONLY | libc::O_CLOEXEC;
    // SAFETY (all three): plain syscalls on valid paths and descriptors;
    // each descriptor and mapping made is released before the next call.
    PerCall {
        failed_open: cheapest(&|| unsafe {
            libc::open(MISSING.as_ptr(), flags);
        }),
        open: cheapest(&|| unsafe {
            let fd = libc::open(file.as_ptr(), flags);
            if fd >= 0 {
                libc::close(fd);
            }
        }),
        mmap: cheapest(&|| unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                existing.as_raw_fd(),
                0,
            );
            if map != libc::MAP_FAILED {
                libc::munmap(map, 4096);
            }
        }),
    }
}
