//! startup-cache: a program that rebuilds a cache at every start, or keeps
//! it where it should not. From each exec's cache files (its opens): Python
//! bytecode looked for, missing, and never written, or found stale and not
//! writable (so every start compiles those modules again); a file whose path says cache, looked for in vain
//! and then written, by several execs of one program or in a place that
//! does not survive a reboot, or that cannot be written; and a cache
//! created in a dot-entry of a home directory instead of under
//! `$XDG_CACHE_HOME`.

use std::collections::BTreeMap;

use serde_json::json;

use super::{
    Confidence, Fix, FixKind, Level, Recommendation, Rule, Saving, Settings, Subject, SubjectKind, Threshold,
    interpreter_search::Searcher, shell_quote,
};
use crate::{
    analysis::{
        Analysis,
        package::Package,
        process::{CacheFigures, CacheOutcomeName},
    },
    human::count,
    model::{
        cache::is_home_dot_cache,
        path::{bytecode_source, home_dot_entry},
    },
    saturating::SaturatingSum as _,
    trace::event::text,
};

pub const RULE: Rule = Rule {
    id: "startup-cache",
    title: "Caches rebuilt at every start, or kept outside $XDG_CACHE_HOME",
    description: "A program looked for a cache file, did not find it, and built it again: Python \
        bytecode that is never written (a read-only place such as the Nix store, or \
        PYTHONDONTWRITEBYTECODE) or that is stale where it cannot be written again, a cache rebuilt by several runs of one program or kept where it \
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
    // binary -> every exec's cache files, an exec's list each (empty ones
    // too: they count among the binary's execs).
    let mut by_binary: BTreeMap<&str, Vec<&[CacheFigures]>> = BTreeMap::new();
    for exec in analysis.processes.iter().flat_map(|p| &p.execs) {
        by_binary.entry(exec.filename.as_str()).or_default().push(&exec.caches);
    }
    let min_rebuilds = settings.get(&RULE, "min_rebuilds");
    let mut found = Vec::new();
    for (binary, execs) in by_binary {
        let files = || execs.iter().flat_map(|caches| caches.iter());
        let bytecode: Vec<&CacheFigures> = files().filter(|c| is_unwritten_bytecode(c)).collect();
        found.extend(bytecode_recommendation(binary, &bytecode));
        // Rebuilt caches: not bytecode (written bytecode is Python's
        // cache working), and only what its name says is a cache (a pid or
        // lock file in /run is also looked for and then created at every
        // boot). Per path, the execs that rebuilt it.
        let mut rebuilt: BTreeMap<&str, Vec<&CacheFigures>> = BTreeMap::new();
        for caches in &execs {
            let mut this_exec: Vec<&CacheFigures> = caches
                .iter()
                .filter(|c| c.missing_ns.is_some() && !c.path.ends_with(".pyc"))
                .filter(|c| {
                    c.path.to_ascii_lowercase().contains("cache") && !is_home_dot_cache(c.path.as_bytes())
                })
                .collect();
            this_exec.dedup_by(|a, b| a.path == b.path);
            for c in this_exec {
                rebuilt.entry(c.path.as_str()).or_default().push(c);
            }
        }
        for (path, rebuilds) in rebuilt {
            let unwritable = rebuilds.iter().any(|c| c.outcome == CacheOutcomeName::NotWritable);
            let volatile = VOLATILE.iter().any(|v| path.starts_with(v));
            if unwritable || volatile || rebuilds.len() as f64 >= min_rebuilds {
                found.push(rebuilt_recommendation(binary, path, &rebuilds, execs.len() as u64, volatile));
            }
        }
        let mut home_entries: Vec<(String, String)> = files()
            .filter(|c| c.outcome == CacheOutcomeName::Created && is_home_dot_cache(c.path.as_bytes()))
            .filter_map(|c| home_dot_entry(c.path.as_bytes()).map(|(home, entry)| (text(home), text(entry))))
            .collect();
        home_entries.sort_unstable();
        home_entries.dedup();
        found.extend(home_entries.iter().map(|(home, entry)| home_recommendation(binary, home, entry)));
    }
    found
}

