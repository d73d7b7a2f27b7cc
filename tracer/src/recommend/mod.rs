//! `nixtrace recommend`: rules that read an [`Analysis`] and say what to
//! change, each recommendation with the evidence from this trace it rests
//! on, an estimated saving, and a fix written out in full that can be
//! pasted, is opt-in, and says how to take it back. Rules read the figures
//! the report renders, never the events again; a rule that does not apply
//! says nothing.
//!
//! Every rule is one file here, listed in [`RULES`]; its settings are
//! [`Threshold`]s, changed with `--threshold RULE.NAME=VALUE`.

mod boot_config;
mod boot_io;
mod build_parallelism;
mod duplicate_libraries;
mod interpreter_search;
mod library_search;
mod loader_environment;
mod render;
mod startup_cache;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Serialize;

pub use self::render::{markdown_section, render, text_section};
use crate::analysis::{Analysis, Filter, analyse_file};
pub use crate::human::Format;

/// Version of `recommendations[]`' shape (`docs/recommendations.md`).
pub const SCHEMA_VERSION: u32 = 1;

/// What a recommendation is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Subject {
    pub kind: SubjectKind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectKind {
    Binary,
    Library,
    Package,
    ProcessTree,
    System,
    Unit,
}

/// What following the recommendation would save, and how that was worked
/// out from this trace.
#[derive(Debug, Clone, Serialize)]
pub struct Saving {
    pub time_ns: Option<u64>,
    pub bytes: Option<u64>,
    pub how: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Serialize)]
pub struct Confidence {
    pub level: Level,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FixKind {
    NixosOption,
    NixExpression,
    Command,
    Environment,
}

/// The change, in full, and how to take it back.
#[derive(Debug, Clone, Serialize)]
pub struct Fix {
    pub kind: FixKind,
    pub text: String,
    pub revert: String,
    /// What the change may break or trade away; null when nothing known.
    pub risk: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    pub rule: &'static str,
    pub title: String,
    pub subjects: Vec<Subject>,
    /// The figures from this trace it rests on, named by the rule (each
    /// rule's are listed in docs/recommendations.md).
    pub evidence: serde_json::Value,
    pub saving: Saving,
    pub confidence: Confidence,
    pub fix: Fix,
}

/// A rule's setting: its name, default and meaning.
#[derive(Debug, Clone, Copy)]
pub struct Threshold {
    pub name: &'static str,
    pub default: f64,
    pub help: &'static str,
}

/// One rule: an id, what it looks for, its settings, and the check.
pub struct Rule {
    pub id: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub thresholds: &'static [Threshold],
    pub check: fn(&Analysis, &Settings) -> Vec<Recommendation>,
}

/// Every rule nixtrace has, in the order `--list-rules` prints them.
pub const RULES: &[Rule] = &[
    library_search::RULE,
    loader_environment::RULE,
    interpreter_search::RULE,
    startup_cache::RULE,
    duplicate_libraries::RULE,
    boot_io::RULE,
    boot_config::RULE,
    build_parallelism::RULE,
];

/// The thresholds in force: the defaults, with `--threshold` on top.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    overrides: BTreeMap<(String, String), f64>,
}

impl Settings {
    /// `RULE.NAME=VALUE`, checked against the rules' thresholds.
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        let parsed = assignment.split_once('=').and_then(|(key, value)| Some((key.split_once('.')?, value)));
        let Some(((rule, name), value)) = parsed else {
            bail!("--threshold {assignment:?}: expected RULE.NAME=VALUE");
        };
        self.set_one(rule, name, value).map_err(|e| anyhow!("--threshold {assignment:?}: {e}"))
    }

    fn set_one(&mut self, rule: &str, name: &str, value: &str) -> Result<()> {
        let Some(known) = RULES.iter().find(|r| r.id == rule) else {
            bail!("no rule {rule:?} (nixtrace recommend --list-rules)");
        };
        if !known.thresholds.iter().any(|t| t.name == name) {
            bail!("rule {rule} has no threshold {name:?} (nixtrace recommend --list-rules)");
        }
        let value: f64 = match value.parse() {
            Ok(v) if f64::is_finite(v) && v >= 0.0 => v,
            _ => bail!("{value:?} is not a non-negative number"),
        };
        self.overrides.insert((rule.to_string(), name.to_string()), value);
        Ok(())
    }

    /// A thresholds file: a TOML table per rule, its thresholds as
    /// numbers (`[library-search]` then `min_failed_lookups = 10`), checked
    /// as `--threshold` checks them.
    pub fn read_file(&mut self, path: &Path) -> Result<()> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        self.read_toml(&text).with_context(|| format!("thresholds file {}", path.display()))
    }

    fn read_toml(&mut self, text: &str) -> Result<()> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map_or(1, |span| text[..span.start].matches('\n').count() + 1);
            anyhow!("line {line}: {}", e.message())
        })?;
        for (rule, thresholds) in &table {
            let Some(thresholds) = thresholds.as_table() else {
                bail!("`{rule}` is not a table of a rule's thresholds (e.g. [{rule}])");
            };
            for (name, value) in thresholds {
                let value = match value {
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Float(x) => x.to_string(),
                    other => bail!("{rule}.{name}: expected a number, not a {}", other.type_str()),
                };
                self.set_one(rule, name, &value).with_context(|| format!("{rule}.{name}"))?;
            }
        }
        Ok(())
    }

    /// The value of `rule`'s threshold `name`.
    pub fn get(&self, rule: &Rule, name: &str) -> f64 {
        self.overrides
            .get(&(rule.id.to_string(), name.to_string()))
            .copied()
            .unwrap_or_else(|| rule.thresholds.iter().find(|t| t.name == name).map_or(0.0, |t| t.default))
    }
}

