//! `nixtrace export`: a trace as a timeline for the Perfetto UI or
//! chrome://tracing, in the JSON trace event format. Processes and threads
//! are tracks; each process's life, its execs, the dynamic loader's phases,
//! opens and mmaps are slices on its threads.
//!
//! Viewers need the slices of one track to nest strictly, and the kernel's
//! clocks do not promise that (an exec slice ends at the next exec, an open
//! may start a few ns before the exec that contains it is stamped), so
//! every track is put through [`nest`] before it is written.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::BufReader,
    path::Path,
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::trace::{Event, LoaderPhase, TraceReader, event::text};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The JSON trace event format: opens in ui.perfetto.dev and chrome://tracing.
    ChromeJson,
}

/// A slice on one thread's track, in trace nanoseconds.
#[derive(Debug, Clone)]
struct Slice {
    start: u64,
    end: u64,
    name: String,
    category: &'static str,
    args: Value,
}

/// Viewers give a pid or tid one track for the whole trace; a reused id
/// gets a fresh track id so two processes (or threads) never share one.
/// Pids and tids share one allocator, as they share the kernel's id space:
/// a process's main thread is on its process's track.
#[derive(Debug, Default)]
struct Ids {
    /// Real id -> track id of its current incarnation.
    current: HashMap<u32, u32>,
    next_synthetic: u32,
}

impl Ids {
    /// Track ids of reused pids/tids start here: above any real pid
    /// (`PID_MAX_LIMIT` is 2^22).
    const SYNTHETIC: u32 = 1 << 22;

    fn get(&mut self, id: u32) -> u32 {
        *self.current.entry(id).or_insert(id)
    }

    /// `id` starts a new life: a new track if it had one already.
    fn renew(&mut self, id: u32) -> u32 {
        let track = match self.current.get(&id) {
            Some(_) => {
                self.next_synthetic += 1;
                Self::SYNTHETIC + self.next_synthetic
            }
            None => id,
        };
        self.current.insert(id, track);
        track
    }
}

fn basename(path: &[u8]) -> String {
    text(path.rsplit(|b| *b == b'/').find(|s| !s.is_empty()).unwrap_or(path))
}

/// What one pass over the events collects.
#[derive(Default)]
struct Timeline {
    ids: Ids,
    /// (pid track, tid track) -> its slices.
    slices: BTreeMap<(u32, u32), Vec<Slice>>,
    /// pid track -> (real pid, name).
    processes: BTreeMap<u32, (u32, String)>,
    /// tid track -> (pid track, real tid).
    threads: BTreeMap<u32, (u32, u32)>,
    /// pid track -> when the process started, while it lives.
    lives: HashMap<u32, u64>,
    /// pid track -> its current exec's slice, still open.
    execs: HashMap<u32, Slice>,
    /// pid track -> the loader's start, and when it was done.
    loaders: HashMap<u32, (u64, Option<u64>)>,
    last_ts: u64,
}

impl Timeline {
    fn track(&mut self, pid: u32, tid: u32) -> (u32, u32) {
        let p = self.ids.get(pid);
        let t = self.ids.get(tid);
        self.threads.entry(t).or_insert((p, tid));
        self.processes.entry(p).or_insert_with(|| (pid, format!("pid {pid}")));
        (p, t)
    }

    fn push(&mut self, track: (u32, u32), slice: Slice) {
        self.slices.entry(track).or_default().push(slice);
    }

    fn end_exec(&mut self, p: u32, ts: u64) {
        if let Some(mut exec) = self.execs.remove(&p) {
            exec.end = ts;
            self.push((p, p), exec);
        }
    }

    fn end_life(&mut self, p: u32, pid: u32, ts: u64, args: Value) {
        self.end_exec(p, ts);
        if let Some(start) = self.lives.remove(&p) {
            self.push(
                (p, p),
                Slice { start, end: ts, name: format!("process {pid}"), category: "process", args },
            );
        }
    }

