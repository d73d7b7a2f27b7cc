//! What the runs add up to: medians, slowdowns, each contender's summary
//! over its pairs, and the verdict on each of the project's targets.
use std::time::Duration;

use super::{
    Analysis, Measured, Startup,
    contenders::{Contender, Rss, Run},
    render::seconds,
    startup::LoaderCost,
};

/// The project's targets (issue #4, the storms and the exits as issue #13
/// restated them).
const TARGET_OPEN_STORM: f64 = 1.30;
const TARGET_EXEC_STORM: f64 = 1.08;
/// The loader time glibc measures, traced against untraced.
const TARGET_OBSERVER_EFFECT: f64 = 1.15;
/// `record -q -- /bin/true` start to exit; a system-wide one SIGINT to exit.
const TARGET_EXIT: Duration = Duration::from_millis(250);
const TARGET_BYTES_PER_EVENT: f64 = 24.0;
const TARGET_REPORT_EVENTS_PER_S: f64 = 2e6;
const TARGET_REPORT_MB: f64 = 100.0;
const TARGET_ATTACH: Duration = Duration::from_millis(100);
/// `export --format parquet --events` on one core, and the size of what
/// it writes of the open storm's trace (the Parquet issue's targets).
const TARGET_EXPORT_EVENTS_PER_S: f64 = 1e6;
const TARGET_PARQUET_BYTES_PER_EVENT: f64 = 8.0;

/// The figures of one contender on one workload, summarised over its pairs.
pub(super) struct Summary {
    pub(super) time: Duration,
    pub(super) slowdown: f64,
    pub(super) slowdown_range: (f64, f64),
    pub(super) events: Option<u64>,
    pub(super) lost: Option<u64>,
    pub(super) bytes_per_event: Option<f64>,
    pub(super) tracer_cpu: Option<Duration>,
    pub(super) tracer_rss: Option<Rss>,
    pub(super) attach: Option<Duration>,
}