/// Bytecode looked for and not written: missing, or a create that failed
/// (of missing bytecode, or of stale bytecode found first).
fn is_unwritten_bytecode(c: &CacheFigures) -> bool {
    c.path.ends_with(".pyc") && c.outcome != CacheOutcomeName::Created
}

/// The modules whose bytecode was not there, or stale; None when no
/// bytecode of a known source was.
fn bytecode_recommendation(binary: &str, bytecode: &[&CacheFigures]) -> Option<Recommendation> {
    // (bytecode, its source), for the bytecode whose source is known.
    let mut modules: Vec<Module> = bytecode
        .iter()
        .filter_map(|c| Some((c.path.as_str(), text(&bytecode_source(c.path.as_bytes())?))))
        .collect();
    modules.sort_unstable();
    modules.dedup();
    if modules.is_empty() {
        return None;
    }
    let mut stale: Vec<&str> =
        bytecode.iter().filter(|c| c.found_ns.is_some()).map(|c| c.path.as_str()).collect();
    stale.sort_unstable();
    stale.dedup();
    let gap_ns = bytecode.iter().map(|c| c.gap_ns).saturating_sum();
    // 0: the exec opened nothing after the module's source, so where its
    // compile ended is not known.
    let unknown = bytecode.iter().filter(|c| c.gap_ns == 0).count() as u64;
    let evidence = json!({
        "binary": binary,
        "modules": modules.len(),
        "lookups": bytecode.len(),
        "compile_ns": gap_ns,
        "bytecode": modules.iter().take(LISTED).map(|(pyc, _)| pyc).collect::<Vec<_>>(),
        "stale": stale.len(),
        "errnos": bytecode.iter().filter_map(|c| c.errno.clone()).collect::<std::collections::BTreeSet<_>>(),
    });
    let name = binary.rsplit('/').next().unwrap_or(binary);
    Some(Recommendation {
        rule: RULE.id,
        title: format!(
            "{name} compiled {} from source: {}",
            count(modules.len() as u64, "module", "modules"),
            match (stale.len(), modules.len()) {
                (0, 1) => "its bytecode is not there".to_string(),
                (0, _) => "their bytecode is not there".to_string(),
                (1, 1) => "its bytecode is stale, and cannot be written again".to_string(),
                (s, m) if s == m => "their bytecode is stale, and cannot be written again".to_string(),
                (s, m) => format!("{} without bytecode, {s} with stale bytecode", m.saturating_sub(s)),
            }
        ),
        subjects: vec![Subject { kind: SubjectKind::Binary, name: binary.to_string() }],
        evidence,
        saving: Saving {
            time_ns: (unknown < bytecode.len() as u64).then_some(gap_ns),
            bytes: None,
            how: format!(
                "from each failed bytecode lookup to the program's next open after reading the module's source \
                 (the compile, and the module's own code up to its next import, so at most this), and from each \
                 stale bytecode's open to the failed write of the new one (its compile){}",
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
                "the trace saw each bytecode lookup fail, or stale bytecode found and its new bytecode's \
                     write fail, and no bytecode written; the time is an upper bound"
                    .into(),
        },
        fix: bytecode_fix(binary, &modules),
    })
}

/// A module without usable bytecode: (the bytecode's path, its source's).
type Module<'a> = (&'a str, String);

