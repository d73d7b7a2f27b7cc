//! `nixtrace flamegraph`: an analysis drawn as flamegraphs by inferno.
//! `stacks` folds the analysis into stacks for each kind; this module
//! names the kinds and draws them, stamped with where the trace came from
//! and whether it is complete.

mod stacks;

use anyhow::{Context as _, Result, bail};
use inferno::flamegraph::{
    self as inferno_fg,
    color::{BasicPalette, Palette},
};
pub use stacks::{Stacks, stacks, xml_text};

use std::path::PathBuf;

use crate::{
    analysis::{Analysis, Filter, analyse_file},
    trace::{Header, Probe},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Io,
    Linker,
    Lookups,
    Exec,
    Packages,
}

impl Kind {
    pub const ALL: [Kind; 6] =
        [Kind::Startup, Kind::Io, Kind::Linker, Kind::Lookups, Kind::Exec, Kind::Packages];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Io => "io",
            Kind::Linker => "linker",
            Kind::Lookups => "lookups",
            Kind::Exec => "exec",
            Kind::Packages => "packages",
        }
    }

    /// What the kind draws, for `--help`.
    pub fn help(self) -> &'static str {
        match self {
            Kind::Startup => "wall time (µs): unit; process chain; binary; phase",
            Kind::Io => "bytes read from disk: unit; binary; package; file",
            Kind::Linker => "dynamic-loader time (ns): binary; library; search, open and map",
            Kind::Lookups => "failed library lookups: binary; library; directory probed",
            Kind::Exec => "exec counts by the process tree",
            Kind::Packages => "wall time (µs) by Nix package: package; binary; phase",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Startup => "Startup: wall time by unit, process chain, binary and phase",
            Kind::Io => "Disk reads: bytes by unit, binary, package and file",
            Kind::Linker => "Dynamic loader: time by binary, library and step",
            Kind::Lookups => "Failed library lookups: by binary, library and directory probed",
            Kind::Exec => "Execs by process tree",
            Kind::Packages => "Startup by Nix package: wall time by package, binary and phase",
        }
    }

    /// What the counts are, as inferno prints them after each number.
    pub fn unit(self) -> &'static str {
        match self {
            Kind::Startup => "µs",
            Kind::Io => "bytes",
            Kind::Linker => "ns",
            Kind::Lookups => "lookups",
            Kind::Exec => "execs",
            Kind::Packages => "µs",
        }
    }

    fn palette(self) -> BasicPalette {
        match self {
            Kind::Startup => BasicPalette::Hot,
            Kind::Io => BasicPalette::Io,
            Kind::Linker | Kind::Lookups => BasicPalette::Aqua,
            Kind::Exec => BasicPalette::Orange,
            Kind::Packages => BasicPalette::Hot,
        }
    }

    /// Why a trace has nothing to draw, and what would give it something.
    fn empty_hint(self, header: &Header) -> &'static str {
        match self {
            Kind::Io if !header.has_probe(Probe::PageCache) => "it was recorded without the page_cache probe",
            Kind::Startup | Kind::Exec | Kind::Packages => "no processes",
            Kind::Io => "no disk reads (everything came from the page cache; `record --cold` starts cold)",
            Kind::Linker => "no dynamic-loader runs (static binaries, or a loader nixtrace does not probe)",
            Kind::Lookups => "no failed library lookups",
        }
    }
}

/// The title block of a picture of `analysis`: host, kernel, when it was
/// recorded, and the lost-event warning when there is one.
pub fn subtitle(analysis: &Analysis) -> String {
    let h = &analysis.header;
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(h.clock.realtime_ns);
    let mut text = format!(
        "host {}, kernel {}, recorded {}",
        h.host,
        h.kernel_release,
        humantime::format_rfc3339_seconds(when)
    );
    if let Some(warning) = analysis.incomplete() {
        text.push_str(&format!(" | {}", warning.to_uppercase()));
    }
    xml_text(&text)
}

fn options(kind: Kind, title: String, subtitle: String) -> inferno_fg::Options<'static> {
    let mut options = inferno_fg::Options::default();
    options.title = title;
    options.subtitle = Some(subtitle);
    options.count_name = kind.unit().to_string();
    options.name_type = String::new();
    options.colors = Palette::Basic(kind.palette());
    // The same frame gets the same colour in every picture (before/after).
    options.hash = true;
    options.deterministic = true;
    options
}

/// Draws `stacks` as an SVG; a flame chart (time order, left to right)
/// when `chart`.
pub fn svg(stacks: &Stacks, kind: Kind, analysis: &Analysis, chart: bool) -> Result<Vec<u8>> {
    if stacks.total() == 0 {
        bail!(
            "{}: nothing to draw for --kind {}: {}",
            analysis.trace,
            kind.name(),
            kind.empty_hint(&analysis.header)
        );
    }
    let mut title = kind.title().to_string();
    if chart {
        title = format!("{title} (flame chart: time order)");
    }
    let mut options = options(kind, title, subtitle(analysis));
    options.flame_chart = chart;
    let folded = stacks.folded();
    let mut lines: Vec<&str> = folded.lines().collect();
    if chart {
        // inferno reverses the lines of a flame chart before drawing.
        lines.reverse();
    }
    let mut out = Vec::new();
    inferno_fg::from_lines(&mut options, lines, &mut out).context("drawing the flamegraph")?;
    Ok(out)
}

/// A differential flamegraph: the frames of `after`, coloured by how much
/// they grew (red) or shrank (blue) from `before`.
/// `after_header` explains an empty picture.
pub fn differential_svg(
    before: &Stacks,
    after: &Stacks,
    kind: Kind,
    after_header: &Header,
    subtitle: String,
) -> Result<Vec<u8>> {
    if before.total() == 0 && after.total() == 0 {
        bail!(
            "nothing to draw for --kind {} in either trace: {}",
            kind.name(),
            kind.empty_hint(after_header)
        );
    }
    let mut folded = Vec::new();
    inferno::differential::from_readers(
        inferno::differential::Options::default(),
        before.folded().as_bytes(),
        after.folded().as_bytes(),
        &mut folded,
    )
    .context("comparing the stacks")?;
    let folded = String::from_utf8(folded).context("inferno's differential output")?;
    let title = format!("{} (red: grew, blue: shrank)", kind.title());
    let mut options = options(kind, title, subtitle);
    let mut out = Vec::new();
    inferno_fg::from_lines(&mut options, folded.lines(), &mut out).context("drawing the flamegraph")?;
    Ok(out)
}

/// What `nixtrace flamegraph` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub file: PathBuf,
    pub kind: Kind,
    /// Write the collapsed stacks instead of an SVG.
    pub folded: bool,
    /// A flame chart (time order) instead of a flamegraph.
    pub chart: bool,
    pub filter: Filter,
    /// None for standard output.
    pub output: Option<PathBuf>,
}

/// `nixtrace flamegraph`.
pub fn run(options: &Options) -> Result<()> {
    let analysis = analyse_file(&options.file, &options.filter)?;
    let stacks = stacks(&analysis, options.kind);
    let bytes = if options.folded {
        stacks.folded().into_bytes()
    } else {
        svg(&stacks, options.kind, &analysis, options.chart)?
    };
    crate::output::write_or_print(options.output.as_deref(), &bytes)
}
