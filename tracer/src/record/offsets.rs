//! What the kernel programs need to know about the running kernel, found at
//! load time: tracepoint field offsets from tracefs `format` files, and
//! struct member offsets from the kernel's BTF. This is what lets one eBPF
//! object run on kernels with different layouts (Rust eBPF emits no CO-RE
//! relocations).

use std::{fs, path::Path};

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use tracer_common::{FIELD_ABSENT, KernelOffsets, TracepointFields};

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

fn tracepoint_fields(tracefs: &Path, event: &str) -> Result<Vec<Field>> {
    let path = tracefs.join("events").join(event).join("format");
    let text = fs::read_to_string(&path)
        .with_context(|| format!("tracepoint {event} is not available ({} unreadable)", path.display()))?;
    Ok(parse_format(&text))
}

fn find<'a>(fields: &'a [Field], event: &str, name: &str) -> Result<&'a Field> {
    fields
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| anyhow!("tracepoint {event} has no field `{name}` on this kernel"))
}

/// The offset of a field some kernels lack, or [`FIELD_ABSENT`].
fn optional(fields: &[Field], name: &str) -> u32 {
    fields.iter().find(|f| f.name == name).map_or(FIELD_ABSENT, |f| f.offset)
}

/// Reads the offsets of every classic-tracepoint field the programs use,
/// and checks that syscall tracepoints have the layout the programs assume.
pub fn resolve_tracepoints(tracefs: &Path) -> Result<TracepointFields> {
    let exec = tracepoint_fields(tracefs, "sched/sched_process_exec")?;
    let newtask = tracepoint_fields(tracefs, "task/task_newtask")?;
    let exit = tracepoint_fields(tracefs, "sched/sched_process_exit")?;
    let cgroup = tracepoint_fields(tracefs, "cgroup/cgroup_mkdir")?;
    let page_cache = tracepoint_fields(tracefs, "filemap/mm_filemap_add_to_page_cache")?;
    let issue = tracepoint_fields(tracefs, "block/block_rq_issue")?;
    let complete = tracepoint_fields(tracefs, "block/block_rq_complete")?;
    let switch = tracepoint_fields(tracefs, "sched/sched_switch")?;
    let wakeup = tracepoint_fields(tracefs, "sched/sched_wakeup")?;
    let clone_flags = find(&newtask, "task_newtask", "clone_flags")?;

    for (event, arg) in [
        ("syscalls/sys_enter_openat", "filename"),
        ("syscalls/sys_enter_execve", "filename"),
        ("syscalls/sys_enter_mmap", "addr"),
    ] {
        let fields = tracepoint_fields(tracefs, event)?;
        let field = find(&fields, event, arg)?;
        let expected = if event.ends_with("openat") { 24 } else { 16 };
        if field.offset != expected {
            bail!(
                "{event}: `{arg}` at offset {} (expected {expected}); unsupported syscall tracepoint layout",
                field.offset
            );
        }
    }

    Ok(TracepointFields {
        exec_filename: find(&exec, "sched_process_exec", "filename")?.offset,
        exec_old_pid: find(&exec, "sched_process_exec", "old_pid")?.offset,
        newtask_pid: find(&newtask, "task_newtask", "pid")?.offset,
        newtask_clone_flags: clone_flags.offset,
        newtask_clone_flags_size: clone_flags.size,
        exit_group_dead: optional(&exit, "group_dead"),
        cgroup_root: find(&cgroup, "cgroup_mkdir", "root")?.offset,
        cgroup_id: find(&cgroup, "cgroup_mkdir", "id")?.offset,
        cgroup_level: find(&cgroup, "cgroup_mkdir", "level")?.offset,
        cgroup_path: find(&cgroup, "cgroup_mkdir", "path")?.offset,
        page_cache_ino: find(&page_cache, "mm_filemap_add_to_page_cache", "i_ino")?.offset,
        page_cache_index: find(&page_cache, "mm_filemap_add_to_page_cache", "index")?.offset,
        page_cache_dev: find(&page_cache, "mm_filemap_add_to_page_cache", "s_dev")?.offset,
        page_cache_order: optional(&page_cache, "order"),
        block_issue_dev: find(&issue, "block_rq_issue", "dev")?.offset,
        block_issue_sector: find(&issue, "block_rq_issue", "sector")?.offset,
        block_issue_bytes: find(&issue, "block_rq_issue", "bytes")?.offset,
        block_issue_rwbs: find(&issue, "block_rq_issue", "rwbs")?.offset,
        block_complete_dev: find(&complete, "block_rq_complete", "dev")?.offset,
        block_complete_sector: find(&complete, "block_rq_complete", "sector")?.offset,
        block_complete_error: find(&complete, "block_rq_complete", "error")?.offset,
        switch_prev_state: find(&switch, "sched_switch", "prev_state")?.offset,
        switch_next_pid: find(&switch, "sched_switch", "next_pid")?.offset,
        wakeup_pid: find(&wakeup, "sched_wakeup", "pid")?.offset,
    })
}

