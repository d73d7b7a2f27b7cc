//! nixtrace: an eBPF startup and boot tracer.
//!
//! Data flows one way: kernel probes (`tracer-ebpf`) → `record` → the trace
//! file (`trace`) → the model of processes and units (`model`) → outputs
//! (`report`, `flamegraph`, `dump`). See docs/architecture.md.

mod cli;
mod diff;
mod dump;
mod export;
mod flamegraph;
mod model;
mod output;
mod record;
mod report;
mod trace;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
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
