//! The preload list of a trace: the files whose pages came from disk
//! while it was recorded, in the order the traced processes first used
//! them, each with the pages that came in. `nixtrace preload` reads such a
//! list back into the page cache ahead of the programs that need it.
//!
//! The list must be the same whether or not the boot it came from was
//! itself preloaded, or it would shrink and grow every other boot: pages
//! the preloader brought in count like any other (they came from disk),
//! but a file counts only if a process outside the preloader's unit used
//! it, and its place is when that process first did.

use std::collections::{HashMap, HashSet};

use crate::saturating::SaturatingSum as _;

use crate::model::io::{FileIo, FileTable, PAGE_SIZE};

/// The unit `nixtrace preload` runs in at boot (systemd/nixtrace-preload.service).
pub const PRELOAD_UNIT: &str = "nixtrace-preload.service";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreloadList {
    /// In the order of first use.
    pub entries: Vec<PreloadEntry>,
    /// Files read from disk that the list leaves out, and why.
    pub left_out: LeftOut,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeftOut {
    /// Opened for writing: which of their pages are needed changes.
    pub written: u64,
    /// Never opened, mapped or executed by name (file-system metadata, a
    /// file opened before tracing started).
    pub unnamed: u64,
    /// Named by a path no list line can hold (not UTF-8, or a newline).
    pub unlistable: u64,
    /// Used only by the preloader itself.
    pub preloader_only: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreloadEntry {
    pub path: String,
    pub dev: u32,
    pub ino: u64,
    /// From the start of tracing to the first use outside the preloader.
    pub first_used_ns: u64,
    /// The pages that came from disk: (first page, pages), sorted, with
    /// adjacent and overlapping runs merged.
    pub pages: Vec<(u64, u64)>,
}

impl PreloadEntry {
    pub fn bytes(&self) -> u64 {
        self.pages.iter().map(|(_, n)| *n).saturating_sum().saturating_mul(PAGE_SIZE)
    }
}

/// Sorted, merged page runs.
pub fn merge(runs: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut sorted = runs.to_vec();
    sorted.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
    for (first, pages) in sorted {
        match merged.last_mut() {
            Some((last, count)) if first <= last.saturating_add(*count) => {
                *count = (*count).max(first.saturating_add(pages) - *last);
            }
            _ => merged.push((first, pages)),
        }
    }
    merged
}

/// The preload list of `files`, counting the uses of the processes in
/// `units` (pid to unit: the processes the analysis selected).
pub fn preload_list(files: &FileTable, units: &HashMap<u32, &str>, trace_start: u64) -> PreloadList {
    let mut list = PreloadList::default();
    let users: HashSet<u32> = units.iter().filter(|(_, u)| **u != PRELOAD_UNIT).map(|(p, _)| *p).collect();
    for (&(dev, ino), file) in &files.files {
        if file.pages_read.is_empty() || !file.readers.keys().any(|pid| units.contains_key(pid)) {
            continue;
        }
        match entry(dev, ino, file, &users, trace_start) {
            Ok(entry) => list.entries.push(entry),
            Err(reason) => *reason.count(&mut list.left_out) += 1,
        }
    }
    list.entries.sort_by(|a, b| (a.first_used_ns, &a.path).cmp(&(b.first_used_ns, &b.path)));
    list
}

enum Reason {
    Written,
    Unnamed,
    Unlistable,
    PreloaderOnly,
}

impl Reason {
    fn count(self, left_out: &mut LeftOut) -> &mut u64 {
        match self {
            Reason::Written => &mut left_out.written,
            Reason::Unnamed => &mut left_out.unnamed,
            Reason::Unlistable => &mut left_out.unlistable,
            Reason::PreloaderOnly => &mut left_out.preloader_only,
        }
    }
}

fn entry(
    dev: u32,
    ino: u64,
    file: &FileIo,
    users: &HashSet<u32>,
    trace_start: u64,
) -> Result<PreloadEntry, Reason> {
    let path = file.path.as_deref().ok_or(Reason::Unnamed)?;
    if file.written {
        return Err(Reason::Written);
    }
    let path = std::str::from_utf8(path).map_err(|_| Reason::Unlistable)?;
    if !path.starts_with('/') || path.contains('\n') {
        return Err(Reason::Unlistable);
    }
    let first_use = file
        .first_use
        .iter()
        .filter(|(pid, _)| users.contains(pid))
        .map(|(_, ts)| *ts)
        .min()
        .ok_or(Reason::PreloaderOnly)?;
    Ok(PreloadEntry {
        path: path.to_string(),
        dev,
        ino,
        first_used_ns: first_use.saturating_sub(trace_start),
        pages: merge(&file.pages_read),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_when_they_touch_or_overlap() {
        assert_eq!(merge(&[(8, 4), (0, 4), (4, 2), (20, 1), (9, 1)]), vec![(0, 6), (8, 4), (20, 1)]);
        assert_eq!(merge(&[(6, 2), (0, 6)]), vec![(0, 8)]);
        assert_eq!(merge(&[(3, 1), (3, 4), (0, 1)]), vec![(0, 1), (3, 4)]);
        assert_eq!(merge(&[]), vec![]);
    }

    fn file(path: &str, uses: &[(u32, u64)], written: bool) -> FileIo {
        FileIo {
            path: Some(path.as_bytes().to_vec()),
            disk_read_pages: 3,
            readers: uses.iter().map(|(pid, _)| (*pid, 1)).collect(),
            first_use: uses.iter().copied().collect(),
            pages_read: vec![(5, 1), (0, 2)],
            written,
            ..FileIo::default()
        }
    }

    #[test]
    fn the_list_is_in_first_use_order_outside_the_preloader() {
        let mut files = FileTable::default();
        // pid 9 is the preloader: it read everything first.
        files.files.insert((1, 10), file("/nix/store/a-x/lib/libx.so", &[(9, 100), (2, 700)], false));
        files.files.insert((1, 11), file("/etc/machine-id", &[(9, 110), (3, 400)], false));
        files.files.insert((1, 12), file("/var/log/journal/x", &[(3, 300)], true));
        files.files.insert((1, 13), file("/nix/store/b-gone/old", &[(9, 120)], false));
        files.files.insert((1, 14), FileIo { path: None, ..file("/", &[(2, 1)], false) });
        files.files.insert((1, 15), file("/not/selected", &[(77, 1)], false));
        let units = HashMap::from([(9, PRELOAD_UNIT), (2, "a.service"), (3, "b.service")]);
        let list = preload_list(&files, &units, 50);
        let order: Vec<(&str, u64)> =
            list.entries.iter().map(|e| (e.path.as_str(), e.first_used_ns)).collect();
        assert_eq!(order, [("/etc/machine-id", 350), ("/nix/store/a-x/lib/libx.so", 650)]);
        assert_eq!(list.entries[0].pages, [(0, 2), (5, 1)]);
        assert_eq!(list.entries[0].bytes(), 3 * PAGE_SIZE);
        assert_eq!(list.left_out, LeftOut { written: 1, unnamed: 1, unlistable: 0, preloader_only: 1 });
    }
}
