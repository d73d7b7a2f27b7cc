//! Loading the embedded eBPF object into the kernel and attaching its
//! programs, after finding out what this kernel looks like (`offsets`).

use std::{fs, io, path::Path, time::Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, TracePoint, UProbe, uprobe::UProbeScope},
};
use tracer_common::{Config, EventKind, ReadKey, TaskTimes, lost};

use super::offsets::{KernelTypes, resolve_tracepoints};
use crate::{model::elf::LoaderProbes, trace::FileId};

/// The kernel programs, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nixtrace-ebpf.o"));

const TRACEFS: &str = "/sys/kernel/tracing";
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// One eBPF program (a function in `tracer-ebpf`) and its tracepoint.
struct Attachment {
    program: &'static str,
    category: &'static str,
    tracepoint: &'static str,
}

const fn tp(program: &'static str, category: &'static str) -> Attachment {
    // Every program is named after its tracepoint.
    Attachment { program, category, tracepoint: program }
}

/// The probes, by the name the trace header and loss counts use.
const PROBES: &[(&str, &[Attachment])] = &[
    ("fork", &[tp("task_newtask", "task")]),
    (
        "exec",
        &[
            tp("sched_process_exec", "sched"),
            tp("sys_enter_execve", "syscalls"),
            tp("sys_exit_execve", "syscalls"),
            tp("sys_enter_execveat", "syscalls"),
            tp("sys_exit_execveat", "syscalls"),
        ],
    ),
    ("exit", &[tp("sched_process_exit", "sched")]),
    (
        "open",
        &[
            tp("sys_enter_openat", "syscalls"),
            tp("sys_exit_openat", "syscalls"),
            tp("sys_enter_openat2", "syscalls"),
            tp("sys_exit_openat2", "syscalls"),
            tp("sys_enter_open", "syscalls"),
            tp("sys_exit_open", "syscalls"),
        ],
    ),
    ("mmap", &[tp("sys_enter_mmap", "syscalls"), tp("sys_exit_mmap", "syscalls")]),
    ("cgroup_mkdir", &[tp("cgroup_mkdir", "cgroup")]),
    ("page_cache", &[tp("mm_filemap_add_to_page_cache", "filemap")]),
    ("block_io", &[tp("block_rq_issue", "block"), tp("block_rq_complete", "block")]),
    ("sched", &[tp("sched_switch", "sched"), tp("sched_wakeup", "sched")]),
    (
        "read",
        &[
            tp("sys_enter_read", "syscalls"),
            tp("sys_exit_read", "syscalls"),
            tp("sys_enter_pread64", "syscalls"),
            tp("sys_exit_pread64", "syscalls"),
        ],
    ),
];

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
}

