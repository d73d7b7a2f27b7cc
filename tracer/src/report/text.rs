//! The report as terminal tables.

use std::fmt::Write as _;

use super::{loader_cells, loader_time, lookup_rows, package_cells};
use crate::{
    analysis::Analysis,
    human::{bytes, count, duration},
    recommend::{Recommendation, text_section},
};

fn bold(s: &str, color: bool) -> String {
    if color { format!("\x1b[1m{s}\x1b[0m") } else { s.to_string() }
}

fn red(s: &str, color: bool) -> String {
    if color { format!("\x1b[31m{s}\x1b[0m") } else { s.to_string() }
}

pub fn render(analysis: &Analysis, recommendations: &[Recommendation], top: usize, color: bool) -> String {
    let mut out = String::new();
    let h = &analysis.header;
    let _ = writeln!(
        out,
        "{} {} (host {}, kernel {}, {} over {}, {} events)",
        bold("nixtrace report:", color),
        analysis.trace,
        h.host,
        h.kernel_release,
        h.command.as_ref().map_or("whole system".to_string(), |c| format!("`{}`", c.join(" "))),
        duration(analysis.duration_ns),
        analysis.events
    );
    if let Some(warning) = analysis.incomplete() {
        let _ = writeln!(out, "{}", red(&warning, color));
    }
    let loader = analysis.loader_summary();
    let _ = writeln!(
        out,
        "{}; dynamic loader: {} in {}, {}",
        count(analysis.processes.len() as u64, "process", "processes"),
        loader_time(&loader),
        count(loader.processes, "process", "processes"),
        count(loader.failed_lookups, "failed library lookup", "failed library lookups")
    );

    let _ = writeln!(out, "\n{}", bold(&format!("Processes (top {top} by wall time)"), color));
    let _ = writeln!(
        out,
        "{:>8}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>6}  {:>4}  {:>10}  {:<24}  EXE",
        "PID", "WALL", "ON CPU", "BLOCKED", "LOADER", "SEARCH", "FAILED", "LIBS", "DISK READ", "UNIT"
    );
    for p in analysis.processes.iter().take(top) {
        let [loader, search, failed, libs] = loader_cells(p).unwrap_or_else(|| ["-"; 4].map(String::from));
        let package = p.package.as_ref().map_or(String::new(), |pkg| format!(" ({})", pkg.label()));
        let _ = writeln!(
            out,
            "{:>8}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>6}  {:>4}  {:>10}  {:<24}  {}{}",
            p.pid,
            duration(p.wall_ns),
            duration(p.time.on_cpu_ns),
            duration(p.time.blocked_ns),
            loader,
            search,
            failed,
            libs,
            bytes(p.io.disk_read_bytes),
            p.unit,
            p.exe.as_deref().unwrap_or("?"),
            package
        );
    }

    let _ = writeln!(out, "\n{}", bold("Units (by loader time)", color));
    let _ = writeln!(
        out,
        "{:<40}  {:>6}  {:>6}  {:>10}  {:>6}  {:>10}",
        "UNIT", "PROCS", "EXECS", "LOADER", "FAILED", "DISK READ"
    );
    for u in analysis.units.iter().take(top) {
        let _ = writeln!(
            out,
            "{:<40}  {:>6}  {:>6}  {:>10}  {:>6}  {:>10}",
            u.name,
            u.processes,
            u.execs,
            duration(u.loader_ns),
            u.failed_lookups,
            bytes(u.io.disk_read_bytes)
        );
    }
    if !analysis.packages.is_empty() {
        let _ = writeln!(out, "\n{}", bold("Nix packages (by loader time)", color));
        let row = |c: &[String; 8]| {
            format!(
                "{:<32}  {:>6}  {:>6}  {:>10}  {:>6}  {:>6}  {:>10}  {:>10}",
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
            )
        };
        let titles = ["PACKAGE", "PROCS", "EXECS", "LOADER", "FAILED", "CAUSED", "DISK READ", "MAPPED"];
        let _ = writeln!(out, "{}", row(&titles.map(String::from)));
        for p in analysis.packages.iter().take(top) {
            let _ = writeln!(out, "{}", row(&package_cells(p)));
        }
    }
    if !analysis.files.is_empty() {
        let _ = writeln!(out, "\n{}", bold("Files read from disk (by bytes)", color));
        let _ = writeln!(out, "{:>10}  FILE", "DISK READ");
        for f in analysis.files.iter().take(top) {
            let _ = writeln!(out, "{:>10}  {}", bytes(f.disk_read_bytes), f.display_name());
        }
    }
    let lookups = lookup_rows(analysis, top);
    if !lookups.is_empty() {
        let _ = writeln!(out, "\n{}", bold("Path lookups outside the loader (by failed lookups)", color));
        let row = |c: &[String; 6]| {
            format!("{:>8}  {:>7}  {:>6}  {:>10}  {:<40}  {}", c[0], c[1], c[2], c[3], c[4], c[5])
        };
        let titles = ["PID", "LOOKUPS", "FAILED", "IN FAILED", "MOST FAILED IN", "EXEC"];
        let _ = writeln!(out, "{}", row(&titles.map(String::from)));
        for cells in &lookups {
            let _ = writeln!(out, "{}", row(cells));
        }
    }
    if !recommendations.is_empty() {
        let _ = write!(
            out,
            "\n{}\n{}",
            bold("Recommendations (nixtrace recommend for more)", color),
            text_section(recommendations)
        );
    }
    out
}
