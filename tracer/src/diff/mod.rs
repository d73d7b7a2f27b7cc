//! `nixtrace diff`: two traces of the same thing (before and after a
//! change) compared per unit and per binary, as a Markdown table for a
//! pull request or JSON, with a differential flamegraph beside them and an
//! exit status a CI job can act on.

mod markdown;

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::{
    analysis::{Analysis, Filter, analyse_file},
    flamegraph,
    human::{bytes, duration},
    model::nix::without_hash,
    recommend::{Recommendation, Selection, recommend},
};

/// Version of the JSON output (`docs/diff-schema.md`).
pub const SCHEMA_VERSION: u32 = 1;

/// Exit status when `--fail-on-regression` finds a regression (1 is an
/// error, 2 a usage error).
pub const REGRESSION_EXIT: i32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Json,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::Markdown, Format::Json];

    pub fn name(self) -> &'static str {
        match self {
            Format::Markdown => "markdown",
            Format::Json => "json",
        }
    }

    /// The file `--output-dir` writes the comparison to.
    fn file_name(self) -> &'static str {
        match self {
            Format::Markdown => "diff.md",
            Format::Json => "diff.json",
        }
    }
}

/// What is compared. Each has a noise floor: a change smaller than it is
/// never a regression or an improvement, whatever its percentage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Wall time summed over the processes (ns).
    ProcessTime,
    /// Dynamic loader, entry to the program's initialisers (ns).
    LoaderTime,
    FailedLookups,
    /// Bytes read into the page cache, i.e. from disk.
    DiskReadBytes,
}

impl Metric {
    const ALL: [Metric; 4] =
        [Metric::ProcessTime, Metric::LoaderTime, Metric::FailedLookups, Metric::DiskReadBytes];

    pub fn label(self) -> &'static str {
        match self {
            Metric::ProcessTime => "process time",
            Metric::LoaderTime => "loader time",
            Metric::FailedLookups => "failed lookups",
            Metric::DiskReadBytes => "disk read",
        }
    }

    /// The probe that measures it, when not every trace has it.
    fn probe(self) -> Option<crate::trace::Probe> {
        match self {
            Metric::ProcessTime => None,
            Metric::LoaderTime | Metric::FailedLookups => Some(crate::trace::Probe::Loader),
            Metric::DiskReadBytes => Some(crate::trace::Probe::PageCache),
        }
    }

    fn noise_floor(self) -> u64 {
        match self {
            Metric::ProcessTime | Metric::LoaderTime => 500_000,
            Metric::FailedLookups => 1,
            Metric::DiskReadBytes => 64 * 1024,
        }
    }

    pub fn format(self, value: u64) -> String {
        match self {
            Metric::ProcessTime | Metric::LoaderTime => duration(value),
            Metric::FailedLookups => value.to_string(),
            Metric::DiskReadBytes => bytes(value),
        }
    }
}

/// The metrics of one group of processes (a unit, a binary, or all).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub processes: u64,
    pub process_time_ns: u64,
    pub loader_time_ns: u64,
    pub failed_lookups: u64,
    pub disk_read_bytes: u64,
}

impl Totals {
    fn get(&self, metric: Metric) -> u64 {
        match metric {
            Metric::ProcessTime => self.process_time_ns,
            Metric::LoaderTime => self.loader_time_ns,
            Metric::FailedLookups => self.failed_lookups,
            Metric::DiskReadBytes => self.disk_read_bytes,
        }
    }
}

/// A trace's totals, per unit, per binary and per Nix package of the
/// binary (store hashes elided, so a rebuilt package compares with its
/// old self).
#[derive(Default)]
struct Groups {
    all: Totals,
    units: BTreeMap<String, Totals>,
    binaries: BTreeMap<String, Totals>,
    packages: BTreeMap<String, Totals>,
}

fn groups(analysis: &Analysis) -> Groups {
    let mut groups = Groups::default();
    for row in &analysis.processes {
        let add = |t: &mut Totals| {
            t.processes += 1;
            t.process_time_ns = t.process_time_ns.saturating_add(row.wall_ns);
            t.loader_time_ns = t.loader_time_ns.saturating_add(row.loader_and_init_ns());
            t.failed_lookups = t.failed_lookups.saturating_add(row.failed_lookups());
            t.disk_read_bytes = t.disk_read_bytes.saturating_add(row.io.disk_read_bytes);
        };
        add(&mut groups.all);
        add(groups.units.entry(row.unit.clone()).or_default());
        let binary = row.exe.as_deref().map_or_else(|| "(unknown)".into(), without_hash);
        add(groups.binaries.entry(binary.into_owned()).or_default());
        if let Some(package) = &row.package {
            add(groups.packages.entry(package.label()).or_default());
        }
    }
    groups
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Total,
    Unit,
    Binary,
    Package,
}

