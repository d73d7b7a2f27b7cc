//! boot-config: how the machine was set up to boot, from what
//! `record --boot` read when it started (the kernel command line, the
//! initrd, what the console printed) and when it stopped (systemd's
//! critical chain): a serial console that prints every kernel message, an
//! initrd compressor that unpacks slowly, a NixOS scripted stage 1, and
//! units on the critical chain that only wait (for the network to be
//! online, for udev to settle).

use serde_json::json;

use super::{
    Confidence, Fix, FixKind, Level, Recommendation, Rule, Saving, Settings, Subject, SubjectKind, Threshold,
};
use crate::{
    analysis::{Analysis, boot::BootUnit},
    human::{bytes, duration},
    trace::BootSetup,
};

pub const RULE: Rule = Rule {
    id: "boot-config",
    title: "Boot settings that slow the kernel and the initrd",
    description: "From the kernel command line and the initrd that record --boot read: a serial \
        console printing every kernel message (printk to a UART waits for it, about a millisecond \
        a character at 9600 baud), and an initrd compressed with gzip, xz, lzma or bzip2, which \
        the kernel unpacks several times slower than zstd; a NixOS initrd that ran the scripted \
        stage 1 rather than systemd; and, on the critical chain, \
        systemd-networkd-wait-online, NetworkManager-wait-online or systemd-udev-settle, which \
        only wait, pointing at the module's switches that turn them off.",
    thresholds: &[
        Threshold {
            name: "min_console_bytes",
            default: 4096.0,
            help: "bytes the console printed before the tracer started, before quiet is worth saying",
        },
        Threshold {
            name: "min_initrd_ms",
            default: 1000.0,
            help: "milliseconds a scripted NixOS stage 1 ran, by the kernel log, before systemd in it is worth trying",
        },
        Threshold {
            name: "min_wait_ms",
            default: 100.0,
            help: "milliseconds a waiting unit on the critical chain took to start, before it is worth saying",
        },
    ],
    check,
};

/// Serial UART consoles, whose output is synchronous.
const SERIAL_CONSOLES: &[&str] = &["ttyS", "ttyAMA", "ttyPS", "ttySAC", "ttymxc", "ttyO", "ttyLP"];
/// The console log level `quiet` sets.
const QUIET_LOGLEVEL: u32 = 4;

fn check(analysis: &Analysis, settings: &Settings) -> Vec<Recommendation> {
    let Some(setup) = &analysis.header.boot else { return Vec::new() };
    let attached_after = analysis.header.clock.boottime_ns;
    [
        serial_console(setup, attached_after, settings),
        initrd(setup, attached_after),
        scripted_initrd(setup, settings),
    ]
    .into_iter()
    .flatten()
    .chain(waits(analysis, settings))
    .collect()
}

/// Units that only wait, and the module switch that turns each off.
const WAITING_UNITS: &[(&str, &str, &str)] = &[
    (
        "systemd-networkd-wait-online.service",
        "skipNetworkWaitOnline",
        "systemd.network.wait-online.enable = false",
    ),
    (
        "NetworkManager-wait-online.service",
        "skipNetworkWaitOnline",
        "systemd.services.NetworkManager-wait-online.enable = false",
    ),
    ("systemd-udev-settle.service", "skipUdevSettle", "systemd.services.systemd-udev-settle.enable = false"),
];

/// A time as systemd-analyze prints it ("1min 2.301s", "312ms", "45us").
fn systemd_time_ns(text: &str) -> Option<u64> {
    let mut total = 0f64;
    for word in text.split_whitespace() {
        let split = word.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, unit) = word.split_at(split);
        let scale = match unit {
            "h" => 3.6e12,
            "min" => 6e10,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            _ => return None,
        };
        total += number.parse::<f64>().ok()? * scale;
    }
    Some(total.round() as u64)
}

/// The waiting units on the critical chain that took long enough to start.
fn waits(analysis: &Analysis, settings: &Settings) -> Vec<Recommendation> {
    let Some(boot) = &analysis.boot else { return Vec::new() };
    let min_ns = settings.get(&RULE, "min_wait_ms") * 1e6;
    boot.critical_chain
        .iter()
        .filter_map(|unit| {
            let (_, switch, option) = WAITING_UNITS.iter().find(|(name, ..)| *name == unit.unit)?;
            let took = unit.took.as_deref()?;
            let took_ns = systemd_time_ns(took)?;
            ((took_ns as f64) >= min_ns).then(|| wait(unit, took, took_ns, switch, option))
        })
        .collect()
}

