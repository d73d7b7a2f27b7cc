//! Task exit: `sched:sched_process_exit`, with the wait status read from
//! `task->exit_code` (the tracepoint itself does not carry it).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{EXIT_GROUP_DEAD, EventKind, ExitEvent, FIELD_ABSENT};

use crate::{
    emit::{header, put_fixed, scratch, send},
    filter::{current_ids, is_traced},
    kernel::{current_task, read},
    maps::{
        FOLLOWED, PENDING_EXEC, PENDING_MMAP, PENDING_OPEN, PENDING_READ, PENDING_STAT, TASK_TIMES, config,
    },
};

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let config = config();
    let (pid, tid) = current_ids();
    // A thread killed inside a syscall never reaches its exit tracepoint.
    let _ = PENDING_OPEN.remove(&tid);
    let _ = PENDING_STAT.remove(&tid);
    let _ = PENDING_MMAP.remove(&tid);
    let _ = PENDING_EXEC.remove(&tid);
    let _ = PENDING_READ.remove(&tid);
    if !is_traced(pid) {
        let _ = TASK_TIMES.remove(&tid);
        return 0;
    }
    super::sched::report_exit(tid);
    let group_dead = if config.tracepoints.exit_group_dead == FIELD_ABSENT {
        // Older kernels (6.1 among them) lack the field: the leader's exit stands in.
        pid == tid
    } else {
        // SAFETY: offset from this kernel's tracefs format file.
        unsafe { ctx.read_at::<u8>(config.tracepoints.exit_group_dead as usize) }.unwrap_or(0) != 0
    };
    let exit_status: i32 = read(current_task(), config.kernel.task_exit_code).unwrap_or(0);
    if group_dead && config.follow_only != 0 {
        let _ = FOLLOWED.remove(&pid);
    }

    let Some(buf) = scratch() else { return 0 };
    put_fixed(
        buf,
        ExitEvent {
            header: header(EventKind::Exit, pid, tid),
            exit_status,
            flags: if group_dead { EXIT_GROUP_DEAD } else { 0 },
        },
    );
    send(buf, core::mem::size_of::<ExitEvent>(), EventKind::Exit);
    0
}
