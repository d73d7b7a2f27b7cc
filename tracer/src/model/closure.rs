//! The Nix store's graph around a trace (`Event::StorePath`,
//! `Event::StoreGraph`): for each store path the trace touched, and for
//! everything those refer to, its deriver and references, as the store's
//! database had them when recording stopped. From it, which package pulls in
//! which (`referrers`), and what a program's closure is (`closure`), so that
//! a store path the trace touched outside the traced program's closure
//! stands out. State per store path, never per event.

use std::collections::{BTreeSet, HashMap};

use crate::{
    model::nix::parse_store_path,
    trace::{Event, event::text},
};

/// Whether the trace carries the store's graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphStatus {
    /// The trace has no `StoreGraph` record: recorded before nixtrace read
    /// the store, or cut short before the end.
    NotRecorded,
    /// The recorder could not read the graph, and says why (no Nix store on
    /// that machine, no `nix-store`, the query failed).
    Unavailable(String),
    /// Every store path the trace touched that was valid in the store, and
    /// its closure, has its deriver and references here.
    Complete,
}

/// One store path's entry.
#[derive(Debug, Default)]
struct Node {
    deriver: Option<String>,
    references: Vec<String>,
}

/// The store's graph as the trace recorded it.
#[derive(Debug, Default)]
pub struct ClosureGraph {
    /// store path -> deriver and references.
    nodes: HashMap<String, Node>,
    /// store path -> the store paths whose references include it (itself
    /// left out).
    referrers: HashMap<String, BTreeSet<String>>,
    /// The last `StoreGraph` record: Ok for complete, Err with its reason.
    status: Option<Result<(), String>>,
}

impl ClosureGraph {
    /// Takes in `StorePath` and `StoreGraph` records; ignores the rest.
    pub fn add(&mut self, event: &Event) {
        match event {
            Event::StorePath { path, deriver, references, .. } => {
                let path = text(path);
                let references: Vec<String> = references.iter().map(|r| text(r)).collect();
                if let Some(old) = self.nodes.get(&path) {
                    for reference in &old.references {
                        if let Some(referrers) = self.referrers.get_mut(reference) {
                            referrers.remove(&path);
                        }
                    }
                }
                for reference in references.iter().filter(|r| **r != path) {
                    self.referrers.entry(reference.clone()).or_default().insert(path.clone());
                }
                self.nodes.insert(path, Node { deriver: deriver.as_deref().map(text), references });
            }
            Event::StoreGraph { complete, error, .. } => {
                self.status = Some(if *complete {
                    Ok(())
                } else {
                    Err(error.as_deref().map_or_else(|| "the store's graph was not read".into(), text))
                });
            }
            _ => {}
        }
    }

    /// Whether the graph was recorded: `NotRecorded` when the trace has no
    /// `StoreGraph` record (recorded before this existed), as distinct from
    /// `Unavailable` (the recorder tried, and says why it could not).
    pub fn status(&self) -> GraphStatus {
        match &self.status {
            None => GraphStatus::NotRecorded,
            Some(Err(reason)) => GraphStatus::Unavailable(reason.clone()),
            Some(Ok(())) => GraphStatus::Complete,
        }
    }

    /// The store paths `store_path` refers to, as Nix records them (itself
    /// included when it refers to itself); None when the graph does not
    /// have it. `store_path` may be any path inside the store: its
    /// `/nix/store/<hash>-<name>` part is looked up.
    pub fn references(&self, store_path: &str) -> Option<&[String]> {
        self.node(store_path).map(|node| node.references.as_slice())
    }

    /// The derivation that built `store_path`, when the store knew it.
    pub fn deriver(&self, store_path: &str) -> Option<&str> {
        self.node(store_path)?.deriver.as_deref()
    }

    /// Every store path reachable from `store_path` (itself included), by
    /// references; empty when the graph does not have it.
    pub fn closure(&self, store_path: &str) -> BTreeSet<&str> {
        let mut closure = BTreeSet::new();
        let Some((start, _)) = self.nodes.get_key_value(key(store_path)) else { return closure };
        let mut pending = vec![start.as_str()];
        while let Some(path) = pending.pop() {
            if !closure.insert(path) {
                continue;
            }
            if let Some(node) = self.nodes.get(path) {
                pending.extend(node.references.iter().map(String::as_str).filter(|r| !closure.contains(r)));
            }
        }
        closure
    }

    /// The store paths whose references include `store_path` (who pulls it
    /// in), sorted; a self-reference is not counted.
    pub fn referrers(&self, store_path: &str) -> Vec<&str> {
        self.referrers.get(key(store_path)).map_or_else(Vec::new, |r| r.iter().map(String::as_str).collect())
    }

    fn node(&self, store_path: &str) -> Option<&Node> {
        self.nodes.get(key(store_path))
    }
}