fn wait(unit: &BootUnit, took: &str, took_ns: u64, switch: &str, option: &str) -> Recommendation {
    let traced = unit
        .traced
        .as_ref()
        .map(|t| json!({ "processes": t.processes, "on_cpu_ns": t.on_cpu_ns, "blocked_ns": t.blocked_ns }));
    Recommendation {
        rule: RULE.id,
        title: format!("{} on the critical chain took {took} to start", unit.unit),
        subjects: vec![Subject { kind: SubjectKind::Unit, name: unit.unit.clone() }],
        evidence: json!({
            "unit": unit.unit,
            "active_at": unit.active_at,
            "took": took,
            "took_ns": took_ns,
            "traced": traced,
        }),
        saving: Saving {
            time_ns: Some(took_ns),
            bytes: None,
            how: format!(
                "the {took} systemd-analyze critical-chain gives it: the units after it on the chain waited that long for it"
            ),
        },
        confidence: Confidence {
            level: Level::Medium,
            reason: "the time is systemd's own; whether the units after it can start sooner without it depends on what they need (a network address, a device)".into(),
        },
        fix: Fix {
            kind: FixKind::NixosOption,
            text: format!(
                "services.nixtrace.optimizations.enable = true;\nservices.nixtrace.optimizations.{switch} = true;   # or directly: {option};"
            ),
            revert: format!("Set services.nixtrace.optimizations.{switch} = false (or remove {option})."),
            risk: Some(if switch == "skipUdevSettle" {
                "Units that wait for it start before their devices exist, and a unit that requires it fails; ZFS pool imports rely on it (the module refuses the switch with ZFS), as do some LVM and mdraid setups.".into()
            } else {
                "Services that need the network at start (NFS or CIFS mounts, daemons binding to a DHCP address) may start too early and fail.".into()
            }),
        },
    }
}

/// The serial console of a kernel command line, and its baud rate
/// (9600, the kernel's default, when not given).
fn console_of(cmdline: &str) -> Option<(String, u64)> {
    cmdline.split_whitespace().filter_map(|word| word.strip_prefix("console=")).find_map(|console| {
        let (device, options) = console.split_once(',').unwrap_or((console, ""));
        SERIAL_CONSOLES.iter().any(|s| device.starts_with(s)).then(|| {
            let digits: String = options.chars().take_while(char::is_ascii_digit).collect();
            (device.to_string(), digits.parse().unwrap_or(9600))
        })
    })
}

fn serial_console(setup: &BootSetup, attached_after: u64, settings: &Settings) -> Option<Recommendation> {
    let (device, baud) = console_of(&setup.kernel_cmdline)?;
    let words: Vec<&str> = setup.kernel_cmdline.split_whitespace().collect();
    let loglevel = setup.console_loglevel?;
    if words.contains(&"quiet") || loglevel <= QUIET_LOGLEVEL {
        return None;
    }
    let printed = setup.console_log_bytes?;
    if (printed as f64) < settings.get(&RULE, "min_console_bytes") {
        return None;
    }
    // 8N1: ten bits on the wire for every byte.
    let saving_ns = printed.saturating_mul(10).saturating_mul(1_000_000_000) / baud.max(1);
    let evidence = json!({
        "console": device,
        "baud": baud,
        "console_loglevel": loglevel,
        "console_log_bytes": printed,
        "tracer_started_after_ns": attached_after,
        "kernel_cmdline": setup.kernel_cmdline,
    });
    Some(Recommendation {
        rule: RULE.id,
        title: format!(
            "the kernel printed {} on the serial console {device} at {baud} baud before the tracer started",
            bytes(printed)
        ),
        subjects: vec![Subject { kind: SubjectKind::System, name: "kernel command line".into() }],
        evidence,
        saving: Saving {
            time_ns: Some(saving_ns),
            bytes: None,
            how: format!(
                "{printed} bytes at {baud} baud, ten bits a byte: the time the console took to print them, which printk waits for; with quiet only warnings and errors are printed"
            ),
        },
        confidence: Confidence {
            level: Level::Medium,
            reason: "the bytes are the kernel log's own, below the console log level; an emulated UART (QEMU) does not run at its baud rate, and messages after the tracer started are not counted".into(),
        },
        fix: Fix {
            kind: FixKind::NixosOption,
            text: "boot.kernelParams = [ \"quiet\" ];   # elsewhere: add quiet to the kernel command line (GRUB_CMDLINE_LINUX_DEFAULT)".into(),
            revert: "Remove \"quiet\" from boot.kernelParams.".into(),
            risk: Some("Boot messages no longer appear on the console; `journalctl -k` (or `dmesg`) still has them, but a boot that hangs before the journal starts shows less.".into()),
        },
    })
}

/// Compressors the kernel unpacks several times slower than zstd.
const SLOW_COMPRESSORS: &[&str] = &["gzip", "xz", "lzma", "bzip2"];

