//! `cargo xtask boot-test`: real boots traced by the repository's units.
//!
//! Builds (once, cached under `target/boot-vm/`) a minimal Debian bookworm
//! root file system with systemd, installs the release `nixtrace`,
//! `systemd/nixtrace-boot.service` and `systemd/nixtrace-preload.service`
//! into it, boots it twice with Debian's 6.1 kernel under QEMU (TCG: KVM
//! hangs on these machines), lets a helper unit power the guest off once
//! each boot's trace is filed, reads the files back from the disk image
//! with debugfs and checks them: real units attributed with their execs and
//! opens, the critical chain present, nothing lost, the report and
//! flamegraphs well-formed, the guest's kernel a second kernel version, and
//! boot-io: the first boot's preload list and recommendation, read back by
//! nixtrace-preload.service in the second boot, which then has none.
use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::{command, output, run};

/// Units a minimal Debian boot always starts, with processes of their own.
const EXPECTED_UNITS: [&str; 2] = ["systemd-journald.service", "systemd-udevd.service"];

/// Powers the guest off once nixtrace-boot.service has filed the trace
/// (Type=simple, so the boot itself can finish without it).
const POWEROFF_UNIT: &str = "[Unit]
Description=Power off once the boot trace is written (nixtrace boot test)
After=multi-user.target nixtrace-boot.service

[Service]
Type=simple
ExecStart=/bin/sh -c 'while systemctl is-active -q nixtrace-boot.service; do sleep 1; done; \
journalctl -b -u nixtrace-boot.service -u nixtrace-preload.service --no-pager >/dev/ttyS0 2>&1; systemctl poweroff'

[Install]
WantedBy=multi-user.target
";

const BOOTS_DIR: &str = "/var/lib/nixtrace/boots";

/// The guest's kernel command line: a serial console at the kernel's default
/// 9600 baud, without `quiet`, which the boot-config rule must report.
const GUEST_CMDLINE: &str = "console=ttyS0 root=/dev/vda rw edd=off";

/// The newest Debian 6.1 kernel installed on this machine (by setup's
/// `linux-image-amd64`): (vmlinuz, initrd, release).
fn debian_kernel() -> Result<(String, String, String)> {
    let mut releases: Vec<String> = fs::read_dir("/boot")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_string))
        .filter(|r| r.starts_with("6.1.") && r.ends_with("-amd64"))
        .collect();
    releases.sort();
    let release =
        releases.pop().context("no Debian 6.1 kernel in /boot (setup installs linux-image-amd64)")?;
    Ok((format!("/boot/vmlinuz-{release}"), format!("/boot/initrd.img-{release}"), release))
}

fn rootfs(dir: &Path) -> Result<std::path::PathBuf> {
    let rootfs = dir.join("rootfs");
    if rootfs.join("usr/bin/systemctl").exists() {
        println!("ok: cached Debian root file system in {}", rootfs.display());
        return Ok(rootfs);
    }
    let _ = fs::remove_dir_all(&rootfs);
    println!("building: Debian bookworm root file system (debootstrap, about a minute)");
    run(Command::new("debootstrap")
        .args(["--variant=minbase", "--include=systemd-sysv,udev,kmod", "bookworm"])
        .arg(&rootfs))?;
    fs::write(rootfs.join("etc/hostname"), "nixtrace-boot-test\n")?;
    Ok(rootfs)
}

fn install(rootfs: &Path, nixtrace: &Path) -> Result<()> {
    fs::copy(nixtrace, rootfs.join("usr/bin/nixtrace")).context("installing nixtrace in the guest")?;
    let units = rootfs.join("etc/systemd/system");
    for unit in ["nixtrace-boot.service", "nixtrace-preload.service"] {
        fs::copy(crate::repo_root().join("systemd").join(unit), units.join(unit))?;
    }
    fs::write(units.join("nixtrace-boot-test-poweroff.service"), POWEROFF_UNIT)?;
    for (target, unit) in [
        ("sysinit.target.wants", "nixtrace-boot.service"),
        // Skipped in the first boot: there is no list yet.
        ("sysinit.target.wants", "nixtrace-preload.service"),
        ("multi-user.target.wants", "nixtrace-boot-test-poweroff.service"),
    ] {
        let wants = units.join(target);
        fs::create_dir_all(&wants)?;
        let link = wants.join(unit);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("../{unit}"), link)?;
    }
    let _ = fs::remove_dir_all(rootfs.join(BOOTS_DIR.trim_start_matches('/')));
    Ok(())
}

