//! `cargo xtask setup`: installs the prerequisites, one function per step.
//! Each step checks first and prints `ok: ...` when there is nothing to do,
//! or `installing: ...` before it changes the machine.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{command, output, repo_root, run as run_cmd, target_dir};

/// Everything the build, the tests and the demo need from Debian 12.
const DEBIAN_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "build-essential",
    "pkg-config",
    "strace",
    "bpftrace",
    "linux-perf",
    "patchelf",
    // The compiler caches whose hits build-parallelism counts, in tests/recommend.rs.
    "ccache",
    "sccache",
    // The venv that holds the duckdb wheel, for tests/parquet.rs.
    "python3-venv",
    // nix-instantiate, for `cargo xtask nix-check`'s parse check of every .nix file;
    // nix-build and nix-store, for the store fixture of tests/nix.rs. Nothing
    // else is needed: as root, nix-build creates /nix/store and /nix/var/nix
    // itself, and the tests pass the options a Debian machine lacks
    // (`build-users-group ''`: there is no nixbld group) on the command line
    // instead of writing a nix.conf (NIX_OPTIONS in tests/common/mod.rs).
    "nix-bin",
    // Headless rendering of a flamegraph, in tests/pictures.rs.
    "chromium",
    // The boot test: a Debian root file system, its 6.1 kernel, a VM.
    "debootstrap",
    "linux-image-amd64",
    "qemu-system-x86",
];

/// The DuckDB that tests/parquet.rs queries the exported tables with: the
/// wheel from PyPI (the duckdb crate would compile 29 MB of C++), pinned.
const DUCKDB_VERSION: &str = "2.0.1";

/// The engines `cargo xtask test --engines` runs the fleet queries with,
/// from PyPI, pinned: ClickHouse as chdb-core, Spark as pyspark.
const ENGINES: &[(&str, &str)] = &[("chdb-core", "26.9.0"), ("pyspark", "4.1.1")];

/// Where llvm-22-dev installs LLVM; bpf-linker links against it.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const TRACEFS: &str = "/sys/kernel/tracing";

/// A tool that `cargo install` builds from source at a pinned version.
struct CargoTool {
    /// The crate, which is also the executable's name.
    name: &'static str,
    version: &'static str,
    source: Source,
    /// Extra arguments to `cargo install` (features).
    args: &'static [&'static str],
    /// Environment for the build.
    env: &'static [(&'static str, &'static str)],
    /// Shown while it builds.
    what: &'static str,
}

