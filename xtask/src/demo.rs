//! `cargo xtask demo`: records the startup of a small Python program and
//! summarises what it did, from `nixtrace dump`'s JSON lines.
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// The program whose startup is recorded.
const PROGRAM: [&str; 3] = ["python3", "-c", "import json"];
/// How many lines of the dump to show.
const HEAD: usize = 20;
/// `PROT_EXEC` in an mmap's `prot`.
const PROT_EXEC: u64 = 4;

pub fn run() -> Result<()> {
    if !crate::is_root() {
        bail!(
            "recording loads eBPF programs into the kernel: run the demo as root (sudo -E cargo xtask demo)"
        );
    }
    crate::setup::run().context("setup failed")?;
    crate::run(&mut crate::cargo(["build", "--release"]))?;

    let nixtrace = crate::target_dir().join("release/nixtrace");
    let trace = crate::target_dir().join("demo.ntr");
    crate::run(
        crate::command(&nixtrace).args(["record", "--force", "-o"]).arg(&trace).arg("--").args(PROGRAM),
    )?;
    let dump = crate::output(crate::command(&nixtrace).arg("dump").arg(&trace))?;

    println!("\nfirst {HEAD} lines of `nixtrace dump {}`:", trace.display());
    for line in dump.lines().take(HEAD) {
        println!("  {line}");
    }
    let summary = Summary::of(&dump)?;
    println!("\nsummary of {}:", trace.display());
    summary.print();
    Ok(())
}

/// What the demo reports about one trace.
#[derive(Debug, Default, PartialEq)]
struct Summary {
    by_type: BTreeMap<String, usize>,
    opens: usize,
    failed_opens: usize,
    /// Paths mapped with PROT_EXEC: the program's code and its libraries.
    exec_mapped: BTreeSet<String>,
    /// `lost` of the last `stats` record.
    lost: Option<Value>,
}

impl Summary {
    /// Reads the dump's JSON lines, one event (or stats record) per line.
    fn of(dump: &str) -> Result<Self> {
        let mut summary = Summary::default();
        for (n, line) in dump.lines().enumerate() {
            if !line.trim_start().starts_with('{') {
                continue;
            }
            let event: Value = serde_json::from_str(line)
                .with_context(|| format!("dump line {} is not valid JSON: {line}", n + 1))?;
            let kind = event["type"].as_str().unwrap_or("(no type)");
            *summary.by_type.entry(kind.to_owned()).or_default() += 1;
            match kind {
                "open" => {
                    summary.opens += 1;
                    if event["ret"].as_i64().is_some_and(|ret| ret < 0) {
                        summary.failed_opens += 1;
                    }
                }
                "mmap" => {
                    let exec = event["prot"].as_u64().is_some_and(|prot| prot & PROT_EXEC != 0);
                    if let (true, Some(path)) = (exec, event["path"].as_str()) {
                        summary.exec_mapped.insert(path.to_owned());
                    }
                }
                "stats" => summary.lost = Some(event["lost"].clone()),
                _ => {}
            }
        }
        Ok(summary)
    }

    fn print(&self) {
        println!("  events by type:");
        for (kind, count) in &self.by_type {
            println!("    {kind:<12} {count:>6}");
        }
        println!("  open: {} calls, {} failed (ret < 0)", self.opens, self.failed_opens);
        println!("  mapped executable ({}):", self.exec_mapped.len());
        for path in &self.exec_mapped {
            println!("    {path}");
        }
        match &self.lost {
            Some(Value::Object(counts)) => {
                let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("  lost: {}", counts.join(" "));
            }
            Some(lost) => println!("  lost: {lost}"),
            None => println!("  lost: unknown (no stats record in the dump)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_dump_lines() {
        let dump = r#"
{"type":"exec","path":"/usr/bin/python3"}
{"type":"open","path":"/etc/ld.so.cache","ret":3}
{"type":"open","path":"/nonexistent","ret":-2}
{"type":"mmap","path":"/usr/lib/libc.so.6","prot":5}
{"type":"mmap","path":"/usr/lib/libc.so.6","prot":1}
{"type":"mmap","path":"/usr/lib/libm.so.6","prot":1}
{"type":"mmap","prot":7}
{"type":"stats","lost":{"ringbuf":1}}
{"type":"stats","lost":{"ringbuf":2}}
"#;
        let summary = Summary::of(dump).unwrap();
        assert_eq!(summary.by_type["mmap"], 4);
        assert_eq!(summary.by_type["stats"], 2);
        assert_eq!((summary.opens, summary.failed_opens), (2, 1));
        assert_eq!(summary.exec_mapped, BTreeSet::from(["/usr/lib/libc.so.6".to_owned()]));
        assert_eq!(summary.lost, Some(serde_json::json!({"ringbuf": 2})));
    }

    #[test]
    fn rejects_broken_json() {
        assert!(Summary::of("{\"type\":").is_err());
    }
}
