//! Pages added to the page cache (`filemap:mm_filemap_add_to_page_cache`):
//! what a task really read from disk (or read ahead), by inode.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{EventKind, FIELD_ABSENT, PageCacheEvent};

use crate::{
    emit::{header, put_fixed, scratch, send},
    filter::{current_ids, is_traced},
    maps::config,
};

#[tracepoint(category = "filemap", name = "mm_filemap_add_to_page_cache")]
pub fn mm_filemap_add_to_page_cache(ctx: TracePointContext) -> u32 {
    let (pid, tid) = current_ids();
    if !is_traced(pid) {
        return 0;
    }
    let fields = config().tracepoints;
    // SAFETY (ctx reads): offsets from this kernel's tracefs format file.
    let ino = unsafe { ctx.read_at::<u64>(fields.page_cache_ino as usize) }.unwrap_or(0);
    let index = unsafe { ctx.read_at::<u64>(fields.page_cache_index as usize) }.unwrap_or(0);
    let dev = unsafe { ctx.read_at::<u32>(fields.page_cache_dev as usize) }.unwrap_or(0);
    let order = if fields.page_cache_order == FIELD_ABSENT {
        0
    } else {
        unsafe { ctx.read_at::<u8>(fields.page_cache_order as usize) }.unwrap_or(0) & 31
    };
    let Some(buf) = scratch() else { return 0 };
    put_fixed(
        buf,
        PageCacheEvent { header: header(EventKind::PageCache, pid, tid), ino, index, dev, pages: 1 << order },
    );
    send(buf, core::mem::size_of::<PageCacheEvent>(), EventKind::PageCache);
    0
}
