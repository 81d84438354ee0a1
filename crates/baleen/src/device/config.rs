//! Reading `config.json` on the device, with a fall-back to the last copy
//! that parsed, and writing it back without ever leaving it half-written.
//!
//! Boot services read config.json through [`load`]: when it is unreadable or
//! not a JSON object, the error is logged with the file and the position, and
//! the device goes on with the last good copy kept on the state partition
//! (`/mnt/state/baleen/config.json`), so SSH keys, hostname and the rest stay
//! as they were instead of falling back to nothing.

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// config.json on the mounted boot partition, relative to the root.
pub const CONFIG: &str = "mnt/boot/config.json";
/// The last config.json that parsed, relative to the root.
pub const LAST_GOOD: &str = "mnt/state/baleen/config.json";

/// Where the configuration in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `/mnt/boot/config.json`.
    Boot,
    /// config.json was unusable: the last good copy.
    LastGood,
    /// Neither was usable: every key at its default.
    Defaults,
}

/// The configuration a device command works with.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Map<String, Value>,
    pub source: Source,
}

/// Parses a config.json text: a JSON object, or an error naming the file and
/// the position.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Map<String, Value>> {
    let value: Value = serde_json::from_slice(bytes).with_context(|| {
        format!(
            "{} is not valid JSON (fix the file, or write it again from a known good copy)",
            path.display()
        )
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => bail!(
            "{} must hold a JSON object, found {}",
            path.display(),
            kind(&other)
        ),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn read(path: &Path) -> Result<Map<String, Value>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(path, &bytes)
}

/// Reads config.json under `root`, falling back to the last good copy, and
/// refreshes that copy when config.json parsed and changed.
pub fn load(root: &Path) -> Loaded {
    let boot = root.join(CONFIG);
    let last_good = root.join(LAST_GOOD);
    match read(&boot) {
        Ok(config) => {
            if let Err(e) = remember(&last_good, &config) {
                tracing::warn!("{e:#}");
            }
            Loaded {
                config,
                source: Source::Boot,
            }
        }
        Err(e) => {
            tracing::error!("{e:#}");
            match read(&last_good) {
                Ok(config) => {
                    tracing::warn!(
                        "using the last good configuration, {}, until {} is fixed",
                        last_good.display(),
                        boot.display()
                    );
                    Loaded {
                        config,
                        source: Source::LastGood,
                    }
                }
                Err(_) => {
                    tracing::warn!("no last good configuration either: defaults apply");
                    Loaded {
                        config: Map::new(),
                        source: Source::Defaults,
                    }
                }
            }
        }
    }
}

fn remember(path: &Path, config: &Map<String, Value>) -> Result<()> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    // Only where the state partition is mounted (its parent exists).
    if !dir.parent().is_some_and(Path::is_dir) {
        return Ok(());
    }
    let text = to_text(config);
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(path, text.as_bytes())
}

/// config.json as baleen writes it: pretty, keys in their existing order.
pub fn to_text(config: &Map<String, Value>) -> String {
    let mut text = serde_json::to_string_pretty(config).unwrap_or_default();
    text.push('\n');
    text
}

/// Replaces `path` with `data`: a temporary file in the same directory,
/// flushed, renamed over the old one, and the directory flushed. A power cut
/// leaves the old or the new file (on FAT too: the rename rewrites one
/// directory entry).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp: PathBuf = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, path)
        .with_context(|| format!("replacing {} with {}", path.display(), tmp.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("flushing {}", dir.display()))
}

/// A string key, treating JSON null and "" as absent.
pub fn string<'a>(config: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    config
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(config: Option<&str>, last_good: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("mnt/boot")).unwrap();
        std::fs::create_dir_all(dir.path().join("mnt/state")).unwrap();
        if let Some(text) = config {
            std::fs::write(dir.path().join(CONFIG), text).unwrap();
        }
        if let Some(text) = last_good {
            std::fs::create_dir_all(dir.path().join("mnt/state/baleen")).unwrap();
            std::fs::write(dir.path().join(LAST_GOOD), text).unwrap();
        }
        dir
    }

    #[test]
    fn a_good_config_is_used_and_remembered() {
        let dir = root_with(Some(r#"{"b": 1, "a": {"x": "y"}}"#), None);
        let loaded = load(dir.path());
        assert_eq!(loaded.source, Source::Boot);
        assert_eq!(
            loaded.config.keys().collect::<Vec<_>>(),
            vec!["b", "a"],
            "key order kept"
        );
        let kept = std::fs::read_to_string(dir.path().join(LAST_GOOD)).unwrap();
        assert_eq!(
            kept,
            "{\n  \"b\": 1,\n  \"a\": {\n    \"x\": \"y\"\n  }\n}\n"
        );
    }

    #[test]
    fn a_broken_config_falls_back_to_the_last_good_copy() {
        let dir = root_with(Some("{\"hostname\": \n"), Some(r#"{"hostname": "kept"}"#));
        let loaded = load(dir.path());
        assert_eq!(loaded.source, Source::LastGood);
        assert_eq!(string(&loaded.config, "hostname"), Some("kept"));
        // The broken file does not overwrite the good copy.
        assert!(
            std::fs::read_to_string(dir.path().join(LAST_GOOD))
                .unwrap()
                .contains("kept")
        );
    }

    #[test]
    fn errors_name_the_file_and_the_position() {
        let e = parse(Path::new("/mnt/boot/config.json"), b"{\n  \"a\": 1,\n}").unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains("/mnt/boot/config.json is not valid JSON"),
            "{text}"
        );
        assert!(text.contains("line 3 column 1"), "{text}");
        let e = parse(Path::new("c.json"), b"[1]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.json must hold a JSON object, found an array"
        );
    }

    #[test]
    fn nothing_usable_means_defaults() {
        let dir = root_with(None, None);
        let loaded = load(dir.path());
        assert_eq!(loaded.source, Source::Defaults);
        assert!(loaded.config.is_empty());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn empty_and_null_strings_are_absent() {
        let config = parse(Path::new("c"), br#"{"a": "", "b": null, "c": "x", "d": 1}"#).unwrap();
        assert_eq!(string(&config, "a"), None);
        assert_eq!(string(&config, "b"), None);
        assert_eq!(string(&config, "c"), Some("x"));
        assert_eq!(string(&config, "d"), None);
    }
}