/// Copies every file of the guest's boots directory out of `image`.
fn extract(image: &Path, out: &Path) -> Result<Vec<String>> {
    let listing = output(Command::new("debugfs").arg("-R").arg(format!("ls -p {BOOTS_DIR}")).arg(image))?;
    // `ls -p` lines: /inode/mode/uid/gid/name/size/
    let names: Vec<String> = listing
        .lines()
        .filter_map(|l| l.split('/').nth(5).map(str::to_string))
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .collect();
    let _ = fs::remove_dir_all(out);
    fs::create_dir_all(out)?;
    for name in &names {
        let dump = format!("dump {BOOTS_DIR}/{name} {}", out.join(name).display());
        output(Command::new("debugfs").arg("-R").arg(dump).arg(image))?;
    }
    Ok(names)
}

fn nixtrace_json(nixtrace: &Path, args: &[&str], file: &Path) -> Result<Value> {
    let text = output(command(nixtrace).args(args).arg(file))?;
    serde_json::from_str(&text).with_context(|| format!("nixtrace {} output", args.join(" ")))
}

/// Checks the boot traced as `trace` (in `out`, among `names`); returns
/// its report as the guest filed it.
fn check(nixtrace: &Path, out: &Path, names: &[String], trace: &str, guest_kernel: &str) -> Result<Value> {
    let id = trace.trim_end_matches(".ntr");
    for suffix in ["report.md", "report.json", "startup.svg", "io.svg"] {
        ensure!(names.contains(&format!("{id}.{suffix}")), "no {id}.{suffix} beside the trace: {names:?}");
    }
    for svg in ["startup.svg", "io.svg"] {
        let text = fs::read_to_string(out.join(format!("{id}.{svg}")))?;
        let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
        roxmltree::Document::parse_with_options(&text, options)
            .with_context(|| format!("{id}.{svg} is not XML"))?;
    }
    ensure!(fs::metadata(out.join(format!("{id}.report.md")))?.len() > 0, "empty report.md");

    let guest_report: Value =
        serde_json::from_str(&fs::read_to_string(out.join(format!("{id}.report.json")))?)?;
    let release = guest_report["header"]["kernel_release"].as_str().unwrap_or_default();
    ensure!(release == guest_kernel, "the trace's kernel is {release:?}, not the guest's {guest_kernel}");
    ensure!(guest_report["lost_events"] == 0, "events were lost: {}", guest_report["lost_by_probe"]);
    ensure!(guest_report["cut_short"].is_null(), "the trace was cut short: {}", guest_report["cut_short"]);
    let chain = guest_report["boot"]["critical_chain"].as_array().context("no boot.critical_chain")?;
    ensure!(
        chain.first().and_then(|u| u["unit"].as_str()).is_some_and(|u| u.ends_with(".target")),
        "the critical chain does not start at the default target: {chain:?}"
    );

    // boot-config, from what record --boot read in the guest: its serial
    // console without quiet, at the default 9600 baud, and the time it took
    // to print what the kernel logged.
    let recommendations = guest_report["recommendations"].as_array().context("no recommendations[]")?;
    let console = recommendations
        .iter()
        .find(|r| r["rule"] == "boot-config" && r["evidence"]["console"] == "ttyS0")
        .with_context(|| format!("no boot-config finding for the serial console: {recommendations:#?}"))?;
    let evidence = &console["evidence"];
    let setup = &guest_report["header"]["boot"];
    ensure!(evidence["kernel_cmdline"] == GUEST_CMDLINE, "kernel_cmdline {}", evidence["kernel_cmdline"]);
    ensure!(
        evidence["baud"] == 9600 && evidence["console_loglevel"] == setup["console_loglevel"],
        "{evidence}"
    );
    let printed = setup["console_log_bytes"].as_u64().context("no header.boot.console_log_bytes")?;
    ensure!(evidence["console_log_bytes"] == printed, "{evidence} against {setup}");
    ensure!(
        console["saving"]["time_ns"].as_u64() == Some(printed * 10 * 1_000_000_000 / 9600),
        "saving {} for {printed} bytes at 9600 baud",
        console["saving"]
    );
    println!("ok: boot-config: {printed} bytes on ttyS0 at 9600 baud, {}", console["title"]);

    // The host's nixtrace reads the guest's trace the same way.
    let report = nixtrace_json(nixtrace, &["report", "--format", "json"], &out.join(trace))?;
    let dump = output(command(nixtrace).arg("dump").arg(out.join(trace)))?;
    let opens_by_pid = |pid: u64| {
        dump.lines()
            .filter(|l| l.contains("\"type\":\"open\"") && l.contains(&format!("\"pid\":{pid},")))
            .count()
    };
    for unit in EXPECTED_UNITS {
        let processes: Vec<&Value> =
            report["processes"].as_array().unwrap().iter().filter(|p| p["unit"] == unit).collect();
        let execs: usize = processes.iter().map(|p| p["execs"].as_array().map_or(0, Vec::len)).sum();
        let opens: usize = processes.iter().map(|p| opens_by_pid(p["pid"].as_u64().unwrap())).sum();
        ensure!(
            execs > 0 && opens > 0,
            "{unit}: {} processes, {execs} execs, {opens} opens",
            processes.len()
        );
        println!("ok: {unit}: {} processes, {execs} execs, {opens} opens", processes.len());
    }
    println!(
        "ok: kernel {release}, {} events, none lost, critical chain of {} units, report and flamegraphs parse",
        report["events"],
        chain.len()
    );
    check_unit_activations(&report)?;
    Ok(guest_report)
}

