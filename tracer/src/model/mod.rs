//! The model layer: what the trace is about — processes, binaries, packages, units.
//!
//! The recorder captures raw events (paths, pids, timestamps); this layer gives
//! them meaning: which process ran what, which package a file belongs to and
//! what that package refers to in the store, what the recorder found in each
//! binary, and which systemd unit did it.

pub mod binary;
pub mod cache;
pub mod closure;
pub mod io;
pub mod nix;
pub mod path;
pub mod process;
pub mod unit;
