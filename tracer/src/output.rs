//! Writing what nixtrace produces: files only their owner can read (traces
//! and reports hold command lines and paths), and standard output that a
//! pager or `head` may close early.

use std::{
    ffi::CString,
    fs::{self, File, OpenOptions, Permissions},
    io::{self, Write},
    os::unix::{
        ffi::OsStrExt as _,
        fs::{OpenOptionsExt as _, PermissionsExt as _},
    },
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow};

fn already_exists(path: &Path) -> anyhow::Error {
    anyhow!("{} already exists; use --force to overwrite it", path.display())
}

/// Creates `path` with mode 0600. An existing file is replaced only when
/// `overwrite` is set, otherwise it is an error that says how to proceed.
/// A replaced file ends up 0600 too, whatever its mode was.
pub fn create_private(path: &Path, overwrite: bool) -> Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).mode(0o600);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let file = options.open(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => already_exists(path),
        _ => anyhow::Error::from(e).context(format!("cannot create {}", path.display())),
    })?;
    // The mode given to open(2) only applies to a file it creates. Only a
    // regular file is ours to change: `-o /dev/null` must stay /dev/null.
    if file.metadata().is_ok_and(|m| m.is_file()) {
        file.set_permissions(Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private (mode 0600)", path.display()))?;
    }
    Ok(file)
}

/// A private (0600) file that takes its name only once it holds something
/// worth keeping: until [`PendingFile::commit`], it is a hidden file beside
/// `path`, removed when dropped, so a run that fails before it starts
/// leaves nothing behind and an existing file untouched.
#[derive(Debug)]
pub struct PendingFile {
    file: File,
    hidden: PathBuf,
    path: PathBuf,
    overwrite: bool,
    committed: bool,
}

impl PendingFile {
    pub fn create(path: &Path, overwrite: bool) -> Result<PendingFile> {
        if !overwrite && fs::symlink_metadata(path).is_ok() {
            return Err(already_exists(path));
        }
        let name = path.file_name().with_context(|| format!("{} names no file", path.display()))?;
        let mut hidden_name = std::ffi::OsString::from(".");
        hidden_name.push(name);
        hidden_name.push(format!(".{}.partial", std::process::id()));
        let hidden = path.with_file_name(hidden_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&hidden)
            .with_context(|| format!("cannot create {}", hidden.display()))?;
        Ok(PendingFile { file, hidden, path: path.to_path_buf(), overwrite, committed: false })
    }

    /// The open file, to write to before and after the commit.
    pub fn file(&self) -> Result<File> {
        self.file
            .try_clone()
            .with_context(|| format!("duplicating the descriptor of {}", self.path.display()))
    }

    /// Gives the file its name: replacing what is there with `overwrite`,
    /// refusing to otherwise (even if something appeared since `create`).
    pub fn commit(&mut self) -> Result<()> {
        if self.overwrite {
            fs::rename(&self.hidden, &self.path)
                .with_context(|| format!("renaming {} to {}", self.hidden.display(), self.path.display()))?;
        } else {
            rename_noreplace(&self.hidden, &self.path)?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.hidden);
        }
    }
}

/// rename(2) that fails rather than replace `to`.
fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).with_context(|| format!("{} has a NUL byte", p.display()))
    };
    let (from_c, to_c) = (c(from)?, c(to)?);
    // SAFETY: two NUL-terminated paths, relative to the working directory.
    let done = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if done == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.kind() {
        io::ErrorKind::AlreadyExists => Err(already_exists(to)),
        // A file system without RENAME_NOREPLACE: a hard link refuses to
        // replace too.
        _ if error.raw_os_error() == Some(libc::EINVAL) => {
            fs::hard_link(from, to).map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => already_exists(to),
                _ => {
                    anyhow::Error::from(e).context(format!("linking {} to {}", from.display(), to.display()))
                }
            })?;
            fs::remove_file(from).with_context(|| format!("removing {}", from.display()))
        }
        _ => Err(anyhow::Error::from(error).context(format!(
            "renaming {} to {}",
            from.display(),
            to.display()
        ))),
    }
}

/// Writes `bytes` to `path` (mode 0600, replacing it).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = create_private(path, true)?;
    file.write_all(bytes).with_context(|| format!("writing {}", path.display()))
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
