//! `cargo xtask fuzz`: runs the fuzz targets in `fuzz/` (cargo-fuzz,
//! libFuzzer, AddressSanitizer, nightly) for a while each, seeded with real
//! traces recorded on this machine. A crash, a leak, a timeout or a blown
//! memory limit fails the command, leaving the input that caused it under
//! `target/fuzz/artifacts/<target>/`. Inputs that once crashed, once fixed,
//! go in `fuzz/regressions/<target>/`, which every run replays first.
use std::{fs, path::Path};

use anyhow::{Context as _, Result, bail};

use crate::{command, run};

const TARGETS: [&str; 2] = ["trace_reader", "report_pipeline"];

#[derive(clap::Args)]
pub struct Args {
    /// How long to fuzz each target, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub seconds: u64,
    /// libFuzzer's random seed; by default a fresh one each run. CI fixes
    /// it so that a run's verdict depends on the code, not on luck.
    #[arg(long)]
    pub seed: Option<u32>,
}

/// Seeds: traces of real programs, recorded with the release build (so
/// this needs root), plus an empty file.
fn record_seeds(seeds: &Path) -> Result<()> {
    fs::create_dir_all(seeds)?;
    let nixtrace = crate::target_dir().join("release/nixtrace");
    let commands: [&[&str]; 3] = [
        &["/bin/true"],
        &["/bin/sh", "-c", "ls / >/dev/null; cat /etc/hostname >/dev/null; /bin/false || true"],
        &["python3", "-c", "import json"],
    ];
    for (i, cmd) in commands.iter().enumerate() {
        let trace = seeds.join(format!("seed-{i}.ntr"));
        run(command(&nixtrace).args(["record", "-q", "-f", "-o"]).arg(&trace).arg("--").args(*cmd))?;
    }
    fs::write(seeds.join("empty"), b"")?;
    Ok(())
}

pub fn run_fuzz(args: &Args) -> Result<()> {
    if !crate::is_root() {
        bail!("recording the seed traces loads eBPF programs: run it as root");
    }
    run(&mut crate::cargo(["build", "--release", "-p", "nixtrace"]))?;
    let dir = crate::target_dir().join("fuzz");
    let seeds = dir.join("seeds");
    record_seeds(&seeds)?;
    for target in TARGETS {
        let corpus = dir.join("corpus").join(target);
        let artifacts = dir.join("artifacts").join(target);
        let regressions = crate::repo_root().join("fuzz/regressions").join(target);
        fs::create_dir_all(&corpus)?;
        fs::create_dir_all(&artifacts)?;
        println!("==> fuzzing {target} for {} s", args.seconds);
        let mut fuzz = command("cargo");
        fuzz.current_dir(crate::repo_root().join("fuzz"))
            .args(["+nightly", "fuzz", "run", target])
            // New inputs go to the first directory; the others are only read.
            .args([&corpus, &seeds])
            .args(regressions.is_dir().then_some(&regressions))
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            // Trace files are bigger than libFuzzer's default 4 KiB inputs.
            .args(["-max_len=262144", "-timeout=30", "-rss_limit_mb=2048", "-print_final_stats=1"]);
        if let Some(seed) = args.seed {
            fuzz.arg(format!("-seed={seed}"));
        }
        run(&mut fuzz).with_context(|| {
            format!("fuzz target {target} failed; the input is in {}", artifacts.display())
        })?;
    }
    Ok(())
}
