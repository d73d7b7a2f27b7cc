//! interpreter-search: an interpreter (Python, Perl, Ruby, Node) or a
//! shell looked up many paths that were not there: a module path
//! (`PYTHONPATH`, `PERL5LIB`, `RUBYLIB`, `NODE_PATH`) or a command path
//! (`PATH`) with entries that hold nothing it needs. Interpreters search
//! with stat and access, not open, so this rule reads the stat probe's
//! lookups (`record --probe stat`); a trace without them can only say how
//! to record one that has them.

use std::collections::BTreeMap;

use serde_json::json;

use super::{
    Confidence, Fix, FixKind, Level, Recommendation, Rule, Saving, Settings, Subject, SubjectKind, Threshold,
    shell_quote,
};
use crate::{
    analysis::{Analysis, process::LookupFigures},
    human::count,
};

pub const RULE: Rule = Rule {
    id: "interpreter-search",
    title: "Interpreters and shells searching paths that hold nothing they need",
    description: "An interpreter (Python, Perl, Ruby, Node) or a shell looked up many paths outside the \
        dynamic loader that were not there: entries of its module or command search path that do \
        not exist or hold nothing it needed. Needs a trace recorded with --probe stat. The fix drops \
        the entries that do not exist from the search variable; on Nix, one environment \
        (python3.withPackages, perl.withPackages) instead of a long PYTHONPATH or PERL5LIB.",
    thresholds: &[Threshold {
        name: "min_failed_lookups",
        default: 40.0,
        help: "failed lookups per exec, on average, before it is worth saying \
               (plain python3 -c pass makes 19, bash -c true none)",
    }],
    check,
};

/// What kind of searcher a program is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Searcher {
    Python,
    Perl,
    Ruby,
    Node,
    Shell,
}

impl Searcher {
    /// By the program's file name, as Nix wrappers name it too
    /// (`.python3.11-wrapped`).
    pub(super) fn of(binary: &str) -> Option<Searcher> {
        let name = binary.rsplit('/').next().unwrap_or(binary);
        let name = name.strip_prefix('.').unwrap_or(name);
        let name = name.strip_suffix("-wrapped").unwrap_or(name);
        let starts = |prefix: &str| name.starts_with(prefix);
        if starts("python") || starts("pypy") {
            Some(Searcher::Python)
        } else if starts("perl") {
            Some(Searcher::Perl)
        } else if starts("ruby") {
            Some(Searcher::Ruby)
        } else if matches!(name, "node" | "nodejs") {
            Some(Searcher::Node)
        } else if matches!(name, "sh" | "bash" | "dash" | "zsh" | "fish" | "ksh" | "mksh" | "ash") {
            Some(Searcher::Shell)
        } else {
            None
        }
    }

    /// The variable that holds its search path.
    fn variable(self) -> &'static str {
        match self {
            Searcher::Python => "PYTHONPATH",
            Searcher::Perl => "PERL5LIB",
            Searcher::Ruby => "RUBYLIB",
            Searcher::Node => "NODE_PATH",
            Searcher::Shell => "PATH",
        }
    }
}

/// One binary's lookups over all its execs.
#[derive(Default)]
struct Searches {
    execs: u64,
    calls: u64,
    failed: u64,
    failed_ns: u64,
    /// dir -> (failed, found, distinct names)
    dirs: BTreeMap<String, (u64, u64, u64)>,
    repeated: BTreeMap<String, u64>,
}

impl Searches {
    fn add(&mut self, lookups: &LookupFigures) {
        self.execs += 1;
        self.calls = self.calls.saturating_add(lookups.calls);
        self.failed = self.failed.saturating_add(lookups.failed);
        self.failed_ns = self.failed_ns.saturating_add(lookups.failed_ns);
        for dir in &lookups.dirs {
            let sum = self.dirs.entry(dir.dir.clone()).or_default();
            *sum = (sum.0.saturating_add(dir.failed), sum.1.saturating_add(dir.found), sum.2.max(dir.names));
        }
        for r in &lookups.repeated {
            *self.repeated.entry(r.path.clone()).or_default() += r.count;
        }
    }
}

/// How many directories and paths the evidence lists.
const LISTED: usize = 10;

