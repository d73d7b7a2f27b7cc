//! The ELF facts of every file the traced processes execute or map
//! executable, read while they run, so that the trace carries them: a
//! report made later, or on another machine, describes the file that ran,
//! not whatever is at its path by then. A worker thread reads the files, off
//! the event loop; each file (device, inode) is read once.

use std::{collections::HashSet, fs, os::unix::ffi::OsStrExt as _, path::PathBuf, sync::mpsc, thread};

use anyhow::{Context as _, Result};

use super::{boottime_ns, elf::read_elf_facts};
use crate::trace::{
    ElfFacts, Event,
    event::{Bytes, is_the_file},
};

const PROT_EXEC: u32 = 4;

/// A file to read, as an event named it.
struct Request {
    dev: u32,
    ino: u64,
    path: Bytes,
    /// The process that ran it: its `/proc/PID/exe` names the executable
    /// when the exec's file name was relative.
    pid: u32,
}

pub struct BinaryReader {
    seen: HashSet<(u32, u64)>,
    requests: Option<mpsc::Sender<Request>>,
    results: mpsc::Receiver<Event>,
    worker: Option<thread::JoinHandle<()>>,
}

impl BinaryReader {
    pub fn start() -> Result<BinaryReader> {
        let (requests, inbox) = mpsc::channel::<Request>();
        let (outbox, results) = mpsc::channel();
        let worker = thread::Builder::new()
            .name("nixtrace-elf".into())
            .spawn(move || {
                for request in inbox {
                    if outbox.send(read(&request)).is_err() {
                        break;
                    }
                }
            })
            .context("starting the thread that reads ELF facts")?;
        Ok(BinaryReader { seen: HashSet::new(), requests: Some(requests), results, worker: Some(worker) })
    }

    /// Asks for the facts of the file `event` executes or maps executable,
    /// the first time the trace shows it.
    pub fn observe(&mut self, event: &Event) {
        let (dev, ino, path, pid) = match event {
            Event::Exec { common, filename, dev, ino, .. } => (*dev, *ino, filename, common.pid),
            Event::Mmap { common, path: Some(path), dev, ino, prot, .. } if prot & PROT_EXEC != 0 => {
                (*dev, *ino, path, common.pid)
            }
            _ => return,
        };
        if ino == 0 || !self.seen.insert((dev, ino)) {
            return;
        }
        if let Some(requests) = &self.requests {
            let _ = requests.send(Request { dev, ino, path: path.clone(), pid });
        }
    }

    /// The facts read so far, as `Binary` events.
    pub fn ready(&self) -> Vec<Event> {
        self.results.try_iter().collect()
    }

    /// Waits for the files still being read, and returns their facts.
    pub fn finish(&mut self) -> Vec<Event> {
        drop(self.requests.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        self.ready()
    }
}

/// Where the file of `request` may be: the path the event named when it is
/// absolute, and for a process still running the executable it runs.
fn candidates(request: &Request) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if request.path.starts_with(b"/") {
        paths.push(PathBuf::from(std::ffi::OsStr::from_bytes(&request.path)));
    }
    if let Ok(exe) = fs::read_link(format!("/proc/{}/exe", request.pid)) {
        paths.push(exe);
    }
    paths
}

fn read(request: &Request) -> Event {
    let found = candidates(request).into_iter().find(|path| is_the_file(path, request.dev, request.ino));
    let (path, size_bytes, facts, error) = match found {
        Some(path) => match read_elf_facts(&path) {
            Ok(facts) => {
                let size = fs::metadata(&path).map_or(0, |m| m.len());
                (path.as_os_str().as_bytes().to_vec(), size, facts, None)
            }
            Err(e) => (path.as_os_str().as_bytes().to_vec(), 0, ElfFacts::default(), Some(format!("{e:#}"))),
        },
        None => (
            request.path.clone(),
            0,
            ElfFacts::default(),
            Some("the file was removed or replaced before nixtrace could read it".to_string()),
        ),
    };
    Event::Binary {
        ts_ns: boottime_ns(),
        dev: request.dev,
        ino: request.ino,
        path,
        size_bytes,
        facts: Box::new(facts),
        error: error.map(String::into_bytes),
    }
}
