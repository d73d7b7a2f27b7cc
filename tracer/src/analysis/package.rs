//! Per Nix package: what its programs cost at startup, what was read from
//! its files, and the failed library lookups it *caused*. A lookup that
//! fails in a directory of package P's RUNPATH is charged to P as well as
//! to the binary that suffered it, because the fix belongs to P's build.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{io::FileFigures, process::ProcessFigures};
use crate::{
    model::{closure::ClosureGraph, nix::parse_store_path, process::Process},
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
    /// Its deriver (`.drv`) and direct references, from the store's graph
    /// the trace carries (null and empty without one).
    pub deriver: Option<String>,
    pub references: Vec<String>,
}

/// The packages of `processes` (each with its model process) and `files`,
/// most loader time first.
pub fn packages<'a>(
    processes: impl Iterator<Item = (&'a ProcessFigures, &'a Process)>,
    files: &[FileFigures],
    graph: &ClosureGraph,
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
        }
        for failed in figures.loader.iter().flat_map(|l| &l.failed) {
            if let Some(package) = failed.searcher.as_deref().and_then(Package::of) {
                let p = entry(&mut packages, &package);
                p.failed_lookups_caused = p.failed_lookups_caused.saturating_add(failed.count);
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
    for p in &mut packages {
        p.deriver = graph.deriver(&p.package.store_path).map(str::to_string);
        p.references = graph.references(&p.package.store_path).unwrap_or_default().to_vec();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::analysis::process::{expand_origin, searched_for};

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
