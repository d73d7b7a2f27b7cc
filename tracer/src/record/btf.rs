//! The running kernel's struct layouts, from its BTF
//! (`/sys/kernel/btf/vmlinux`, else a vmlinux's `.BTF` section): the member
//! offsets the programs use (`KernelOffsets`). Read directly, not with a
//! general parser: only the structs asked for are decoded. This and the
//! tracepoint offsets (`tracefs.rs`) are what let one eBPF object run on
//! kernels with different layouts (Rust eBPF emits no CO-RE relocations).

use std::{fs, io, os::fd::AsRawFd as _, path::Path};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use tracer_common::KernelOffsets;

/// Member offsets in kernel structs, from the kernel's BTF.
///
/// The file is read once and only indexed: where each type starts, and which
/// types are named structs. Members are read from the raw bytes when asked
/// for, so no string is copied and no type is decoded that is not needed
/// (a general BTF parser decodes the whole vmlinux, about 150,000 types,
/// which was most of the time to attach).
pub struct KernelTypes {
    data: BtfBytes,
    /// Where the type section starts and ends in `data`.
    types: std::ops::Range<usize>,
    /// Where the string section starts and ends in `data`.
    strings: std::ops::Range<usize>,
    /// Where type `id` starts in `data`, at index `id - 1` (id 0 is void).
    offsets: Vec<usize>,
    /// Ids of the structs that have a name and members.
    structs: Vec<u32>,
}

/// A `struct btf_type`: 12 bytes, then data whose size depends on the kind.
#[derive(Debug, Clone, Copy)]
struct BtfType {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// The referenced type (pointers, typedefs, qualifiers), or a size.
    size_or_type: u32,
    /// Where the kind-specific data (e.g. the members) starts in `data`.
    extra: usize,
}

const BTF_MAGIC: u16 = 0xeb9f;
const BTF_TYPE_LEN: usize = 12;
const BTF_KIND_STRUCT: u32 = 4;
const BTF_KIND_UNION: u32 = 5;
const BTF_KIND_TYPEDEF: u32 = 8;
const BTF_KIND_VOLATILE: u32 = 9;
const BTF_KIND_CONST: u32 = 10;
const BTF_KIND_RESTRICT: u32 = 11;
const BTF_KIND_TYPE_TAG: u32 = 18;
/// A `struct btf_member`: name_off, type, offset.
const BTF_MEMBER_LEN: usize = 12;

/// The `.BTF` section of the ELF file `data` (read from `path`), copied.
fn btf_section(data: &[u8], path: &Path) -> Result<BtfBytes> {
    use object::{Object as _, ObjectSection as _};
    let elf =
        object::File::parse(data).with_context(|| format!("{} is not a valid ELF file", path.display()))?;
    let section =
        elf.section_by_name(".BTF").with_context(|| format!("{} has no .BTF section", path.display()))?;
    let bytes = section.data().with_context(|| format!("reading the .BTF section of {}", path.display()))?;
    Ok(BtfBytes::Read(bytes.to_vec()))
}

/// Bytes of kind-specific data after a type's 12-byte header (the kernel's
/// `btf_type_size`), or None for a kind this code does not know.
fn btf_extra_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
        // INT (encoding), VAR (linkage), DECL_TAG (component index)
        1 | 14 | 17 => 4,
        // ARRAY (struct btf_array)
        3 => 12,
        // STRUCT, UNION (btf_member), DATASEC (btf_var_secinfo), ENUM64 (btf_enum64)
        4 | 5 | 15 | 19 => 12 * vlen,
        // ENUM (btf_enum), FUNC_PROTO (btf_param)
        6 | 13 => 8 * vlen,
        _ => return None,
    })
}

impl KernelTypes {
    /// Reads raw BTF (`/sys/kernel/btf/vmlinux`) or the `.BTF` section of
    /// an ELF file (a vmlinux).
    pub fn from_file(path: &Path) -> Result<Self> {
        let data = BtfBytes::map(path)
            .or_else(|_| fs::read(path).map(BtfBytes::Read))
            .with_context(|| format!("cannot read kernel BTF from {}", path.display()))?;
        let data = if data.starts_with(&object::elf::ELFMAG) { btf_section(&data, path)? } else { data };
        Self::from_bytes(data).with_context(|| format!("{} is not BTF nixtrace can read", path.display()))
    }

