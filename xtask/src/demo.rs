//! `cargo xtask demo`: records the startup of a real program with the real
//! probes and prints nixtrace's report of it: the process tree, loader
//! cost, what was read from disk and where the time went.
use anyhow::{Context as _, Result, bail};

/// The program whose startup is recorded: Python importing a module, with
/// a cold page cache so the disk reads show.
const PROGRAM: [&str; 3] = ["python3", "-c", "import json"];

pub fn run() -> Result<()> {
    if !crate::is_root() {
        bail!(
            "recording loads eBPF programs into the kernel: run the demo as root (sudo -E cargo xtask demo)"
        );
    }
    crate::setup::run().context("setup failed")?;
    crate::run(&mut crate::cargo(["build", "--release"]))?;

    let nixtrace = crate::target_dir().join("release/nixtrace");
    let trace = crate::target_dir().join("demo.ntr");
    crate::run(
        crate::command(&nixtrace)
            .args(["record", "--cold", "--force", "-o"])
            .arg(&trace)
            .arg("--")
            .args(PROGRAM),
    )?;
    crate::run(crate::command(&nixtrace).arg("report").arg(&trace).args(["--top", "10"]))?;
    println!("\nMore: `{0} report {1} --format json`, `{0} dump {1}`.", nixtrace.display(), trace.display());
    Ok(())
}
