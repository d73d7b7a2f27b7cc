//! loader-environment: `LD_LIBRARY_PATH`, `LD_PRELOAD` or `LD_AUDIT` in the
//! environment of execs (set by a wrapper script, `makeWrapper`, a login
//! environment). Every exec below the one that set it pays for it: the
//! loader searches each `LD_LIBRARY_PATH` entry before the program's own
//! RUNPATH, for every library. The fix puts the directories that held
//! libraries into the program's RUNPATH, where only it pays for them.

use std::collections::BTreeMap;

use serde_json::json;

use super::{
    Confidence, Fix, FixKind, Level, Recommendation, Rule, Saving, Settings, Subject, SubjectKind, Threshold,
    shell_quote,
};
use crate::{
    analysis::{Analysis, ProcessFigures, package::Package, process::searched_for},
    human::{count, duration},
};

pub const RULE: Rule = Rule {
    id: "loader-environment",
    title: "LD_LIBRARY_PATH, LD_PRELOAD or LD_AUDIT in execs' environment",
    description: "Execs ran with the dynamic loader's LD_LIBRARY_PATH, LD_PRELOAD or LD_AUDIT set, \
        typically by a wrapper script. The loader searches LD_LIBRARY_PATH before the program's \
        RUNPATH for every library, and the variable reaches every program the wrapped one starts. \
        The fix moves the directories that held libraries into the program's RUNPATH.",
    thresholds: &[Threshold {
        name: "min_execs",
        default: 1.0,
        help: "execs with the variable set before it is worth saying",
    }],
    check,
};

/// The variables this rule looks at.
const VARIABLES: [&str; 3] = ["LD_LIBRARY_PATH", "LD_PRELOAD", "LD_AUDIT"];

/// One binary run with one value of one variable.
#[derive(Default)]
struct Runs<'a> {
    execs: u64,
    processes: Vec<&'a ProcessFigures>,
}

fn check(analysis: &Analysis, settings: &Settings) -> Vec<Recommendation> {
    let mut runs: BTreeMap<(&str, &str, &str), Runs> = BTreeMap::new();
    for process in &analysis.processes {
        for exec in &process.execs {
            for variable in VARIABLES {
                if let Some(value) = exec.loader_env.get(variable) {
                    let entry = runs.entry((variable, value.as_str(), exec.filename.as_str())).or_default();
                    entry.execs += 1;
                    if !entry.processes.iter().any(|p| std::ptr::eq(*p, process)) {
                        entry.processes.push(process);
                    }
                }
            }
        }
    }
    let min_execs = settings.get(&RULE, "min_execs");
    runs.into_iter()
        .filter(|(_, r)| r.execs as f64 >= min_execs)
        .map(|((variable, value, binary), r)| recommendation(analysis, variable, value, binary, &r))
        .collect()
}

