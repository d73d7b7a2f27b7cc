//! Nix store paths: which package a traced file belongs to.
//!
//! Every file a NixOS process opens, maps or executes lives under
//! `/nix/store/<hash>-<name>`, and the `<name>` part is how we attribute cost
//! to packages. The split into name, version and output follows what Nix itself
//! does (`builtins.parseDrvName`) so our package names match the ones users
//! see in `nix-env -q` and nixpkgs attribute listings.

/// The store directory. NixOS always uses the default one, and a different one
/// would change every hash, so it is not configurable.
const STORE_DIR: &str = "/nix/store/";

/// Length of the hash part: 160 bits in nix-base32.
const HASH_LEN: usize = 32;

/// The nix-base32 alphabet: digits and lowercase letters without e, o, u, t.
const NIX_BASE32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Suffixes that multiple-output derivations append to the version
/// (`gcc-13.3.0-lib`). Only recognised after a version, so unversioned names
/// such as `hook-data` stay whole.
const OUTPUTS: &[&str] =
    &["lib", "bin", "dev", "out", "man", "doc", "info", "debug", "static", "modules", "data"];

/// A path inside the Nix store, split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorePath<'a> {
    /// `/nix/store/<hash>-<name>`: the store object, without the path inside it.
    pub store_path: &'a str,
    /// The 32-character nix-base32 hash.
    pub hash: &'a str,
    /// The package name without version (`util-linux-minimal`).
    pub name: &'a str,
    /// Everything after the name (`2.39.4`), if the name has a version.
    pub version: Option<&'a str>,
    /// `lib`, `dev`, `bin`, ... when the version ends in a known output suffix.
    pub output: Option<&'a str>,
}

/// Splits `path` into its store parts, or `None` when it is not inside the Nix
/// store or its store component is malformed.
///
/// Derivation files (`...-hello-2.12.1.drv`) parse like their package
/// (`hello`, `2.12.1`); `store_path` still ends in `.drv`.
pub fn parse_store_path(path: &str) -> Option<StorePath<'_>> {
    let rest = path.strip_prefix(STORE_DIR)?;
    let component = rest.split('/').next()?;
    let (hash, full_name) = component.split_at_checked(HASH_LEN)?;
    let full_name = full_name.strip_prefix('-')?;
    if !is_hash(hash) || !is_name(full_name) {
        return None;
    }
    let full_name = full_name.strip_suffix(".drv").filter(|n| !n.is_empty()).unwrap_or(full_name);
    let (name, version) = split_name_version(full_name);
    let (version, output) = match version.map(split_output) {
        Some((version, output)) => (Some(version), output),
        None => (None, None),
    };
    let store_path = &path[..STORE_DIR.len() + component.len()];
    Some(StorePath { store_path, hash, name, version, output })
}

/// `path` with the store hash elided (`/nix/store/…-hello-2.12.1/bin/hello`):
/// the same program before and after a rebuild compares equal, and the
/// name stays readable.
pub fn without_hash(path: &str) -> std::borrow::Cow<'_, str> {
    match parse_store_path(path) {
        Some(_) => format!("{STORE_DIR}…{}", &path[STORE_DIR.len() + HASH_LEN..]).into(),
        None => path.into(),
    }
}

fn is_hash(hash: &str) -> bool {
    hash.len() == HASH_LEN && hash.bytes().all(|b| NIX_BASE32.contains(&b))
}

/// The characters Nix allows in store path names; anything else cannot come
/// from a real store, so we treat it as malformed rather than guess.
fn is_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
}

/// `builtins.parseDrvName`: the version starts after the first dash that is
/// not followed by a letter (`perl5.38.2-XML-Parser-2.46` →
/// `perl5.38.2-XML-Parser`, `2.46`).
fn split_name_version(full_name: &str) -> (&str, Option<&str>) {
    let bytes = full_name.as_bytes();
    let dash = bytes.windows(2).position(|pair| pair[0] == b'-' && !pair[1].is_ascii_alphabetic());
    match dash {
        Some(i) => (&full_name[..i], Some(&full_name[i + 1..])),
        None => (full_name, None),
    }
}

