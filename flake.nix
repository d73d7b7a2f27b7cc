{
  description = "nixtrace: an eBPF startup and boot tracer";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      # Rust and the tools the tests compare against. Not yet enough to
      # build the eBPF object: that needs rust-src in rustc's sysroot and a
      # bpf-linker built against rustc's LLVM major, which come with the
      # package, the NixOS module and their checks (nixos-module/README.md).
      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.cargo
            pkgs.rustc
            pkgs.rustfmt
            pkgs.clippy
            pkgs.strace
            pkgs.bpftrace
            pkgs.patchelf
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
