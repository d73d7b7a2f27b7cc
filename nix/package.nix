# nixtrace: the binary, with its eBPF object embedded, and the boot unit
# systemd/nixtrace-boot.service and nixtrace-preload.service with their
# ExecStart pointed at this package.
{
  lib,
  cargo,
  rustc,
  rustPlatform,
  makeRustPlatform,
  wrapRustcWith,
  symlinkJoin,
  # From ./bpf-linker.nix: built against rustc's LLVM major.
  bpf-linker,
}: let
  # tracer/build.rs builds the kernel programs with aya-build, which runs
  # `cargo build --target bpfel-unknown-none` for tracer-ebpf. There is no
  # prebuilt core library for that target, so the build compiles it from
  # source: aya-build passes `-Z build-std=core` when RUSTC_BOOTSTRAP=1 lets
  # a stable rustc accept it, and without rustup it uses the rustc on PATH.
  # (Outside Nix, `cargo xtask setup` installs nightly's rust-src instead.)
  # nixpkgs' rustc lacks two things for that:
  #
  # 1. The standard library's source where cargo looks for it,
  #    `$(rustc --print sysroot)/lib/rustlib/src/rust/library`. So the
  #    build uses a rustc wrapper whose sysroot is rustc's own plus that
  #    source (rustPlatform.rustLibSrc, the same rustc version's library/).
  sysroot = symlinkJoin {
    name = "rustc-sysroot-with-src-${rustc.version}";
    paths = [rustc.unwrapped];
    postBuild = ''
      mkdir -p $out/lib/rustlib/src/rust
      ln -s ${rustPlatform.rustLibSrc} $out/lib/rustlib/src/rust/library
    '';
  };
  rustcWithSrc = wrapRustcWith {
    rustc-unwrapped = rustc.unwrapped;
    inherit sysroot;
  };
  platform = makeRustPlatform {
    inherit cargo;
    rustc = rustcWithSrc;
  };

  # 2. The standard library's own dependencies, which the offline build
  #    cannot download: rustc's source tarball vendors them
  #    (rustPlatform.rustVendorSrc). preBuild links each crate there into
  #    the build's writable copy of the workspace's vendor directory (the
  #    one cargo is configured to use), unless that already has the same
  #    name and version.
  linkStdDependencies = ''
    : "''${cargoDepsCopy:?the cargo setup hook no longer sets cargoDepsCopy}"
    for crate in ${rustPlatform.rustVendorSrc}/*/; do
      crate=''${crate%/}
      name=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$crate/Cargo.toml" | head -n 1)
      version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$crate/Cargo.toml" | head -n 1)
      if [ ! -e "$cargoDepsCopy/$name-$version" ]; then
        ln -s "$crate" "$cargoDepsCopy/$name-$version"
      fi
    done
  '';
in
  platform.buildRustPackage {
    pname = "nixtrace";
    inherit ((lib.importTOML ../Cargo.toml).workspace.package) version;

    # Only what the build reads, so that editing docs or Nix files does not
    # rebuild it. Every workspace member's manifest must be there.
    src = lib.fileset.toSource {
      root = ../.;
      fileset = lib.fileset.unions [
        ../.cargo
        ../Cargo.lock
        ../Cargo.toml
        ../systemd
        ../tests
        ../tracer
        ../tracer-common
        ../tracer-ebpf
        ../xtask
      ];
    };
    cargoLock.lockFile = ../Cargo.lock;
    # The binary only (the workspace's default members include xtask).
    cargoBuildFlags = ["--package" "nixtrace"];

    nativeBuildInputs = [bpf-linker];
    env.RUSTC_BOOTSTRAP = "1";
    # cargo-auditable would wrap the nested BPF build too, and embed its
    # dependency list in the kernel object.
    auditable = false;
    preBuild = linkStdDependencies;

    # The tests load eBPF programs into the running kernel, as root: they
    # cannot run in the build sandbox. They run in `cargo xtask test` (CI)
    # and, for the boot unit, in the flake's NixOS VM test (checks.boot).
    doCheck = false;

    postInstall = ''
      for unit in nixtrace-boot.service nixtrace-preload.service; do
        install -Dm644 systemd/$unit $out/lib/systemd/system/$unit
        substituteInPlace $out/lib/systemd/system/$unit \
          --replace-fail "ExecStart=/usr/bin/nixtrace " "ExecStart=$out/bin/nixtrace "
      done
    '';

    passthru = {
      # For the dev shell: the same compiler and linker.
      rustc = rustcWithSrc;
      inherit bpf-linker;
    };

    meta = {
      description = "eBPF tracer of program startup and boot: exec, open, mmap, dynamic loading, disk reads";
      license = with lib.licenses; [mit asl20];
      platforms = lib.platforms.linux;
      mainProgram = "nixtrace";
    };
  }
