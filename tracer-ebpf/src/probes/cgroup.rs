//! cgroup creation: `cgroup:cgroup_mkdir` (id -> path), so units that lived
//! only briefly still resolve later. Sent whatever the filters say.

use aya_ebpf::{EbpfContext, macros::tracepoint, programs::TracePointContext};
use tracer_common::{CgroupEvent, EventKind};

use crate::{
    emit::{header, kernel_str, put_fixed, scratch, send},
    filter::current_ids,
    maps::config,
};

#[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    let fields = config().tracepoints;
    // SAFETY (all reads): offsets from this kernel's tracefs format file.
    // Only the unified (v2) hierarchy, whose root id is 0, has the ids that
    // bpf_get_current_cgroup_id returns.
    if unsafe { ctx.read_at::<i32>(fields.cgroup_root as usize) }.unwrap_or(-1) != 0 {
        return 0;
    }
    let Ok(id) = (unsafe { ctx.read_at::<u64>(fields.cgroup_id as usize) }) else { return 0 };
    let level = unsafe { ctx.read_at::<u32>(fields.cgroup_level as usize) }.unwrap_or(0);
    let Ok(path_loc) = (unsafe { ctx.read_at::<u32>(fields.cgroup_path as usize) }) else {
        return 0;
    };
    let (pid, tid) = current_ids();
    let Some(buf) = scratch() else { return 0 };
    let fixed = core::mem::size_of::<CgroupEvent>();
    // A __data_loc field: low 16 bits offset into the record, high 16 length.
    let path = unsafe { (ctx.as_ptr() as *const u8).add((path_loc & 0xffff) as usize) };
    let path_len = kernel_str(buf, fixed, path);
    put_fixed(
        buf,
        CgroupEvent {
            header: header(EventKind::CgroupMkdir, pid, tid),
            id,
            level,
            path_len: path_len as u16,
            _pad: 0,
        },
    );
    send(buf, fixed + path_len, EventKind::CgroupMkdir);
    0
}