fn initrd(setup: &BootSetup, attached_after: u64) -> Option<Recommendation> {
    let initrd = setup.initrd.as_ref()?;
    let compression = initrd.compression.as_deref()?;
    if !SLOW_COMPRESSORS.contains(&compression) {
        return None;
    }
    Some(Recommendation {
        rule: RULE.id,
        title: format!("the initrd ({}) is compressed with {compression}", bytes(initrd.size_bytes)),
        subjects: vec![Subject { kind: SubjectKind::System, name: "initrd".into() }],
        evidence: json!({
            "initrd": initrd.path,
            "size_bytes": initrd.size_bytes,
            "compression": compression,
            "tracer_started_after_ns": attached_after,
        }),
        saving: Saving {
            time_ns: None,
            bytes: None,
            how: format!(
                "not measured: the kernel unpacks the initrd before any tracer can start ({} before this one); nixpkgs #105777 measured zstd unpacking about five times faster than gzip",
                duration(attached_after)
            ),
        },
        confidence: Confidence {
            level: Level::Low,
            reason: "the compressor is read from the initrd itself; the gain depends on its size and the CPU, and the trace cannot see the unpacking".into(),
        },
        fix: Fix {
            kind: FixKind::NixosOption,
            text: "services.nixtrace.optimizations.enable = true;\nservices.nixtrace.optimizations.initrdZstd = true;   # or directly: boot.initrd.compressor = \"zstd\";".into(),
            revert: "Set services.nixtrace.optimizations.initrdZstd = false (or remove boot.initrd.compressor).".into(),
            risk: Some("A kernel built without zstd initrd support (CONFIG_RD_ZSTD) cannot unpack it and does not boot: keep the previous generation in the boot menu.".into()),
        },
    })
}

/// A NixOS system: its kernel is told to run a store path's stage 2.
fn is_nixos(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .any(|w| w.strip_prefix("init=").is_some_and(|init| init.starts_with("/nix/store/")))
}

