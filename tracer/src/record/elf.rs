//! Static facts about ELF files: how much work the dynamic loader has before `main`.
//!
//! A trace says how long a process spent loading; these facts say why (how many
//! libraries, relocations and symbols, eager or lazy binding). The recorder reads
//! them while the programs run (`binaries.rs`) and finds the loaders' interpreters
//! with them; the placement of the loader uprobes shares the parsing helpers
//! (`loader_probes.rs`). Everything is read from one in-memory copy of the file. Dynamic-section data is read
//! through the program headers, as the loader reads it, so files whose section
//! headers were stripped still work.

use std::{fs, path::Path};

use crate::trace::ElfFacts;
use anyhow::{Context as _, Result, anyhow, bail, ensure};
use object::{
    Endianness, Object as _, ReadRef as _, elf,
    read::elf::{Dyn as _, ElfFile, FileHeader, ProgramHeader as _, Relr as _},
};

/// Parses `$data` as ELF of either class and byte order and evaluates `$body` with `$file` bound to
/// the parsed file. A macro because the body calls generic helpers, instantiated once per class.
macro_rules! with_elf {
    ($data:expr, $file:ident => $body:expr) => {
        match ::object::FileKind::parse($data)? {
            ::object::FileKind::Elf64 => {
                let $file = &::object::read::elf::ElfFile64::<::object::Endianness>::parse($data)?;
                $body
            }
            ::object::FileKind::Elf32 => {
                let $file = &::object::read::elf::ElfFile32::<::object::Endianness>::parse($data)?;
                $body
            }
            kind => ::anyhow::bail!("not an ELF file but {kind:?}"),
        }
    };
}
pub(crate) use with_elf;

/// Larger files are not read for their ELF facts.
const MAX_ELF_BYTES: u64 = 4 << 30;

/// Reads `path` once and returns its facts.
pub fn read_elf_facts(path: &Path) -> Result<ElfFacts> {
    let data = read_untrusted(path).with_context(|| format!("reading {}", path.display()))?;
    elf_facts_from_bytes(&data).with_context(|| format!("parsing ELF file {}", path.display()))
}

/// Reads a file a trace names, which may be anything: never from /proc,
/// /sys or /dev (a "regular" file there can block forever or consume
/// what it reads, like /proc/kmsg), never a device or FIFO (opened
/// non-blocking, checked on the open fd), never more than the limit.
fn read_untrusted(path: &Path) -> Result<Vec<u8>> {
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
    if ["/proc", "/sys", "/dev"].iter().any(|dir| path.starts_with(dir)) {
        bail!("not reading a file under /proc, /sys or /dev");
    }
    let file = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        bail!("not a regular file");
    }
    if meta.len() > MAX_ELF_BYTES {
        bail!("larger than {} GiB", MAX_ELF_BYTES >> 30);
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_ELF_BYTES).read_to_end(&mut data)?;
    Ok(data)
}

/// The facts of an ELF file already in memory.
pub fn elf_facts_from_bytes(data: &[u8]) -> Result<ElfFacts> {
    with_elf!(data, file => facts(file))
}

fn facts<H: FileHeader<Endian = Endianness>>(file: &ElfFile<'_, H>) -> Result<ElfFacts> {
    let endian = file.endian();
    let is_dynamic = file
        .elf_program_headers()
        .iter()
        .any(|ph| matches!(ph.p_type(endian), elf::PT_INTERP | elf::PT_DYNAMIC));
    let dynamic = Dynamic::read(file)?;
    Ok(ElfFacts {
        build_id: file.build_id()?.map(hex),
        interpreter: interpreter(file)?,
        needed: dynamic.strings(elf::DT_NEEDED)?,
        runpath: dynamic.search_path(elf::DT_RUNPATH)?,
        rpath: dynamic.search_path(elf::DT_RPATH)?,
        soname: dynamic.strings(elf::DT_SONAME)?.into_iter().next(),
        bind_now: dynamic.bind_now(),
        relocations: relocation_count(file, &dynamic)?,
        dynamic_symbols: file.elf_dynamic_symbol_table().len() as u64,
        entry: file.entry(),
        is_dynamic,
    })
}

