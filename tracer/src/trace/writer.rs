//! Streams events into a trace file, one checksummed block at a time.

use std::{collections::HashMap, io::Write};

use super::{
    event::{Common, Event, Stats},
    format::{BLOCK_TARGET, Header, MAGIC, VERSION, flag, tag, zigzag},
};

pub struct TraceWriter<W: Write> {
    out: W,
    block: Vec<u8>,
    strings: HashMap<Vec<u8>, u64>,
    last_ts: u64,
    events: u64,
}

impl<W: Write> TraceWriter<W> {
    /// Writes the file header; events follow with [`TraceWriter::write`].
    pub fn new(mut out: W, header: &Header) -> std::io::Result<Self> {
        let json = serde_json::to_vec(header)?;
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)?;
        out.flush()?;
        Ok(TraceWriter {
            out,
            block: Vec::with_capacity(BLOCK_TARGET * 2),
            strings: HashMap::new(),
            last_ts: 0,
            events: 0,
        })
    }

    /// Events written so far (not counting stats records).
    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn write(&mut self, event: &Event) -> std::io::Result<()> {
        self.encode(event);
        if !matches!(event, Event::Stats(_)) {
            self.events += 1;
        }
        if self.block.len() >= BLOCK_TARGET {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Writes the pending block, if any, and flushes the output: everything
    /// written so far survives a crash from here on.
    pub fn flush_block(&mut self) -> std::io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let crc = crc32fast::hash(&self.block);
        let mut framed = Vec::with_capacity(self.block.len() + 8);
        framed.extend_from_slice(&(self.block.len() as u32).to_le_bytes());
        framed.extend_from_slice(&crc.to_le_bytes());
        framed.extend_from_slice(&self.block);
        // One write per block, so a torn file ends inside at most one block.
        self.out.write_all(&framed)?;
        self.out.flush()?;
        self.block.clear();
        Ok(())
    }

    /// Writes the final counters and the end marker, and returns the output.
    pub fn finish(mut self, stats: &Stats) -> std::io::Result<W> {
        self.encode(&Event::Stats(stats.clone()));
        self.block.push(tag::END);
        self.flush_block()?;
        Ok(self.out)
    }

    fn put(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.block.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.block.push(v as u8);
    }

    fn put_signed(&mut self, v: i64) {
        self.put(zigzag(v));
    }

    /// The id of `s`, defining it first if it is new.
    fn string(&mut self, s: &[u8]) -> u64 {
        if let Some(id) = self.strings.get(s) {
            return *id;
        }
        let id = self.strings.len() as u64;
        self.block.push(tag::STRING);
        self.put(s.len() as u64);
        self.block.extend_from_slice(s);
        self.strings.insert(s.to_vec(), id);
        id
    }

    /// The ids of a list of strings (an argv), defining the new ones.
    fn strings_of<S: AsRef<[u8]>>(&mut self, list: &[S]) -> Vec<u64> {
        list.iter().map(|s| self.string(s.as_ref())).collect()
    }

    /// 0 for none, else the string's id + 1.
    fn optional_string(&mut self, s: Option<&[u8]>) -> u64 {
        s.map_or(0, |s| self.string(s) + 1)
    }

    /// A count, then that many string ids.
    fn put_ids(&mut self, ids: &[u64]) {
        self.put(ids.len() as u64);
        for id in ids {
            self.put(*id);
        }
    }

    fn put_ts(&mut self, ts: u64) {
        self.put_signed(ts.wrapping_sub(self.last_ts) as i64);
        self.last_ts = ts;
    }

    fn put_common(&mut self, tag: u8, c: &Common) {
        self.block.push(tag);
        self.put_ts(c.ts_ns);
        self.put(c.pid as u64);
        self.put_signed(c.tid as i64 - c.pid as i64);
        self.put(c.cgroup_id);
    }

    fn encode(&mut self, event: &Event) {
        // Strings are defined before the record that uses them starts.
        match event {
            Event::Fork { common, child_pid, child_tid, clone_flags } => {
                self.put_common(tag::FORK, common);
                self.put(*child_pid as u64);
                self.put_signed(*child_tid as i64 - *child_pid as i64);
                self.put(*clone_flags);
            }
            Event::Exec {
                common,
                old_tid,
                filename,
                argv,
                argv_truncated,
                dev,
                ino,
                loader_env,
                env_truncated,
            } => {
                let filename = self.string(filename);
                let argv = self.strings_of(argv);
                let env: Vec<u64> =
                    loader_env.iter().flat_map(|(n, v)| [self.string(n), self.string(v)]).collect();
                self.put_common(tag::EXEC, common);
                self.put(filename);
                self.put_ids(&argv);
                self.put_signed(*old_tid as i64 - common.tid as i64);
                let truncated = if *env_truncated { flag::ENV_TRUNCATED } else { 0 };
                self.put(truncated | if *argv_truncated { flag::ARGV_TRUNCATED } else { 0 });
                self.put(*dev as u64);
                self.put(*ino);
                self.put_ids(&env);
            }
            Event::ExecFailed { common, filename, ret } => {
                let filename = self.string(filename);
                self.put_common(tag::EXEC_FAILED, common);
                self.put(filename);
                self.put_signed(*ret as i64);
            }
            Event::Exit { common, status, group_dead } => {
                self.put_common(tag::EXIT, common);
                self.put_signed(*status as i64);
                self.put(if *group_dead { flag::GROUP_DEAD } else { 0 });
            }
            Event::Open {
                common,
                syscall,
                dfd,
                path,
                dir,
                dir_truncated,
                flags,
                mode,
                ret,
                duration_ns,
                ino,
                dev,
            } => {
                let path = self.string(path);
                let dir = self.optional_string(dir.as_deref());
                self.put_common(tag::OPEN, common);
                self.put(*syscall as u64);
                self.put_signed(*dfd as i64);
                self.put(path);
                self.put(dir);
                self.put(if *dir_truncated { flag::DIR_TRUNCATED } else { 0 });
                self.put(*flags);
                self.put(*mode as u64);
                self.put_signed(*ret);
                self.put(*duration_ns);
                self.put(*ino);
                self.put(*dev as u64);
            }
            Event::Stat { common, syscall, dfd, path, dir, dir_truncated, flags, mode, ret, duration_ns } => {
                let path = self.string(path);
                let dir = self.optional_string(dir.as_deref());
                self.put_common(tag::STAT, common);
                self.put(*syscall as u64);
                self.put_signed(*dfd as i64);
                self.put(path);
                self.put(dir);
                self.put(if *dir_truncated { flag::DIR_TRUNCATED } else { 0 });
                self.put(*flags as u64);
                self.put(*mode as u64);
                self.put_signed(*ret);
                self.put(*duration_ns);
            }
            Event::PageCache { common, dev, ino, index, pages } => {
                self.put_common(tag::PAGE_CACHE, common);
                self.put(*dev as u64);
                self.put(*ino);
                self.put(*index);
                self.put(*pages as u64);
            }
            Event::BlockIo { common, dev, sector, bytes, latency_ns, write, error } => {
                self.put_common(tag::BLOCK_IO, common);
                self.put(*dev as u64);
                self.put(*sector);
                self.put(*bytes as u64);
                self.put(*latency_ns);
                self.put(if *write { flag::WRITE } else { 0 });
                self.put_signed(*error as i64);
            }
            Event::Mmap {
                common,
                path,
                path_truncated,
                addr,
                len,
                offset,
                prot,
                flags,
                fd,
                dev,
                ino,
                duration_ns,
            } => {
                let path = self.optional_string(path.as_deref());
                self.put_common(tag::MMAP, common);
                self.put(path);
                self.put(if *path_truncated { flag::PATH_TRUNCATED } else { 0 });
                self.put(*addr);
                self.put(*len);
                self.put(*offset);
                self.put(*prot as u64);
                self.put(*flags as u64);
                self.put_signed(*fd as i64);
                self.put(*dev as u64);
                self.put(*ino);
                self.put(*duration_ns);
            }
            Event::Sched { common, times } => {
                self.put_common(tag::SCHED, common);
                self.put(times.on_cpu_ns);
                self.put(times.runnable_ns);
                self.put(times.blocked_ns);
                self.put(times.sleeping_ns);
            }
            Event::FileRead { common, dev, ino, bytes } => {
                self.put_common(tag::FILE_READ, common);
                self.put(*dev as u64);
                self.put(*ino);
                self.put(*bytes);
            }
            Event::Loader { common, phase } => {
                self.put_common(tag::LOADER, common);
                self.put(*phase as u64);
            }
            Event::Cgroup { common, id, level, path, seeded } => {
                let path = self.string(path);
                self.put_common(tag::CGROUP, common);
                self.put(*id);
                self.put(*level as u64);
                self.put(path);
                self.put(if *seeded { flag::SEEDED } else { 0 });
            }
            Event::Process { ts_ns, pid, ppid, start_ns, cgroup_id, exe, argv } => {
                let exe = self.optional_string(exe.as_deref());
                let argv = self.strings_of(argv);
                self.block.push(tag::PROCESS);
                self.put_ts(*ts_ns);
                self.put(*pid as u64);
                self.put(*ppid as u64);
                self.put(*start_ns);
                self.put(*cgroup_id);
                self.put(exe);
                self.put_ids(&argv);
            }
            Event::Binary { ts_ns, dev, ino, path, size_bytes, facts, error } => {
                let path = self.string(path);
                let build_id = self.optional_string(facts.build_id.as_deref().map(str::as_bytes));
                let interpreter = self.optional_string(facts.interpreter.as_deref().map(str::as_bytes));
                let soname = self.optional_string(facts.soname.as_deref().map(str::as_bytes));
                let needed = self.strings_of(&facts.needed);
                let runpath = self.strings_of(&facts.runpath);
                let rpath = self.strings_of(&facts.rpath);
                let error = self.optional_string(error.as_deref());
                self.block.push(tag::BINARY);
                self.put_ts(*ts_ns);
                self.put(*dev as u64);
                self.put(*ino);
                self.put(path);
                self.put(*size_bytes);
                let bind_now = if facts.bind_now { flag::BIND_NOW } else { 0 };
                self.put(bind_now | if facts.is_dynamic { flag::IS_DYNAMIC } else { 0 });
                self.put(build_id);
                self.put(interpreter);
                self.put(soname);
                self.put_ids(&needed);
                self.put_ids(&runpath);
                self.put_ids(&rpath);
                self.put(facts.relocations);
                self.put(facts.dynamic_symbols);
                self.put(facts.entry);
                self.put(error);
            }
            Event::StorePath { ts_ns, path, deriver, references } => {
                let path = self.string(path);
                let deriver = self.optional_string(deriver.as_deref());
                let references = self.strings_of(references);
                self.block.push(tag::STORE_PATH);
                self.put_ts(*ts_ns);
                self.put(path);
                self.put(deriver);
                self.put_ids(&references);
            }
            Event::StoreGraph { ts_ns, complete, error } => {
                let error = self.optional_string(error.as_deref());
                self.block.push(tag::STORE_GRAPH);
                self.put_ts(*ts_ns);
                self.put(if *complete { flag::COMPLETE } else { 0 });
                self.put(error);
            }
            Event::SystemdAnalyze { ts_ns, critical_chain, blame, unit_times } => {
                let critical_chain = self.optional_string(critical_chain.as_deref());
                let blame = self.optional_string(blame.as_deref());
                let unit_times = self.optional_string(unit_times.as_deref());
                self.block.push(tag::SYSTEMD_ANALYZE);
                self.put_ts(*ts_ns);
                self.put(critical_chain);
                self.put(blame);
                self.put(unit_times);
            }
            Event::Stats(stats) => {
                let names: Vec<u64> = stats.lost.keys().map(|k| self.string(k.as_bytes())).collect();
                self.block.push(tag::STATS);
                self.put_ts(stats.ts_ns);
                self.put(stats.events);
                self.put(names.len() as u64);
                for (id, count) in names.into_iter().zip(stats.lost.values()) {
                    self.put(id);
                    self.put(*count);
                }
            }
        }
    }
}
