//! nixtrace: an eBPF startup and boot tracer.
//!
//! Data flows one way: kernel probes (`tracer-ebpf`) → `record` → the trace
//! file (`trace`) → the model of processes and units (`model`) → the
//! figures computed from it (`analysis`) → outputs (`report`, `flamegraph`,
//! `diff`, `export`, `dump`, `recommend`), with `boots` filing a recorded
//! boot, `preload` reading a boot's list back into the page cache, and
//! `cli` on top. See docs/architecture.md.
//!
//! The binary is [`main`]; the library exists so that the fuzz targets
//! (`fuzz/`) can feed arbitrary bytes to the reader and the report
//! pipeline ([`fuzzing`]).

mod analysis;
mod boots;
mod cli;
mod diff;
mod dump;
mod export;
mod flamegraph;
mod human;
mod model;
mod output;
mod preload;
mod recommend;
mod record;
mod report;
mod saturating;
mod trace;

use std::process::ExitCode;

use clap::Parser as _;

/// The `nixtrace` command.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Record(args) => record_and_file(args.into()),
        cli::Command::Flamegraph(args) => flamegraph::run(&args.into()).map(|()| 0),
        cli::Command::Diff(args) => diff::run(&args.into()),
        cli::Command::Export(args) => cli::export(args).map(|()| 0),
        cli::Command::Dump(args) => dump::run(&args.file).map(|()| 0),
        cli::Command::Report(args) => report::run(&args.into()).map(|()| 0),
        cli::Command::Recommend(args) => cli::recommend(args).map(|()| 0),
        cli::Command::Preload(args) => preload::run(&args.into()).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)),
        Err(error) => {
            // One line, every cause: "nixtrace: error: reading x: y: z".
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("nixtrace: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `nixtrace record`, and with `--boot` the filing of the boot it recorded.
fn record_and_file(options: record::Options) -> anyhow::Result<i32> {
    let quiet = options.quiet;
    let recorded = record::run(options)?;
    if let Some(staged) = &recorded.boot {
        let trace = boots::file(staged)?;
        if !quiet {
            eprintln!("nixtrace: boot {} filed as {}", staged.boot_id, trace.display());
        }
    }
    Ok(recorded.exit_code)
}

/// What the fuzz targets call: everything that reads a trace, on bytes
/// that may be anything. Errors are fine; panics, hangs and unbounded
/// memory are the bugs.
#[doc(hidden)]
pub mod fuzzing {
    use crate::{analysis, diff, export, flamegraph, recommend, report, trace::TraceReader};

    /// Reads every event of `bytes` as a trace.
    pub fn read_trace(bytes: &[u8]) {
        if let Ok(reader) = TraceReader::new(bytes) {
            for event in reader {
                if event.is_err() {
                    break;
                }
            }
        }
    }

    /// Builds the report of `bytes`, renders it in every format, folds and
    /// draws every kind of flamegraph, compares it with itself and exports
    /// its timeline.
    pub fn report_pipeline(bytes: &[u8]) {
        let Ok(analysis) = analysis::analyse(bytes, "fuzz", &analysis::Filter::default()) else { return };
        let recommendations = recommend::recommend(&analysis, &recommend::Selection::default());
        for format in report::Format::ALL {
            report::render(&analysis, &recommendations, format, 10, false);
        }
        for format in recommend::Format::ALL {
            recommend::render(&analysis, &recommendations, format);
        }
        for kind in flamegraph::Kind::ALL {
            let stacks = flamegraph::stacks(&analysis, kind);
            let _ = flamegraph::svg(&stacks, kind, &analysis, false);
        }
        let _ = diff::compare((&analysis, &recommendations), (&analysis, &recommendations), Some(0.0));
        let _ = export::chrome_json_from(|| Ok(bytes), "fuzz");
    }
}