    /// The running kernel's types: from the kernel itself, else from the
    /// first vmlinux with BTF where libbpf looks for one (distributions
    /// ship them for debugging), or from `explicit` alone when given.
    pub fn of_running_kernel(explicit: Option<&Path>) -> Result<Self> {
        if let Some(path) = explicit {
            return Self::from_file(path);
        }
        let release =
            fs::read_to_string("/proc/sys/kernel/osrelease").context("reading the kernel release")?;
        let release = release.trim();
        let candidates = [
            "/sys/kernel/btf/vmlinux".to_string(),
            format!("/boot/vmlinux-{release}"),
            format!("/lib/modules/{release}/vmlinux-{release}"),
            format!("/lib/modules/{release}/build/vmlinux"),
            format!("/usr/lib/modules/{release}/kernel/vmlinux"),
            format!("/usr/lib/debug/boot/vmlinux-{release}"),
            format!("/usr/lib/debug/boot/vmlinux-{release}.debug"),
            format!("/usr/lib/debug/lib/modules/{release}/vmlinux"),
        ];
        // As libbpf does, a file that is there but has no BTF (a vmlinux
        // built without it) does not end the search.
        let mut unusable = Vec::new();
        for path in candidates.iter().map(Path::new).filter(|path| path.exists()) {
            match Self::from_file(path) {
                Ok(types) => return Ok(types),
                Err(e) => unusable.push(format!("{e:#}")),
            }
        }
        let tried = if unusable.is_empty() { String::new() } else { format!(" ({})", unusable.join("; ")) };
        bail!(
            "this kernel exposes no BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF) and no vmlinux \
             with BTF was found in /boot, /lib/modules/{release} or /usr/lib/debug{tried}; pass one with --btf FILE"
        )
    }

