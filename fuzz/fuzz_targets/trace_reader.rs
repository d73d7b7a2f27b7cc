//! Any bytes through the trace reader: errors are fine, panics, hangs and
//! unbounded allocations are not.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nixtrace::fuzzing::read_trace(data));
