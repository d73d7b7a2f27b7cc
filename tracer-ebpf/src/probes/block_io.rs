//! Block I/O: `block:block_rq_issue` remembers who issued a request,
//! `block:block_rq_complete` reports it with its latency. Requests issued
//! on a traced task's behalf by kernel workers are not attributed to it.

use aya_ebpf::{helpers::bpf_ktime_get_boot_ns, macros::tracepoint, programs::TracePointContext};
use tracer_common::{BLOCK_WRITE, BlockIoEvent, EventHeader, EventKind, lost};

use crate::{
    emit::{header, put_fixed, scratch, send},
    filter::{current_ids, is_traced},
    maps::{BlockKey, PENDING_BLOCK, PendingBlock, config, count_lost},
};

#[tracepoint(category = "block", name = "block_rq_issue")]
pub fn block_rq_issue(ctx: TracePointContext) -> u32 {
    let (pid, tid) = current_ids();
    if !is_traced(pid) {
        return 0;
    }
    let fields = config().tracepoints;
    // SAFETY (ctx reads): offsets from this kernel's tracefs format file.
    let dev = unsafe { ctx.read_at::<u32>(fields.block_issue_dev as usize) }.unwrap_or(0);
    let sector = unsafe { ctx.read_at::<u64>(fields.block_issue_sector as usize) }.unwrap_or(0);
    let bytes = unsafe { ctx.read_at::<u32>(fields.block_issue_bytes as usize) }.unwrap_or(0);
    // rwbs is a short string such as "R", "WS", "RA", "FWS".
    let rwbs = unsafe { ctx.read_at::<[u8; 4]>(fields.block_issue_rwbs as usize) }.unwrap_or([0; 4]);
    let flags = if rwbs.contains(&b'W') { BLOCK_WRITE } else { 0 };
    let EventHeader { ts_ns, cgroup_id, .. } = header(EventKind::BlockIo, pid, tid);
    let pending = PendingBlock { ts_ns, cgroup_id, pid, tid, bytes, flags };
    if PENDING_BLOCK.insert(&BlockKey { sector, dev, _pad: 0 }, &pending, 0).is_err() {
        count_lost(lost::PENDING_FULL);
    }
    0
}

#[tracepoint(category = "block", name = "block_rq_complete")]
pub fn block_rq_complete(ctx: TracePointContext) -> u32 {
    let fields = config().tracepoints;
    // SAFETY (ctx reads): offsets from this kernel's tracefs format file.
    let dev = unsafe { ctx.read_at::<u32>(fields.block_complete_dev as usize) }.unwrap_or(0);
    let sector = unsafe { ctx.read_at::<u64>(fields.block_complete_sector as usize) }.unwrap_or(0);
    let key = BlockKey { sector, dev, _pad: 0 };
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_BLOCK.get(&key) }).copied() else { return 0 };
    let _ = PENDING_BLOCK.remove(&key);
    let error = unsafe { ctx.read_at::<i32>(fields.block_complete_error as usize) }.unwrap_or(0);
    let Some(buf) = scratch() else { return 0 };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    put_fixed(
        buf,
        BlockIoEvent {
            header: EventHeader {
                ts_ns: now,
                cgroup_id: pending.cgroup_id,
                pid: pending.pid,
                tid: pending.tid,
                kind: EventKind::BlockIo as u32,
                _pad: 0,
            },
            latency_ns: now - pending.ts_ns,
            sector,
            bytes: pending.bytes,
            dev,
            flags: pending.flags,
            error,
        },
    );
    send(buf, core::mem::size_of::<BlockIoEvent>(), EventKind::BlockIo);
    0
}
