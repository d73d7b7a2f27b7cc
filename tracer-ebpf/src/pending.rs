//! A syscall's state from its entry to its exit, keyed by thread id.
//!
//! Each thread keeps its slot from one call to the next, marked live while
//! a call is in progress: entry and exit each cost one lookup, where an
//! insert at entry and a delete at exit (a bucket lock, an allocation and a
//! free, about a tenth of what tracing an open storm cost) did before. The
//! slots go when their threads exit (`exit.rs`).

use aya_ebpf::maps::HashMap;
use tracer_common::lost;

use crate::maps::count_lost;

/// A thread's slot: its call, while `live`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Slot<T> {
    pub live: u64,
    pub call: T,
}

/// Saves `call` as `tid`'s call in progress; counts the loss when the map
/// is full.
#[inline(always)]
pub fn save<T: Copy>(map: &HashMap<u32, Slot<T>>, tid: u32, call: T) {
    match map.get_ptr_mut(&tid) {
        // SAFETY: a map value; only this thread touches its own slot.
        Some(slot) => unsafe { slot.write(Slot { live: 1, call }) },
        None => {
            if map.insert(&tid, &Slot { live: 1, call }, 0).is_err() {
                count_lost(lost::PENDING_FULL);
            }
        }
    }
}

/// `tid`'s call in progress, which ends here; None when none was saved
/// (its entry was not traced, or came before the probes).
#[inline(always)]
pub fn take<T: Copy>(map: &HashMap<u32, Slot<T>>, tid: u32) -> Option<T> {
    let slot = map.get_ptr_mut(&tid)?;
    // SAFETY: as in `save`.
    unsafe {
        if (*slot).live == 0 {
            return None;
        }
        (*slot).live = 0;
        Some((*slot).call)
    }
}
