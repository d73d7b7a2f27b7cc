//! duplicate-libraries: one library (soname) loaded from several store
//! paths in one trace, such as two builds of glibc or openssl: each copy
//! is read from disk and kept in memory on its own, and the programs that
//! use different ones may disagree. The store's graph in the trace says
//! which packages pulled each copy in.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Confidence, Fix, FixKind, Level, Recommendation, Rule, Saving, Settings, Subject, SubjectKind};
use crate::{
    analysis::{Analysis, package::Package},
    human::{bytes, count},
};

pub const RULE: Rule = Rule {
    id: "duplicate-libraries",
    title: "One library loaded from several store paths",
    description: "The same library (by soname) was loaded from more than one Nix store path in this \
        trace: two builds, each read and cached on its own. From the store graph the trace carries, \
        the packages that pulled each copy in, and the override that makes them share one.",
    thresholds: &[],
    check,
};

/// One store path's copy of a library, and who used it.
#[derive(Default)]
struct Copy<'a> {
    package: Option<&'a Package>,
    path: &'a str,
    processes: u64,
    programs: Vec<&'a str>,
    pulled_in_by: Vec<&'a str>,
}

fn check(analysis: &Analysis, _: &Settings) -> Vec<Recommendation> {
    // soname -> store path -> its copy.
    let mut by_soname: BTreeMap<String, BTreeMap<&str, Copy>> = BTreeMap::new();
    for process in &analysis.processes {
        let Some(loader) = &process.loader else { continue };
        for library in &loader.libraries {
            let Some(package) = &library.package else { continue };
            let soname = analysis
                .binaries
                .iter()
                .find(|b| b.path == library.path)
                .and_then(|b| b.soname.clone())
                .unwrap_or_else(|| library.path.rsplit('/').next().unwrap_or(&library.path).to_string());
            let copy = by_soname.entry(soname).or_default().entry(package.store_path.as_str()).or_default();
            copy.package = Some(package);
            copy.path = &library.path;
            copy.processes += 1;
            if let Some(exe) = process.exe.as_deref()
                && !copy.programs.contains(&exe)
            {
                copy.programs.push(exe);
            }
            for referrer in &library.pulled_in_by {
                if !copy.pulled_in_by.contains(&referrer.as_str()) {
                    copy.pulled_in_by.push(referrer);
                }
            }
        }
    }
    let graph = analysis.store_graph.status == "complete";
    by_soname
        .into_iter()
        .filter(|(_, copies)| copies.len() > 1)
        .map(|(soname, copies)| recommendation(analysis, &soname, copies.into_values().collect(), graph))
        .collect()
}

fn recommendation(analysis: &Analysis, soname: &str, mut copies: Vec<Copy>, graph: bool) -> Recommendation {
    // The most used copy stays; the others would go.
    copies.sort_by(|a, b| b.processes.cmp(&a.processes).then_with(|| a.path.cmp(b.path)));
    let size = |copy: &Copy| {
        analysis.binaries.iter().find(|b| b.path == copy.path).and_then(|b| b.size_bytes).unwrap_or(0)
    };
    let extra: u64 = copies[1..].iter().map(size).sum();
    let keep = copies[0].package.expect("every copy has its package");
    let label = |c: &Copy| c.package.map_or_else(String::new, Package::label);
    let mut subjects = vec![Subject { kind: SubjectKind::Library, name: soname.to_string() }];
    subjects.extend(copies.iter().map(|c| Subject { kind: SubjectKind::Package, name: label(c) }));
    let evidence = json!({
        "soname": soname,
        "store_graph": analysis.store_graph.status,
        "copies": copies.iter().map(|c| json!({
            "store_path": c.package.map(|p| p.store_path.as_str()),
            "package": label(c),
            "path": c.path,
            "size_bytes": size(c),
            "processes": c.processes,
            "programs": c.programs,
            "pulled_in_by": c.pulled_in_by,
        })).collect::<Vec<_>>(),
    });
    let overrides: Vec<String> = copies[1..]
        .iter()
        .flat_map(|c| c.pulled_in_by.iter())
        .filter_map(|referrer| Package::of(referrer))
        .map(|referrer| {
            format!("  {0} = prev.{0}.override {{ {1} = final.{1}; }};", referrer.name, keep.name)
        })
        .collect();
    let text = if overrides.is_empty() {
        format!(
            "# Rebuild the packages that load {} against {} so that all share one\n# (the trace has no store graph to name them: record on the machine with its Nix store).",
            copies[1..].iter().map(label).collect::<Vec<_>>().join(", "),
            keep.label()
        )
    } else {
        format!(
            "# In an overlay: the packages that pulled in the other copies use {}\nnixpkgs.overlays = [ (final: prev: {{\n{}\n}}) ];",
            keep.label(),
            overrides.join("\n")
        )
    };
    Recommendation {
        rule: RULE.id,
        title: format!(
            "{soname} was loaded from {} ({})",
            count(copies.len() as u64, "store path", "store paths"),
            copies.iter().map(label).collect::<Vec<_>>().join(", ")
        ),
        subjects,
        evidence,
        saving: Saving {
            time_ns: None,
            bytes: Some(extra),
            how: format!(
                "the size of the copies that would no longer be loaded ({}), read from disk and kept in the page cache on their own today",
                bytes(extra)
            ),
        },
        confidence: Confidence {
            level: if graph { Level::Medium } else { Level::Low },
            reason: if graph {
                "the store graph in the trace names the packages that pull in each copy; whether they can share one build depends on their versions".into()
            } else {
                "the trace carries no store graph, so the packages that pulled the copies in are not known"
                    .into()
            },
        },
        fix: Fix {
            kind: FixKind::NixExpression,
            text,
            revert: "Remove the overrides from the overlay.".into(),
            risk: Some(format!(
                "The copies may be different versions ({}): a package built against one may not work with the other. The overridden packages are rebuilt, not fetched from the binary cache.",
                copies.iter().map(label).collect::<Vec<_>>().join(", ")
            )),
        },
    }
}
