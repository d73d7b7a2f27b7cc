//! Per systemd unit: the sums of its processes' figures.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{io::IoFigures, process::ProcessFigures};
use crate::trace::ThreadTimes;

#[derive(Debug, Clone, Default, Serialize)]
pub struct UnitFigures {
    pub name: String,
    pub processes: u64,
    pub execs: u64,
    pub loader_ns: u64,
    pub failed_lookups: u64,
    pub io: IoFigures,
    pub time: ThreadTimes,
}

/// The units of `processes`, most loader time first.
pub fn units(processes: &[ProcessFigures]) -> Vec<UnitFigures> {
    let mut units: BTreeMap<&str, UnitFigures> = BTreeMap::new();
    for process in processes {
        let unit = units
            .entry(&process.unit)
            .or_insert_with(|| UnitFigures { name: process.unit.clone(), ..UnitFigures::default() });
        unit.processes += 1;
        unit.execs = unit.execs.saturating_add(process.execs.len() as u64);
        unit.io.add(&process.io);
        unit.time.add(&process.time);
        if let Some(loader) = &process.loader {
            unit.loader_ns = unit.loader_ns.saturating_add(loader.total_ns);
            unit.failed_lookups = unit.failed_lookups.saturating_add(loader.failed_lookups);
        }
    }
    let mut units: Vec<UnitFigures> = units.into_values().collect();
    units.sort_by(|a, b| b.loader_ns.cmp(&a.loader_ns).then_with(|| a.name.cmp(&b.name)));
    units
}
