//! boot-io: what the boot read from disk, by unit, and the preload list
//! that reads the same pages early in the next boot, in one pass and in
//! the order they will be needed, so that the units on the critical chain
//! find them cached instead of waiting for the disk.

use serde_json::json;

use super::{
    Confidence, Fix, FixKind, Level, Recommendation, Rule, Saving, Settings, Subject, SubjectKind, Threshold,
};
use crate::{
    analysis::{Analysis, UnitFigures, preload::PRELOAD_UNIT},
    human::{bytes, count, duration},
    saturating::SaturatingSum as _,
};

pub const RULE: Rule = Rule {
    id: "boot-io",
    title: "Read what the boot reads from disk before it is needed",
    description: "In a trace of a boot (record --boot): the units that read the most from disk, and \
        the preload list record --boot writes beside the report (<boot-id>.preload, and \
        latest.preload): every file the boot read from disk, by store path, with the pages that \
        came in, in the order they were first used. nixtrace-preload.service (NixOS: \
        services.nixtrace.optimizations.preload) reads the last boot's list at the start of the \
        next one. Says nothing when the boot already ran it.",
    thresholds: &[Threshold {
        name: "min_preload_bytes",
        default: 4_194_304.0,
        help: "bytes the boot must have read from disk before a preload is worth its own reads",
    }],
    check,
};

/// Units shown in the evidence.
const TOP_UNITS: usize = 10;
/// Files of the list shown in the evidence.
const FIRST_FILES: usize = 10;

