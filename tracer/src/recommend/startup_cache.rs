//! startup-cache: a program that rebuilds a cache at every start, or keeps
//! it where it should not. From each exec's cache files (its opens): Python
//! bytecode looked for, missing, and never written (so every start compiles
//! those modules again); a file whose path says cache, looked for in vain
//! and then written, by several execs of one program or in a place that
//! does not survive a reboot, or that cannot be written; and a cache
//! created in a dot-entry of a home directory instead of under
//! `$XDG_CACHE_HOME`.

use std::collections::BTreeMap;

use serde_json::json;

use super::{
    Confidence, Fix, FixKind, Level, Recommendation, Rule, Saving, Settings, Subject, SubjectKind, Threshold,
    shell_quote,
};
use crate::{
    analysis::{
        Analysis,
        package::Package,
        process::{CacheFigures, CacheOutcomeName},
    },
    human::count,
    model::cache::is_home_dot_cache,
};

pub const RULE: Rule = Rule {
    id: "startup-cache",
    title: "Caches rebuilt at every start, or kept outside $XDG_CACHE_HOME",
    description: "A program looked for a cache file, did not find it, and built it again: Python \
        bytecode that is never written (a read-only place such as the Nix store, or \
        PYTHONDONTWRITEBYTECODE), a cache rebuilt by several runs of one program or kept where it \
        does not survive a reboot, or one it cannot write at all. Also a cache kept in a dot-entry of \
        a home directory rather than under $XDG_CACHE_HOME. The fix builds the cache ahead of time \
        or points it somewhere it lasts.",
    thresholds: &[Threshold {
        name: "min_rebuilds",
        default: 2.0,
        help: "execs of one program that rebuilt the same cache file before it is worth saying \
               (a cache in /tmp, /run or /dev/shm counts from one)",
    }],
    check,
};

/// How many files the evidence lists.
const LISTED: usize = 10;

/// Places whose files do not survive a reboot.
const VOLATILE: [&str; 3] = ["/tmp/", "/run/", "/dev/shm/"];

fn check(analysis: &Analysis, settings: &Settings) -> Vec<Recommendation> {
    // binary -> its execs' cache files, each exec's list once.
    let mut by_binary: BTreeMap<&str, Vec<&[CacheFigures]>> = BTreeMap::new();
    for exec in analysis.processes.iter().flat_map(|p| &p.execs) {
        if !exec.caches.is_empty() {
            by_binary.entry(exec.filename.as_str()).or_default().push(&exec.caches);
        }
    }
    let min_rebuilds = settings.get(&RULE, "min_rebuilds");
    let mut found = Vec::new();
    for (binary, execs) in by_binary {
        let files = || execs.iter().flat_map(|caches| caches.iter());
        let bytecode: Vec<&CacheFigures> = files().filter(|c| is_unwritten_bytecode(c)).collect();
        if !bytecode.is_empty() {
            found.push(bytecode_recommendation(binary, &bytecode));
        }
        let mut rebuilt: BTreeMap<&str, Vec<&CacheFigures>> = BTreeMap::new();
        let rebuilds = files().filter(|c| c.missing_ns.is_some() && !is_unwritten_bytecode(c));
        // Only what its name says is a cache: a pid or lock file in /run is
        // also looked for and then created at every boot.
        let caches = rebuilds.filter(|c| c.path.to_ascii_lowercase().contains("cache"));
        for c in caches.filter(|c| !is_home_dot_cache(c.path.as_bytes())) {
            rebuilt.entry(c.path.as_str()).or_default().push(c);
        }
        for (path, rebuilds) in rebuilt {
            let unwritable = rebuilds.iter().any(|c| c.outcome == CacheOutcomeName::NotWritable);
            let volatile = VOLATILE.iter().any(|v| path.starts_with(v));
            if unwritable || volatile || rebuilds.len() as f64 >= min_rebuilds {
                found.push(rebuilt_recommendation(binary, path, &rebuilds, execs.len() as u64, volatile));
            }
        }
        let mut home_entries: Vec<(&str, &str)> = files()
            .filter(|c| c.outcome == CacheOutcomeName::Created && is_home_dot_cache(c.path.as_bytes()))
            .filter_map(|c| split_home(&c.path))
            .collect();
        home_entries.sort_unstable();
        home_entries.dedup();
        found.extend(home_entries.into_iter().map(|(home, entry)| home_recommendation(binary, home, entry)));
    }
    found
}

