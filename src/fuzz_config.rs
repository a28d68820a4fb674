//! Fuzz harness of the configuration loader, shared by the cargo-fuzz
//! target `config` (which includes `config.rs` and this file with
//! `#[path]`, since the binary has no library target) and the stable corpus
//! replay below.
//!
//! Entry point: `crate::config::parse_with_env(text, path, env)`, the whole
//! loader after reading the file (TOML, `${ENV}` interpolation, typed
//! structs with `deny_unknown_fields`, validation of every section).

use std::path::Path;

/// Whether any key names a file (`*_file`): the loader reads those, and a
/// fuzzer must not make it read `/dev/zero` or a FIFO.
fn names_a_file(v: &toml::Value) -> bool {
    match v {
        toml::Value::Table(t) => t
            .iter()
            .any(|(k, v)| k.ends_with("_file") || names_a_file(v)),
        toml::Value::Array(a) => a.iter().any(names_a_file),
        _ => false,
    }
}

/// Loads `data` as a configuration file. Invariants: never a panic; a
/// refusal names at least one problem, each on its own line of the message;
/// an accepted configuration has an app id and a parseable base URL.
pub(crate) fn config_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v) = toml::from_str::<toml::Value>(text)
        && names_a_file(&v)
    {
        return;
    }
    let env = |name: &str| (name == "FUZZ_SET").then(|| "value".to_owned());
    match crate::config::parse_with_env(text, Path::new("/nonexistent/fuzz.toml"), &env) {
        Ok(loaded) => {
            assert!(!loaded.feishu.app_id.trim().is_empty());
            assert!(url::Url::parse(&loaded.feishu.base_url).is_ok());
            let _ = format!("{loaded:?}");
        }
        Err(e) => {
            assert!(!e.problems.is_empty(), "a refusal without a problem");
            let shown = e.to_string();
            for p in &e.problems {
                assert!(!p.is_empty());
                assert!(shown.contains(p.as_str()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Every file of the checked-in corpus `fuzz/corpus/config` (minimized
    /// with `cargo fuzz cmin`) goes through the harness, on stable.
    #[test]
    fn config_corpus_replays_without_panics() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/config");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for path in &files {
            let data = std::fs::read(path).unwrap();
            let outcome = std::panic::catch_unwind(|| super::config_text(&data));
            assert!(outcome.is_ok(), "config: {} panicked", path.display());
        }
        assert!(files.len() >= 10, "only {} corpus files", files.len());
    }
}
