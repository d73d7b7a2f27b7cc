//! Project automation for nixtrace, run as `cargo xtask <command>` (the alias
//! lives in `.cargo/config.toml`).
//!
//! - `cargo xtask setup` installs every prerequisite on Debian 12, skipping
//!   what is already there: the Debian packages (LLVM 22, build tools,
//!   strace, bpftrace, perf, patchelf, python3-venv, nix-bin, chromium, QEMU, debootstrap,
//!   linux-image-amd64), the nightly `rust-src` component, bpf-linker built
//!   against LLVM 22, cargo-fuzz, the Nix linters deadnix and statix (built
//!   from `shared/tools/statix/` beside the repository), the `duckdb`
//!   wheel in a venv in the target directory (`duckdb-venv/`, for
//!   tests/parquet.rs), and the tracefs mount. Installing the Debian packages and mounting tracefs needs root.
//! - `cargo xtask test` runs `setup`, then the whole suite: `cargo fmt
//!   --check`, the nix checks, clippy with `-D warnings`, the release build
//!   (which embeds the eBPF object), `cargo test` on one thread with the
//!   privileged tier (`--features nixtrace/privileged-tests`), the
//!   benchmarks' smoke run (`bench --smoke`), a minute of each fuzz target
//!   and the boot test. `--engines` also installs chdb-core and pyspark
//!   and runs the ClickHouse and Spark fleet queries in tests/parquet.rs. The tests
//!   load eBPF programs into the kernel, so this must run as root (`sudo -E
//!   cargo xtask test`). `--quick` skips fmt, the nix checks and clippy.
//! - `cargo xtask nix-check` checks every tracked `.nix` file: it parses with
//!   `nix-instantiate --parse`, runs deadnix and statix, and checks the
//!   formatting with alejandra. No Nix store is needed.
//!   `--format` formats the files first, as `nix fmt` would.
//! - `cargo xtask bench` measures tracing overhead against bpftrace, strace
//!   and the floor of empty BPF programs, and how fast `report` reads a big
//!   trace; it writes docs/benchmarks.md (`--smoke`: a quick check only).
//! - `cargo xtask demo` runs `setup`, builds the release binary, records the
//!   cold startup of `python3 -c "import json"` into `target/demo.ntr` and
//!   prints `nixtrace report` of it.
//!
//! - `cargo xtask boot-test` boots Debian's 6.1 kernel under QEMU with the
//!   boot unit and checks the trace the guest files.
//! - `cargo xtask fuzz` runs the fuzz targets in `fuzz/` (10 minutes each by
//!   default), seeded with traces it records.
//!
//! `setup.rs`, `test.rs`, `nix.rs`, `bench/`, `boot_test.rs`, `fuzz.rs` and
//! `demo.rs` hold one command each; this
//! file holds the command line and the few helpers they share (running a
//! command, finding cargo's directories, checking for root).
use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod boot_test;
mod demo;
mod fuzz;
mod nix;
mod setup;
mod test;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "nixtrace project automation: install prerequisites, run the test suite, check the Nix files, benchmark, run a demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install every prerequisite on Debian 12 (idempotent; installing packages needs root).
    ///
    /// Checks, and installs when missing: the Debian packages (llvm-22-dev,
    /// libpolly-22-dev, zlib1g-dev, libzstd-dev, build-essential, pkg-config,
    /// strace, bpftrace, linux-perf, patchelf, python3-venv, nix-bin, chromium, debootstrap,
    /// linux-image-amd64, qemu-system-x86), the `rust-src` component of the
    /// nightly toolchain, bpf-linker built against LLVM 22, cargo-fuzz and
    /// deadnix at pinned versions, the duckdb wheel (PyPI, pinned) in a venv
    /// at target/duckdb-venv for the Parquet tests, and the tracefs mount at
    /// /sys/kernel/tracing. Prints one line per step.
    Setup,
    /// Run setup, then fmt, the nix checks, clippy, the release build, all tests, fuzzing and the boot test (as root).
    ///
    /// The tests load real eBPF programs into the kernel and share it, so they
    /// run as root and on one thread: `sudo -E cargo xtask test`. After the
    /// tests, `bench --smoke` checks that the benchmarks run and that nixtrace
    /// loses no events in them, each fuzz target runs for a minute, and the
    /// boot test boots a Debian 6.1 guest. Stops at the first failing step
    /// and names it.
    Test(test::Args),
    /// Check every tracked .nix file: parse, deadnix, statix, alejandra's formatting (no Nix store needed).
    ///
    /// Parses each file with `nix-instantiate --parse` (Debian's nix-bin,
    /// with the empty `dummy://` store), then runs `deadnix --fail`, checks
    /// the formatting with alejandra (linked in, the formatter of `nix fmt`),
    /// and runs `statix check`. Runs every check, then fails naming those
    /// that failed. Run `cargo xtask setup` first to install nix-bin, deadnix
    /// and statix.
    NixCheck(nix::Args),
    /// Boot a Debian 6.1 guest under QEMU with the boot unit and check its trace (as root).
    ///
    /// Caches a debootstrap root file system in target/boot-vm/, installs the
    /// release nixtrace and systemd/nixtrace-boot.service, boots, and checks
    /// what the guest filed in /var/lib/nixtrace/boots: units attributed with
    /// execs and opens, the critical chain, no lost events, the report and
    /// flamegraphs. Part of `cargo xtask test`.
    BootTest,
    /// Fuzz the trace reader and the report pipeline (cargo-fuzz, nightly; as root).
    ///
    /// Records a few real traces as seeds, then runs each target in fuzz/
    /// for --seconds (default 600). Fails on a crash, leak, timeout or
    /// memory blow-up, keeping the input in target/fuzz/artifacts/. CI runs
    /// it briefly as part of `cargo xtask test`.
    Fuzz(fuzz::Args),
    /// Measure what tracing costs, against bpftrace and strace (as root; about 12 minutes).
    ///
    /// Runs an open storm, an exec storm, 200 `python3 -c pass` and a small
    /// `make -j2` build untraced and under `nixtrace record -- CMD`, nixtrace
    /// system-wide, bpftrace printing the same events, `strace -f`, and empty
    /// BPF programs on nixtrace's tracepoints (the floor), in untraced/traced
    /// pairs. Then times `report`, `flamegraph` and `export --format parquet
    /// --events` on a 10-million-event trace (and the Parquet tables' bytes
    /// per event). Writes docs/benchmarks.md: slowdowns, events and lost events,
    /// bytes per event, the recorder's CPU and memory, attach time, and the
    /// project's targets met or missed. Run it on an otherwise idle machine.
    /// `--smoke` (part of `cargo xtask test`) runs tiny sizes once and only
    /// checks that everything ran and that nixtrace lost no events.
    Bench(bench::Args),
    /// Run setup, build, and trace the startup of `python3 -c "import json"` (as root).
    ///
    /// Drops the page cache (`record --cold`), records into target/demo.ntr
    /// and prints `nixtrace report` of it: processes, loader cost, disk
    /// reads, time.
    Demo,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Setup => setup::run(),
        Cmd::Test(args) => test::run(&args),
        Cmd::NixCheck(args) => nix::run(&args),
        Cmd::BootTest => boot_test::run_test(),
        Cmd::Fuzz(args) => fuzz::run_fuzz(&args),
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Demo => demo::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The whole chain of causes, without anyhow's backtrace.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: commands run from here.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives inside the workspace")
}

