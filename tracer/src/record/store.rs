//! The Nix store's graph around a recording: the references and deriver of
//! every store path the trace touched and of everything those refer to,
//! transitively (their closure), read from the store's database when
//! recording stops, so that a report made later or on another machine can
//! say which package pulls in which and which touched paths lie outside the
//! closure of the traced program.
//!
//! While the recording runs, [`StorePaths::observe`] keeps the store path
//! (`/nix/store/<hash>-<name>`) of every file the events name: one string
//! per distinct store path, nothing per event. When it stops, [`graph`]
//! asks `nix-store`, read-only, off the hot loop and with a time limit:
//!
//! - `nix-store --query --requisites P...`: the closure of the touched
//!   paths (if a touched path is not valid in the store, such as the output
//!   of a build that failed, `nix-store --check-validity --print-invalid`
//!   finds it and the query is made without it);
//! - `nix-store --dump-db P...`: for each path of the closure, its deriver
//!   and references ([`parse_dump_db`]).
//!
//! The answer is one `StorePath` record per path of the closure, then one
//! `StoreGraph` record. Nothing here fails the recording: without a store,
//! without `nix-store`, or when a query fails or takes too long, the
//! `StoreGraph` record says why and there are no `StorePath` records.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use crate::{model::nix::parse_store_path, trace::Event};

/// Where the store is. Only the default store is supported (as in
/// `model::nix`).
const STORE_DIR: &str = "/nix/store";

/// How long all the queries together may take. A small closure takes tens of
/// milliseconds; a NixOS system's, well under a second.
const TIME_LIMIT: Duration = Duration::from_secs(5);

/// Store paths given to one `nix-store` call, to stay far below the kernel's
/// limit on the size of a command line.
const PATHS_PER_CALL: usize = 1000;

/// Where `nix-store` is looked for when it is not on `PATH` (a recording
/// started by systemd, or under `sudo`'s `secure_path`).
const NIX_STORE_ELSEWHERE: &[&str] =
    &["/run/current-system/sw/bin/nix-store", "/nix/var/nix/profiles/default/bin/nix-store"];

/// The distinct store paths the trace's events named.
#[derive(Debug, Default)]
pub struct StorePaths {
    paths: BTreeSet<String>,
}

impl StorePaths {
    /// Keeps the store path of the file `event` names, if it is in the
    /// store: an exec's file, a successful open's path (a relative one
    /// joined to its directory), an mmap's file, a `Binary` record's path,
    /// a seeded process's executable.
    pub fn observe(&mut self, event: &Event) {
        match event {
            Event::Exec { filename: path, .. }
            | Event::Mmap { path: Some(path), .. }
            | Event::Binary { path, .. }
            | Event::Process { exe: Some(path), .. } => self.keep(path),
            Event::Open { path, ret, .. } if *ret >= 0 && path.starts_with(b"/") => self.keep(path),
            Event::Open { path, dir: Some(dir), dir_truncated: false, ret, .. }
                if *ret >= 0 && dir.starts_with(STORE_DIR.as_bytes()) =>
            {
                let mut joined = dir.clone();
                joined.push(b'/');
                joined.extend_from_slice(path);
                self.keep(&joined);
            }
            _ => {}
        }
    }

    fn keep(&mut self, path: &[u8]) {
        let Some(rest) = path.strip_prefix(STORE_DIR.as_bytes()).and_then(|r| r.strip_prefix(b"/")) else {
            return;
        };
        // Only the store path itself need be UTF-8: what is inside may not be.
        let end = STORE_DIR.len() + 1 + rest.iter().position(|b| *b == b'/').unwrap_or(rest.len());
        let Ok(prefix) = std::str::from_utf8(&path[..end]) else { return };
        if let Some(parsed) = parse_store_path(prefix)
            && !self.paths.contains(parsed.store_path)
        {
            self.paths.insert(parsed.store_path.to_string());
        }
    }

    #[cfg(test)]
    fn paths(&self) -> Vec<&str> {
        self.paths.iter().map(String::as_str).collect()
    }
}

/// What the store says of one store path (one entry of `nix-store --dump-db`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub path: String,
    pub deriver: Option<String>,
    pub references: Vec<String>,
}

