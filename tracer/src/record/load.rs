//! Loading the embedded eBPF object into the kernel and attaching its
//! programs (those of the probes `probes` chooses), after finding out what
//! this kernel looks like (`tracefs`, `btf`); then reading its maps.

use std::{collections::HashMap as StdHashMap, fs, io, path::Path, sync::Mutex, thread, time::Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{Program, ProgramError, TracePoint, UProbe, uprobe::UProbeScope},
};
use tracer_common::{Config, EventKind, ReadKey, TaskTimes, lost};

use super::{
    btf::KernelTypes,
    loader::Loader,
    loader_probes::LoaderProbes,
    probes::{Attachment, LOADER_PROGRAMS, ProbeSpec, choose_probes, chosen, is_missing},
    release::Releaser,
    tracefs::TRACEFS,
};
use crate::trace::{FileId, MissingProbe, Probe};

/// The kernel programs, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nixtrace-ebpf.o"));

/// What the recorder asks of the kernel side.
#[derive(Debug, Clone, Copy)]
pub struct Filter {
    /// Only follow processes put in the followed set (and their children).
    pub follow_only: bool,
    /// Children of the recorder itself join the followed set.
    pub follow_own_children: bool,
    /// Only tasks in this cgroup (id, level in the v2 tree) or below.
    pub cgroup: Option<(u64, u32)>,
    /// Ring buffer size in bytes.
    pub buffer_bytes: u32,
    /// The calibration helper's pid (0: none): traced, but what the ring
    /// has no room for of it is not counted as lost.
    pub calibrator_pid: u32,
}

/// Loaded and attached programs, and the maps userspace reads.
pub struct Probes {
    ebpf: Ebpf,
    /// Takes the programs down after this process exits; dropped after
    /// `ebpf`, which the helper waits for.
    releaser: Option<Releaser>,
    /// The probes attached, in attach order, for the trace header.
    pub attached: Vec<Probe>,
    /// The optional probes not attached, for the trace header.
    pub missing: Vec<MissingProbe>,
    /// The loaders the loader probes are attached to.
    pub loaders: Vec<FileId>,
    /// What could not be probed, and what the trace will lack because of it.
    pub warnings: Vec<String>,
    /// Time from starting to load until the last program was attached.
    pub attach_time: std::time::Duration,
}

impl Drop for Probes {
    /// Hands the links to the releaser, which takes them down after this
    /// process has exited (`release.rs`). Without one, detaches every
    /// program here, at once: one after another, as aya drops them, kept
    /// `record` from exiting for 2.2 s after the trace was written;
    /// concurrent detaches overlap only in part, as the kernel holds one
    /// mutex over most of each: 1.3 s here.
    fn drop(&mut self) {
        if self.releaser.as_ref().is_some_and(|releaser| releaser.hand_over().is_ok()) {
            return;
        }
        let programs: Vec<&mut Program> = self.ebpf.programs_mut().map(|(_, program)| program).collect();
        let threads = programs.len();
        // Nothing is left to do about a program that fails to unload.
        let _ = on_threads(
            programs,
            threads,
            || (),
            |program| {
                let _ = match program {
                    Program::TracePoint(p) => p.unload(),
                    Program::UProbe(p) => p.unload(),
                    _ => Ok(()),
                };
                Ok(())
            },
        );
    }
}

/// Runs `work` on every job, on `threads` threads (this one among them)
/// that take jobs from one queue; this thread first runs `first`. Where
/// fewer threads can be had (a tight TasksMax), fewer do it all. Returns
/// what `first` returned, and the first error of `work`.
fn on_threads<J: Send, R>(
    jobs: Vec<J>,
    threads: usize,
    first: impl FnOnce() -> R,
    work: impl Fn(J) -> Result<()> + Sync,
) -> (R, Result<()>) {
    let queue = Mutex::new(jobs);
    let drain = || -> Result<()> {
        loop {
            let job = queue.lock().map_err(|_| anyhow!("a worker thread panicked"))?.pop();
            let Some(job) = job else { return Ok(()) };
            work(job)?;
        }
    };
    thread::scope(|scope| {
        let workers: Vec<_> =
            (1..threads).map_while(|_| thread::Builder::new().spawn_scoped(scope, drain).ok()).collect();
        let first = first();
        let mut outcome = drain();
        for worker in workers {
            let done = worker.join().map_err(|_| anyhow!("a worker thread panicked")).and_then(|r| r);
            outcome = outcome.and(done);
        }
        (first, outcome)
    })
}

