//! `nixtrace dump`: a trace as JSON Lines, one object per event.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Write},
    path::Path,
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::{
    output::ignore_broken_pipe,
    trace::{Common, Event, Header, TraceReader, event::text},
};

fn texts(list: &[Vec<u8>]) -> Vec<String> {
    list.iter().map(|b| text(b)).collect()
}

/// "ENOENT" for -2; null for non-errors.
fn errno_name(ret: i64) -> Value {
    match i32::try_from(ret) {
        Ok(ret) if ret < 0 => json!(format!("{:?}", nix::errno::Errno::from_raw(ret.saturating_neg()))),
        _ => Value::Null,
    }
}

fn with_common(common: &Common, kind: &str, mut fields: Value) -> Value {
    let map = fields.as_object_mut().expect("fields are an object");
    map.insert("type".into(), json!(kind));
    map.insert("ts_ns".into(), json!(common.ts_ns));
    map.insert("pid".into(), json!(common.pid));
    map.insert("tid".into(), json!(common.tid));
    map.insert("cgroup_id".into(), json!(common.cgroup_id));
    fields
}

pub fn header_json(header: &Header) -> Value {
    let mut value = serde_json::to_value(header).expect("the header serializes");
    value.as_object_mut().expect("object").insert("type".into(), json!("header"));
    value
}

