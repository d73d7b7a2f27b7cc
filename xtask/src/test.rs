//! `cargo xtask test`: setup, then every check CI runs, in order, stopping at
//! the first failure.
use std::process::Command;

use anyhow::{Context as _, Result, bail};

#[derive(clap::Args)]
pub struct Args {
    /// Skip `cargo fmt --check`, clippy and the nix checks: only build and run the tests.
    #[arg(long)]
    quick: bool,
    /// Also run the ClickHouse and Spark versions of the fleet queries
    /// (docs/fleet-clickhouse.sql, docs/fleet-spark.sql) in tests/parquet.rs,
    /// with chdb-core and pyspark, which setup then installs into
    /// target/engines-venv (about 1.5 GB; Spark needs Java 17).
    #[arg(long)]
    engines: bool,
}

/// The feature that builds the tests needing root, the running kernel or
/// Debian's binaries (tracer/Cargo.toml).
const PRIVILEGED_TESTS: &str = "nixtrace/privileged-tests";

/// One step of the suite: a command, or a check that runs several.
enum Step {
    Cmd(Command),
    Fn(fn() -> Result<()>),
}

pub fn run(args: &Args) -> Result<()> {
    if !crate::is_root() {
        bail!(
            "the test suite loads eBPF programs into the kernel: run it as root \
             (sudo -E cargo xtask test)"
        );
    }
    crate::setup::run().context("setup failed")?;
    let engines =
        if args.engines { Some(crate::setup::engines().context("setup --engines failed")?) } else { None };

    // tracer-ebpf only builds for the BPF target (tracer/build.rs builds it),
    // so the workspace-wide steps leave it out. The privileged tier (the
    // suites under tests/, which need root, this kernel and Debian's
    // binaries, and the unit tests that read this kernel) is only built with
    // nixtrace's `privileged-tests` feature: clippy and the tests turn it on.
    let mut steps: Vec<(&str, Step)> = Vec::new();
    if !args.quick {
        steps.push(("format check", Step::Cmd(crate::cargo(["fmt", "--all", "--", "--check"]))));
        // Every tracked .nix file: parse, deadnix, statix, alejandra (nix.rs).
        steps.push(("nix checks", Step::Fn(crate::nix::check_only)));
        steps.push((
            "clippy",
            Step::Cmd(crate::cargo([
                "clippy",
                "--workspace",
                "--exclude",
                "tracer-ebpf",
                "--features",
                PRIVILEGED_TESTS,
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])),
        ));
    }
    // Builds target/release/nixtrace as shipped, with the real eBPF object
    // embedded: the benchmarks, the fuzz seeds and the boot test use it. The
    // tests' optimised build adds the privileged-tests feature, which only
    // adds test code, but cargo keys builds by features: it is built once more.
    steps.push(("release build", Step::Cmd(crate::cargo(["build", "--release"]))));
    // One thread: the privileged tests share the kernel's tracepoints and maps.
    let mut tests = crate::cargo([
        "test",
        "--release",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--features",
        PRIVILEGED_TESTS,
        "--",
        "--test-threads=1",
    ]);
    if let Some(python) = engines {
        // tests/parquet.rs runs the ClickHouse and Spark queries with it.
        tests.env("NIXTRACE_ENGINES_PYTHON", python);
    }
    steps.push(("tests", Step::Cmd(tests)));
    // Every benchmark workload and contender once, at tiny sizes: it runs,
    // and nixtrace lost no events (bench/mod.rs). Not timed: timings are for
    // `cargo xtask bench` on an idle machine.
    steps.push(("bench smoke run", Step::Fn(crate::bench::smoke)));
    // Brief, with a fixed seed so the verdict is reproducible: exploring is
    // for `cargo xtask fuzz` (10 minutes a target, a fresh seed each run).
    steps.push((
        "fuzz (60 s a target)",
        Step::Fn(|| crate::fuzz::run_fuzz(&crate::fuzz::Args { seconds: 60, seed: Some(1) })),
    ));
    // A real boot of Debian's 6.1 kernel traced by the unit (boot_test.rs).
    steps.push(("boot test", Step::Fn(crate::boot_test::run_test)));

    let total = steps.len();
    for (i, (name, step)) in steps.into_iter().enumerate() {
        println!("==> [{}/{total}] {name}", i + 1);
        match step {
            Step::Cmd(mut cmd) => crate::run(&mut cmd),
            Step::Fn(check) => check(),
        }
        .with_context(|| format!("test step `{name}` failed"))?;
    }
    println!("==> all {total} steps passed");
    Ok(())
}
