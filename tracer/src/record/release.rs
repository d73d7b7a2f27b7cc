//! Taking the probes down off the recorder's exit path.
//!
//! The kernel waits for an RCU grace period for each perf-event tracepoint
//! and uprobe it takes down, one after another under one mutex
//! (`perf_trace_event_unreg` calls `tracepoint_synchronize_unregister`):
//! about 40 ms each here, 1.5 s for a recording's 35. The trace is complete
//! before that, so the wait need not be the user's. A helper forked when
//! recording starts, before the recorder has a thread, waits on a socket.
//! At the end the recorder hands it every link (`hand_over`), closes its
//! own copies and exits; the helper, holding the last copies, closes each
//! on a thread of its own, so that every program is detached within
//! milliseconds and only the kernel's bookkeeping waits.

use std::{
    fs,
    io::{self, IoSlice, IoSliceMut},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    thread,
};

use nix::{
    cmsg_space,
    errno::Errno,
    sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg},
};

use super::helper::{Helper, fork_helper};

/// Descriptors per message; the kernel takes at most 253.
const FDS_PER_MESSAGE: usize = 64;

/// The recorder's end of the helper.
pub struct Releaser(Helper);

impl Releaser {
    /// Forks the helper. Must run before this process starts a thread.
    pub fn start() -> io::Result<Self> {
        fork_helper(c"nixtrace-detach", release).map(Releaser)
    }

    /// The helper's pid, which the trace leaves out like the recorder's.
    pub fn pid(&self) -> u32 {
        self.0.pid
    }

    /// Sends the helper every BPF link and perf event this process holds.
    /// It closes them once this process has closed its own copies and
    /// dropped the releaser, which it must do in that order.
    pub fn hand_over(&self) -> io::Result<()> {
        let fds = attachment_fds()?;
        for chunk in fds.chunks(FDS_PER_MESSAGE) {
            let rights = [ControlMessage::ScmRights(chunk)];
            sendmsg::<()>(
                self.0.socket.as_raw_fd(),
                &[IoSlice::new(b"l")],
                &rights,
                MsgFlags::empty(),
                None,
            )?;
        }
        Ok(())
    }
}

/// This process's BPF links and perf events. aya keeps its links'
/// descriptors private, and every one in this process is aya's.
fn attachment_fds() -> io::Result<Vec<RawFd>> {
    let mut fds = Vec::new();
    for entry in fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Ok(target) = fs::read_link(entry.path()) else { continue };
        let target = target.as_os_str().as_encoded_bytes();
        if (target == b"anon_inode:bpf_link" || target == b"anon_inode:[perf_event]")
            && let Some(fd) = entry.file_name().to_str().and_then(|name| name.parse().ok())
        {
            fds.push(fd);
        }
    }
    Ok(fds)
}

/// The helper's work: collects descriptors until the recorder's end
/// closes, then closes them all at once.
fn release(socket: OwnedFd) {
    let keep = socket.as_raw_fd();
    let mut held = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        let mut space = cmsg_space!([RawFd; FDS_PER_MESSAGE]);
        let mut iov = [IoSliceMut::new(&mut byte)];
        match recvmsg::<()>(keep, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(message) if message.bytes == 0 => break,
            Ok(message) => {
                for control in message.cmsgs().into_iter().flatten() {
                    if let ControlMessageOwned::ScmRights(fds) = control {
                        // SAFETY: the kernel just installed these for us.
                        held.extend(fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                    }
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    thread::scope(|scope| {
        for fd in held {
            // Where no thread can be had, this one closes it.
            let _ = thread::Builder::new().spawn_scoped(scope, move || drop(fd));
        }
    });
    drop(socket);
}
