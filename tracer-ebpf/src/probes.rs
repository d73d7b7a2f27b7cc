//! One probe per file; each file's docs name the tracepoints it uses.
mod block_io;
mod cgroup;
mod exec;
mod exit;
mod fork;
mod loader;
mod mmap;
mod open;
mod page_cache;
mod read;
mod sched;
mod stat;