fn check(analysis: &Analysis, settings: &Settings) -> Vec<Recommendation> {
    let execs = analysis.processes.iter().flat_map(|p| &p.execs);
    let interpreted: Vec<_> = execs.filter_map(|e| Some((e, Searcher::of(&e.filename)?))).collect();
    if interpreted.is_empty() {
        return Vec::new();
    }
    if interpreted.iter().all(|(e, _)| e.lookups.is_none()) {
        // Shells run in nearly every trace; only an interpreter proper is
        // worth a recording of its own.
        let interpreters = interpreted.iter().filter(|(_, s)| *s != Searcher::Shell).count();
        if interpreters == 0 {
            return Vec::new();
        }
        return vec![record_with_the_probe(analysis, interpreters as u64)];
    }
    let mut by_binary: BTreeMap<(&str, Searcher), Searches> = BTreeMap::new();
    for (exec, searcher) in &interpreted {
        if let Some(lookups) = &exec.lookups {
            by_binary.entry((exec.filename.as_str(), *searcher)).or_default().add(lookups);
        }
    }
    let min_failed = settings.get(&RULE, "min_failed_lookups");
    by_binary
        .into_iter()
        .filter(|(_, s)| s.failed as f64 >= min_failed * s.execs as f64)
        .map(|((binary, searcher), searches)| recommendation(binary, searcher, &searches))
        .collect()
}

fn recommendation(binary: &str, searcher: Searcher, s: &Searches) -> Recommendation {
    let variable = searcher.variable();
    let mut dirs: Vec<(&String, &(u64, u64, u64))> =
        s.dirs.iter().filter(|(_, (failed, ..))| *failed > 0).collect();
    dirs.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(b.0)));
    let mut repeated: Vec<(&String, &u64)> = s.repeated.iter().collect();
    repeated.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    // What to drop from the variable: for a module path, the entries that
    // do not exist (looked up again at every import); for PATH, the
    // directories where no lookup found anything.
    let drop: Vec<&str> = match searcher {
        Searcher::Shell => {
            dirs.iter().filter(|(_, (_, found, _))| *found == 0).map(|(d, _)| d.as_str()).collect()
        }
        _ => repeated.iter().map(|(p, _)| p.as_str()).collect(),
    };
    let evidence = json!({
        "binary": binary,
        "variable": variable,
        "execs": s.execs,
        "lookups": s.calls,
        "failed_lookups": s.failed,
        "failed_lookups_ns": s.failed_ns,
        "dirs": dirs.iter().take(LISTED).map(|(dir, (failed, found, names))| json!({
            "dir": dir, "failed": failed, "found": found, "names": names,
        })).collect::<Vec<_>>(),
        "repeated": repeated.iter().take(LISTED).map(|(path, count)| json!({"path": path, "count": count})).collect::<Vec<_>>(),
        "drop": drop,
    });
    let name = binary.rsplit('/').next().unwrap_or(binary);
    Recommendation {
        rule: RULE.id,
        title: format!(
            "{name} looked up {} that were not there ({})",
            count(s.failed, "path", "paths"),
            count(s.execs, "exec", "execs")
        ),
        subjects: vec![Subject { kind: SubjectKind::Binary, name: binary.to_string() }],
        evidence,
        saving: Saving {
            time_ns: Some(s.failed_ns),
            bytes: None,
            how: format!(
                "the {}' own time as this trace timed them, over {} (a cold dentry cache or NFS makes \
                 each cost more, a warm one less)",
                count(s.failed, "failed lookup", "failed lookups"),
                count(s.execs, "exec", "execs")
            ),
        },
        confidence: Confidence {
            level: Level::Medium,
            reason: "only the failed lookups' own time is counted, not what the interpreter does around \
                     each miss; which entries to drop is inferred from the lookups"
                .into(),
        },
        fix: fix(searcher, &drop, &dirs),
    }
}

