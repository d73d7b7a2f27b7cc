//! The boot part of an analysis (`record --boot`): how much of the boot the
//! trace missed, and what `systemd-analyze` says (the critical chain, the
//! slowest units) joined with what the trace saw of each unit.

use serde::Serialize;

use super::{Analysis, UnitFigures};

/// A unit as systemd-analyze shows it, with the trace's view of it.
#[derive(Debug, Serialize)]
pub struct BootUnit {
    pub unit: String,
    /// systemd's "@" (when it started activating, or for a unit without a
    /// "+", when it became active, counted from userspace's start) and "+"
    /// (how long it took to start) for the critical chain; the blame time
    /// for the slowest units.
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

/// When systemd activated a unit, from `systemctl show`: systemd's own
/// timestamps, to the microsecond, in ns since the kernel's start.
/// (systemd stamps CLOCK_MONOTONIC, which in a boot without a suspend is the
/// trace's CLOCK_BOOTTIME.)
#[derive(Debug, Serialize, PartialEq)]
pub struct UnitActivation {
    pub unit: String,
    /// When it started activating (its `InactiveExitTimestampMonotonic`);
    /// null for a unit that went straight to active (a mount systemd found
    /// mounted, a device).
    pub activating_at_ns: Option<u64>,
    /// Its time to active: when it became active
    /// (`ActiveEnterTimestampMonotonic`) or, for a oneshot service that
    /// does not remain active, when its run ended and it went back to
    /// inactive (`InactiveEnterTimestampMonotonic`), as systemd-analyze
    /// blame counts it.
    pub active_at_ns: u64,
    /// From `activating_at_ns` to `active_at_ns`: what `systemd-analyze
    /// blame` shows, rounded there to the millisecond.
    pub activating_ns: Option<u64>,
    /// Its state when recording stopped (`active`, `inactive` for a
    /// oneshot that finished, `failed`).
    pub state: String,
}

/// Every unit that became active, first to activate first, and the
/// manager's timestamps, from `unit_times` (see [`Event::SystemdAnalyze`]).
///
/// [`Event::SystemdAnalyze`]: crate::trace::Event::SystemdAnalyze
fn parse_unit_times(text: &str) -> (Option<u64>, Option<u64>, Vec<UnitActivation>) {
    let (mut userspace, mut finished, mut units) = (None, None, Vec::new());
    for block in text.split("\n\n") {
        let field =
            |key: &str| block.lines().find_map(|l| l.strip_prefix(key).and_then(|l| l.strip_prefix('=')));
        // systemd prints 0 for a time that has not come.
        let ns = |key: &str| {
            field(key)
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&us| us > 0)
                .and_then(|us| us.checked_mul(1000))
        };
        let Some(unit) = field("Id") else {
            userspace = userspace.or(ns("UserspaceTimestampMonotonic"));
            finished = finished.or(ns("FinishTimestampMonotonic"));
            continue;
        };
        let activating_at_ns = ns("InactiveExitTimestampMonotonic");
        // A timestamp from before the latest activation is an earlier run's.
        let since_activating = |at: &u64| activating_at_ns.is_none_or(|start| *at >= start);
        let active = ns("ActiveEnterTimestampMonotonic").filter(since_activating);
        let ended = ns("InactiveEnterTimestampMonotonic").filter(since_activating);
        let Some(active_at_ns) = active.or(ended.filter(|_| activating_at_ns.is_some())) else { continue };
        units.push(UnitActivation {
            unit: unit.to_string(),
            activating_at_ns,
            active_at_ns,
            activating_ns: activating_at_ns.map(|at| active_at_ns - at),
            state: field("ActiveState").unwrap_or_default().to_string(),
        });
    }
    units.sort_by(|a, b| {
        (a.activating_at_ns.unwrap_or(a.active_at_ns), a.active_at_ns, &a.unit).cmp(&(
            b.activating_at_ns.unwrap_or(b.active_at_ns),
            b.active_at_ns,
            &b.unit,
        ))
    });
    (userspace, finished, units)
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
    /// When systemd started in the real root, and
    /// when it said the boot had finished, in ns since the kernel's start:
    /// systemd-analyze's "@" times count from `userspace_at_ns`.
    pub userspace_at_ns: Option<u64>,
    pub finished_at_ns: Option<u64>,
    /// Every unit systemd activated, in the order it started them. Empty
    /// when `systemctl show` failed, or for a trace older than format 5.
    pub unit_activations: Vec<UnitActivation>,
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
    // A time may be several words: "@1min 2.301s".
    let (mut at, mut took): (Option<String>, Option<String>) = (None, None);
    let mut current = None;
    for word in words {
        if let Some(t) = word.strip_prefix('@') {
            at = Some(t.to_string());
            current = Some(&mut at);
        } else if let Some(t) = word.strip_prefix('+') {
            took = Some(t.to_string());
            current = Some(&mut took);
        } else if let Some(Some(time)) = current.as_deref_mut() {
            time.push(' ');
            time.push_str(word);
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
pub fn section(
    analysis: &Analysis,
    critical_chain: Option<&str>,
    blame: Option<&str>,
    unit_times: Option<&str>,
) -> BootSection {
    let systemd_analyze_missing = critical_chain.is_none();
    let (userspace_at_ns, finished_at_ns, unit_activations) =
        parse_unit_times(unit_times.unwrap_or_default());
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
        userspace_at_ns,
        finished_at_ns,
        unit_activations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_times_parse() {
        let text = "UserspaceTimestampMonotonic=1500000\nFinishTimestampMonotonic=9000001\n\n\
                    Id=b.service\nActiveState=active\nInactiveExitTimestampMonotonic=2000000\n\
                    ActiveEnterTimestampMonotonic=2300005\n\n\
                    Id=never.service\nActiveState=inactive\nInactiveExitTimestampMonotonic=0\n\
                    ActiveEnterTimestampMonotonic=0\n\n\
                    Id=-.mount\nActiveState=active\nInactiveExitTimestampMonotonic=0\n\
                    ActiveEnterTimestampMonotonic=1600000\n\n\
                    Id=oneshot.service\nActiveState=inactive\nInactiveExitTimestampMonotonic=2100000\n\
                    ActiveEnterTimestampMonotonic=0\nInactiveEnterTimestampMonotonic=2200000\n\n\
                    Id=restarted.service\nActiveState=activating\nInactiveExitTimestampMonotonic=3000000\n\
                    ActiveEnterTimestampMonotonic=1000000\nInactiveEnterTimestampMonotonic=2900000\n";
        let (userspace, finished, units) = parse_unit_times(text);
        assert_eq!((userspace, finished), (Some(1_500_000_000), Some(9_000_001_000)));
        assert_eq!(
            units,
            [
                UnitActivation {
                    unit: "-.mount".into(),
                    activating_at_ns: None,
                    active_at_ns: 1_600_000_000,
                    activating_ns: None,
                    state: "active".into()
                },
                UnitActivation {
                    unit: "b.service".into(),
                    activating_at_ns: Some(2_000_000_000),
                    active_at_ns: 2_300_005_000,
                    activating_ns: Some(300_005_000),
                    state: "active".into()
                },
                UnitActivation {
                    unit: "oneshot.service".into(),
                    activating_at_ns: Some(2_100_000_000),
                    active_at_ns: 2_200_000_000,
                    activating_ns: Some(100_000_000),
                    state: "inactive".into()
                },
            ]
        );
        assert_eq!(parse_unit_times(""), (None, None, Vec::new()));
    }

    #[test]
    fn systemd_analyze_lines_parse() {
        assert_eq!(
            chain_line("    └─systemd-udevd.service @1.204s +312ms"),
            Some(("systemd-udevd.service".into(), Some("1.204s".into()), Some("312ms".into())))
        );
        assert_eq!(
            chain_line("└─apt-daily.service @1min 2.301s +1min 5ms"),
            Some(("apt-daily.service".into(), Some("1min 2.301s".into()), Some("1min 5ms".into())))
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