fn interpreter<H: FileHeader<Endian = Endianness>>(file: &ElfFile<'_, H>) -> Result<Option<String>> {
    for ph in file.elf_program_headers() {
        if let Some(path) = ph.interpreter(file.endian(), file.data())? {
            return Ok(Some(String::from_utf8_lossy(path).into_owned()));
        }
    }
    Ok(None)
}

/// The `PT_DYNAMIC` entries up to `DT_NULL`, and the dynamic string table they refer to.
#[derive(Default)]
struct Dynamic<'a> {
    entries: Vec<(i64, u64)>,
    strings: &'a [u8],
}

impl<'a> Dynamic<'a> {
    /// Empty for files without `PT_DYNAMIC` (static executables).
    fn read<H: FileHeader<Endian = Endianness>>(file: &ElfFile<'a, H>) -> Result<Self> {
        let endian = file.endian();
        let table = file
            .elf_program_headers()
            .iter()
            .find_map(|ph| ph.dynamic(endian, file.data()).transpose())
            .transpose()?;
        let Some(table) = table else { return Ok(Self::default()) };
        let entries = table
            .iter()
            .map(|d| (d.tag(endian), d.val(endian)))
            .take_while(|&(tag, _)| tag != elf::DT_NULL)
            .collect();
        let mut dynamic = Dynamic { entries, strings: &[] };
        if let Some(address) = dynamic.value(elf::DT_STRTAB) {
            let size = dynamic.value(elf::DT_STRSZ).context("DT_STRTAB without DT_STRSZ")?;
            dynamic.strings = bytes_at(file, address, size).context("reading DT_STRTAB")?;
        }
        Ok(dynamic)
    }

    /// The value of the first entry with `tag`.
    fn value(&self, tag: i64) -> Option<u64> {
        self.entries.iter().find(|&&(t, _)| t == tag).map(|&(_, value)| value)
    }

    /// The strings named by all entries with `tag`, in order.
    fn strings(&self, tag: i64) -> Result<Vec<String>> {
        self.entries.iter().filter(|&&(t, _)| t == tag).map(|&(_, offset)| self.string(offset)).collect()
    }

    fn string(&self, offset: u64) -> Result<String> {
        let tail = usize::try_from(offset)
            .ok()
            .and_then(|offset| self.strings.get(offset..))
            .with_context(|| format!("dynamic string offset {offset} is outside DT_STRTAB"))?;
        let end = tail.iter().position(|&b| b == 0).context("unterminated dynamic string")?;
        Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
    }

    /// A `DT_RUNPATH` or `DT_RPATH` list, kept as written: interpreting `$ORIGIN` or empty entries
    /// is the resolver's business.
    fn search_path(&self, tag: i64) -> Result<Vec<String>> {
        Ok(self.strings(tag)?.iter().flat_map(|path| path.split(':')).map(str::to_owned).collect())
    }

    /// The three ways a linker can ask for eager binding (`-z now` emits the flags, old linkers the tag).
    fn bind_now(&self) -> bool {
        let has_flag = |tag, flag: u32| self.value(tag).is_some_and(|value| value & u64::from(flag) != 0);
        self.value(elf::DT_BIND_NOW).is_some()
            || has_flag(elf::DT_FLAGS, elf::DF_BIND_NOW)
            || has_flag(elf::DT_FLAGS_1, elf::DF_1_NOW)
    }

    /// The address range and entry count of the relocation table at `address_tag`, checked to lie in
    /// the file (which also bounds the count); `None` if the file has no such table.
    fn table<H: FileHeader<Endian = Endianness>>(
        &self,
        file: &ElfFile<'_, H>,
        [address_tag, size_tag]: [i64; 2],
        entry_size: u64,
    ) -> Result<Option<Table>> {
        let Some(start) = self.value(address_tag) else { return Ok(None) };
        let size =
            self.value(size_tag).with_context(|| format!("dynamic tag {address_tag} without its size"))?;
        ensure!(entry_size > 0, "relocation entry size 0 for dynamic tag {address_tag}");
        bytes_at(file, start, size)
            .with_context(|| format!("reading the table of dynamic tag {address_tag}"))?;
        let end = start.checked_add(size).context("relocation table wraps around the address space")?;
        Ok(Some(Table { start, end, count: size / entry_size }))
    }
}

