//! The analysis folded into stacks, one function per kind of
//! flamegraph. A stack is a list of frames and a count; frame names pass
//! through [`frame`] so nothing read from the traced system can break the
//! folded format or the SVG.

use crate::saturating::SaturatingSum as _;
use std::collections::HashMap;

use super::Kind;
use crate::{
    analysis::{Analysis, ProcessFigures},
    model::nix::without_hash,
};

/// One folded stack: frames from the root, and its count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub frames: Vec<String>,
    pub count: u64,
}

/// Stacks in the order a flame chart draws them (depth-first, by start);
/// a flamegraph sorts them itself.
#[derive(Debug, Default)]
pub struct Stacks {
    stacks: Vec<Stack>,
    total: u64,
}

impl Stacks {
    /// Counts come from the trace, and inferno adds them up with plain
    /// arithmetic: each is cut to what keeps the total within a u64.
    fn push(&mut self, frames: &[String], last: impl Into<String>, count: u64) {
        let count = count.min(u64::MAX - self.total);
        if count > 0 {
            let mut frames = frames.to_vec();
            frames.push(frame(&last.into()));
            self.stacks.push(Stack { frames, count });
            self.total += count;
        }
    }

    /// Brendan Gregg's collapsed format: `a;b;c COUNT` per line.
    pub fn folded(&self) -> String {
        self.stacks.iter().map(|s| format!("{} {}\n", s.frames.join(";"), s.count)).collect()
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

/// A frame name that is safe in the folded format and in XML: `;` (the
/// frame separator), `\` and characters XML cannot hold (controls, U+FFFE,
/// U+FFFF) become `\xNN` / `\u{NNNN}` escapes; the rest is kept.
pub fn frame(name: &str) -> String {
    let mut out = escape(name, true);
    // "Copy 2" would end a folded line as if 2 were a second count.
    if let Some((head, tail)) = out.rsplit_once(' ')
        && !tail.is_empty()
        && tail.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        out = format!("{head}\\x20{tail}");
    }
    if out.is_empty() { "(empty)".to_string() } else { out }
}

/// Text that is safe in XML (titles): only what XML cannot hold is escaped.
pub fn xml_text(text: &str) -> String {
    escape(text, false)
}

fn escape(text: &str, folded: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            ';' if folded => out.push_str("\\x3b"),
            '\\' if folded => out.push_str("\\\\"),
            '\u{fffe}' | '\u{ffff}' => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c if c.is_control() && (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn basename(path: &str) -> &str {
    path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path)
}

/// What a process is called in a chain of processes.
fn process_name(row: &ProcessFigures) -> String {
    row.exe.as_deref().map_or_else(|| format!("[pid {}]", row.pid), |exe| basename(exe).to_string())
}

/// The program a process ran, with Nix store hashes elided so the same
/// program compares equal across rebuilds.
fn binary(row: &ProcessFigures) -> String {
    row.exe.as_deref().map_or_else(|| process_name(row), |exe| frame(&without_hash(exe)))
}

/// The processes of an analysis as a forest: parents before children.
struct Tree<'a> {
    rows: &'a [ProcessFigures],
    /// Children of each row, by start.
    children: Vec<Vec<usize>>,
    /// Rows without a parent in the analysis, by start.
    roots: Vec<usize>,
    parent: Vec<Option<usize>>,
}

impl<'a> Tree<'a> {
    fn new(rows: &'a [ProcessFigures]) -> Tree<'a> {
        let index: HashMap<(u32, u64), usize> =
            rows.iter().enumerate().map(|(i, r)| ((r.pid, r.start_ns), i)).collect();
        let parent: Vec<Option<usize>> = rows
            .iter()
            .map(|r| r.parent_start_ns.and_then(|start| index.get(&(r.ppid, start)).copied()))
            .collect();
        let mut children = vec![Vec::new(); rows.len()];
        let mut roots = Vec::new();
        let mut by_start: Vec<usize> = (0..rows.len()).collect();
        by_start.sort_by_key(|i| (rows[*i].start_ns, rows[*i].pid));
        for i in by_start {
            match parent[i] {
                Some(p) => children[p].push(i),
                None => roots.push(i),
            }
        }
        Tree { rows, children, roots, parent }
    }

    /// Frames of the ancestors of `i`, root first, each called `name`,
    /// stopping at the first one in another unit when `same_unit` (units
    /// are roots of their own).
    fn ancestors(&self, i: usize, same_unit: bool, name: fn(&ProcessFigures) -> String) -> Vec<String> {
        let mut names = Vec::new();
        let mut at = self.parent[i];
        while let Some(p) = at {
            if same_unit && self.rows[p].unit != self.rows[i].unit {
                break;
            }
            names.push(name(&self.rows[p]));
            at = self.parent[p];
        }
        names.reverse();
        names
    }

    /// Depth-first order: each process, then its children by start.
    fn depth_first(&self) -> Vec<usize> {
        let mut order = Vec::with_capacity(self.rows.len());
        let mut todo: Vec<usize> = self.roots.iter().rev().copied().collect();
        while let Some(i) = todo.pop() {
            order.push(i);
            todo.extend(self.children[i].iter().rev());
        }
        order
    }
}

pub fn stacks(analysis: &Analysis, kind: Kind) -> Stacks {
    match kind {
        Kind::Startup => startup(analysis),
        Kind::Io => io(analysis),
        Kind::Linker => linker(analysis),
        Kind::Lookups => lookups(analysis),
        Kind::Exec => exec(analysis),
        Kind::Packages => packages(analysis),
    }
}

/// Wall time in µs: unit; process chain; binary; phase. A process's wall
/// time is split into the loader's measured phases and, for the rest, the
/// scheduler's accounting (on CPU, waiting for a CPU, blocked, sleeping) in
/// proportion. Time it sleeps while its children run is left to the
/// children's frames, so concurrent processes add up like CPU samples.
fn startup(analysis: &Analysis) -> Stacks {
    let tree = Tree::new(&analysis.processes);
    // Units in the order their first process started; each one's processes
    // depth-first, so a flame chart reads left to right.
    let mut order = tree.depth_first();
    let mut unit_rank: HashMap<&str, usize> = HashMap::new();
    for i in &order {
        let next = unit_rank.len();
        unit_rank.entry(tree.rows[*i].unit.as_str()).or_insert(next);
    }
    order.sort_by_key(|i| unit_rank[tree.rows[*i].unit.as_str()]);
    let mut stacks = Stacks::default();
    for i in order {
        startup_of(&tree, i, &mut stacks);
    }
    stacks
}

fn startup_of(tree: &Tree, i: usize, stacks: &mut Stacks) {
    let row = &tree.rows[i];
    let mut frames = vec![frame(&row.unit)];
    // Named as the processes' own frames are, so a parent's phases and its
    // children stack on one frame.
    frames.extend(tree.ancestors(i, true, binary));
    frames.push(binary(row));
    for (phase, us) in phases(tree, i) {
        stacks.push(&frames, phase, us);
    }
}

/// Where process `i`'s wall time went, in µs: the loader's measured phases
/// and, for the rest, the scheduler's four states in proportion, less the
/// time it slept while its children in its unit ran (drawn as theirs).
fn phases(tree: &Tree, i: usize) -> Vec<(&'static str, u64)> {
    const US: u64 = 1000;
    let row = &tree.rows[i];
    let mut phases = Vec::new();
    if let Some(l) = &row.loader {
        phases.push(("loader: library search", l.search_ns / US));
        phases.push(("loader: open and map", l.open_ns.saturating_add(l.map_ns) / US));
        phases.push(("loader: relocation and setup", l.rest_ns / US));
        phases.push(("library initialisers", l.init_ns / US));
    }
    let rest = row.wall_ns.saturating_sub(row.loader_and_init_ns());
    let t = &row.time;
    let scheduled =
        [t.on_cpu_ns, t.runnable_ns, t.blocked_ns, t.sleeping_ns].map(u128::from).iter().sum::<u128>();
    if scheduled == 0 {
        phases.push(("no scheduler data", rest / US));
        return phases;
    }
    let share = |ns: u64| (u128::from(rest) * u128::from(ns) / scheduled) as u64;
    let same_unit_children: u64 = tree.children[i]
        .iter()
        .filter(|c| tree.rows[**c].unit == row.unit)
        .map(|c| tree.rows[*c].wall_ns)
        .saturating_sum();
    phases.push(("running on CPU", share(t.on_cpu_ns) / US));
    phases.push(("waiting for a CPU", share(t.runnable_ns) / US));
    phases.push(("blocked (disk I/O)", share(t.blocked_ns) / US));
    phases.push(("sleeping", share(t.sleeping_ns).saturating_sub(same_unit_children) / US));
    phases
}

/// Wall time in µs by package: package; binary; phase. The same phases,
/// and so the same total, as the startup kind, gathered under the Nix
/// package of each process's program.
fn packages(analysis: &Analysis) -> Stacks {
    let tree = Tree::new(&analysis.processes);
    let mut stacks = Stacks::default();
    for i in tree.depth_first() {
        let row = &tree.rows[i];
        let package = row.package.as_ref().map_or_else(|| NOT_IN_STORE.to_string(), |p| p.label());
        let frames = [frame(&package), binary(row)];
        for (phase, us) in phases(&tree, i) {
            stacks.push(&frames, phase, us);
        }
    }
    stacks
}

/// The package frame of what is not in the Nix store.
const NOT_IN_STORE: &str = "(not in the Nix store)";

/// Bytes read from disk: unit; binary; package; file.
fn io(analysis: &Analysis) -> Stacks {
    // Reads are charged per pid: after pid reuse, to one of the processes.
    let by_pid: HashMap<u32, &ProcessFigures> = analysis.processes.iter().map(|p| (p.pid, p)).collect();
    let mut stacks = Stacks::default();
    for file in &analysis.files {
        let package = file.package.as_ref().map_or_else(|| NOT_IN_STORE.to_string(), |p| p.label());
        for read in &file.disk_read_by_reader {
            let Some(row) = by_pid.get(&read.pid) else { continue };
            let frames = [frame(&row.unit), binary(row), frame(&package)];
            stacks.push(&frames, without_hash(&file.display_name()), read.disk_read_bytes);
        }
    }
    stacks
}

/// The dynamic loader's time in ns: binary; library; what it did for it.
fn linker(analysis: &Analysis) -> Stacks {
    let mut stacks = Stacks::default();
    for row in &analysis.processes {
        let Some(l) = &row.loader else { continue };
        let binary = [binary(row)];
        for failed in &l.failed {
            let frames = [binary[0].clone(), frame(&failed.library)];
            stacks.push(&frames, format!("search {}", failed.dir), failed.ns);
        }
        for library in &l.libraries {
            let frames = [binary[0].clone(), frame(basename(&library.path))];
            stacks.push(&frames, "open and map", library.load_ns);
        }
        let libraries_ns = l.libraries.iter().map(|library| library.load_ns).saturating_sum();
        let other = l.open_ns.saturating_add(l.map_ns).saturating_sub(libraries_ns);
        stacks.push(&binary, "other opens and maps (ld.so.cache)", other);
        stacks.push(&binary, "relocation and setup", l.rest_ns);
        stacks.push(&binary, "library initialisers", l.init_ns);
    }
    stacks
}

/// Failed library lookups: binary; library; directory probed.
fn lookups(analysis: &Analysis) -> Stacks {
    let mut stacks = Stacks::default();
    for row in &analysis.processes {
        let Some(l) = &row.loader else { continue };
        for failed in &l.failed {
            let frames = [binary(row), frame(&failed.library)];
            stacks.push(&frames, failed.dir.clone(), failed.count);
        }
    }
    stacks
}

/// Exec counts by the process tree: the chain of programs that led to
/// each exec.
fn exec(analysis: &Analysis) -> Stacks {
    let tree = Tree::new(&analysis.processes);
    let mut stacks = Stacks::default();
    for i in tree.depth_first() {
        let frames = tree.ancestors(i, false, |row| frame(&process_name(row)));
        for exec in &tree.rows[i].execs {
            stacks.push(&frames, basename(&exec.filename), 1);
        }
    }
    stacks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_cut_so_the_total_fits_a_u64() {
        let mut stacks = Stacks::default();
        let root = ["root".to_string()];
        stacks.push(&root, "a", u64::MAX - 5);
        stacks.push(&root, "b", 10);
        stacks.push(&root, "c", 1);
        assert_eq!(stacks.total(), u64::MAX);
        assert_eq!(stacks.folded(), format!("root;a {}\nroot;b 5\n", u64::MAX - 5));
    }

    #[test]
    fn frames_cannot_break_the_folded_format_or_xml() {
        assert_eq!(frame("/usr/bin/python3"), "/usr/bin/python3");
        assert_eq!(frame("a;b"), "a\\x3bb");
        assert_eq!(frame("line\nbreak\t\u{1b}[31m"), "line\\x0abreak\\x09\\x1b[31m");
        assert_eq!(frame("back\\slash"), "back\\\\slash");
        assert_eq!(frame("<&\"'>"), "<&\"'>", "XML escaping is the SVG writer's job");
        assert_eq!(frame("\u{fffe}\u{fffd}"), "\\u{fffe}\u{fffd}");
        assert_eq!(frame(""), "(empty)");
        assert_eq!(frame("Photos 2019"), "Photos\\x202019", "not a second count");
        assert_eq!(frame("a b"), "a b");
    }
}
