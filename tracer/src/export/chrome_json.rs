//! `nixtrace export --format chrome-json`: a trace as a timeline for the Perfetto UI or
//! chrome://tracing, in the JSON trace event format. Processes and threads
//! are tracks; each process's life, its execs and the dynamic loader's
//! phases come from the analysis (so a reused pid is the analysis's two
//! processes, on two tracks); opens and mmaps, too many to keep in an
//! analysis, come from a second pass over the events, each on the track of
//! the process the analysis says was that pid at that moment.
//!
//! Viewers need the slices of one track to nest strictly, and the kernel's
//! clocks do not promise that (an exec slice ends at the next exec, an open
//! may start a few ns before the exec that contains it is stamped), so
//! every track is put through [`nest`] before it is written.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::{BufReader, Read},
    path::Path,
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::{
    analysis::{Analysis, Filter, ProcessFigures, analyse},
    trace::{Event, TraceReader, event::text},
};

/// A slice on one thread's track, in trace nanoseconds.
#[derive(Debug, Clone)]
struct Slice {
    start: u64,
    end: u64,
    name: String,
    category: &'static str,
    args: Value,
}

fn basename(path: &str) -> &str {
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path)
}

/// Track ids: viewers give an id one track for the whole trace, so the
/// second process (or thread) with an id gets a fresh one. Pids and tids
/// share one allocator, as they share the kernel's id space: a process's
/// main thread is on its process's track.
#[derive(Debug, Default)]
struct TrackIds {
    used: std::collections::HashSet<u32>,
    next_synthetic: u32,
}

impl TrackIds {
    /// Track ids of reused pids/tids start here: above any real pid
    /// (`PID_MAX_LIMIT` is 2^22).
    const SYNTHETIC: u32 = 1 << 22;

    /// A track for a new life of `id`.
    fn allocate(&mut self, id: u32) -> u32 {
        if self.used.insert(id) {
            return id;
        }
        self.next_synthetic += 1;
        Self::SYNTHETIC + self.next_synthetic
    }
}

/// A process of the analysis, on its track.
struct ProcessTrack {
    track: u32,
    start: u64,
}

/// What the timeline holds.
#[derive(Default)]
struct Timeline {
    ids: TrackIds,
    /// (pid track, tid track) -> its slices.
    slices: BTreeMap<(u32, u32), Vec<Slice>>,
    /// pid track -> (real pid, name).
    processes: BTreeMap<u32, (u32, String)>,
    /// tid track -> (pid track, real tid).
    threads: BTreeMap<u32, (u32, u32)>,
    /// real pid -> its processes, by start.
    lives: HashMap<u32, Vec<ProcessTrack>>,
    /// real tid -> its current thread track.
    current_thread: HashMap<u32, u32>,
}

impl Timeline {
    fn push(&mut self, track: (u32, u32), slice: Slice) {
        self.slices.entry(track).or_default().push(slice);
    }

    /// The life, execs and loader phases of one process of the analysis.
    fn add_process(&mut self, process: &ProcessFigures, trace_start: u64) {
        let track = self.ids.allocate(process.pid);
        let start = process.start_ns;
        let end = process.start_ns.max(trace_start).saturating_add(process.wall_ns);
        let name = process
            .exe
            .as_deref()
            .map_or_else(|| format!("pid {}", process.pid), |e| basename(e).to_string());
        self.processes.insert(track, (process.pid, name));
        self.threads.insert(track, (track, process.pid));
        self.lives.entry(process.pid).or_default().push(ProcessTrack { track, start });
        let life_args = match (process.running, process.exit_code, process.signal) {
            (true, ..) => json!({ "running_at_end": true }),
            (false, code, signal) => json!({ "exit_code": code, "signal": signal }),
        };
        let life = Slice {
            start,
            end,
            name: format!("process {}", process.pid),
            category: "process",
            args: life_args,
        };
        self.push((track, track), life);
        let ends = process.execs.iter().skip(1).map(|e| e.ts_ns).chain([end]);
        for (exec, exec_end) in process.execs.iter().zip(ends) {
            let args = json!({ "filename": exec.filename, "argv": exec.argv });
            let name = format!("exec {}", basename(&exec.filename));
            self.push(
                (track, track),
                Slice { start: exec.ts_ns, end: exec_end, name, category: "exec", args },
            );
            let phases = [
                (exec.loader_start_ns, exec.loader_done_ns, "dynamic loader"),
                (exec.loader_done_ns, exec.entry_ns, "library initialisers"),
            ];
            for (from, to, name) in phases {
                if let (Some(start), Some(end)) = (from, to) {
                    let slice = Slice { start, end, name: name.into(), category: "loader", args: json!({}) };
                    self.push((track, track), slice);
                }
            }
        }
    }