/// A relocation table in the virtual address space.
struct Table {
    start: u64,
    end: u64,
    count: u64,
}

impl Table {
    fn contains(&self, other: &Table) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// Counts what the loader processes: the REL/RELA table, the PLT table (at startup under bind-now,
/// lazily otherwise) and each address RELR encodes.
fn relocation_count<H: FileHeader<Endian = Endianness>>(
    file: &ElfFile<'_, H>,
    dynamic: &Dynamic,
) -> Result<u64> {
    let rela_size = dynamic.value(elf::DT_RELAENT).unwrap_or(size_of::<H::Rela>() as u64);
    let rel_size = dynamic.value(elf::DT_RELENT).unwrap_or(size_of::<H::Rel>() as u64);
    let plt_size =
        if dynamic.value(elf::DT_PLTREL) == Some(elf::DT_RELA as u64) { rela_size } else { rel_size };
    let rela = dynamic.table(file, [elf::DT_RELA, elf::DT_RELASZ], rela_size)?;
    let rel = dynamic.table(file, [elf::DT_REL, elf::DT_RELSZ], rel_size)?;
    let plt = dynamic.table(file, [elf::DT_JMPREL, elf::DT_PLTRELSZ], plt_size)?;
    // Some linkers let DT_RELASZ cover the PLT table too; glibc then skips it once (elf/dynamic-link.h).
    let plt_count = match plt {
        Some(plt) if [&rela, &rel].into_iter().flatten().any(|table| table.contains(&plt)) => 0,
        Some(plt) => plt.count,
        None => 0,
    };
    let table_count = [rela, rel].into_iter().flatten().map(|table| table.count).sum::<u64>();
    Ok(table_count + plt_count + relr_count(file, dynamic)?)
}

/// RELR packs relative relocations as an address word (even) followed by bitmap words (odd) whose
/// set bits above bit 0 each mark one more word to relocate.
fn relr_count<H: FileHeader<Endian = Endianness>>(file: &ElfFile<'_, H>, dynamic: &Dynamic) -> Result<u64> {
    let Some(address) = dynamic.value(elf::DT_RELR) else { return Ok(0) };
    let size = dynamic.value(elf::DT_RELRSZ).context("DT_RELR without DT_RELRSZ")?;
    let bytes = bytes_at(file, address, size).context("reading DT_RELR")?;
    let words = object::pod::slice_from_all_bytes::<H::Relr>(bytes)
        .map_err(|()| anyhow!("DT_RELR is misaligned or not a whole number of entries"))?;
    let count = |word: u64| if word & 1 == 0 { 1 } else { u64::from((word >> 1).count_ones()) };
    Ok(words.iter().map(|word| count(word.get(file.endian()).into())).sum())
}

/// The `size` bytes at virtual address `vaddr`.
pub(crate) fn bytes_at<'a, H: FileHeader<Endian = Endianness>>(
    file: &ElfFile<'a, H>,
    vaddr: u64,
    size: u64,
) -> Result<&'a [u8]> {
    locate(file, vaddr, size).map(|(_, bytes)| bytes)
}