    /// Checks the header and indexes every type (one pass, nothing decoded).
    fn from_bytes(data: impl Into<BtfBytes>) -> Result<Self> {
        let data = data.into();
        let u16_at = |pos: usize| data.get(pos..pos + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if u16_at(0) != Some(BTF_MAGIC) {
            bail!("no little-endian BTF magic");
        }
        let header = |index: usize| read_u32(&data, 4 + 4 * index);
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (header(0)?, header(1)?, header(2)?, header(3)?, header(4)?);
        let section = |off: u32, len: u32| -> Result<std::ops::Range<usize>> {
            let start = hdr_len as usize + off as usize;
            let end = start + len as usize;
            ensure!(end <= data.len(), "a section runs past the end of the data");
            Ok(start..end)
        };
        let (types, strings) = (section(type_off, type_len)?, section(str_off, str_len)?);
        let mut this = KernelTypes { data, types, strings, offsets: Vec::new(), structs: Vec::new() };
        let mut pos = this.types.start;
        while pos < this.types.end {
            let t = this.type_at(pos)?;
            let extra = btf_extra_len(t.kind, t.vlen)
                .ok_or_else(|| anyhow!("unknown BTF kind {} at byte {pos}", t.kind))?;
            this.offsets.push(pos);
            if t.kind == BTF_KIND_STRUCT && t.vlen > 0 && t.name_off != 0 {
                this.structs.push(this.offsets.len() as u32);
            }
            pos = t.extra + extra;
        }
        ensure!(pos == this.types.end, "the last type runs past the type section");
        Ok(this)
    }

    fn type_at(&self, pos: usize) -> Result<BtfType> {
        ensure!(pos + BTF_TYPE_LEN <= self.types.end, "a type runs past the type section");
        let info = read_u32(&self.data, pos + 4)?;
        Ok(BtfType {
            name_off: read_u32(&self.data, pos)?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type: read_u32(&self.data, pos + 8)?,
            extra: pos + BTF_TYPE_LEN,
        })
    }

    fn type_by_id(&self, id: u32) -> Result<BtfType> {
        let pos = (id as usize)
            .checked_sub(1)
            .and_then(|index| self.offsets.get(index))
            .ok_or_else(|| anyhow!("BTF type id {id} does not exist"))?;
        self.type_at(*pos)
    }

    /// The string at `offset` in the string section (names are ASCII C
    /// identifiers; anything else compares unequal).
    fn name(&self, offset: u32) -> &[u8] {
        let start = self.strings.start + offset as usize;
        let rest = self.data.get(start..self.strings.end).unwrap_or_default();
        rest.split(|b| *b == 0).next().unwrap_or_default()
    }

    fn named_struct(&self, name: &str) -> Result<BtfType> {
        for id in &self.structs {
            let t = self.type_by_id(*id)?;
            if self.name(t.name_off) == name.as_bytes() {
                return Ok(t);
            }
        }
        bail!("kernel BTF has no struct {name}")
    }

    /// Peels typedefs and qualifiers down to a struct or union.
    fn as_composite(&self, mut t: BtfType) -> Option<BtfType> {
        // A bound on the chain, against a malformed cycle.
        for _ in 0..32 {
            match t.kind {
                BTF_KIND_STRUCT | BTF_KIND_UNION => return Some(t),
                BTF_KIND_TYPEDEF | BTF_KIND_VOLATILE | BTF_KIND_CONST | BTF_KIND_RESTRICT
                | BTF_KIND_TYPE_TAG => t = self.type_by_id(t.size_or_type).ok()?,
                _ => return None,
            }
        }
        None
    }

    /// Bit offset of `member` in `s`, looking inside anonymous struct and
    /// union members (as C does).
    fn find_member(&self, s: &BtfType, member: &str) -> Option<(u32, BtfType)> {
        for i in 0..s.vlen {
            let pos = s.extra + i * BTF_MEMBER_LEN;
            let name = self.name(read_u32(&self.data, pos).ok()?);
            let ty = self.type_by_id(read_u32(&self.data, pos + 4).ok()?).ok()?;
            let offset = read_u32(&self.data, pos + 8).ok()?;
            // With kind_flag, the top 8 bits are a bitfield's size.
            let bit_offset = if s.kind_flag { offset & 0x00ff_ffff } else { offset };
            if name == member.as_bytes() {
                return Some((bit_offset, ty));
            }
            if name.is_empty()
                && let Some(inner) = self.as_composite(ty)
                && let Some((offset, found)) = self.find_member(&inner, member)
            {
                return Some((bit_offset + offset, found));
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
        kernel_offsets(|strukt, path| self.offset(strukt, path))
    }
}

/// Every struct member offset the programs use, each found by `offset`
/// (struct name, member path).
fn kernel_offsets(offset: impl Fn(&str, &[&str]) -> Result<u32>) -> Result<KernelOffsets> {
    Ok(KernelOffsets {
        task_mm: offset("task_struct", &["mm"])?,
        task_fs: offset("task_struct", &["fs"])?,
        task_files: offset("task_struct", &["files"])?,
        task_exit_code: offset("task_struct", &["exit_code"])?,
        mm_arg_start: offset("mm_struct", &["arg_start"])?,
        mm_arg_end: offset("mm_struct", &["arg_end"])?,
        mm_env_start: offset("mm_struct", &["env_start"])?,
        mm_env_end: offset("mm_struct", &["env_end"])?,
        mm_exe_file: offset("mm_struct", &["exe_file"])?,
        fs_pwd: offset("fs_struct", &["pwd"])?,
        path_mnt: offset("path", &["mnt"])?,
        path_dentry: offset("path", &["dentry"])?,
        files_fdt: offset("files_struct", &["fdt"])?,
        fdt_max_fds: offset("fdtable", &["max_fds"])?,
        fdt_fd: offset("fdtable", &["fd"])?,
        file_path: offset("file", &["f_path"])?,
        file_inode: offset("file", &["f_inode"])?,
        inode_ino: offset("inode", &["i_ino"])?,
        inode_sb: offset("inode", &["i_sb"])?,
        sb_dev: offset("super_block", &["s_dev"])?,
        dentry_parent: offset("dentry", &["d_parent"])?,
        dentry_name_ptr: offset("dentry", &["d_name", "name"])?,
        mount_mnt: offset("mount", &["mnt"])?,
        mount_parent: offset("mount", &["mnt_parent"])?,
        mount_mountpoint: offset("mount", &["mnt_mountpoint"])?,
        vfsmount_root: offset("vfsmount", &["mnt_root"])?,
    })
}

/// The bytes of a BTF file: mapped where the kernel allows it (mapping
/// /sys/kernel/btf/vmlinux is recent), which spares copying megabytes
/// through `read` a page at a time; otherwise read.
enum BtfBytes {
    Mapped { addr: *mut libc::c_void, len: usize },
    Read(Vec<u8>),
}

impl BtfBytes {
    fn map(path: &Path) -> io::Result<BtfBytes> {
        let file = fs::File::open(path)?;
        let len = file.metadata()?.len() as usize;
        if len == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // SAFETY: a fresh private read-only mapping of a whole file we
        // opened; it is only read, and unmapped once, in Drop.
        let addr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0)
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(BtfBytes::Mapped { addr, len })
    }
}

impl From<Vec<u8>> for BtfBytes {
    fn from(bytes: Vec<u8>) -> Self {
        BtfBytes::Read(bytes)
    }
}

impl std::ops::Deref for BtfBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            // SAFETY: `len` bytes mapped readable at `addr` until Drop.
            BtfBytes::Mapped { addr, len } => unsafe { std::slice::from_raw_parts(*addr as *const u8, *len) },
            BtfBytes::Read(bytes) => bytes,
        }
    }
}

