//! Paths as bytes: splitting, joining to the directory a relative path was
//! resolved against, and the few shapes the model recognises (a home
//! directory's entries, Python bytecode and its source).

use crate::trace::event::Bytes;

/// (`/a/b`, `c`) for `/a/b/c`; (`/`, `c`) for `/c`; (`.`, `c`) for `c`.
pub fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(0) => (b"/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b".", path),
    }
}

/// A path as the kernel resolved it: a relative one joined to the
/// directory it was relative to.
pub fn absolute(path: &[u8], dir: Option<&[u8]>) -> Bytes {
    match dir {
        Some(dir) if dir.ends_with(b"/") => [dir, path].concat(),
        Some(dir) => [dir, b"/", path].concat(),
        None => path.to_vec(),
    }
}

/// (`/home/USER` or `/root`, `.ENTRY`) of a path in a dot-entry of a home
/// directory.
pub fn home_dot_entry(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let home_len = if path.starts_with(b"/root/") {
        "/root".len()
    } else {
        let user = path.strip_prefix(b"/home/")?;
        "/home/".len() + user.iter().position(|b| *b == b'/')?
    };
    let (home, rest) = path.split_at(home_len);
    let entry = rest[1..].split(|b| *b == b'/').next()?;
    entry.starts_with(b".").then_some((home, entry))
}

/// `DIR/NAME.py` for CPython's (unoptimised) bytecode of it,
/// `DIR/__pycache__/NAME.TAG.pyc`; None for any other path.
pub fn bytecode_source(path: &[u8]) -> Option<Bytes> {
    let (cache_dir, name) = split(path);
    let dir = cache_dir.strip_suffix(b"/__pycache__")?;
    let stem = name.strip_suffix(b".pyc")?;
    // `-O` bytecode (NAME.TAG.opt-1.pyc) is another file than the one
    // compileall writes by default.
    if stem.windows(5).any(|w| w == b".opt-") {
        return None;
    }
    let module = stem.split(|b| *b == b'.').next().filter(|m| !m.is_empty())?;
    Some([dir, b"/", module, b".py"].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_and_join() {
        assert_eq!(split(b"/a/b/c"), (&b"/a/b"[..], &b"c"[..]));
        assert_eq!(split(b"/c"), (&b"/"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b"."[..], &b"c"[..]));
        assert_eq!(absolute(b"x", Some(b"/")), b"/x");
        assert_eq!(absolute(b"x", Some(b"/w")), b"/w/x");
        assert_eq!(absolute(b"/x", None), b"/x");
    }

    #[test]
    fn home_entries_and_bytecode_are_known() {
        assert_eq!(home_dot_entry(b"/home/ann/.foo-cache/x"), Some((&b"/home/ann"[..], &b".foo-cache"[..])));
        assert_eq!(home_dot_entry(b"/root/.foo"), Some((&b"/root"[..], &b".foo"[..])));
        assert_eq!(home_dot_entry(b"/home/ann/notes"), None);
        assert_eq!(home_dot_entry(b"/home/ann"), None);
        assert_eq!(home_dot_entry(b"/var/.x"), None);
        assert_eq!(bytecode_source(b"/w/__pycache__/m.cpython-311.pyc").as_deref(), Some(&b"/w/m.py"[..]));
        assert_eq!(bytecode_source(b"/w/__pycache__/m.cpython-311.opt-1.pyc"), None);
        assert_eq!(bytecode_source(b"/w/m.pyc"), None);
        assert_eq!(bytecode_source(b"/__pycache__/.pyc"), None);
    }
}
