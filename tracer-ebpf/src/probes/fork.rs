//! fork/clone: `task:task_newtask` fires in the parent with the child's tid
//! and the clone flags, which say whether the child is a thread (no
//! `task_struct` layout needed). Also where followed process trees grow.

use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, macros::tracepoint, programs::TracePointContext};
use tracer_common::{EventKind, ForkEvent, TASK_RUNNABLE, TaskTimes, lost};

use crate::{
    emit::{header, put_fixed, scratch, send},
    filter::{current_ids, is_traced},
    maps::{FOLLOWED, TASK_TIMES, config, count_lost},
};

const CLONE_THREAD: u64 = 0x10000;

#[tracepoint(category = "task", name = "task_newtask")]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let config = config();
    let fields = config.tracepoints;
    let (pid, tid) = current_ids();
    // SAFETY: offsets come from this kernel's tracefs format file.
    let Ok(child_tid) = (unsafe { ctx.read_at::<u32>(fields.newtask_pid as usize) }) else {
        return 0;
    };
    let clone_flags = if fields.newtask_clone_flags_size == 8 {
        unsafe { ctx.read_at::<u64>(fields.newtask_clone_flags as usize) }.unwrap_or(0)
    } else {
        unsafe { ctx.read_at::<u32>(fields.newtask_clone_flags as usize) }.map_or(0, u64::from)
    };
    let is_thread = clone_flags & CLONE_THREAD != 0;
    let child_pid = if is_thread { pid } else { child_tid };

    let own_child = pid == config.self_pid && config.follow_own_children != 0 && !is_thread;
    if !own_child && !is_traced(pid) {
        return 0;
    }
    if config.follow_only != 0 && !is_thread && FOLLOWED.insert(&child_pid, &1, 0).is_err() {
        count_lost(lost::FOLLOW_FULL);
    }

    // The child's time is accounted from its birth: runnable until it runs.
    if config.sched_times != 0 {
        let times = TaskTimes {
            // SAFETY: helper without arguments.
            since_ns: unsafe { bpf_ktime_get_boot_ns() },
            pid: child_pid,
            state: TASK_RUNNABLE,
            ..TaskTimes::default()
        };
        if TASK_TIMES.insert(&child_tid, &times, 0).is_err() {
            count_lost(EventKind::Sched as u32);
        }
    }

    let Some(buf) = scratch() else { return 0 };
    put_fixed(
        buf,
        ForkEvent { header: header(EventKind::Fork, pid, tid), child_pid, child_tid, clone_flags },
    );
    send(buf, core::mem::size_of::<ForkEvent>(), EventKind::Fork);
    0
}
