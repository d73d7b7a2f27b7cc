# services.nixtrace: the nixtrace command, a trace and report of every boot,
# and the opt-in boot optimisations that the reports point to.
#
# The boot unit is not described here: systemd/nixtrace-boot.service, the
# file every distribution uses, comes with the package and is installed
# through systemd.packages. This module only adds to it (NixOS writes the
# additions as a drop-in): what starts it, and its arguments. README.md in
# this directory documents every option.
{
  config,
  lib,
  ...
}: let
  inherit (lib) mkEnableOption mkIf mkMerge mkOption types;

  cfg = config.services.nixtrace;
  bootCfg = cfg.boot;
  opt = cfg.optimizations;

  # The unit runs `nixtrace record --boot $NIXTRACE_BOOT_ARGS`. systemd
  # splits an unbraced $VARIABLE into words at whitespace, honouring quotes
  # and backslash escapes (systemd.service(5), "Command lines"), and expands
  # %-specifiers in Environment= values. So each argument is written as one
  # systemd word: bare when it is plain, otherwise in double quotes with `\`
  # and `"` escaped, and `%` doubled. (lib.escapeShellArgs does not fit:
  # inside its single quotes a backslash is literal to a shell but an
  # escape to systemd, which would eat the backslashes of a --redact regex.)
  systemdWord = arg:
    if builtins.match "[A-Za-z0-9_./:=,+@-]+" arg != null
    then arg
    else "\"${lib.replaceStrings ["\\" "\"" "%"] ["\\\\" "\\\"" "%%"] arg}\"";

  bootArgs =
    [
      "--output-dir"
      bootCfg.outputDir
      "--keep"
      (toString bootCfg.keep)
      "--duration"
      (toString bootCfg.maxDuration)
    ]
    ++ lib.optional bootCfg.parquet "--parquet"
    ++ lib.optionals bootCfg.statProbe ["--probe" "stat"]
    ++ bootCfg.extraArgs;

  # The unit's ProtectSystem=full and ProtectHome=read-only leave these
  # read-only for it.
  readOnlyForUnit = ["/usr" "/boot" "/efi" "/etc" "/home" "/root" "/run/user"];
  under = dir: path: path == dir || lib.hasPrefix "${dir}/" path;

  # One optimisation switch: off by default, and only applied while
  # services.nixtrace.optimizations.enable is on as well.
  optimisation = description:
    mkOption {
      type = types.bool;
      default = false;
      example = true;
      inherit description;
    };
  optimisationNames = ["initrdZstd" "systemdInitrd" "skipNetworkWaitOnline" "skipUdevSettle" "preload"];
  rollback = ''
    Roll back: set it to `false` (or `optimizations.enable = false` to drop
    every switch at once) and rebuild; if the machine no longer boots, pick
    the previous generation in the boot menu, which is how NixOS keeps
    every earlier configuration bootable.
  '';
