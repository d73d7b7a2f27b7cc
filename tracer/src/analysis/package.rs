//! The Nix package a traced file belongs to, as the analyses name it.

use serde::Serialize;

use crate::model::nix::parse_store_path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    pub name: String,
    pub version: Option<String>,
    pub store_path: String,
}

impl Package {
    /// The package of `path`, when it is inside the Nix store.
    pub fn of(path: &str) -> Option<Package> {
        parse_store_path(path).map(|p| Package {
            name: p.name.to_string(),
            version: p.version.map(str::to_string),
            store_path: p.store_path.to_string(),
        })
    }

    /// "python3-3.12.8": the name and the version, as Nix writes them.
    pub fn label(&self) -> String {
        match &self.version {
            Some(version) => format!("{}-{version}", self.name),
            None => self.name.clone(),
        }
    }
}