fn recommendation(
    analysis: &Analysis,
    variable: &str,
    value: &str,
    binary: &str,
    runs: &Runs,
) -> Recommendation {
    let entries: Vec<&str> = value.split([':', ';']).filter(|e| !e.is_empty()).collect();
    let under_entries = |dir: &str| entries.iter().any(|e| searched_for(dir, e.trim_end_matches('/')));
    let loaders = runs.processes.iter().filter_map(|p| p.loader.as_ref());
    let (mut failed, mut failed_ns) = (0u64, 0u64);
    let mut held: Vec<String> = Vec::new();
    let mut preloaded_ns = 0u64;
    for loader in loaders {
        if variable == "LD_LIBRARY_PATH" {
            for f in loader.failed.iter().filter(|f| f.searcher.is_none() && under_entries(&f.dir)) {
                failed = failed.saturating_add(f.count);
                failed_ns = failed_ns.saturating_add(f.ns);
            }
        }
        for library in &loader.libraries {
            let dir = library.path.rsplit_once('/').map_or("", |(d, _)| d);
            if variable == "LD_LIBRARY_PATH" && under_entries(dir) && !held.iter().any(|h| h == dir) {
                held.push(dir.to_string());
            }
            if variable != "LD_LIBRARY_PATH"
                && entries.iter().any(|e| *e == library.path || library.path.ends_with(&format!("/{e}")))
            {
                preloaded_ns = preloaded_ns.saturating_add(library.load_ns);
            }
        }
    }
    let set_by: Vec<String> = runs
        .processes
        .iter()
        .filter_map(|p| {
            let parent = analysis
                .processes
                .iter()
                .find(|q| Some(q.start_ns) == p.parent_start_ns && q.pid == p.ppid)?;
            let exec = parent.execs.last()?;
            Some(exec.argv.join(" "))
        })
        .take(3)
        .collect();
    let evidence = json!({
        "variable": variable,
        "value": value,
        "binary": binary,
        "execs": runs.execs,
        "set_by": set_by,
        "failed_lookups": failed,
        "failed_lookups_ns": failed_ns,
        "entries_that_held_libraries": held,
        "preloaded_load_ns": preloaded_ns,
    });
    let time_ns = if variable == "LD_LIBRARY_PATH" { failed_ns } else { preloaded_ns };
    let how = if variable == "LD_LIBRARY_PATH" {
        format!(
            "the {} in its entries, as this trace timed them, over {}",
            count(failed, "failed lookup", "failed lookups"),
            count(runs.execs, "exec", "execs")
        )
    } else {
        format!("the time loading what {variable} names, over {}", count(runs.execs, "exec", "execs"))
    };
    let old_runpath = analysis.binaries.iter().find(|b| b.path == binary).map(|b| b.runpath.join(":"));
    let fix = fix(variable, value, binary, &held, old_runpath.as_deref());
    Recommendation {
        rule: RULE.id,
        title: format!(
            "{} ran with {variable} set ({}, {} in vain)",
            binary.rsplit('/').next().unwrap_or(binary),
            count(runs.execs, "exec", "execs"),
            if variable == "LD_LIBRARY_PATH" {
                count(failed, "lookup", "lookups")
            } else {
                duration(preloaded_ns)
            }
        ),
        subjects: vec![Subject { kind: SubjectKind::Binary, name: binary.to_string() }],
        evidence,
        saving: Saving { time_ns: Some(time_ns), bytes: None, how },
        confidence: Confidence {
            level: Level::High,
            reason: format!(
                "the trace recorded {variable} of each exec and every failed lookup and library load{}",
                if analysis.lost_events > 0 { ", though it lost events" } else { "" }
            ),
        },
        fix,
    }
}

fn fix(variable: &str, value: &str, binary: &str, held: &[String], old_runpath: Option<&str>) -> Fix {
    let unset = format!(
        "Stop setting {variable}={} where the program is started (its wrapper or environment)",
        shell_quote(value)
    );
    if variable != "LD_LIBRARY_PATH" || held.is_empty() {
        return Fix {
            kind: FixKind::Environment,
            text: format!("{unset}: `env -u {variable} {}` runs it without.", shell_quote(binary)),
            revert: format!("Set {variable} again."),
            risk: Some(format!(
                "{variable} may be there on purpose (a debugging or compatibility shim); without it the program runs without what it preloads or audits."
            )),
        };
    }
    let dirs = held.join(":");
    match Package::of(binary) {
        Some(package) => Fix {
            kind: FixKind::NixExpression,
            text: format!(
                "# In the derivation that wraps {store} (an overlay's overrideAttrs):\n\
                 # drop `--prefix LD_LIBRARY_PATH : ...` from its makeWrapper call, and add\n\
                 postFixup = (old.postFixup or \"\") + ''\n  \
                   patchelf --add-rpath {dirs} $out{relative}\n\
                 '';",
                store = package.store_path,
                dirs = shell_quote(&dirs),
                relative = binary.strip_prefix(&package.store_path).unwrap_or(binary),
            ),
            revert: "Remove the override: the wrapper sets LD_LIBRARY_PATH again.".into(),
            risk: Some("Programs the wrapped one starts no longer inherit the variable: one that relied on it (rarely intended) needs its own RUNPATH.".into()),
        },
        None => Fix {
            kind: FixKind::Command,
            text: format!(
                "patchelf --add-rpath {} {}   # then: {unset}",
                shell_quote(&dirs),
                shell_quote(binary)
            ),
            revert: match old_runpath {
                Some(old) if !old.is_empty() => {
                    format!("patchelf --set-rpath {} {}; set {variable} again", shell_quote(old), shell_quote(binary))
                }
                _ => format!("patchelf --remove-rpath {}; set {variable} again", shell_quote(binary)),
            },
            risk: Some("Programs the wrapped one starts no longer inherit the variable: one that relied on it needs its own RUNPATH.".into()),
        },
    }
}