/// A time as systemd prints it: `1min 2.301s`, `312ms`, `850us`.
fn systemd_timespan_us(text: &str) -> Option<u64> {
    let mut total = 0.0;
    for word in text.split_whitespace() {
        let split = word.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (number, unit) = word.split_at(split);
        let scale = match unit {
            "h" => 3_600_000_000.0,
            "min" => 60_000_000.0,
            "s" => 1_000_000.0,
            "ms" => 1_000.0,
            "us" | "\u{b5}s" => 1.0,
            _ => return None,
        };
        total += number.parse::<f64>().ok()? * scale;
    }
    Some(total.round() as u64)
}

/// The trace's unit activations (systemctl's timestamps) against
/// `systemd-analyze critical-chain`, which prints the same times rounded
/// down to the millisecond, counted from userspace's start: "@" is when the
/// unit started activating, or, for a unit without "+", when it became
/// active; "+" is the activation's length. Every unit of the chain is in
/// the activations.
fn check_unit_activations(report: &Value) -> Result<()> {
    let boot = &report["boot"];
    let userspace = boot["userspace_at_ns"].as_u64().context("no boot.userspace_at_ns")?;
    let activations = boot["unit_activations"].as_array().context("no boot.unit_activations")?;
    let mut checked = 0;
    for link in boot["critical_chain"].as_array().into_iter().flatten() {
        let unit = link["unit"].as_str().unwrap_or_default();
        let activation = activations
            .iter()
            .find(|a| a["unit"] == unit)
            .with_context(|| format!("{unit}, on the critical chain, has no activation"))?;
        let at = if link["took"].is_string() {
            activation["activating_at_ns"].as_u64()
        } else {
            // For a oneshot that ran and exited, "@" is not when its run ended.
            activation["active_at_ns"].as_u64().filter(|_| activation["state"] != "inactive")
        };
        let pairs = [
            (&link["active_at"], at.map(|at| at.saturating_sub(userspace))),
            (&link["took"], activation["activating_ns"].as_u64()),
        ];
        for (shown, ours) in pairs {
            let (Some(shown), Some(ours)) = (shown.as_str(), ours) else { continue };
            let shown_us = systemd_timespan_us(shown).with_context(|| format!("{unit}: time {shown:?}"))?;
            let ours_us = ours / 1000;
            // systemd-analyze cuts the microseconds off.
            ensure!(
                (shown_us..shown_us + 1000).contains(&ours_us),
                "{unit}: systemd-analyze shows {shown}, the trace {ours_us} us: {activation}"
            );
            checked += 1;
        }
    }
    ensure!(checked > 0, "no time of the critical chain to check: {boot}");
    println!(
        "ok: {} unit activations; {checked} critical-chain times agree to the millisecond",
        activations.len()
    );
    Ok(())
}