/// Cargo's target directory (`$CARGO_TARGET_DIR`, else `target/` at the root).
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// `$CARGO_HOME/bin` (default `~/.cargo/bin`), where `cargo install` puts bpf-linker.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))?;
    Some(home.join("bin"))
}

/// `$PATH` with `$CARGO_HOME/bin` in front if it is not there already, so
/// that children (and the tracer's build script) find a freshly installed
/// bpf-linker even under `sudo`, whose PATH usually lacks it.
fn tool_path() -> OsString {
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&path).collect();
    if let Some(bin) = cargo_bin_dir()
        && !dirs.contains(&bin)
    {
        dirs.insert(0, bin);
    }
    env::join_paths(dirs).unwrap_or(path)
}

/// A command to run from the repository root, with cargo's bin directory on PATH.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    // `cargo run` points LD_LIBRARY_PATH into target/; programs we start
    // (and trace) must see the machine's own loader search path.
    cmd.current_dir(repo_root()).env("PATH", tool_path()).env_remove("LD_LIBRARY_PATH");
    cmd
}

/// `cargo` with the given arguments, via [`command`].
pub fn cargo<const N: usize>(args: [&str; N]) -> Command {
    let mut cmd = command("cargo");
    cmd.args(args);
    cmd
}

/// The command line as a shell user would type it, with any environment it
/// sets (except PATH) in front.
fn describe(cmd: &Command) -> String {
    let envs = cmd
        .get_envs()
        .filter(|(key, _)| *key != "PATH")
        .filter_map(|(key, value)| Some(format!("{}={}", key.to_string_lossy(), value?.to_string_lossy())));
    let words = std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|word| {
        let word = word.to_string_lossy();
        if word.is_empty() || word.contains([' ', '"', '\'', '$']) {
            format!("'{}'", word.replace('\'', r"'\''"))
        } else {
            word.into_owned()
        }
    });
    envs.chain(words).collect::<Vec<_>>().join(" ")
}

fn not_started(cmd: &Command, line: &str) -> String {
    let program = cmd.get_program().to_string_lossy();
    format!("could not start `{line}` (is `{program}` installed and on PATH?)")
}

/// Prints `cmd`, runs it with inherited stdio and fails, naming the command
/// and its exit status, unless it succeeds.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    println!("$ {line}");
    let status = cmd.status().with_context(|| not_started(cmd, &line))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout; fails with its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = describe(cmd);
    let out = cmd.stdin(Stdio::null()).output().with_context(|| not_started(cmd, &line))?;
    if !out.status.success() {
        bail!("`{line}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // `Uid:` lists the real, effective, saved and filesystem uids.
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1))
            == Some("0")
    })
}
