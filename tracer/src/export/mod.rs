//! `nixtrace export`: a trace in another program's format. `chrome-json`
//! is one trace as a timeline for the Perfetto UI or chrome://tracing
//! (`chrome_json.rs`); `parquet` is one or many traces as Parquet tables
//! for query engines (`parquet/`, docs/parquet-schema.md); `preload` is
//! one trace's preload list, for `nixtrace preload` (`preload/list.rs`).

pub mod chrome_json;
pub mod parquet;

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::analysis::{Filter, analyse_file};

pub use self::chrome_json::chrome_json_from;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The JSON trace event format: opens in ui.perfetto.dev and chrome://tracing.
    ChromeJson,
    /// One Parquet file per table, in a directory (docs/parquet-schema.md).
    Parquet,
    /// The files read from disk, for `nixtrace preload`.
    Preload,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::ChromeJson, Format::Parquet, Format::Preload];

    pub fn name(self) -> &'static str {
        match self {
            Format::ChromeJson => "chrome-json",
            Format::Parquet => "parquet",
            Format::Preload => "preload",
        }
    }

    pub fn help(self) -> &'static str {
        match self {
            Format::ChromeJson => "the JSON trace event format: ui.perfetto.dev and chrome://tracing open it",
            Format::Parquet => {
                "one Parquet file per table in the directory -o names, for one or many traces \
                 (docs/parquet-schema.md)"
            }
            Format::Preload => {
                "the pages read from disk, file by file in first-use order: a list for \
                 `nixtrace preload`"
            }
        }
    }
}

/// What `nixtrace export` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// One trace for chrome-json; one or more for parquet.
    pub files: Vec<PathBuf>,
    pub format: Format,
    /// chrome-json: the file (None for standard output); parquet: the
    /// directory (required).
    pub output: Option<PathBuf>,
    /// parquet: also the `opens` and `mmaps` tables, a row per event.
    pub events: bool,
}

/// `nixtrace export`.
pub fn run(options: &Options) -> Result<()> {
    match options.format {
        Format::ChromeJson => {
            let [file] = options.files.as_slice() else {
                bail!("--format chrome-json exports one trace, not {}", options.files.len());
            };
            chrome_json::write(file, options.output.as_deref())
        }
        Format::Preload => {
            let [file] = options.files.as_slice() else {
                bail!("--format preload exports one trace, not {}", options.files.len());
            };
            let analysis = analyse_file(file, &Filter::default())?;
            let text = crate::preload::list::write(&analysis.preload, &file.display().to_string());
            crate::output::write_or_print(options.output.as_deref(), text.as_bytes())
        }
        Format::Parquet => {
            let Some(dir) = &options.output else { bail!("--format parquet needs -o DIR") };
            let tables = parquet::Tables { events: options.events };
            parquet::export(&options.files, dir, &tables)
        }
    }
}