/// One metric of one group, before and after.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub scope: Scope,
    /// "total", or the unit's or the binary's name.
    pub group: String,
    pub metric: Metric,
    pub before: u64,
    pub after: u64,
    /// Percent change; null when `before` is 0.
    pub percent: Option<f64>,
}

impl Change {
    fn new(scope: Scope, group: &str, metric: Metric, before: u64, after: u64) -> Change {
        let percent = (before > 0).then(|| (after as f64 - before as f64) * 100.0 / before as f64);
        Change { scope, group: group.to_string(), metric, before, after, percent }
    }

    /// Larger than the metric's noise floor.
    fn significant(&self) -> bool {
        self.before.abs_diff(self.after) >= self.metric.noise_floor()
    }

    /// Grew by more than `percent` (and more than the noise floor); growing
    /// from nothing is always beyond.
    fn regressed_beyond(&self, percent: f64) -> bool {
        self.after > self.before && self.significant() && self.percent.is_none_or(|p| p > percent)
    }
}

#[derive(Debug, Serialize)]
pub struct TraceSummary {
    pub trace: String,
    pub host: String,
    pub kernel_release: String,
    pub events: u64,
    /// Why the trace is incomplete; null when it is complete.
    pub incomplete: Option<String>,
}

impl From<&Analysis> for TraceSummary {
    fn from(analysis: &Analysis) -> TraceSummary {
        TraceSummary {
            trace: analysis.trace.clone(),
            host: analysis.header.host.clone(),
            kernel_release: analysis.header.kernel_release.clone(),
            events: analysis.events,
            incomplete: analysis.incomplete(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Diff {
    pub schema_version: u32,
    pub before: TraceSummary,
    pub after: TraceSummary,
    /// Every metric over all processes.
    pub totals: Vec<Change>,
    /// Metrics left out because one trace was recorded without their probe.
    pub not_compared: Vec<Metric>,
    /// Significant changes of units, binaries and packages seen in both traces,
    /// largest relative change first.
    pub units: Vec<Change>,
    pub binaries: Vec<Change>,
    pub packages: Vec<Change>,
    /// Units, binaries and packages seen in only one of the traces.
    pub only_before: Vec<String>,
    pub only_after: Vec<String>,
    /// Recommendations the change made go away, and new ones it brought
    /// (by rule and subjects, store hashes elided).
    pub recommendations_resolved: Vec<RecommendationSummary>,
    pub recommendations_introduced: Vec<RecommendationSummary>,
    /// The `--fail-on-regression` threshold, and what exceeded it.
    pub threshold_percent: Option<f64>,
    pub regressions: Vec<Change>,
}

fn changes(
    scope: Scope,
    metrics: &[Metric],
    before: &BTreeMap<String, Totals>,
    after: &BTreeMap<String, Totals>,
) -> Vec<Change> {
    let mut changes: Vec<Change> = before
        .iter()
        .filter_map(|(name, b)| after.get(name).map(|a| (name, b, a)))
        .flat_map(|(name, b, a)| {
            metrics.iter().map(move |m| Change::new(scope, name, *m, b.get(*m), a.get(*m)))
        })
        .filter(Change::significant)
        .collect();
    changes.sort_by(|x, y| {
        let size = |c: &Change| c.percent.map_or(f64::INFINITY, f64::abs);
        size(y).total_cmp(&size(x)).then_with(|| x.group.cmp(&y.group)).then(x.metric.cmp(&y.metric))
    });
    changes
}

fn only_in<'a>(a: &'a BTreeMap<String, Totals>, b: &BTreeMap<String, Totals>) -> Vec<&'a String> {
    a.keys().filter(|k| !b.contains_key(*k)).collect()
}

/// A recommendation as a diff names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RecommendationSummary {
    pub rule: String,
    /// Its subjects' names, store hashes elided.
    pub subjects: Vec<String>,
    pub title: String,
}

impl From<&Recommendation> for RecommendationSummary {
    fn from(r: &Recommendation) -> RecommendationSummary {
        RecommendationSummary {
            rule: r.rule.to_string(),
            subjects: r.subjects.iter().map(|s| without_hash(&s.name).into_owned()).collect(),
            title: r.title.clone(),
        }
    }
}

/// The recommendations only `a` has (by rule and subjects).
fn only_recommended(a: &[Recommendation], b: &[Recommendation]) -> Vec<RecommendationSummary> {
    let key = |s: &RecommendationSummary| (s.rule.clone(), s.subjects.clone());
    let b: Vec<_> = b.iter().map(|r| key(&r.into())).collect();
    let mut only: Vec<RecommendationSummary> =
        a.iter().map(RecommendationSummary::from).filter(|s| !b.contains(&key(s))).collect();
    only.sort();
    only
}

/// Compares the analyses of two traces, and the recommendations made from
/// each.
pub fn compare(
    before: (&Analysis, &[Recommendation]),
    after: (&Analysis, &[Recommendation]),
    threshold_percent: Option<f64>,
) -> Diff {
    let ((before, recommended_before), (after, recommended_after)) = (before, after);
    let (b, a) = (groups(before), groups(after));
    // A metric one trace was recorded without would read as growth from, or
    // a fall to, nothing.
    let recorded_by_both =
        |m: &Metric| m.probe().is_none_or(|probe| [before, after].iter().all(|r| r.header.has_probe(probe)));
    let (metrics, not_compared): (Vec<Metric>, Vec<Metric>) =
        Metric::ALL.into_iter().partition(recorded_by_both);
    let totals: Vec<Change> = metrics
        .iter()
        .map(|m| Change::new(Scope::Total, "total", *m, b.all.get(*m), a.all.get(*m)))
        .collect();
    let units = changes(Scope::Unit, &metrics, &b.units, &a.units);
    let binaries = changes(Scope::Binary, &metrics, &b.binaries, &a.binaries);
    let packages = changes(Scope::Package, &metrics, &b.packages, &a.packages);
    let regressions = threshold_percent.map_or_else(Vec::new, |pct| {
        let all = totals.iter().chain(&units).chain(&binaries).chain(&packages);
        all.filter(|c| c.regressed_beyond(pct)).cloned().collect()
    });
    let only = |x: &Groups, y: &Groups| -> Vec<String> {
        [(&x.units, &y.units), (&x.binaries, &y.binaries), (&x.packages, &y.packages)]
            .into_iter()
            .flat_map(|(x, y)| only_in(x, y))
            .cloned()
            .collect()
    };
    Diff {
        schema_version: SCHEMA_VERSION,
        before: before.into(),
        after: after.into(),
        only_before: only(&b, &a),
        only_after: only(&a, &b),
        totals,
        not_compared,
        units,
        binaries,
        packages,
        recommendations_resolved: only_recommended(recommended_before, recommended_after),
        recommendations_introduced: only_recommended(recommended_after, recommended_before),
        threshold_percent,
        regressions,
    }
}

/// What `nixtrace diff` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub before: PathBuf,
    pub after: PathBuf,
    pub format: Format,
    /// Write the comparison and the differential flamegraph here instead
    /// of printing the comparison.
    pub output_dir: Option<PathBuf>,
    /// The kind of the differential flamegraph.
    pub kind: flamegraph::Kind,
    /// Rows per table.
    pub top: usize,
    pub fail_on_regression: Option<f64>,
}

