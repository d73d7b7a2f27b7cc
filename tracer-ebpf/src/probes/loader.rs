//! The glibc dynamic loader's own timeline: uprobes on `ld.so`'s entry
//! point (the loader starts), on `_dl_start_user` (every library is mapped
//! and relocated) and on its jump to the program (initialisers done).
//! Userspace finds the addresses in each loader binary and attaches these
//! programs there; the first interval is what glibc's `LD_DEBUG=statistics`
//! reports as "total startup time in dynamic loader".

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use tracer_common::{EventKind, LOADER_DONE, LOADER_ENTRY, LOADER_START, LoaderEvent};

use crate::{
    emit::{header, put_fixed, scratch, send},
    filter::{current_ids, is_traced},
};

fn report(phase: u32) -> u32 {
    let (pid, tid) = current_ids();
    if !is_traced(pid) {
        return 0;
    }
    let Some(buf) = scratch() else { return 0 };
    put_fixed(buf, LoaderEvent { header: header(EventKind::Loader, pid, tid), phase, _pad: 0 });
    send(buf, core::mem::size_of::<LoaderEvent>(), EventKind::Loader);
    0
}

#[uprobe]
pub fn loader_start(_ctx: ProbeContext) -> u32 {
    report(LOADER_START)
}

#[uprobe]
pub fn loader_done(_ctx: ProbeContext) -> u32 {
    report(LOADER_DONE)
}

#[uprobe]
pub fn loader_entry(_ctx: ProbeContext) -> u32 {
    report(LOADER_ENTRY)
}
