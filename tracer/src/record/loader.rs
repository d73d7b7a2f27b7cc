//! Where the glibc dynamic loaders of this system are, and where in each to
//! put the `loader_start`, `loader_done` and `loader_entry` uprobes (as
//! `loader_probes` finds it).

use std::{
    collections::HashSet,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use super::elf::read_elf_facts;
use super::loader_probes::{LoaderProbes, loader_probe_offsets};
use crate::trace::event::kernel_dev;

/// Loader paths that exist on common systems, checked first.
const WELL_KNOWN: &[&str] = &["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-x86-64.so.2"];
/// Programs whose interpreter is the system's loader, wherever it lives.
const PROGRAMS: &[&str] = &["/bin/sh", "/usr/bin/env", "/run/current-system/sw/bin/sh"];

/// A loader binary and the file offsets of its probe points.
#[derive(Debug)]
pub struct Loader {
    pub path: PathBuf,
    pub probes: LoaderProbes,
    /// Its device (as the kernel numbers it) and inode.
    pub dev: u32,
    pub ino: u64,
}

/// Every distinct loader found: the well-known paths, the interpreters of
/// a few system programs, and each glibc in the Nix store (a NixOS system
/// has one per glibc version in use). Loaders whose code does not look like
/// glibc's x86-64 `_start` are returned as errors, not probed blindly.
pub fn find() -> (Vec<Loader>, Vec<anyhow::Error>) {
    let mut candidates: Vec<PathBuf> = WELL_KNOWN.iter().map(PathBuf::from).collect();
    for program in PROGRAMS {
        if let Ok(facts) = read_elf_facts(Path::new(program))
            && let Some(interpreter) = facts.interpreter
        {
            candidates.push(interpreter.into());
        }
    }
    candidates.extend(nix_store_loaders());

    let mut seen = HashSet::new();
    let (mut loaders, mut errors) = (Vec::new(), Vec::new());
    for path in candidates {
        let Ok(meta) = fs::metadata(&path) else { continue };
        // Uprobes attach to the inode: one per file, whatever its names.
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        match probe_points(&path) {
            Ok(probes) => loaders.push(Loader { path, probes, dev: kernel_dev(meta.dev()), ino: meta.ino() }),
            Err(e) => errors.push(e),
        }
    }
    (loaders, errors)
}

fn probe_points(path: &Path) -> Result<LoaderProbes> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    loader_probe_offsets(&data)
        .with_context(|| format!("{} is not a loader nixtrace can probe", path.display()))
}

/// `/nix/store/*-glibc-*/lib/ld-linux-x86-64.so.2`.
fn nix_store_loaders() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/nix/store") else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.contains("-glibc-") && !n.ends_with(".drv")))
        .map(|e| e.path().join("lib/ld-linux-x86-64.so.2"))
        .filter(|p| p.is_file())
        .collect()
}