/// Loaded and attached programs, and the maps userspace reads.
pub struct Probes {
    ebpf: Ebpf,
    /// Probe names, in attach order, for the trace header.
    pub names: Vec<String>,
    /// The loaders the loader probes are attached to.
    pub loaders: Vec<FileId>,
    /// What could not be probed, and what the trace will lack because of it.
    pub warnings: Vec<String>,
    /// Time from starting to load until the last program was attached.
    pub attach_time: std::time::Duration,
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
        let err = io::Error::last_os_error();
        bail!("tracefs is not mounted and mounting it at {TRACEFS} failed: {err}");
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

/// Attaches the loader uprobes to every glibc loader found; returns the
/// loaders probed. Loaders that cannot be probed are skipped, with a
/// warning.
fn attach_loaders(ebpf: &mut Ebpf, warnings: &mut Vec<String>) -> Result<Vec<FileId>> {
    let (loaders, unprobeable) = super::loader::find();
    warnings.extend(unprobeable.iter().map(|e| format!("{e:#}: its processes have no loader timings")));
    const PROGRAMS: [&str; 3] = ["loader_start", "loader_done", "loader_entry"];
    for program in PROGRAMS {
        let prog: &mut UProbe = ebpf
            .program_mut(program)
            .ok_or_else(|| anyhow!("the eBPF object has no program {program}"))?
            .try_into()?;
        prog.load().map_err(|e| refused(program, e))?;
    }
    for loader in &loaders {
        let LoaderProbes { start, done, entry } = loader.probes;
        if entry.is_none() {
            warnings.push(format!(
                "{}: unknown code at the end of _dl_start_user; its processes have no initialiser times",
                loader.path.display()
            ));
        }
        for (program, offset) in PROGRAMS.into_iter().zip([Some(start), Some(done), entry]) {
            let Some(offset) = offset else { continue };
            let prog: &mut UProbe = ebpf
                .program_mut(program)
                .ok_or_else(|| anyhow!("the eBPF object has no program {program}"))?
                .try_into()?;
            prog.attach(offset, &loader.path, UProbeScope::AllProcesses)
                .with_context(|| format!("attaching a uprobe to {} at {offset:#x}", loader.path.display()))?;
        }
    }
    Ok(loaders
        .into_iter()
        .map(|l| FileId { path: l.path.to_string_lossy().into_owned(), dev: l.dev, ino: l.ino })
        .collect())
}

/// A one-line error for a program the kernel refused; the verifier's whole
/// log (often megabytes) only with `NIXTRACE_VERIFIER_LOG=1`.
fn refused(program: &str, error: ProgramError) -> anyhow::Error {
    let ProgramError::LoadError { io_error, verifier_log } = &error else {
        return anyhow!("loading eBPF program {program}: {error}");
    };
    let log = verifier_log.to_string();
    if std::env::var_os("NIXTRACE_VERIFIER_LOG").is_some() {
        eprintln!("{log}");
    }
    let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    anyhow!(
        "the kernel refused eBPF program {program}: {io_error} (verifier: {last}; set NIXTRACE_VERIFIER_LOG=1 for its whole log)"
    )
}

impl Probes {
    pub fn load(self_pid: u32, filter: Filter) -> Result<Probes> {
        if cfg!(nixtrace_stub_ebpf) {
            bail!(
                "this nixtrace was built without its eBPF programs (bpf-linker was missing at build \
                 time); run `cargo xtask setup` and rebuild"
            );
        }
        check_privileges()?;
        let started = Instant::now();
        ensure_tracefs()?;
        let tracepoints = resolve_tracepoints(Path::new(TRACEFS))?;
        let kernel = KernelTypes::from_file(Path::new(KERNEL_BTF))
            .context("nixtrace needs the kernel's BTF (CONFIG_DEBUG_INFO_BTF)")?
            .resolve()?;
        let (cgroup_filter_id, cgroup_filter_level) = filter.cgroup.unwrap_or((0, 0));
        let config = Config {
            self_pid,
            follow_only: filter.follow_only.into(),
            follow_own_children: filter.follow_own_children.into(),
            cgroup_filter_level,
            cgroup_filter_id,
            tracepoints,
            kernel,
        };
        // Kernels >= 5.11 account BPF memory to the cgroup; older ones need
        // the rlimit raised. Failing to raise it is not an error here.
        let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        // SAFETY: valid pointer to a local.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };

        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", filter.buffer_bytes)
            .load(OBJECT)
            .context("loading the eBPF object")?;
        let mut names = Vec::new();
        for (probe, attachments) in PROBES {
            for Attachment { program, category, tracepoint } in *attachments {
                let prog: &mut TracePoint = ebpf
                    .program_mut(program)
                    .ok_or_else(|| anyhow!("the eBPF object has no program {program}"))?
                    .try_into()?;
                prog.load().map_err(|e| refused(program, e))?;
                prog.attach(category, tracepoint)
                    .with_context(|| format!("attaching to tracepoint {category}:{tracepoint}"))?;
            }
            names.push((*probe).to_string());
        }
        let mut warnings = Vec::new();
        let loaders = match attach_loaders(&mut ebpf, &mut warnings) {
            Ok(loaders) if loaders.is_empty() => {
                warnings.push("no glibc dynamic loader found: the trace has no loader timings".to_string());
                loaders
            }
            Ok(loaders) => {
                names.push("loader".to_string());
                loaders
            }
            Err(e) => {
                warnings.push(format!("{e:#}; the trace has no loader timings"));
                Vec::new()
            }
        };
        Ok(Probes { ebpf, names, loaders, warnings, attach_time: started.elapsed() })
    }

    /// The ring buffer the programs send events through (taken once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS").context("the eBPF object has no EVENTS map")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Adds processes to the followed set (for `--pid`).
    pub fn follow(&mut self, pids: impl IntoIterator<Item = u32>) -> Result<()> {
        let map = self.ebpf.map_mut("FOLLOWED").context("the eBPF object has no FOLLOWED map")?;
        let mut followed: HashMap<_, u32, u8> = HashMap::try_from(map)?;
        for pid in pids {
            followed.insert(pid, 1, 0).with_context(|| format!("following pid {pid}"))?;
        }
        Ok(())
    }

    /// Traced threads that have not exited: tid and their times so far.
    pub fn running_threads(&self) -> Result<Vec<(u32, TaskTimes)>> {
        let map = self.ebpf.map("TASK_TIMES").context("the eBPF object has no TASK_TIMES map")?;
        let times: HashMap<_, u32, TaskTimes> = HashMap::try_from(map)?;
        Ok(times.iter().collect::<Result<_, _>>()?)
    }

    /// Bytes read so far, per process and file.
    pub fn read_totals(&self) -> Result<Vec<(ReadKey, u64)>> {
        let map = self.ebpf.map("READ_BYTES").context("the eBPF object has no READ_BYTES map")?;
        let totals: HashMap<_, ReadKey, u64> = HashMap::try_from(map)?;
        Ok(totals.iter().collect::<Result<_, _>>()?)
    }

    /// Events lost so far, by probe name, summed over CPUs.
    pub fn lost(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let map = self.ebpf.map("LOST").context("the eBPF object has no LOST map")?;
        let counters: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        let slots = EventKind::ALL.iter().map(|kind| (*kind as u32, kind.probe_name())).chain([
            (lost::PENDING_FULL, "pending_full"),
            (lost::FOLLOW_FULL, "follow_full"),
            (lost::READ_FULL, "read_full"),
        ]);
        let mut lost = std::collections::BTreeMap::new();
        for (slot, name) in slots {
            let values = counters.get(&slot, 0)?;
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
        let elf = object::File::parse(OBJECT).expect("the embedded eBPF object is an ELF file");
        let btf_section = elf.section_by_name(".BTF").expect("the eBPF object carries BTF");
        let btf = Btf::from_bytes(btf_section.data().unwrap()).expect("valid BTF");
        let layouts = [
            layout!(Config {
                self_pid,
                follow_only,
                follow_own_children,
                cgroup_filter_level,
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
