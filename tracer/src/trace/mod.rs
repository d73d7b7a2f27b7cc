//! The trace file: a versioned, self-describing, streaming format
//! (`docs/trace-format.md`). The recorder writes it; every analysis reads it.

pub mod event;
pub mod format;
pub mod probe;
pub mod reader;
pub mod writer;

pub use event::{Common, ElfFacts, Event, LoaderPhase, OpenSyscall, StatSyscall, Stats, ThreadTimes};
pub use format::{
    BootSetup, ClockReference, FileId, Filters, Header, Initrd, InitrdRun, MissingProbe, TracerCost,
};
pub use probe::Probe;
pub use reader::TraceReader;
pub use writer::TraceWriter;

#[cfg(test)]
pub(crate) mod tests {
    use super::{reader::TraceError, *};

    pub(crate) fn header() -> Header {
        Header {
            nixtrace_version: "test".into(),
            host: "host".into(),
            kernel_release: "6.18.0".into(),
            boot_id: "00000000-0000-0000-0000-000000000000".into(),
            clock: ClockReference { boottime_ns: 1, realtime_ns: 2 },
            probes: vec![Probe::Exec],
            missing_probes: Vec::new(),
            attach_ns: 12_000_000,
            tracer_cost: Some(TracerCost { failed_open_ns: 800, open_ns: 1300, mmap_ns: 1100 }),
            loaders: vec![FileId { path: "/lib64/ld-linux-x86-64.so.2".into(), dev: 0xfe00000, ino: 7 }],
            argv_max: 1024,
            cpus: 2,
            command: Some(vec!["true".into()]),
            boot: None,
            filters: Filters::default(),
        }
    }

    fn common(ts_ns: u64, pid: u32, tid: u32) -> Common {
        Common { ts_ns, pid, tid, cgroup_id: 4242 }
    }

    fn sample_events() -> Vec<Event> {
        vec![
            Event::Process { ts_ns: 5, pid: 1, ppid: 0, start_ns: 3, cgroup_id: 1, exe: None, argv: vec![] },
            Event::Fork { common: common(1000, 10, 10), child_pid: 11, child_tid: 11, clone_flags: 0x11 },
            Event::Exec {
                common: common(1200, 11, 11),
                old_tid: 11,
                filename: b"/bin/true".to_vec(),
                argv: vec![b"true".to_vec(), b"".to_vec(), b"x y".to_vec()],
                argv_truncated: true,
                dev: 8,
                ino: 1234,
                loader_env: vec![
                    (b"LD_LIBRARY_PATH".to_vec(), b"/a:/b".to_vec()),
                    (b"LD_PRELOAD".to_vec(), vec![]),
                ],
                env_truncated: false,
            },
            Event::ExecFailed { common: common(1100, 11, 12), filename: b"/nope".to_vec(), ret: -2 },
            Event::Open {
                common: common(1300, 11, 11),
                syscall: OpenSyscall::Openat2,
                dfd: -100,
                path: b"lib\xffc.so".to_vec(),
                dir: Some(b"/tmp".to_vec()),
                dir_truncated: false,
                flags: 0x80000,
                mode: 0o644,
                ret: -2,
                duration_ns: 1234,
                ino: 99,
                dev: 8,
            },
            Event::Stat {
                common: common(1305, 11, 11),
                syscall: StatSyscall::Newfstatat,
                dfd: 3,
                path: b"os.py".to_vec(),
                dir: Some(b"/usr/lib/python3".to_vec()),
                dir_truncated: true,
                flags: 0x100,
                mode: 0,
                ret: -2,
                duration_ns: 812,
            },
            Event::PageCache { common: common(1310, 11, 11), dev: 8, ino: 99, index: 4, pages: 16 },
            Event::BlockIo {
                common: common(1320, 11, 11),
                dev: 8,
                sector: 123456,
                bytes: 65536,
                latency_ns: 80_000,
                write: false,
                error: 0,
            },
            Event::Mmap {
                common: common(1400, 11, 11),
                path: None,
                path_truncated: false,
                addr: 0x7fff_0000_0000,
                len: 4096,
                offset: 0,
                prot: 5,
                flags: 0x22,
                fd: -1,
                dev: 0,
                ino: 0,
                duration_ns: 900,
            },
            Event::Loader { common: common(1450, 11, 11), phase: LoaderPhase::Done },
            Event::FileRead { common: common(1595, 11, 11), dev: 8, ino: 99, bytes: 12345 },
            Event::Sched {
                common: common(1590, 11, 11),
                times: ThreadTimes { on_cpu_ns: 1, runnable_ns: 2, blocked_ns: 3, sleeping_ns: 4 },
            },
            Event::Cgroup {
                common: common(1500, 1, 1),
                id: 77,
                level: 2,
                path: b"/a/b".to_vec(),
                seeded: true,
            },
            Event::Binary {
                ts_ns: 1550,
                dev: 8,
                ino: 1234,
                path: b"/bin/true".to_vec(),
                size_bytes: 39_000,
                facts: Box::new(ElfFacts {
                    build_id: Some("ab12".into()),
                    interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
                    needed: vec!["libc.so.6".into()],
                    runpath: vec!["$ORIGIN/../lib".into(), String::new()],
                    rpath: Vec::new(),
                    soname: None,
                    bind_now: true,
                    relocations: 321,
                    dynamic_symbols: 45,
                    entry: 0x1234,
                    is_dynamic: true,
                }),
                error: None,
            },
            Event::Exit { common: common(1600, 11, 11), status: 3 << 8, group_dead: true },
            Event::StorePath {
                ts_ns: 1700,
                path: b"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-hello-2.12.1".to_vec(),
                deriver: Some(b"/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-hello-2.12.1.drv".to_vec()),
                references: vec![
                    b"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-hello-2.12.1".to_vec(),
                    b"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-glibc-2.39-52".to_vec(),
                ],
            },
            Event::StorePath {
                ts_ns: 1700,
                path: b"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-glibc-2.39-52".to_vec(),
                deriver: None,
                references: Vec::new(),
            },
            Event::StoreGraph { ts_ns: 1700, complete: true, error: None },
            Event::SystemdAnalyze {
                ts_ns: 1800,
                critical_chain: Some("multi-user.target @2.5s\n└─a.service @1s +1.5s\n".into()),
                blame: None,
                unit_times: Some(b"UserspaceTimestampMonotonic=800000\n\nId=a.service\n".to_vec()),
            },
        ]
    }

