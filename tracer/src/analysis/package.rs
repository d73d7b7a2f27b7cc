//! Per Nix package: what its programs cost at startup, what was read from
//! its files, and the failed library lookups it *caused*. A lookup that
//! fails in a directory of package P's RUNPATH is charged to P as well as
//! to the binary that suffered it, because the fix belongs to P's build.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{io::FileFigures, process::ProcessFigures};
use crate::{
    model::{binary::BinaryTable, nix::parse_store_path, process::Process},
    trace::event::text,
};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Package {
    pub name: String,
    pub version: Option<String>,
    pub store_path: String,
}

impl Package {
    /// The package of `path`, when it is inside the Nix store.
    pub fn of(path: &str) -> Option<Package> {
        parse_store_path(path).map(|p| Package {
            name: p.name.to_string(),
            version: p.version.map(str::to_string),
            store_path: p.store_path.to_string(),
        })
    }

    /// "python3-3.12.8": the name and the version, as Nix writes them.
    pub fn label(&self) -> String {
        match &self.version {
            Some(version) => format!("{}-{version}", self.name),
            None => self.name.clone(),
        }
    }

    /// Is this the package `wanted` names: its name ("zlib"), its name and
    /// version ("zlib-1.2.13") or its store path?
    pub fn is(&self, wanted: &str) -> bool {
        wanted == self.name || wanted == self.label() || wanted == self.store_path
    }
}

/// One store path's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PackageFigures {
    /// Its name, version and store path, as fields of this object.
    #[serde(flatten)]
    pub package: Package,
    /// Processes whose program is in the package, and their execs of it.
    pub processes: u64,
    pub execs: u64,
    /// The dynamic loader's time for those execs (`loader.total_ns`).
    pub loader_ns: u64,
    /// Failed lookups those execs suffered (wherever they failed).
    pub failed_lookups: u64,
    /// Failed lookups, in any exec, in directories this package's RUNPATH
    /// (or RPATH) put in the search.
    pub failed_lookups_caused: u64,
    /// Read from disk from its files.
    pub disk_read_bytes: u64,
    /// Mapped executable from its libraries by the loader.
    pub mapped_bytes: u64,
}

/// The packages of `processes` (each with its model process) and `files`,
/// most loader time first.
pub fn packages<'a>(
    processes: impl Iterator<Item = (&'a ProcessFigures, &'a Process)>,
    files: &[FileFigures],
    recorded: &BinaryTable,
) -> Vec<PackageFigures> {
    let mut packages: BTreeMap<String, PackageFigures> = BTreeMap::new();
    for (figures, process) in processes {
        if let Some(package) = &figures.package {
            let p = entry(&mut packages, package);
            p.processes += 1;
            p.failed_lookups = p.failed_lookups.saturating_add(figures.failed_lookups());
            p.loader_ns = p.loader_ns.saturating_add(figures.loader.as_ref().map_or(0, |l| l.total_ns));
        }
        for exec in &process.execs {
            let filename = text(&exec.filename);
            if let Some(package) = Package::of(&filename) {
                entry(&mut packages, &package).execs += 1;
            }
            let Some(run) = &exec.loader else { continue };
            for library in &run.libraries {
                let path = text(&library.mapped_path);
                if let Some(package) = Package::of(&path).or_else(|| Package::of(&text(&library.path))) {
                    let p = entry(&mut packages, &package);
                    p.mapped_bytes = p.mapped_bytes.saturating_add(library.exec_bytes);
                }
            }
            // The objects whose search paths the loader walked: the program,
            // then its libraries in load order.
            let searchers: Vec<(String, Vec<String>)> = std::iter::once((filename, exec.dev, exec.ino))
                .chain(run.libraries.iter().map(|l| (text(&l.path), l.dev, l.ino)))
                .filter_map(|(path, dev, ino)| {
                    let facts = &recorded.get(dev, ino)?.facts;
                    let dirs =
                        facts.runpath.iter().chain(&facts.rpath).map(|d| expand_origin(d, &path)).collect();
                    Some((path, dirs))
                })
                .collect();
            for ((dir, _), failed) in &run.lookups {
                let dir = text(dir);
                let culprit = searchers.iter().find(|(_, dirs)| dirs.iter().any(|d| searched_for(&dir, d)));
                if let Some(package) = culprit.and_then(|(path, _)| Package::of(path)) {
                    let p = entry(&mut packages, &package);
                    p.failed_lookups_caused = p.failed_lookups_caused.saturating_add(failed.count);
                }
            }
        }
    }
    for file in files {
        if let Some(package) = &file.package {
            let p = entry(&mut packages, package);
            p.disk_read_bytes = p.disk_read_bytes.saturating_add(file.disk_read_bytes);
        }
    }
    let mut packages: Vec<PackageFigures> = packages.into_values().collect();
    packages.sort_by(|a, b| {
        (b.loader_ns, b.failed_lookups_caused, b.disk_read_bytes)
            .cmp(&(a.loader_ns, a.failed_lookups_caused, a.disk_read_bytes))
            .then_with(|| a.package.store_path.cmp(&b.package.store_path))
    });
    packages
}

