//! The fixed layout of `syscalls:sys_enter_*` and `sys_exit_*` tracepoint
//! records, which every kernel shares: the common fields and the syscall
//! number, then the arguments (entry) or the return value (exit).

use aya_ebpf::{EbpfContext as _, programs::TracePointContext};

/// Offset of `args[i]` in a `sys_enter_*` record.
pub const fn arg(i: usize) -> usize {
    16 + 8 * i
}

/// Offset of `ret` in a `sys_exit_*` record.
pub const RET: usize = 16;

/// The 8-byte field at `offset` (`arg(i)` or `RET`) of the record. A
/// plain load: the verifier lets a tracepoint program read its record
/// directly at a constant offset, where `read_at` is a helper call.
#[inline(always)]
pub fn field(ctx: &TracePointContext, offset: usize) -> u64 {
    // SAFETY: `arg(i)` and `RET` are 8-aligned, past the common fields and
    // inside every syscall record.
    unsafe { ctx.as_ptr().cast::<u8>().add(offset).cast::<u64>().read() }
}

/// The dirfd meaning "relative to the current directory".
pub const AT_FDCWD: i32 = -100;
