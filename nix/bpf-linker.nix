# bpf-linker for nixtrace's eBPF object, built against the LLVM major that
# rustc uses.
#
# rustc compiles the kernel programs (bpfel-unknown-none) to LLVM bitcode and
# bpf-linker links that bitcode with its own LLVM. An LLVM cannot read the
# bitcode of a newer major, so both must have the same one (outside Nix,
# `cargo xtask setup` builds bpf-linker against LLVM 22 for the same reason).
# nixpkgs' bpf-linker is used as it is when its LLVM has rustc's major;
# otherwise it is rebuilt with every `llvmPackages*` argument of its recipe
# replaced by rustc's `llvmPackages`, and its `llvm-<major>` cargo feature
# renamed to match. If that nixpkgs revision's bpf-linker does not support
# rustc's LLVM major at all, that rebuild fails, naming the missing feature.
{
  lib,
  bpf-linker,
  rustc,
}: let
  major = lib.versions.major;
  rustcLlvm = major rustc.llvm.version;

  # The LLVM a bpf-linker derivation is built with, or null if none is found.
  llvmOf = linker:
    lib.findFirst (dep: lib.isDerivation dep && (dep.pname or "") == "llvm") null
    ((linker.nativeBuildInputs or []) ++ (linker.buildInputs or []));
  builtWithRustcLlvm = linker: let
    llvm = llvmOf linker;
  in
    llvm != null && major llvm.version == rustcLlvm;

  renameFeature = features:
    map (feature:
      if lib.hasPrefix "llvm-" feature
      then "llvm-${rustcLlvm}"
      else feature)
    features;

  rebuilt =
    (bpf-linker.override (args:
      lib.mapAttrs (name: value:
        if lib.hasPrefix "llvmPackages" name
        then rustc.llvmPackages
        else value)
      args))
    .overrideAttrs (old:
      lib.optionalAttrs (old ? buildFeatures) {buildFeatures = renameFeature old.buildFeatures;}
      // lib.optionalAttrs (old ? cargoBuildFeatures) {cargoBuildFeatures = renameFeature old.cargoBuildFeatures;});

  linker =
    if builtWithRustcLlvm bpf-linker
    then bpf-linker
    else rebuilt;
in
  if builtWithRustcLlvm linker
  then linker
  else let
    llvm = llvmOf linker;
  in
    throw ''
      nixtrace: could not build bpf-linker against LLVM ${rustcLlvm}, the LLVM major of rustc
      ${rustc.version}: bpf-linker ${bpf-linker.version} uses ${
        if llvm == null
        then "an LLVM this expression cannot find"
        else "LLVM ${llvm.version}"
      }.
    ''
