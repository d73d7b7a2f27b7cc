//! library-search: a binary's RUNPATH (or RPATH) sends the dynamic loader
//! to directories that hold none of the libraries it loads. The fix is the
//! same search path without them, in the same order, so every library the
//! trace saw loaded (at startup or by `dlopen` later) is still found where
//! it was.

use std::collections::BTreeMap;

use serde_json::json;

use super::{
    Confidence, Fix, FixKind, Level, Recommendation, Rule, Saving, Settings, Subject, SubjectKind,
    shell_quote,
};
use crate::{
    analysis::{
        Analysis, BinaryFigures,
        package::Package,
        process::{expand_origin, searched_for},
    },
    human::{count, duration},
};

pub const RULE: Rule = Rule {
    id: "library-search",
    title: "RUNPATH entries the dynamic loader searches in vain",
    description: "A binary's RUNPATH (or RPATH) lists directories that held none of the libraries it \
        loaded, at startup or by dlopen, yet the loader looked in them (and their glibc-hwcaps \
        subdirectories) for every library it searched for. The fix keeps the entries that held a \
        library, in their order, so each library is found where it was, and drops the rest.",
    thresholds: &[Threshold {
        name: "min_failed_lookups",
        default: 1.0,
        help: "failed lookups in the entries to drop, over all execs of the binary, before it is worth saying",
    }],
    check,
};

use super::Threshold;

/// Directories drivers are `dlopen`ed from on NixOS; kept even when the
/// trace saw nothing loaded from them.
const DLOPEN_HINTS: &[&str] = &["/run/opengl-driver/lib", "/run/opengl-driver-32/lib"];

/// What the execs of one binary did in its search path.
#[derive(Default)]
struct Searches<'a> {
    execs: u64,
    /// Paths of every library loaded, at startup or later.
    loaded: Vec<&'a str>,
    /// Failed lookups its own search path caused: (directory, count, ns).
    failed: Vec<(&'a str, u64, u64)>,
}

fn check(analysis: &Analysis, settings: &Settings) -> Vec<Recommendation> {
    let mut by_binary: BTreeMap<&str, Searches> = BTreeMap::new();
    for process in &analysis.processes {
        let (Some(exe), Some(loader)) = (process.exe.as_deref(), process.loader.as_ref()) else { continue };
        let searches = by_binary.entry(exe).or_default();
        searches.execs += process.execs.iter().filter(|e| e.filename == exe).count() as u64;
        searches.loaded.extend(loader.libraries.iter().map(|l| l.path.as_str()));
        searches.loaded.extend(loader.dlopened.iter().map(String::as_str));
        searches.failed.extend(
            loader
                .failed
                .iter()
                .filter(|f| f.searcher.as_deref() == Some(exe))
                .map(|f| (f.dir.as_str(), f.count, f.ns)),
        );
    }
    let min_failed = settings.get(&RULE, "min_failed_lookups");
    by_binary
        .into_iter()
        .filter_map(|(exe, searches)| {
            let binary = analysis.binaries.iter().find(|b| b.path == exe && b.error.is_none())?;
            recommendation(analysis, binary, &searches, min_failed)
        })
        .collect()
}

/// One entry of the search path, as written and as the loader reads it.
struct Entry<'a> {
    written: &'a str,
    dir: String,
    useful: bool,
    failed: u64,
    ns: u64,
}

