//! The report as GitHub-flavoured Markdown for a pull request: the summary
//! first, the tables folded away.

use std::fmt::Write as _;

use super::{loader_cells, loader_time, lookup_rows, package_cells};
use crate::{
    analysis::{
        Analysis,
        boot::{BootSection, BootUnit},
    },
    human::{bytes, count, duration, markdown_escape as escape},
    recommend::{Recommendation, markdown_section},
};

pub fn render(analysis: &Analysis, recommendations: &[Recommendation], top: usize) -> String {
    let mut out = String::new();
    let h = &analysis.header;
    let subject = h.command.as_ref().map_or("the whole system".to_string(), |c| escape(&c.join(" ")));
    let _ = writeln!(out, "### nixtrace: {subject}\n");
    if let Some(warning) = analysis.incomplete() {
        let _ = writeln!(out, "> **{}**\n", escape(&warning));
    }
    let loader = analysis.loader_summary();
    let _ = writeln!(
        out,
        "{} over {}; dynamic loader {} in {} of them, {}. Host `{}`, kernel `{}`.\n",
        count(analysis.processes.len() as u64, "process", "processes"),
        duration(analysis.duration_ns),
        loader_time(&loader),
        loader.processes,
        count(loader.failed_lookups, "failed library lookup", "failed library lookups"),
        escape(&h.host),
        escape(&h.kernel_release),
    );

    if !recommendations.is_empty() {
        let _ = writeln!(out, "**Recommendations**\n\n{}", markdown_section(recommendations));
    }
    if let Some(boot) = &analysis.boot {
        render_boot(&mut out, boot);
    }
    let _ = writeln!(out, "<details><summary>Processes (top {top} by wall time)</summary>\n");
    let _ = writeln!(
        out,
        "| pid | wall | on CPU | blocked | loader | search | failed lookups | libraries | disk read | unit | executable |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for p in analysis.processes.iter().take(top) {
        let [loader, search, failed, libs] = loader_cells(p).unwrap_or_else(|| [""; 4].map(String::from));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {loader} | {search} | {failed} | {libs} | {} | {} | {} |",
            p.pid,
            duration(p.wall_ns),
            duration(p.time.on_cpu_ns),
            duration(p.time.blocked_ns),
            bytes(p.io.disk_read_bytes),
            escape(&p.unit),
            escape(p.exe.as_deref().unwrap_or("?"))
        );
    }
    let _ = writeln!(out, "\n</details>\n");

    let _ = writeln!(out, "<details><summary>Units</summary>\n");
    let _ = writeln!(out, "| unit | processes | execs | loader | failed lookups | disk read |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for u in analysis.units.iter().take(top) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            escape(&u.name),
            u.processes,
            u.execs,
            duration(u.loader_ns),
            u.failed_lookups,
            bytes(u.io.disk_read_bytes)
        );
    }
    let _ = writeln!(out, "\n</details>");
    if !analysis.packages.is_empty() {
        let _ = writeln!(out, "\n<details><summary>Nix packages</summary>\n");
        let _ = writeln!(
            out,
            "| package | processes | execs | loader | failed lookups | lookups caused | disk read | mapped |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for p in analysis.packages.iter().take(top) {
            let [label, rest @ ..] = package_cells(p);
            let _ = writeln!(out, "| {} | {} |", escape(&label), rest.join(" | "));
        }
        let _ = writeln!(out, "\n</details>");
    }
    let lookups = lookup_rows(analysis, top);
    if !lookups.is_empty() {
        let _ = writeln!(out, "\n<details><summary>Path lookups outside the loader</summary>\n");
        let _ = writeln!(out, "| pid | lookups | failed | in failed | most failed in | exec |");
        let _ = writeln!(out, "|---:|---:|---:|---:|---|---|");
        for cells in lookups {
            let _ = writeln!(out, "| {} |", cells.map(|c| escape(&c)).join(" | "));
        }
        let _ = writeln!(out, "\n</details>");
    }
    if !analysis.files.is_empty() {
        let _ = writeln!(out, "\n<details><summary>Files read from disk</summary>\n");
        let _ = writeln!(out, "| disk read | file |");
        let _ = writeln!(out, "|---:|---|");
        for f in analysis.files.iter().take(top) {
            let _ = writeln!(out, "| {} | {} |", bytes(f.disk_read_bytes), escape(&f.display_name()));
        }
        let _ = writeln!(out, "\n</details>");
    }
    out
}

fn boot_table(out: &mut String, units: &[BootUnit], when: &str) {
    let _ = writeln!(
        out,
        "| unit | {when} | took | processes | on CPU | blocked | loader | disk read |\n|---|--:|--:|--:|--:|--:|--:|--:|"
    );
    for u in units {
        let traced = u.traced.as_ref().map_or_else(
            || "| no process seen | | | | |".to_string(),
            |t| {
                format!(
                    "| {} | {} | {} | {} | {} |",
                    t.processes,
                    duration(t.on_cpu_ns),
                    duration(t.blocked_ns),
                    duration(t.loader_ns),
                    bytes(t.disk_read_bytes)
                )
            },
        );
        let _ = writeln!(
            out,
            "| {} | {} | {} {traced}",
            escape(&u.unit),
            u.active_at.as_deref().map(escape).unwrap_or_default(),
            u.took.as_deref().map(escape).unwrap_or_default()
        );
    }
    out.push('\n');
}

/// What the trace missed of the boot, the critical chain and the slowest
/// units, each with what the trace saw of it.
fn render_boot(out: &mut String, boot: &BootSection) {
    let _ = writeln!(
        out,
        "**Boot.** The trace starts {} after the kernel started; {} processes were already running then (their earlier work is not in the trace).\n",
        duration(boot.missed_ns),
        boot.seeded_processes.len()
    );
    if boot.systemd_analyze_missing {
        let _ = writeln!(
            out,
            "systemd-analyze gave no critical chain (it is missing, or the boot had not finished when recording stopped).\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "Critical chain to the default target (`systemd-analyze critical-chain`; \"@\" is when a unit started, or for one that took no time, became active, from systemd's start):\n"
    );
    boot_table(out, &boot.critical_chain, "started (@)");
    let _ = writeln!(out, "<details><summary>Slowest units (`systemd-analyze blame`)</summary>\n");
    boot_table(out, &boot.slowest_units, "");
    let _ = writeln!(out, "</details>\n");
}
