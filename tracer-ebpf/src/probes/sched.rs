//! Where each traced thread's time goes: on a CPU, runnable but waiting for
//! one, blocked in uninterruptible sleep (mostly disk I/O), or sleeping.
//! `sched:sched_switch` and `sched:sched_wakeup` move a thread between
//! these states; the totals stay in `TASK_TIMES` (no event per switch) and
//! are sent once, when the thread exits (`exit.rs`).

use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    EventKind, SchedEvent, TASK_BLOCKED, TASK_ON_CPU, TASK_RUNNABLE, TASK_SLEEPING, TaskTimes,
};

use crate::{
    emit::{header, put_fixed, scratch, send},
    filter::{current_ids, is_traced},
    maps::{TASK_TIMES, config, count_lost},
};

/// `prev_state` bits as the tracepoint reports them.
const REPORT_INTERRUPTIBLE: u64 = 1;
const REPORT_UNINTERRUPTIBLE: u64 = 2;
/// Preempted while runnable (`TASK_REPORT_MAX`, 0x100 since Linux 4.14).
const REPORT_PREEMPTED: u64 = 0x100;

fn state_after_switch(prev_state: u64) -> u32 {
    if prev_state == 0 || prev_state & REPORT_PREEMPTED != 0 {
        TASK_RUNNABLE
    } else if prev_state & REPORT_UNINTERRUPTIBLE != 0 {
        TASK_BLOCKED
    } else if prev_state & REPORT_INTERRUPTIBLE != 0 {
        TASK_SLEEPING
    } else {
        // Stopped, traced, idle: not waiting for anything it asked for.
        TASK_SLEEPING
    }
}

#[tracepoint(category = "sched", name = "sched_switch")]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    let fields = config().tracepoints;
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // The tracepoint runs in the outgoing task: current is prev.
    let (pid, tid) = current_ids();
    if tid != 0 && is_traced(pid) {
        // SAFETY (ctx reads): offsets from this kernel's tracefs format file.
        let prev_state = unsafe { ctx.read_at::<u64>(fields.switch_prev_state as usize) }.unwrap_or(0);
        match TASK_TIMES.get_ptr_mut(&tid) {
            // SAFETY: a map value of this thread, only written on its CPU here.
            Some(times) => unsafe {
                (*times).close_interval(now);
                (*times).state = state_after_switch(prev_state);
            },
            None => {
                // First sight: its time on the CPU so far is unknown.
                let times = TaskTimes {
                    since_ns: now,
                    pid,
                    state: state_after_switch(prev_state),
                    ..TaskTimes::default()
                };
                if TASK_TIMES.insert(&tid, &times, 0).is_err() {
                    count_lost(EventKind::Sched as u32);
                }
            }
        }
    }
    let next = unsafe { ctx.read_at::<u32>(fields.switch_next_pid as usize) }.unwrap_or(0);
    if let Some(times) = TASK_TIMES.get_ptr_mut(&next) {
        // SAFETY: as above.
        unsafe {
            (*times).close_interval(now);
            (*times).state = TASK_ON_CPU;
        }
    }
    0
}

#[tracepoint(category = "sched", name = "sched_wakeup")]
pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
    let fields = config().tracepoints;
    // SAFETY: offset from this kernel's tracefs format file.
    let tid = unsafe { ctx.read_at::<u32>(fields.wakeup_pid as usize) }.unwrap_or(0);
    if let Some(times) = TASK_TIMES.get_ptr_mut(&tid) {
        // SAFETY: a map value of this thread.
        unsafe {
            if (*times).state == TASK_BLOCKED || (*times).state == TASK_SLEEPING {
                (*times).close_interval(bpf_ktime_get_boot_ns());
                (*times).state = TASK_RUNNABLE;
            }
        }
    }
    0
}

/// Sends the exiting thread's totals and forgets it (from `exit.rs`).
#[inline(always)]
pub fn report_exit(tid: u32) {
    let Some(times) = TASK_TIMES.get_ptr_mut(&tid) else { return };
    // SAFETY: a map value of this thread, copied before removal.
    let mut totals = unsafe { *times };
    let _ = TASK_TIMES.remove(&tid);
    // SAFETY: helper without arguments.
    totals.close_interval(unsafe { bpf_ktime_get_boot_ns() });
    let Some(buf) = scratch() else { return };
    let (pid, tid) = current_ids();
    put_fixed(buf, SchedEvent { header: header(EventKind::Sched, pid, tid), times: totals });
    send(buf, core::mem::size_of::<SchedEvent>(), EventKind::Sched);
}
