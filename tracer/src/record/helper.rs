//! Helper processes the recorder forks before it has a thread (so that a
//! helper, a copy of it, may start threads of its own): each holds nothing
//! of the user's, ignores the signals meant for the recorder, and talks to
//! it over one socket.

use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd as _, OwnedFd},
};

use nix::{
    sys::socket::{AddressFamily, SockFlag, SockType, socketpair},
    unistd::{ForkResult, fork},
};

/// A forked helper: the recorder's end of its socket, and its pid.
pub struct Helper {
    pub socket: OwnedFd,
    pub pid: u32,
}

/// Forks a helper named `name` that runs `body` with its end of a
/// message-preserving socket, then exits. Must run before this process
/// starts a thread.
pub fn fork_helper(name: &CStr, body: impl FnOnce(OwnedFd)) -> io::Result<Helper> {
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: single-threaded (the caller's promise), so the child may do
    // anything; it never returns into the recorder.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(ours);
            detach_from_the_user(name, theirs.as_raw_fd());
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || body(theirs)));
            // SAFETY: leaves without running the recorder's exit path.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => Ok(Helper { socket: ours, pid: child.as_raw() as u32 }),
    }
}

/// In the helper: ignores the signals meant for the recorder (Ctrl-C
/// reaches the whole process group and a unit's SIGTERM its whole cgroup),
/// puts /dev/null on the standard descriptors and closes every other but
/// `keep` (the terminal, or a pipe a caller waits on to close, must not
/// stay open here), and names the process.
fn detach_from_the_user(name: &CStr, keep: i32) {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: setting a disposition.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    // SAFETY: plain descriptor calls on this process's own table.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for std in 0..3 {
            if null >= 0 {
                libc::dup2(null, std);
            }
        }
        libc::close_range(3, (keep - 1) as u32, 0);
        libc::close_range((keep + 1) as u32, u32::MAX, 0);
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
    }
}
