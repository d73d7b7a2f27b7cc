//! Cache files as an exec's opens show them: a file looked for and not
//! there, then written (the path itself, or a temporary beside it that is
//! renamed over it, as Python's bytecode writer does), or that could not be
//! written; Python bytecode found and then written again, or tried to be
//! (Python found it stale and compiled its source); Python bytecode looked
//! for and never written; and caches
//! created in a dot-entry of a home directory rather than under
//! `~/.cache`. One exec's opens outside the dynamic loader feed it.

use super::{
    FastMap,
    path::{bytecode_source, home_dot_entry, split},
};
use crate::trace::event::Bytes;

/// `open(2)` flags and errnos this reads.
const O_CREAT: u64 = 0o100;
const EPERM: i64 = 1;
const ENOENT: i64 = 2;
const EACCES: i64 = 13;
const EROFS: i64 = 30;

#[derive(Debug, Clone, Default)]
pub struct CacheFiles {
    /// Paths opened in vain, and when first; the index of their entry in
    /// `files` once they have one.
    missing: FastMap<Bytes, Missing>,
    /// Bytecode opened and found, and when first: a write of it after
    /// that means Python compiled the module anyway.
    found_bytecode: FastMap<Bytes, u64>,
    /// The bytecode file whose cost ends at the exec's next open of
    /// anything but its source.
    awaiting_next_open: Option<usize>,
    pub files: Vec<CacheFile>,
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    ts_ns: u64,
    entry: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFile {
    /// The file looked for (or, for a cache created without a lookup
    /// before, the file created).
    pub path: Bytes,
    /// When it was looked for in vain; None when it was not.
    pub missing_ns: Option<u64>,
    /// When it was opened and found, for bytecode then written again (or
    /// tried): stale, as timestamp bytecode is once its source's mtime
    /// changed (Nix resets every store file's to 1). None otherwise.
    pub found_ns: Option<u64>,
    pub outcome: CacheOutcome,
    /// From the failed lookup (or the stale bytecode's open) to the write
    /// or the failed create; for bytecode never written, to the exec's next
    /// open after its source.
    pub gap_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Written, as this path (the file itself or a temporary beside it).
    Created { as_path: Bytes },
    /// The create failed with this errno (a read-only or foreign place).
    NotWritable { errno: i64 },
    /// Python bytecode looked for, not there, and no write tried.
    BytecodeMissing,
}

impl CacheFiles {
    /// An open (outside the loader) by this exec.
    pub fn open(&mut self, ts_ns: u64, path: &[u8], flags: u64, ret: i64) {
        if let Some(index) = self.awaiting_next_open {
            let file = &mut self.files[index];
            if bytecode_source(&file.path).as_deref() != Some(path) {
                file.gap_ns = ts_ns.saturating_sub(file.missing_ns.unwrap_or(ts_ns));
                self.awaiting_next_open = None;
            }
        }
        let creates = flags & O_CREAT != 0;
        match (creates, ret) {
            (false, ret) if ret == -ENOENT => {
                if self.missing.contains_key(path) {
                    return;
                }
                let mut missing = Missing { ts_ns, entry: None };
                if bytecode_source(path).is_some() {
                    missing.entry = Some(self.files.len());
                    self.awaiting_next_open = missing.entry;
                    self.files.push(CacheFile {
                        path: path.to_vec(),
                        missing_ns: Some(ts_ns),
                        found_ns: None,
                        outcome: CacheOutcome::BytecodeMissing,
                        gap_ns: 0,
                    });
                }
                self.missing.insert(path.to_vec(), missing);
            }
            (false, ret) if ret >= 0 && bytecode_source(path).is_some() => {
                self.found_bytecode.entry(path.to_vec()).or_insert(ts_ns);
            }
            (true, ret) if ret >= 0 => {
                let outcome = CacheOutcome::Created { as_path: path.to_vec() };
                if let Some((looked_for, missing)) = self.looked_for(path) {
                    self.settle(looked_for, missing, ts_ns, outcome);
                } else if let Some((bytecode, found_ns)) = self.stale(path) {
                    self.push_stale(bytecode, found_ns, ts_ns, outcome);
                } else if is_home_dot_cache(path) {
                    self.files.push(CacheFile {
                        path: path.to_vec(),
                        missing_ns: None,
                        found_ns: None,
                        outcome,
                        gap_ns: 0,
                    });
                }
            }
            (true, ret) if [EPERM, ENOENT, EACCES, EROFS].iter().any(|errno| ret == -errno) => {
                let outcome = CacheOutcome::NotWritable { errno: -ret };
                if let Some((looked_for, missing)) = self.looked_for(path) {
                    self.settle(looked_for, missing, ts_ns, outcome);
                } else if let Some((bytecode, found_ns)) = self.stale(path) {
                    self.push_stale(bytecode, found_ns, ts_ns, outcome);
                }
            }
            _ => {}
        }
    }