fn check(analysis: &Analysis, settings: &Settings) -> Vec<Recommendation> {
    if analysis.header.boot.is_none() || analysis.units.iter().any(|u| u.name == PRELOAD_UNIT) {
        return Vec::new();
    }
    let list = &analysis.preload;
    let listed_bytes: u64 = list.entries.iter().map(|e| e.bytes()).saturating_sum();
    if (listed_bytes as f64) < settings.get(&RULE, "min_preload_bytes") || list.entries.is_empty() {
        return Vec::new();
    }
    let chain: Option<Vec<&str>> =
        analysis.boot.as_ref().map(|b| b.critical_chain.iter().map(|u| u.unit.as_str()).collect());
    let mut readers: Vec<&UnitFigures> = analysis.units.iter().filter(|u| u.io.disk_read_bytes > 0).collect();
    readers.sort_by(|a, b| b.io.disk_read_bytes.cmp(&a.io.disk_read_bytes).then(a.name.cmp(&b.name)));
    let on_chain = |unit: &UnitFigures| chain.as_ref().map(|c| c.contains(&unit.name.as_str()));
    // A unit waited on the disk for no longer than it slept uninterruptibly
    // nor than its requests took: the smaller bounds what a preload hides.
    let waited = |unit: &UnitFigures| unit.time.blocked_ns.min(unit.io.block_latency_ns);
    let saving_ns = chain
        .as_ref()
        .map(|_| readers.iter().filter(|u| on_chain(u) == Some(true)).map(|u| waited(u)).saturating_sum());
    let units: Vec<serde_json::Value> = readers
        .iter()
        .take(TOP_UNITS)
        .map(|u| {
            json!({
                "unit": u.name,
                "disk_read_bytes": u.io.disk_read_bytes,
                "block_requests": u.io.block_requests,
                "block_latency_ns": u.io.block_latency_ns,
                "blocked_ns": u.time.blocked_ns,
                "on_critical_chain": on_chain(u),
            })
        })
        .collect();
    let first_files: Vec<serde_json::Value> = list
        .entries
        .iter()
        .take(FIRST_FILES)
        .map(|e| json!({ "path": e.path, "bytes": e.bytes(), "first_used_ns": e.first_used_ns }))
        .collect();
    let left_out = &list.left_out;
    let evidence = json!({
        "disk_read_bytes": analysis.units.iter().map(|u| u.io.disk_read_bytes).saturating_sum(),
        "units": units,
        "preload_files": list.entries.len(),
        "preload_bytes": listed_bytes,
        "first_files": first_files,
        "left_out": {
            "written": left_out.written,
            "unnamed": left_out.unnamed,
            "unlistable": left_out.unlistable,
            "preloader_only": left_out.preloader_only,
        },
    });
    let how = match saving_ns {
        Some(ns) => format!(
            "at most {}: what the units on the critical chain waited for the disk (their \
             uninterruptible sleep, capped by their block requests' latency); a preload reads the \
             same {} earlier, so it hides that wait only where the preload is ahead of them",
            duration(ns),
            bytes(listed_bytes)
        ),
        None => "not estimated: the trace has no critical chain (systemd-analyze failed when the \
                 recording stopped, or the trace is older than format 4)"
            .to_string(),
    };
    let top = readers.first().map_or(String::new(), |u| format!("; most by {}", u.name));
    vec![Recommendation {
        rule: RULE.id,
        title: format!(
            "the boot read {} from disk{top}: preload {} of them early",
            bytes(listed_bytes),
            count(list.entries.len() as u64, "file", "files")
        ),
        subjects: std::iter::once(Subject { kind: SubjectKind::System, name: "boot".into() })
            .chain(readers.iter().take(3).map(|u| Subject { kind: SubjectKind::Unit, name: u.name.clone() }))
            .collect(),
        evidence,
        saving: Saving { time_ns: saving_ns, bytes: None, how },
        confidence: Confidence {
            level: Level::Low,
            reason: "the reads still happen, only earlier and in order: the gain depends on how far \
                     ahead of the units the preload gets, and on the disk (little on NVMe, most on \
                     a spinning disk or slow SD card); measure it with the next boot's report"
                .into(),
        },
        fix: Fix {
            kind: FixKind::NixosOption,
            text: "services.nixtrace.optimizations.enable = true;\n\
                   services.nixtrace.optimizations.preload = true;   # elsewhere: systemctl enable nixtrace-preload.service"
                .into(),
            revert: "Set services.nixtrace.optimizations.preload = false (elsewhere: systemctl disable \
                     nixtrace-preload.service)."
                .into(),
            risk: Some(
                "The preload competes with the units for the disk in the first seconds of the boot; \
                 on a fast disk it may gain nothing. It only reads: files gone since the list was made \
                 are skipped."
                    .into(),
            ),
        },
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::{Filter, analyse},
        trace::{BootSetup, Common, Event, OpenSyscall, Stats, TraceWriter},
    };

    fn open(pid: u32, ts_ns: u64, path: &str, ino: u64) -> Event {
        Event::Open {
            common: Common { ts_ns, pid, tid: pid, cgroup_id: u64::from(pid) },
            syscall: OpenSyscall::Openat,
            dfd: -100,
            path: path.as_bytes().to_vec(),
            dir: None,
            dir_truncated: false,
            flags: 0,
            mode: 0,
            ret: 3,
            duration_ns: 1_000,
            ino,
            dev: 1,
        }
    }

    /// A boot trace in which pid 10 of a.service read `pages` pages of one
    /// file from disk, and pid 11 of `other_unit` opened another.
    fn boot_trace(pages: u32, other_unit: &str) -> Analysis {
        let mut header = crate::trace::tests::header();
        header.boot = Some(BootSetup {
            kernel_cmdline: "quiet".into(),
            initrd: None,
            console_loglevel: None,
            console_log_bytes: None,
            initrd_run: None,
        });
        let mut bytes = Vec::new();
        let mut writer = TraceWriter::new(&mut bytes, &header).unwrap();
        let mut events = Vec::new();
        for (pid, unit) in [(10, "a.service"), (11, other_unit)] {
            let path = format!("/system.slice/{unit}").into_bytes();
            let common = Common { ts_ns: 1, pid, tid: pid, cgroup_id: 0 };
            events.push(Event::Cgroup { common, id: u64::from(pid), level: 2, path, seeded: true });
            events.push(Event::Process {
                ts_ns: 1,
                pid,
                ppid: 1,
                start_ns: 1,
                cgroup_id: u64::from(pid),
                exe: Some(b"/bin/x".to_vec()),
                argv: Vec::new(),
            });
        }
        events.push(open(10, 2, "/nix/store/x-a/lib/liba.so", 7));
        events.push(Event::PageCache {
            common: Common { ts_ns: 3, pid: 10, tid: 10, cgroup_id: 10 },
            dev: 1,
            ino: 7,
            index: 0,
            pages,
        });
        events.push(open(11, 4, "/etc/hostname", 8));
        for event in &events {
            writer.write(event).unwrap();
        }
        writer.finish(&Stats::default()).unwrap();
        analyse(bytes.as_slice(), "t", &Filter::default()).unwrap()
    }

    #[test]
    fn a_boot_that_read_enough_gets_a_list() {
        let analysis = boot_trace(2048, "b.service");
        let found = check(&analysis, &Settings::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        let evidence = &found[0].evidence;
        assert_eq!(evidence["preload_bytes"], 2048 * 4096);
        assert_eq!(evidence["first_files"][0]["path"], "/nix/store/x-a/lib/liba.so");
        assert_eq!(evidence["units"][0]["unit"], "a.service");
        assert_eq!(evidence["units"][0]["on_critical_chain"], serde_json::Value::Null);
        assert_eq!(found[0].saving.time_ns, None);
    }

    #[test]
    fn a_small_or_already_preloaded_boot_says_nothing() {
        assert!(check(&boot_trace(16, "b.service"), &Settings::default()).is_empty());
        assert!(check(&boot_trace(2048, PRELOAD_UNIT), &Settings::default()).is_empty());
    }
}
