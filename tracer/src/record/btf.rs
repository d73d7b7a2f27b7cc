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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A complete BTF parser (btf-rs) finding the same members, the way
    /// nixtrace did before it read BTF itself: the reference.
    fn btf_rs_offset(btf: &btf_rs::Btf, strukt: &str, path: &[&str]) -> Result<u32> {
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

    /// The running kernel's BTF read by nixtrace gives every offset that
    /// btf-rs gives.
    #[test]
    fn agrees_with_a_complete_btf_parser() {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        let ours = KernelTypes::from_file(path).expect("kernel BTF").resolve().expect("offsets");
        let btf = btf_rs::Btf::from_file(path).expect("btf-rs reads the kernel BTF");
        let reference =
            kernel_offsets(|strukt, members| btf_rs_offset(&btf, strukt, members)).expect("offsets");
        assert_eq!(format!("{ours:?}"), format!("{reference:?}"));
    }

    /// A vmlinux-style ELF file with the kernel's BTF in its .BTF section
    /// (made with objcopy) gives the offsets the raw BTF gives.
    #[test]
    fn reads_btf_from_an_elf_section() {
        let dir = tempfile::tempdir().unwrap();
        let elf = dir.path().join("vmlinux");
        let objcopy = std::process::Command::new("objcopy")
            .args(["--add-section", ".BTF=/sys/kernel/btf/vmlinux", "/bin/true"])
            .arg(&elf)
            .status()
            .expect("objcopy runs");
        assert!(objcopy.success());
        let from_elf = KernelTypes::from_file(&elf).expect("BTF in an ELF section").resolve().unwrap();
        let raw = KernelTypes::from_file(Path::new("/sys/kernel/btf/vmlinux")).unwrap().resolve().unwrap();
        assert_eq!(format!("{from_elf:?}"), format!("{raw:?}"));
        let without = KernelTypes::from_file(Path::new("/bin/true")).err().expect("no BTF in /bin/true");
        assert_eq!(format!("{without:#}"), "/bin/true has no .BTF section");
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(KernelTypes::from_bytes(Vec::new()).is_err());
        assert!(KernelTypes::from_bytes(b"\x9f\xeb\x01\x00garbage".to_vec()).is_err());
        let mut truncated = fs::read("/sys/kernel/btf/vmlinux").expect("kernel BTF");
        truncated.truncate(truncated.len() / 2);
        assert!(KernelTypes::from_bytes(truncated).is_err());
    }
}
