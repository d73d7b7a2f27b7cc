//! exec: `sched:sched_process_exec` for every successful exec (the resolved
//! filename, argv read from the new image's `mm->arg_start`, and its
//! environment from `mm->env_start`, which the recorder filters down to the
//! dynamic loader's variables), and the execve/execveat syscall
//! tracepoints for the ones that fail.

use aya_ebpf::{EbpfContext, macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    ARGV_MAX, ENV_MAX, EXEC_ARGV_TRUNCATED, EXEC_ENV_TRUNCATED, EventKind, ExecEvent, ExecFailedEvent,
};

use crate::{
    emit::{header, kernel_str, put_fixed, scratch, send, user_bytes, user_str},
    filter::{current_ids, is_traced},
    kernel::{current_task, file_id_of, read},
    maps::{PENDING_EXEC, config},
    pending,
    syscall::{RET, arg, field},
};

/// Syscall tracepoint records: `args[i]` at `16 + 8 * i`.

#[inline(always)]
fn remember_filename(ctx: &TracePointContext, arg: usize) -> u32 {
    let (pid, tid) = current_ids();
    if !is_traced(pid) {
        return 0;
    }
    pending::save(&PENDING_EXEC, tid, field(ctx, arg));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_execve")]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    remember_filename(&ctx, arg(0))
}

#[tracepoint(category = "syscalls", name = "sys_enter_execveat")]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    remember_filename(&ctx, arg(1))
}

fn report_failure(ctx: &TracePointContext) -> u32 {
    let (pid, tid) = current_ids();
    let Some(filename) = pending::take(&PENDING_EXEC, tid) else { return 0 };
    let ret = field(ctx, RET) as i64;
    if ret == 0 {
        return 0; // success is reported by sched_process_exec
    }
    let Some(buf) = scratch() else { return 0 };
    let fixed = core::mem::size_of::<ExecFailedEvent>();
    let filename_len = user_str(buf, fixed, filename);
    put_fixed(
        buf,
        ExecFailedEvent {
            header: header(EventKind::ExecFailed, pid, tid),
            ret: ret as i32,
            filename_len: filename_len as u16,
            _pad: 0,
        },
    );
    send(buf, fixed + filename_len, EventKind::ExecFailed);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_execve")]
pub fn sys_exit_execve(ctx: TracePointContext) -> u32 {
    report_failure(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_execveat")]
pub fn sys_exit_execveat(ctx: TracePointContext) -> u32 {
    report_failure(&ctx)
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let config = config();
    let fields = config.tracepoints;
    let (pid, tid) = current_ids();
    // SAFETY (ctx reads): offsets from this kernel's tracefs format file.
    let old_tid = unsafe { ctx.read_at::<u32>(fields.exec_old_pid as usize) }.unwrap_or(tid);
    let _ = PENDING_EXEC.remove(&old_tid);
    if !is_traced(pid) {
        return 0;
    }
    let Ok(filename_loc) = (unsafe { ctx.read_at::<u32>(fields.exec_filename as usize) }) else {
        return 0;
    };
    let Some(buf) = scratch() else { return 0 };
    let fixed = core::mem::size_of::<ExecEvent>();
    // A __data_loc field: low 16 bits offset into the record, high 16 length.
    let filename = unsafe { (ctx.as_ptr() as *const u8).add((filename_loc & 0xffff) as usize) };
    let filename_len = kernel_str(buf, fixed, filename);

    let k = config.kernel;
    let (mut argv_len, mut env_len, mut flags, mut exe) = (0, 0, 0, (0, 0));
    if let Some(mm) = read::<u64>(current_task(), k.task_mm) {
        exe = file_id_of(&k, read(mm, k.mm_exe_file).unwrap_or(0));
        let start: u64 = read(mm, k.mm_arg_start).unwrap_or(0);
        let end: u64 = read(mm, k.mm_arg_end).unwrap_or(0);
        if end > start {
            let want = (end - start) as usize;
            if want > ARGV_MAX {
                flags |= EXEC_ARGV_TRUNCATED;
            }
            argv_len = user_bytes(buf, fixed + filename_len, start, want, ARGV_MAX);
        }
        let start: u64 = read(mm, k.mm_env_start).unwrap_or(0);
        let end: u64 = read(mm, k.mm_env_end).unwrap_or(0);
        if end > start {
            let want = (end - start) as usize;
            if want > ENV_MAX {
                flags |= EXEC_ENV_TRUNCATED;
            }
            env_len = user_bytes(buf, fixed + filename_len + argv_len, start, want, ENV_MAX);
        }
    }
    put_fixed(
        buf,
        ExecEvent {
            header: header(EventKind::Exec, pid, tid),
            old_tid,
            filename_len: filename_len as u16,
            argv_len: argv_len as u16,
            flags,
            dev: exe.1,
            ino: exe.0,
            env_len: env_len as u16,
            _pad: [0; 3],
        },
    );
    send(buf, fixed + filename_len + argv_len + env_len, EventKind::Exec);
    0
}
