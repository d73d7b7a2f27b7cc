//! `cargo xtask nix-check`: checks every `.nix` file that git tracks, without
//! a Nix store, daemon or binary cache (CI here reaches none of them):
//!
//! - `nix-instantiate --parse` (Debian's nix-bin) parses each file. It runs
//!   with `--store dummy://`, a store that holds and writes nothing, so it
//!   needs neither root nor `/nix` (without it, nix-instantiate run as root
//!   creates `/nix/store` and `/nix/var/nix` just to parse a file);
//! - `deadnix --fail`: unused `let` bindings and function arguments;
//! - alejandra: formatting, by the formatter the flake offers to `nix fmt`.
//!   Its command-line crate is not on crates.io, so this links its library
//!   (3.1.0, the code behind `alejandra --check`) and formats in memory.
//!   nixpkgs ships alejandra 4.0.0 as of this writing, which formats the same except for `/**
//!   */` doc comments and the pipe operators, which no file here uses.
//!   `--format` writes the formatted files back first, as `nix fmt` would;
//! - `statix check`: statix's lints (such as W20, repeated keys), each
//!   finding on one line (`--format errfmt`). It is on neither crates.io nor Debian 12, so
//!   `cargo xtask setup` builds 0.5.8 from the copy of its source in
//!   `shared/tools/statix/`, beside the repository; without it this fails
//!   and says to run setup.
//!
//! With the parse check, that is what the flake's `lint` check runs
//! (`alejandra --check`, `deadnix --fail` and `statix check` with its
//! default configuration), on the `.nix` files git tracks instead of the
//! flake's copy of every `.nix` file. Every check runs on every file; the
//! command then fails naming each check that failed. Nothing here evaluates
//! or builds anything: the flake's package and its NixOS VM test need `nix
//! flake check` on a machine with Nix and its binary cache.
use std::{
    fs,
    process::{Command, Stdio},
};

use alejandra::format::Status;
use anyhow::{Context as _, Result, bail};

use crate::{command, output, repo_root};

#[derive(clap::Args)]
pub struct Args {
    /// Format the files in place with alejandra first (what `nix fmt` does), then check.
    #[arg(long)]
    format: bool,
}

/// For `cargo xtask test`: check only, never write.
pub fn check_only() -> Result<()> {
    run(&Args { format: false })
}

pub fn run(args: &Args) -> Result<()> {
    let files = tracked_nix_files()?;
    if files.is_empty() {
        bail!("git tracks no .nix files here (is this a git checkout?)");
    }
    println!("nix checks of {} tracked files: {}", files.len(), files.join(" "));

    let mut failed = Vec::new();
    // Formatting first, so that with --format the other checks see the result.
    for file in &files {
        if let Err(err) = check_format(file, args.format) {
            println!("error: {err:#}");
            failed.push(format!("alejandra {file}"));
        }
    }
    for file in &files {
        let mut cmd = command("nix-instantiate");
        // The parsed expression goes to stdout; only the errors matter.
        cmd.args(["--store", "dummy://", "--parse", file]).stdout(Stdio::null());
        check(&mut failed, &format!("nix-instantiate --parse {file}"), &mut cmd);
    }
    check(&mut failed, "deadnix", command("deadnix").arg("--fail").args(&files));
    match output(command("statix").arg("--version")) {
        // It takes one file or directory; a finding or a parse error makes it fail.
        Ok(_) => {
            for file in &files {
                let mut cmd = command("statix");
                cmd.args(["check", "--format", "errfmt", file]);
                check(&mut failed, &format!("statix check {file}"), &mut cmd);
            }
        }
        Err(err) => {
            println!("error: {err:#}\nstatix is missing: `cargo xtask setup` installs it");
            failed.push("statix (not installed: run `cargo xtask setup`)".to_owned());
        }
    }

    if failed.is_empty() {
        println!("ok: nix checks");
        Ok(())
    } else {
        bail!("nix checks failed: {}", failed.join(", "))
    }
}

/// The `.nix` files git tracks, as paths from the repository root.
fn tracked_nix_files() -> Result<Vec<String>> {
    let listing = output(command("git").args(["ls-files", "-z", "--", "*.nix"]))?;
    Ok(listing.split('\0').filter(|path| !path.is_empty()).map(str::to_owned).collect())
}

/// Formats `file` with alejandra in memory: fails if it does not parse or,
/// unless `write`, if formatting would change it; with `write`, saves the
/// formatted text.
fn check_format(file: &str, write: bool) -> Result<()> {
    let path = repo_root().join(file);
    let before = fs::read_to_string(&path).with_context(|| format!("reading {file}"))?;
    match alejandra::format::in_memory(file.to_owned(), before) {
        (Status::Error(err), _) => bail!("alejandra cannot parse {file}: {err}"),
        (Status::Changed(false), _) => {
            println!("ok: alejandra {file}");
            Ok(())
        }
        (Status::Changed(true), after) if write => {
            fs::write(&path, after).with_context(|| format!("writing {file}"))?;
            println!("formatted: {file}");
            Ok(())
        }
        (Status::Changed(true), _) => bail!(
            "{file} is not formatted as alejandra formats it \
             (`cargo xtask nix-check --format` or `nix fmt` rewrites it)"
        ),
    }
}

/// Runs `cmd` via [`crate::run`]; on failure prints why and records `name`.
fn check(failed: &mut Vec<String>, name: &str, cmd: &mut Command) {
    if let Err(err) = crate::run(cmd) {
        println!("error: {err:#}");
        failed.push(name.to_owned());
    }
}
