//! `choreo.toml`: defaults for the command line, so scripts need not repeat flags.
//!
//! Looked up in this order: `--config FILE`, `$CHOREO_CONFIG`, `./choreo.toml`. Its values only
//! fill in what neither a flag nor the environment gives (flag > environment > file > built-in).
//!
//! ```toml
//! nats = "nats://127.0.0.1:4222"
//! namespace = "choreo"
//! partitions = 16
//! data_dir = ".choreo/node"
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    nats: Option<String>,
    namespace: Option<String>,
    partitions: Option<u16>,
    data_dir: Option<PathBuf>,
}

impl FileConfig {
    fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| format!("{} is not a valid choreo config: {e}", path.display()))
    }

    /// The environment variables the file's values stand for.
    fn as_env(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(x) = &self.nats {
            v.push(("CHOREO_NATS_URL", x.clone()));
        }
        if let Some(x) = &self.namespace {
            v.push(("CHOREO_NAMESPACE", x.clone()));
        }
        if let Some(x) = self.partitions {
            v.push(("CHOREO_PARTITIONS", x.to_string()));
        }
        if let Some(x) = &self.data_dir {
            v.push(("CHOREO_DATA_DIR", x.display().to_string()));
        }
        v
    }
}

/// Find `--config FILE` in the raw arguments (removing it), else `$CHOREO_CONFIG`, else
/// `./choreo.toml` if present; apply the file as environment defaults. Runs before any thread
/// is started.
pub(crate) fn apply(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let mut rest = Vec::with_capacity(args.len());
    let mut explicit = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            explicit = Some(PathBuf::from(it.next().ok_or("--config needs a file")?));
        } else if let Some(p) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            explicit = Some(PathBuf::from(p));
        } else {
            rest.push(a);
        }
    }
    let path = explicit
        .or_else(|| std::env::var_os("CHOREO_CONFIG").map(PathBuf::from))
        .or_else(|| Some(PathBuf::from("choreo.toml")).filter(|p| p.is_file()));
    if let Some(path) = path {
        for (key, value) in FileConfig::read(&path)?.as_env() {
            if std::env::var_os(key).is_none() {
                std::env::set_var(key, value);
            }
        }
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let c: FileConfig = toml::from_str("nats = \"nats://h:1\"\npartitions = 8").expect("valid");
        assert_eq!(
            c.as_env(),
            [
                ("CHOREO_NATS_URL", "nats://h:1".to_owned()),
                ("CHOREO_PARTITIONS", "8".to_owned())
            ]
        );
        assert!(toml::from_str::<FileConfig>("natz = 1").is_err());
    }
}
