//! nixtrace: an eBPF startup and boot tracer.
//!
//! Data flows one way: kernel probes (`tracer-ebpf`) → `record` → the trace
//! file (`trace`) → readers such as `dump`. See docs/architecture.md.

mod cli;
mod dump;
mod record;
mod trace;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Record(args) => record::run(args),
        cli::Command::Dump(args) => dump::run(&args.file).map(|()| 0),
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
