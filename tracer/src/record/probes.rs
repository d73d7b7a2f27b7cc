//! The probe registry: every probe, its eBPF programs and their
//! tracepoints, which probes are optional and what a trace lacks without
//! each, and which of them a recording gets on this kernel.

use std::path::Path;

use anyhow::{Result, bail};
use tracer_common::TracepointFields;

use super::tracefs::{Unavailable, resolve_tracepoints};
use crate::trace::{MissingProbe, Probe};

/// One eBPF program (a function in `tracer-ebpf`) and its tracepoint.
pub(super) struct Attachment {
    pub(super) program: &'static str,
    pub(super) category: &'static str,
    pub(super) tracepoint: &'static str,
    /// A syscall some kernels do not have (openat2 before 5.6, open on
    /// arm64): attached where it exists, as there is nothing to miss where
    /// it does not.
    pub(super) if_present: bool,
}

impl Attachment {
    /// "category/name", as under tracefs `events/`.
    pub(super) fn event(&self) -> String {
        format!("{}/{}", self.category, self.tracepoint)
    }
}

const fn tp(program: &'static str, category: &'static str) -> Attachment {
    // Every program is named after its tracepoint.
    Attachment { program, category, tracepoint: program, if_present: false }
}

const fn tp_if_present(program: &'static str, category: &'static str) -> Attachment {
    Attachment { if_present: true, ..tp(program, category) }
}

/// A probe and its programs.
pub(super) struct ProbeSpec {
    pub(super) probe: Probe,
    pub(super) attachments: &'static [Attachment],
    /// What a trace lacks without this probe; None for the probes nixtrace
    /// cannot record without.
    pub(super) lacks: Option<&'static str>,
    /// Off unless `record --probe` asks for it (it fires too often to be
    /// worth its cost in every trace).
    pub(super) opt_in: bool,
}

/// Every probe but the loader uprobes, in attach order.
pub(super) const PROBES: &[ProbeSpec] = &[
    ProbeSpec { probe: Probe::Fork, attachments: &[tp("task_newtask", "task")], lacks: None, opt_in: false },
    ProbeSpec {
        probe: Probe::Exec,
        attachments: &[
            tp("sched_process_exec", "sched"),
            tp("sys_enter_execve", "syscalls"),
            tp("sys_exit_execve", "syscalls"),
            tp("sys_enter_execveat", "syscalls"),
            tp("sys_exit_execveat", "syscalls"),
        ],
        lacks: None,
        opt_in: false,
    },
    ProbeSpec {
        probe: Probe::Exit,
        attachments: &[tp("sched_process_exit", "sched")],
        lacks: None,
        opt_in: false,
    },
    ProbeSpec {
        probe: Probe::Open,
        attachments: &[
            tp("sys_enter_openat", "syscalls"),
            tp("sys_exit_openat", "syscalls"),
            tp_if_present("sys_enter_openat2", "syscalls"),
            tp_if_present("sys_exit_openat2", "syscalls"),
            tp_if_present("sys_enter_open", "syscalls"),
            tp_if_present("sys_exit_open", "syscalls"),
        ],
        lacks: None,
        opt_in: false,
    },
    ProbeSpec {
        probe: Probe::Mmap,
        attachments: &[tp("sys_enter_mmap", "syscalls"), tp("sys_exit_mmap", "syscalls")],
        lacks: None,
        opt_in: false,
    },
    ProbeSpec {
        probe: Probe::CgroupMkdir,
        attachments: &[tp("cgroup_mkdir", "cgroup")],
        lacks: Some("the paths of cgroups created while recording, so the units started then"),
        opt_in: false,
    },
    ProbeSpec {
        probe: Probe::PageCache,
        attachments: &[tp("mm_filemap_add_to_page_cache", "filemap")],
        lacks: Some("disk reads per file and process, so the io flamegraph"),
        opt_in: false,
    },
    ProbeSpec {
        probe: Probe::BlockIo,
        attachments: &[tp("block_rq_issue", "block"), tp("block_rq_complete", "block")],
        lacks: Some("block-device requests and their latency"),
        opt_in: false,
    },
    ProbeSpec {
        probe: Probe::Sched,
        attachments: &[tp("sched_switch", "sched"), tp("sched_wakeup", "sched")],
        lacks: Some("on-CPU, runnable, blocked and sleeping times"),
        opt_in: false,
    },
    ProbeSpec {
        probe: Probe::Read,
        attachments: &[
            tp("sys_enter_read", "syscalls"),
            tp("sys_exit_read", "syscalls"),
            tp("sys_enter_pread64", "syscalls"),
            tp("sys_exit_pread64", "syscalls"),
        ],
        lacks: Some("bytes read per file"),
        opt_in: false,
    },
    ProbeSpec {
        probe: Probe::Stat,
        attachments: &[
            tp("sys_enter_newfstatat", "syscalls"),
            tp("sys_exit_newfstatat", "syscalls"),
            tp("sys_enter_statx", "syscalls"),
            tp("sys_exit_statx", "syscalls"),
            tp("sys_enter_faccessat", "syscalls"),
            tp("sys_exit_faccessat", "syscalls"),
            tp("sys_enter_readlinkat", "syscalls"),
            tp("sys_exit_readlinkat", "syscalls"),
            // Before 5.8, and on architectures without the old calls.
            tp_if_present("sys_enter_faccessat2", "syscalls"),
            tp_if_present("sys_exit_faccessat2", "syscalls"),
            tp_if_present("sys_enter_newstat", "syscalls"),
            tp_if_present("sys_exit_newstat", "syscalls"),
            tp_if_present("sys_enter_newlstat", "syscalls"),
            tp_if_present("sys_exit_newlstat", "syscalls"),
            tp_if_present("sys_enter_access", "syscalls"),
            tp_if_present("sys_exit_access", "syscalls"),
            tp_if_present("sys_enter_readlink", "syscalls"),
            tp_if_present("sys_exit_readlink", "syscalls"),
        ],
        lacks: Some("stat-family lookups, so interpreters' and shells' path searches"),
        opt_in: true,
    },
];