    fn add(&mut self, event: &Event) {
        let ts = event.ts_ns();
        self.last_ts = self.last_ts.max(ts);
        match event {
            Event::Fork { common, child_pid, child_tid, .. } if child_pid == &common.pid => {
                let p = self.ids.get(*child_pid);
                let t = self.ids.renew(*child_tid);
                self.threads.insert(t, (p, *child_tid));
            }
            Event::Fork { common, child_pid, .. } => {
                let parent_name = self.processes.get(&self.ids.get(common.pid)).map(|(_, n)| n.clone());
                let p = self.ids.renew(*child_pid);
                self.threads.insert(p, (p, *child_pid));
                self.processes.insert(p, (*child_pid, parent_name.unwrap_or_else(|| "?".into())));
                self.lives.insert(p, common.ts_ns);
            }
            Event::Process { pid, start_ns, exe, .. } => {
                let (p, _) = self.track(*pid, *pid);
                let name = exe.as_deref().map_or_else(|| format!("pid {pid}"), basename);
                self.processes.insert(p, (*pid, name));
                self.lives.insert(p, *start_ns);
            }
            Event::Exec { common, filename, argv, .. } => {
                let (p, _) = self.track(common.pid, common.pid);
                self.end_exec(p, ts);
                let name = basename(filename);
                self.processes.insert(p, (common.pid, name.clone()));
                let args = json!({ "filename": text(filename), "argv": argv.iter().map(|a| text(a)).collect::<Vec<_>>() });
                self.execs.insert(
                    p,
                    Slice { start: ts, end: ts, name: format!("exec {name}"), category: "exec", args },
                );
                self.lives.entry(p).or_insert(ts);
            }
            Event::Exit { common, status, group_dead } => {
                let (p, _) = self.track(common.pid, common.tid);
                if *group_dead {
                    self.end_life(p, common.pid, ts, json!({ "wait_status": status }));
                }
            }
            Event::Loader { common, phase } => {
                let track = self.track(common.pid, common.tid);
                let slice = match (phase, self.loaders.get(&track.0).copied()) {
                    (LoaderPhase::Start, _) => {
                        self.loaders.insert(track.0, (ts, None));
                        None
                    }
                    (LoaderPhase::Done, Some((start, None))) => {
                        self.loaders.insert(track.0, (start, Some(ts)));
                        Some((start, "dynamic loader"))
                    }
                    (LoaderPhase::Entry, Some((_, Some(done)))) => {
                        self.loaders.remove(&track.0);
                        Some((done, "library initialisers"))
                    }
                    _ => None,
                };
                if let Some((start, name)) = slice {
                    let slice =
                        Slice { start, end: ts, name: name.into(), category: "loader", args: json!({}) };
                    self.push(track, slice);
                }
            }
            Event::Open { common, path, ret, duration_ns, .. } => {
                let track = self.track(common.pid, common.tid);
                let outcome = if *ret < 0 {
                    json!(
                        nix::errno::Errno::from_raw(i32::try_from(ret.unsigned_abs()).unwrap_or(0))
                            .to_string()
                    )
                } else {
                    json!(ret)
                };
                let name = format!("open {}", basename(path));
                let args = json!({ "path": text(path), "result": outcome });
                self.push(
                    track,
                    Slice { start: ts.saturating_sub(*duration_ns), end: ts, name, category: "open", args },
                );
            }
            Event::Mmap { common, path: Some(path), len, duration_ns, .. } => {
                let track = self.track(common.pid, common.tid);
                let name = format!("mmap {}", basename(path));
                let args = json!({ "path": text(path), "len": len });
                self.push(
                    track,
                    Slice { start: ts.saturating_sub(*duration_ns), end: ts, name, category: "mmap", args },
                );
            }
            _ => {}
        }
    }

    /// Closes what the trace left open at its end.
    fn finish(&mut self) {
        let end = self.last_ts;
        let open: Vec<u32> = self.lives.keys().chain(self.execs.keys()).copied().collect();
        for p in open {
            let pid = self.processes.get(&p).map_or(p, |(pid, _)| *pid);
            self.end_life(p, pid, end, json!({ "running_at_end": true }));
        }
    }
}

/// How structural a slice is: a process holds execs, an exec holds the
/// loader, and opens and mmaps are leaves.
fn rank(category: &str) -> u8 {
    match category {
        "process" => 0,
        "exec" => 1,
        "loader" => 2,
        _ => 3,
    }
}

