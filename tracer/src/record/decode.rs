//! Kernel records (the `tracer_common` ABI) to trace [`Event`]s.

use std::mem::size_of;

use tracer_common::{
    BLOCK_WRITE, BlockIoEvent, CgroupEvent, EXEC_ARGV_TRUNCATED, EXEC_ENV_TRUNCATED, EXIT_GROUP_DEAD,
    EventHeader, EventKind, ExecEvent, ExecFailedEvent, ExitEvent, ForkEvent, LOADER_DONE, LOADER_ENTRY,
    LOADER_START, LoaderEvent, MmapEvent, OpenEvent, PageCacheEvent, SchedEvent, StatEvent, TaskTimes,
    WALK_SKIPPED, WALK_TRUNCATED, join_reversed_components,
};

use crate::trace::{Common, Event, LoaderPhase, OpenSyscall, StatSyscall, ThreadTimes, event::loader_env};

/// A record that does not match the ABI: a bug, never expected.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Reads a `#[repr(C)]` struct from the start of `bytes`.
fn fixed<T: Copy>(bytes: &[u8]) -> Result<T, Malformed> {
    if bytes.len() < size_of::<T>() {
        return Err(Malformed("record shorter than its fixed part"));
    }
    // SAFETY: length checked; T is a plain-integer #[repr(C)] struct, so any
    // bytes are a valid value; read_unaligned copes with any alignment.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// Splits the strings that trail a fixed part, by their declared lengths.
fn trailing<const N: usize>(bytes: &[u8], start: usize, lens: [usize; N]) -> Result<[&[u8]; N], Malformed> {
    let mut at = start;
    let mut out = [&bytes[..0]; N];
    for (slot, len) in out.iter_mut().zip(lens) {
        *slot = bytes.get(at..at + len).ok_or(Malformed("string runs past the record"))?;
        at += len;
    }
    Ok(out)
}

fn reversed_path(components: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(components.len() + 1);
    join_reversed_components(components, &mut path);
    path
}

/// NUL-separated argv bytes (as laid out on the new process's stack).
fn split_argv(bytes: &[u8]) -> Vec<Vec<u8>> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes.split(|b| *b == 0).map(<[u8]>::to_vec).collect()
}

pub fn thread_times(t: &TaskTimes) -> ThreadTimes {
    ThreadTimes {
        on_cpu_ns: t.on_cpu_ns,
        runnable_ns: t.runnable_ns,
        blocked_ns: t.blocked_ns,
        sleeping_ns: t.sleeping_ns,
    }
}

/// Decodes a recording's records in order. It names the files of the
/// mmaps the kernel did not walk (`WALK_SKIPPED`) after the record of the
/// recording that did.
#[derive(Default)]
pub struct Decoder {
    /// Every mmap'd file's path, by (device, inode).
    walked: std::collections::HashMap<(u32, u64), Vec<u8>, foldhash::fast::RandomState>,
}

impl Decoder {
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Event, Malformed> {
        let mut event = decode(bytes)?;
        if let Event::Mmap { path, path_truncated, dev, ino, .. } = &mut event {
            match path {
                Some(path) => {
                    self.walked.entry((*dev, *ino)).or_insert_with(|| path.clone());
                }
                // The kernel sends a file's first name before it skips a walk,
                // so this is unnamed only if that record never arrived.
                None if skipped(bytes) => {
                    *path = self.walked.get(&(*dev, *ino)).cloned();
                    *path_truncated = path.is_none();
                }
                None => {}
            }
        }
        Ok(event)
    }
}

/// The pid of the task a record is about.
pub fn pid_of(bytes: &[u8]) -> Option<u32> {
    fixed::<EventHeader>(bytes).ok().map(|header| header.pid)
}

/// Whether an mmap record's path was not walked.
fn skipped(bytes: &[u8]) -> bool {
    fixed::<MmapEvent>(bytes).is_ok_and(|e| e.path_flags & WALK_SKIPPED != 0)
}

