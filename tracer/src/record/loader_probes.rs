//! Where the loader uprobes go in a glibc dynamic loader: a scan of the
//! x86-64 instructions at its entry point for `call _dl_start`,
//! `_dl_start_user` and the final jump to the program.

use anyhow::{Result, ensure};
use object::{
    Endianness, Object as _, elf,
    read::elf::{ElfFile, FileHeader},
};

use super::elf::{bytes_at, locate, with_elf};

/// For a glibc dynamic loader (`ld-linux-x86-64.so.2`): the file offsets of
/// the `call _dl_start` in its entry point (where the loader begins) and of
/// `_dl_start_user` (where `_dl_start` has returned after mapping and
/// relocating everything). Between the two is what `LD_DEBUG=statistics`
/// calls "total startup time in dynamic loader".
///
/// Why the call and not `_start` itself: the kernel emulates a probed
/// `call`, but single-steps a probed `mov` after the probe has fired; the
/// probes at `_dl_start_user` and at the final jump fire before their own
/// single step, so no step's cost lands inside a measured interval.
pub fn loader_probe_offsets(data: &[u8]) -> Result<LoaderProbes> {
    with_elf!(data, file => probe_offsets(file))
}

/// File offsets of the loader's probe points (see [`loader_probe_offsets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderProbes {
    /// `call _dl_start`: the loader begins.
    pub start: u64,
    /// `_dl_start_user`: libraries mapped and relocated.
    pub done: u64,
    /// `jmp *%r12` at the end of `_dl_start_user`: initialisers have run and
    /// the program's entry point is next. None when the code there is not
    /// the known sequence (the probe is then left out rather than placed
    /// inside an instruction).
    pub entry: Option<u64>,
}

/// glibc's x86_64 `_start` (`RTLD_START` in sysdeps/x86_64/dl-machine.h) begins with
/// `mov %rsp,%rdi` and the opcode of `call _dl_start`.
const RTLD_START: [u8; 4] = [0x48, 0x89, 0xe7, 0xe8];

/// Bytes of `mov %rsp,%rdi; call rel32`: `_dl_start_user` is the instruction after the call.
const RTLD_START_LEN: u64 = 8;

fn probe_offsets<H: FileHeader<Endian = Endianness>>(file: &ElfFile<'_, H>) -> Result<LoaderProbes> {
    let machine = file.elf_header().e_machine(file.endian());
    ensure!(machine == elf::EM_X86_64, "loader probes are only known for x86_64, not ELF machine {machine}");
    let entry = file.entry();
    let (offset, code) = locate(file, entry, RTLD_START_LEN)?;
    ensure!(
        code.starts_with(&RTLD_START),
        "the entry point {entry:#x} is not glibc's x86_64 _start \
         (mov %rsp,%rdi; call _dl_start = 48 89 e7 e8 ...): found {code:02x?}"
    );
    // `mov %rsp,%rdi` is 3 bytes; the 5-byte call follows.
    let done = offset + RTLD_START_LEN;
    let user = bytes_at(file, entry.saturating_add(RTLD_START_LEN), DL_START_USER_SCAN).unwrap_or_default();
    let jump = user.windows(TO_ENTRY.len()).position(|w| w == TO_ENTRY);
    // `mov %r13,%rsp` is 3 bytes; the probe goes on the jump after it.
    let entry = jump.map(|at| done + at as u64 + 3);
    Ok(LoaderProbes { start: offset + 3, done, entry })
}

/// How far into `_dl_start_user` to look for its final jump.
const DL_START_USER_SCAN: u64 = 96;
/// `mov %r13,%rsp; jmp *%r12`: how glibc's x86_64 `_dl_start_user` ends,
/// after `_dl_init` has run the initialisers. Matching both instructions,
/// not just the jump, keeps the probe on an instruction boundary.
const TO_ENTRY: [u8; 6] = [0x4c, 0x89, 0xec, 0x41, 0xff, 0xe4];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::elf::tests::{damaged_copies, dynamic_executable, read, running_loader};

    /// On the glibc loader this test runs under, wherever this system keeps it.
    #[test]
    fn loader_probe_offsets_point_at_start_and_dl_start_user() {
        let data = read(&running_loader());
        let probes = loader_probe_offsets(&data).expect("glibc's x86_64 loader");
        let call = usize::try_from(probes.start).unwrap();
        assert_eq!(data[call - 3..call], [0x48, 0x89, 0xe7]);
        assert_eq!(data[call], 0xe8);
        assert_eq!(probes.done, call as u64 + 5);
        let jump =
            usize::try_from(probes.entry.expect("this glibc's loader ends _dl_start_user as expected"))
                .unwrap();
        assert_eq!(data[jump - 3..jump + 3], [0x4c, 0x89, 0xec, 0x41, 0xff, 0xe4]);
    }

    #[test]
    fn loader_probe_offsets_reject_other_entry_points() {
        let (_dir, program) = dynamic_executable();
        let error = loader_probe_offsets(&read(&program)).expect_err("a program is not a loader").to_string();
        assert!(error.contains("not glibc's x86_64 _start") && error.contains("found ["), "{error}");
        assert!(loader_probe_offsets(&[]).is_err());
    }

    /// Truncated and corrupted copies of real files must give errors or offsets, never panics.
    #[test]
    fn damaged_files_do_not_panic() {
        let (_dir, program) = dynamic_executable();
        for path in [program, running_loader()] {
            for (damaged, _) in damaged_copies(&read(&path)) {
                let _ = loader_probe_offsets(&damaged);
            }
        }
    }
}
