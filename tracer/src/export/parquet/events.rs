//! `--events`: the `opens` and `mmaps` tables, a row per event, read with
//! the trace reader in a second pass (too many to keep in an analysis).
//! Each row names the process of the analysis that was its pid at that
//! moment (the latest started by then), as the timeline export does.

use std::{fs::File, io::BufReader, path::Path};

use anyhow::{Context as _, Result};

use super::{BATCH_ROWS, Column, Get, TableSchema, Writer, col, schema};
use crate::{
    analysis::Analysis,
    model::FastMap,
    trace::{Event, TraceReader, event::Bytes},
};

const OPENS: &str = "opens";
const MMAPS: &str = "mmaps";
/// The tables this module writes.
pub const TABLES: &[&str] = &[OPENS, MMAPS];
/// Their columns whose values are close to the previous row's.
pub const DELTA_COLUMNS: &[&str] =
    &["ts_ns", "duration_ns", "addr", "pid", "tid", "process_start_ns", "ino", "dev"];
/// Their text columns no query would prune row groups on.
pub const UNSORTED_COLUMNS: &[&str] = &["path", "dir", "syscall"];

pub struct OpenRow<'a> {
    id: &'a str,
    pid: u32,
    tid: u32,
    process_start_ns: Option<u64>,
    ts_ns: u64,
    duration_ns: u64,
    syscall: &'static str,
    path: Bytes,
    dir: Option<Bytes>,
    flags: u64,
    mode: u32,
    ret: i64,
    dev: u32,
    ino: u64,
}

pub struct MmapRow<'a> {
    id: &'a str,
    pid: u32,
    tid: u32,
    process_start_ns: Option<u64>,
    ts_ns: u64,
    duration_ns: u64,
    path: Option<Bytes>,
    addr: u64,
    len: u64,
    offset: u64,
    prot: u32,
    flags: u32,
    fd: i32,
    dev: u32,
    ino: u64,
}

fn int32(value: u32) -> i32 {
    value as i32
}

fn opens<'a>() -> Vec<Column<OpenRow<'a>>> {
    vec![
        col("trace_id", Get::Text(|r| r.id)),
        col("pid", Get::I32(|r| int32(r.pid))),
        col("tid", Get::I32(|r| int32(r.tid))),
        col("process_start_ns", Get::OptU64(|r| r.process_start_ns)),
        col("ts_ns", Get::U64(|r| r.ts_ns)),
        col("duration_ns", Get::U64(|r| r.duration_ns)),
        col("syscall", Get::Text(|r| r.syscall)),
        col("path", Get::Bytes(|r| &r.path)),
        col("dir", Get::OptBytes(|r| r.dir.as_deref())),
        col("flags", Get::I64(|r| r.flags as i64)),
        col("mode", Get::I32(|r| int32(r.mode))),
        col("ret", Get::I64(|r| r.ret)),
        col("dev", Get::U64(|r| u64::from(r.dev))),
        col("ino", Get::I64(|r| r.ino as i64)),
    ]
}

fn mmaps<'a>() -> Vec<Column<MmapRow<'a>>> {
    vec![
        col("trace_id", Get::Text(|r| r.id)),
        col("pid", Get::I32(|r| int32(r.pid))),
        col("tid", Get::I32(|r| int32(r.tid))),
        col("process_start_ns", Get::OptU64(|r| r.process_start_ns)),
        col("ts_ns", Get::U64(|r| r.ts_ns)),
        col("duration_ns", Get::U64(|r| r.duration_ns)),
        col("path", Get::OptBytes(|r| r.path.as_deref())),
        col("addr", Get::I64(|r| r.addr as i64)),
        col("len", Get::U64(|r| r.len)),
        col("offset", Get::U64(|r| r.offset)),
        col("prot", Get::I32(|r| int32(r.prot))),
        col("flags", Get::I32(|r| int32(r.flags))),
        col("fd", Get::I32(|r| r.fd)),
        col("dev", Get::U64(|r| u64::from(r.dev))),
        col("ino", Get::I64(|r| r.ino as i64)),
    ]
}

pub fn schemas() -> Vec<TableSchema> {
    vec![
        TableSchema { name: OPENS, schema: schema(&opens()) },
        TableSchema { name: MMAPS, schema: schema(&mmaps()) },
    ]
}

/// The processes of the analysis by pid: their start times, ascending.
struct Lives(FastMap<u32, Vec<u64>>);

impl Lives {
    fn of(analysis: &Analysis) -> Lives {
        let mut lives: FastMap<u32, Vec<u64>> = FastMap::default();
        for p in &analysis.processes {
            lives.entry(p.pid).or_default().push(p.start_ns);
        }
        lives.values_mut().for_each(|starts| starts.sort_unstable());
        Lives(lives)
    }

    /// The start of the process that was `pid` at `ts`: the latest started
    /// by then, else the first.
    fn start(&self, pid: u32, ts: u64) -> Option<u64> {
        let starts = self.0.get(&pid)?;
        starts.iter().rev().find(|s| **s <= ts).or(starts.first()).copied()
    }
}

/// Every open and mmap of the trace at `path`, in batches.
pub fn write(w: &mut Writer, id: &str, analysis: &Analysis, path: &Path) -> Result<()> {
    let name = path.display().to_string();
    let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
    let mut reader = TraceReader::new(BufReader::new(file)).with_context(|| name.clone())?;
    let lives = Lives::of(analysis);
    let (open_columns, mmap_columns) = (opens(), mmaps());
    let mut open_rows: Vec<OpenRow> = Vec::with_capacity(BATCH_ROWS);
    let mut mmap_rows: Vec<MmapRow> = Vec::with_capacity(BATCH_ROWS);
    for event in reader.by_ref() {
        match event.with_context(|| name.clone())? {
            Event::Open { common, syscall, path, dir, flags, mode, ret, duration_ns, ino, dev, .. } => {
                open_rows.push(OpenRow {
                    id,
                    pid: common.pid,
                    tid: common.tid,
                    process_start_ns: lives.start(common.pid, common.ts_ns),
                    ts_ns: common.ts_ns,
                    duration_ns,
                    syscall: syscall.name(),
                    path,
                    dir,
                    flags,
                    mode,
                    ret,
                    dev,
                    ino,
                });
                if open_rows.len() == BATCH_ROWS {
                    w.write(OPENS, &open_columns, &open_rows)?;
                    open_rows.clear();
                }
            }
            Event::Mmap {
                common, path, addr, len, offset, prot, flags, fd, dev, ino, duration_ns, ..
            } => {
                mmap_rows.push(MmapRow {
                    id,
                    pid: common.pid,
                    tid: common.tid,
                    process_start_ns: lives.start(common.pid, common.ts_ns),
                    ts_ns: common.ts_ns,
                    duration_ns,
                    path,
                    addr,
                    len,
                    offset,
                    prot,
                    flags,
                    fd,
                    dev,
                    ino,
                });
                if mmap_rows.len() == BATCH_ROWS {
                    w.write(MMAPS, &mmap_columns, &mmap_rows)?;
                    mmap_rows.clear();
                }
            }
            _ => {}
        }
    }
    w.write(OPENS, &open_columns, &open_rows)?;
    w.write(MMAPS, &mmap_columns, &mmap_rows)
}