impl Drop for BtfBytes {
    fn drop(&mut self) {
        if let BtfBytes::Mapped { addr, len } = *self {
            // SAFETY: the mapping made in `map`, unmapped only here.
            unsafe { libc::munmap(addr, len) };
        }
    }
}

/// The little-endian u32 at `pos`.
fn read_u32(data: &[u8], pos: usize) -> Result<u32> {
    let bytes = data.get(pos..pos + 4).ok_or_else(|| anyhow!("BTF ends inside a field at byte {pos}"))?;
    Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
}

/// Tests on BTF written by the tests themselves: no kernel needed.
#[cfg(test)]
mod tests {
    use object::write::{Object, StandardSection};

    use super::*;

    /// A complete BTF parser (btf-rs) finding the same members, the way
    /// nixtrace did before it read BTF itself: the reference.
    pub(super) fn btf_rs_offset(btf: &btf_rs::Btf, strukt: &str, path: &[&str]) -> Result<u32> {
        use btf_rs::Type;
        fn composite(btf: &btf_rs::Btf, mut t: Type) -> Option<btf_rs::Struct> {
            loop {
                match t {
                    Type::Struct(s) | Type::Union(s) => return Some(s),
                    Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::TypeTag(_) => {
                        t = btf.resolve_chained_type(t.as_btf_type()?).ok()?;
                    }
                    _ => return None,
                }
            }
        }
        fn member(btf: &btf_rs::Btf, s: &btf_rs::Struct, name: &str) -> Option<(u32, Type)> {
            for m in &s.members {
                let ty = btf.resolve_chained_type(m).ok()?;
                let member_name = btf.resolve_name(m).unwrap_or_default();
                if member_name == name {
                    return Some((m.bit_offset(), ty));
                }
                if member_name.is_empty()
                    && let Some(inner) = composite(btf, ty)
                    && let Some((offset, found)) = member(btf, &inner, name)
                {
                    return Some((m.bit_offset() + offset, found));
                }
            }
            None
        }
        let mut current = btf
            .resolve_types_by_name(strukt)?
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| anyhow!("no struct {strukt}"))?;
        let mut bits = 0;
        for (i, name) in path.iter().enumerate() {
            let (offset, ty) = member(btf, &current, name).ok_or_else(|| anyhow!("no {name}"))?;
            bits += offset;
            if i + 1 < path.len() {
                current = composite(btf, ty).ok_or_else(|| anyhow!("{name} is not a struct"))?;
            }
        }
        Ok(bits / 8)
    }

    /// BTF written type by type: a header, the types, the strings.
    struct BtfWriter {
        types: Vec<u8>,
        strings: Vec<u8>,
        count: u32,
    }

    const BTF_KIND_INT: u32 = 1;
    const BTF_KIND_PTR: u32 = 2;
    const BTF_KIND_ARRAY: u32 = 3;
    const BTF_KIND_ENUM: u32 = 6;
    const BTF_KIND_FWD: u32 = 7;
    const BTF_KIND_FUNC: u32 = 12;
    const BTF_KIND_FUNC_PROTO: u32 = 13;
    const BTF_KIND_VAR: u32 = 14;
    const BTF_KIND_DATASEC: u32 = 15;
    const BTF_KIND_FLOAT: u32 = 16;
    const BTF_KIND_DECL_TAG: u32 = 17;
    const BTF_KIND_ENUM64: u32 = 19;

    impl BtfWriter {
        fn new() -> BtfWriter {
            BtfWriter { types: Vec::new(), strings: vec![0], count: 0 }
        }

        fn string(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let offset = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            offset
        }

        /// Appends a type and its kind-specific words; returns its id.
        fn add(
            &mut self,
            name: &str,
            kind: u32,
            vlen: u32,
            kind_flag: bool,
            size_or_type: u32,
            extra: &[u32],
        ) -> u32 {
            let name = self.string(name);
            let info = vlen | (kind << 24) | (u32::from(kind_flag) << 31);
            for word in [name, info, size_or_type].iter().chain(extra) {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
            self.count += 1;
            self.count
        }

        fn int(&mut self, name: &str, bytes: u32) -> u32 {
            self.add(name, BTF_KIND_INT, 0, false, bytes, &[bytes * 8])
        }

        /// A modifier (pointer, typedef, qualifier, type tag) of `to`.
        fn refer(&mut self, kind: u32, name: &str, to: u32) -> u32 {
            self.add(name, kind, 0, false, to, &[])
        }

        /// A struct or union with members (name, type, byte offset).
        fn composite(&mut self, kind: u32, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            let bits: Vec<(&str, u32, u32)> = members.iter().map(|&(m, ty, at)| (m, ty, at * 8)).collect();
            self.raw_composite(kind, name, size, false, &bits)
        }

        /// A struct or union with members (name, type, offset word as BTF stores it).
        fn raw_composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            kind_flag: bool,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let mut extra = Vec::new();
            for &(member, ty, offset) in members {
                extra.extend([self.string(member), ty, offset]);
            }
            self.add(name, kind, members.len() as u32, kind_flag, size, &extra)
        }

        fn finish(self) -> Vec<u8> {
            let (type_len, str_len) = (self.types.len() as u32, self.strings.len() as u32);
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]); // version, flags
            for word in [24, 0, type_len, type_len, str_len] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            out.extend(self.types);
            out.extend(self.strings);
            out
        }
    }

    /// A kernel's types as BTF, with the layout tricks real kernels use:
    /// members inside anonymous structs and unions, a struct reached through
    /// a qualifier and a typedef, type tags, bitfields (`kind_flag`), a
    /// declaration and an empty struct before the real definitions, and
    /// kinds that are only skipped. Its offsets are [`expected_offsets`].
    fn kernel_btf() -> Vec<u8> {
        let mut w = BtfWriter::new();
        let int = w.int("int", 4);
        let uint = w.int("unsigned int", 4);
        let ulong = w.int("long unsigned int", 8);
        let uchar = w.int("unsigned char", 1);
        let u32_t = w.refer(BTF_KIND_TYPEDEF, "u32", uint);
        let dev_t = w.refer(BTF_KIND_TYPEDEF, "dev_t", u32_t);
        let ptr = w.refer(BTF_KIND_PTR, "", 0);
        let rcu = w.refer(BTF_KIND_TYPE_TAG, "rcu", ptr);
        let rcu_ptr = w.refer(BTF_KIND_PTR, "", rcu);
        let volatile_int = w.refer(BTF_KIND_VOLATILE, "", int);
        let restrict_ptr = w.refer(BTF_KIND_RESTRICT, "", ptr);
        // Kinds read past, not decoded.
        w.add("", BTF_KIND_ARRAY, 0, false, 0, &[uchar, int, 16]);
        let (pid, tgid) = (w.string("PIDTYPE_PID"), w.string("PIDTYPE_TGID"));
        w.add("pid_type", BTF_KIND_ENUM, 2, false, 4, &[pid, 0, tgid, 1]);
        let big = w.string("BIG");
        w.add("big", BTF_KIND_ENUM64, 1, false, 8, &[big, 1, 1]);
        let arg = w.string("code");
        let proto = w.add("", BTF_KIND_FUNC_PROTO, 1, false, int, &[arg, int]);
        w.add("do_exit", BTF_KIND_FUNC, 1, false, proto, &[]);
        w.add("double", BTF_KIND_FLOAT, 0, false, 8, &[]);
        let jiffies = w.add("jiffies", BTF_KIND_VAR, 0, false, ulong, &[1]);
        w.add(".data", BTF_KIND_DATASEC, 1, false, 8, &[jiffies, 0, 8]);
        w.add("task_struct", BTF_KIND_FWD, 0, false, 0, &[]);
        w.composite(BTF_KIND_STRUCT, "file", 0, &[]);

        let path = w.composite(BTF_KIND_STRUCT, "path", 16, &[("mnt", ptr, 0), ("dentry", ptr, 8)]);
        // Bitfields: the top 8 bits of an offset are the field's width.
        w.raw_composite(
            BTF_KIND_STRUCT,
            "task_struct",
            0x2600,
            true,
            &[
                ("__state", uint, 0x18 * 8),
                ("in_execve", uint, (1 << 24) | (0x700 * 8 + 2)),
                ("pdeath_signal", int, (32 << 24) | (0x9a8 * 8)),
                ("mm", ptr, 0x918 * 8),
                ("exit_code", int, 0x9a4 * 8),
                ("fs", ptr, 0xb80 * 8),
                ("files", ptr, 0xb88 * 8),
            ],
        );
        let mm_inner = w.composite(
            BTF_KIND_STRUCT,
            "",
            0x400,
            &[
                ("mmap_base", ulong, 0x10),
                ("arg_start", ulong, 0x150),
                ("arg_end", ulong, 0x158),
                ("env_start", ulong, 0x160),
                ("env_end", ulong, 0x168),
                ("exe_file", rcu_ptr, 0x1a0),
            ],
        );
        w.composite(
            BTF_KIND_STRUCT,
            "mm_struct",
            0x440,
            &[("mm_count", volatile_int, 0), ("", mm_inner, 0x40)],
        );
        w.composite(
            BTF_KIND_STRUCT,
            "fs_struct",
            56,
            &[("users", int, 0), ("umask", int, 12), ("root", path, 24), ("pwd", path, 40)],
        );
        w.composite(BTF_KIND_STRUCT, "files_struct", 704, &[("count", int, 0), ("fdt", rcu_ptr, 32)]);
        w.composite(
            BTF_KIND_STRUCT,
            "fdtable",
            56,
            &[("max_fds", uint, 0), ("fd", rcu_ptr, 8), ("close_on_exec", ptr, 16)],
        );
        let llist = w.composite(BTF_KIND_UNION, "", 16, &[("f_llist", ptr, 0), ("f_rcuhead", ptr, 0)]);
        w.composite(
            BTF_KIND_STRUCT,
            "file",
            0xe8,
            &[
                ("", llist, 0),
                ("f_mode", uint, 0x14),
                ("f_path", path, 0x40),
                ("f_inode", restrict_ptr, 0x50),
            ],
        );
        w.composite(
            BTF_KIND_STRUCT,
            "inode",
            0x260,
            &[
                ("i_mode", int, 0),
                ("i_op", ptr, 32),
                ("i_sb", ptr, 40),
                ("i_mapping", ptr, 48),
                ("i_ino", ulong, 64),
            ],
        );
        w.composite(BTF_KIND_STRUCT, "super_block", 0x5a0, &[("s_list", ptr, 0), ("s_dev", dev_t, 16)]);
        let hash_len = w.composite(BTF_KIND_STRUCT, "", 8, &[("hash", u32_t, 0), ("len", u32_t, 4)]);
        let hash = w.composite(BTF_KIND_UNION, "", 8, &[("", hash_len, 0), ("hash_len", ulong, 0)]);
        let qstr = w.composite(BTF_KIND_STRUCT, "qstr", 16, &[("", hash, 0), ("name", ptr, 8)]);
        let qstr_t = w.refer(BTF_KIND_TYPEDEF, "qstr_t", qstr);
        let const_qstr = w.refer(BTF_KIND_CONST, "", qstr_t);
        let dentry = w.composite(
            BTF_KIND_STRUCT,
            "dentry",
            192,
            &[("d_flags", uint, 0), ("d_parent", ptr, 24), ("d_name", const_qstr, 32), ("d_inode", ptr, 48)],
        );
        let vfsmount = w.composite(
            BTF_KIND_STRUCT,
            "vfsmount",
            32,
            &[("mnt_root", ptr, 0), ("mnt_sb", ptr, 8), ("mnt_flags", int, 16)],
        );
        w.composite(
            BTF_KIND_STRUCT,
            "mount",
            0x140,
            &[
                ("mnt_hash", ptr, 0),
                ("mnt_parent", ptr, 16),
                ("mnt_mountpoint", ptr, 24),
                ("mnt", vfsmount, 32),
            ],
        );
        w.add("randomize_layout", BTF_KIND_DECL_TAG, 0, false, dentry, &[u32::MAX]);
        w.finish()
    }

    /// The offsets [`kernel_btf`] lays out.
    fn expected_offsets() -> KernelOffsets {
        KernelOffsets {
            task_mm: 0x918,
            task_fs: 0xb80,
            task_files: 0xb88,
            task_exit_code: 0x9a4,
            mm_arg_start: 0x40 + 0x150,
            mm_arg_end: 0x40 + 0x158,
            mm_env_start: 0x40 + 0x160,
            mm_env_end: 0x40 + 0x168,
            mm_exe_file: 0x40 + 0x1a0,
            fs_pwd: 40,
            path_mnt: 0,
            path_dentry: 8,
            files_fdt: 32,
            fdt_max_fds: 0,
            fdt_fd: 8,
            file_path: 0x40,
            file_inode: 0x50,
            inode_ino: 64,
            inode_sb: 40,
            sb_dev: 16,
            dentry_parent: 24,
            dentry_name_ptr: 32 + 8,
            mount_mnt: 32,
            mount_parent: 16,
            mount_mountpoint: 24,
            vfsmount_root: 0,
        }
    }

    #[test]
    fn resolves_every_offset_through_anonymous_members_and_typedefs() {
        let types = KernelTypes::from_bytes(kernel_btf()).expect("BTF");
        let k = types.resolve().expect("offsets");
        assert_eq!(format!("{k:?}"), format!("{:?}", expected_offsets()));
        // A byte-aligned bitfield is found at its byte; the width bits are not part of the offset.
        assert_eq!(types.offset("task_struct", &["pdeath_signal"]).unwrap(), 0x9a8);
        let error = |strukt: &str, path: &[&str]| format!("{:#}", types.offset(strukt, path).unwrap_err());
        assert_eq!(
            error("task_struct", &["no_such_member"]),
            "kernel BTF: struct task_struct has no member no_such_member"
        );
        assert_eq!(error("task_struct", &["in_execve"]), "kernel BTF: task_struct.in_execve is a bitfield");
        assert_eq!(error("dentry", &["d_parent", "d_name"]), "kernel BTF: dentry.d_parent is not a struct");
        assert_eq!(
            error("dentry", &["d_name", "nothing"]),
            "kernel BTF: struct dentry has no member d_name.nothing"
        );
        assert_eq!(error("qstr_t", &["name"]), "kernel BTF has no struct qstr_t");
    }

    /// nixtrace's reading gives every offset that btf-rs gives.
    #[test]
    fn agrees_with_a_complete_btf_parser() {
        let data = kernel_btf();
        let ours = KernelTypes::from_bytes(data.clone()).expect("BTF").resolve().expect("offsets");
        let btf = btf_rs::Btf::from_bytes(&data).expect("btf-rs reads the BTF");
        let reference =
            kernel_offsets(|strukt, members| btf_rs_offset(&btf, strukt, members)).expect("offsets");
        assert_eq!(format!("{ours:?}"), format!("{reference:?}"));
    }

    /// Raw BTF in a file (as /sys/kernel/btf/vmlinux) and a vmlinux-style
    /// ELF file with it in its .BTF section give the same offsets; an ELF
    /// file without the section is a one-line error.
    #[test]
    fn reads_btf_from_a_file_and_an_elf_section() {
        let dir = tempfile::tempdir().unwrap();
        let elf_with = |name: &str, btf: Option<&[u8]>| {
            let mut object = Object::new(
                object::BinaryFormat::Elf,
                object::Architecture::X86_64,
                object::Endianness::Little,
            );
            let text = object.section_id(StandardSection::Text);
            object.append_section_data(text, &[0xc3], 1);
            if let Some(btf) = btf {
                let section = object.add_section(Vec::new(), b".BTF".to_vec(), object::SectionKind::Metadata);
                object.append_section_data(section, btf, 4);
            }
            let path = dir.path().join(name);
            fs::write(&path, object.write().unwrap()).unwrap();
            path
        };
        let btf = kernel_btf();
        let raw = dir.path().join("btf");
        fs::write(&raw, &btf).unwrap();
        let from_raw = KernelTypes::from_file(&raw).expect("raw BTF").resolve().unwrap();
        let vmlinux = elf_with("vmlinux", Some(&btf));
        let from_elf = KernelTypes::from_file(&vmlinux).expect("BTF in an ELF section").resolve().unwrap();
        assert_eq!(format!("{from_raw:?}"), format!("{:?}", expected_offsets()));
        assert_eq!(format!("{from_elf:?}"), format!("{:?}", expected_offsets()));
        let other = elf_with("other", None);
        let without = KernelTypes::from_file(&other).err().expect("no BTF in an ELF file without .BTF");
        assert_eq!(format!("{without:#}"), format!("{} has no .BTF section", other.display()));
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(KernelTypes::from_bytes(Vec::new()).is_err());
        assert!(KernelTypes::from_bytes(b"\x9f\xeb\x01\x00garbage".to_vec()).is_err());
        let mut truncated = kernel_btf();
        truncated.truncate(truncated.len() / 2);
        assert!(KernelTypes::from_bytes(truncated).is_err());
    }
}

