//! Recommendations as text, Markdown and JSON: on their own
//! (`nixtrace recommend`) or as a section of the report.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Format, Recommendation, SCHEMA_VERSION};
use crate::{
    analysis::Analysis,
    human::{bytes, duration, html_escape, markdown_escape as escape},
};

/// `nixtrace recommend`'s output.
pub fn render(analysis: &Analysis, recommendations: &[Recommendation], format: Format) -> String {
    match format {
        Format::Text => {
            let mut out = format!("nixtrace recommend: {}\n", analysis.trace);
            if let Some(warning) = analysis.incomplete() {
                let _ = writeln!(out, "{warning}");
            }
            out.push_str(&text_section(recommendations));
            out
        }
        Format::Markdown => {
            let mut out = format!("### nixtrace recommend: {}\n\n", escape(&analysis.trace));
            if let Some(warning) = analysis.incomplete() {
                let _ = writeln!(out, "> **{}**\n", escape(&warning));
            }
            out.push_str(&markdown_section(recommendations));
            out
        }
        Format::Json => {
            #[derive(Serialize)]
            struct Output<'a> {
                schema_version: u32,
                trace: &'a str,
                incomplete: Option<String>,
                recommendations: &'a [Recommendation],
            }
            let output = Output {
                schema_version: SCHEMA_VERSION,
                trace: &analysis.trace,
                incomplete: analysis.incomplete(),
                recommendations,
            };
            serde_json::to_string_pretty(&output).expect("recommendations serialize") + "\n"
        }
    }
}

fn saving(r: &Recommendation) -> String {
    match (r.saving.time_ns, r.saving.bytes) {
        (Some(ns), Some(b)) => format!("{} and {}", duration(ns), bytes(b)),
        (Some(ns), None) => duration(ns),
        (None, Some(b)) => bytes(b),
        (None, None) => "not estimated".to_string(),
    }
}

/// "saves about 3 ms", or that the saving is not estimated.
fn saves_about(r: &Recommendation) -> String {
    match (r.saving.time_ns, r.saving.bytes) {
        (None, None) => "saving not estimated".to_string(),
        _ => format!("saves about {}", saving(r)),
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or(String::new(), |first| first.to_uppercase().chain(chars).collect())
}

/// The recommendations for a terminal; a line saying there are none.
pub fn text_section(recommendations: &[Recommendation]) -> String {
    if recommendations.is_empty() {
        return "No recommendations: no rule found anything to change in this trace.\n".to_string();
    }
    let mut out = String::new();
    for (i, r) in recommendations.iter().enumerate() {
        let _ = writeln!(out, "\n{}. [{}] {}", i + 1, r.rule, r.title);
        let _ = writeln!(out, "   {} ({})", saves_about(r), r.saving.how);
        let _ = writeln!(out, "   confidence {:?}: {}", r.confidence.level, r.confidence.reason);
        let _ = writeln!(out, "   fix ({}):", kind(r));
        for line in r.fix.text.lines() {
            let _ = writeln!(out, "     {line}");
        }
        let _ = writeln!(out, "   revert: {}", r.fix.revert);
        if let Some(risk) = &r.fix.risk {
            let _ = writeln!(out, "   risk: {risk}");
        }
    }
    out
}

fn kind(r: &Recommendation) -> &'static str {
    match r.fix.kind {
        super::FixKind::NixosOption => "NixOS option",
        super::FixKind::NixExpression => "Nix expression",
        super::FixKind::Command => "command",
        super::FixKind::Environment => "environment",
    }
}

/// The recommendations for a pull request: a table, then each fix folded.
pub fn markdown_section(recommendations: &[Recommendation]) -> String {
    if recommendations.is_empty() {
        return "No recommendations: no rule found anything to change in this trace.\n".to_string();
    }
    let mut out = String::from("| # | rule | recommendation | saves | confidence |\n|--:|---|---|--:|---|\n");
    for (i, r) in recommendations.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {:?} |",
            i + 1,
            r.rule,
            escape(&r.title),
            saving(r),
            r.confidence.level
        );
    }
    for (i, r) in recommendations.iter().enumerate() {
        let _ = writeln!(out, "\n<details><summary>{}. {}</summary>\n", i + 1, escape(&r.title));
        let _ = writeln!(out, "{}: {}.\n", capitalized(&saves_about(r)), escape(&r.saving.how));
        let _ = writeln!(out, "Confidence {:?}: {}.\n", r.confidence.level, escape(&r.confidence.reason));
        // In <pre>, not a code fence, which what it holds could close.
        let _ = writeln!(out, "Fix ({}):\n\n<pre>{}</pre>\n", kind(r), html_escape(&r.fix.text));
        let _ = writeln!(out, "Revert: {}\n", escape(&r.fix.revert));
        if let Some(risk) = &r.fix.risk {
            let _ = writeln!(out, "Risk: {}\n", escape(risk));
        }
        let evidence = serde_json::to_string_pretty(&r.evidence).expect("evidence serializes");
        let _ = writeln!(out, "Evidence:\n\n<pre>{}</pre>\n\n</details>", html_escape(&evidence));
    }
    out
}