fn recommendation(
    analysis: &Analysis,
    binary: &BinaryFigures,
    searches: &Searches,
    min_failed: f64,
) -> Option<Recommendation> {
    let uses_rpath = binary.runpath.is_empty();
    let written = if uses_rpath { &binary.rpath } else { &binary.runpath };
    let mut entries: Vec<Entry> = written
        .iter()
        .map(|w| {
            let dir = expand_origin(w, &binary.path);
            let useful = DLOPEN_HINTS.contains(&dir.as_str())
                || searches
                    .loaded
                    .iter()
                    .any(|lib| lib.rsplit_once('/').is_some_and(|(d, _)| searched_for(d, &dir)));
            Entry { written: w, dir, useful, failed: 0, ns: 0 }
        })
        .collect();
    for (dir, failed, ns) in &searches.failed {
        if let Some(entry) = entries.iter_mut().find(|e| searched_for(dir, &e.dir)) {
            entry.failed = entry.failed.saturating_add(*failed);
            entry.ns = entry.ns.saturating_add(*ns);
        }
    }
    let (useless, useful): (Vec<&Entry>, Vec<&Entry>) = entries.iter().partition(|e| !e.useful);
    let removed: u64 = useless.iter().map(|e| e.failed).sum();
    let removed_ns: u64 = useless.iter().map(|e| e.ns).sum();
    if useless.is_empty() || (removed as f64) < min_failed.max(1.0) {
        return None;
    }
    let total_failed: u64 = searches.failed.iter().map(|(_, n, _)| n).sum();
    let old = written.join(":");
    let new: Vec<&str> = useful.iter().map(|e| e.written).collect();
    let new = new.join(":");
    let package = Package::of(&binary.path);
    let mut subjects = vec![Subject { kind: SubjectKind::Binary, name: binary.path.clone() }];
    if let Some(package) = &package {
        subjects.push(Subject { kind: SubjectKind::Package, name: package.label() });
    }
    let evidence = json!({
        "binary": binary.path,
        "execs": searches.execs,
        "search_path": if uses_rpath { "rpath" } else { "runpath" },
        "failed_lookups": total_failed,
        "search_ns": searches.failed.iter().map(|(_, _, ns)| ns).sum::<u64>(),
        "removed_failed_lookups": removed,
        "remaining_failed_lookups": total_failed - removed,
        "entries": written,
        "new_entries": useful.iter().map(|e| e.written).collect::<Vec<_>>(),
        "useless_entries": useless.iter().map(|e| json!({
            "entry": e.written,
            "dir": e.dir,
            "package": Package::of(&e.dir).map(|p| p.label()),
            "failed_lookups": e.failed,
            "ns": e.ns,
        })).collect::<Vec<_>>(),
    });
    let lost = analysis.lost_events > 0 || analysis.cut_short.is_some();
    let confidence = Confidence {
        level: if lost { Level::Medium } else { Level::High },
        reason: format!(
            "the trace saw every library {} loaded and where it was found{}; the saving is these failed opens as this trace timed them (a cold dentry cache or NFS makes each cost more, a warm one less)",
            short(&binary.path),
            if lost { ", but it lost events, so a library may be missing from it" } else { "" }
        ),
    };
    let saving = Saving {
        time_ns: Some(removed_ns),
        bytes: None,
        how: format!(
            "the {} in the {} to drop, as this trace timed them, over {}",
            count(removed, "failed open", "failed opens"),
            count(useless.len() as u64, "entry", "entries"),
            count(searches.execs, "exec", "execs")
        ),
    };
    let flag = if uses_rpath { " --force-rpath" } else { "" };
    let fix = match &package {
        Some(package) => nix_fix(binary, package, &new, &old, flag),
        None => Fix {
            kind: FixKind::Command,
            text: format!("patchelf{flag} --set-rpath {} {}", shell_quote(&new), shell_quote(&binary.path)),
            revert: format!("patchelf{flag} --set-rpath {} {}", shell_quote(&old), shell_quote(&binary.path)),
            risk: Some(dlopen_risk()),
        },
    };
    Some(Recommendation {
        rule: RULE.id,
        title: format!(
            "{} searches {} that hold none of its libraries ({} in vain, {})",
            short(&binary.path),
            count(useless.len() as u64, "RUNPATH entry", "RUNPATH entries"),
            count(removed, "lookup", "lookups"),
            duration(removed_ns)
        ),
        subjects,
        evidence,
        saving,
        confidence,
        fix,
    })
}

/// For a program in the Nix store: the same patchelf call in the
/// package's `postFixup`, through an overlay.
fn nix_fix(binary: &BinaryFigures, package: &Package, new: &str, old: &str, flag: &str) -> Fix {
    let relative = binary.path.strip_prefix(&package.store_path).unwrap_or(&binary.path);
    let text = format!(
        "# In an overlay (nixpkgs.overlays = [ (final: prev: {{ ... }}) ]), for the package that builds\n\
         # {store}:\n\
         {name} = prev.{name}.overrideAttrs (old: {{\n  \
           postFixup = (old.postFixup or \"\") + ''\n    \
             patchelf{flag} --set-rpath {new} $out{relative}\n  \
           '';\n\
         }});",
        store = package.store_path,
        name = package.name,
        new = shell_quote(new),
    );
    Fix {
        kind: FixKind::NixExpression,
        text,
        revert: format!(
            "Remove the override (the old {} was {}).",
            if flag.is_empty() { "RUNPATH" } else { "RPATH" },
            shell_quote(old)
        ),
        risk: Some(format!(
            "{} The new entries name this build's store paths: after an update of the libraries the override must follow (`lib.makeLibraryPath [ ... ]` with the same packages does). `patchelf --shrink-rpath` finds the same entries for you, with the same caveat.",
            dlopen_risk()
        )),
    }
}

fn dlopen_risk() -> String {
    "A library the program loads only sometimes with dlopen (a plugin, a driver), and that this trace did not see loaded, would no longer be found if it lives in a dropped entry: record the program's other uses too before applying it.".to_string()
}

/// The last component of a path, for titles.
fn short(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
