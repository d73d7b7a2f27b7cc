//! The boot part of an analysis (`record --boot`): how much of the boot the
//! trace missed, and what `systemd-analyze` says (the critical chain, the
//! slowest units) joined with what the trace saw of each unit.

use serde::Serialize;

use super::{Analysis, UnitFigures};

/// A unit as systemd-analyze shows it, with the trace's view of it.
#[derive(Debug, Serialize)]
pub struct BootUnit {
    pub unit: String,
    /// systemd's "@" (when it became active) and "+" (how long it took to
    /// start) for the critical chain; the blame time for the slowest units.
    pub active_at: Option<String>,
    pub took: Option<String>,
    /// Null when the trace saw no process of the unit.
    pub traced: Option<TracedUnit>,
}

#[derive(Debug, Serialize)]
pub struct TracedUnit {
    pub processes: u64,
    pub execs: u64,
    pub on_cpu_ns: u64,
    pub blocked_ns: u64,
    pub loader_ns: u64,
    pub disk_read_bytes: u64,
}

impl From<&UnitFigures> for TracedUnit {
    fn from(row: &UnitFigures) -> TracedUnit {
        TracedUnit {
            processes: row.processes,
            execs: row.execs,
            on_cpu_ns: row.time.on_cpu_ns,
            blocked_ns: row.time.blocked_ns,
            loader_ns: row.loader_ns,
            disk_read_bytes: row.io.disk_read_bytes,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BootSection {
    /// From the kernel's start (CLOCK_BOOTTIME 0) to the start of tracing:
    /// the part of the boot the trace cannot show.
    pub missed_ns: u64,
    /// Processes already running when tracing started (from /proc): their
    /// earlier work is not in the trace.
    pub seeded_processes: Vec<String>,
    /// `systemd-analyze critical-chain`, from the default target down.
    pub critical_chain: Vec<BootUnit>,
    /// `systemd-analyze blame`: the units that took longest to start.
    pub slowest_units: Vec<BootUnit>,
    /// `systemd-analyze critical-chain` failed: it is missing, or the boot
    /// had not finished when recording stopped (--duration, shutdown).
    pub systemd_analyze_missing: bool,
}

const SLOWEST: usize = 15;

fn traced(analysis: &Analysis, unit: &str) -> Option<TracedUnit> {
    analysis.units.iter().find(|u| u.name == unit).map(TracedUnit::from)
}

/// `multi-user.target @2.543s` or `└─systemd-udevd.service @1.2s +300ms`.
fn chain_line(line: &str) -> Option<(String, Option<String>, Option<String>)> {
    let line = line.trim_start_matches(|c: char| c.is_whitespace() || "└─│├".contains(c));
    let mut words = line.split_whitespace();
    let unit = words.next()?;
    if !unit.contains('.') || unit.ends_with(':') {
        return None;
    }
    let (mut at, mut took) = (None, None);
    for word in words {
        if let Some(t) = word.strip_prefix('@') {
            at = Some(t.to_string());
        } else if let Some(t) = word.strip_prefix('+') {
            took = Some(t.to_string());
        }
    }
    Some((unit.to_string(), at, took))
}

/// `300ms systemd-udevd.service` (the time may be "1min 2.3s").
fn blame_line(line: &str) -> Option<(String, String)> {
    let (time, unit) = line.trim().rsplit_once(' ')?;
    Some((unit.to_string(), time.trim().to_string()))
}

/// The boot section of `analysis`, from the raw output of
/// `systemd-analyze critical-chain` and `systemd-analyze blame`.
pub fn section(analysis: &Analysis, critical_chain: Option<&str>, blame: Option<&str>) -> BootSection {
    let systemd_analyze_missing = critical_chain.is_none();
    let critical_chain = critical_chain
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("The time"))
        .filter_map(chain_line)
        .map(|(unit, active_at, took)| BootUnit { traced: traced(analysis, &unit), unit, active_at, took })
        .collect();
    let slowest_units = blame
        .unwrap_or_default()
        .lines()
        .filter_map(blame_line)
        .take(SLOWEST)
        .map(|(unit, took)| BootUnit {
            traced: traced(analysis, &unit),
            unit,
            active_at: None,
            took: Some(took),
        })
        .collect();
    BootSection {
        missed_ns: analysis.header.clock.boottime_ns,
        seeded_processes: analysis
            .processes
            .iter()
            .filter(|p| p.seeded)
            .map(|p| format!("{} [{}]", p.exe.as_deref().unwrap_or("?"), p.pid))
            .collect(),
        critical_chain,
        slowest_units,
        systemd_analyze_missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_analyze_lines_parse() {
        assert_eq!(
            chain_line("    └─systemd-udevd.service @1.204s +312ms"),
            Some(("systemd-udevd.service".into(), Some("1.204s".into()), Some("312ms".into())))
        );
        assert_eq!(
            chain_line("multi-user.target @2.543s"),
            Some(("multi-user.target".into(), Some("2.543s".into()), None))
        );
        assert_eq!(
            chain_line("The time when unit became active or started is printed after the \"@\" character."),
            None
        );
        assert_eq!(
            blame_line("1min 2.301s apt-daily.service"),
            Some(("apt-daily.service".into(), "1min 2.301s".into()))
        );
        assert_eq!(
            blame_line("  312ms systemd-udevd.service"),
            Some(("systemd-udevd.service".into(), "312ms".into()))
        );
    }
}
