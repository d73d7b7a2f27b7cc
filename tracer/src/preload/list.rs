//! The preload list file (docs/recommendations.md, "boot-io"): text, one
//! file a line, in the order the traced processes first used them.
//!
//! ```text
//! # nixtrace preload list 1
//! # from boot.ntr: 2 files, 76.0 KiB read from disk; pages of 4096 bytes
//! 0+12,40+6	/nix/store/8f…-glibc-2.40/lib/libc.so.6
//! 0+1	/etc/machine-id
//! ```
//!
//! Each line is the page runs that came from disk (first page `+` count,
//! comma-separated), a tab, and the file: the path last, so that it may
//! hold anything but a newline. Where the file the trace named still
//! exists here, symbolic links are resolved to it (a NixOS profile path
//! becomes its store path, which stays valid across generations).

#![allow(clippy::tabs_in_doc_comments, reason = "the example shows the file's real tab separator")]

use anyhow::{Result, bail};

use crate::{
    analysis::preload::{PreloadEntry, PreloadList, merge},
    human::{bytes, count},
    model::io::PAGE_SIZE,
    saturating::SaturatingSum as _,
    trace::event::is_the_file,
};

/// The first line of every list: its kind and version.
pub const FIRST_LINE: &str = "# nixtrace preload list 1";

/// One line of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub path: String,
    /// (first page, pages), sorted and merged.
    pub pages: Vec<(u64, u64)>,
}

impl Listed {
    pub fn bytes(&self) -> u64 {
        self.pages.iter().map(|(_, n)| *n).saturating_sum().saturating_mul(PAGE_SIZE)
    }
}

/// The path to list for `entry`: its real path when the file the trace
/// named is still there under it, else the name the trace saw.
fn listed_path(entry: &PreloadEntry) -> String {
    std::fs::canonicalize(&entry.path)
        .ok()
        .filter(|real| is_the_file(real, entry.dev, entry.ino))
        .and_then(|real| real.to_str().filter(|p| !p.contains('\n')).map(str::to_string))
        .unwrap_or_else(|| entry.path.clone())
}

/// The list file of `list`, recorded in the trace named `from`.
pub fn write(list: &PreloadList, from: &str) -> String {
    let total: u64 = list.entries.iter().map(PreloadEntry::bytes).saturating_sum();
    let mut text = format!(
        "{FIRST_LINE}\n# from {}: {}, {} read from disk; pages of {PAGE_SIZE} bytes\n",
        from.replace('\n', " "),
        count(list.entries.len() as u64, "file", "files"),
        bytes(total)
    );
    for entry in &list.entries {
        let runs: Vec<String> = entry.pages.iter().map(|(first, n)| format!("{first}+{n}")).collect();
        text.push_str(&format!("{}\t{}\n", runs.join(","), listed_path(entry)));
    }
    text
}

/// The files of a list file; an error names the line.
pub fn parse(bytes: &[u8]) -> Result<Vec<Listed>> {
    let text = std::str::from_utf8(bytes).ok().filter(|text| text.lines().next() == Some(FIRST_LINE));
    let Some(text) = text else {
        bail!(
            "not a nixtrace preload list (its first line is not `{FIRST_LINE}`; \
             `nixtrace export TRACE --format preload` makes one)"
        );
    };
    let lines = text.lines().enumerate().skip(1);
    let mut listed = Vec::new();
    for (i, line) in lines {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let number = i + 1;
        let Some((runs, path)) = line.split_once('\t') else {
            bail!("line {number}: expected page runs, a tab, then a path");
        };
        if !path.starts_with('/') {
            bail!("line {number}: {path:?} is not an absolute path");
        }
        let pages = runs.split(',').map(run).collect::<Option<Vec<_>>>();
        let Some(pages) = pages else {
            bail!("line {number}: {runs:?} is not a list of page runs (FIRST+COUNT,...)");
        };
        listed.push(Listed { path: path.to_string(), pages: merge(&pages) });
    }
    Ok(listed)
}

/// `12+4`: four pages from page 12.
fn run(text: &str) -> Option<(u64, u64)> {
    let (first, pages) = text.split_once('+')?;
    let (first, pages): (u64, u64) = (first.parse().ok()?, pages.parse().ok()?);
    // Byte offsets of the run must fit an off_t.
    let end = first.checked_add(pages)?.checked_mul(PAGE_SIZE)?;
    (pages > 0 && end <= i64::MAX as u64).then_some((first, pages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_reads_back_what_was_written() {
        let list = PreloadList {
            entries: vec![
                PreloadEntry {
                    path: "/no/such/dir/lib x.so".into(),
                    dev: 1,
                    ino: 2,
                    first_used_ns: 5,
                    pages: vec![(0, 12), (40, 6)],
                },
                PreloadEntry {
                    path: "/no/such/machine-id".into(),
                    dev: 1,
                    ino: 3,
                    first_used_ns: 9,
                    pages: vec![(0, 1)],
                },
            ],
            ..PreloadList::default()
        };
        let text = write(&list, "boot.ntr");
        assert_eq!(
            text,
            "# nixtrace preload list 1\n\
             # from boot.ntr: 2 files, 76.0 KiB read from disk; pages of 4096 bytes\n\
             0+12,40+6\t/no/such/dir/lib x.so\n\
             0+1\t/no/such/machine-id\n"
        );
        let listed = parse(text.as_bytes()).unwrap();
        assert_eq!(listed[0], Listed { path: "/no/such/dir/lib x.so".into(), pages: vec![(0, 12), (40, 6)] });
        assert_eq!(listed[1].bytes(), 4096);
    }

    #[test]
    fn a_bad_line_is_named() {
        for (text, error) in [
            (
                "0+1\t/x\n",
                "not a nixtrace preload list (its first line is not `# nixtrace preload list 1`; \
                 `nixtrace export TRACE --format preload` makes one)",
            ),
            ("# nixtrace preload list 1\n\n0+1 /x\n", "line 3: expected page runs, a tab, then a path"),
            ("# nixtrace preload list 1\n0+1\tx\n", "line 2: \"x\" is not an absolute path"),
            (
                "# nixtrace preload list 1\n0+0\t/x\n",
                "line 2: \"0+0\" is not a list of page runs (FIRST+COUNT,...)",
            ),
            (
                "# nixtrace preload list 1\n# c\n3+1,99999999999999999+1\t/x\n",
                "line 3: \"3+1,99999999999999999+1\" is not a list of page runs (FIRST+COUNT,...)",
            ),
        ] {
            assert_eq!(parse(text.as_bytes()).unwrap_err().to_string(), error, "{text:?}");
        }
    }
}