/// The store path of `path`, or `path` itself when it is not in the store.
fn key(path: &str) -> &str {
    parse_store_path(path).map_or(path, |p| p.store_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLIBC: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-glibc-2.39-52";
    const OPENSSL: &str = "/nix/store/11111111111111111111111111111111-openssl-3.0.14";
    const CURL: &str = "/nix/store/22222222222222222222222222222222-curl-8.9.1-bin";
    const LIBCURL: &str = "/nix/store/33333333333333333333333333333333-curl-8.9.1";
    const HELLO: &str = "/nix/store/44444444444444444444444444444444-hello-2.12.1";

    fn store_path(path: &str, deriver: Option<&str>, references: &[&str]) -> Event {
        Event::StorePath {
            ts_ns: 1,
            path: path.into(),
            deriver: deriver.map(Into::into),
            references: references.iter().map(|r| r.as_bytes().to_vec()).collect(),
        }
    }

    /// curl-bin → libcurl → openssl → glibc, every one referring to glibc,
    /// glibc to itself; hello → glibc.
    fn graph() -> ClosureGraph {
        let mut graph = ClosureGraph::default();
        for event in [
            store_path(
                GLIBC,
                Some("/nix/store/55555555555555555555555555555555-glibc-2.39-52.drv"),
                &[GLIBC],
            ),
            store_path(OPENSSL, None, &[GLIBC, OPENSSL]),
            store_path(LIBCURL, None, &[GLIBC, OPENSSL]),
            store_path(CURL, None, &[GLIBC, LIBCURL]),
            store_path(HELLO, None, &[GLIBC]),
            Event::StoreGraph { ts_ns: 1, complete: true, error: None },
        ] {
            graph.add(&event);
        }
        graph
    }

    #[test]
    fn closures_follow_references_transitively() {
        let graph = graph();
        assert_eq!(graph.closure(CURL), BTreeSet::from([CURL, LIBCURL, OPENSSL, GLIBC]));
        assert_eq!(graph.closure(HELLO), BTreeSet::from([HELLO, GLIBC]));
        assert_eq!(graph.closure(GLIBC), BTreeSet::from([GLIBC]));
        // A file inside a store path stands for its store path.
        assert_eq!(graph.closure(&format!("{HELLO}/bin/hello")), BTreeSet::from([HELLO, GLIBC]));
        assert!(graph.closure("/nix/store/66666666666666666666666666666666-absent").is_empty());
        assert!(graph.closure("/usr/bin/true").is_empty());
    }

    #[test]
    fn referrers_say_who_pulls_a_path_in() {
        let graph = graph();
        assert_eq!(graph.referrers(GLIBC), [OPENSSL, CURL, LIBCURL, HELLO]);
        assert_eq!(graph.referrers(OPENSSL), [LIBCURL]);
        assert_eq!(graph.referrers(&format!("{LIBCURL}/lib/libcurl.so.4")), [CURL]);
        assert!(graph.referrers(CURL).is_empty());
    }

    #[test]
    fn references_and_derivers_are_as_recorded() {
        let graph = graph();
        assert_eq!(graph.references(OPENSSL).unwrap(), [GLIBC, OPENSSL]);
        assert_eq!(graph.references(HELLO).unwrap(), [GLIBC]);
        assert_eq!(graph.references("/nix/store/66666666666666666666666666666666-absent"), None);
        assert_eq!(
            graph.deriver(GLIBC),
            Some("/nix/store/55555555555555555555555555555555-glibc-2.39-52.drv")
        );
        assert_eq!(graph.deriver(HELLO), None);
        assert_eq!(graph.status(), GraphStatus::Complete);
    }

    #[test]
    fn a_path_recorded_again_replaces_its_references() {
        let mut graph = graph();
        graph.add(&store_path(LIBCURL, None, &[GLIBC]));
        assert_eq!(graph.referrers(OPENSSL), Vec::<&str>::new());
        assert_eq!(graph.closure(CURL), BTreeSet::from([CURL, LIBCURL, GLIBC]));
    }

    #[test]
    fn the_status_tells_an_old_trace_from_a_missing_store() {
        let mut graph = ClosureGraph::default();
        assert_eq!(graph.status(), GraphStatus::NotRecorded);
        graph.add(&Event::StoreGraph {
            ts_ns: 1,
            complete: false,
            error: Some(b"no Nix store on this machine".to_vec()),
        });
        assert_eq!(graph.status(), GraphStatus::Unavailable("no Nix store on this machine".into()));
        graph.add(&Event::StoreGraph { ts_ns: 1, complete: false, error: None });
        assert_eq!(graph.status(), GraphStatus::Unavailable("the store's graph was not read".into()));
        assert!(graph.closure(GLIBC).is_empty());
    }
}
