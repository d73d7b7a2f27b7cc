//! Filing a recorded boot (`record --boot`): the staged trace moves to
//! `<output-dir>/<boot-id>.ntr`, with its report (Markdown and JSON, with
//! the boot section), its startup and io flamegraphs and, with `--parquet`,
//! its Parquet tables (`<boot-id>.TABLE.parquet`) beside it, and its
//! preload list (`<boot-id>.preload`, copied to `latest.preload` for
//! nixtrace-preload.service at the next boot); the oldest boots beyond
//! `--keep` go. It sits above the recorder and the
//! renderers, so that `record` depends on nothing above `trace`.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use crate::{
    analysis::{Filter, analyse_file},
    export, flamegraph, preload, recommend,
    record::StagedBoot,
    report,
};

/// Rows per table in the filed report.
const REPORT_ROWS: usize = 20;

/// The last filed boot's preload list, which nixtrace-preload.service reads.
pub const LATEST_PRELOAD: &str = "latest.preload";

/// Files the staged trace: moves it to `<dir>/<boot-id>.ntr`, writes the
/// report (Markdown and JSON) and the startup and io flamegraphs beside
/// it, and removes the oldest boots beyond --keep. Returns the trace's path.
pub fn file(staged: &StagedBoot) -> Result<PathBuf> {
    let dir = &staged.output_dir;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let trace = dir.join(format!("{}.ntr", staged.boot_id));
    // /run and /var are different file systems: copy, then remove.
    fs::copy(&staged.staging, &trace)
        .with_context(|| format!("copying {} to {}", staged.staging.display(), trace.display()))?;
    fs::set_permissions(&trace, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private (mode 0600)", trace.display()))?;
    fs::remove_file(&staged.staging).with_context(|| format!("removing {}", staged.staging.display()))?;

    let stem = dir.join(&staged.boot_id);
    // The boot section comes from the systemd-analyze record in the trace.
    let analysis = analyse_file(&trace, &Filter::default())?;
    let recommendations = recommend::recommend(&analysis, &recommend::Selection::default());
    for (format, extension) in
        [(report::Format::Markdown, "report.md"), (report::Format::Json, "report.json")]
    {
        let text = report::render(&analysis, &recommendations, format, REPORT_ROWS, false);
        crate::output::write_private(&stem.with_extension(extension), text.as_bytes())?;
    }
    for kind in [flamegraph::Kind::Startup, flamegraph::Kind::Io] {
        let stacks = flamegraph::stacks(&analysis, kind);
        match flamegraph::svg(&stacks, kind, &analysis, kind == flamegraph::Kind::Startup) {
            Ok(svg) => {
                crate::output::write_private(&stem.with_extension(format!("{}.svg", kind.name())), &svg)?
            }
            Err(e) => eprintln!("nixtrace: warning: no {} flamegraph: {e:#}", kind.name()),
        }
    }
    if staged.parquet {
        let tables = export::parquet::Tables::default();
        let mut writer = export::parquet::Writer::create(
            |table| stem.with_extension(format!("{table}.parquet")),
            &tables,
        )?;
        writer.add(&analysis, &recommendations, Some(&trace))?;
        writer.finish()?;
    }
    let list = preload::list::write(&analysis.preload, &trace.display().to_string());
    crate::output::write_private(&stem.with_extension("preload"), list.as_bytes())?;
    // Renamed into place, so that a boot starting now never reads half a list.
    let latest = dir.join(LATEST_PRELOAD);
    let partial = dir.join(format!(".{LATEST_PRELOAD}.partial"));
    crate::output::write_private(&partial, list.as_bytes())?;
    fs::rename(&partial, &latest)
        .with_context(|| format!("renaming {} to {}", partial.display(), latest.display()))?;
    prune(dir, staged.keep, &staged.boot_id)?;
    Ok(trace)
}

/// A boot id as the files are named: 32 hex digits.
fn is_boot_id(stem: &str) -> bool {
    stem.len() == 32 && stem.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Removes every file of the boots older than the `keep` newest traces,
/// never those of `current` (a clock not yet set at boot may make it look
/// oldest) and nothing that is not named after a boot.
fn prune(dir: &Path, keep: usize, current: &str) -> Result<()> {
    let mut traces: Vec<(std::time::SystemTime, String)> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let id = name.strip_suffix(".ntr").filter(|id| is_boot_id(id) && *id != current)?.to_string();
            Some((entry.metadata().ok()?.modified().ok()?, id))
        })
        .collect();
    traces.sort();
    let old = traces.len().saturating_sub(keep.saturating_sub(1));
    for (_, id) in &traces[..old] {
        for entry in
            fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?.filter_map(|e| e.ok())
        {
            let name = entry.file_name();
            if name.to_string_lossy().split('.').next() == Some(id.as_str()) {
                fs::remove_file(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_boots_and_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let [a, b, c] = ["a", "b", "c"].map(|x| x.repeat(32));
        for (i, id) in [&c, &a, &b].iter().enumerate() {
            for ext in ["ntr", "report.md", "startup.svg"] {
                let path = dir.path().join(format!("{id}.{ext}"));
                fs::write(&path, "x").unwrap();
                let when =
                    std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + i as u64);
                fs::File::options().write(true).open(&path).unwrap().set_modified(when).unwrap();
            }
        }
        fs::write(dir.path().join("unrelated.ntr"), "x").unwrap();
        // c is this boot, with the oldest time (the clock was not set yet).
        prune(dir.path(), 2, &c).unwrap();
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let expected: Vec<String> = [&b, &c]
            .iter()
            .flat_map(|id| ["ntr", "report.md", "startup.svg"].map(|ext| format!("{id}.{ext}")))
            .chain(["unrelated.ntr".to_string()])
            .collect();
        assert_eq!(left, expected, "a (the oldest other boot) is gone");
    }
}