/// Which recommendations to make.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these rules (all when empty).
    pub rules: Vec<String>,
    /// Leave out what saves less time than this (ns).
    pub min_saving_ns: u64,
    pub settings: Settings,
}

/// The recommendations for `analysis`: every selected rule's, ranked by
/// estimated time saved, then bytes.
pub fn recommend(analysis: &Analysis, selection: &Selection) -> Vec<Recommendation> {
    let mut all: Vec<Recommendation> = RULES
        .iter()
        .filter(|rule| selection.rules.is_empty() || selection.rules.iter().any(|id| id == rule.id))
        .flat_map(|rule| (rule.check)(analysis, &selection.settings))
        .filter(|r| r.saving.time_ns.unwrap_or(0) >= selection.min_saving_ns)
        .collect();
    all.sort_by(|a, b| {
        // A saving not estimated ranks after every estimated one.
        let key = |r: &Recommendation| {
            let estimated = r.saving.time_ns.is_some() || r.saving.bytes.is_some();
            (estimated, r.saving.time_ns.unwrap_or(0), r.saving.bytes.unwrap_or(0))
        };
        key(b).cmp(&key(a)).then_with(|| a.rule.cmp(b.rule)).then_with(|| a.subjects.cmp(&b.subjects))
    });
    all
}

/// What `nixtrace recommend` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub file: PathBuf,
    pub format: Format,
    pub selection: Selection,
    pub output: Option<PathBuf>,
}

/// `nixtrace recommend`.
pub fn run(options: &Options) -> Result<()> {
    for id in &options.selection.rules {
        if !RULES.iter().any(|rule| rule.id == id) {
            bail!("--rule {id:?}: no such rule (nixtrace recommend --list-rules)");
        }
    }
    let analysis = analyse_file(&options.file, &Filter::default())?;
    let recommendations = recommend(&analysis, &options.selection);
    let text = render(&analysis, &recommendations, options.format);
    crate::output::write_or_print(options.output.as_deref(), text.as_bytes())
}

/// `nixtrace recommend --list-rules`: every rule, what it looks for, and
/// its thresholds with their defaults.
pub fn list_rules() -> String {
    let mut out = String::new();
    for rule in RULES {
        out.push_str(&format!("{}: {}\n", rule.id, rule.title));
        for line in textwrap(rule.description, 76) {
            out.push_str(&format!("    {line}\n"));
        }
        for t in rule.thresholds {
            out.push_str(&format!("    --threshold {}.{}={} ({})\n", rule.id, t.name, t.default, t.help));
        }
        out.push('\n');
    }
    out
}

/// `text` in lines of at most `width` characters, broken at spaces.
fn textwrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// A shell word: quoted unless it is plainly safe.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_checked_against_the_rules() {
        let mut settings = Settings::default();
        settings.set("library-search.min_failed_lookups=3").unwrap();
        let rule = &RULES[0];
        assert_eq!(settings.get(rule, "min_failed_lookups"), 3.0);
        for bad in [
            "nope",
            "library-search=3",
            "no-such-rule.x=1",
            "library-search.nope=1",
            "library-search.min_failed_lookups=-1",
        ] {
            assert!(settings.set(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_thresholds_file_sets_what_it_names_and_rejects_the_rest() {
        let mut settings = Settings::default();
        settings
            .read_toml("[library-search]\nmin_failed_lookups = 3\n[startup-cache]\nmin_rebuilds = 2.5\n")
            .unwrap();
        assert_eq!(settings.get(&library_search::RULE, "min_failed_lookups"), 3.0);
        assert_eq!(settings.get(&startup_cache::RULE, "min_rebuilds"), 2.5);
        for (bad, error) in [
            (
                "min_rebuilds = 2",
                "`min_rebuilds` is not a table of a rule's thresholds (e.g. [min_rebuilds])",
            ),
            (
                "[startup-cache]\nmin_rebuilds = \"two\"",
                "startup-cache.min_rebuilds: expected a number, not a string",
            ),
            (
                "[no-such-rule]\nx = 1",
                "no-such-rule.x: no rule \"no-such-rule\" (nixtrace recommend --list-rules)",
            ),
            (
                "[startup-cache]\nnope = 1",
                "startup-cache.nope: rule startup-cache has no threshold \"nope\" (nixtrace recommend --list-rules)",
            ),
            (
                "[startup-cache]\nmin_rebuilds = -1",
                "startup-cache.min_rebuilds: \"-1\" is not a non-negative number",
            ),
        ] {
            let got = format!("{:#}", Settings::default().read_toml(bad).unwrap_err());
            assert_eq!(got, error, "{bad}");
        }
        let error = Settings::default().read_toml("[startup-cache]\n[x").unwrap_err().to_string();
        assert_eq!(error, "line 2: unclosed table, expected `]`");
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_quote("/nix/store/abc-zlib/lib:/x"), "/nix/store/abc-zlib/lib:/x");
        assert_eq!(shell_quote("$ORIGIN/../lib"), "'$ORIGIN/../lib'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