/// The `StorePath` records of the closure of `touched`, then the
/// `StoreGraph` record; every record stamped `ts_ns` (the recording's stop).
pub async fn graph(touched: &StorePaths, ts_ns: u64) -> Vec<Event> {
    let result = read_graph(Path::new(STORE_DIR), find_nix_store, touched).await;
    records(result, ts_ns)
}

fn records(result: Result<Vec<Registration>, String>, ts_ns: u64) -> Vec<Event> {
    match result {
        Ok(registrations) => {
            let mut events: Vec<Event> = registrations
                .into_iter()
                .map(|r| Event::StorePath {
                    ts_ns,
                    path: r.path.into_bytes(),
                    deriver: r.deriver.map(String::into_bytes),
                    references: r.references.into_iter().map(String::into_bytes).collect(),
                })
                .collect();
            events.push(Event::StoreGraph { ts_ns, complete: true, error: None });
            events
        }
        Err(error) => vec![Event::StoreGraph { ts_ns, complete: false, error: Some(error.into_bytes()) }],
    }
}

/// The registrations of the closure of `touched`, sorted by path; or why
/// they could not be read. Runs nothing without a store or a touched path.
async fn read_graph(
    store: &Path,
    nix_store: impl FnOnce() -> Option<PathBuf>,
    touched: &StorePaths,
) -> Result<Vec<Registration>, String> {
    if !store.is_dir() {
        return Err("no Nix store on this machine".into());
    }
    if touched.paths.is_empty() {
        return Ok(Vec::new());
    }
    let Some(program) = nix_store() else {
        return Err(format!(
            "nix-store was not found (on PATH, {}), so the store's references were not read",
            NIX_STORE_ELSEWHERE.join(", ")
        ));
    };
    let deadline = tokio::time::Instant::now() + TIME_LIMIT;
    let touched: Vec<&str> = touched.paths.iter().map(String::as_str).collect();
    let closure = match requisites(&program, &touched, deadline).await {
        Ok(closure) => closure,
        Err(first) => {
            // Most likely a touched path is not valid (a build that failed,
            // a path being built): leave those out and ask again.
            let check = call(&program, &["--check-validity", "--print-invalid"], &touched, deadline).await;
            let invalid = match check {
                Ok(output) if !output.trim().is_empty() => lines(&output),
                _ => return Err(first),
            };
            let valid: Vec<&str> = touched.iter().copied().filter(|p| !invalid.contains(*p)).collect();
            requisites(&program, &valid, deadline).await?
        }
    };
    let closure: Vec<&str> = closure.iter().map(String::as_str).collect();
    let mut registrations = BTreeMap::new();
    for chunk in closure.chunks(PATHS_PER_CALL) {
        let output = call(&program, &["--dump-db"], chunk, deadline).await?;
        for registration in parse_dump_db(&output)? {
            registrations.insert(registration.path.clone(), registration);
        }
    }
    if let Some(missing) = closure.iter().find(|p| !registrations.contains_key(**p)) {
        return Err(format!("nix-store --dump-db did not describe {missing}"));
    }
    Ok(registrations.into_values().collect())
}

/// `nix-store --query --requisites`: `paths` and everything they refer to.
async fn requisites(
    program: &Path,
    paths: &[&str],
    deadline: tokio::time::Instant,
) -> Result<BTreeSet<String>, String> {
    let mut closure = BTreeSet::new();
    for chunk in paths.chunks(PATHS_PER_CALL) {
        closure.extend(lines(&call(program, &["--query", "--requisites"], chunk, deadline).await?));
    }
    Ok(closure)
}

