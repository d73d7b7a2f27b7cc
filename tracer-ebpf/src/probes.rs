//! One probe per file; each file's docs name the tracepoints it uses.
mod cgroup;
mod exec;
mod exit;
mod fork;
mod loader;
mod mmap;
mod open;