fn decode(bytes: &[u8]) -> Result<Event, Malformed> {
    let header: EventHeader = fixed(bytes)?;
    let common =
        Common { ts_ns: header.ts_ns, pid: header.pid, tid: header.tid, cgroup_id: header.cgroup_id };
    let kind = EventKind::from_u32(header.kind).ok_or(Malformed("unknown event kind"))?;
    Ok(match kind {
        EventKind::Fork => {
            let e: ForkEvent = fixed(bytes)?;
            Event::Fork { common, child_pid: e.child_pid, child_tid: e.child_tid, clone_flags: e.clone_flags }
        }
        EventKind::Exec => {
            let e: ExecEvent = fixed(bytes)?;
            let [filename, argv, env] = trailing(
                bytes,
                size_of::<ExecEvent>(),
                [e.filename_len.into(), e.argv_len.into(), e.env_len.into()],
            )?;
            Event::Exec {
                common,
                old_tid: e.old_tid,
                filename: filename.to_vec(),
                argv: split_argv(argv),
                argv_truncated: e.flags & EXEC_ARGV_TRUNCATED != 0,
                dev: e.dev,
                ino: e.ino,
                loader_env: loader_env(env),
                env_truncated: e.flags & EXEC_ENV_TRUNCATED != 0,
            }
        }
        EventKind::ExecFailed => {
            let e: ExecFailedEvent = fixed(bytes)?;
            let [filename] = trailing(bytes, size_of::<ExecFailedEvent>(), [e.filename_len.into()])?;
            Event::ExecFailed { common, filename: filename.to_vec(), ret: e.ret }
        }
        EventKind::Exit => {
            let e: ExitEvent = fixed(bytes)?;
            Event::Exit { common, status: e.exit_status, group_dead: e.flags & EXIT_GROUP_DEAD != 0 }
        }
        EventKind::Open => {
            let e: OpenEvent = fixed(bytes)?;
            let [path, dir] = trailing(bytes, size_of::<OpenEvent>(), [e.path_len.into(), e.dir_len.into()])?;
            let syscall = match e.syscall {
                1 => OpenSyscall::Open,
                2 => OpenSyscall::Openat,
                3 => OpenSyscall::Openat2,
                _ => return Err(Malformed("unknown open syscall")),
            };
            Event::Open {
                common,
                syscall,
                dfd: e.dfd,
                path: path.to_vec(),
                dir: (!dir.is_empty()).then(|| reversed_path(dir)),
                dir_truncated: e.dir_flags & WALK_TRUNCATED != 0,
                flags: e.flags,
                mode: e.mode,
                ret: e.ret,
                duration_ns: e.duration_ns,
                ino: e.ino,
                dev: e.dev,
            }
        }
        EventKind::Stat => {
            let e: StatEvent = fixed(bytes)?;
            let [path, dir] = trailing(bytes, size_of::<StatEvent>(), [e.path_len.into(), e.dir_len.into()])?;
            Event::Stat {
                common,
                syscall: StatSyscall::from_number(e.syscall.into())
                    .ok_or(Malformed("unknown stat syscall"))?,
                dfd: e.dfd,
                path: path.to_vec(),
                dir: (!dir.is_empty()).then(|| reversed_path(dir)),
                dir_truncated: e.dir_flags & WALK_TRUNCATED != 0,
                flags: e.flags,
                mode: e.mode,
                ret: e.ret,
                duration_ns: e.duration_ns,
            }
        }
        EventKind::Mmap => {
            let e: MmapEvent = fixed(bytes)?;
            let [path] = trailing(bytes, size_of::<MmapEvent>(), [e.path_len.into()])?;
            let anonymous = e.fd < 0;
            Event::Mmap {
                common,
                path: (!anonymous && !path.is_empty()).then(|| reversed_path(path)),
                path_truncated: e.path_flags & WALK_TRUNCATED != 0
                    || (!anonymous && path.is_empty() && e.path_flags & WALK_SKIPPED == 0),
                addr: e.addr,
                len: e.len,
                offset: e.offset,
                prot: e.prot,
                flags: e.flags,
                fd: e.fd,
                dev: e.dev,
                ino: e.ino,
                duration_ns: e.duration_ns,
            }
        }
        EventKind::PageCache => {
            let e: PageCacheEvent = fixed(bytes)?;
            Event::PageCache { common, dev: e.dev, ino: e.ino, index: e.index, pages: e.pages }
        }
        EventKind::BlockIo => {
            let e: BlockIoEvent = fixed(bytes)?;
            Event::BlockIo {
                common,
                dev: e.dev,
                sector: e.sector,
                bytes: e.bytes,
                latency_ns: e.latency_ns,
                write: e.flags & BLOCK_WRITE != 0,
                error: e.error,
            }
        }
        EventKind::Sched => {
            let e: SchedEvent = fixed(bytes)?;
            Event::Sched { common, times: thread_times(&e.times) }
        }
        EventKind::Loader => {
            let e: LoaderEvent = fixed(bytes)?;
            let phase = match e.phase {
                LOADER_START => LoaderPhase::Start,
                LOADER_DONE => LoaderPhase::Done,
                LOADER_ENTRY => LoaderPhase::Entry,
                _ => return Err(Malformed("unknown loader phase")),
            };
            Event::Loader { common, phase }
        }
        EventKind::CgroupMkdir => {
            let e: CgroupEvent = fixed(bytes)?;
            let [path] = trailing(bytes, size_of::<CgroupEvent>(), [e.path_len.into()])?;
            Event::Cgroup { common, id: e.id, level: e.level, path: path.to_vec(), seeded: false }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(value: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain #[repr(C)] struct.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn header(kind: EventKind) -> EventHeader {
        EventHeader { ts_ns: 10, cgroup_id: 7, pid: 100, tid: 101, kind: kind as u32, _pad: 0 }
    }

    #[test]
    fn decodes_an_open_with_a_relative_directory() {
        let fixed = OpenEvent {
            header: header(EventKind::Open),
            ret: -2,
            duration_ns: 5,
            flags: 0o2000000,
            mode: 0,
            dfd: -100,
            syscall: 2,
            path_len: 3,
            dir_len: 9,
            dir_flags: 0,
            ino: 0,
            dev: 0,
            _pad: 0,
        };
        let mut bytes = bytes_of(&fixed);
        bytes.extend_from_slice(b"lib");
        bytes.extend_from_slice(b"work\0tmp\0");
        let Event::Open { common, path, dir, ret, syscall, .. } = decode(&bytes).unwrap() else { panic!() };
        assert_eq!((common.pid, common.tid, common.cgroup_id), (100, 101, 7));
        assert_eq!(
            (path.as_slice(), dir.as_deref(), ret, syscall),
            (&b"lib"[..], Some(&b"/tmp/work"[..]), -2, OpenSyscall::Openat)
        );
    }

    fn mmap_record(ino: u64, path_flags: u16, path: &[u8]) -> Vec<u8> {
        let fixed = MmapEvent {
            header: header(EventKind::Mmap),
            addr: 0x7f00_0000_0000,
            len: 4096,
            offset: 0,
            prot: 5,
            flags: 2,
            fd: 3,
            path_len: path.len() as u16,
            path_flags,
            ino,
            dev: 8,
            _pad: 0,
            duration_ns: 1000,
        };
        let mut bytes = bytes_of(&fixed);
        bytes.extend_from_slice(path);
        bytes
    }

    #[test]
    fn an_unwalked_mmap_is_named_by_the_record_that_walked_its_file() {
        let mut decoder = Decoder::default();
        let path_of = |event: Event| match event {
            Event::Mmap { path, path_truncated, .. } => (path, path_truncated),
            other => panic!("{other:?}"),
        };
        let walked = decoder.decode(&mmap_record(12, 0, b"libc.so.6\0lib\0usr\0")).unwrap();
        assert_eq!(path_of(walked), (Some(b"/usr/lib/libc.so.6".to_vec()), false));
        let skipped = decoder.decode(&mmap_record(12, WALK_SKIPPED, b"")).unwrap();
        assert_eq!(path_of(skipped), (Some(b"/usr/lib/libc.so.6".to_vec()), false));
        // Another inode: had its record been lost, it stays unnamed.
        let unknown = decoder.decode(&mmap_record(13, WALK_SKIPPED, b"")).unwrap();
        assert_eq!(path_of(unknown), (None, true));
    }

    #[test]
    fn decodes_exec_argv_and_keeps_only_the_loaders_variables() {
        let env = b"HOME=/root\0LD_PRELOAD=/x.so\0TOKEN=secret\0";
        let fixed = ExecEvent {
            header: header(EventKind::Exec),
            old_tid: 101,
            filename_len: 9,
            argv_len: 11,
            flags: EXEC_ENV_TRUNCATED,
            dev: 8,
            ino: 12,
            env_len: env.len() as u16,
            _pad: [0; 3],
        };
        let mut bytes = bytes_of(&fixed);
        bytes.extend_from_slice(b"/bin/echo");
        bytes.extend_from_slice(b"echo\0\0a b\0\0");
        bytes.extend_from_slice(env);
        let Event::Exec { argv, filename, loader_env, env_truncated, .. } = decode(&bytes).unwrap() else {
            panic!()
        };
        assert_eq!(filename, b"/bin/echo");
        assert_eq!(argv, [&b"echo"[..], b"", b"a b", b""]);
        assert_eq!(loader_env, [(b"LD_PRELOAD".to_vec(), b"/x.so".to_vec())]);
        assert!(env_truncated);
    }

    #[test]
    fn refuses_a_string_longer_than_the_record() {
        let fixed =
            ExecFailedEvent { header: header(EventKind::ExecFailed), ret: -2, filename_len: 50, _pad: 0 };
        let mut bytes = bytes_of(&fixed);
        bytes.extend_from_slice(b"short");
        assert_eq!(decode(&bytes), Err(Malformed("string runs past the record")));
        assert_eq!(decode(&bytes[..4]), Err(Malformed("record shorter than its fixed part")));
    }
}
