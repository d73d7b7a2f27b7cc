//! Writing what nixtrace produces: files only their owner can read (traces
//! and reports hold command lines and paths), and standard output that a
//! pager or `head` may close early.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use anyhow::{Result, anyhow};

/// Creates `path` with mode 0600. An existing file is replaced only when
/// `overwrite` is set, otherwise it is an error that says how to proceed.
pub fn create_private(path: &Path, overwrite: bool) -> Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).mode(0o600);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    options.open(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => {
            anyhow!("{} already exists; use --force to overwrite it", path.display())
        }
        _ => anyhow!("cannot create {}: {e}", path.display()),
    })
}

/// Writes `bytes` to `path` (mode 0600, replacing it).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = create_private(path, true)?;
    file.write_all(bytes).map_err(|e| anyhow!("writing {}: {e}", path.display()))
}

/// Writes `bytes` to `path` (mode 0600), or to standard output without one.
pub fn write_or_print(path: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match path {
        Some(path) => write_private(path, bytes),
        None => {
            let mut stdout = io::stdout().lock();
            stdout.write_all(bytes).or_else(ignore_broken_pipe)?;
            Ok(())
        }
    }
}

/// `nixtrace dump x | head` is normal use: a closed pipe is not an error.
pub fn ignore_broken_pipe(error: io::Error) -> io::Result<()> {
    if error.kind() == io::ErrorKind::BrokenPipe { Ok(()) } else { Err(error) }
}
