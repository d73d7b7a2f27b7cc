//! Probe identity: one name per probe, the same in the trace header
//! (`probes`, `missing_probes`), on the command line (`record --no-probe`)
//! and in everything that asks whether a trace was recorded with a probe.
//! (The loss counters are keyed by their own slot names, which are not all
//! probes.)

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// What the recorder attaches as one unit: a group of tracepoint programs,
/// or the loader uprobes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Probe {
    Fork,
    Exec,
    Exit,
    Open,
    Mmap,
    CgroupMkdir,
    PageCache,
    BlockIo,
    Sched,
    Read,
    /// The stat family (stat, access, readlink and their *at forms): off
    /// unless asked for.
    Stat,
    /// The uprobes in the glibc loaders: in a trace's `probes` only when they
    /// were attached to at least one loader.
    Loader,
}

impl Probe {
    /// Every probe, in the order the recorder attaches them and the header
    /// lists them.
    pub const ALL: [Probe; 12] = [
        Probe::Fork,
        Probe::Exec,
        Probe::Exit,
        Probe::Open,
        Probe::Mmap,
        Probe::CgroupMkdir,
        Probe::PageCache,
        Probe::BlockIo,
        Probe::Sched,
        Probe::Read,
        Probe::Stat,
        Probe::Loader,
    ];

    /// Its name in the trace header and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Probe::Fork => "fork",
            Probe::Exec => "exec",
            Probe::Exit => "exit",
            Probe::Open => "open",
            Probe::Mmap => "mmap",
            Probe::CgroupMkdir => "cgroup_mkdir",
            Probe::PageCache => "page_cache",
            Probe::BlockIo => "block_io",
            Probe::Sched => "sched",
            Probe::Read => "read",
            Probe::Stat => "stat",
            Probe::Loader => "loader",
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no probe's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownProbe(pub String);

impl fmt::Display for UnknownProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no probe is named {:?}", self.0)
    }
}

impl std::error::Error for UnknownProbe {}

impl FromStr for Probe {
    type Err = UnknownProbe;

    fn from_str(name: &str) -> Result<Probe, UnknownProbe> {
        Probe::ALL.into_iter().find(|probe| probe.name() == name).ok_or_else(|| UnknownProbe(name.into()))
    }
}

/// As its name, so the header reads as it always has.
impl Serialize for Probe {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Probe, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names traces have always carried, in attach order.
    #[test]
    fn names_are_the_header_s() {
        let names: Vec<&str> = Probe::ALL.iter().map(|probe| probe.name()).collect();
        assert_eq!(
            names,
            [
                "fork",
                "exec",
                "exit",
                "open",
                "mmap",
                "cgroup_mkdir",
                "page_cache",
                "block_io",
                "sched",
                "read",
                "stat",
                "loader"
            ]
        );
    }

    #[test]
    fn names_parse_and_serialize_back() {
        for probe in Probe::ALL {
            assert_eq!(probe.name().parse::<Probe>(), Ok(probe));
            let json = serde_json::to_string(&probe).unwrap();
            assert_eq!(json, format!("\"{probe}\""));
            assert_eq!(serde_json::from_str::<Probe>(&json).unwrap(), probe);
        }
        assert_eq!("exec_failed".parse::<Probe>(), Err(UnknownProbe("exec_failed".into())));
        let error = serde_json::from_str::<Probe>("\"sys_enter_openat\"").unwrap_err();
        assert!(error.to_string().contains("no probe is named \"sys_enter_openat\""), "{error}");
    }
}
