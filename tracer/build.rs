//! Builds the kernel programs (`tracer-ebpf`) with aya-build and leaves the
//! object in `$OUT_DIR/nixtrace-ebpf.o`, which `src/record/load.rs` embeds.
//!
//! Where bpf-linker is missing (or `AYA_BUILD_SKIP=1`), a debug build still
//! compiles, for `cargo check` and clippy, with an empty stub object; the
//! binary then refuses to record and says why. A release build without the
//! real object is an error: the stub is never shipped. Fuzz builds
//! (`cargo xtask fuzz`) only read traces and always get the stub.
use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

const OBJECT: &str = "nixtrace-ebpf.o";

fn main() -> Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rustc-check-cfg=cfg(nixtrace_stub_ebpf)");
    println!("cargo:rustc-check-cfg=cfg(fuzzing)");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let have_linker = Command::new("bpf-linker").arg("--version").output().is_ok_and(|o| o.status.success());
    // Fuzz builds (cargo-fuzz sets `--cfg fuzzing`) only read traces, and
    // their sanitizer flags must not reach the BPF build.
    let fuzzing = env::var_os("CARGO_CFG_FUZZING").is_some();

    if fuzzing {
        fs::write(out_dir.join(OBJECT), b"")?;
        println!("cargo:rustc-cfg=nixtrace_stub_ebpf");
        return Ok(());
    }
    if skip || !have_linker {
        if env::var("PROFILE").as_deref() == Ok("release") {
            bail!(
                "bpf-linker is missing (or AYA_BUILD_SKIP is set): a release build must embed the \
                 real eBPF programs. Run `cargo xtask setup` first."
            );
        }
        println!(
            "cargo:warning=building nixtrace WITHOUT its eBPF programs ({}); it will refuse to \
             record. Run `cargo xtask setup` to install bpf-linker.",
            if skip { "AYA_BUILD_SKIP is set" } else { "bpf-linker not found" }
        );
        fs::write(out_dir.join(OBJECT), b"")?;
        println!("cargo:rustc-cfg=nixtrace_stub_ebpf");
        return Ok(());
    }

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?);
    let ebpf_dir = manifest_dir.join("../tracer-ebpf").canonicalize()?;
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path to tracer-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "tracer-ebpf", root_dir: ebpf_dir, ..Default::default() }],
        aya_build::Toolchain::Nightly,
    )?;
    fs::rename(out_dir.join("nixtrace"), out_dir.join(OBJECT))
        .context("aya-build did not produce the `nixtrace` eBPF binary")?;
    Ok(())
}
