//! The fixed layout of `syscalls:sys_enter_*` and `sys_exit_*` tracepoint
//! records, which every kernel shares: the common fields and the syscall
//! number, then the arguments (entry) or the return value (exit).

/// Offset of `args[i]` in a `sys_enter_*` record.
pub const fn arg(i: usize) -> usize {
    16 + 8 * i
}

/// Offset of `ret` in a `sys_exit_*` record.
pub const RET: usize = 16;

/// The dirfd meaning "relative to the current directory".
pub const AT_FDCWD: i32 = -100;
