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

/// A map for the keys looked up at every event (pids, fds, inodes, paths):
/// foldhash, seeded per process, where std's SipHash is made to withstand
/// adversaries at several times the cost.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