/// Mounts tracefs where it is missing (early boot, minimal systems): classic
/// tracepoints cannot be attached without it.
fn ensure_tracefs() -> Result<()> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let target = std::ffi::CString::new(TRACEFS)?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let ret = unsafe {
        libc::mount(c"tracefs".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null())
    };
    if ret != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("tracefs is not mounted and mounting it at {TRACEFS} failed"));
    }
    Ok(())
}

/// Names what is missing when the caller may not load eBPF programs.
pub fn check_privileges() -> Result<()> {
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_DAC_READ_SEARCH: u64 = 2;
    const CAP_SYS_ADMIN: u64 = 21;
    const CAP_PERFMON: u64 = 38;
    const CAP_BPF: u64 = 39;
    let has = |cap: u64| effective & (1 << cap) != 0;
    let missing: Vec<&str> =
        [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"), (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH")]
            .into_iter()
            .filter(|(cap, _)| !has(*cap) && !has(CAP_SYS_ADMIN))
            .map(|(_, name)| name)
            .collect();
    if missing.is_empty() {
        return Ok(());
    }
    bail!("recording needs root or the capabilities {} (missing here); run it with sudo", missing.join(", "))
}
/// Loads every program and attaches it: each tracepoint of `probes`, and
/// the loader uprobes to each glibc loader in `loaders`. The kernel verifies
/// each program on its own, and verifying takes most of the time to attach
/// (the programs that walk dentries the longest), so this runs on as many
/// threads as there are CPUs (at most four); this thread starts with the
/// uprobes, whose attaching the kernel spends in every process that maps
/// the loader.
///
/// A tracepoint that fails fails the recording (the error); the uprobes'
/// outcome is returned, as without them only the loader timings are missing.
fn attach_programs(ebpf: &mut Ebpf, loaders: &[Loader], probes: &[&ProbeSpec]) -> Result<Result<()>> {
    let wanted: StdHashMap<&str, (Probe, &Attachment)> = probes
        .iter()
        .flat_map(|spec| spec.attachments.iter().map(|a| (spec.probe, a)))
        .filter(|(_, a)| !a.if_present || Path::new(TRACEFS).join("events").join(a.event()).is_dir())
        .map(|(probe, a)| (a.program, (probe, a)))
        .collect();
    let (mut tracepoints, mut uprobes) = (Vec::new(), Vec::new());
    for (name, program) in ebpf.programs_mut() {
        if let Some(&(probe, attachment)) = wanted.get(name) {
            tracepoints.push((probe, attachment, program));
        } else if LOADER_PROGRAMS.contains(&name) {
            uprobes.push((name, program));
        }
    }
    let missing = wanted.keys().find(|name| !tracepoints.iter().any(|(_, a, _)| a.program == **name));
    if let Some(missing) = missing {
        bail!("the eBPF object has no program {missing}");
    }
    let threads = thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let (uprobes, tracepoints) = on_threads(
        tracepoints,
        threads,
        || attach_uprobes(uprobes, loaders),
        |(probe, attachment, program)| load_and_attach(probe, attachment, program),
    );
    tracepoints.map(|()| uprobes)
}

/// Loads the loader uprobes and attaches each to every loader (where it
/// has a probe point).
fn attach_uprobes(mut programs: Vec<(&str, &mut Program)>, loaders: &[Loader]) -> Result<()> {
    // In LOADER_PROGRAMS order, to pair them with the probe points.
    programs.sort_by_key(|(name, _)| LOADER_PROGRAMS.iter().position(|p| p == name));
    if let Some(missing) = LOADER_PROGRAMS.iter().find(|p| !programs.iter().any(|(name, _)| name == *p)) {
        bail!("the eBPF object has no program {missing}");
    }
    let probe = Probe::Loader;
    let mut uprobes = Vec::new();
    for (name, program) in programs {
        let uprobe: &mut UProbe = program
            .try_into()
            .with_context(|| format!("eBPF program {name} of probe {probe} is not a uprobe"))?;
        uprobe.load().map_err(|e| refused(probe, name, e))?;
        uprobes.push((name, uprobe));
    }
    for loader in loaders {
        let LoaderProbes { start, done, entry } = loader.probes;
        for ((name, uprobe), offset) in uprobes.iter_mut().zip([Some(start), Some(done), entry]) {
            let Some(offset) = offset else { continue };
            uprobe.attach(offset, &loader.path, UProbeScope::AllProcesses).with_context(|| {
                let path = loader.path.display();
                format!("attaching eBPF program {name} of probe {probe} to {path} at {offset:#x}")
            })?;
        }
    }
    Ok(())
}