/// A NixOS initrd that ran the scripted stage 1 for at least
/// `min_initrd_ms`. Other distributions' initrds are scripted too, but
/// the fix is a NixOS option, so they are not told.
fn scripted_initrd(setup: &BootSetup, settings: &Settings) -> Option<Recommendation> {
    let run = setup.initrd_run?;
    let ns = run.ns?;
    if run.systemd
        || !is_nixos(&setup.kernel_cmdline)
        || (ns as f64) < settings.get(&RULE, "min_initrd_ms") * 1e6
    {
        return None;
    }
    Some(Recommendation {
        rule: RULE.id,
        title: format!("the initrd ran the scripted stage 1 for {}", duration(ns)),
        subjects: vec![Subject { kind: SubjectKind::System, name: "initrd".into() }],
        evidence: json!({
            "initrd_ns": ns,
            "systemd_in_initrd": false,
            "kernel_cmdline": setup.kernel_cmdline,
        }),
        saving: Saving {
            time_ns: None,
            bytes: None,
            how: "not estimated: systemd in stage 1 starts the initrd's work in parallel, but nixpkgs #539843 saw a boot about 1 s slower with it; the next boot's report gives its initrd time to compare".into(),
        },
        confidence: Confidence {
            level: Level::Low,
            reason: format!(
                "the {} is the kernel log's, from running the initrd's /init to the system's systemd starting; what systemd in stage 1 would take is not in this trace",
                duration(ns)
            ),
        },
        fix: Fix {
            kind: FixKind::NixosOption,
            text: "services.nixtrace.optimizations.enable = true;\nservices.nixtrace.optimizations.systemdInitrd = true;   # or directly: boot.initrd.systemd.enable = true;".into(),
            revert: "Set services.nixtrace.optimizations.systemdInitrd = false (or remove boot.initrd.systemd.enable); the previous generation in the boot menu boots the scripted initrd meanwhile.".into(),
            risk: Some("Options of the scripted stage 1 (boot.initrd.preLVMCommands, postDeviceCommands and the like) do not apply under systemd: NixOS refuses to build such a configuration rather than boot it, and the hooks have to be rewritten as initrd units.".into()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::{Filter, analyse},
        trace::{Initrd, InitrdRun, Stats, TraceWriter},
    };

    /// The recommendations of a trace recorded on a boot set up as given.
    fn recommended(setup: BootSetup) -> Vec<Recommendation> {
        let mut header = crate::trace::tests::header();
        header.clock.boottime_ns = 3_000_000_000;
        header.boot = Some(setup);
        let mut bytes = Vec::new();
        TraceWriter::new(&mut bytes, &header).unwrap().finish(&Stats::default()).unwrap();
        let analysis = analyse(bytes.as_slice(), "t", &Filter::default()).unwrap();
        check(&analysis, &Settings::default())
    }

    fn setup(cmdline: &str, loglevel: u32, printed: u64, compression: &str) -> BootSetup {
        BootSetup {
            kernel_cmdline: cmdline.into(),
            initrd: Some(Initrd {
                path: "/boot/initrd".into(),
                size_bytes: 30 << 20,
                compression: Some(compression.into()),
            }),
            console_loglevel: Some(loglevel),
            console_log_bytes: Some(printed),
            initrd_run: None,
        }
    }

    #[test]
    fn a_scripted_nixos_stage_1() {
        const NIXOS: &str =
            "init=/nix/store/0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-h-25.05/init quiet";
        let with = |cmdline: &str, systemd: bool, ns: u64| {
            let run = InitrdRun { systemd, ns: Some(ns) };
            recommended(BootSetup { initrd_run: Some(run), ..setup(cmdline, 4, 0, "zstd") })
        };
        let found = with(NIXOS, false, 2_400_000_000);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].evidence["initrd_ns"], 2_400_000_000u64);
        assert_eq!(found[0].saving.time_ns, None);
        assert!(found[0].fix.text.contains("boot.initrd.systemd.enable = true"), "{}", found[0].fix.text);
        // systemd in stage 1 already, a short stage 1, and a Debian initramfs say nothing.
        assert!(with(NIXOS, true, 2_400_000_000).is_empty());
        assert!(with(NIXOS, false, 300_000_000).is_empty());
        assert!(with("root=/dev/vda quiet", false, 8_563_025_000).is_empty());
    }

    #[test]
    fn a_chatty_serial_console_and_a_slow_initrd() {
        let found = recommended(setup("console=ttyS0,115200 root=/dev/vda", 7, 23_040, "gzip"));
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].evidence["baud"], 115200);
        // 23040 bytes at 115200 baud, ten bits a byte: 2 s.
        assert_eq!(found[0].saving.time_ns, Some(2_000_000_000));
        assert_eq!(found[1].evidence["compression"], "gzip");
        assert_eq!(found[1].saving.time_ns, None);
    }

    #[test]
    fn quiet_zstd_and_no_serial_console_say_nothing() {
        for quiet in [
            setup("console=ttyS0 quiet", 7, 1 << 20, "zstd"),
            setup("console=ttyS0", 4, 1 << 20, "zstd"),
            setup("console=tty1", 7, 1 << 20, "lz4"),
            setup("console=ttyS0", 7, 100, "zstd"),
        ] {
            assert!(recommended(quiet.clone()).is_empty(), "{quiet:?}");
        }
    }

    #[test]
    fn systemd_times_parse() {
        assert_eq!(systemd_time_ns("1min 2.301s"), Some(62_301_000_000));
        assert_eq!(systemd_time_ns("312ms"), Some(312_000_000));
        assert_eq!(systemd_time_ns("45us"), Some(45_000));
        assert_eq!(systemd_time_ns("2.5 parsecs"), None);
    }

    /// The recommendations of a boot whose critical chain systemd-analyze
    /// printed as `chain`.
    fn with_chain(chain: &str) -> Vec<Recommendation> {
        let mut header = crate::trace::tests::header();
        header.boot = Some(setup("quiet", 4, 0, "zstd"));
        let mut bytes = Vec::new();
        let mut writer = TraceWriter::new(&mut bytes, &header).unwrap();
        writer
            .write(&crate::trace::Event::SystemdAnalyze {
                ts_ns: 1,
                critical_chain: Some(chain.as_bytes().to_vec()),
                blame: None,
                unit_times: None,
            })
            .unwrap();
        writer.finish(&Stats::default()).unwrap();
        let analysis = analyse(bytes.as_slice(), "t", &Filter::default()).unwrap();
        check(&analysis, &Settings::default())
    }

    #[test]
    fn a_waiting_unit_on_the_critical_chain() {
        let found = with_chain(
            "multi-user.target @9.1s\n└─network-online.target @9.0s\n  └─systemd-networkd-wait-online.service @3.2s +5.802s\n    └─systemd-udev-settle.service @3.1s +90ms\n",
        );
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].evidence["unit"], "systemd-networkd-wait-online.service");
        assert_eq!(found[0].saving.time_ns, Some(5_802_000_000));
        assert!(found[0].fix.text.contains("optimizations.skipNetworkWaitOnline = true"));
        assert!(with_chain("multi-user.target @2s\n└─systemd-udevd.service @1s +900ms\n").is_empty());
    }

    #[test]
    fn serial_consoles_and_their_baud_rates() {
        assert_eq!(console_of("root=/dev/vda console=ttyS0 rw"), Some(("ttyS0".into(), 9600)));
        assert_eq!(console_of("console=tty0 console=ttyS1,115200n8"), Some(("ttyS1".into(), 115200)));
        assert_eq!(console_of("console=tty1 quiet"), None);
    }
}
