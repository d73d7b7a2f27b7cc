//! Starting the command to trace. Under sudo it runs as the invoking user
//! (as `perf record` does), unless asked to stay root.

use std::{ffi::OsString, io};

use anyhow::{Context as _, Result, anyhow};
use tokio::process::{Child, Command};

/// The user to become: uid, gid and supplementary groups, resolved before
/// fork because the child may only make async-signal-safe calls.
struct Identity {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

/// The identity `sudo` recorded for the invoking user, when running as root
/// under sudo.
fn sudo_identity() -> Result<Option<Identity>> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let (Ok(uid), Ok(gid)) = (std::env::var("SUDO_UID"), std::env::var("SUDO_GID")) else {
        return Ok(None);
    };
    let uid: libc::uid_t = uid.parse().context("SUDO_UID is not a number")?;
    let gid: libc::gid_t = gid.parse().context("SUDO_GID is not a number")?;
    if uid == 0 {
        return Ok(None);
    }
    let mut groups = vec![gid];
    if let Ok(user) = std::env::var("SUDO_USER") {
        let name = std::ffi::CString::new(user).context("SUDO_USER holds a NUL byte")?;
        let mut count: libc::c_int = 256;
        let mut list = vec![0 as libc::gid_t; count as usize];
        // SAFETY: list has room for `count` entries; count is updated.
        if unsafe { libc::getgrouplist(name.as_ptr(), gid, list.as_mut_ptr(), &mut count) } >= 0 {
            list.truncate(count as usize);
            groups = list;
        }
    }
    Ok(Some(Identity { uid, gid, groups }))
}

/// Spawns `argv`, as the sudo-invoking user unless `run_as_root`.
pub fn spawn(argv: &[OsString], run_as_root: bool) -> Result<Child> {
    let (program, args) = argv.split_first().ok_or_else(|| anyhow!("no command given"))?;
    let mut command = Command::new(program);
    command.args(args);
    if !run_as_root && let Some(identity) = sudo_identity()? {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::setgroups(identity.groups.len(), identity.groups.as_ptr()) != 0
                    || libc::setgid(identity.gid) != 0
                    || libc::setuid(identity.uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    command.spawn().with_context(|| format!("cannot run {}", program.to_string_lossy()))
}