    /// The track of the process that was `pid` at `ts`: the latest one
    /// started by then (the lives of one pid never overlap).
    fn process_track(&self, pid: u32, ts: u64) -> Option<u32> {
        let lives = self.lives.get(&pid)?;
        lives.iter().rev().find(|p| p.start <= ts).or(lives.first()).map(|p| p.track)
    }

    /// The (process, thread) track of an event of `pid`/`tid` at `ts`.
    fn track(&mut self, pid: u32, tid: u32, ts: u64) -> Option<(u32, u32)> {
        let process = self.process_track(pid, ts)?;
        if tid == pid {
            return Some((process, process));
        }
        let thread = match self.current_thread.get(&tid) {
            Some(thread) => *thread,
            None => self.new_thread(process, tid),
        };
        Some((process, thread))
    }

    fn new_thread(&mut self, process: u32, tid: u32) -> u32 {
        let thread = self.ids.allocate(tid);
        self.current_thread.insert(tid, thread);
        self.threads.insert(thread, (process, tid));
        thread
    }

    /// Threads and the slices of opens and mmaps.
    fn add_event(&mut self, event: &Event) {
        match event {
            Event::Fork { common, child_pid, child_tid, .. } if child_pid == &common.pid => {
                if let Some(process) = self.process_track(common.pid, common.ts_ns) {
                    self.new_thread(process, *child_tid);
                }
            }
            Event::Open { common, path, ret, duration_ns, .. } => {
                let Some(track) = self.track(common.pid, common.tid, common.ts_ns) else { return };
                let outcome = if *ret < 0 {
                    json!(
                        nix::errno::Errno::from_raw(i32::try_from(ret.unsigned_abs()).unwrap_or(0))
                            .to_string()
                    )
                } else {
                    json!(ret)
                };
                let path = text(path);
                let name = format!("open {}", basename(&path));
                let args = json!({ "path": path, "result": outcome });
                let start = common.ts_ns.saturating_sub(*duration_ns);
                self.push(track, Slice { start, end: common.ts_ns, name, category: "open", args });
            }
            Event::Mmap { common, path: Some(path), len, duration_ns, .. } => {
                let Some(track) = self.track(common.pid, common.tid, common.ts_ns) else { return };
                let path = text(path);
                let name = format!("mmap {}", basename(&path));
                let args = json!({ "path": path, "len": len });
                let start = common.ts_ns.saturating_sub(*duration_ns);
                self.push(track, Slice { start, end: common.ts_ns, name, category: "mmap", args });
            }
            _ => {}
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
    let open = || -> Result<BufReader<File>> {
        Ok(BufReader::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?))
    };
    chrome_json_from(open, &path.display().to_string())
}

/// The trace that `open` reads (twice: the analysis, then the opens and
/// mmaps) in the JSON trace event format; `name` names it in errors.
pub fn chrome_json_from<R: Read>(open: impl Fn() -> Result<R>, name: &str) -> Result<Value> {
    let analysis = analyse(open()?, name, &Filter::default())?;
    let mut timeline = Timeline::default();
    let trace_start = analysis.header.clock.boottime_ns;
    let mut by_start: Vec<&ProcessFigures> = analysis.processes.iter().collect();
    by_start.sort_by_key(|p| (p.start_ns, p.pid));
    for process in by_start {
        timeline.add_process(process, trace_start);
    }
    let mut reader = TraceReader::new(open()?).with_context(|| name.to_string())?;
    for event in reader.by_ref() {
        timeline.add_event(&event.with_context(|| name.to_string())?);
    }
    Ok(render(&analysis, timeline))
}

fn render(analysis: &Analysis, mut timeline: Timeline) -> Value {
    let header = &analysis.header;
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
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "host": header.host, "kernel": header.kernel_release, "boot_id": header.boot_id,
            "incomplete": analysis.incomplete(),
        },
    })
}

/// The timeline of the trace at `path`, as one line of JSON.
pub fn write(path: &std::path::Path, output: Option<&std::path::Path>) -> Result<()> {
    let value = chrome_json(path)?;
    let text = serde_json::to_string(&value).context("serialising the timeline")? + "\n";
    crate::output::write_or_print(output, text.as_bytes())
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
        let mut ids = TrackIds::default();
        assert_eq!(ids.allocate(7), 7);
        let again = ids.allocate(7);
        assert!(again > TrackIds::SYNTHETIC);
        assert_ne!(ids.allocate(7), again);
        assert_eq!(ids.allocate(8), 8);
    }
}