/// Makes one track's slices nest strictly. Sorted by start (the more
/// structural first on ties), a slice that overlaps the end of the one
/// containing its start is clipped, unless it is the more structural of
/// the two: then the other is cut short where it begins (an open stamped a
/// few ns before its exec must not swallow the exec).
fn nest(slices: &mut [Slice]) {
    slices.sort_by(|a, b| {
        a.start.cmp(&b.start).then(rank(a.category).cmp(&rank(b.category))).then(b.end.cmp(&a.end))
    });
    let mut open: Vec<usize> = Vec::new();
    for i in 0..slices.len() {
        slices[i].end = slices[i].end.max(slices[i].start);
        while let Some(&top) = open.last() {
            if slices[top].end <= slices[i].start {
                open.pop();
            } else if slices[i].end > slices[top].end && rank(slices[i].category) < rank(slices[top].category)
            {
                slices[top].end = slices[i].start;
                open.pop();
            } else {
                break;
            }
        }
        if let Some(&top) = open.last() {
            slices[i].end = slices[i].end.min(slices[top].end);
        }
        open.push(i);
    }
}

fn micros(ns: u64, origin: u64) -> f64 {
    ns.saturating_sub(origin) as f64 / 1000.0
}

/// The trace at `path` in the JSON trace event format.
pub fn chrome_json(path: &Path) -> Result<Value> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    chrome_json_from(BufReader::new(file), &path.display().to_string())
}

/// The trace `input` holds in the JSON trace event format; `name` names it
/// in errors.
pub fn chrome_json_from(input: impl std::io::Read, name: &str) -> Result<Value> {
    let mut reader = TraceReader::new(input).with_context(|| name.to_string())?;
    let mut timeline = Timeline::default();
    for event in reader.by_ref() {
        timeline.add(&event.with_context(|| name.to_string())?);
    }
    timeline.finish();
    let header = reader.header();
    let origin = header.clock.boottime_ns;
    let mut events = Vec::new();
    for (p, (pid, name)) in &timeline.processes {
        events.push(json!({ "ph": "M", "name": "process_name", "pid": p, "tid": p, "args": { "name": format!("{name} [{pid}]") } }));
    }
    for (t, (p, tid)) in &timeline.threads {
        events.push(json!({ "ph": "M", "name": "thread_name", "pid": p, "tid": t, "args": { "name": format!("thread {tid}") } }));
    }
    for ((p, t), slices) in &mut timeline.slices {
        nest(slices);
        for s in slices.iter() {
            events.push(json!({
                "ph": "X", "pid": p, "tid": t, "name": s.name, "cat": s.category,
                "ts": micros(s.start, origin), "dur": micros(s.end, s.start.max(origin)), "args": s.args,
            }));
        }
    }
    Ok(json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "host": header.host, "kernel": header.kernel_release, "boot_id": header.boot_id,
            "incomplete": reader.cut_short(),
        },
    }))
}

/// `nixtrace export`.
pub fn run(args: &crate::cli::ExportArgs) -> Result<()> {
    let Format::ChromeJson = args.format;
    let value = chrome_json(&args.file)?;
    let text = serde_json::to_string(&value).context("serialising the timeline")? + "\n";
    crate::output::write_or_print(args.output.as_deref(), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(start: u64, end: u64) -> Slice {
        Slice { start, end, name: String::new(), category: "open", args: Value::Null }
    }

    #[test]
    fn slices_nest_strictly() {
        // An exec that ends after its process, an open that straddles the
        // end of the exec, and siblings.
        let mut slices = vec![slice(0, 100), slice(10, 120), slice(50, 110), slice(130, 140), slice(60, 70)];
        nest(&mut slices);
        let spans: Vec<(u64, u64)> = slices.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(spans, [(0, 100), (10, 100), (50, 100), (60, 70), (130, 140)]);
    }

    #[test]
    fn an_open_stamped_before_its_exec_does_not_swallow_it() {
        let exec = Slice { category: "exec", ..slice(100, 1000) };
        let mut slices = vec![slice(90, 110), exec, slice(200, 300)];
        nest(&mut slices);
        let spans: Vec<(u64, u64, &str)> = slices.iter().map(|s| (s.start, s.end, s.category)).collect();
        assert_eq!(spans, [(90, 100, "open"), (100, 1000, "exec"), (200, 300, "open")]);
    }

    #[test]
    fn reused_ids_get_new_tracks() {
        let mut ids = Ids::default();
        assert_eq!(ids.renew(7), 7);
        assert_eq!(ids.get(7), 7);
        let again = ids.renew(7);
        assert!(again > Ids::SYNTHETIC);
        assert_eq!(ids.get(7), again);
    }
}