/// The initrd's run as record --boot read it from the kernel log: Debian's
/// initramfs-tools stage 1 is a script, and its time is that between the
/// console's "Run /init" line and systemd's first (and only) line, to the
/// microsecond; and, since this is no NixOS, no advice to run systemd in it.
fn check_initrd_run(report: &Value, console: &Path) -> Result<()> {
    let text = fs::read_to_string(console)?;
    let at = |is: &dyn Fn(&str) -> bool| -> Result<u64> {
        let line = text.lines().find(|l| l.split_once("] ").is_some_and(|(_, m)| is(m)));
        let line = line.context("no such line on the console")?;
        let seconds = line.trim_start_matches('[').split(']').next().unwrap_or_default().trim();
        let (whole, micros) = seconds.split_once('.').context("no [seconds.micros] stamp")?;
        Ok(whole.parse::<u64>()? * 1_000_000 + micros.parse::<u64>()?)
    };
    let start = at(&|m| m == "Run /init as init process")?;
    let system = at(&|m| m.starts_with("systemd[1]: systemd ") && m.contains(" running in system mode"))?;
    let run = &report["header"]["boot"]["initrd_run"];
    ensure!(run["systemd"] == false, "initrd_run {run}: Debian's initrd is scripted");
    ensure!(
        run["ns"].as_u64() == Some((system - start) * 1000),
        "initrd_run {run}, the console says {start} to {system} µs"
    );
    ensure!(
        !recommendations(report, "boot-config").iter().any(|r| r["evidence"]["systemd_in_initrd"] == false),
        "a Debian initrd is told to run NixOS's systemd stage 1"
    );
    println!("ok: initrd: scripted, {} ms by the kernel log and the console alike", (system - start) / 1000);
    Ok(())
}

/// The recommendations of `rule` in a filed report.
fn recommendations<'a>(report: &'a Value, rule: &str) -> Vec<&'a Value> {
    report["recommendations"]
        .as_array()
        .map_or(Vec::new(), |all| all.iter().filter(|r| r["rule"] == rule).collect())
}

/// boot-io after the first boot: its list beside the report and as
/// latest.preload, and a recommendation whose evidence counts exactly the
/// list's files and pages. Returns the list's bytes.
fn check_preload_list(out: &Path, id: &str, report: &Value) -> Result<u64> {
    let list = fs::read_to_string(out.join(format!("{id}.preload"))).context("no <boot-id>.preload")?;
    let latest = fs::read_to_string(out.join("latest.preload")).context("no latest.preload")?;
    ensure!(list == latest, "latest.preload is not the last boot's list");
    ensure!(list.starts_with("# nixtrace preload list 1\n"), "not a preload list: {list}");
    let mut files = 0u64;
    let mut pages = 0u64;
    for line in list.lines().filter(|l| !l.starts_with('#')) {
        let (runs, path) = line.split_once('\t').with_context(|| format!("list line {line:?}"))?;
        ensure!(path.starts_with('/'), "list line {line:?}");
        for run in runs.split(',') {
            let (_, n) = run.split_once('+').with_context(|| format!("list line {line:?}"))?;
            pages += n.parse::<u64>()?;
        }
        files += 1;
    }
    ensure!(list.contains("/libc.so.6\n"), "the boot's list lacks libc: {list}");
    let found = recommendations(report, "boot-io");
    let [boot_io] = found.as_slice() else { bail!("not one boot-io recommendation: {found:#?}") };
    let evidence = &boot_io["evidence"];
    ensure!(
        evidence["preload_files"] == files && evidence["preload_bytes"] == pages * 4096,
        "boot-io evidence {evidence} against the list's {files} files and {pages} pages"
    );
    println!("ok: boot-io: {}; the list has {files} files, {pages} pages", boot_io["title"]);
    Ok(pages * 4096)
}

