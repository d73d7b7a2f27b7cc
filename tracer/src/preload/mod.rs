//! `nixtrace preload LIST...`: reads the pages a preload list names into
//! the page cache, ahead of the programs that will need them (at boot:
//! systemd/nixtrace-preload.service, from the last boot's list).
//!
//! It asks the kernel with `readahead(2)`, which queues the reads and
//! returns without copying anything: the disk works through them while the
//! boot goes on. The kernel caps one call at the device's readahead
//! window, so each run is asked for in chunks of [`CHUNK_BYTES`]. What is
//! resident before and after is counted with `mincore(2)`, only over the
//! listed pages. A listed file that is gone (an older generation's) is
//! counted and skipped; nothing is ever written.

pub mod list;

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use self::list::Listed;
use crate::{
    human::{bytes, count, duration},
    model::io::PAGE_SIZE,
};

/// What one `readahead(2)` asks for: at most the kernel's default
/// readahead window, which is also its smallest cap on one call.
const CHUNK_BYTES: u64 = 128 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub lists: Vec<PathBuf>,
    /// Count what is resident, read nothing.
    pub check: bool,
    pub format: Format,
    pub quiet: bool,
}

/// What a preload did, over the listed pages.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub files: u64,
    /// Listed files that are not there (or not regular files).
    pub missing: u64,
    pub listed_bytes: u64,
    /// Listed bytes past the end of their file (it shrank since).
    pub beyond_end_bytes: u64,
    pub cached_before_bytes: u64,
    pub cached_after_bytes: u64,
    /// False with --check: nothing was read.
    pub read_ahead: bool,
    pub duration_ns: u64,
}

/// `nixtrace preload`.
pub fn run(options: &Options) -> Result<()> {
    let mut listed = Vec::new();
    for path in &options.lists {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        listed.extend(list::parse(&bytes).with_context(|| path.display().to_string())?);
    }
    let summary = preload(&listed, !options.check);
    match options.format {
        Format::Json => {
            let text = serde_json::to_string_pretty(&summary)? + "\n";
            crate::output::write_or_print(None, text.as_bytes())?;
        }
        Format::Text if !options.quiet => eprintln!("nixtrace: {}", describe(&summary)),
        Format::Text => {}
    }
    Ok(())
}

/// Reads `listed` ahead (unless `read` is false) and counts what is cached.
pub fn preload(listed: &[Listed], read: bool) -> Summary {
    let started = Instant::now();
    let mut summary = Summary { read_ahead: read, ..Summary::default() };
    for file in listed {
        summary.files += 1;
        summary.listed_bytes = summary.listed_bytes.saturating_add(file.bytes());
        let Ok(opened) = open_regular(Path::new(&file.path)) else {
            summary.missing += 1;
            continue;
        };
        let (handle, size) = opened;
        let runs = within(&file.pages, size);
        let inside: u64 = runs.iter().map(|(_, n)| n * PAGE_SIZE).sum();
        summary.beyond_end_bytes += file.bytes().saturating_sub(inside);
        summary.cached_before_bytes += resident_bytes(&handle, size, &runs);
        if read {
            read_ahead(&handle, &runs);
        }
        summary.cached_after_bytes += resident_bytes(&handle, size, &runs);
    }
    summary.duration_ns = started.elapsed().as_nanos() as u64;
    summary
}

/// The one line `preload` prints.
pub fn describe(s: &Summary) -> String {
    let mut line = if s.read_ahead {
        format!(
            "preloaded {} ({} listed): {} was already cached, {} is now",
            count(s.files - s.missing, "file", "files"),
            bytes(s.listed_bytes),
            bytes(s.cached_before_bytes),
            bytes(s.cached_after_bytes)
        )
    } else {
        format!(
            "{} listed ({}): {} of it cached",
            count(s.files, "file", "files"),
            bytes(s.listed_bytes),
            bytes(s.cached_after_bytes)
        )
    };
    if s.missing > 0 {
        line.push_str(&format!("; {} gone", count(s.missing, "listed file is", "listed files are")));
    }
    if s.beyond_end_bytes > 0 {
        line.push_str(&format!("; {} listed past the end of files", bytes(s.beyond_end_bytes)));
    }
    line + &format!(" ({})", duration(s.duration_ns))
}

fn open_regular(path: &Path) -> Result<(File, u64)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("not a regular file");
    }
    Ok((file, meta.len()))
}

/// `runs` cut to a file of `size` bytes.
fn within(runs: &[(u64, u64)], size: u64) -> Vec<(u64, u64)> {
    let pages = size.div_ceil(PAGE_SIZE);
    runs.iter()
        .filter(|(first, _)| *first < pages)
        .map(|(first, n)| (*first, (*n).min(pages - first)))
        .collect()
}

fn read_ahead(file: &File, runs: &[(u64, u64)]) {
    for (first, pages) in runs {
        let (mut offset, end) = (first * PAGE_SIZE, (first + pages) * PAGE_SIZE);
        while offset < end {
            let len = CHUNK_BYTES.min(end - offset);
            // SAFETY: readahead only reads the descriptor's file; offsets
            // fit an off_t (list::run checks them).
            let done = unsafe { libc::readahead(file.as_raw_fd(), offset as i64, len as usize) };
            if done != 0 {
                // EINVAL: a file system without readahead; the rest would fail too.
                return;
            }
            offset += len;
        }
    }
}

/// Bytes of `runs` that are in the page cache now, by `mincore(2)` over a
/// mapping of the file (which reads nothing in).
fn resident_bytes(file: &File, size: u64, runs: &[(u64, u64)]) -> u64 {
    if size == 0 || runs.is_empty() {
        return 0;
    }
    // SAFETY: a fresh read-only shared mapping of the whole file, never
    // dereferenced, unmapped before returning.
    unsafe {
        let len = size as usize;
        let map =
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0);
        if map == libc::MAP_FAILED {
            return 0;
        }
        let mut vec = vec![0u8; size.div_ceil(PAGE_SIZE) as usize];
        let ok = libc::mincore(map, len, vec.as_mut_ptr()) == 0;
        libc::munmap(map, len);
        if !ok {
            return 0;
        }
        let resident: u64 = runs
            .iter()
            .map(|(first, n)| {
                vec[*first as usize..(first + n) as usize].iter().filter(|b| **b & 1 != 0).count() as u64
            })
            .sum();
        resident * PAGE_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_cut_at_the_end_of_the_file() {
        assert_eq!(within(&[(0, 4), (6, 4), (20, 1)], 8 * PAGE_SIZE + 1), vec![(0, 4), (6, 3)]);
        assert_eq!(within(&[(0, 4)], 0), vec![]);
    }

    #[test]
    fn a_file_read_ahead_is_resident_and_a_gone_one_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::write(&path, vec![7u8; 5 * PAGE_SIZE as usize]).unwrap();
        let listed = [
            Listed { path: path.display().to_string(), pages: vec![(1, 2), (4, 3)] },
            Listed { path: dir.path().join("gone").display().to_string(), pages: vec![(0, 1)] },
        ];
        // Just written, so cached: what matters here is the counting; the
        // reading is tested after dropping the caches (tests/recommend.rs).
        let summary = preload(&listed, true);
        assert_eq!(
            Summary { duration_ns: 0, ..summary },
            Summary {
                files: 2,
                missing: 1,
                listed_bytes: 6 * PAGE_SIZE,
                beyond_end_bytes: 2 * PAGE_SIZE,
                cached_before_bytes: 3 * PAGE_SIZE,
                cached_after_bytes: 3 * PAGE_SIZE,
                read_ahead: true,
                duration_ns: 0,
            }
        );
    }
}
