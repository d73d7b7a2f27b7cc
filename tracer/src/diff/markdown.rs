//! The diff as Markdown for a pull-request comment: the totals, then the
//! largest regressions and improvements per unit and per binary.

use std::fmt::Write as _;

use super::{Change, Diff, Scope};
use crate::human::markdown_escape as escape;

/// "+12.5%", "−3.0%", or "from 0" when there was nothing before.
fn percent(change: &Change) -> String {
    match change.percent {
        Some(p) if p >= 0.0 => format!("+{p:.1}%"),
        Some(p) => format!("−{:.1}%", -p),
        None => "from 0".to_string(),
    }
}

/// One line for a terminal: "unit foo.service: loader time +35.0% (1.20 ms → 1.62 ms)".
pub fn describe(change: &Change) -> String {
    let scope = match change.scope {
        Scope::Total => "total".to_string(),
        Scope::Unit => format!("unit {}", change.group),
        Scope::Binary => format!("binary {}", change.group),
        Scope::Package => format!("package {}", change.group),
    };
    format!(
        "{scope}: {} {} ({} → {})",
        change.metric.label(),
        percent(change),
        change.metric.format(change.before),
        change.metric.format(change.after)
    )
}

fn table(out: &mut String, first_column: &str, changes: &[&Change]) {
    let _ = writeln!(out, "| {first_column} | metric | before | after | change |\n|---|---|--:|--:|--:|");
    for c in changes {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            escape(&c.group),
            c.metric.label(),
            c.metric.format(c.before),
            c.metric.format(c.after),
            percent(c)
        );
    }
    out.push('\n');
}

/// The `top` largest regressions, then improvements, of `changes`.
fn section(out: &mut String, title: &str, first_column: &str, changes: &[Change], top: usize) {
    let regressions: Vec<&Change> = changes.iter().filter(|c| c.after > c.before).take(top).collect();
    let improvements: Vec<&Change> = changes.iter().filter(|c| c.after < c.before).take(top).collect();
    let _ = writeln!(out, "#### {title}\n");
    if regressions.is_empty() && improvements.is_empty() {
        let _ = writeln!(out, "No significant change.\n");
        return;
    }
    if !regressions.is_empty() {
        let _ = writeln!(out, "Largest regressions:\n");
        table(out, first_column, &regressions);
    }
    if !improvements.is_empty() {
        let _ = writeln!(out, "Largest improvements:\n");
        table(out, first_column, &improvements);
    }
}

pub fn render(diff: &Diff, top: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### nixtrace diff: `{}` → `{}`\n",
        escape(&diff.before.trace),
        escape(&diff.after.trace)
    );
    for (which, summary) in [("before", &diff.before), ("after", &diff.after)] {
        if let Some(warning) = &summary.incomplete {
            let _ = writeln!(out, "> **{which}: {}**\n", escape(warning));
        }
    }
    match diff.threshold_percent {
        Some(pct) if diff.regressions.is_empty() => {
            let _ = writeln!(out, "No regression beyond {pct}%.\n");
        }
        Some(pct) => {
            let _ = writeln!(out, "**{} regressions beyond {pct}%:**\n", diff.regressions.len());
            for change in &diff.regressions {
                let _ = writeln!(out, "- {}", escape(&describe(change)));
            }
            out.push('\n');
        }
        None => {}
    }
    let totals: Vec<&Change> = diff.totals.iter().collect();
    table(&mut out, "", &totals);
    if !diff.not_compared.is_empty() {
        let labels: Vec<&str> = diff.not_compared.iter().map(|m| m.label()).collect();
        let _ = writeln!(
            out,
            "Not compared: {} (a trace was recorded without the probe that measures it).\n",
            labels.join(", ")
        );
    }
    section(&mut out, "Units", "unit", &diff.units, top);
    section(&mut out, "Binaries", "binary", &diff.binaries, top);
    section(&mut out, "Nix packages", "package", &diff.packages, top);
    for (label, found) in [
        ("Recommendations resolved", &diff.recommendations_resolved),
        ("Recommendations introduced", &diff.recommendations_introduced),
    ] {
        if !found.is_empty() {
            let _ = writeln!(out, "**{label}:**\n");
            for r in found {
                let _ = writeln!(out, "- `{}`: {}", r.rule, escape(&r.title));
            }
            out.push('\n');
        }
    }
    for (label, names) in [("Only before", &diff.only_before), ("Only after", &diff.only_after)] {
        if !names.is_empty() {
            let list: Vec<String> = names.iter().map(|n| escape(n)).collect();
            let _ = writeln!(
                out,
                "<details><summary>{label}: {}</summary>\n\n{}\n</details>\n",
                names.len(),
                list.join("<br>")
            );
        }
    }
    let _ = writeln!(
        out,
        "<sub>Noise floors: changes under 0.5 ms, 1 lookup or 64 KiB are not listed. \
         Process time is wall time summed over processes.</sub>"
    );
    out
}