fn bytecode_fix(binary: &str, modules: &[Module]) -> Fix {
    let (in_store, local): (Vec<&Module>, Vec<&Module>) =
        modules.iter().partition(|(_, source)| Package::of(source).is_some());
    let mut packages: Vec<String> =
        in_store.iter().filter_map(|(_, source)| Package::of(source)).map(|p| p.store_path).collect();
    packages.sort_unstable();
    packages.dedup();
    if local.is_empty() {
        return Fix {
            kind: FixKind::NixExpression,
            text: format!(
                "# These store paths have Python modules without usable bytecode (missing, or stale):\n{}\n\
                 # compile it when each is built (an overlay's overrideAttrs on its derivation);\n\
                 # bytecode that records no mtime, since Nix resets every store file's after the build:\n\
                 postFixup = (old.postFixup or \"\") + ''\n  \
                   ${{python3.interpreter}} -m compileall -q --invalidation-mode unchecked-hash $out\n\
                 '';",
                packages.iter().map(|p| format!("#   {p}")).collect::<Vec<_>>().join("\n")
            ),
            revert: "Remove the override: the package is built without the bytecode again.".into(),
            risk: Some("The bytecode must come from the Python that runs it (its version tag is in the file name); build with the same python3.".into()),
        };
    }
    // The exec's file is the interpreter itself, or a script it runs.
    let name = binary.rsplit('/').next().unwrap_or(binary);
    let python = if Searcher::of(binary) == Some(Searcher::Python) { binary } else { "python3" };
    let sources: Vec<String> = local.iter().map(|(_, source)| shell_quote(source)).collect();
    let bytecode: Vec<String> = local.iter().map(|(pyc, _)| shell_quote(pyc)).collect();
    let mut caches: Vec<&str> =
        local.iter().filter_map(|(pyc, _)| pyc.rsplit_once('/').map(|(dir, _)| dir)).collect();
    caches.sort_unstable();
    caches.dedup();
    let store_note = if packages.is_empty() {
        String::new()
    } else {
        format!(
            "\n# Modules in the store lack usable bytecode too; compile them when these are built:\n{}",
            packages.iter().map(|p| format!("#   {p}")).collect::<Vec<_>>().join("\n")
        )
    };
    let caches: Vec<String> = caches.iter().map(|dir| shell_quote(dir)).collect();
    Fix {
        kind: FixKind::Command,
        text: format!("{} -m compileall -q {}{store_note}", shell_quote(python), sources.join(" ")),
        revert: format!(
            "rm -f {} && rmdir --ignore-fail-on-non-empty {}",
            bytecode.join(" "),
            caches.join(" ")
        ),
        risk: Some(format!(
            "{}Bytecode written now goes stale if a source changes without its mtime changing (Python compares it); rerun the command after an update.",
            if python == binary {
                String::new()
            } else {
                format!("Use the Python that runs {name}, whose version tag the bytecode names. ")
            }
        )),
    }
}

fn rebuilt_recommendation(
    binary: &str,
    path: &str,
    rebuilds: &[&CacheFigures],
    execs: u64,
    volatile: bool,
) -> Recommendation {
    let gap_ns = rebuilds.iter().map(|c| c.gap_ns).saturating_sum();
    let unwritable = rebuilds.iter().find_map(|c| c.errno.clone());
    let evidence = json!({
        "binary": binary,
        "path": path,
        "execs": execs,
        "rebuilds": rebuilds.len(),
        "not_writable": unwritable.is_some(),
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
                 NIXTRACE_OLD_XDG_CACHE_HOME=\"${{XDG_CACHE_HOME-}}\"\n\
                 export XDG_CACHE_HOME=\"$HOME/.cache\""
            ),
            // An empty XDG_CACHE_HOME means the default, as an unset one.
            revert: "export XDG_CACHE_HOME=\"$NIXTRACE_OLD_XDG_CACHE_HOME\"".into(),
            risk: Some("A program that does not read XDG_CACHE_HOME keeps its cache where it was; then only its own option helps.".into()),
        },
    }
}

fn home_recommendation(binary: &str, home: &str, entry: &str) -> Recommendation {
    let path = format!("{home}/{entry}");
    let target = format!("{home}/.cache/{}", entry.trim_start_matches('.'));
    let (dot, moved) = (shell_quote(&path), shell_quote(&target));
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
                 mkdir -p {} && mv {dot} {moved} && ln -s {moved} {dot}",
                shell_quote(&format!("{home}/.cache")),
            ),
            revert: format!("rm {dot} && mv {moved} {dot}"),
            risk: Some("A program that replaces the cache by renaming a new file over it turns the link back into a plain file.".into()),
        },
    }
}