    fn write_all(events: &[Event], finish: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = TraceWriter::new(&mut out, &header()).unwrap();
        for event in events {
            writer.write(event).unwrap();
        }
        if finish {
            let stats =
                Stats { ts_ns: 2000, events: events.len() as u64, lost: [("open".to_string(), 3)].into() };
            writer.finish(&stats).unwrap();
        } else {
            writer.flush_block().unwrap();
        }
        out
    }

    #[test]
    fn round_trips_every_event_kind() {
        let events = sample_events();
        let bytes = write_all(&events, true);
        let mut reader = TraceReader::new(bytes.as_slice()).unwrap();
        assert_eq!(reader.header(), &header());
        let read: Vec<Event> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(&read[..events.len()], &events[..]);
        let Event::Stats(stats) = &read[events.len()] else { panic!("no final stats: {read:?}") };
        assert_eq!(stats.lost_total(), 3);
        assert_eq!(read.len(), events.len() + 1);
        assert_eq!(reader.cut_short(), None);
    }

    #[test]
    fn strings_are_stored_once() {
        let mut open = sample_events().remove(4);
        if let Event::Open { path, .. } = &mut open {
            *path = vec![b'x'; 300];
        }
        let one = write_all(std::slice::from_ref(&open), true).len();
        let many = write_all(&vec![open; 101], true).len();
        // 100 more opens of the same 300-byte path cost a few bytes each.
        let per_open = (many - one) / 100;
        assert!(per_open <= 24, "{per_open} bytes per repeated open");
    }

    #[test]
    fn a_trace_without_end_record_is_cut_short() {
        let events = sample_events();
        let bytes = write_all(&events, false);
        let mut reader = TraceReader::new(bytes.as_slice()).unwrap();
        assert_eq!(reader.by_ref().count(), events.len());
        assert!(reader.cut_short().unwrap().contains("no end record"));
    }

    #[test]
    fn a_torn_block_reads_back_up_to_the_last_complete_block() {
        let events = sample_events();
        let mut writer = TraceWriter::new(Vec::new(), &header()).unwrap();
        writer.write(&events[1]).unwrap();
        writer.flush_block().unwrap();
        writer.write(&events[2]).unwrap();
        writer.flush_block().unwrap();
        let mut bytes = writer.finish(&Stats::default()).unwrap();
        // Cut into the middle of the last block.
        bytes.truncate(bytes.len() - 5);
        let mut reader = TraceReader::new(bytes.as_slice()).unwrap();
        let read: Vec<Event> = reader.by_ref().map(Result::unwrap).collect();
        assert_eq!(read, events[1..3]);
        assert!(reader.cut_short().unwrap().contains("incomplete"), "{:?}", reader.cut_short());
    }