in {
  options.services.nixtrace = {
    enable = mkEnableOption "nixtrace, the eBPF startup and boot tracer (puts `nixtrace` in the system path)";

    package = mkOption {
      type = types.package;
      description = ''
        The nixtrace package. It must contain `bin/nixtrace` and
        `lib/systemd/system/nixtrace-boot.service`. The flake's
        `nixosModules.default` sets it to the flake's `packages.default`;
        without the flake, set it yourself.
      '';
    };

    boot = {
      enable = mkOption {
        type = types.bool;
        default = false;
        example = true;
        description = ''
          Whether to trace every boot. nixtrace-boot.service starts before
          sysinit.target, records until the boot has finished (or
          {option}`services.nixtrace.boot.maxDuration`), then writes
          `<boot-id>.ntr`, its report (`.report.md`, `.report.json`) and its
          flamegraphs (`.startup.svg`, `.io.svg`) to
          {option}`services.nixtrace.boot.outputDir`. It takes effect from
          the next boot.
        '';
      };

      outputDir = mkOption {
        type = types.strMatching "/.+";
        default = "/var/lib/nixtrace/boots";
        description = ''
          Where each boot's trace, report and flamegraphs go
          (`nixtrace record --boot --output-dir`). Created 0700, owned by
          root: traces hold command lines and paths. It must not be under
          /usr, /boot, /efi, /etc, /home, /root or /run/user, which the
          unit's sandbox keeps read-only.
        '';
      };

      keep = mkOption {
        type = types.ints.positive;
        default = 10;
        description = "How many boots to keep in the output directory (`--keep`); older ones are deleted.";
      };

      maxDuration = mkOption {
        type = types.ints.positive;
        default = 300;
        description = ''
          The longest a boot is recorded, in seconds (`--duration`). The
          recording normally stops earlier, when systemd says the boot has
          finished.
        '';
      };

      parquet = mkOption {
        type = types.bool;
        default = false;
        example = true;
        description = ''
          Whether to also write each boot's Parquet tables beside its
          report (`nixtrace record --boot --parquet`):
          `<boot-id>.TABLE.parquet` in
          {option}`services.nixtrace.boot.outputDir`, one file per table
          (docs/parquet-schema.md), for queries across boots and hosts with
          DuckDB, ClickHouse or Spark (docs/fleet.md). They are kept and
          removed with their boot ({option}`services.nixtrace.boot.keep`).
        '';
      };

      statProbe = mkOption {
        type = types.bool;
        default = false;
        example = true;
        description = ''
          Whether to also record every stat, access and readlink call on a
          path during boot (`nixtrace record --boot --probe stat`): how
          interpreters and shells search their module and command paths,
          which the interpreter-search recommendation reads. These calls
          are far more frequent than opens, so the probe costs more
          (docs/benchmarks.md).
        '';
      };

      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [];
        example = ["--redact" "password=\\S+"];
        description = ''
          More arguments to `nixtrace record --boot`, one list element per
          argument. Spaces, quotes, backslashes and `%` are passed through
          intact (the module quotes each argument the way systemd splits
          the unit's `$NIXTRACE_BOOT_ARGS`).
        '';
      };
    };

    optimizations = {
      enable = mkOption {
        type = types.bool;
        default = false;
        example = true;
        description = ''
          The gate of the boot optimisations below: each is off by default
          and takes effect only while this is on as well, so that this one
          setting turns them all off again. They change how this machine
          boots, not nixtrace. Measure before and after with two boot
          reports ({option}`services.nixtrace.boot.enable`) or
          `systemd-analyze critical-chain`: no gain has been measured for
          this module. The plan they come from expects about 20% less boot
          time in all, as an estimate.
        '';
      };

      initrdZstd = optimisation ''
        Compress the initrd with zstd (`boot.initrd.compressor = "zstd"`),
        which the kernel unpacks faster than xz or gzip.

        Benefit: less time unpacking the initrd, in the kernel, before any
        unit starts. NixOS already uses zstd for kernels 5.9 and newer
        unless the configuration picks another compressor, so this changes
        nothing on most machines; if the configuration sets another
        compressor, the two definitions conflict and evaluation says so.

        Risk: a kernel built without zstd initrd support
        (CONFIG_RD_ZSTD) cannot unpack it and does not boot.

        ${rollback}
      '';

      systemdInitrd = optimisation ''
        Run systemd in the initrd (`boot.initrd.systemd.enable = true`)
        instead of the scripted stage 1.

        Benefit: the initrd's work (devices, fsck, unlocking, mounting the
        root) runs as parallel units rather than one sequential script,
        and shows up in `systemd-analyze`.

        Risk: options of the scripted initrd are not all supported
        (`boot.initrd.preLVMCommands`, `postDeviceCommands` and the like
        are refused at evaluation; some LUKS, network-unlock and resume
        setups need reconfiguring). A mistake can leave the root file
        system unmounted, and the machine unbootable.

        ${rollback}
      '';

      skipNetworkWaitOnline = optimisation ''
        Do not wait for the network to be online during boot:
        `systemd.network.wait-online.enable = false`, and with
        NetworkManager, `systemd.services.NetworkManager-wait-online.enable
        = false`.

        Benefit: units ordered after network-online.target no longer wait
        for a DHCP lease or a carrier: the wait-online unit's time in the
        boot report, up to its timeout (two minutes by default for
        systemd-networkd-wait-online) on a machine with an unplugged
        interface.

        Risk: services that need the network at start, such as NFS or CIFS
        mounts, or daemons binding to an address that comes from DHCP,
        may start too early and fail.

        ${rollback}
      '';

      skipUdevSettle = optimisation ''
        Mask systemd-udev-settle.service
        (`systemd.services.systemd-udev-settle.enable = false`), which
        waits until udev has handled every device event.

        Benefit: whatever pulls it in no longer waits for every device:
        its time in the boot report, up to its three-minute timeout on slow
        or flaky hardware. It changes nothing where no unit pulls it in.

        Risk: units that wait for it start before their devices exist, and
        a unit that requires it fails to start. Refused when ZFS is
        enabled: NixOS imports ZFS pools after it so that a pool is not
        imported with disks still missing (degraded). Some LVM, mdraid and
        DHCP setups rely on it too.

        ${rollback}
      '';

      preload = optimisation ''
        Read the files the last traced boot read from disk into the page
        cache at the start of this one (the boot-io recommendation):
        nixtrace-preload.service runs `nixtrace preload` on the
        `latest.preload` list that nixtrace-boot.service files in
        {option}`services.nixtrace.boot.outputDir`, with the pages each file
        had read, in the order the boot first used them, by store path.
        Needs {option}`services.nixtrace.boot.enable`, which makes the list.

        Benefit: the units on the critical chain find their files cached
        instead of waiting for the disk; the boot report's disk reads and
        blocked time per unit show how much, from the next boot on. Most on
        a spinning disk or an SD card, little on NVMe.

        Risk: the preload competes with the units for the disk in the first
        seconds; on a fast disk it may gain nothing. It only reads, and
        skips listed files that are gone.

        ${rollback}
      '';
    };
  };

  config = mkMerge [
    (mkIf cfg.enable {
      environment.systemPackages = [cfg.package];
    })

    (mkIf bootCfg.enable {
      assertions = [
        {
          assertion = !lib.any (dir: under dir bootCfg.outputDir) readOnlyForUnit;
          message = ''
            services.nixtrace.boot.outputDir (${bootCfg.outputDir}) is in a directory that
            nixtrace-boot.service sees read-only (${lib.concatStringsSep ", " readOnlyForUnit}).
          '';
        }
      ];

      systemd = {
        # The unit itself comes from the package (lib/systemd/system).
        packages = [cfg.package];
        services.nixtrace-boot = {
          # NixOS ignores the unit file's [Install] section.
          wantedBy = ["sysinit.target"];
          environment.NIXTRACE_BOOT_ARGS = lib.concatMapStringsSep " " systemdWord bootArgs;
          # It records a boot: `nixos-rebuild switch` should not restart it.
          restartIfChanged = false;
        };
        tmpfiles.rules = ["d ${bootCfg.outputDir} 0700 root root -"];
      };
    })

    (mkIf opt.enable (mkMerge [
      (mkIf opt.initrdZstd {
        boot.initrd.compressor = "zstd";
      })
      (mkIf opt.systemdInitrd {
        boot.initrd.systemd.enable = true;
      })
      (mkIf opt.skipNetworkWaitOnline {
        systemd.network.wait-online.enable = false;
        systemd.services = mkIf config.networking.networkmanager.enable {
          NetworkManager-wait-online.enable = false;
        };
      })
      (mkIf opt.preload {
        assertions = [
          {
            assertion = bootCfg.enable;
            message = "services.nixtrace.optimizations.preload reads the list that traced boots make: it needs services.nixtrace.boot.enable.";
          }
        ];
        systemd = {
          packages = [cfg.package];
          services.nixtrace-preload = {
            wantedBy = ["sysinit.target"];
            environment.NIXTRACE_PRELOAD_LIST = "${bootCfg.outputDir}/latest.preload";
            # The empty entry drops the unit file's own condition, on the default directory.
            unitConfig.ConditionPathExists = ["" "${bootCfg.outputDir}/latest.preload"];
            restartIfChanged = false;
          };
        };
      })
      (mkIf opt.skipUdevSettle {
        assertions = [
          {
            assertion = !config.boot.zfs.enabled;
            message = "services.nixtrace.optimizations.skipUdevSettle: NixOS imports ZFS pools after systemd-udev-settle.service, so that no pool is imported with disks missing.";
          }
        ];
        systemd.services.systemd-udev-settle.enable = false;
      })
    ]))

    {
      warnings = lib.concatMap (name:
        lib.optional (opt.${name} && !opt.enable)
        "services.nixtrace.optimizations.${name} is set but has no effect while services.nixtrace.optimizations.enable is false.")
      optimisationNames;
    }
  ];
}