/// Loads one tracepoint program of `probe` and attaches it to its tracepoint.
fn load_and_attach(probe: Probe, attachment: &Attachment, program: &mut Program) -> Result<()> {
    let Attachment { program: name, category, tracepoint, .. } = attachment;
    let program: &mut TracePoint = program
        .try_into()
        .with_context(|| format!("eBPF program {name} of probe {probe} is not a tracepoint program"))?;
    program.load().map_err(|e| refused(probe, name, e))?;
    program.attach(category, tracepoint).with_context(|| {
        format!("attaching eBPF program {name} of probe {probe} to tracepoint {category}:{tracepoint}")
    })?;
    Ok(())
}

/// A one-line error for a program of `probe` the kernel refused, with the
/// system call's error as its source; the verifier's whole log (often
/// megabytes) only with `NIXTRACE_VERIFIER_LOG=1`.
fn refused(probe: Probe, program: &str, error: ProgramError) -> anyhow::Error {
    let (io_error, verifier_log) = match error {
        ProgramError::LoadError { io_error, verifier_log } => (io_error, verifier_log),
        other => {
            return anyhow::Error::new(other)
                .context(format!("loading eBPF program {program} of probe {probe}"));
        }
    };
    let log = verifier_log.to_string();
    if std::env::var_os("NIXTRACE_VERIFIER_LOG").is_some() {
        eprintln!("{log}");
    }
    let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    anyhow::Error::new(io_error).context(format!(
        "the kernel refused eBPF program {program} of probe {probe} (verifier: {last}; set \
         NIXTRACE_VERIFIER_LOG=1 for its whole log)"
    ))
}

impl Probes {
    /// Loads and attaches every probe but the optional ones in `disabled`,
    /// the opt-in ones not in `requested`, and those this kernel cannot
    /// support. The kernel's types come from
    /// `btf` when given, else from wherever the kernel's BTF can be found.
    /// The `releaser`, if any, takes them down when they are dropped.
    pub fn load(
        self_pid: u32,
        releaser: Option<Releaser>,
        filter: Filter,
        disabled: &[Probe],
        requested: &[Probe],
        btf: Option<&Path>,
    ) -> Result<Probes> {
        if cfg!(nixtrace_stub_ebpf) {
            bail!(
                "this nixtrace was built without its eBPF programs (bpf-linker was missing at build \
                 time); run `cargo xtask setup` and rebuild"
            );
        }
        check_privileges()?;
        let started = Instant::now();
        ensure_tracefs()?;
        // Meanwhile, on other cores: aya parses the kernel's whole BTF when
        // a loader is created (nothing can skip it), and the glibc loaders
        // are found and decoded.
        let aya_loader = thread::spawn(EbpfLoader::new);
        let glibc_loaders = thread::spawn(super::loader::find);
        let (tracepoints, missing) = choose_probes(Path::new(TRACEFS), disabled, requested)?;
        let kernel = KernelTypes::of_running_kernel(btf)?.resolve()?;
        let (cgroup_filter_id, cgroup_filter_level) = filter.cgroup.unwrap_or((0, 0));
        let config = Config {
            self_pid,
            follow_only: filter.follow_only.into(),
            follow_own_children: filter.follow_own_children.into(),
            cgroup_filter_level,
            sched_times: (!is_missing(&missing, Probe::Sched)).into(),
            wake_at_bytes: filter.buffer_bytes / tracer_common::WAKE_AT_ONE_IN,
            calibrator_pid: filter.calibrator_pid,
            _pad: 0,
            cgroup_filter_id,
            tracepoints,
            kernel,
        };
        // Kernels >= 5.11 account BPF memory to the cgroup; older ones need
        // the rlimit raised. Failing to raise it is not an error here.
        let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        // SAFETY: valid pointer to a local.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };

        let mut aya_loader = aya_loader.join().map_err(|_| anyhow!("creating the eBPF loader panicked"))?;
        let mut ebpf = aya_loader
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", filter.buffer_bytes)
            .load(OBJECT)
            .context("loading the eBPF object")?;
        let (glibc_loaders, unprobeable) =
            glibc_loaders.join().map_err(|_| anyhow!("finding the glibc loaders panicked"))?;
        let probes: Vec<&ProbeSpec> =
            chosen(requested).filter(|spec| !is_missing(&missing, spec.probe)).collect();
        let mut attached: Vec<Probe> = probes.iter().map(|spec| spec.probe).collect();
        // The user knows which probes they disabled; the kernel's gaps are news.
        let mut warnings: Vec<String> = missing
            .iter()
            .filter(|m| !disabled.contains(&m.probe))
            .map(|m| format!("probe {} is unavailable ({}): the trace lacks {}", m.probe, m.reason, m.lacks))
            .collect();
        let uprobes = attach_programs(&mut ebpf, &glibc_loaders, &probes)?;
        warnings.extend(unprobeable.iter().map(|e| format!("{e:#}: its processes have no loader timings")));
        for loader in glibc_loaders.iter().filter(|loader| loader.probes.entry.is_none()) {
            warnings.push(format!(
                "{}: unknown code at the end of _dl_start_user; its processes have no initialiser times",
                loader.path.display()
            ));
        }
        let loaders = match uprobes {
            Ok(()) if glibc_loaders.is_empty() => {
                warnings.push("no glibc dynamic loader found: the trace has no loader timings".to_string());
                Vec::new()
            }
            Ok(()) => {
                attached.push(Probe::Loader);
                glibc_loaders
                    .into_iter()
                    .map(|l| FileId { path: l.path.to_string_lossy().into_owned(), dev: l.dev, ino: l.ino })
                    .collect()
            }
            Err(e) => {
                warnings.push(format!("{e:#}; the trace has no loader timings"));
                Vec::new()
            }
        };
        Ok(Probes { ebpf, releaser, attached, missing, loaders, warnings, attach_time: started.elapsed() })
    }

