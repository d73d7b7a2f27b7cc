//! systemd units from cgroup paths: `/system.slice/nginx.service` belongs
//! to `nginx.service`. Every cgroup the trace saw (created during it or
//! present at its start) keeps its path, so units that ended long before
//! the report still resolve.

use super::FastMap;

use crate::trace::{Event, event::Bytes};

const UNIT_SUFFIXES: &[&str] = &[".service", ".scope", ".socket", ".mount", ".swap", ".timer", ".slice"];

/// The unit a cgroup path belongs to: its innermost component that names a
/// unit, preferring anything over a slice (`user@1000.service` inside
/// `user-1000.slice` is the service). None outside any unit.
pub fn unit_of_cgroup(path: &str) -> Option<&str> {
    let mut slice = None;
    for component in path.split('/').rev().filter(|c| !c.is_empty()) {
        if component.ends_with(".slice") {
            slice = slice.or(Some(component));
        } else if UNIT_SUFFIXES.iter().any(|s| component.ends_with(s)) {
            return Some(component);
        }
    }
    slice
}

/// cgroup id -> path, from every cgroup record in the trace.
#[derive(Debug, Default)]
pub struct CgroupNames {
    paths: FastMap<u64, Bytes>,
}

impl CgroupNames {
    pub fn add(&mut self, event: &Event) {
        if let Event::Cgroup { id, path, .. } = event {
            self.paths.insert(*id, path.clone());
        }
    }

    pub fn path(&self, id: u64) -> Option<String> {
        self.paths.get(&id).map(|p| String::from_utf8_lossy(p).into_owned())
    }

    /// The unit of cgroup `id`, or its path when it is in no unit, or
    /// `cgroup:ID` when the trace never named it.
    pub fn unit(&self, id: u64) -> String {
        match self.path(id) {
            Some(path) => unit_of_cgroup(&path).map_or(path.clone(), str::to_string),
            None => format!("cgroup:{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unit_of_cgroup;

    #[test]
    fn finds_the_innermost_unit() {
        let cases = [
            ("/system.slice/nginx.service", Some("nginx.service")),
            ("/system.slice/systemd-journald.service", Some("systemd-journald.service")),
            ("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.scope", Some("foo.scope")),
            ("/user.slice/user-1000.slice/user@1000.service", Some("user@1000.service")),
            ("/user.slice/user-1000.slice/session-3.scope", Some("session-3.scope")),
            ("/system.slice", Some("system.slice")),
            ("/system.slice/docker-abc.scope/init", Some("docker-abc.scope")),
            ("/", None),
            ("/nixtrace-test-1", None),
        ];
        for (path, unit) in cases {
            assert_eq!(unit_of_cgroup(path), unit, "{path}");
        }
    }
}