/// `13.3.0-lib` → (`13.3.0`, `lib`); versions without a known output suffix
/// are returned unchanged.
fn split_output(version: &str) -> (&str, Option<&str>) {
    let split =
        version.rsplit_once('-').filter(|(rest, output)| !rest.is_empty() && OUTPUTS.contains(output));
    match split {
        Some((rest, output)) => (rest, Some(output)),
        None => (version, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdfghijklmnpqrsvwxyz";

    fn parse(rest: &str) -> StorePath<'static> {
        let path: &'static str = format!("/nix/store/{HASH}-{rest}").leak();
        parse_store_path(path).unwrap_or_else(|| panic!("{path} should parse"))
    }

    /// (name, version, output) of the store path `/nix/store/<HASH>-<rest>`.
    fn parts(rest: &str) -> (&'static str, Option<&'static str>, Option<&'static str>) {
        let p = parse(rest);
        (p.name, p.version, p.output)
    }

    #[test]
    fn hashes_are_elided_only_from_store_paths() {
        let path = format!("/nix/store/{HASH}-hello-2.12.1/bin/hello");
        assert_eq!(without_hash(&path), "/nix/store/…-hello-2.12.1/bin/hello");
        assert_eq!(without_hash("/usr/bin/hello"), "/usr/bin/hello");
        assert_eq!(without_hash("/nix/store/short-hello"), "/nix/store/short-hello");
    }

    #[test]
    fn splits_a_library_path() {
        let p = parse("glibc-2.39-52/lib/libc.so.6");
        assert_eq!(p.store_path, format!("/nix/store/{HASH}-glibc-2.39-52"));
        assert_eq!(p.hash, HASH);
        assert_eq!((p.name, p.version, p.output), ("glibc", Some("2.39-52"), None));
    }

    #[test]
    fn splits_output_suffixes_off_the_version() {
        assert_eq!(parts("gcc-13.3.0-lib/lib/libstdc++.so.6"), ("gcc", Some("13.3.0"), Some("lib")));
        assert_eq!(
            parts("util-linux-minimal-2.39.4-lib"),
            ("util-linux-minimal", Some("2.39.4"), Some("lib"))
        );
        assert_eq!(parts("openssl-3.0.14-bin/bin/openssl"), ("openssl", Some("3.0.14"), Some("bin")));
        assert_eq!(parts("openssl-3.0.14"), ("openssl", Some("3.0.14"), None));
        assert_eq!(parts("linux-6.6.63-modules"), ("linux", Some("6.6.63"), Some("modules")));
    }

    #[test]
    fn splits_common_package_shapes() {
        assert_eq!(parts("python3-3.12.4/bin/python3.12"), ("python3", Some("3.12.4"), None));
        assert_eq!(parts("systemd-256.8/lib/systemd/systemd-udevd"), ("systemd", Some("256.8"), None));
        assert_eq!(parts("hello-2.12.1"), ("hello", Some("2.12.1"), None));
        assert_eq!(parts("perl5.38.2-XML-Parser-2.46"), ("perl5.38.2-XML-Parser", Some("2.46"), None));
        assert_eq!(
            parts("nixos-system-myhost-24.11.20241231.edf04b7"),
            ("nixos-system-myhost", Some("24.11.20241231.edf04b7"), None)
        );
    }

    #[test]
    fn names_without_a_version_stay_whole() {
        let p = parse("source");
        assert_eq!(p.store_path, format!("/nix/store/{HASH}-source"));
        assert_eq!((p.name, p.version, p.output), ("source", None, None));
        assert_eq!(parts("etc/etc/systemd"), ("etc", None, None));
        // An output-like suffix is only an output after a version.
        assert_eq!(parts("hook-data"), ("hook-data", None, None));
        assert_eq!(parts("unit-dbus.service/dbus.service"), ("unit-dbus.service", None, None));
    }

    #[test]
    fn derivations_parse_like_their_package() {
        let p = parse("hello-2.12.1.drv");
        assert_eq!((p.name, p.version, p.output), ("hello", Some("2.12.1"), None));
        assert!(p.store_path.ends_with("-hello-2.12.1.drv"));
        assert_eq!(parts("builder.sh.drv"), ("builder.sh", None, None));
    }

    #[test]
    fn rejects_paths_outside_the_store() {
        assert_eq!(parse_store_path("/usr/lib/libc.so.6"), None);
        assert_eq!(parse_store_path(&format!("nix/store/{HASH}-hello-2.12.1")), None);
        assert_eq!(parse_store_path("/nix/var/nix/db"), None);
        assert_eq!(parse_store_path(""), None);
    }

    #[test]
    fn rejects_malformed_hashes_and_names() {
        assert_eq!(parse_store_path("/nix/store/tooshort-foo"), None);
        assert_eq!(parse_store_path("/nix/store/0123456789ABCDFGHIJKLMNPQRSVWXYZ-x"), None);
        assert_eq!(parse_store_path("/nix/store/0123456789abcdfghijklmnpqrsvwxye-x"), None);
        assert_eq!(parse_store_path(&format!("/nix/store/{HASH}")), None);
        assert_eq!(parse_store_path(&format!("/nix/store/{HASH}-")), None);
        assert_eq!(parse_store_path(&format!("/nix/store/{HASH}x-foo")), None);
        assert_eq!(parse_store_path(&format!("/nix/store/{HASH}-has space")), None);
        assert_eq!(parse_store_path("/nix/store/.links/0123456789abcdfghijklmnpqrsvwxyz"), None);
        // Multi-byte characters where the hash should end must not panic.
        assert_eq!(parse_store_path("/nix/store/0123456789abcdfghijklmnpqrsvwxyé-x"), None);
    }
}
