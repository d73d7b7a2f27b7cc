//! `nixtrace export`: a trace in another program's format. `chrome-json`
//! is one trace as a timeline for the Perfetto UI or chrome://tracing
//! (`chrome_json.rs`); `parquet` is one or many traces as Parquet tables
//! for query engines (`parquet/`, docs/parquet-schema.md).

pub mod chrome_json;
pub mod parquet;

use std::path::PathBuf;

use anyhow::{Result, bail};

pub use self::chrome_json::chrome_json_from;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The JSON trace event format: opens in ui.perfetto.dev and chrome://tracing.
    ChromeJson,
    /// One Parquet file per table, in a directory (docs/parquet-schema.md).
    Parquet,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::ChromeJson, Format::Parquet];

    pub fn name(self) -> &'static str {
        match self {
            Format::ChromeJson => "chrome-json",
            Format::Parquet => "parquet",
        }
    }

    pub fn help(self) -> &'static str {
        match self {
            Format::ChromeJson => "the JSON trace event format: ui.perfetto.dev and chrome://tracing open it",
            Format::Parquet => {
                "one Parquet file per table in the directory -o names, for one or many traces \
                 (docs/parquet-schema.md)"
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
        Format::Parquet => {
            let Some(dir) = &options.output else { bail!("--format parquet needs -o DIR") };
            let tables = parquet::Tables { events: options.events };
            parquet::export(&options.files, dir, &tables)
        }
    }
}