    #[test]
    fn rejects_what_is_not_a_trace() {
        assert!(matches!(TraceReader::new(&b"hello world\n"[..]), Err(TraceError::NotATrace)));
        assert!(matches!(TraceReader::new(&b""[..]), Err(TraceError::NotATrace)));
        let mut future = write_all(&[], true);
        future[8] = 99;
        assert!(matches!(TraceReader::new(future.as_slice()), Err(TraceError::UnsupportedVersion(99))));
    }

    /// An open of `path` by the sample's process.
    fn open_of(path: Vec<u8>) -> Event {
        let mut open = sample_events().remove(4);
        if let Event::Open { path: p, .. } = &mut open {
            *p = path;
        }
        open
    }

    #[test]
    fn implausibly_long_strings_are_corruption() {
        let bytes = write_all(&[open_of(vec![b'x'; format::STRING_MAX + 1])], true);
        let reader = TraceReader::new(bytes.as_slice()).unwrap();
        let err = reader.filter_map(Result::err).next().expect("an error");
        assert!(err.to_string().contains("implausible"), "{err}");
    }

    #[test]
    fn long_and_invalid_utf8_strings_go_through_every_output() {
        let mut events = sample_events();
        let mut long = b"/nix/store/".to_vec();
        long.extend(std::iter::repeat_n(0xff, 64 * 1024));
        if let Event::Exec { filename, argv, .. } = &mut events[2] {
            *filename = long.clone();
            argv.push(long.clone());
        }
        events.push(open_of(long));
        let bytes = write_all(&events, true);
        let analysis =
            crate::analysis::analyse(bytes.as_slice(), "t", &crate::analysis::Filter::default()).unwrap();
        let exe = analysis.processes.iter().find_map(|p| p.exe.as_deref().filter(|e| e.len() > 1000));
        assert!(exe.is_some_and(|e| e.ends_with('\u{fffd}')), "the long exe, shown lossily");
        // Every renderer, flamegraph, the diff and the export, without a panic.
        crate::fuzzing::report_pipeline(&bytes);
    }

    #[test]
    fn counters_that_overflow_saturate_through_every_output() {
        let mut events = sample_events();
        let huge_read = Event::FileRead { common: common(1600, 11, 11), dev: 8, ino: 99, bytes: u64::MAX };
        events.extend([huge_read.clone(), huge_read]);
        let bytes = write_all(&events, true);
        let analysis =
            crate::analysis::analyse(bytes.as_slice(), "t", &crate::analysis::Filter::default()).unwrap();
        let row = analysis.processes.iter().find(|p| p.pid == 11).expect("the sample's process");
        assert_eq!(row.io.read_bytes, u64::MAX);
        crate::fuzzing::report_pipeline(&bytes);
    }

