//! Reads a trace back, block by block, as a stream of [`Event`]s. Memory
//! holds one block and the string table, never the whole trace.

use std::{fmt, io::Read};

use super::{
    event::{Common, ElfFacts, Event, LoaderPhase, OpenSyscall, StatSyscall, Stats, ThreadTimes},
    format::{BLOCK_MAX, HEADER_MAX, Header, MAGIC, STRING_MAX, VERSION, flag, tag, unzigzag},
};

/// Why a trace cannot be read. Events before the problem have already been
/// returned.
#[derive(Debug)]
pub enum TraceError {
    Io(std::io::Error),
    /// The file does not start with the trace magic.
    NotATrace,
    /// Written by a newer nixtrace.
    UnsupportedVersion(u32),
    /// The bytes are not a valid trace at this point.
    Corrupt {
        offset: u64,
        reason: String,
    },
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::Io(e) => write!(f, "{e}"),
            TraceError::NotATrace => write!(f, "not a nixtrace trace (bad magic)"),
            TraceError::UnsupportedVersion(v) => write!(
                f,
                "trace format version {v} is newer than this nixtrace reads (version {VERSION}); upgrade nixtrace"
            ),
            TraceError::Corrupt { offset, reason } => write!(f, "corrupt trace at byte {offset}: {reason}"),
        }
    }
}

impl std::error::Error for TraceError {}

impl From<std::io::Error> for TraceError {
    fn from(e: std::io::Error) -> Self {
        TraceError::Io(e)
    }
}

pub struct TraceReader<R: Read> {
    input: R,
    header: Header,
    strings: Vec<Vec<u8>>,
    block: Vec<u8>,
    pos: usize,
    /// File offset of the current block's payload.
    block_offset: u64,
    next_offset: u64,
    last_ts: u64,
    finished: bool,
    cut_short: Option<String>,
    /// The file's format version: what its records hold.
    version: u32,
}