/// Bytecode looked for and not written: missing, or a create that failed.
fn is_unwritten_bytecode(c: &CacheFigures) -> bool {
    c.path.ends_with(".pyc") && c.outcome != CacheOutcomeName::Created
}

/// `DIR/__pycache__/NAME.TAG.pyc` -> `DIR/NAME.py`.
fn source_of(bytecode: &str) -> Option<String> {
    let (cache_dir, name) = bytecode.rsplit_once('/')?;
    let dir = cache_dir.strip_suffix("/__pycache__")?;
    Some(format!("{dir}/{}.py", name.split('.').next()?))
}

fn bytecode_recommendation(binary: &str, bytecode: &[&CacheFigures]) -> Recommendation {
    let mut paths: Vec<&str> = bytecode.iter().map(|c| c.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    let sources: Vec<String> = paths.iter().filter_map(|p| source_of(p)).collect();
    let gap_ns: u64 = bytecode.iter().map(|c| c.gap_ns).sum();
    // 0: the exec opened nothing after the module's source, so where its
    // compile ended is not known.
    let unknown = bytecode.iter().filter(|c| c.gap_ns == 0).count() as u64;
    let evidence = json!({
        "binary": binary,
        "modules": paths.len(),
        "lookups": bytecode.len(),
        "compile_ns": gap_ns,
        "bytecode": paths.iter().take(LISTED).collect::<Vec<_>>(),
        "errnos": bytecode.iter().filter_map(|c| c.errno.clone()).collect::<std::collections::BTreeSet<_>>(),
    });
    let name = binary.rsplit('/').next().unwrap_or(binary);
    let store: Vec<Package> = sources.iter().filter_map(|s| Package::of(s)).collect();
    let fix = if let Some(package) = store.first() {
        Fix {
            kind: FixKind::NixExpression,
            text: format!(
                "# {} has Python modules without bytecode; compile them when it is built\n\
                 # (an overlay's overrideAttrs on its derivation):\n\
                 postFixup = (old.postFixup or \"\") + ''\n  \
                   ${{python3.interpreter}} -m compileall -q $out\n\
                 '';",
                package.store_path
            ),
            revert: "Remove the override: the package is built without the bytecode again.".into(),
            risk: Some("The bytecode must come from the Python that runs it (its version tag is in the file name); build with the same python3.".into()),
        }
    } else {
        let quoted: Vec<String> = sources.iter().map(|s| shell_quote(s)).collect();
        let pyc: Vec<String> = paths.iter().map(|p| shell_quote(p)).collect();
        Fix {
            kind: FixKind::Command,
            text: format!("{} -m compileall -q {}", shell_quote(binary), quoted.join(" ")),
            revert: format!("rm -f {}", pyc.join(" ")),
            risk: Some("Bytecode written now goes stale if the sources change without their mtime changing (Python compares it); rerun the command after an update.".into()),
        }
    };
    Recommendation {
        rule: RULE.id,
        title: format!(
            "{name} compiled {} from source: {} not there",
            count(paths.len() as u64, "module", "modules"),
            if paths.len() == 1 { "its bytecode is" } else { "their bytecode is" }
        ),
        subjects: vec![Subject { kind: SubjectKind::Binary, name: binary.to_string() }],
        evidence,
        saving: Saving {
            time_ns: (unknown < bytecode.len() as u64).then_some(gap_ns),
            bytes: None,
            how: format!(
                "from each failed bytecode lookup to the program's next open after reading the module's source: \
                 the compile, and the module's own code up to its next import, so at most this{}",
                match unknown {
                    0 => String::new(),
                    n => format!(
                        "; not known for {} after which nothing was opened",
                        count(n, "lookup", "lookups")
                    ),
                }
            ),
        },
        confidence: Confidence {
            level: Level::Medium,
            reason:
                "the trace saw each bytecode lookup fail and no bytecode written; the time is an upper bound"
                    .into(),
        },
        fix,
    }
}

fn rebuilt_recommendation(
    binary: &str,
    path: &str,
    rebuilds: &[&CacheFigures],
    execs: u64,
    volatile: bool,
) -> Recommendation {
    let gap_ns: u64 = rebuilds.iter().map(|c| c.gap_ns).sum();
    let unwritable = rebuilds.iter().find_map(|c| c.errno.clone());
    let evidence = json!({
        "binary": binary,
        "path": path,
        "execs": execs,
        "rebuilds": rebuilds.len(),
        "written_as": rebuilds.iter().filter_map(|c| c.written_as.clone()).take(LISTED).collect::<Vec<_>>(),
        "errno": unwritable,
        "rebuild_ns": gap_ns,
        "volatile": volatile,
    });
    let name = binary.rsplit('/').next().unwrap_or(binary);
    let why = match (&unwritable, volatile) {
        (Some(errno), _) => format!("it cannot write it ({errno})"),
        (None, true) => "it keeps it where a reboot removes it".to_string(),
        (None, false) => format!("{} of {} rebuilt it", count(rebuilds.len() as u64, "exec", "execs"), execs),
    };
    Recommendation {
        rule: RULE.id,
        title: format!("{name} rebuilds its cache {path} at start: {why}"),
        subjects: vec![Subject { kind: SubjectKind::Binary, name: binary.to_string() }],
        evidence,
        saving: Saving {
            time_ns: Some(gap_ns),
            bytes: None,
            how: format!(
                "from each failed lookup of the cache to its write, over {}",
                count(rebuilds.len() as u64, "rebuild", "rebuilds")
            ),
        },
        confidence: Confidence {
            level: if unwritable.is_some() || rebuilds.len() > 1 { Level::High } else { Level::Medium },
            reason: "the trace saw the cache looked for in vain and then written (or its write fail); what the program computed between the two is not known".into(),
        },
        fix: Fix {
            kind: FixKind::Environment,
            text: format!(
                "# Give {name} a cache directory that lasts and that it can write: its own cache option if\n\
                 # it has one, or the XDG one, where the program honours it:\n\
                 export XDG_CACHE_HOME=\"$HOME/.cache\"\n\
                 mkdir -p \"$XDG_CACHE_HOME\""
            ),
            revert: "unset XDG_CACHE_HOME (or set it back to its old value)".into(),
            risk: Some("A program that does not read XDG_CACHE_HOME keeps its cache where it was; then only its own option helps.".into()),
        },
    }
}

fn home_recommendation(binary: &str, home: &str, entry: &str) -> Recommendation {
    let path = format!("{home}/{entry}");
    let target = format!("{home}/.cache/{}", entry.trim_start_matches('.'));
    let name = binary.rsplit('/').next().unwrap_or(binary);
    Recommendation {
        rule: RULE.id,
        title: format!("{name} keeps a cache in {path}, outside $XDG_CACHE_HOME"),
        subjects: vec![Subject { kind: SubjectKind::Binary, name: binary.to_string() }],
        evidence: json!({ "binary": binary, "path": path }),
        saving: Saving {
            time_ns: None,
            bytes: None,
            how: "none at start: a cache under ~/.cache is one a user can clear, exclude from backups or put on a faster disk as a whole".into(),
        },
        confidence: Confidence {
            level: Level::Medium,
            reason: "the file was created in a home directory's dot-entry whose name says cache".into(),
        },
        fix: Fix {
            kind: FixKind::Command,
            text: format!(
                "# With {name}'s own cache option, if it has one, point it at {target}; otherwise move it and leave a link:\n\
                 mkdir -p {} && mv {} {} && ln -s {} {}",
                shell_quote(&format!("{home}/.cache")),
                shell_quote(&format!("{home}/{entry}")),
                shell_quote(&target),
                shell_quote(&target),
                shell_quote(&format!("{home}/{entry}")),
            ),
            revert: format!(
                "rm {} && mv {} {}",
                shell_quote(&format!("{home}/{entry}")),
                shell_quote(&target),
                shell_quote(&format!("{home}/{entry}"))
            ),
            risk: Some("A program that replaces the cache by renaming a new file over it turns the link back into a plain file.".into()),
        },
    }
}

/// (`/home/USER`, `.entry`) of a path in a home directory's dot-entry.
fn split_home(path: &str) -> Option<(&str, &str)> {
    let home_len = if path.starts_with("/root/") {
        "/root".len()
    } else {
        let user = path.strip_prefix("/home/")?;
        "/home/".len() + user.find('/')?
    };
    let (home, rest) = path.split_at(home_len);
    let entry = rest.trim_start_matches('/').split('/').next()?;
    Some((home, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytecode_names_its_source() {
        assert_eq!(source_of("/w/__pycache__/m.cpython-311.pyc").as_deref(), Some("/w/m.py"));
        assert_eq!(source_of("/w/m.pyc"), None);
    }

    #[test]
    fn home_entries_split() {
        assert_eq!(split_home("/home/ann/.foo-cache/x"), Some(("/home/ann", ".foo-cache")));
        assert_eq!(split_home("/root/.foo-cache"), Some(("/root", ".foo-cache")));
        assert_eq!(split_home("/var/.x"), None);
    }
}