/// The probes a recording can do without, for `record --no-probe`, each
/// with what the trace lacks without it.
pub fn optional_probes() -> impl Iterator<Item = (Probe, &'static str)> {
    PROBES.iter().filter(|spec| !spec.opt_in).filter_map(|spec| Some((spec.probe, spec.lacks?)))
}

/// The probes off unless asked for, for `record --probe`, each with what
/// the trace gets with it.
pub fn opt_in_probes() -> impl Iterator<Item = (Probe, &'static str)> {
    PROBES.iter().filter(|spec| spec.opt_in).filter_map(|spec| Some((spec.probe, spec.lacks?)))
}

/// The probes a recording tries to attach: every one but the opt-in ones
/// not `requested`.
pub(super) fn chosen(requested: &[Probe]) -> impl Iterator<Item = &'static ProbeSpec> {
    PROBES.iter().filter(|spec| !spec.opt_in || requested.contains(&spec.probe))
}

pub(super) fn is_missing(missing: &[MissingProbe], probe: Probe) -> bool {
    missing.iter().any(|m| m.probe == probe)
}

/// Which probes a recording gets: all but the optional ones `disabled`,
/// the opt-in ones not `requested`, and those whose tracepoints this kernel
/// lacks or lays out differently (the missing ones, returned), and the
/// tracepoint fields of those it gets. A required probe's tracepoint that is
/// unusable is the error. An opt-in probe that was not asked for is not
/// missing: a trace without it is what was asked for.
pub(super) fn choose_probes(
    tracefs: &Path,
    disabled: &[Probe],
    requested: &[Probe],
) -> Result<(TracepointFields, Vec<MissingProbe>)> {
    let chosen: Vec<&ProbeSpec> = chosen(requested).collect();
    let missing_probe = |spec: &ProbeSpec, reason: String| {
        let lacks = spec.lacks?.to_string();
        Some(MissingProbe { probe: spec.probe, reason, lacks })
    };
    let mut missing: Vec<MissingProbe> = chosen
        .iter()
        .filter(|spec| disabled.contains(&spec.probe))
        .filter_map(|spec| missing_probe(spec, "disabled with --no-probe".into()))
        .collect();
    // Tracepoints whose fields the programs do not read (read's, say) are
    // only looked for; resolve_tracepoints reads the others.
    let wanted: Vec<&&ProbeSpec> = chosen.iter().filter(|p| !is_missing(&missing, p.probe)).collect();
    for spec in wanted {
        let mut events = spec.attachments.iter().filter(|a| !a.if_present).map(Attachment::event);
        let Some(absent) = events.find(|e| !tracefs.join("events").join(e).is_dir()) else { continue };
        let unavailable = Unavailable::absent(absent);
        match missing_probe(spec, unavailable.to_string()) {
            Some(probe) => missing.push(probe),
            None => bail!("{unavailable}; nixtrace cannot record without it"),
        }
    }
    let probe_of = |event: &str| chosen.iter().find(|p| p.attachments.iter().any(|a| a.event() == event));
    // Each round drops one more optional probe, so this ends.
    loop {
        let has = |event: &str| probe_of(event).is_some_and(|p| !is_missing(&missing, p.probe));
        match resolve_tracepoints(tracefs, has) {
            Ok(fields) => return Ok((fields, missing)),
            Err(unavailable) => {
                match probe_of(&unavailable.event).and_then(|p| missing_probe(p, unavailable.to_string())) {
                    Some(probe) => missing.push(probe),
                    None => bail!("{unavailable}; nixtrace cannot record without it"),
                }
            }
        }
    }
}

