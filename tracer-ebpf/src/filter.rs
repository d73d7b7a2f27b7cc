//! Which tasks are traced: everything but the recorder itself, narrowed to
//! the followed process tree and/or a cgroup subtree when asked.

use aya_ebpf::helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_pid_tgid};

use crate::maps::{FOLLOWED, config};

/// The current task's (pid, tid).
#[inline(always)]
pub fn current_ids() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

#[inline(always)]
pub fn is_traced(pid: u32) -> bool {
    let config = config();
    if pid == config.self_pid {
        return false;
    }
    // SAFETY: the value is only tested for presence.
    if config.follow_only != 0 && unsafe { FOLLOWED.get(&pid) }.is_none() {
        return false;
    }
    if config.cgroup_filter_id != 0 {
        // SAFETY: helper call with a plain integer argument.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(config.cgroup_filter_level as i32) };
        if ancestor != config.cgroup_filter_id {
            return false;
        }
    }
    true
}
