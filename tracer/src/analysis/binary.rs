//! The executables and libraries the processes ran, with the static ELF
//! facts the recorder read from each while it ran: how much work each asks
//! of the dynamic loader. Nothing here reads the filesystem, so a trace
//! analysed on another machine, or after a rebuild, gives the same facts.

use std::collections::BTreeMap;

use serde::Serialize;

use super::package::Package;
use crate::{
    model::{binary::BinaryTable, process::Process},
    trace::event::text,
};

/// Static facts about an executable or library the processes ran.
#[derive(Debug, Clone, Serialize)]
pub struct BinaryFigures {
    /// The path it ran from (an exec's file name, or the library the
    /// loader opened).
    pub path: String,
    /// Device (as the kernel numbers it) and inode: the file's identity.
    pub dev: u32,
    pub ino: u64,
    pub package: Option<Package>,
    /// File size in bytes (null when the recorder could not read it).
    pub size_bytes: Option<u64>,
    /// Null when the recorder could not read the file; `error` says why.
    pub build_id: Option<String>,
    pub interpreter: Option<String>,
    pub soname: Option<String>,
    pub needed: Vec<String>,
    pub runpath: Vec<String>,
    pub rpath: Vec<String>,
    pub bind_now: bool,
    pub relocations: u64,
    pub dynamic_symbols: u64,
    pub error: Option<String>,
}

/// Traces recorded before the recorder read ELF facts have none.
const NOT_RECORDED: &str = "the trace holds no ELF facts for this file";

/// Every file `processes` executed or loaded as a library, by path.
pub fn binaries<'a>(
    processes: impl Iterator<Item = &'a Process>,
    recorded: &BinaryTable,
) -> Vec<BinaryFigures> {
    let mut files: BTreeMap<String, (u32, u64)> = BTreeMap::new();
    for process in processes {
        for exec in &process.execs {
            files.entry(text(&exec.filename)).or_insert((exec.dev, exec.ino));
            for library in exec.loader.iter().flat_map(|run| &run.libraries) {
                files.entry(text(&library.path)).or_insert((library.dev, library.ino));
            }
        }
    }
    files.into_iter().map(|(path, (dev, ino))| figures(path, dev, ino, recorded)).collect()
}

fn figures(path: String, dev: u32, ino: u64, recorded: &BinaryTable) -> BinaryFigures {
    let found = recorded.get(dev, ino);
    let facts = found.filter(|b| b.error.is_none()).map(|b| b.facts.clone()).unwrap_or_default();
    let error = match found {
        Some(binary) => binary.error.as_deref().map(text),
        None => Some(NOT_RECORDED.to_string()),
    };
    BinaryFigures {
        package: Package::of(&path),
        size_bytes: found.filter(|b| b.error.is_none()).map(|b| b.size_bytes),
        path,
        dev,
        ino,
        build_id: facts.build_id,
        interpreter: facts.interpreter,
        soname: facts.soname,
        needed: facts.needed,
        runpath: facts.runpath,
        rpath: facts.rpath,
        bind_now: facts.bind_now,
        relocations: facts.relocations,
        dynamic_symbols: facts.dynamic_symbols,
        error,
    }
}
