//! `cargo xtask test`: setup, then every check CI runs, in order, stopping at
//! the first failure.
use anyhow::{Context as _, Result, bail};

#[derive(clap::Args)]
pub struct Args {
    /// Skip `cargo fmt --check` and clippy: only build and run the tests.
    #[arg(long)]
    quick: bool,
}

pub fn run(args: &Args) -> Result<()> {
    if !crate::is_root() {
        bail!(
            "the test suite loads eBPF programs into the kernel: run it as root \
             (sudo -E cargo xtask test)"
        );
    }
    crate::setup::run().context("setup failed")?;

    // tracer-ebpf only builds for the BPF target (tracer/build.rs builds it),
    // so the workspace-wide steps leave it out.
    let mut steps = Vec::new();
    if !args.quick {
        steps.push(("format check", crate::cargo(["fmt", "--all", "--", "--check"])));
        steps.push((
            "clippy",
            crate::cargo([
                "clippy",
                "--workspace",
                "--exclude",
                "tracer-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ));
    }
    // Builds target/release/nixtrace with the real eBPF object embedded;
    // the tests then run against that same optimised build.
    steps.push(("release build", crate::cargo(["build", "--release"])));
    // One thread: the privileged tests share the kernel's tracepoints and maps.
    steps.push((
        "tests",
        crate::cargo([
            "test",
            "--release",
            "--workspace",
            "--exclude",
            "tracer-ebpf",
            "--",
            "--test-threads=1",
        ]),
    ));

    let total = steps.len();
    for (i, (name, mut cmd)) in steps.into_iter().enumerate() {
        println!("==> [{}/{total}] {name}", i + 1);
        crate::run(&mut cmd).with_context(|| format!("test step `{name}` failed"))?;
    }
    println!("==> all {total} steps passed");
    Ok(())
}