fn lines(output: &str) -> BTreeSet<String> {
    output.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// Runs `nix-store ARGS PATHS...` and returns what it printed; kills it at
/// `deadline`.
async fn call(
    program: &Path,
    args: &[&str],
    paths: &[&str],
    deadline: tokio::time::Instant,
) -> Result<String, String> {
    let what = format!("nix-store {}", args.join(" "));
    let child = tokio::process::Command::new(program)
        .args(args)
        .args(paths)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let output = match tokio::time::timeout_at(deadline, child.wait_with_output()).await {
        Err(_) => return Err(format!("{what} did not answer within {} s", TIME_LIMIT.as_secs())),
        Ok(Err(e)) => return Err(format!("{what}: {e}")),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        return Err(format!("{what} failed ({}): {}", output.status, error_of(&output.stderr)));
    }
    String::from_utf8(output.stdout).map_err(|_| format!("{what} printed something that is not UTF-8"))
}

/// The `error:` lines of what nix-store printed on stderr (it warns about
/// other things on every call), else its last line.
fn error_of(stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    match errors.as_slice() {
        [] => stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message").to_string(),
        errors => errors.join("; "),
    }
}

/// `nix-store` on `PATH`, else where NixOS and a multi-user install put it.
fn find_nix_store() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("nix-store")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path.into_iter().chain(NIX_STORE_ELSEWHERE.iter().map(PathBuf::from)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.as_os_str().as_bytes().starts_with(b"/")
        && std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Parses what `nix-store --dump-db PATHS...` prints: for each path, the
/// lines
///
/// ```text
/// /nix/store/<hash>-<name>        the path
/// <sha256 of its NAR, in hex>
/// <NAR size in bytes>
/// /nix/store/<hash>-<name>.drv    its deriver, or an empty line
/// <number of references>
/// /nix/store/...                  that many references, one a line
/// ```
///
/// (Nix's "validity registration", `Store::makeValidityRegistration` with
/// derivers and hashes: the same in Nix 2.8, as here, and in current Nix.)
pub fn parse_dump_db(output: &str) -> Result<Vec<Registration>, String> {
    let mut lines = output.lines().enumerate();
    let mut registrations = Vec::new();
    while let Some((line, path)) = lines.next() {
        if !is_store_path(path) {
            return Err(unexpected(line, "a store path", path));
        }
        let mut field = |what: &str| {
            lines
                .next()
                .ok_or_else(|| format!("nix-store --dump-db: the entry of {path} ends before its {what}"))
        };
        let (line, hash) = field("hash")?;
        if hash.is_empty() || !hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b':') {
            return Err(unexpected(line, "a hash", hash));
        }
        let (line, size) = field("size")?;
        size.parse::<u64>().map_err(|_| unexpected(line, "a size", size))?;
        let (line, deriver) = field("deriver")?;
        if !deriver.is_empty() && !is_store_path(deriver) {
            return Err(unexpected(line, "a deriver", deriver));
        }
        let (line, count) = field("number of references")?;
        let count: usize = count.parse().map_err(|_| unexpected(line, "a number of references", count))?;
        let mut references = Vec::new();
        for _ in 0..count {
            let (line, reference) = field("references")?;
            if !is_store_path(reference) {
                return Err(unexpected(line, "a store path", reference));
            }
            references.push(reference.to_string());
        }
        registrations.push(Registration {
            path: path.to_string(),
            deriver: (!deriver.is_empty()).then(|| deriver.to_string()),
            references,
        });
    }
    Ok(registrations)
}

/// `/nix/store/<hash>-<name>`, nothing more.
fn is_store_path(path: &str) -> bool {
    parse_store_path(path).is_some_and(|p| p.store_path == path)
}

/// `line` (from 0) of nix-store's output is not `what` it should be.
fn unexpected(line: usize, what: &str, found: &str) -> String {
    format!("nix-store --dump-db: line {}: expected {what}, found {found:?}", line + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Common, OpenSyscall};

    /// `nix-store --dump-db $(nix-store -qR TOOLC) NOTE` on the development
    /// machine (Nix 2.8): toolc refers to itself, proga and libb; proga to
    /// libb; libb to nothing; note.txt was added with `nix-store --add`, so
    /// it has no deriver.
    const DUMP_DB: &str = "\
/nix/store/26q7ca3rcl2lhj1xivwsncpalidjnly5-libb-1.0
ff39d8c71207b2e7862a42e00631316d58144a490c5b362277f837a586ae81f9
464
/nix/store/l25v0z585pp2xfr7ksq4gzk678ckphd9-libb-1.0.drv
0
/nix/store/9an737i2ccchzbw6cdmfhiffxr0grm1v-proga-2.0
ec6b9aa8de1e33ee80a5f6eeb3696f0ae9d64e826d1c456443055bb49b318dfd
568
/nix/store/0js4gd15bzhv75908maiqpph45sa96ja-proga-2.0.drv
1
/nix/store/26q7ca3rcl2lhj1xivwsncpalidjnly5-libb-1.0
/nix/store/xkq39375xf2mmqx7y7d8sww8yk248jcz-toolc-3.1-bin
52d339ce77467e3a4779bf854ca7276b02a1f5af6aadd2fa8c72ca9b2d39e0dd
688
/nix/store/sfq45fz0q8kbgjxbrr7y6kchp2s041pc-toolc-3.1-bin.drv
3
/nix/store/26q7ca3rcl2lhj1xivwsncpalidjnly5-libb-1.0
/nix/store/9an737i2ccchzbw6cdmfhiffxr0grm1v-proga-2.0
/nix/store/xkq39375xf2mmqx7y7d8sww8yk248jcz-toolc-3.1-bin
/nix/store/9j4qzr7490yaf5id1rvgl69jgsjl8vbl-note.txt
1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13
120

0
";

    const LIBB: &str = "/nix/store/26q7ca3rcl2lhj1xivwsncpalidjnly5-libb-1.0";
    const PROGA: &str = "/nix/store/9an737i2ccchzbw6cdmfhiffxr0grm1v-proga-2.0";
    const TOOLC: &str = "/nix/store/xkq39375xf2mmqx7y7d8sww8yk248jcz-toolc-3.1-bin";

    fn registration(path: &str, deriver: Option<&str>, references: &[&str]) -> Registration {
        Registration {
            path: path.into(),
            deriver: deriver.map(str::to_string),
            references: references.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn parses_what_nix_store_dump_db_prints() {
        assert_eq!(
            parse_dump_db(DUMP_DB).unwrap(),
            [
                registration(LIBB, Some("/nix/store/l25v0z585pp2xfr7ksq4gzk678ckphd9-libb-1.0.drv"), &[]),
                registration(
                    PROGA,
                    Some("/nix/store/0js4gd15bzhv75908maiqpph45sa96ja-proga-2.0.drv"),
                    &[LIBB]
                ),
                registration(
                    TOOLC,
                    Some("/nix/store/sfq45fz0q8kbgjxbrr7y6kchp2s041pc-toolc-3.1-bin.drv"),
                    &[LIBB, PROGA, TOOLC]
                ),
                registration("/nix/store/9j4qzr7490yaf5id1rvgl69jgsjl8vbl-note.txt", None, &[]),
            ]
        );
        assert_eq!(parse_dump_db("").unwrap(), []);
    }

    #[test]
    fn refuses_dump_db_output_it_does_not_understand() {
        // Cut after proga's deriver.
        let drv = "0js4gd15bzhv75908maiqpph45sa96ja-proga-2.0.drv\n";
        let error = parse_dump_db(&DUMP_DB[..DUMP_DB.find(drv).unwrap() + drv.len()]).unwrap_err();
        assert_eq!(
            error,
            "nix-store --dump-db: the entry of /nix/store/9an737i2ccchzbw6cdmfhiffxr0grm1v-proga-2.0 ends before its number of references"
        );
        let error = parse_dump_db(&DUMP_DB.replacen("\n464\n", "\nlots\n", 1)).unwrap_err();
        assert_eq!(error, "nix-store --dump-db: line 3: expected a size, found \"lots\"");
        let error = parse_dump_db("error: something\n").unwrap_err();
        assert_eq!(error, "nix-store --dump-db: line 1: expected a store path, found \"error: something\"");
        // One reference too many: the next entry's path is taken for it, and its hash for a path.
        let error = parse_dump_db(&DUMP_DB.replacen("\n3\n", "\n4\n", 1)).unwrap_err();
        assert_eq!(
            error,
            "nix-store --dump-db: line 21: expected a store path, found \"1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13\""
        );
    }

    fn common() -> Common {
        Common { ts_ns: 1, pid: 2, tid: 2, cgroup_id: 3 }
    }

    fn open(path: &[u8], dir: Option<&[u8]>, ret: i64) -> Event {
        Event::Open {
            common: common(),
            syscall: OpenSyscall::Openat,
            dfd: -100,
            path: path.to_vec(),
            dir: dir.map(<[u8]>::to_vec),
            dir_truncated: false,
            flags: 0,
            mode: 0,
            ret,
            duration_ns: 1,
            ino: 1,
            dev: 1,
        }
    }

    #[test]
    fn keeps_the_store_path_of_every_file_the_events_name() {
        let mut paths = StorePaths::default();
        let exec = Event::Exec {
            common: common(),
            old_tid: 2,
            filename: format!("{TOOLC}/bin/toolc").into_bytes(),
            argv: vec![],
            argv_truncated: false,
            dev: 1,
            ino: 1,
            loader_env: Vec::new(),
            env_truncated: false,
        };
        paths.observe(&exec);
        paths.observe(&exec);
        paths.observe(&open(format!("{PROGA}/bin/prog").as_bytes(), None, 3));
        // A relative open inside the store, the inside not UTF-8.
        paths.observe(&open(b"26q7ca3rcl2lhj1xivwsncpalidjnly5-libb-1.0/lib/\xff", Some(b"/nix/store"), 4));
        // Failed opens, paths outside the store or not store paths: none.
        paths.observe(&open(b"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-missing/lib", None, -2));
        paths.observe(&open(b"/usr/lib/libc.so.6", None, 3));
        paths.observe(&open(b"/nix/store/.links/abc", None, 3));
        paths.observe(&open(b"lib/libc.so.6", Some(b"/home/u"), 3));
        assert_eq!(paths.paths(), [LIBB, PROGA, TOOLC]);
    }

    #[test]
    fn the_graph_becomes_store_path_records_then_a_complete_store_graph() {
        let events = records(Ok(parse_dump_db(DUMP_DB).unwrap()[1..2].to_vec()), 7);
        assert_eq!(
            events,
            [
                Event::StorePath {
                    ts_ns: 7,
                    path: PROGA.into(),
                    deriver: Some(b"/nix/store/0js4gd15bzhv75908maiqpph45sa96ja-proga-2.0.drv".to_vec()),
                    references: vec![LIBB.into()],
                },
                Event::StoreGraph { ts_ns: 7, complete: true, error: None },
            ]
        );
        let events = records(Err("no luck".into()), 7);
        assert_eq!(
            events,
            [Event::StoreGraph { ts_ns: 7, complete: false, error: Some(b"no luck".to_vec()) }]
        );
    }

    fn read(
        store: &Path,
        nix_store: Option<PathBuf>,
        touched: &StorePaths,
    ) -> Result<Vec<Registration>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(read_graph(store, || nix_store, touched))
    }

    #[test]
    fn without_a_store_or_a_touched_path_nothing_runs() {
        let mut touched = StorePaths::default();
        touched.keep(PROGA.as_bytes());
        let nothing = Some(PathBuf::from("/nonexistent/nix-store"));
        let error = read(Path::new("/nonexistent/store"), nothing.clone(), &touched).unwrap_err();
        assert_eq!(error, "no Nix store on this machine");
        // Any directory stands for the store: nothing was touched, so nix-store is not run.
        assert_eq!(read(Path::new("/"), nothing, &StorePaths::default()).unwrap(), []);
        let error = read(Path::new("/"), None, &touched).unwrap_err();
        assert!(error.starts_with("nix-store was not found"), "{error}");
    }

    #[test]
    fn a_failing_nix_store_is_an_error_in_the_trace() {
        let mut touched = StorePaths::default();
        touched.keep(PROGA.as_bytes());
        // `false` stands for a nix-store that fails every query.
        let error = read(Path::new("/"), Some(PathBuf::from("/bin/false")), &touched).unwrap_err();
        assert!(error.starts_with("nix-store --query --requisites failed (exit status: 1)"), "{error}");
        assert_eq!(
            error_of(
                b"warning: the group 'nixbld' does not exist\nerror: path '/nix/store/x' is not valid\n"
            ),
            "error: path '/nix/store/x' is not valid"
        );
    }
}