fn fix(searcher: Searcher, drop: &[&str], dirs: &[(&String, &(u64, u64, u64))]) -> Fix {
    let variable = searcher.variable();
    let saved = format!("NIXTRACE_OLD_{variable}");
    let filter: String = drop.iter().map(|d| format!(" -e {}", shell_quote(d))).collect();
    if drop.is_empty() {
        // Nothing to drop for certain: say where the misses were.
        let listed: String = dirs
            .iter()
            .take(LISTED)
            .map(|(dir, (failed, ..))| format!("\n#   {dir} ({failed} misses)"))
            .collect();
        return Fix {
            kind: FixKind::Environment,
            text: format!(
                "# Drop from {variable} the entries that hold none of what the program loads; the misses were in:{listed}"
            ),
            revert: format!("Put the entries back in {variable}."),
            risk: Some("An entry dropped by hand may hold what a run this trace did not see needs.".into()),
        };
    }
    let command = format!(
        "{saved}=\"${variable}\"\nexport {variable}=\"$(printf %s \"${variable}\" | tr : '\\n' | grep -vxF{filter} | paste -sd:)\""
    );
    let nix = match searcher {
        Searcher::Python => {
            "\n# On Nix: instead of wrapping with a long PYTHONPATH, run the program from one environment,\n\
             #   python3.withPackages (ps: [ ps.requests ... ])\n\
             # whose site-packages holds every module in one directory."
        }
        Searcher::Perl => "\n# On Nix: perl.withPackages (ps: [ ... ]) instead of a long PERL5LIB.",
        _ => "",
    };
    Fix {
        kind: FixKind::Environment,
        text: format!(
            "# Where {variable} is set for the program (its wrapper or environment):\n{command}{nix}"
        ),
        revert: format!("export {variable}=\"${saved}\""),
        risk: Some(match searcher {
            Searcher::Shell => {
                "A command that lives only in a dropped directory, and that this trace did not run, \
                                is no longer found by name."
                    .into()
            }
            _ => format!(
                "An entry that does not exist now but is created later (a virtualenv not yet made) is no longer \
                 searched; put it back in {variable} then."
            ),
        }),
    }
}

/// The trace has interpreters but was recorded without the stat probe, so
/// it cannot show their searches.
fn record_with_the_probe(analysis: &Analysis, execs: u64) -> Recommendation {
    let command = analysis.header.command.as_ref().map_or("--duration 10".to_string(), |argv| {
        format!("-- {}", argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "))
    });
    Recommendation {
        rule: RULE.id,
        title: format!(
            "{} of interpreters, recorded without the stat probe: their module searches are not in the trace",
            count(execs, "exec", "execs")
        ),
        subjects: vec![Subject { kind: SubjectKind::System, name: analysis.header.host.clone() }],
        evidence: json!({ "execs": execs, "stat_probe": false }),
        saving: Saving {
            time_ns: None,
            bytes: None,
            how: "unknown: interpreters search with stat and access, which this trace did not record".into(),
        },
        confidence: Confidence {
            level: Level::Low,
            reason: "the trace has no stat-family lookups to measure".into(),
        },
        fix: Fix {
            kind: FixKind::Command,
            text: format!(
                "nixtrace record --probe stat -o with-stat.ntr {command}\nnixtrace recommend with-stat.ntr --rule {}",
                RULE.id
            ),
            revert: "Nothing to revert: it only records.".into(),
            risk: Some("The stat probe makes recording cost more (docs/benchmarks.md).".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searchers_are_known_by_name() {
        let kinds: Vec<Option<Searcher>> = [
            "/usr/bin/python3.11",
            "/nix/store/abc-python3-3.11.9/bin/.python3.11-wrapped",
            "/usr/bin/perl",
            "/usr/bin/ruby3.1",
            "/usr/bin/node",
            "/bin/dash",
            "/usr/bin/bashbug",
            "/usr/bin/true",
        ]
        .iter()
        .map(|b| Searcher::of(b))
        .collect();
        use Searcher::*;
        assert_eq!(
            kinds,
            [Some(Python), Some(Python), Some(Perl), Some(Ruby), Some(Node), Some(Shell), None, None]
        );
    }

    #[test]
    fn the_fix_drops_exactly_the_listed_entries() {
        let fix = fix(Searcher::Python, &["/tmp/a b", "/tmp/c"], &[]);
        assert_eq!(
            fix.text.lines().take(3).collect::<Vec<_>>(),
            [
                "# Where PYTHONPATH is set for the program (its wrapper or environment):",
                "NIXTRACE_OLD_PYTHONPATH=\"$PYTHONPATH\"",
                "export PYTHONPATH=\"$(printf %s \"$PYTHONPATH\" | tr : '\\n' | grep -vxF -e '/tmp/a b' -e /tmp/c | paste -sd:)\"",
            ]
        );
        assert_eq!(fix.revert, "export PYTHONPATH=\"$NIXTRACE_OLD_PYTHONPATH\"");
    }
}
