//! What each process and each file read: from the disk (pages entering the
//! page cache, block requests) and through read(2).

use std::collections::HashSet;

use serde::Serialize;

use super::package::Package;
use crate::{
    model::io::{FileTable, IoTotals, PAGE_SIZE},
    trace::event::text,
};

/// I/O charged to a process (or summed over a unit).
#[derive(Debug, Default, Clone, Serialize)]
pub struct IoFigures {
    /// Bytes read into the page cache: what really came from disk.
    pub disk_read_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub block_requests: u64,
    /// Issue to completion, summed over the requests.
    pub block_latency_ns: u64,
    /// Bytes returned by read/pread64 (from the cache or the disk).
    pub read_bytes: u64,
}

impl From<&IoTotals> for IoFigures {
    fn from(io: &IoTotals) -> IoFigures {
        IoFigures {
            disk_read_bytes: io.disk_read_bytes(),
            block_read_bytes: io.block_read_bytes,
            block_write_bytes: io.block_write_bytes,
            block_requests: io.block_requests,
            block_latency_ns: io.block_latency_ns,
            read_bytes: io.read_bytes,
        }
    }
}

impl IoFigures {
    pub fn add(&mut self, other: &IoFigures) {
        self.disk_read_bytes = self.disk_read_bytes.saturating_add(other.disk_read_bytes);
        self.block_read_bytes = self.block_read_bytes.saturating_add(other.block_read_bytes);
        self.block_write_bytes = self.block_write_bytes.saturating_add(other.block_write_bytes);
        self.block_requests = self.block_requests.saturating_add(other.block_requests);
        self.block_latency_ns = self.block_latency_ns.saturating_add(other.block_latency_ns);
        self.read_bytes = self.read_bytes.saturating_add(other.read_bytes);
    }
}

/// A file that was read, from the disk or the page cache.
#[derive(Debug, Clone, Serialize)]
pub struct FileFigures {
    /// Null when the trace never saw it opened or mapped.
    pub path: Option<String>,
    pub dev: u32,
    pub ino: u64,
    pub package: Option<Package>,
    pub disk_read_bytes: u64,
    /// Bytes read from it with read/pread64, from the cache or the disk.
    pub read_bytes: u64,
    /// The processes that read it or whose reads brought it in.
    pub readers: Vec<u32>,
    /// What each of those brought in from disk (`disk_read_bytes` split).
    pub disk_read_by_reader: Vec<ReaderRead>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReaderRead {
    pub pid: u32,
    pub disk_read_bytes: u64,
}

impl FileFigures {
    /// Its path, or its inode when the trace never named it.
    pub fn display_name(&self) -> String {
        self.path.clone().unwrap_or_else(|| format!("inode {} on device {}", self.ino, device(self.dev)))
    }
}

/// "254:0" for a kernel `dev_t` (`major << 20 | minor`).
fn device(dev: u32) -> String {
    format!("{}:{}", dev >> 20, dev & 0xfffff)
}

/// The files read by any of `pids`: most read from disk first, then most
/// bytes read.
pub fn files_read(files: &FileTable, pids: &HashSet<u32>) -> Vec<FileFigures> {
    let known_devices: HashSet<u32> =
        files.files.iter().filter(|(_, f)| f.path.is_some()).map(|((dev, _), _)| *dev).collect();
    files
        .read()
        .into_iter()
        .filter(|(_, f)| f.readers.keys().any(|pid| pids.contains(pid)))
        .map(|((dev, ino), f)| {
            // A block device's own page cache holds file-system metadata;
            // its inode number is the device number of the files on it.
            let block_device =
                f.path.is_none() && *ino <= u64::from(u32::MAX) && known_devices.contains(&(*ino as u32));
            let path = match &f.path {
                Some(path) => Some(text(path)),
                None if block_device => Some(format!("[metadata of block device {}]", device(*ino as u32))),
                None => None,
            };
            FileFigures {
                package: path.as_deref().and_then(Package::of),
                path,
                dev: *dev,
                ino: *ino,
                disk_read_bytes: f.disk_read_pages.saturating_mul(PAGE_SIZE),
                read_bytes: f.read_bytes,
                readers: f.readers.keys().copied().collect(),
                disk_read_by_reader: f
                    .readers
                    .iter()
                    .filter(|(_, pages)| **pages > 0)
                    .map(|(pid, pages)| ReaderRead {
                        pid: *pid,
                        disk_read_bytes: pages.saturating_mul(PAGE_SIZE),
                    })
                    .collect(),
            }
        })
        .collect()
}
