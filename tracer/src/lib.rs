//! nixtrace: an eBPF startup and boot tracer.
//!
//! Data flows one way: kernel probes (`tracer-ebpf`) → `record` → the trace
//! file (`trace`) → the model of processes and units (`model`) → outputs
//! (`report`, `flamegraph`, `diff`, `export`, `dump`). See
//! docs/architecture.md.
//!
//! The binary is [`main`]; the library exists so that the fuzz targets
//! (`fuzz/`) can feed arbitrary bytes to the reader and the report
//! pipeline ([`fuzzing`]).

mod cli;
mod diff;
mod dump;
mod export;
mod flamegraph;
mod model;
mod output;
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
        cli::Command::Record(args) => record::run(args),
        cli::Command::Flamegraph(args) => flamegraph::run(&args).map(|()| 0),
        cli::Command::Diff(args) => diff::run(&args),
        cli::Command::Export(args) => export::run(&args).map(|()| 0),
        cli::Command::Dump(args) => dump::run(&args.file).map(|()| 0),
        cli::Command::Report(args) => report::run(&args).map(|()| 0),
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

/// What the fuzz targets call: everything that reads a trace, on bytes
/// that may be anything. Errors are fine; panics, hangs and unbounded
/// memory are the bugs.
#[doc(hidden)]
pub mod fuzzing {
    use crate::{diff, export, flamegraph, report, trace::TraceReader};

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
        let selection = report::Selection { top: 10, ..Default::default() };
        let Ok(report) = report::build_from(bytes, "fuzz", &selection) else { return };
        for format in [report::Format::Text, report::Format::Markdown, report::Format::Json] {
            report::render(&report, format, &selection, false);
        }
        for kind in flamegraph::Kind::ALL {
            let stacks = flamegraph::stacks(&report, kind);
            let _ = flamegraph::svg(&stacks, kind, &report, false);
        }
        let _ = diff::compare(&report, &report, Some(0.0));
        let _ = export::chrome_json_from(bytes, "fuzz");
    }
}
