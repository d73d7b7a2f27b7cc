{
  description = "nixtrace: an eBPF startup and boot tracer";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = {
    self,
    nixpkgs,
  }: let
    inherit (nixpkgs) lib;
    systems = ["x86_64-linux" "aarch64-linux"];
    forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    packagesFor = pkgs: self.packages.${pkgs.stdenv.hostPlatform.system};
  in {
    packages = forAllSystems (pkgs: let
      # Built against rustc's LLVM major (nix/bpf-linker.nix says why).
      bpf-linker = pkgs.callPackage ./nix/bpf-linker.nix {};
    in {
      default = pkgs.callPackage ./nix/package.nix {inherit bpf-linker;};
      inherit bpf-linker;
    });

    # services.nixtrace (nixos-module/README.md), with this flake's package.
    nixosModules.default = {pkgs, ...}: {
      imports = [./nixos-module];
      services.nixtrace.package = lib.mkDefault (packagesFor pkgs).default;
    };

    # Everything the build needs, including bpf-linker and the rust-src
    # route of the package (a rustc whose sysroot has the library source,
    # and RUSTC_BOOTSTRAP=1 for `-Z build-std=core`); the tools the tests
    # compare against; qemu and debootstrap for VM work; the Nix linters.
    devShells = forAllSystems (pkgs: let
      inherit (packagesFor pkgs) default;
    in {
      default = pkgs.mkShell {
        packages = [
          default.passthru.rustc
          default.passthru.bpf-linker
          pkgs.cargo
          pkgs.rustfmt
          pkgs.clippy
          pkgs.strace
          pkgs.bpftrace
          pkgs.patchelf
          pkgs.qemu
          pkgs.debootstrap
          pkgs.alejandra
          pkgs.deadnix
          pkgs.statix
        ];
        RUSTC_BOOTSTRAP = "1";
      };
    });

    # `nix fmt`. CI (`cargo xtask nix-check`) checks with the same formatter.
    formatter = forAllSystems (pkgs: pkgs.alejandra);

    checks = forAllSystems (pkgs: {
      package = (packagesFor pkgs).default;

      # A NixOS VM that boots with services.nixtrace.boot.enable.
      boot = import ./nix/boot-test.nix {
        inherit pkgs;
        module = self.nixosModules.default;
      };

      # The linters `cargo xtask nix-check` runs too, without Nix.
      lint =
        pkgs.runCommand "nixtrace-nix-lint" {
          nativeBuildInputs = [pkgs.alejandra pkgs.deadnix pkgs.statix];
          src = lib.fileset.toSource {
            root = ./.;
            fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ./.;
          };
        } ''
          cd "$src"
          alejandra --check .
          deadnix --fail .
          statix check .
          touch "$out"
        '';
    });
  };
}