/// Where `cargo install` takes a tool's source from.
enum Source {
    /// crates.io, at the tool's version.
    CratesIo,
    /// A crate in the `shared/` folder beside the repository (CI puts a copy
    /// there), given by its path inside that folder; the folder's README
    /// says where the source comes from. It is built with its own
    /// `Cargo.lock` (no retry without `--locked`) into `NAME/` in cargo's
    /// target directory (`target/statix`): with `--path`, cargo would
    /// otherwise build inside the source tree, which is read-only in CI.
    Shared(&'static str),
}

/// The eBPF linker, built from source against the system's LLVM 22.
const BPF_LINKER: CargoTool = CargoTool {
    name: "bpf-linker",
    version: "0.13.0",
    source: Source::CratesIo,
    args: &["--no-default-features", "--features", "llvm-22"],
    // aya-rustc-llvm-proxy finds libLLVM through LLVM_PREFIX (without it
    // linking fails on -lLLVM); llvm-sys 221 reads its own variable.
    env: &[("LLVM_PREFIX", LLVM_PREFIX), ("LLVM_SYS_221_PREFIX", LLVM_PREFIX)],
    what: "against LLVM 22 (a few minutes)",
};

/// The Nix linters that `cargo xtask nix-check` runs, the two the flake's
/// lint check runs besides alejandra (whose library nix.rs links instead).
/// statix is not on crates.io (the crate named `statix` there is another
/// program) nor in Debian 12, so it is built from the copy of its source
/// in `shared/tools/statix/`.
const NIX_TOOLS: [CargoTool; 2] = [
    CargoTool {
        name: "deadnix",
        version: "1.3.1",
        source: Source::CratesIo,
        args: &[],
        env: &[],
        what: "(about a minute)",
    },
    CargoTool {
        name: "statix",
        version: "0.5.8",
        source: Source::Shared("tools/statix/bin"),
        args: &[],
        env: &[],
        what: "from shared/tools/statix (one to two minutes)",
    },
];

/// libFuzzer's cargo front end, for `cargo xtask fuzz`.
const CARGO_FUZZ: CargoTool = CargoTool {
    name: "cargo-fuzz",
    version: "0.12.0",
    source: Source::CratesIo,
    args: &[],
    env: &[],
    what: "(about a minute)",
};

/// Runs every step in order; the Debian packages come first because
/// bpf-linker is built against their LLVM.
pub fn run() -> Result<()> {
    let root = crate::is_root();
    debian_packages(root)?;
    rust_src()?;
    for tool in [&BPF_LINKER, &CARGO_FUZZ].into_iter().chain(&NIX_TOOLS) {
        cargo_tool(tool)?;
    }
    duckdb()?;
    tracefs(root);
    Ok(())
}

/// The venv in cargo's target directory that holds the duckdb wheel
/// (tests/parquet.rs finds it there, beside its `tmp/`).
pub fn duckdb_venv() -> PathBuf {
    target_dir().join("duckdb-venv")
}

/// Installs chdb-core and pyspark at their pinned versions into
/// `target/engines-venv`, unless they are there; returns its python.
pub fn engines() -> Result<PathBuf> {
    let venv = target_dir().join("engines-venv");
    let python = venv.join("bin/python");
    let wanted: Vec<String> = ENGINES.iter().map(|(name, version)| format!("{name}=={version}")).collect();
    let installed = output(Command::new(&python).args(["-m", "pip", "freeze"])).unwrap_or_default();
    if wanted.iter().all(|w| installed.lines().any(|line| line.trim() == w)) {
        println!("ok: {} in {}", wanted.join(" "), venv.display());
        return Ok(python);
    }
    println!("installing: {} in {} (about 1.5 GB)", wanted.join(" "), venv.display());
    if !python.exists() {
        run_cmd(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("creating the venv failed (Debian's python3-venv provides `python3 -m venv`)")?;
    }
    run_cmd(Command::new(&python).args(["-m", "pip", "install", "--quiet"]).args(&wanted))?;
    Ok(python)
}

/// Installs the duckdb wheel, at its pinned version, into
/// [`duckdb_venv`], unless it is there already.
fn duckdb() -> Result<()> {
    let venv = duckdb_venv();
    let python = venv.join("bin/python");
    let version = || {
        output(Command::new(&python).args(["-c", "import duckdb; print(duckdb.__version__)"]))
            .map(|v| v.trim().to_string())
    };
    if let Ok(found) = version() {
        if found == DUCKDB_VERSION {
            println!("ok: duckdb {found} in {}", venv.display());
            return Ok(());
        }
        println!("installing: duckdb {DUCKDB_VERSION} in {} (found {found})", venv.display());
    } else {
        println!("installing: duckdb {DUCKDB_VERSION} in {}", venv.display());
    }
    if !python.exists() {
        run_cmd(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("creating the venv failed (Debian's python3-venv provides `python3 -m venv`)")?;
    }
    run_cmd(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        &format!("duckdb=={DUCKDB_VERSION}"),
    ]))?;
    match version() {
        Ok(found) if found == DUCKDB_VERSION => Ok(()),
        found => bail!(
            "duckdb {DUCKDB_VERSION} was installed into {} but importing it gives {found:?}",
            venv.display()
        ),
    }
}

fn debian_packages(root: bool) -> Result<()> {
    let mut missing = Vec::new();
    for package in DEBIAN_PACKAGES {
        if !deb_installed(package)? {
            missing.push(*package);
        }
    }
    if missing.is_empty() {
        println!("ok: Debian packages ({})", DEBIAN_PACKAGES.join(" "));
        return Ok(());
    }
    let missing = missing.join(" ");
    if !root {
        bail!(
            "missing Debian packages: {missing}\n\
             installing them needs root: run `sudo -E cargo xtask setup` \
             (or `sudo apt-get install --no-install-recommends {missing}`)"
        );
    }
    println!("installing: Debian packages {missing}");
    run_cmd(Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"))?;
    run_cmd(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(missing.split(' ')),
    )
    .context(
        "installing the Debian packages failed (the llvm-22 packages need a source that \
         has them, such as apt.llvm.org's llvm-toolchain-bookworm-22)",
    )
}

/// Whether dpkg reports `package` as installed.
fn deb_installed(package: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .context("could not run dpkg-query: `cargo xtask setup` supports Debian 12 only")?;
    // "install ok installed"; a removed package leaves "deinstall ok config-files".
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).ends_with(" installed"))
}