    #[test]
    fn a_flipped_bit_is_reported_as_corruption() {
        let mut bytes = write_all(&sample_events(), true);
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        let reader = TraceReader::new(bytes.as_slice()).unwrap();
        let err = reader.filter_map(Result::err).next().expect("an error");
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}

/// Property tests: any sequence of events survives a write and a read, and
/// any cut of the file reads back as a prefix of it.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        // Short alphabet so strings repeat (interning), any byte allowed.
        prop_oneof![proptest::collection::vec(any::<u8>(), 0..40), proptest::collection::vec(0u8..4, 0..4)]
    }

    fn common() -> impl Strategy<Value = Common> {
        (any::<u64>(), any::<u32>(), any::<u32>(), any::<u64>())
            .prop_map(|(ts_ns, pid, tid, cgroup_id)| Common { ts_ns, pid, tid, cgroup_id })
    }

    fn text() -> impl Strategy<Value = String> {
        ".{0,12}"
    }

    fn texts() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(text(), 0..4)
    }

    fn argv() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(bytes(), 0..5)
    }

    fn open_syscall() -> impl Strategy<Value = OpenSyscall> {
        prop_oneof![Just(OpenSyscall::Open), Just(OpenSyscall::Openat), Just(OpenSyscall::Openat2)]
    }

    fn stat_syscall() -> impl Strategy<Value = StatSyscall> {
        proptest::sample::select(StatSyscall::ALL.to_vec())
    }

    fn loader_phase() -> impl Strategy<Value = LoaderPhase> {
        prop_oneof![Just(LoaderPhase::Start), Just(LoaderPhase::Done), Just(LoaderPhase::Entry)]
    }

    fn elf_facts() -> impl Strategy<Value = ElfFacts> {
        (
            proptest::option::of(text()),
            proptest::option::of(text()),
            texts(),
            texts(),
            texts(),
            proptest::option::of(text()),
            any::<bool>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
        )
            .prop_map(
                |(
                    build_id,
                    interpreter,
                    needed,
                    runpath,
                    rpath,
                    soname,
                    bind_now,
                    relocations,
                    dynamic_symbols,
                    entry,
                    is_dynamic,
                )| {
                    ElfFacts {
                        build_id,
                        interpreter,
                        needed,
                        runpath,
                        rpath,
                        soname,
                        bind_now,
                        relocations,
                        dynamic_symbols,
                        entry,
                        is_dynamic,
                    }
                },
            )
    }

    /// Every variant, each field drawn on its own.
    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (common(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
                |(common, child_pid, child_tid, clone_flags)| {
                    Event::Fork { common, child_pid, child_tid, clone_flags }
                }
            ),
            (
                common(),
                any::<u32>(),
                bytes(),
                argv(),
                any::<bool>(),
                any::<u32>(),
                any::<u64>(),
                proptest::collection::vec((bytes(), bytes()), 0..3),
                any::<bool>()
            )
                .prop_map(
                    |(
                        common,
                        old_tid,
                        filename,
                        argv,
                        argv_truncated,
                        dev,
                        ino,
                        loader_env,
                        env_truncated,
                    )| {
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
                        }
                    }
                ),
            (common(), bytes(), any::<i32>()).prop_map(|(common, filename, ret)| Event::ExecFailed {
                common,
                filename,
                ret
            }),
            (common(), any::<i32>(), any::<bool>()).prop_map(|(common, status, group_dead)| Event::Exit {
                common,
                status,
                group_dead
            }),
            (
                common(),
                open_syscall(),
                any::<i32>(),
                bytes(),
                proptest::option::of(bytes()),
                any::<bool>(),
                any::<u64>(),
                any::<u32>(),
                any::<i64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
            )
                .prop_map(
                    |(
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
                    )| {
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
                        }
                    }
                ),
            (
                common(),
                stat_syscall(),
                any::<i32>(),
                bytes(),
                proptest::option::of(bytes()),
                any::<bool>(),
                any::<u32>(),
                any::<u32>(),
                any::<i64>(),
                any::<u64>(),
            )
                .prop_map(
                    |(common, syscall, dfd, path, dir, dir_truncated, flags, mode, ret, duration_ns)| {
                        Event::Stat {
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
                        }
                    }
                ),
            (
                common(),
                proptest::option::of(bytes()),
                any::<bool>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                any::<i32>(),
                any::<u32>(),
                any::<u64>(),
                any::<u64>(),
            )
                .prop_map(
                    |(
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
                    )| {
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
                        }
                    }
                ),
            (common(), any::<u32>(), any::<u64>(), any::<u64>(), any::<u32>()).prop_map(
                |(common, dev, ino, index, pages)| Event::PageCache { common, dev, ino, index, pages }
            ),
            (common(), any::<u32>(), any::<u64>(), any::<u32>(), any::<u64>(), any::<bool>(), any::<i32>())
                .prop_map(|(common, dev, sector, bytes, latency_ns, write, error)| Event::BlockIo {
                    common,
                    dev,
                    sector,
                    bytes,
                    latency_ns,
                    write,
                    error
                }),
            (common(), any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(common, on_cpu_ns, runnable_ns, blocked_ns, sleeping_ns)| Event::Sched {
                    common,
                    times: ThreadTimes { on_cpu_ns, runnable_ns, blocked_ns, sleeping_ns }
                }
            ),
            (common(), any::<u32>(), any::<u64>(), any::<u64>())
                .prop_map(|(common, dev, ino, bytes)| Event::FileRead { common, dev, ino, bytes }),
            (common(), loader_phase()).prop_map(|(common, phase)| Event::Loader { common, phase }),
            (common(), any::<u64>(), any::<u32>(), bytes(), any::<bool>()).prop_map(
                |(common, id, level, path, seeded)| Event::Cgroup { common, id, level, path, seeded }
            ),
            (
                any::<u64>(),
                any::<u32>(),
                any::<u32>(),
                any::<u64>(),
                any::<u64>(),
                proptest::option::of(bytes()),
                argv()
            )
                .prop_map(|(ts_ns, pid, ppid, start_ns, cgroup_id, exe, argv)| Event::Process {
                    ts_ns,
                    pid,
                    ppid,
                    start_ns,
                    cgroup_id,
                    exe,
                    argv
                }),
            (
                any::<u64>(),
                any::<u32>(),
                any::<u64>(),
                bytes(),
                any::<u64>(),
                elf_facts(),
                proptest::option::of(bytes())
            )
                .prop_map(|(ts_ns, dev, ino, path, size_bytes, facts, error)| Event::Binary {
                    ts_ns,
                    dev,
                    ino,
                    path,
                    size_bytes,
                    facts: Box::new(facts),
                    error
                }),
            (any::<u64>(), bytes(), proptest::option::of(bytes()), argv()).prop_map(
                |(ts_ns, path, deriver, references)| Event::StorePath { ts_ns, path, deriver, references }
            ),
            (any::<u64>(), any::<bool>(), proptest::option::of(bytes()))
                .prop_map(|(ts_ns, complete, error)| Event::StoreGraph { ts_ns, complete, error }),
            (
                any::<u64>(),
                proptest::option::of(bytes()),
                proptest::option::of(bytes()),
                proptest::option::of(bytes())
            )
                .prop_map(|(ts_ns, critical_chain, blame, unit_times)| Event::SystemdAnalyze {
                    ts_ns,
                    critical_chain,
                    blame,
                    unit_times
                }),
            (any::<u64>(), any::<u64>(), proptest::collection::btree_map(text(), any::<u64>(), 0..4))
                .prop_map(|(ts_ns, events, lost)| Event::Stats(Stats { ts_ns, events, lost })),
        ]
    }

    /// The position of `event`'s variant: an exhaustive match, so a new
    /// variant fails to compile here until the strategy draws it too.
    fn variant(event: &Event) -> usize {
        match event {
            Event::Fork { .. } => 0,
            Event::Exec { .. } => 1,
            Event::ExecFailed { .. } => 2,
            Event::Exit { .. } => 3,
            Event::Open { .. } => 4,
            Event::Mmap { .. } => 5,
            Event::PageCache { .. } => 6,
            Event::BlockIo { .. } => 7,
            Event::Sched { .. } => 8,
            Event::FileRead { .. } => 9,
            Event::Loader { .. } => 10,
            Event::Cgroup { .. } => 11,
            Event::Process { .. } => 12,
            Event::Binary { .. } => 13,
            Event::StorePath { .. } => 14,
            Event::StoreGraph { .. } => 15,
            Event::Stats(_) => 16,
            Event::Stat { .. } => 17,
            Event::SystemdAnalyze { .. } => 18,
        }
    }
    const VARIANTS: usize = 19;

    #[test]
    fn the_strategy_draws_every_variant() {
        use proptest::strategy::ValueTree as _;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut seen = [false; VARIANTS];
        for _ in 0..2000 {
            seen[variant(&event().new_tree(&mut runner).unwrap().current())] = true;
        }
        assert_eq!(seen, [true; VARIANTS]);
    }

    fn write(events: &[Event]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = TraceWriter::new(&mut out, &tests::header()).unwrap();
        for (i, event) in events.iter().enumerate() {
            writer.write(event).unwrap();
            if i % 7 == 6 {
                writer.flush_block().unwrap();
            }
        }
        writer.finish(&Stats::default()).unwrap();
        out
    }

    proptest! {
        #[test]
        fn events_round_trip(events in proptest::collection::vec(event(), 0..60)) {
            let bytes = write(&events);
            let mut reader = TraceReader::new(bytes.as_slice()).unwrap();
            let read: Vec<Event> = reader.by_ref().map(Result::unwrap).collect();
            prop_assert_eq!(&read[..events.len()], &events[..]);
            prop_assert_eq!(read.len(), events.len() + 1);
            prop_assert!(reader.cut_short().is_none());
        }

        #[test]
        fn a_cut_file_reads_back_a_prefix(events in proptest::collection::vec(event(), 1..60), cut in any::<prop::sample::Index>()) {
            let bytes = write(&events);
            let cut = cut.index(bytes.len());
            match TraceReader::new(&bytes[..cut]) {
                Ok(mut reader) => {
                    let read: Vec<Event> = reader.by_ref().map(Result::unwrap).collect();
                    prop_assert!(read.len() <= events.len() + 1);
                    prop_assert_eq!(&read[..read.len().min(events.len())], &events[..read.len().min(events.len())]);
                    prop_assert!(reader.cut_short().is_some());
                }
                // Cut inside the header: refused, never a panic.
                Err(_) => prop_assert!(cut < 16 + serde_json::to_vec(&tests::header()).unwrap().len()),
            }
        }
    }
}