/// boot-io in the second boot: nixtrace-preload.service ran, succeeded and
/// read from disk no more than the list held; the boot has no boot-io
/// recommendation, since it was preloaded.
fn check_preloaded(report: &Value, listed_bytes: u64) -> Result<()> {
    let preloaders: Vec<&Value> = report["processes"]
        .as_array()
        .context("no processes[]")?
        .iter()
        .filter(|p| p["unit"] == "nixtrace-preload.service")
        .collect();
    let [preloader] = preloaders.as_slice() else {
        bail!("not one nixtrace-preload.service process: {preloaders:#?}")
    };
    ensure!(preloader["exit_code"] == 0, "nixtrace preload exited with {}", preloader["exit_code"]);
    let read = preloader["io"]["disk_read_bytes"].as_u64().context("no io.disk_read_bytes")?;
    ensure!(
        read > 0 && read <= listed_bytes,
        "nixtrace preload read {read} bytes of a {listed_bytes}-byte list"
    );
    ensure!(recommendations(report, "boot-io").is_empty(), "a preloaded boot still gets boot-io");
    println!(
        "ok: boot-io: the second boot's nixtrace-preload.service read {read} of the {listed_bytes} listed bytes"
    );
    Ok(())
}

pub fn run_test() -> Result<()> {
    if !crate::is_root() {
        bail!("the boot test builds a root file system: run it as root");
    }
    crate::run(&mut crate::cargo(["build", "--release", "-p", "nixtrace"]))?;
    let nixtrace = crate::target_dir().join("release/nixtrace");
    let dir = crate::target_dir().join("boot-vm");
    fs::create_dir_all(&dir)?;
    let (kernel, initrd, release) = debian_kernel()?;
    let rootfs = rootfs(&dir)?;
    install(&rootfs, &nixtrace)?;
    let image = dir.join("disk.img");
    let _ = fs::remove_file(&image);
    run(Command::new("truncate").args(["-s", "2G"]).arg(&image))?;
    run(Command::new("mkfs.ext4").arg("-q").arg("-d").arg(&rootfs).arg(&image))?;
    let out = dir.join("out");
    let mut traces: Vec<String> = Vec::new();
    let mut listed = 0;
    for boot in ["first", "second"] {
        let console = dir.join(format!("console-{boot}.log"));
        boot_guest(&kernel, &initrd, &image, &console)?;
        let names = extract(&image, &out)?;
        let trace = names
            .iter()
            .find(|n| n.ends_with(".ntr") && !traces.contains(n))
            .with_context(|| format!("the {boot} boot filed no trace; console in {}", console.display()))?
            .clone();
        let failed =
            || format!("{boot} boot: failed; files in {}, console in {}", out.display(), console.display());
        let report = check(&nixtrace, &out, &names, &trace, &release).with_context(failed)?;
        check_initrd_run(&report, &console).with_context(failed)?;
        // Each boot files latest.preload anew: check the first one's before the second boot does.
        match boot {
            "first" => {
                listed =
                    check_preload_list(&out, trace.trim_end_matches(".ntr"), &report).with_context(failed)?
            }
            _ => check_preloaded(&report, listed).with_context(failed)?,
        }
        traces.push(trace);
    }
    // The two boots' Parquet tables, read by DuckDB, against their reports
    // and through the fleet queries (tests/parquet.rs).
    let paths = std::env::join_paths(traces.iter().map(|t| out.join(t)))?;
    crate::run(
        crate::cargo(["test", "--release", "-p", "nixtrace", "--features", "privileged-tests"])
            .args([
                "--test",
                "parquet",
                "--",
                "--ignored",
                "--exact",
                "real_boots_give_the_figures_of_their_reports",
            ])
            .env("NIXTRACE_BOOT_TRACES", paths),
    )
    .context("the boots' Parquet tables")?;
    Ok(())
}

/// Boots the guest from `image` until it powers itself off.
fn boot_guest(kernel: &str, initrd: &str, image: &Path, console: &Path) -> Result<()> {
    println!("booting the guest under QEMU (TCG); its console in {}", console.display());
    // One host thread runs both vCPUs: with a thread each (MTTCG), the
    // guest's 6.1 kernel once livelocked patching a tracepoint's static
    // key as the tracer attached (CPU 1 trapping on the int3 of
    // text_poke_bp_batch for good, CPU 0 waiting for its IPI: soft
    // lockups until the timeout).
    let status = Command::new("timeout")
        .args(["900", "qemu-system-x86_64", "-accel", "tcg,thread=single", "-m", "1024", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-kernel", kernel, "-initrd", initrd])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", image.display()))
        .args(["-append", GUEST_CMDLINE])
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(console)?)
        .stderr(std::process::Stdio::inherit())
        .status()
        .context("starting qemu-system-x86_64")?;
    ensure!(status.success(), "the guest did not power off in time ({status}); see {}", console.display());
    Ok(())
}