/// Tests on the running kernel's BTF (`/sys/kernel/btf/vmlinux`, which
/// needs CONFIG_DEBUG_INFO_BTF but not root): built only with the
/// `privileged-tests` feature, which `cargo xtask test` turns on. The
/// kernel's BTF in a vmlinux file is tested end to end by
/// `tests/record.rs` (`record_reads_btf_from_a_vmlinux_file`).
#[cfg(all(test, feature = "privileged-tests"))]
mod running_kernel_tests {
    use super::{tests::btf_rs_offset, *};

    const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

    /// The running kernel's BTF resolves every offset, and the ones whose
    /// values are fixed by the C ABI come out right.
    #[test]
    fn resolves_running_kernel_offsets() {
        let types = KernelTypes::from_file(Path::new(VMLINUX_BTF)).expect("kernel BTF");
        let k = types.resolve().expect("offsets");
        assert_eq!(k.path_mnt, 0);
        assert_eq!(k.path_dentry, 8);
        assert_eq!(k.mm_arg_end, k.mm_arg_start + 8);
        assert!(types.offset("task_struct", &["no_such_member"]).is_err());
    }

    /// The running kernel's BTF read by nixtrace gives every offset that
    /// btf-rs gives.
    #[test]
    fn running_kernel_agrees_with_a_complete_btf_parser() {
        let path = Path::new(VMLINUX_BTF);
        let ours = KernelTypes::from_file(path).expect("kernel BTF").resolve().expect("offsets");
        let btf = btf_rs::Btf::from_file(path).expect("btf-rs reads the kernel BTF");
        let reference =
            kernel_offsets(|strukt, members| btf_rs_offset(&btf, strukt, members)).expect("offsets");
        assert_eq!(format!("{ours:?}"), format!("{reference:?}"));
    }

    #[test]
    fn running_kernel_btf_cut_short_is_rejected() {
        let mut truncated = fs::read(VMLINUX_BTF).expect("kernel BTF");
        truncated.truncate(truncated.len() / 2);
        assert!(KernelTypes::from_bytes(truncated).is_err());
    }
}
