//! Bad input through every command that reads a trace (`report`,
//! `flamegraph`, `export`, `dump`, and `diff` on either side): each gets one
//! line on stderr naming the file and the problem, exit status 1, and no
//! panic. A trace that was merely cut short is not bad input: it reads back
//! up to its last complete block and says so.
//!
//! Privileged tier: the bad input is made from real traces, so it needs root
//! (every test that records fails, never skips, without it) and Debian 12
//! with build-essential and coreutils. Built only with the
//! `privileged-tests` feature: `sudo -E cargo xtask test` runs it.

mod common;

use std::{fs, path::Path, process::Command};

use common::*;

/// A real trace of `command`, at `good.ntr`.
fn real_trace(sandbox: &Sandbox, command: &[&str]) -> Vec<u8> {
    let trace = sandbox.path("good.ntr");
    let output = run(record_cmd(&trace).args(["-q", "--"]).args(command));
    assert!(output.status.success(), "{}", stderr_of(&output));
    fs::read(&trace).unwrap()
}

/// Deterministic noise (xorshift64).
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Where the first block starts: after the magic, version, header length
/// and the JSON header.
fn first_block(trace: &[u8]) -> usize {
    16 + u32::from_le_bytes(trace[12..16].try_into().unwrap()) as usize
}

/// Every command that reads a trace, with `bad` in the place of the trace.
fn commands(bad: &Path, good: &Path) -> Vec<Vec<String>> {
    let (bad, good) = (text_of(bad).to_string(), text_of(good).to_string());
    vec![
        vec!["report".into(), bad.clone()],
        vec!["report".into(), bad.clone(), "--format".into(), "json".into()],
        vec!["flamegraph".into(), bad.clone(), "-o".into(), "/dev/null".into()],
        vec!["export".into(), bad.clone(), "-o".into(), "/dev/null".into()],
        vec!["dump".into(), bad.clone()],
        vec!["diff".into(), bad.clone(), good.clone()],
        vec!["diff".into(), good, bad],
    ]
}

/// Proves each kind of bad file gets a one-line error naming the file and
/// the problem, exit status 1 and no panic, from every reading command.
#[test]
fn bad_trace_files_get_one_line_errors_from_every_command() {
    let sandbox = Sandbox::new();
    let good_bytes = real_trace(&sandbox, &["/bin/true"]);
    let good = sandbox.path("good.ntr");
    let block = first_block(&good_bytes);

    // The version this nixtrace writes, and one it cannot read yet.
    let version = u32::from_le_bytes(good_bytes[8..12].try_into().unwrap());
    let mut future = good_bytes.clone();
    future[8..12].copy_from_slice(&(version + 1).to_le_bytes());
    let mut flipped = good_bytes.clone();
    flipped[block + 12] ^= 0x55;
    let mut random_after_magic = b"NIXTRACE".to_vec();
    random_after_magic.extend(noise(4096, 7));
    // What the noise makes of the version field decides the complaint.
    let noisy_version = u32::from_le_bytes(random_after_magic[8..12].try_into().unwrap());
    let random_problem =
        if noisy_version > version { "is newer than this nixtrace reads" } else { "corrupt trace" };
    let future_problem = format!("version {} is newer than this nixtrace reads", version + 1);
    let mut huge_header = good_bytes[..12].to_vec();
    huge_header.extend(u32::MAX.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "not a nixtrace trace"),
        ("text", b"this is a text file\nnot a trace\n".to_vec(), "not a nixtrace trace"),
        ("random", noise(65536, 42), "not a nixtrace trace"),
        ("random-after-magic", random_after_magic, random_problem),
        ("future-version", future, &future_problem),
        ("cut-in-header", good_bytes[..block - 3].to_vec(), "file ends inside the header"),
        ("huge-header", huge_header, "header length 4294967295 is implausible"),
        ("flipped-bit", flipped, "corrupt trace"),
    ];
    for (name, bytes, problem) in &cases {
        let bad = sandbox.path(&format!("{name}.ntr"));
        fs::write(&bad, bytes).unwrap();
        for args in commands(&bad, &good) {
            let output = run(Command::new(NIXTRACE).args(&args));
            let stderr = stderr_of(&output);
            let context = format!("{name}: nixtrace {}: {stderr}", args.join(" "));
            assert_eq!(output.status.code(), Some(1), "{context}");
            assert_eq!(stderr.lines().count(), 1, "one line: {context}");
            assert!(stderr.starts_with("nixtrace: error: "), "{context}");
            assert!(stderr.contains(text_of(&bad)), "names the file: {context}");
            assert!(stderr.contains(problem), "names the problem ({problem}): {context}");
            assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{context}");
        }
    }
}

/// Proves a trace cut inside a block (a recorder killed mid-write) is not
/// an error: every command reads it up to its last complete block and
/// says it is incomplete.
#[test]
fn a_trace_cut_short_reads_back_and_says_so() {
    let sandbox = Sandbox::new();
    // Blocks are written at least once a second: the sleep makes two, and
    // the cut loses only the second.
    let good_bytes =
        real_trace(&sandbox, &["/bin/sh", "-c", "ls / >/dev/null; sleep 1.5; ls /usr >/dev/null"]);
    let good = sandbox.path("good.ntr");
    let cut = sandbox.path("cut.ntr");
    fs::write(&cut, &good_bytes[..good_bytes.len() - 7]).unwrap();
    let report = report_json(&cut, &[]);
    assert!(report["cut_short"].as_str().is_some_and(|r| !r.is_empty()), "{}", report["cut_short"]);
    let text = run(Command::new(NIXTRACE).arg("report").arg(&cut));
    assert!(text.status.success() && String::from_utf8_lossy(&text.stdout).contains("incomplete"));
    for args in commands(&cut, &good).into_iter().filter(|a| a[0] != "report") {
        let output = run(Command::new(NIXTRACE).args(&args));
        assert!(output.status.success(), "nixtrace {}: {}", args.join(" "), stderr_of(&output));
    }
}

/// Proves misuse of `record`'s options is a usage error found before
/// anything runs: clap's error (with the usage, or for a bad value the
/// pointer to --help), status 2, and no trace file.
#[test]
fn record_misuse_gets_usage() {
    let sandbox = Sandbox::new();
    let cases: [&[&str]; 7] = [
        &["--duration", "0"],
        &["--duration", "-3"],
        &["--buffer-size", "5000"],
        &["--boot", "--keep", "0"],
        &["--boot", "-o", "boot.ntr"],
        &["--pid", "1", "--", "true"],
        &["--duration", "1", "--", "true"],
    ];
    for args in cases {
        // In the sandbox, where the default output (nixtrace.ntr) would go.
        let output = run(Command::new(NIXTRACE).current_dir(sandbox.path("")).arg("record").args(args));
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "record {args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "record {args:?}: {stderr}");
        assert!(stderr.contains("Usage:") || stderr.contains("try '--help'"), "record {args:?}: {stderr}");
        let left: Vec<_> = fs::read_dir(sandbox.path("")).unwrap().collect();
        assert!(left.is_empty(), "record {args:?} left {left:?}");
    }
}

/// Proves CLI misuse gets clap's usage and status 2: an unknown flag, no
/// subcommand, a missing trace argument.
#[test]
fn cli_misuse_gets_usage() {
    for args in [&["report", "--no-such-flag", "x"][..], &[], &["flamegraph"], &["diff", "only-one.ntr"]] {
        let output = run(Command::new(NIXTRACE).args(args));
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "nixtrace {args:?}: {stderr}");
        assert!(stderr.contains("Usage:"), "nixtrace {args:?}: {stderr}");
    }
}
