//! The running kernel's tracepoints as tracefs describes them: parses their
//! `format` files into the field offsets the programs read
//! (`TracepointFields`), and says which tracepoints this kernel lacks or
//! lays out differently.

use std::{fs, io, path::Path};

use tracer_common::{FIELD_ABSENT, TracepointFields};

/// Where tracefs is (mounted there if it is not).
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// One field of a tracepoint `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// Parses the `field:` lines of a tracefs `format` file.
pub fn parse_format(text: &str) -> Vec<Field> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().split(';').map(str::trim);
            let decl = parts.next()?.strip_prefix("field:")?;
            let offset = parts.next()?.strip_prefix("offset:")?.parse().ok()?;
            let size = parts.next()?.strip_prefix("size:")?.parse().ok()?;
            // "unsigned long clone_flags", "__data_loc char[] filename", "char comm[16]"
            let name = decl.rsplit(' ').next()?;
            let name = name.split('[').next()?.to_string();
            Some(Field { name, offset, size })
        })
        .collect()
}

/// A tracepoint the programs cannot use on this kernel.
#[derive(Debug)]
pub struct Unavailable {
    /// "category/name", as under tracefs `events/`.
    pub event: String,
    pub reason: String,
}

impl Unavailable {
    pub fn absent(event: impl Into<String>) -> Unavailable {
        Unavailable { event: event.into(), reason: "this kernel does not have it".into() }
    }
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tracepoint {}: {}", self.event, self.reason)
    }
}

/// One tracepoint's `format` file, parsed.
struct Format {
    event: &'static str,
    fields: Vec<Field>,
}

impl Format {
    fn read(tracefs: &Path, event: &'static str) -> Result<Format, Unavailable> {
        let path = tracefs.join("events").join(event).join("format");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Format { event, fields: parse_format(&text) }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Unavailable::absent(event)),
            Err(e) => Err(Unavailable {
                event: event.into(),
                reason: format!("{} is unreadable: {e}", path.display()),
            }),
        }
    }

    fn field(&self, name: &str) -> Result<&Field, Unavailable> {
        self.fields.iter().find(|f| f.name == name).ok_or_else(|| Unavailable {
            event: self.event.into(),
            reason: format!("it has no field `{name}` on this kernel"),
        })
    }

    fn offset(&self, name: &str) -> Result<u32, Unavailable> {
        self.field(name).map(|f| f.offset)
    }

    /// The offset of a field some kernels lack, or [`FIELD_ABSENT`].
    fn optional(&self, name: &str) -> u32 {
        self.field(name).map_or(FIELD_ABSENT, |f| f.offset)
    }
}

/// Reads the offsets of every classic-tracepoint field the programs use, in
/// the tracepoints `wanted` accepts ("category/name"), and checks that
/// syscall tracepoints have the layout the programs assume. The fields of
/// tracepoints not wanted stay 0: their programs are not attached.
pub fn resolve_tracepoints(
    tracefs: &Path,
    wanted: impl Fn(&str) -> bool,
) -> Result<TracepointFields, Unavailable> {
    let read = |event: &'static str| wanted(event).then(|| Format::read(tracefs, event)).transpose();
    let mut f = TracepointFields {
        exit_group_dead: FIELD_ABSENT,
        page_cache_order: FIELD_ABSENT,
        ..TracepointFields::default()
    };
    if let Some(exec) = read("sched/sched_process_exec")? {
        f.exec_filename = exec.offset("filename")?;
        f.exec_old_pid = exec.offset("old_pid")?;
    }
    if let Some(newtask) = read("task/task_newtask")? {
        f.newtask_pid = newtask.offset("pid")?;
        let clone_flags = newtask.field("clone_flags")?;
        f.newtask_clone_flags = clone_flags.offset;
        f.newtask_clone_flags_size = clone_flags.size;
    }
    if let Some(exit) = read("sched/sched_process_exit")? {
        f.exit_group_dead = exit.optional("group_dead");
    }
    if let Some(cgroup) = read("cgroup/cgroup_mkdir")? {
        f.cgroup_root = cgroup.offset("root")?;
        f.cgroup_id = cgroup.offset("id")?;
        f.cgroup_level = cgroup.offset("level")?;
        f.cgroup_path = cgroup.offset("path")?;
    }
    if let Some(page_cache) = read("filemap/mm_filemap_add_to_page_cache")? {
        f.page_cache_ino = page_cache.offset("i_ino")?;
        f.page_cache_index = page_cache.offset("index")?;
        f.page_cache_dev = page_cache.offset("s_dev")?;
        f.page_cache_order = page_cache.optional("order");
    }
    if let Some(issue) = read("block/block_rq_issue")? {
        f.block_issue_dev = issue.offset("dev")?;
        f.block_issue_sector = issue.offset("sector")?;
        f.block_issue_bytes = issue.offset("bytes")?;
        f.block_issue_rwbs = issue.offset("rwbs")?;
    }
    if let Some(complete) = read("block/block_rq_complete")? {
        f.block_complete_dev = complete.offset("dev")?;
        f.block_complete_sector = complete.offset("sector")?;
        f.block_complete_error = complete.offset("error")?;
    }
    if let Some(switch) = read("sched/sched_switch")? {
        f.switch_prev_state = switch.offset("prev_state")?;
        f.switch_next_pid = switch.offset("next_pid")?;
    }
    if let Some(wakeup) = read("sched/sched_wakeup")? {
        f.wakeup_pid = wakeup.offset("pid")?;
    }
    // The syscall programs read their arguments at fixed offsets.
    for (event, arg, expected) in [
        ("syscalls/sys_enter_openat", "filename", 24),
        ("syscalls/sys_enter_execve", "filename", 16),
        ("syscalls/sys_enter_mmap", "addr", 16),
    ] {
        let Some(format) = read(event)? else { continue };
        let offset = format.offset(arg)?;
        if offset != expected {
            let reason = format!(
                "`{arg}` is at offset {offset}, not {expected}: an unknown syscall tracepoint layout"
            );
            return Err(Unavailable { event: event.into(), reason });
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_format_fields() {
        let text = "name: task_newtask\nID: 140\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;\n\
            \tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n\
            \tfield:unsigned long clone_flags;\toffset:32;\tsize:8;\tsigned:0;\n\
            \tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n";
        let fields = parse_format(text);
        let names: Vec<_> = fields.iter().map(|f| (f.name.as_str(), f.offset, f.size)).collect();
        assert_eq!(
            names,
            [
                ("common_type", 0, 2),
                ("pid", 8, 4),
                ("comm", 12, 16),
                ("clone_flags", 32, 8),
                ("filename", 8, 4)
            ]
        );
    }
}