/// The loader uprobes' programs, in the order of `LoaderProbes`' fields.
pub(super) const LOADER_PROGRAMS: [&str; 3] = ["loader_start", "loader_done", "loader_entry"];

#[cfg(test)]
mod tests {
    use super::*;

    /// `format` files of a 6.18 kernel's tracepoints, copied from its tracefs
    /// (testdata/tracefs/README.md).
    const TRACEFS_COPY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/tracefs");

    /// A tracefs-like directory with the `format` file of every tracepoint
    /// the probes use, but those of `without` ("category/name").
    fn tracefs_without(without: &[&str]) -> tempfile::TempDir {
        let copy = tempfile::tempdir().unwrap();
        let events = PROBES.iter().flat_map(|p| p.attachments.iter()).map(|a| a.event());
        for event in events.filter(|e| !without.contains(&e.as_str())) {
            let from = Path::new(TRACEFS_COPY).join("events").join(&event).join("format");
            let text = std::fs::read(&from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
            let dir = copy.path().join("events").join(&event);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("format"), text).unwrap();
        }
        copy
    }

    /// The header lists the probes in `Probe::ALL`'s order: those of the
    /// table, then the loader uprobes.
    #[test]
    fn the_table_has_every_probe_but_the_loader_in_order() {
        let table: Vec<Probe> = PROBES.iter().map(|spec| spec.probe).chain([Probe::Loader]).collect();
        assert_eq!(table, Probe::ALL);
    }

    #[test]
    fn an_optional_probe_the_kernel_lacks_is_left_out_and_named() {
        let tracefs = tracefs_without(&["filemap/mm_filemap_add_to_page_cache", "syscalls/sys_exit_pread64"]);
        let (fields, missing) = choose_probes(tracefs.path(), &[Probe::Sched], &[]).unwrap();
        let summary: Vec<(Probe, &str)> = missing.iter().map(|m| (m.probe, m.reason.as_str())).collect();
        assert_eq!(
            summary,
            [
                (Probe::Sched, "disabled with --no-probe"),
                (
                    Probe::PageCache,
                    "tracepoint filemap/mm_filemap_add_to_page_cache: this kernel does not have it"
                ),
                (Probe::Read, "tracepoint syscalls/sys_exit_pread64: this kernel does not have it")
            ]
        );
        assert_eq!(missing[1].lacks, "disk reads per file and process, so the io flamegraph");
        // The fields of the probes left out are not read; the others are.
        assert_eq!((fields.page_cache_ino, fields.switch_prev_state), (0, 0));
        assert_ne!(fields.block_issue_dev, 0);
        let everything = tracefs_without(&[]);
        assert_eq!(choose_probes(everything.path(), &[], &[]).unwrap().1, []);
        assert_eq!(choose_probes(everything.path(), &[], &[Probe::Stat]).unwrap().1, []);
    }

    #[test]
    fn an_optional_probe_whose_fields_changed_is_left_out() {
        let tracefs = tracefs_without(&[]);
        let format = tracefs.path().join("events/block/block_rq_complete/format");
        let text = std::fs::read_to_string(&format).unwrap();
        let without_error: String =
            text.lines().filter(|l| !l.contains(" error;")).map(|l| l.to_string() + "\n").collect();
        assert_ne!(text, without_error, "block_rq_complete has an `error` field");
        std::fs::write(&format, without_error).unwrap();
        let (_, missing) = choose_probes(tracefs.path(), &[], &[]).unwrap();
        let summary: Vec<(Probe, &str)> = missing.iter().map(|m| (m.probe, m.reason.as_str())).collect();
        assert_eq!(
            summary,
            [(Probe::BlockIo, "tracepoint block/block_rq_complete: it has no field `error` on this kernel")]
        );
    }

    #[test]
    fn a_required_probe_the_kernel_lacks_is_the_error() {
        let tracefs = tracefs_without(&["sched/sched_process_exec"]);
        let error = choose_probes(tracefs.path(), &[], &[]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "tracepoint sched/sched_process_exec: this kernel does not have it; nixtrace cannot record without it"
        );
    }
}
