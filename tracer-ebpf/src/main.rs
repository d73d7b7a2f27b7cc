//! nixtrace's kernel programs.
//!
//! One probe per file under `probes/`. Every program follows the same path:
//! decide whether the current task is traced (`filter`), assemble one record
//! in the per-CPU scratch buffer (`emit`), and send it through the `EVENTS`
//! ring buffer; anything that cannot be sent is counted in `LOST`.
//!
//! Only classic tracepoints are used: they work on every kernel nixtrace
//! targets (kprobes and fentry are unavailable on some of them). Tracepoint
//! field offsets and kernel struct offsets come from userspace at load time
//! (`CONFIG`), so one object runs on different kernel builds.
#![no_std]
#![no_main]

mod emit;
mod filter;
mod kernel;
mod maps;
mod path_call;
mod pending;
mod probes;
mod syscall;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects programs that can reach this; it is never linked in.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
