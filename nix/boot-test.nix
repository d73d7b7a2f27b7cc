# checks.<system>.boot: boots a NixOS VM with services.nixtrace.boot.enable
# and asserts that nixtrace-boot.service traced that boot from before
# sysinit.target and wrote the trace, its report and its flamegraphs.
{
  pkgs,
  # The flake's nixosModules.default (the module, with the flake's package).
  module,
}:
pkgs.testers.runNixOSTest {
  name = "nixtrace-boot";

  nodes.machine = {
    imports = [module];
    services.nixtrace = {
      enable = true;
      boot.enable = true;
      # Without KVM the VM is emulated and boots slowly: the recording
      # stops when the boot has finished, or after this long.
      boot.maxDuration = 600;
    };
    virtualisation.memorySize = 2048;
  };

  testScript = ''
    import json
    import os

    unit = "nixtrace-boot.service"
    boots = "/var/lib/nixtrace/boots"

    def show(name, prop):
        return machine.succeed(f"systemctl show -P {prop} {name}").strip()

    machine.wait_for_unit("multi-user.target")

    with subtest("the unit ran from the package's unit file, before sysinit.target"):
        fragment = machine.succeed(f"readlink -f {show(unit, 'FragmentPath')}").strip()
        assert fragment.startswith("/nix/store/") and fragment.endswith(
            "/lib/systemd/system/nixtrace-boot.service"
        ), fragment
        ready = int(show(unit, "ActiveEnterTimestampMonotonic"))
        sysinit = int(show("sysinit.target", "ActiveEnterTimestampMonotonic"))
        assert ready > 0, f"{unit} never became active"
        assert ready <= sysinit, f"{unit} ready at {ready} us, sysinit.target at {sysinit} us"

    with subtest("it stops by itself once the boot has finished, successfully"):
        machine.wait_until_succeeds(
            f"systemctl show -P ActiveState {unit} | grep -Eqx 'inactive|failed'", timeout=900
        )
        print(machine.succeed(f"journalctl -b -u {unit} --no-pager"))
        assert show(unit, "Result") == "success", show(unit, "Result")

    with subtest("it wrote this boot's trace, report and flamegraphs, privately"):
        traces = machine.succeed(f"ls {boots}/*.ntr").split()
        assert len(traces) == 1, traces
        stem = traces[0].removesuffix(".ntr")
        boot_id = machine.succeed("cat /proc/sys/kernel/random/boot_id").strip()
        assert os.path.basename(stem) in (boot_id, boot_id.replace("-", "")), (stem, boot_id)
        for suffix in [".report.md", ".report.json", ".startup.svg", ".io.svg"]:
            machine.succeed(f"test -s {stem}{suffix}")
        json.loads(machine.succeed(f"cat {stem}.report.json"))
        machine.succeed(f"nixtrace dump {traces[0]} | head -n 1 | grep -q .")
        assert machine.succeed(f"stat -c %a {boots}").strip() == "700"
        assert machine.succeed(f"stat -c %a {traces[0]}").strip() == "600"
  '';
}
