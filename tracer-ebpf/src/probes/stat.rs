//! The stat family: stat, lstat, newfstatat, statx, access, faccessat,
//! faccessat2, readlink and readlinkat, every call on a path including
//! failures. These are how interpreters and shells search their module and
//! command paths (they look a name up before they open it). Reported like
//! opens: the path as requested, the directory a relative one is relative
//! to, flags, the result and the time the call took. A call on an empty
//! path (`fstat` through `AT_EMPTY_PATH`) looks nothing up and is skipped
//! at entry, before it costs a map insert.
//!
//! Off unless `record --probe stat` asks for it: these calls are far more
//! frequent than opens.

use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{EventKind, StatEvent, StatSyscall};

use crate::{
    emit::{header_at, put_fixed, send},
    filter::{current_ids, is_traced},
    maps::{PENDING_STAT, PendingPathCall},
    path_call, pending,
    syscall::{AT_FDCWD, arg, field},
};

/// Where a syscall's arguments are: its dirfd (None: `AT_FDCWD`), path,
/// access mode and `AT_*` flags (None: it has none).
struct Args {
    dfd: Option<usize>,
    path: usize,
    mode: Option<usize>,
    flags: Option<usize>,
}

#[inline(always)]
fn remember(ctx: &TracePointContext, syscall: StatSyscall, args: Args) -> u32 {
    let (pid, tid) = current_ids();
    if !is_traced(pid) {
        return 0;
    }
    let read_arg = |at: Option<usize>| at.map_or(0, |at| field(ctx, at));
    let filename = read_arg(Some(args.path));
    // SAFETY: a bad user pointer is an error, not a fault; the call then
    // fails with EFAULT and is reported with an empty path.
    if unsafe { bpf_probe_read_user(filename as *const u8) } == Ok(0) {
        return 0;
    }
    let pending = PendingPathCall {
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_boot_ns() },
        filename,
        flags: read_arg(args.flags) & 0xffff_ffff,
        mode: read_arg(args.mode) as u32,
        dfd: args.dfd.map_or(AT_FDCWD, |_| read_arg(args.dfd) as i32),
        syscall: syscall as u16,
        _pad: [0; 3],
    };
    pending::save(&PENDING_STAT, tid, pending);
    0
}

fn report(ctx: &TracePointContext) -> u32 {
    let (pid, tid) = current_ids();
    let fixed = core::mem::size_of::<StatEvent>();
    let Some(exit) = path_call::exit(ctx, &PENDING_STAT, tid, fixed) else { return 0 };
    let call = exit.call;
    put_fixed(
        exit.buf,
        StatEvent {
            header: header_at(EventKind::Stat, pid, tid, exit.ts_ns),
            ret: exit.ret,
            duration_ns: exit.duration_ns,
            flags: call.flags as u32,
            mode: call.mode,
            dfd: call.dfd,
            syscall: call.syscall,
            path_len: exit.path_len as u16,
            dir_len: exit.dir_len as u16,
            dir_flags: exit.dir_flags,
            _pad: 0,
        },
    );
    send(exit.buf, fixed + exit.path_len + exit.dir_len, EventKind::Stat);
    0
}

/// One syscall's entry and exit programs, named after their tracepoints.
/// (The attribute takes only literals, so these sections say just
/// `tracepoint`; the recorder attaches every program by the tracepoint its
/// table names, as for the others.)
macro_rules! stat_syscall {
    ($enter:ident, $exit:ident, $syscall:ident, $args:expr) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            remember(&ctx, StatSyscall::$syscall, $args)
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            report(&ctx)
        }
    };
}

const PATH_ONLY: Args = Args { dfd: None, path: arg(0), mode: None, flags: None };
const AT_PATH: Args = Args { dfd: Some(arg(0)), path: arg(1), mode: None, flags: None };

stat_syscall!(sys_enter_newstat, sys_exit_newstat, Newstat, PATH_ONLY);
stat_syscall!(sys_enter_newlstat, sys_exit_newlstat, Newlstat, PATH_ONLY);
stat_syscall!(sys_enter_newfstatat, sys_exit_newfstatat, Newfstatat, Args { flags: Some(arg(3)), ..AT_PATH });
stat_syscall!(sys_enter_statx, sys_exit_statx, Statx, Args { flags: Some(arg(2)), ..AT_PATH });
stat_syscall!(sys_enter_access, sys_exit_access, Access, Args { mode: Some(arg(1)), ..PATH_ONLY });
stat_syscall!(sys_enter_faccessat, sys_exit_faccessat, Faccessat, Args { mode: Some(arg(2)), ..AT_PATH });
stat_syscall!(
    sys_enter_faccessat2,
    sys_exit_faccessat2,
    Faccessat2,
    Args { mode: Some(arg(2)), flags: Some(arg(3)), ..AT_PATH }
);
stat_syscall!(sys_enter_readlink, sys_exit_readlink, Readlink, PATH_ONLY);
stat_syscall!(sys_enter_readlinkat, sys_exit_readlinkat, Readlinkat, AT_PATH);