/// The file offset and bytes of the `size` bytes at virtual address `vaddr`. They must lie in the
/// file-backed part of one PT_LOAD segment: the zero-filled tail past `p_filesz` has no offset.
pub(crate) fn locate<'a, H: FileHeader<Endian = Endianness>>(
    file: &ElfFile<'a, H>,
    vaddr: u64,
    size: u64,
) -> Result<(u64, &'a [u8])> {
    let endian = file.endian();
    for ph in file.elf_program_headers().iter().filter(|ph| ph.p_type(endian) == elf::PT_LOAD) {
        let (segment_offset, file_size) = ph.file_range(endian);
        let Some(delta) = vaddr.checked_sub(ph.p_vaddr(endian).into()) else { continue };
        if delta.checked_add(size).is_none_or(|end| end > file_size) {
            continue;
        }
        let offset = segment_offset.checked_add(delta).context("segment offset overflows")?;
        let bytes = file.data().read_bytes_at(offset, size).map_err(|()| {
            anyhow!("address {vaddr:#x} maps to offset {offset:#x}, past the end of the file")
        })?;
        return Ok((offset, bytes));
    }
    bail!("address {vaddr:#x} (+{size}) is not in the file contents of any PT_LOAD segment")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{path::PathBuf, process::Command};

    use object::{
        Object as _, ObjectSection as _, SectionKind,
        read::elf::{ElfFile64, SectionHeader as _},
    };

    use super::*;

    /// File offset of a virtual address: `locate`, which the probe offsets rely on.
    fn file_offset_of(data: &[u8], vaddr: u64) -> Result<u64> {
        with_elf!(data, file => locate(file, vaddr, 1).map(|(offset, _)| offset))
    }

    pub(crate) fn read(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    fn facts_of(path: &Path) -> ElfFacts {
        read_elf_facts(path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
    }

    /// The file mapped at `address` in this process, from /proc/self/maps.
    fn mapped_file(address: usize) -> PathBuf {
        let maps = fs::read_to_string("/proc/self/maps").expect("reading /proc/self/maps");
        let path = maps.lines().find_map(|line| {
            // "7f12-7f34 r-xp 00001000 fe:01 1234   /usr/lib/x86_64-linux-gnu/libc.so.6"
            let (range, rest) = line.split_once(' ')?;
            let (start, end) = range.split_once('-')?;
            let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
            let path = rest.splitn(5, ' ').nth(4)?.trim_start();
            ((start..end).contains(&address) && path.starts_with('/')).then(|| PathBuf::from(path))
        });
        path.unwrap_or_else(|| panic!("no file is mapped at {address:#x}:\n{maps}"))
    }

    /// The dynamic loader this test process runs under (wherever this
    /// system keeps it): the file mapped at the base the kernel reports.
    pub(crate) fn running_loader() -> PathBuf {
        // SAFETY: getauxval has no preconditions.
        let base = unsafe { libc::getauxval(libc::AT_BASE) };
        assert_ne!(base, 0, "this test binary has no dynamic loader");
        mapped_file(base as usize)
    }

    /// The C library this test process runs with: the file its `getpid` is in.
    fn running_libc() -> PathBuf {
        mapped_file(libc::getpid as *const () as usize)
    }

    /// Compiles the C `source` with `cc args...` into a fresh directory.
    /// Nix's compiler wrappers would add run paths and hardening flags of
    /// their own: they are told not to, so every system builds the same.
    fn compile_source(source: &str, args: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let source_path = dir.path().join("main.c");
        let binary = dir.path().join("main");
        fs::write(&source_path, source).expect("writing main.c");
        let output = Command::new("cc")
            .args(args)
            .arg("-o")
            .arg(&binary)
            .arg(&source_path)
            .env("NIX_DONT_SET_RPATH", "1")
            .env("NIX_HARDENING_ENABLE", "")
            .output()
            .expect("running cc");
        assert!(output.status.success(), "cc {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        (dir, binary)
    }

    /// Compiles an empty C program with `cc args...` into a fresh directory.
    fn compile(args: &[&str]) -> (tempfile::TempDir, PathBuf) {
        compile_source("int main(void) { return 0; }\n", args)
    }

    /// A dynamically linked C program with a build id and lazy binding,
    /// as distributions build their commands.
    pub(crate) fn dynamic_executable() -> (tempfile::TempDir, PathBuf) {
        compile_source(
            "#include <stdio.h>\nint main(int argc, char **argv) { printf(\"%d %s\\n\", argc, argv[0]); return 0; }\n",
            &["-Wl,--build-id=sha1", "-Wl,-z,lazy"],
        )
    }

    /// A static executable linked at a fixed address, without a C library
    /// (which not every system has for static linking). Its ifunc gets an
    /// IRELATIVE relocation, as static glibc programs have: applied by the
    /// program's own startup code, never by a loader.
    fn static_executable() -> (tempfile::TempDir, PathBuf) {
        let source = "static int impl(void) { return 0; }\n\
            static int (*resolve(void))(void) { return impl; }\n\
            int f(void) __attribute__((ifunc(\"resolve\")));\n\
            void _start(void) { f(); for (;;) {} }\n";
        compile_source(source, &["-static", "-no-pie", "-nostdlib"])
    }

    fn is_build_id(id: &str) -> bool {
        id.len() == 40 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    #[test]
    fn a_dynamic_executable_has_its_loader_libraries_and_build_id() {
        let (_dir, binary) = dynamic_executable();
        let facts = facts_of(&binary);
        assert!(facts.is_dynamic);
        // cc links programs against the loader this test runs under.
        let interpreter = facts.interpreter.as_deref().expect("an interpreter");
        assert_eq!(fs::canonicalize(interpreter).unwrap(), fs::canonicalize(running_loader()).unwrap());
        assert!(facts.needed.iter().any(|n| n == "libc.so.6"), "{:?}", facts.needed);
        assert!(facts.build_id.as_deref().is_some_and(is_build_id), "{:?}", facts.build_id);
        assert_eq!(facts.soname, None);
        // Linked with -z lazy.
        assert!(!facts.bind_now);
        assert!(facts.relocations > 0);
        assert!(facts.dynamic_symbols > 1);
        assert_ne!(facts.entry, 0);
        assert!(facts.runpath.is_empty() && facts.rpath.is_empty());
    }

    #[test]
    fn libc_has_its_soname_and_a_build_id() {
        let facts = facts_of(&running_libc());
        assert_eq!(facts.soname.as_deref(), Some("libc.so.6"));
        assert!(facts.build_id.as_deref().is_some_and(is_build_id), "{:?}", facts.build_id);
        assert!(facts.needed.iter().any(|n| n == "ld-linux-x86-64.so.2"), "{:?}", facts.needed);
        assert!(facts.dynamic_symbols > 1000);
        assert!(facts.is_dynamic);
    }

    /// Relocation counts from the dynamic section must agree with the section headers, which the
    /// linker writes independently: `.rela.*` sizes plus the addresses `object` decodes from `.relr.dyn`.
    #[test]
    fn relocation_counts_match_the_section_headers() {
        let (_dir, binary) = dynamic_executable();
        let this_test = std::env::current_exe().unwrap();
        for path in [binary, this_test, running_libc(), running_loader()] {
            let data = read(&path);
            let file = ElfFile64::<Endianness>::parse(&*data).expect("an ELF file");
            let endian = file.endian();
            let mut expected = 0;
            for section in file.elf_section_table().iter() {
                let size = section.sh_size(endian);
                expected += match section.sh_type(endian) {
                    elf::SHT_RELA if section.sh_flags(endian) & u64::from(elf::SHF_ALLOC) != 0 => {
                        size / section.sh_entsize(endian)
                    }
                    elf::SHT_RELR => section.relr(endian, &*data).unwrap().unwrap().count() as u64,
                    _ => 0,
                };
            }
            assert_eq!(elf_facts_from_bytes(&data).unwrap().relocations, expected, "{}", path.display());
        }
    }

    #[test]
    fn the_loader_has_its_soname() {
        assert_eq!(facts_of(&running_loader()).soname.as_deref(), Some("ld-linux-x86-64.so.2"));
    }

    #[test]
    fn file_offsets_follow_the_load_segments() {
        let (_dir, binary) = static_executable();
        let data = fs::read(&binary).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let text = file.sections().find(|s| s.kind() == SectionKind::Text).expect("a text section");
        let (text_offset, _) = text.file_range().expect("text is in the file");
        // A non-PIE static binary is linked at 0x400000, so offsets and addresses differ.
        assert_ne!(text.address(), text_offset);
        assert_eq!(file_offset_of(&data, text.address()).unwrap(), text_offset);
        assert_eq!(file_offset_of(&data, text.address() + 5).unwrap(), text_offset + 5);
        assert!(file_offset_of(&data, 0).is_err());
        assert!(file_offset_of(&data, u64::MAX).is_err());
    }

    #[test]
    fn static_binaries_do_not_involve_the_loader() {
        let (_dir, binary) = static_executable();
        let data = read(&binary);
        let file = ElfFile64::<Endianness>::parse(&*data).expect("an ELF file");
        let endian = file.endian();
        let irelative = file.elf_section_table().iter().any(|section| {
            section.sh_type(endian) == elf::SHT_RELA
                && section.sh_flags(endian) & u64::from(elf::SHF_ALLOC) != 0
        });
        assert!(irelative, "the ifunc's relocation is in the file");
        let facts = facts_of(&binary);
        assert!(!facts.is_dynamic);
        assert_eq!(facts.interpreter, None);
        assert!(facts.needed.is_empty());
        assert_eq!(facts.relocations, 0);
    }

    #[test]
    fn needed_keeps_link_order() {
        let (_dir, binary) = compile(&["-Wl,--no-as-needed", "-lm"]);
        assert_eq!(facts_of(&binary).needed, ["libm.so.6", "libc.so.6"]);
    }

    #[test]
    fn runpath_and_rpath_are_split_on_colons() {
        let (_dir, binary) = compile(&["-Wl,-rpath,/a:/b", "-Wl,--enable-new-dtags"]);
        let facts = facts_of(&binary);
        assert_eq!((facts.runpath, facts.rpath), (vec!["/a".into(), "/b".into()], vec![]));

        let (_dir, binary) = compile(&["-Wl,-rpath,/a:/b:$ORIGIN/../lib", "-Wl,--disable-new-dtags"]);
        let facts = facts_of(&binary);
        assert_eq!(facts.rpath, ["/a", "/b", "$ORIGIN/../lib"]);
        assert!(facts.runpath.is_empty());
    }

    #[test]
    fn bind_now_follows_the_linker_flag() {
        let (_dir, binary) = compile(&["-Wl,-z,now"]);
        assert!(facts_of(&binary).bind_now);
        let (_dir, binary) = compile(&["-Wl,-z,lazy"]);
        assert!(!facts_of(&binary).bind_now);
    }

    #[test]
    fn rejects_what_is_not_elf() {
        assert!(elf_facts_from_bytes(&[]).is_err());
        assert!(elf_facts_from_bytes(b"\x7fELF").is_err());
        assert!(elf_facts_from_bytes(&[0xa5; 4096]).is_err());
        assert!(file_offset_of(b"#!/bin/sh\n", 0).is_err());
        let error = read_elf_facts(Path::new("/nonexistent/lib.so")).unwrap_err();
        assert!(format!("{error:#}").contains("/nonexistent/lib.so"), "{error:#}");
    }

    /// Copies of `data` cut short, then copies with 8 bytes changed by a fixed xorshift sequence
    /// (reproducible damage to headers and the dynamic section), each with a number to use as an
    /// address.
    pub(crate) fn damaged_copies(data: &[u8]) -> impl Iterator<Item = (Vec<u8>, u64)> + '_ {
        let prefixes = (0..4096).step_by(7).chain((4096..data.len()).step_by(4093));
        let prefixes = prefixes.map(|len| (data[..len].to_vec(), len as u64));
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let damaged = (0..2000).map(move |_| {
            let mut damaged = data.to_vec();
            for _ in 0..8 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let limit = if state & 1 == 0 { 4096 } else { damaged.len() };
                let index = (state >> 8) as usize % limit;
                damaged[index] = (state >> 40) as u8;
            }
            (damaged, state)
        });
        prefixes.chain(damaged)
    }

    /// Truncated and corrupted copies of real files must give errors or facts, never panics.
    #[test]
    fn damaged_files_do_not_panic() {
        let (_dir, binary) = dynamic_executable();
        for path in [binary, running_loader()] {
            for (damaged, address) in damaged_copies(&read(&path)) {
                let _ = elf_facts_from_bytes(&damaged);
                let _ = file_offset_of(&damaged, address);
            }
        }
    }
}