    /// The ring buffer the programs send events through (taken once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS").context("the eBPF object has no EVENTS map")?;
        RingBuf::try_from(map).context("opening the EVENTS map as a ring buffer")
    }

    /// Adds processes to the followed set (for `--pid`).
    pub fn follow(&mut self, pids: impl IntoIterator<Item = u32>) -> Result<()> {
        let map = self.ebpf.map_mut("FOLLOWED").context("the eBPF object has no FOLLOWED map")?;
        let mut followed: HashMap<_, u32, u8> = HashMap::try_from(map).context("opening the FOLLOWED map")?;
        for pid in pids {
            followed.insert(pid, 1, 0).with_context(|| format!("adding pid {pid} to the FOLLOWED map"))?;
        }
        Ok(())
    }

    /// Traced threads that have not exited: tid and their times so far.
    pub fn running_threads(&self) -> Result<Vec<(u32, TaskTimes)>> {
        let map = self.ebpf.map("TASK_TIMES").context("the eBPF object has no TASK_TIMES map")?;
        let times: HashMap<_, u32, TaskTimes> =
            HashMap::try_from(map).context("opening the TASK_TIMES map")?;
        times.iter().collect::<Result<_, _>>().context("reading the TASK_TIMES map")
    }

    /// Bytes read so far, per process and file.
    pub fn read_totals(&self) -> Result<Vec<(ReadKey, u64)>> {
        let map = self.ebpf.map("READ_BYTES").context("the eBPF object has no READ_BYTES map")?;
        let totals: HashMap<_, ReadKey, u64> =
            HashMap::try_from(map).context("opening the READ_BYTES map")?;
        totals.iter().collect::<Result<_, _>>().context("reading the READ_BYTES map")
    }

    /// Events lost so far, by probe name, summed over CPUs.
    pub fn lost(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let map = self.ebpf.map("LOST").context("the eBPF object has no LOST map")?;
        let counters: PerCpuArray<_, u64> = PerCpuArray::try_from(map).context("opening the LOST map")?;
        let slots = EventKind::ALL.iter().map(|kind| (*kind as u32, kind.probe_name())).chain([
            (lost::PENDING_FULL, "pending_full"),
            (lost::FOLLOW_FULL, "follow_full"),
            (lost::READ_FULL, "read_full"),
        ]);
        let mut lost = std::collections::BTreeMap::new();
        for (slot, name) in slots {
            let values = counters
                .get(&slot, 0)
                .with_context(|| format!("reading slot {slot} ({name}) of the LOST map"))?;
            lost.insert(name.to_string(), values.iter().sum());
        }
        Ok(lost)
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use btf_rs::{Btf, Type};
    use object::{Object as _, ObjectSection as _};
    use tracer_common::*;

    use super::OBJECT;

    /// An error says what was being done and to what, and keeps aya's error
    /// as its source.
    #[test]
    fn a_program_that_fails_to_load_is_named_with_its_probe() {
        use aya::programs::ProgramError;
        let error = super::refused(crate::trace::Probe::Open, "sys_enter_openat", ProgramError::NotLoaded);
        assert_eq!(
            format!("{error:#}"),
            "loading eBPF program sys_enter_openat of probe open: the program is not loaded"
        );
        assert!(matches!(error.root_cause().downcast_ref(), Some(ProgramError::NotLoaded)));
    }

    /// (member name, byte offset) of a userspace struct, and its size.
    macro_rules! layout {
        ($ty:ident { $($field:ident),* $(,)? }) => {
            (stringify!($ty), size_of::<$ty>(), vec![$((stringify!($field), offset_of!($ty, $field))),*])
        };
    }

    /// The load-time configuration as the eBPF object sees it: its BTF,
    /// written by the compiler for the BPF target, must give every member
    /// the offset the userspace compiler gives it. (The event records are
    /// not in the object's BTF; `tracer_common`'s compile-time layout table
    /// pins them on both targets.)
    #[test]
    fn kernel_and_userspace_agree_on_the_config_abi() {
        // The stub object (tracer/build.rs) is an empty file.
        assert!(
            !OBJECT.is_empty(),
            "this build embeds a stub instead of the eBPF object (bpf-linker was missing, or \
             AYA_BUILD_SKIP was set), so there is no ABI to check: run `cargo xtask setup` (or use the \
             flake's dev shell) and rebuild"
        );
        let elf = object::File::parse(OBJECT).expect("the embedded eBPF object is an ELF file");
        let btf_section = elf.section_by_name(".BTF").expect("the eBPF object carries BTF");
        let btf = Btf::from_bytes(btf_section.data().unwrap()).expect("valid BTF");
        let layouts = [
            layout!(Config {
                self_pid,
                follow_only,
                follow_own_children,
                cgroup_filter_level,
                sched_times,
                wake_at_bytes,
                calibrator_pid,
                _pad,
                cgroup_filter_id,
                tracepoints,
                kernel
            }),
            layout!(TracepointFields {
                exec_filename,
                exec_old_pid,
                newtask_pid,
                newtask_clone_flags,
                newtask_clone_flags_size,
                exit_group_dead,
                cgroup_root,
                cgroup_id,
                cgroup_level,
                cgroup_path,
                page_cache_ino,
                page_cache_index,
                page_cache_dev,
                page_cache_order,
                block_issue_dev,
                block_issue_sector,
                block_issue_bytes,
                block_issue_rwbs,
                block_complete_dev,
                block_complete_sector,
                block_complete_error,
                switch_prev_state,
                switch_next_pid,
                wakeup_pid
            }),
            layout!(KernelOffsets {
                task_mm,
                task_fs,
                task_files,
                task_exit_code,
                mm_arg_start,
                mm_arg_end,
                mm_env_start,
                mm_env_end,
                mm_exe_file,
                fs_pwd,
                path_mnt,
                path_dentry,
                files_fdt,
                fdt_max_fds,
                fdt_fd,
                file_path,
                file_inode,
                inode_ino,
                inode_sb,
                sb_dev,
                dentry_parent,
                dentry_name_ptr,
                mount_mnt,
                mount_parent,
                mount_mountpoint,
                vfsmount_root
            }),
        ];
        for (name, size, fields) in layouts {
            let strukt = btf
                .resolve_types_by_name(name)
                .unwrap_or_default()
                .into_iter()
                .find_map(|t| match t {
                    Type::Struct(s) => Some(s),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("struct {name} is not in the eBPF object's BTF"));
            assert_eq!(strukt.size(), size, "size of {name}");
            let kernel_side: Vec<(String, usize)> = strukt
                .members
                .iter()
                .map(|m| (btf.resolve_name(m).unwrap(), m.bit_offset() as usize / 8))
                .collect();
            let user_side: Vec<(String, usize)> =
                fields.into_iter().map(|(field, offset)| (field.to_string(), offset)).collect();
            assert_eq!(kernel_side, user_side, "members of {name}");
        }
    }
}