/// Member offsets in kernel structs, from the kernel's BTF.
pub struct KernelTypes {
    btf: Btf,
}

impl KernelTypes {
    pub fn from_file(path: &Path) -> Result<Self> {
        let btf = Btf::from_file(path)
            .map_err(|e| anyhow!("cannot read kernel BTF from {}: {e}", path.display()))?;
        Ok(KernelTypes { btf })
    }

    fn named_struct(&self, name: &str) -> Result<btf_rs::Struct> {
        let types = self.btf.resolve_types_by_name(name).map_err(|e| anyhow!("BTF: {e}"))?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| anyhow!("kernel BTF has no struct {name}"))
    }

    /// Peels typedefs and qualifiers down to a struct or union.
    fn as_composite(&self, mut t: Type) -> Option<btf_rs::Struct> {
        loop {
            match t {
                Type::Struct(s) | Type::Union(s) => return Some(s),
                Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::TypeTag(_) => {
                    t = self.btf.resolve_chained_type(t.as_btf_type()?).ok()?;
                }
                _ => return None,
            }
        }
    }

    /// Bit offset of `member` in `s`, looking inside anonymous struct and
    /// union members (as C does).
    fn find_member(&self, s: &btf_rs::Struct, member: &str) -> Option<(u32, Type)> {
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            let ty = self.btf.resolve_chained_type(m).ok()?;
            if name == member {
                return Some((m.bit_offset(), ty));
            }
            if name.is_empty()
                && let Some(inner) = self.as_composite(ty)
                && let Some((offset, found)) = self.find_member(&inner, member)
            {
                return Some((m.bit_offset() + offset, found));
            }
        }
        None
    }

    /// Byte offset of a member path such as `["d_name", "name"]` in `strukt`.
    pub fn offset(&self, strukt: &str, path: &[&str]) -> Result<u32> {
        let mut current = self.named_struct(strukt)?;
        let mut bits = 0;
        for (i, member) in path.iter().enumerate() {
            let (offset, ty) = self.find_member(&current, member).ok_or_else(|| {
                anyhow!("kernel BTF: struct {strukt} has no member {}", path[..=i].join("."))
            })?;
            bits += offset;
            if i + 1 < path.len() {
                current = self
                    .as_composite(ty)
                    .ok_or_else(|| anyhow!("kernel BTF: {strukt}.{member} is not a struct"))?;
            }
        }
        if bits % 8 != 0 {
            bail!("kernel BTF: {strukt}.{} is a bitfield", path.join("."));
        }
        Ok(bits / 8)
    }

    pub fn resolve(&self) -> Result<KernelOffsets> {
        Ok(KernelOffsets {
            task_mm: self.offset("task_struct", &["mm"])?,
            task_fs: self.offset("task_struct", &["fs"])?,
            task_files: self.offset("task_struct", &["files"])?,
            task_exit_code: self.offset("task_struct", &["exit_code"])?,
            mm_arg_start: self.offset("mm_struct", &["arg_start"])?,
            mm_arg_end: self.offset("mm_struct", &["arg_end"])?,
            mm_exe_file: self.offset("mm_struct", &["exe_file"])?,
            fs_pwd: self.offset("fs_struct", &["pwd"])?,
            path_mnt: self.offset("path", &["mnt"])?,
            path_dentry: self.offset("path", &["dentry"])?,
            files_fdt: self.offset("files_struct", &["fdt"])?,
            fdt_max_fds: self.offset("fdtable", &["max_fds"])?,
            fdt_fd: self.offset("fdtable", &["fd"])?,
            file_path: self.offset("file", &["f_path"])?,
            file_inode: self.offset("file", &["f_inode"])?,
            inode_ino: self.offset("inode", &["i_ino"])?,
            inode_sb: self.offset("inode", &["i_sb"])?,
            sb_dev: self.offset("super_block", &["s_dev"])?,
            dentry_parent: self.offset("dentry", &["d_parent"])?,
            dentry_name_ptr: self.offset("dentry", &["d_name", "name"])?,
            mount_mnt: self.offset("mount", &["mnt"])?,
            mount_parent: self.offset("mount", &["mnt_parent"])?,
            mount_mountpoint: self.offset("mount", &["mnt_mountpoint"])?,
            vfsmount_root: self.offset("vfsmount", &["mnt_root"])?,
        })
    }
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

    /// The running kernel's BTF resolves every offset, and the ones whose
    /// values are fixed by the C ABI come out right.
    #[test]
    fn resolves_running_kernel_offsets() {
        let types = KernelTypes::from_file(Path::new("/sys/kernel/btf/vmlinux")).expect("kernel BTF");
        let k = types.resolve().expect("offsets");
        assert_eq!(k.path_mnt, 0);
        assert_eq!(k.path_dentry, 8);
        assert_eq!(k.mm_arg_end, k.mm_arg_start + 8);
        assert!(types.offset("task_struct", &["no_such_member"]).is_err());
    }
}
