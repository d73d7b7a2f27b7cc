//! One probe per file; each file's docs name the tracepoints it uses.
mod cgroup;
mod exec;
mod exit;
mod fork;
mod mmap;
mod open;
