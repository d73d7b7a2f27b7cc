//! What was really read from disk: pages entering the page cache (by file)
//! and completed block requests (by the task that issued them). Files are
//! named through the opens and mmaps that carried the same device and
//! inode.

use std::collections::BTreeMap;

use super::FastMap;

use crate::trace::{Event, event::Bytes};

pub const PAGE_SIZE: u64 = 4096;

/// I/O charged to one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoTotals {
    /// Pages this process caused to be read into the page cache.
    pub disk_read_pages: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub block_requests: u64,
    /// Sum of issue-to-completion times of those requests.
    pub block_latency_ns: u64,
    /// Bytes returned by read/pread64, from cache or disk.
    pub read_bytes: u64,
}

impl IoTotals {
    pub fn disk_read_bytes(&self) -> u64 {
        self.disk_read_pages.saturating_mul(PAGE_SIZE)
    }

    /// Adds what `event` charges to its task; false if it charges nothing.
    pub fn add(&mut self, event: &Event) -> bool {
        match event {
            Event::PageCache { pages, .. } => {
                self.disk_read_pages = self.disk_read_pages.saturating_add((*pages).into())
            }
            Event::FileRead { bytes, .. } => self.read_bytes = self.read_bytes.saturating_add(*bytes),
            Event::BlockIo { bytes, latency_ns, write, .. } => {
                let bytes = u64::from(*bytes);
                if *write {
                    self.block_write_bytes = self.block_write_bytes.saturating_add(bytes);
                } else {
                    self.block_read_bytes = self.block_read_bytes.saturating_add(bytes);
                }
                self.block_requests += 1;
                self.block_latency_ns = self.block_latency_ns.saturating_add(*latency_ns);
            }
            _ => return false,
        }
        true
    }
}

/// A file (device, inode) as the trace saw it.
#[derive(Debug, Clone, Default)]
pub struct FileIo {
    /// The first name it was opened or mapped under.
    pub path: Option<Bytes>,
    pub disk_read_pages: u64,
    /// Pids that read it, or whose reads brought its pages in, with the
    /// pages each brought in.
    pub readers: BTreeMap<u32, u64>,
    /// Bytes read from it with read/pread64, by all processes.
    pub read_bytes: u64,
    /// Every pid that opened, mapped, executed or read it, or brought its
    /// pages in, with when it first did.
    pub first_use: BTreeMap<u32, u64>,
    /// The pages that entered the page cache, as (first page, pages), in
    /// the order they came.
    pub pages_read: Vec<(u64, u64)>,
    /// Opened for writing at least once: its pages are not a fixed set.
    pub written: bool,
}

/// The access mode bits of `open(2)` flags: non-zero for write access.
const O_ACCMODE: u64 = 0o3;

impl FileIo {
    fn used(&mut self, pid: u32, ts_ns: u64) {
        self.first_use.entry(pid).or_insert(ts_ns);
    }
}

/// Page-cache reads per file, in one pass over the events.
#[derive(Debug, Default)]
pub struct FileTable {
    pub files: FastMap<(u32, u64), FileIo>,
}

impl FileTable {
    /// Names a file the events may never open or map (a loader).
    pub fn name(&mut self, dev: u32, ino: u64, path: &str) {
        self.files.entry((dev, ino)).or_default().path.get_or_insert_with(|| path.as_bytes().to_vec());
    }

    pub fn add(&mut self, event: &Event) {
        match event {
            Event::Open { common, path, dir, flags, ret, ino, dev, .. } if *ret >= 0 && *ino != 0 => {
                let file = self.files.entry((*dev, *ino)).or_default();
                file.used(common.pid, common.ts_ns);
                file.written |= flags & O_ACCMODE != 0;
                if file.path.is_none() {
                    file.path = Some(match dir {
                        Some(dir) if !path.starts_with(b"/") => [dir.as_slice(), b"/", path].concat(),
                        _ => path.clone(),
                    });
                }
            }
            Event::Exec { common, filename: path, ino, dev, .. }
            | Event::Mmap { common, path: Some(path), ino, dev, .. }
                if *ino != 0 =>
            {
                let file = self.files.entry((*dev, *ino)).or_default();
                file.used(common.pid, common.ts_ns);
                file.path.get_or_insert_with(|| path.clone());
            }
            Event::FileRead { common, dev, ino, bytes } => {
                let file = self.files.entry((*dev, *ino)).or_default();
                file.used(common.pid, common.ts_ns);
                file.read_bytes = file.read_bytes.saturating_add(*bytes);
                file.readers.entry(common.pid).or_default();
            }
            Event::PageCache { common, dev, ino, index, pages } => {
                let file = self.files.entry((*dev, *ino)).or_default();
                file.used(common.pid, common.ts_ns);
                file.pages_read.push((*index, u64::from(*pages)));
                file.disk_read_pages = file.disk_read_pages.saturating_add(u64::from(*pages));
                let read = file.readers.entry(common.pid).or_default();
                *read = read.saturating_add((*pages).into());
            }
            _ => {}
        }
    }

    /// Files that were read (from disk or cache), most read from disk
    /// first, then most read.
    pub fn read(&self) -> Vec<(&(u32, u64), &FileIo)> {
        let mut files: Vec<_> =
            self.files.iter().filter(|(_, f)| f.disk_read_pages > 0 || f.read_bytes > 0).collect();
        files.sort_by(|a, b| {
            (b.1.disk_read_pages, b.1.read_bytes)
                .cmp(&(a.1.disk_read_pages, a.1.read_bytes))
                .then(a.0.cmp(b.0))
        });
        files
    }
}