    /// The bytecode, opened and found before, that a create of `created`
    /// writes again (itself or a temporary beside it).
    fn stale(&mut self, created: &[u8]) -> Option<(Bytes, u64)> {
        let found = written_as(self.found_bytecode.keys(), created)?;
        let found_ns = self.found_bytecode.remove(&found)?;
        Some((found, found_ns))
    }

    fn push_stale(&mut self, path: Bytes, found_ns: u64, ts_ns: u64, outcome: CacheOutcome) {
        let gap_ns = ts_ns.saturating_sub(found_ns);
        self.files.push(CacheFile { path, missing_ns: None, found_ns: Some(found_ns), outcome, gap_ns });
    }

    /// The missing file a create of `created` writes: the same path, or a
    /// temporary beside it whose name is the missing one's and a suffix
    /// (the longest such, so that the match does not depend on the map).
    fn looked_for(&mut self, created: &[u8]) -> Option<(Bytes, Missing)> {
        if let Some(missing) = self.missing.remove(created) {
            return Some((created.to_vec(), missing));
        }
        let found = written_as(self.missing.keys(), created)?;
        let missing = self.missing.remove(&found)?;
        Some((found, missing))
    }

    fn settle(&mut self, path: Bytes, missing: Missing, ts_ns: u64, outcome: CacheOutcome) {
        let gap_ns = ts_ns.saturating_sub(missing.ts_ns);
        let file = CacheFile { path, missing_ns: Some(missing.ts_ns), found_ns: None, outcome, gap_ns };
        match missing.entry {
            Some(index) => {
                if self.awaiting_next_open == Some(index) {
                    self.awaiting_next_open = None;
                }
                self.files[index] = file;
            }
            None => self.files.push(file),
        }
    }
}

/// Of `paths`, the one a create of `created` writes through a temporary
/// beside it: same directory, a name that `created`'s starts with (the
/// longest such, so that the match does not depend on the map's order).
fn written_as<'a>(paths: impl Iterator<Item = &'a Bytes>, created: &[u8]) -> Option<Bytes> {
    let (dir, name) = split(created);
    paths
        .filter(|p| {
            let (p_dir, p_name) = split(p);
            p_dir == dir && !p_name.is_empty() && name.starts_with(p_name)
        })
        .max_by(|a, b| a.len().cmp(&b.len()).then_with(|| b.cmp(a)))
        .cloned()
}