/// Reads into `buf` until it is full or the input ends; returns bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl<R: Read> TraceReader<R> {
    pub fn new(mut input: R) -> Result<Self, TraceError> {
        let mut prefix = [0u8; 16];
        let n = read_full(&mut input, &mut prefix)?;
        if n < MAGIC.len() || &prefix[..8] != MAGIC {
            return Err(TraceError::NotATrace);
        }
        if n < prefix.len() {
            return Err(TraceError::Corrupt {
                offset: n as u64,
                reason: "file ends inside the header".into(),
            });
        }
        let version = u32::from_le_bytes(prefix[8..12].try_into().unwrap());
        if version > VERSION {
            return Err(TraceError::UnsupportedVersion(version));
        }
        let header_len = u32::from_le_bytes(prefix[12..16].try_into().unwrap()) as usize;
        if header_len > HEADER_MAX {
            return Err(TraceError::Corrupt {
                offset: 12,
                reason: format!("header length {header_len} is implausible"),
            });
        }
        let mut json = vec![0; header_len];
        if read_full(&mut input, &mut json)? < header_len {
            return Err(TraceError::Corrupt { offset: 16, reason: "file ends inside the header".into() });
        }
        let header = serde_json::from_slice(&json)
            .map_err(|e| TraceError::Corrupt { offset: 16, reason: format!("bad header: {e}") })?;
        Ok(TraceReader {
            input,
            header,
            strings: Vec::new(),
            block: Vec::new(),
            pos: 0,
            block_offset: 0,
            next_offset: 16 + header_len as u64,
            last_ts: 0,
            finished: false,
            cut_short: None,
            version,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// After iteration: why the trace is incomplete, if it is (the recorder
    /// was killed, or the disk filled up).
    pub fn cut_short(&self) -> Option<&str> {
        self.cut_short.as_deref()
    }

    fn corrupt(&self, reason: impl Into<String>) -> TraceError {
        TraceError::Corrupt { offset: self.block_offset + self.pos as u64, reason: reason.into() }
    }

    /// Loads the next block; Ok(false) at the end of the input.
    fn next_block(&mut self) -> Result<bool, TraceError> {
        let mut frame = [0u8; 8];
        let n = read_full(&mut self.input, &mut frame)?;
        if n == 0 {
            self.cut_short = Some("it has no end record: the recorder did not stop cleanly".into());
            return Ok(false);
        }
        if n < frame.len() {
            self.cut_short = Some(format!("the last block's frame is incomplete ({n} of 8 bytes)"));
            return Ok(false);
        }
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(frame[4..].try_into().unwrap());
        self.block_offset = self.next_offset + 8;
        if len > BLOCK_MAX {
            self.pos = 0;
            return Err(self.corrupt(format!("block length {len} is implausible")));
        }
        self.block.resize(len, 0);
        let got = read_full(&mut self.input, &mut self.block)?;
        if got < len {
            self.cut_short = Some(format!("the last block is incomplete ({got} of {len} bytes)"));
            return Ok(false);
        }
        self.pos = 0;
        // Fuzzing skips the check, or random inputs would never get past it.
        if !cfg!(fuzzing) && crc32fast::hash(&self.block) != crc {
            return Err(self.corrupt("block checksum mismatch"));
        }
        self.next_offset = self.block_offset + len as u64;
        Ok(true)
    }

    fn byte(&mut self) -> Result<u8, TraceError> {
        let b = *self.block.get(self.pos).ok_or_else(|| self.corrupt("record runs past its block"))?;
        self.pos += 1;
        Ok(b)
    }

    fn get(&mut self) -> Result<u64, TraceError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.corrupt("varint longer than 64 bits"))
    }

    fn get_signed(&mut self) -> Result<i64, TraceError> {
        Ok(unzigzag(self.get()?))
    }

    fn get_u32(&mut self) -> Result<u32, TraceError> {
        let v = self.get()?;
        u32::try_from(v).map_err(|_| self.corrupt(format!("value {v} does not fit 32 bits")))
    }

    /// A thread id stored as its difference from `base`.
    fn get_tid(&mut self, base: u32) -> Result<u32, TraceError> {
        let delta = self.get_signed()?;
        i64::from(base)
            .checked_add(delta)
            .and_then(|tid| u32::try_from(tid).ok())
            .ok_or_else(|| self.corrupt(format!("thread id {base} {delta:+} does not fit 32 bits")))
    }

    fn get_i32(&mut self) -> Result<i32, TraceError> {
        let v = self.get_signed()?;
        i32::try_from(v).map_err(|_| self.corrupt(format!("value {v} does not fit 32 bits")))
    }

    /// The string defined with `id`.
    fn string(&self, id: u64) -> Result<Vec<u8>, TraceError> {
        self.strings
            .get(id as usize)
            .cloned()
            .ok_or_else(|| self.corrupt(format!("string id {id} is not defined")))
    }

    fn get_string(&mut self) -> Result<Vec<u8>, TraceError> {
        let id = self.get()?;
        self.string(id)
    }

    /// 0 for none, else a string id + 1.
    fn get_optional_string(&mut self) -> Result<Option<Vec<u8>>, TraceError> {
        match self.get()? {
            0 => Ok(None),
            id => self.string(id - 1).map(Some),
        }
    }

    /// A count, then that many strings (an argv).
    fn get_argv(&mut self) -> Result<Vec<Vec<u8>>, TraceError> {
        let count = self.get()?;
        // Each id takes at least a byte: a larger count is corruption, and
        // must not make us allocate for it.
        if count > (self.block.len() - self.pos) as u64 {
            return Err(self.corrupt(format!("argv of {count} strings runs past its block")));
        }
        (0..count).map(|_| self.get_string()).collect()
    }

    /// Text the recorder wrote as UTF-8 (ELF facts); anything else is
    /// shown lossily.
    fn get_optional_text(&mut self) -> Result<Option<String>, TraceError> {
        Ok(self.get_optional_string()?.map(|s| String::from_utf8_lossy(&s).into_owned()))
    }

    fn get_texts(&mut self) -> Result<Vec<String>, TraceError> {
        Ok(self.get_argv()?.into_iter().map(|s| String::from_utf8_lossy(&s).into_owned()).collect())
    }

    fn get_ts(&mut self) -> Result<u64, TraceError> {
        let delta = self.get_signed()?;
        self.last_ts = self.last_ts.wrapping_add(delta as u64);
        Ok(self.last_ts)
    }

    fn get_common(&mut self) -> Result<Common, TraceError> {
        let ts_ns = self.get_ts()?;
        let pid = self.get_u32()?;
        let tid = self.get_tid(pid)?;
        let cgroup_id = self.get()?;
        Ok(Common { ts_ns, pid, tid, cgroup_id })
    }

    /// Decodes the next event record in the current block; None at its end.
    fn next_in_block(&mut self) -> Result<Option<Event>, TraceError> {
        while self.pos < self.block.len() {
            let tag = self.byte()?;
            let event = match tag {
                tag::STRING => {
                    let len = self.get()? as usize;
                    if len > STRING_MAX {
                        return Err(self.corrupt(format!(
                            "a string of {len} bytes is implausible (paths and argv are at most {} KiB)",
                            STRING_MAX / 1024
                        )));
                    }
                    let end = self.pos.checked_add(len).filter(|end| *end <= self.block.len());
                    let end = end.ok_or_else(|| self.corrupt("string runs past its block"))?;
                    self.strings.push(self.block[self.pos..end].to_vec());
                    self.pos = end;
                    continue;
                }
                tag::END => {
                    self.finished = true;
                    return Ok(None);
                }
                tag::FORK => {
                    let common = self.get_common()?;
                    let child_pid = self.get_u32()?;
                    let child_tid = self.get_tid(child_pid)?;
                    Event::Fork { common, child_pid, child_tid, clone_flags: self.get()? }
                }
                tag::EXEC => {
                    let common = self.get_common()?;
                    let filename = self.get_string()?;
                    let argv = self.get_argv()?;
                    let old_tid = self.get_tid(common.tid)?;
                    let flags = self.get()?;
                    let (dev, ino) = (self.get_u32()?, self.get()?);
                    // Version 1 recorded none of the environment.
                    let env = if self.version >= 2 { self.get_argv()? } else { Vec::new() };
                    if env.len() % 2 != 0 {
                        return Err(self.corrupt("an exec's loader variables are not name-value pairs"));
                    }
                    let loader_env = env.chunks(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect();
                    Event::Exec {
                        common,
                        old_tid,
                        filename,
                        argv,
                        argv_truncated: flags & flag::ARGV_TRUNCATED != 0,
                        dev,
                        ino,
                        loader_env,
                        env_truncated: flags & flag::ENV_TRUNCATED != 0,
                    }
                }
                tag::EXEC_FAILED => {
                    let common = self.get_common()?;
                    Event::ExecFailed { common, filename: self.get_string()?, ret: self.get_i32()? }
                }
                tag::EXIT => {
                    let common = self.get_common()?;
                    let status = self.get_i32()?;
                    Event::Exit { common, status, group_dead: self.get()? & flag::GROUP_DEAD != 0 }
                }
                tag::OPEN => {
                    let common = self.get_common()?;
                    let syscall = match self.get()? {
                        1 => OpenSyscall::Open,
                        2 => OpenSyscall::Openat,
                        3 => OpenSyscall::Openat2,
                        other => return Err(self.corrupt(format!("unknown open syscall {other}"))),
                    };
                    Event::Open {
                        common,
                        syscall,
                        dfd: self.get_i32()?,
                        path: self.get_string()?,
                        dir: self.get_optional_string()?,
                        dir_truncated: self.get()? & flag::DIR_TRUNCATED != 0,
                        flags: self.get()?,
                        mode: self.get_u32()?,
                        ret: self.get_signed()?,
                        duration_ns: self.get()?,
                        ino: self.get()?,
                        dev: self.get_u32()?,
                    }
                }
                tag::STAT => {
                    let common = self.get_common()?;
                    let number = self.get()?;
                    let Some(syscall) = StatSyscall::from_number(number) else {
                        return Err(self.corrupt(format!("unknown stat syscall {number}")));
                    };
                    Event::Stat {
                        common,
                        syscall,
                        dfd: self.get_i32()?,
                        path: self.get_string()?,
                        dir: self.get_optional_string()?,
                        dir_truncated: self.get()? & flag::DIR_TRUNCATED != 0,
                        flags: self.get_u32()?,
                        mode: self.get_u32()?,
                        ret: self.get_signed()?,
                        duration_ns: self.get()?,
                    }
                }
                tag::MMAP => Event::Mmap {
                    common: self.get_common()?,
                    path: self.get_optional_string()?,
                    path_truncated: self.get()? & flag::PATH_TRUNCATED != 0,
                    addr: self.get()?,
                    len: self.get()?,
                    offset: self.get()?,
                    prot: self.get_u32()?,
                    flags: self.get_u32()?,
                    fd: self.get_i32()?,
                    dev: self.get_u32()?,
                    ino: self.get()?,
                    duration_ns: self.get()?,
                },
                tag::PAGE_CACHE => Event::PageCache {
                    common: self.get_common()?,
                    dev: self.get_u32()?,
                    ino: self.get()?,
                    index: self.get()?,
                    pages: self.get_u32()?,
                },
                tag::BLOCK_IO => Event::BlockIo {
                    common: self.get_common()?,
                    dev: self.get_u32()?,
                    sector: self.get()?,
                    bytes: self.get_u32()?,
                    latency_ns: self.get()?,
                    write: self.get()? & flag::WRITE != 0,
                    error: self.get_i32()?,
                },
                tag::SCHED => Event::Sched {
                    common: self.get_common()?,
                    times: ThreadTimes {
                        on_cpu_ns: self.get()?,
                        runnable_ns: self.get()?,
                        blocked_ns: self.get()?,
                        sleeping_ns: self.get()?,
                    },
                },
                tag::FILE_READ => Event::FileRead {
                    common: self.get_common()?,
                    dev: self.get_u32()?,
                    ino: self.get()?,
                    bytes: self.get()?,
                },
                tag::LOADER => {
                    let common = self.get_common()?;
                    let phase = match self.get()? {
                        1 => LoaderPhase::Start,
                        2 => LoaderPhase::Done,
                        3 => LoaderPhase::Entry,
                        other => return Err(self.corrupt(format!("unknown loader phase {other}"))),
                    };
                    Event::Loader { common, phase }
                }
                tag::CGROUP => Event::Cgroup {
                    common: self.get_common()?,
                    id: self.get()?,
                    level: self.get_u32()?,
                    path: self.get_string()?,
                    seeded: self.get()? & flag::SEEDED != 0,
                },
                tag::PROCESS => Event::Process {
                    ts_ns: self.get_ts()?,
                    pid: self.get_u32()?,
                    ppid: self.get_u32()?,
                    start_ns: self.get()?,
                    cgroup_id: self.get()?,
                    exe: self.get_optional_string()?,
                    argv: self.get_argv()?,
                },
                tag::BINARY => {
                    let ts_ns = self.get_ts()?;
                    let dev = self.get_u32()?;
                    let ino = self.get()?;
                    let path = self.get_string()?;
                    let size_bytes = self.get()?;
                    let flags = self.get()?;
                    let facts = ElfFacts {
                        bind_now: flags & flag::BIND_NOW != 0,
                        is_dynamic: flags & flag::IS_DYNAMIC != 0,
                        build_id: self.get_optional_text()?,
                        interpreter: self.get_optional_text()?,
                        soname: self.get_optional_text()?,
                        needed: self.get_texts()?,
                        runpath: self.get_texts()?,
                        rpath: self.get_texts()?,
                        relocations: self.get()?,
                        dynamic_symbols: self.get()?,
                        entry: self.get()?,
                    };
                    Event::Binary {
                        ts_ns,
                        dev,
                        ino,
                        path,
                        size_bytes,
                        facts: Box::new(facts),
                        error: self.get_optional_string()?,
                    }
                }
                tag::STORE_PATH => Event::StorePath {
                    ts_ns: self.get_ts()?,
                    path: self.get_string()?,
                    deriver: self.get_optional_string()?,
                    references: self.get_argv()?,
                },
                tag::STORE_GRAPH => Event::StoreGraph {
                    ts_ns: self.get_ts()?,
                    complete: self.get()? & flag::COMPLETE != 0,
                    error: self.get_optional_string()?,
                },
                tag::SYSTEMD_ANALYZE => Event::SystemdAnalyze {
                    ts_ns: self.get_ts()?,
                    critical_chain: self.get_optional_string()?,
                    blame: self.get_optional_string()?,
                    unit_times: if self.version >= 5 { self.get_optional_string()? } else { None },
                },
                tag::STATS => {
                    let ts_ns = self.get_ts()?;
                    let events = self.get()?;
                    let count = self.get()?;
                    let mut stats = Stats { ts_ns, events, ..Stats::default() };
                    for _ in 0..count {
                        let name = self.get_string()?;
                        stats.lost.insert(String::from_utf8_lossy(&name).into_owned(), self.get()?);
                    }
                    Event::Stats(stats)
                }
                other => {
                    self.pos -= 1;
                    return Err(self.corrupt(format!("unknown record tag {other:#04x}")));
                }
            };
            return Ok(Some(event));
        }
        Ok(None)
    }
}

impl<R: Read> Iterator for TraceReader<R> {
    type Item = Result<Event, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.finished {
                return None;
            }
            match self.next_in_block() {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) if self.finished => return None,
                Ok(None) => match self.next_block() {
                    Ok(true) => {}
                    Ok(false) => {
                        self.finished = true;
                        return None;
                    }
                    Err(e) => {
                        self.finished = true;
                        return Some(Err(e));
                    }
                },
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