impl Summary {
    fn of(pairs: &[(Duration, Run)]) -> Summary {
        let ratios: Vec<f64> = pairs.iter().map(|(untraced, run)| ratio(run.wall, *untraced)).collect();
        let (low, high) = ratios.iter().fold((f64::INFINITY, 0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        let median_of = |f: &dyn Fn(&Run) -> Option<f64>| {
            let values: Vec<f64> = pairs.iter().filter_map(|(_, run)| f(run)).collect();
            (!values.is_empty()).then(|| median(values))
        };
        let secs = |d: f64| Duration::from_secs_f64(d);
        Summary {
            time: secs(median_of(&|r| Some(r.wall.as_secs_f64())).unwrap_or(0.0)),
            slowdown: median(ratios),
            slowdown_range: (low, high),
            events: median_of(&|r| r.events.map(|e| e as f64)).map(|e| e.round() as u64),
            lost: pairs.iter().filter_map(|(_, run)| run.lost).max(),
            bytes_per_event: median_of(&|r| Some(r.trace_bytes? as f64 / r.events?.max(1) as f64)),
            tracer_cpu: median_of(&|r| r.tracer_cpu.map(|d| d.as_secs_f64())).map(secs),
            tracer_rss: pairs.iter().filter_map(|(_, run)| run.tracer_rss).max_by_key(|rss| rss.kib),
            attach: median_of(&|r| r.attach.map(|d| d.as_secs_f64())).map(secs),
        }
    }
}

impl Measured {
    pub(super) fn summary(&self, contender: Contender) -> Option<Summary> {
        self.pairs.iter().find(|(c, _)| *c == contender).map(|(_, pairs)| Summary::of(pairs))
    }

    /// The median of every untraced run.
    pub(super) fn untraced(&self) -> Duration {
        let walls = self.pairs.iter().flat_map(|(_, pairs)| pairs.iter().map(|(u, _)| u.as_secs_f64()));
        Duration::from_secs_f64(median(walls.collect()))
    }
}

impl LoaderCost {
    /// The median loader time of `traced` runs over the untraced median.
    pub(super) fn effect(&self, traced: &[u64]) -> f64 {
        median_ticks(traced) / median_ticks(&self.untraced)
    }
}

/// The median of counter readings.
pub(super) fn median_ticks(ticks: &[u64]) -> f64 {
    median(ticks.iter().map(|&t| t as f64).collect())
}

/// The median of durations.
pub(super) fn median_duration(runs: &[Duration]) -> Duration {
    Duration::from_secs_f64(median(runs.iter().map(Duration::as_secs_f64).collect()))
}

/// The median of some values (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

pub(super) fn ratio(traced: Duration, untraced: Duration) -> f64 {
    traced.as_secs_f64() / untraced.as_secs_f64()
}

/// One of the project's targets, measured.
pub(super) struct Verdict {
    pub(super) target: String,
    pub(super) measured: String,
    pub(super) met: bool,
}

/// Each target against what was measured.
pub(super) fn verdicts(measured: &[Measured], startup: &Startup, analysis: &Analysis) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    let find = |name: &str| measured.iter().find(|m| m.name == name);
    for (workload, limit) in [("open storm", TARGET_OPEN_STORM), ("exec storm", TARGET_EXEC_STORM)] {
        let Some(m) = find(workload) else { continue };
        let floor = m.summary(Contender::Floor).map_or(f64::NAN, |s| s.slowdown);
        for contender in [Contender::NixtraceCommand, Contender::NixtraceSystem] {
            let Some(s) = m.summary(contender) else { continue };
            let lost = s.lost.unwrap_or(0);
            let zero_lost = if workload == "open storm" { ", 0 events lost" } else { "" };
            verdicts.push(Verdict {
                target: format!("{workload}, {}: at most {limit:.2}x{zero_lost}", contender.label()),
                measured: format!(
                    "{:.2}x ({}; floor {floor:.2}x), {lost} lost",
                    s.slowdown,
                    over(s.slowdown, limit)
                ),
                met: s.slowdown <= limit && lost == 0,
            });
        }
    }
    if let Some(s) = find("open storm").and_then(|m| m.summary(Contender::NixtraceCommand))
        && let Some(bytes) = s.bytes_per_event
    {
        verdicts.push(Verdict {
            target: format!("at most {TARGET_BYTES_PER_EVENT:.0} bytes per event on the open storm trace"),
            measured: format!("{bytes:.1} bytes ({})", over(bytes, TARGET_BYTES_PER_EVENT)),
            met: bytes <= TARGET_BYTES_PER_EVENT,
        });
    }
    if let Some((rate, peak_mb)) = report_figures(analysis) {
        verdicts.push(Verdict {
            target: format!(
                "`report`: at least {:.0} million events/s on one core, peak under {TARGET_REPORT_MB:.0} MB, on {:.1} million events",
                TARGET_REPORT_EVENTS_PER_S / 1e6,
                analysis.events as f64 / 1e6
            ),
            measured: format!("{:.2} million/s, {peak_mb:.1} MB", rate / 1e6),
            met: rate >= TARGET_REPORT_EVENTS_PER_S && peak_mb < TARGET_REPORT_MB,
        });
    }
    if let Some(export) = analysis.commands.iter().find(|c| c.what.contains("export --format parquet")) {
        let rate = analysis.events as f64 / export.wall.as_secs_f64();
        verdicts.push(Verdict {
            target: format!(
                "`export --format parquet --events`: at least {:.0} million events/s on one core",
                TARGET_EXPORT_EVENTS_PER_S / 1e6
            ),
            measured: format!(
                "{:.2} million/s ({})",
                rate / 1e6,
                under_target(rate, TARGET_EXPORT_EVENTS_PER_S)
            ),
            met: rate >= TARGET_EXPORT_EVENTS_PER_S,
        });
        let bytes = analysis.parquet_bytes as f64 / analysis.events as f64;
        verdicts.push(Verdict {
            target: format!(
                "at most {TARGET_PARQUET_BYTES_PER_EVENT:.0} bytes of Parquet per event on the open storm trace, with `--events`"
            ),
            measured: format!("{bytes:.1} bytes ({})", over(bytes, TARGET_PARQUET_BYTES_PER_EVENT)),
            met: bytes <= TARGET_PARQUET_BYTES_PER_EVENT,
        });
    }
    for cost in &startup.loader {
        for (how, traced) in [
            ("`record -- CMD`", &cost.command),
            ("system-wide", &cost.system),
            ("`record -- CMD`, the report's figure less its estimated share", &cost.corrected),
        ] {
            let effect = cost.effect(traced);
            verdicts.push(Verdict {
                target: format!(
                    "observer effect, {}, {how}: loader time (`LD_DEBUG=statistics`) at most {TARGET_OBSERVER_EFFECT:.2}x untraced",
                    cost.short
                ),
                measured: format!("{effect:.2}x ({})", over(effect, TARGET_OBSERVER_EFFECT)),
                met: effect <= TARGET_OBSERVER_EFFECT,
            });
        }
    }
    let exits = &startup.exits;
    for (target, time) in [
        ("`record -q -- /bin/true`, start to exit".to_string(), median_duration(&exits.single)),
        (
            format!(
                "`record -q -- /bin/true` {} times back to back, start to exit of each",
                exits.back_to_back_runs
            ),
            exits.back_to_back,
        ),
        ("system-wide `record`, SIGINT to exit".to_string(), median_duration(&exits.sigint)),
    ] {
        verdicts.push(Verdict {
            target: format!("{target}: at most {}", seconds(TARGET_EXIT)),
            measured: format!("{} ({})", seconds(time), over(time.as_secs_f64(), TARGET_EXIT.as_secs_f64())),
            met: time <= TARGET_EXIT,
        });
    }
    if let Some(attach) = median_attach(measured) {
        verdicts.push(Verdict {
            target: format!("probes attached in under {} ms", TARGET_ATTACH.as_millis()),
            measured: format!(
                "{} (median of every nixtrace run; {})",
                seconds(attach),
                over(attach.as_secs_f64(), TARGET_ATTACH.as_secs_f64())
            ),
            met: attach < TARGET_ATTACH,
        });
    }
    verdicts
}

/// The median attach time over every nixtrace run; None without one.
fn median_attach(measured: &[Measured]) -> Option<Duration> {
    let attaches: Vec<f64> = measured
        .iter()
        .flat_map(|m| &m.pairs)
        .filter(|(c, _)| c.is_nixtrace())
        .flat_map(|(_, pairs)| pairs.iter().filter_map(|(_, run)| run.attach.map(|a| a.as_secs_f64())))
        .collect();
    (!attaches.is_empty()).then(|| Duration::from_secs_f64(median(attaches)))
}

/// `report` on the large trace: events per second, and peak memory in MB
/// (10^6 bytes, as the target is stated).
fn report_figures(analysis: &Analysis) -> Option<(f64, f64)> {
    let report = analysis.commands.first()?;
    let rate = analysis.events as f64 / report.wall.as_secs_f64();
    Some((rate, report.maxrss_kib as f64 * 1024.0 / 1e6))
}

/// How far a measured rate is below its floor, in percent.
fn under_target(value: f64, floor: f64) -> String {
    let percent = (1.0 - value / floor) * 100.0;
    if percent > 0.0 { format!("{percent:.0}% short") } else { format!("{:.0}% over", -percent) }
}

/// How far a measured value is above its limit, in percent.
fn over(value: f64, limit: f64) -> String {
    let percent = (value / limit - 1.0) * 100.0;
    if percent > 0.0 { format!("{percent:.0}% over") } else { format!("{:.0}% under", -percent) }
}