/// A file in a dot-entry of a home directory (`/home/USER/.NAME...` or
/// `/root/.NAME...`) whose name says cache, outside `~/.cache`.
pub fn is_home_dot_cache(path: &[u8]) -> bool {
    home_dot_entry(path).is_some_and(|(_, entry)| {
        entry != b".cache" && entry.to_ascii_lowercase().windows(5).any(|w| w == b"cache")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_written_through_a_temporary_is_rebuilt() {
        let mut caches = CacheFiles::default();
        let pyc = b"/w/__pycache__/m.cpython-311.pyc";
        caches.open(100, pyc, 0, -ENOENT);
        caches.open(110, b"/w/m.py", 0, 3);
        caches.open(400, b"/w/__pycache__/m.cpython-311.pyc.12345", O_CREAT | 0o200 | 1, 4);
        assert_eq!(
            caches.files,
            [CacheFile {
                path: pyc.to_vec(),
                missing_ns: Some(100),
                found_ns: None,
                outcome: CacheOutcome::Created {
                    as_path: b"/w/__pycache__/m.cpython-311.pyc.12345".to_vec()
                },
                gap_ns: 300,
            }]
        );
    }

    #[test]
    fn bytecode_found_then_written_again_was_stale() {
        let mut caches = CacheFiles::default();
        let pyc = b"/nix/store/abc-m/lib/__pycache__/m.cpython-311.pyc";
        caches.open(100, pyc, 0, 3);
        caches.open(110, b"/nix/store/abc-m/lib/m.py", 0, 4);
        caches.open(
            500,
            b"/nix/store/abc-m/lib/__pycache__/m.cpython-311.pyc.139",
            O_CREAT | 0o200 | 1,
            -EACCES,
        );
        assert_eq!(
            caches.files,
            [CacheFile {
                path: pyc.to_vec(),
                missing_ns: None,
                found_ns: Some(100),
                outcome: CacheOutcome::NotWritable { errno: EACCES },
                gap_ns: 400,
            }]
        );
        // Bytecode found and kept (checked-hash bytecode opens its source
        // too, and writes nothing) is no cache file.
        let mut caches = CacheFiles::default();
        caches.open(100, pyc, 0, 3);
        caches.open(110, b"/nix/store/abc-m/lib/m.py", 0, 4);
        caches.open(120, b"/etc/hostname", 0, 5);
        assert_eq!(caches.files, []);
    }

    #[test]
    fn bytecode_never_written_costs_until_the_next_open_after_its_source() {
        let mut caches = CacheFiles::default();
        let pyc = b"/nix/store/abc-m/lib/__pycache__/m.cpython-311.pyc";
        caches.open(100, pyc, 0, -ENOENT);
        caches.open(110, b"/nix/store/abc-m/lib/m.py", 0, 3);
        caches.open(900, b"/etc/hostname", 0, 3);
        assert_eq!(caches.files[0].outcome, CacheOutcome::BytecodeMissing);
        assert_eq!(caches.files[0].gap_ns, 800);
    }

    #[test]
    fn a_create_that_fails_is_not_writable() {
        let mut caches = CacheFiles::default();
        caches.open(100, b"/ro/app.cache", 0, -ENOENT);
        caches.open(150, b"/ro/app.cache", O_CREAT | 1, -EROFS);
        assert_eq!(caches.files[0].outcome, CacheOutcome::NotWritable { errno: EROFS });
        assert_eq!(caches.files[0].gap_ns, 50);
    }

    #[test]
    fn unrelated_creates_and_found_files_are_not_caches() {
        let mut caches = CacheFiles::default();
        caches.open(100, b"/etc/missing.conf", 0, -ENOENT);
        caches.open(200, b"/tmp/out.log", O_CREAT | 1, 3);
        caches.open(300, b"/etc/hostname", 0, 3);
        assert_eq!(caches.files, []);
    }

    #[test]
    fn home_dot_caches_are_known() {
        for (path, expected) in [
            (&b"/home/ann/.foo-cache"[..], true),
            (b"/root/.Cache-thing/index", true),
            (b"/home/ann/.cache/foo", false),
            (b"/home/ann/.config/foo/cache", false),
            (b"/home/ann/notes-cache", false),
            (b"/var/cache/foo", false),
        ] {
            assert_eq!(is_home_dot_cache(path), expected, "{}", String::from_utf8_lossy(path));
        }
    }
}
