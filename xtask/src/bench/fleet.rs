//! The fleet queries (docs/fleet.sql) over many traces' Parquet tables, as
//! DuckDB runs them for a fleet owner: how long each takes.
//!
//! No fleet's traces are at hand, so real traces stand in for one: the two
//! boots that `cargo xtask boot-test` traced last, when its files are in
//! target/boot-vm/out/, else a two-second system-wide recording of this
//! machine. Their tables are copied under many host names, each copy with a
//! trace id of its own (xtask/bench/fleet.py does the copying and times the
//! queries), so that every host has the same boots.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use super::Bench;
use crate::{command, output, repo_root, target_dir};

/// Runs of each query; the document gives the median.
const RUNS: usize = 3;

/// What the fleet benchmark measured.
pub(super) struct Fleet {
    /// Which traces stood in for the fleet's, for the document.
    pub source: String,
    pub hosts: u64,
    pub traces: u64,
    pub bytes: u64,
    pub duckdb: String,
    /// Each fleet query: its name, its runs' seconds (sorted) and its rows.
    pub queries: Vec<(String, Vec<f64>, u64)>,
}

/// The boot test's last two traces (by modification time), if it ran.
fn boot_test_traces() -> Vec<PathBuf> {
    let out = target_dir().join("boot-vm/out");
    let mut traces: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(&out)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ntr"))
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    traces.sort();
    traces.into_iter().rev().take(2).rev().map(|(_, p)| p).collect()
}

/// Exports each of `traces` into its own directory under `dir`.
fn export(bench: &Bench, traces: &[PathBuf], dir: &Path) -> Result<Vec<PathBuf>> {
    traces
        .iter()
        .enumerate()
        .map(|(i, trace)| {
            let tables = dir.join(format!("source-{i}"));
            crate::run(
                command(&bench.nixtrace)
                    .arg("export")
                    .arg(trace)
                    .args(["--format", "parquet", "-o"])
                    .arg(&tables),
            )?;
            Ok(tables)
        })
        .collect()
}

/// Copies the stand-in traces' tables until there are `traces` traces,
/// then times the fleet queries over them.
pub(super) fn measure(bench: &Bench, traces: u64) -> Result<Fleet> {
    let dir = bench.dir.join("fleet-bench");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let mut sources = boot_test_traces();
    let source = if sources.len() == 2 {
        "the two boots of the boot test's Debian guest (`cargo xtask boot-test`, its last run)".to_string()
    } else {
        let trace = dir.join("system.ntr");
        crate::run(command(&bench.nixtrace).args(["record", "-q", "--duration", "2", "-o"]).arg(&trace))?;
        sources = vec![trace];
        "a two-second system-wide recording of this machine (no boot test traces in target/boot-vm/out/)"
            .to_string()
    };
    let exported = export(bench, &sources, &dir)?;
    let hosts = traces.div_ceil(exported.len() as u64);
    println!("==> fleet: the fleet queries over {hosts} hosts' copies of {source}");
    let python = crate::setup::duckdb_venv().join("bin/python");
    ensure!(python.exists(), "{} is missing: run `cargo xtask setup`", python.display());
    let request = dir.join("request.json");
    let body = serde_json::json!({
        "sources": exported,
        "hosts": hosts,
        "out": dir.join("fleet"),
        "queries": repo_root().join("docs/fleet.sql"),
        "runs": RUNS,
    });
    fs::write(&request, body.to_string())?;
    let script = repo_root().join("xtask/bench/fleet.py");
    let answer: Value = serde_json::from_str(&output(Command::new(&python).arg(script).arg(&request))?)
        .context("xtask/bench/fleet.py's answer")?;
    let duckdb = output(Command::new(&python).args(["-c", "import duckdb; print(duckdb.__version__)"]))?;
    fs::remove_dir_all(&dir)?;
    let count = |v: &Value| v.as_u64().context("xtask/bench/fleet.py: not a count");
    let mut queries = Vec::new();
    for (name, q) in answer["queries"].as_object().context("xtask/bench/fleet.py: no queries")? {
        let mut seconds: Vec<f64> =
            q["seconds"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect();
        ensure!(seconds.len() == RUNS, "{name}: {} runs timed", seconds.len());
        seconds.sort_by(f64::total_cmp);
        queries.push((name.clone(), seconds, count(&q["rows"])?));
    }
    Ok(Fleet {
        source,
        hosts,
        traces: count(&answer["traces"])?,
        bytes: count(&answer["bytes"])?,
        duckdb: duckdb.trim().to_string(),
        queries,
    })
}