/// aya-build compiles the eBPF crate with nightly and `-Z build-std=core`,
/// which needs nightly's `rust-src`.
fn rust_src() -> Result<()> {
    let toolchains = output(command("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|line| line.starts_with("nightly")) {
        bail!(
            "the nightly toolchain is missing (`rustup toolchain list` shows none); the eBPF \
             programs are built with it. Install it with \
             `rustup toolchain install nightly --profile minimal --component rust-src`"
        );
    }
    let installed =
        output(command("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))?;
    // Listed as `rust-src`, without a target suffix.
    if installed.lines().any(|line| line.trim() == "rust-src") {
        println!("ok: rust-src for the nightly toolchain");
        return Ok(());
    }
    println!("installing: rust-src for the nightly toolchain");
    run_cmd(command("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// Installs `tool` with `cargo install` unless `TOOL --version` already
/// names its pinned version.
fn cargo_tool(tool: &CargoTool) -> Result<()> {
    let name = tool.name;
    if let Some(version) = installed_version(tool) {
        if has_version(&version, tool.version) {
            println!("ok: {version}");
            return Ok(());
        }
        println!("installing: {name} {} (found `{version}`) {}", tool.version, tool.what);
    } else {
        println!("installing: {name} {} {}", tool.version, tool.what);
    }
    if let Source::Shared(path) = tool.source {
        let dir = shared_dir().join(path);
        if !dir.join("Cargo.toml").is_file() {
            bail!(
                "cannot install {name} {}: its source is missing, {} has no Cargo.toml \
                 (the shared/ folder must sit beside the repository, as in CI; \
                 shared/tools/README.md describes it)",
                tool.version,
                dir.display(),
            );
        }
    }
    match cargo_install(tool, true) {
        Err(err) if matches!(tool.source, Source::CratesIo) => {
            println!("warning: {err:#}; retrying without --locked");
            cargo_install(tool, false)?;
        }
        result => result?,
    }
    match installed_version(tool) {
        Some(version) if has_version(&version, tool.version) => Ok(()),
        found => bail!(
            "{name} {} was installed but `{name} --version` gives {} \
             (is $CARGO_HOME/bin, usually ~/.cargo/bin, where cargo installed it?)",
            tool.version,
            found.map_or("nothing".to_owned(), |version| format!("`{version}`")),
        ),
    }
}

/// `TOOL --version`, looked up in PATH and in `$CARGO_HOME/bin`.
fn installed_version(tool: &CargoTool) -> Option<String> {
    let version = output(command(tool.name).arg("--version")).ok()?;
    Some(version.trim().to_owned())
}

/// Whether a `--version` line (`deadnix 1.3.1`, `bpf-linker 0.13.0`) names `version`.
fn has_version(line: &str, version: &str) -> bool {
    line.split_whitespace().any(|word| word.trim_start_matches('v') == version)
}

/// The `shared/` folder beside the repository, which holds source trees of
/// tools (`Source::Shared`).
fn shared_dir() -> PathBuf {
    repo_root().parent().unwrap_or(repo_root()).join("shared")
}

fn cargo_install(tool: &CargoTool, locked: bool) -> Result<()> {
    let mut cmd = command("cargo");
    cmd.arg("install");
    match tool.source {
        Source::CratesIo => cmd.args([tool.name, "--version", tool.version]),
        Source::Shared(path) => cmd
            .arg("--path")
            .arg(shared_dir().join(path))
            .arg("--target-dir")
            .arg(target_dir().join(tool.name)),
    };
    if locked {
        cmd.arg("--locked");
    }
    cmd.args(tool.args).envs(tool.env.iter().copied());
    run_cmd(&mut cmd)
}

/// The tracer reads tracepoint formats from tracefs. Not fatal: nixtrace
/// mounts it itself when it runs as root.
fn tracefs(root: bool) {
    if Path::new(TRACEFS).join("events").exists() {
        println!("ok: tracefs mounted at {TRACEFS}");
        return;
    }
    if !root {
        println!(
            "warning: {TRACEFS}/events is not visible and mounting tracefs needs root \
             (nixtrace mounts it itself when run as root)"
        );
        return;
    }
    println!("installing: tracefs mount at {TRACEFS}");
    if let Err(err) = run_cmd(Command::new("mount").args(["-t", "tracefs", "tracefs", TRACEFS])) {
        println!("warning: {err:#} (nixtrace tries to mount it itself)");
    }
}
