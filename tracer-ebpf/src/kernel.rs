//! Reading kernel structs through offsets resolved from the running
//! kernel's BTF (see `KernelOffsets`), and the dentry walk that turns a
//! `struct path` into a file name without `bpf_d_path` (tracepoint programs
//! may not call it).

use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_probe_read_kernel,
    generated::{bpf_loop, bpf_probe_read_kernel_str},
};
use core::ffi::c_void;
use tracer_common::{KernelOffsets, WALK_DEPTH_MAX, WALK_PATH_MAX, WALK_TRUNCATED};

use crate::{
    emit::{bounded, scratch},
    maps::config,
    syscall::AT_FDCWD,
};

/// Longest single component copied by the walk (NAME_MAX + NUL).
const COMPONENT_MAX: usize = 256;

#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel tolerates bad addresses (it returns an error).
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.ok()
}

#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_task() }
}

/// The `struct file *` behind `fd` in the current task's table.
#[inline(always)]
pub fn file_of_fd(k: &KernelOffsets, fd: i32) -> Option<u64> {
    if fd < 0 {
        return None;
    }
    let files: u64 = read(current_task(), k.task_files)?;
    let fdt: u64 = read(files, k.files_fdt)?;
    let max_fds: u32 = read(fdt, k.fdt_max_fds)?;
    if fd as u32 >= max_fds {
        return None;
    }
    let array: u64 = read(fdt, k.fdt_fd)?;
    let file: u64 = read(array, fd as u32 * 8)?;
    if file == 0 { None } else { Some(file) }
}

/// (inode number, device) of the file behind `fd`; zeros when there is none.
#[inline(always)]
pub fn file_id(k: &KernelOffsets, fd: i64) -> (u64, u32) {
    let file = (fd >= 0 && fd <= i32::MAX as i64).then(|| file_of_fd(k, fd as i32)).flatten();
    file_id_of(k, file.unwrap_or(0))
}

/// (inode number, device) of a `struct file *`; zeros for null.
#[inline(always)]
pub fn file_id_of(k: &KernelOffsets, file: u64) -> (u64, u32) {
    let Some(inode) = (file != 0).then(|| read::<u64>(file, k.file_inode)).flatten() else {
        return (0, 0);
    };
    let ino = read(inode, k.inode_ino).unwrap_or(0);
    let dev = read::<u64>(inode, k.inode_sb).and_then(|sb| read(sb, k.sb_dev)).unwrap_or(0);
    (ino, dev)
}

/// (mnt, dentry) of the `struct path` at `path`.
#[inline(always)]
pub fn path_parts(k: &KernelOffsets, path: u64) -> Option<(u64, u64)> {
    Some((read(path, k.path_mnt)?, read(path, k.path_dentry)?))
}

/// State of one dentry walk, shared with the `bpf_loop` callback. Scalars
/// only: the callback looks the scratch buffer up itself.
#[repr(C)]
struct Walk {
    dentry: u64,
    vfsmount: u64,
    /// Where the path starts in the scratch buffer.
    offset: u64,
    written: u64,
    flags: u16,
}

/// One step of the walk: one component written, or one mount crossed.
/// Returns 1 to stop. As a `bpf_loop` callback it is verified once, not
/// once per step, which keeps the verifier's work linear in the depth.
extern "C" fn walk_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer given in `walk_path`.
    let walk = unsafe { &mut *ctx.cast::<Walk>() };
    let k = config().kernel;
    let (Some(mnt_root), Some(parent)) =
        (read::<u64>(walk.vfsmount, k.vfsmount_root), read::<u64>(walk.dentry, k.dentry_parent))
    else {
        walk.flags = WALK_TRUNCATED;
        return 1;
    };
    if walk.dentry == mnt_root || walk.dentry == parent {
        // Top of this mount: continue from where it is mounted.
        let mount = walk.vfsmount - k.mount_mnt as u64;
        let Some(mount_parent) = read::<u64>(mount, k.mount_parent) else {
            walk.flags = WALK_TRUNCATED;
            return 1;
        };
        if mount_parent == mount || mount_parent == 0 {
            walk.flags = 0;
            return 1;
        }
        let Some(mountpoint) = read::<u64>(mount, k.mount_mountpoint) else {
            walk.flags = WALK_TRUNCATED;
            return 1;
        };
        walk.dentry = mountpoint;
        walk.vfsmount = mount_parent + k.mount_mnt as u64;
        return 0;
    }
    let written = walk.written as usize;
    let (Some(name), Some(buf)) = (read::<u64>(walk.dentry, k.dentry_name_ptr), scratch()) else {
        walk.flags = WALK_TRUNCATED;
        return 1;
    };
    if written > WALK_PATH_MAX - COMPONENT_MAX {
        walk.flags = WALK_TRUNCATED;
        return 1;
    }
    let at = bounded(walk.offset as usize) + (written & (WALK_PATH_MAX - 1));
    // SAFETY: offset and written are masked, and offset + WALK_PATH_MAX
    // + COMPONENT_MAX stays inside the scratch buffer.
    let n = unsafe {
        bpf_probe_read_kernel_str(buf.add(at).cast::<c_void>(), COMPONENT_MAX as u32, name as *const c_void)
    };
    if n <= 0 {
        walk.flags = WALK_TRUNCATED;
        return 1;
    }
    // n counts the NUL, which is the component separator.
    walk.written += n as u64;
    walk.dentry = parent;
    0
}

/// For a relative path just written at `buf + at` (`path_len` bytes): the
/// directory it is relative to (the cwd, or `dfd`'s file), walked into the
/// buffer after it. Returns (bytes, flags) as [`walk_path`]; (0, 0) for an
/// absolute path.
#[inline(always)]
pub fn relative_dir(k: &KernelOffsets, buf: *mut u8, at: usize, path_len: usize, dfd: i32) -> (usize, u16) {
    // SAFETY: the first path byte was just written (or the buffer is stale,
    // in which case path_len is 0 and the byte is not looked at).
    if path_len == 0 || unsafe { *buf.add(bounded(at)) } == b'/' {
        return (0, 0);
    }
    let dir = if dfd == AT_FDCWD {
        read::<u64>(current_task(), k.task_fs).map(|fs| fs + k.fs_pwd as u64)
    } else {
        file_of_fd(k, dfd).map(|file| file + k.file_path as u64)
    };
    match dir.and_then(|path| path_parts(k, path)) {
        Some((mnt, dentry)) => walk_path(at + path_len, mnt, dentry),
        None => (0, 0),
    }
}

/// Writes the path of (mnt, dentry) to the scratch buffer at `offset` as
/// reversed components (leaf first, NUL after each). Returns (bytes, flags).
#[inline(always)]
pub fn walk_path(offset: usize, mnt: u64, dentry: u64) -> (usize, u16) {
    // Stays WALK_TRUNCATED unless the walk reaches the root.
    let mut walk = Walk { dentry, vfsmount: mnt, offset: offset as u64, written: 0, flags: WALK_TRUNCATED };
    // SAFETY: the callback and its context follow bpf_loop's contract.
    unsafe {
        bpf_loop(WALK_DEPTH_MAX, walk_step as *mut c_void, (&mut walk as *mut Walk).cast::<c_void>(), 0)
    };
    ((walk.written as usize) & (WALK_PATH_MAX - 1), walk.flags)
}
