//! Any bytes through everything that reads a trace: the report in every
//! format, every flamegraph, the diff and the timeline export.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nixtrace::fuzzing::report_pipeline(data));