fn entry<'a>(
    packages: &'a mut BTreeMap<String, PackageFigures>,
    package: &Package,
) -> &'a mut PackageFigures {
    packages
        .entry(package.store_path.clone())
        .or_insert_with(|| PackageFigures { package: package.clone(), ..PackageFigures::default() })
}

/// A RUNPATH entry as the loader reads it: `$ORIGIN` (or `${ORIGIN}`) is
/// the directory of the object that holds it; trailing slashes go.
fn expand_origin(entry: &str, object: &str) -> String {
    let origin = object.rsplit_once('/').map_or(".", |(dir, _)| if dir.is_empty() { "/" } else { dir });
    let expanded = entry.replace("${ORIGIN}", origin).replace("$ORIGIN", origin);
    let trimmed = expanded.trim_end_matches('/');
    if trimmed.is_empty() { expanded } else { trimmed.to_string() }
}

/// Did the loader probe `dir` because `entry` was in a search path? It
/// probes the entry itself and, before it, the entry's `glibc-hwcaps/*`
/// subdirectories (and, in older glibcs, `tls/` and platform ones).
fn searched_for(dir: &str, entry: &str) -> bool {
    dir == entry || dir.strip_prefix(entry).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_expands_to_the_objects_directory() {
        let object = "/nix/store/aaaa-foo-1.0/bin/foo";
        assert_eq!(expand_origin("$ORIGIN/../lib", object), "/nix/store/aaaa-foo-1.0/bin/../lib");
        assert_eq!(expand_origin("${ORIGIN}", object), "/nix/store/aaaa-foo-1.0/bin");
        assert_eq!(expand_origin("/nix/store/bbbb-zlib-1.3/lib/", object), "/nix/store/bbbb-zlib-1.3/lib");
        assert_eq!(expand_origin("/", object), "/");
    }

    #[test]
    fn hwcaps_subdirectories_belong_to_their_entry() {
        let entry = "/nix/store/bbbb-zlib-1.3/lib";
        assert!(searched_for(entry, entry));
        assert!(searched_for("/nix/store/bbbb-zlib-1.3/lib/glibc-hwcaps/x86-64-v3", entry));
        assert!(!searched_for("/nix/store/bbbb-zlib-1.3/lib64", entry));
        assert!(!searched_for("/nix/store/bbbb-zlib-1.3", entry));
    }

    #[test]
    fn packages_are_named_by_name_label_or_store_path() {
        let p = Package::of("/nix/store/0c7c6j8sc0rpkx1rj9h34s8a3kfqmw2i-zlib-1.2.13/lib/libz.so.1").unwrap();
        assert!(
            p.is("zlib")
                && p.is("zlib-1.2.13")
                && p.is("/nix/store/0c7c6j8sc0rpkx1rj9h34s8a3kfqmw2i-zlib-1.2.13")
        );
        assert!(!p.is("zlib-1.3") && !p.is("libz"));
    }
}
