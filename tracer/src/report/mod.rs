//! `nixtrace report`: an [`Analysis`] rendered as terminal tables, as
//! Markdown for a pull request, or as JSON for programs.

pub mod json;
pub mod markdown;
mod text;

use std::path::PathBuf;

use anyhow::Result;

use crate::{
    analysis::{Analysis, Filter, LoaderSummary, PackageFigures, ProcessFigures, analyse_file},
    human::{bytes, duration},
    recommend::{Recommendation, Selection, recommend},
};

pub use crate::human::Format;

/// What `nixtrace report` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub file: PathBuf,
    pub format: Format,
    /// Rows per table in text and Markdown (JSON has every process).
    pub top: usize,
    pub filter: Filter,
    /// None for standard output.
    pub output: Option<PathBuf>,
    /// Colour the text format (terminal escapes).
    pub color: bool,
}

/// `nixtrace report`.
pub fn run(options: &Options) -> Result<()> {
    let analysis = analyse_file(&options.file, &options.filter)?;
    let recommendations = recommend(&analysis, &Selection::default());
    let color = options.color && options.format == Format::Text;
    let text = render(&analysis, &recommendations, options.format, options.top, color);
    crate::output::write_or_print(options.output.as_deref(), text.as_bytes())
}

/// `analysis` and its `recommendations` in `format`, with at most `top`
/// rows per table (JSON has every row).
pub fn render(
    analysis: &Analysis,
    recommendations: &[Recommendation],
    format: Format,
    top: usize,
    color: bool,
) -> String {
    match format {
        Format::Text => text::render(analysis, recommendations, top, color),
        Format::Markdown => markdown::render(analysis, recommendations, top),
        Format::Json => json::render(analysis, recommendations),
    }
}

/// The cells of a package's row, in the order of the Packages tables:
/// package, processes, execs, loader, failed, caused, disk read, mapped.
fn package_cells(p: &PackageFigures) -> [String; 8] {
    [
        p.package.label(),
        p.processes.to_string(),
        p.execs.to_string(),
        duration(p.loader_ns),
        p.failed_lookups.to_string(),
        p.failed_lookups_caused.to_string(),
        bytes(p.disk_read_bytes),
        bytes(p.mapped_bytes),
    ]
}

/// The cells of the path-lookups tables, for the execs that had failed
/// lookups outside the loader, most first: pid, lookups, failed, time in
/// the failed ones, the directory with the most, the program.
fn lookup_rows(analysis: &Analysis, top: usize) -> Vec<[String; 6]> {
    let mut execs: Vec<_> = analysis
        .processes
        .iter()
        .flat_map(|p| p.execs.iter().map(move |e| (p.pid, e)))
        .filter_map(|(pid, e)| Some((pid, e, e.lookups.as_ref().filter(|l| l.failed > 0)?)))
        .collect();
    execs.sort_by(|a, b| b.2.failed.cmp(&a.2.failed).then(a.0.cmp(&b.0)));
    execs
        .into_iter()
        .take(top)
        .map(|(pid, exec, lookups)| {
            [
                pid.to_string(),
                lookups.calls.to_string(),
                lookups.failed.to_string(),
                duration(lookups.failed_ns),
                lookups.dirs.first().map_or(String::new(), |d| format!("{} ({})", d.dir, d.failed)),
                exec.filename.clone(),
            ]
        })
        .collect()
}

/// The loader's total time, with the tracer's estimated share of it when
/// the trace measured one: "2.1 ms (0.8 ms of it nixtrace's own, estimated)".
fn loader_time(summary: &LoaderSummary) -> String {
    match summary.tracer_ns {
        Some(tracer) if tracer > 0 => {
            format!("{} ({} of it nixtrace's own, estimated)", duration(summary.total_ns), duration(tracer))
        }
        _ => duration(summary.total_ns),
    }
}

/// Loader time, search time, failed lookups and libraries of a process,
/// formatted for a table; None without a probed loader run.
fn loader_cells(process: &ProcessFigures) -> Option<[String; 4]> {
    process.loader.as_ref().map(|l| {
        [
            duration(l.total_ns),
            duration(l.search_ns),
            l.failed_lookups.to_string(),
            l.libraries.len().to_string(),
        ]
    })
}