/// `nixtrace diff`. Returns the exit status: 0, or [`REGRESSION_EXIT`].
pub fn run(options: &Options) -> Result<i32> {
    let before = analyse_file(&options.before, &Filter::default())?;
    let after = analyse_file(&options.after, &Filter::default())?;
    let recommended_before = recommend(&before, &Selection::default());
    let recommended_after = recommend(&after, &Selection::default());
    let diff =
        compare((&before, &recommended_before), (&after, &recommended_after), options.fail_on_regression);
    let text = match options.format {
        Format::Markdown => markdown::render(&diff, options.top),
        Format::Json => serde_json::to_string_pretty(&diff).context("serialising the diff")? + "\n",
    };
    match &options.output_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            crate::output::write_private(&dir.join(options.format.file_name()), text.as_bytes())?;
            let kind = options.kind;
            let subtitle = format!(
                "before: {} | after: {}",
                flamegraph::subtitle(&before),
                flamegraph::subtitle(&after)
            );
            let svg = flamegraph::differential_svg(
                &flamegraph::stacks(&before, kind),
                &flamegraph::stacks(&after, kind),
                kind,
                &after.header,
                flamegraph::xml_text(&subtitle),
            );
            // No picture (nothing of that kind in either trace) is no
            // reason to lose the comparison or its exit status.
            match svg {
                Ok(svg) => {
                    crate::output::write_private(&dir.join(format!("diff-{}.svg", kind.name())), &svg)?
                }
                Err(e) => eprintln!("nixtrace: warning: no differential flamegraph: {e:#}"),
            }
        }
        None => crate::output::write_or_print(None, text.as_bytes())?,
    }
    for change in &diff.regressions {
        eprintln!("nixtrace: regression: {}", markdown::describe(change));
    }
    Ok(if diff.regressions.is_empty() { 0 } else { REGRESSION_EXIT })
}