pub fn event_json(event: &Event) -> Value {
    let kind = event.type_name();
    match event {
        Event::Fork { common, child_pid, child_tid, clone_flags } => with_common(
            common,
            kind,
            json!({"child_pid": child_pid, "child_tid": child_tid, "thread": child_pid != child_tid, "clone_flags": clone_flags}),
        ),
        Event::Exec {
            common,
            old_tid,
            filename,
            argv,
            argv_truncated,
            dev,
            ino,
            loader_env,
            env_truncated,
        } => {
            let env: serde_json::Map<String, serde_json::Value> =
                loader_env.iter().map(|(name, value)| (text(name), json!(text(value)))).collect();
            with_common(
                common,
                kind,
                json!({
                    "filename": text(filename), "argv": texts(argv), "argv_truncated": argv_truncated,
                    "old_tid": old_tid, "dev": dev, "ino": ino, "loader_env": env, "env_truncated": env_truncated,
                }),
            )
        }
        Event::ExecFailed { common, filename, ret } => with_common(
            common,
            kind,
            json!({"filename": text(filename), "ret": ret, "errno": errno_name(i64::from(*ret))}),
        ),
        Event::Exit { common, status, group_dead } => {
            let (code, signal) = if status & 0x7f == 0 {
                (json!((status >> 8) & 0xff), Value::Null)
            } else {
                (Value::Null, json!(status & 0x7f))
            };
            with_common(common, kind, json!({"exit_code": code, "signal": signal, "group_dead": group_dead}))
        }
        Event::Open {
            common,
            syscall,
            dfd,
            path,
            dir,
            dir_truncated,
            flags,
            mode,
            ret,
            duration_ns,
            ino,
            dev,
        } => with_common(
            common,
            kind,
            json!({
                "syscall": syscall.name(), "dfd": dfd, "path": text(path), "dir": dir.as_deref().map(text),
                "dir_truncated": dir_truncated, "flags": flags, "mode": mode, "ret": ret, "errno": errno_name(*ret),
                "duration_ns": duration_ns, "ino": ino, "dev": dev,
            }),
        ),
        Event::Stat { common, syscall, dfd, path, dir, dir_truncated, flags, mode, ret, duration_ns } => {
            with_common(
                common,
                kind,
                json!({
                    "syscall": syscall.name(), "dfd": dfd, "path": text(path), "dir": dir.as_deref().map(text),
                    "dir_truncated": dir_truncated, "flags": flags, "mode": mode, "ret": ret,
                    "errno": errno_name(*ret), "duration_ns": duration_ns,
                }),
            )
        }
        Event::Mmap {
            common,
            path,
            path_truncated,
            addr,
            len,
            offset,
            prot,
            flags,
            fd,
            dev,
            ino,
            duration_ns,
        } => with_common(
            common,
            kind,
            json!({
                "path": path.as_deref().map(text), "path_truncated": path_truncated, "prot": prot, "flags": flags,
                "len": len, "offset": offset, "addr": addr, "fd": fd, "dev": dev, "ino": ino,
                "duration_ns": duration_ns,
            }),
        ),
        Event::Loader { common, phase } => with_common(common, kind, json!({"phase": phase.name()})),
        Event::FileRead { common, dev, ino, bytes } => {
            with_common(common, kind, json!({"dev": dev, "ino": ino, "bytes": bytes}))
        }
        Event::Sched { common, times } => {
            with_common(common, kind, serde_json::to_value(times).expect("serializes"))
        }
        Event::PageCache { common, dev, ino, index, pages } => {
            with_common(common, kind, json!({"dev": dev, "ino": ino, "index": index, "pages": pages}))
        }
        Event::BlockIo { common, dev, sector, bytes, latency_ns, write, error } => with_common(
            common,
            kind,
            json!({"dev": dev, "sector": sector, "bytes": bytes, "latency_ns": latency_ns, "write": write, "error": error}),
        ),
        Event::Cgroup { common, id, level, path, seeded } => {
            with_common(common, kind, json!({"id": id, "level": level, "path": text(path), "seeded": seeded}))
        }
        Event::Process { ts_ns, pid, ppid, start_ns, cgroup_id, exe, argv } => json!({
            "type": kind, "ts_ns": ts_ns, "pid": pid, "ppid": ppid, "start_ns": start_ns,
            "cgroup_id": cgroup_id, "exe": exe.as_deref().map(text), "argv": texts(argv), "seeded": true,
        }),
        Event::Binary { ts_ns, dev, ino, path, size_bytes, facts, error } => json!({
            "type": kind, "ts_ns": ts_ns, "dev": dev, "ino": ino, "path": text(path),
            "size_bytes": size_bytes, "facts": facts, "error": error.as_deref().map(text),
        }),
        Event::StorePath { ts_ns, path, deriver, references } => json!({
            "type": kind, "ts_ns": ts_ns, "path": text(path), "deriver": deriver.as_deref().map(text),
            "references": texts(references),
        }),
        Event::StoreGraph { ts_ns, complete, error } => json!({
            "type": kind, "ts_ns": ts_ns, "complete": complete, "error": error.as_deref().map(text),
        }),
        Event::SystemdAnalyze { ts_ns, critical_chain, blame, unit_times } => json!({
            "type": kind, "ts_ns": ts_ns, "critical_chain": critical_chain.as_deref().map(text),
            "blame": blame.as_deref().map(text), "unit_times": unit_times.as_deref().map(text),
        }),
        Event::Stats(stats) => json!({
            "type": kind, "ts_ns": stats.ts_ns, "events": stats.events, "lost": stats.lost,
            "lost_total": stats.lost_total(),
        }),
    }
}

pub fn run(file: &Path) -> Result<()> {
    let input = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut reader =
        TraceReader::new(BufReader::new(input)).with_context(|| format!("{}", file.display()))?;
    let stdout = std::io::stdout().lock();
    let mut out = BufWriter::new(stdout);
    let mut print = |line: Value| writeln!(out, "{line}");
    print(header_json(reader.header())).or_else(ignore_broken_pipe)?;
    for event in reader.by_ref() {
        let event = event.with_context(|| format!("{}", file.display()))?;
        if let Err(e) = print(event_json(&event)) {
            return ignore_broken_pipe(e).map_err(Into::into);
        }
    }
    out.flush().or_else(ignore_broken_pipe)?;
    if let Some(reason) = reader.cut_short() {
        eprintln!("nixtrace: warning: {} was cut short: {reason}; showing what was complete", file.display());
    }
    Ok(())
}
