//! The ICS target, a [`Projection`]: one `.ics` file per source calendar in
//! a directory, rendered whole from the calendar's series, written
//! atomically (temporary file, fsync, rename, directory fsync) and only when
//! its bytes change. A failed write is one error for the file and leaves no
//! temporary file behind (`tempfile` removes it on every error path).

pub mod config;

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bridge_core::{Privacy, RenderOptions, render_series_to};
use bridge_target::{Projection, ProjectionInput, Published, Sink, SinkError, Target};

/// Writes calendars as iCalendar files.
#[derive(Debug, Clone)]
pub struct IcsSink {
    id: String,
    dir: PathBuf,
    privacy: Privacy,
    refresh_minutes: Option<u32>,
}

/// The file name of a calendar: its id with anything outside
/// `[A-Za-z0-9._@-]` replaced, plus a short hash when something was replaced
/// (so two ids never share a file).
pub fn file_name(calendar_id: &str) -> String {
    let clean: String = calendar_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.').to_owned();
    if clean == calendar_id && !clean.is_empty() && clean.len() <= 200 {
        format!("{clean}.ics")
    } else {
        let mut short: String = clean.chars().take(120).collect();
        let digest = bridge_core::hash::short_digest(calendar_id.as_bytes());
        short.push('-');
        short.push_str(&digest);
        format!("{short}.ics")
    }
}

impl IcsSink {
    pub fn new(dir: impl Into<PathBuf>, privacy: Privacy) -> Self {
        let dir = dir.into();
        Self {
            id: format!("ics:{}", dir.display()),
            dir,
            privacy,
            refresh_minutes: Some(60),
        }
    }

    /// The same sink under another id (the configuration names the sink by
    /// its directory as written; `dir` is where it resolved to).
    pub fn with_id(mut self, id: String) -> Self {
        self.id = id;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_for(&self, calendar_id: &str) -> PathBuf {
        self.dir.join(file_name(calendar_id))
    }
}

/// SHA-256 of a file, read in chunks; `None` if it cannot be read.
fn file_digest(path: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Some(hex::encode(h.finalize())),
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// Writes through to a file while hashing what passes.
struct HashingWriter {
    inner: std::io::BufWriter<tempfile::NamedTempFile>,
    hasher: sha2::Sha256,
}

impl HashingWriter {
    /// Flushes; returns the file and the hex SHA-256 of everything written.
    fn finish(self) -> std::io::Result<(tempfile::NamedTempFile, String)> {
        use sha2::Digest;
        let digest = hex::encode(self.hasher.finalize());
        let f = self.inner.into_inner().map_err(|e| e.into_error())?;
        Ok((f, digest))
    }
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Runs blocking file work: on a multi-threaded runtime the worker thread
/// is handed over for it (`block_in_place`), elsewhere it simply runs.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl IcsSink {
    /// Where the digest of the last written file and of the settings it was
    /// rendered with are kept, so that a pass with nothing to do need not
    /// render a large calendar again just to find it unchanged.
    fn state_path(&self, calendar_id: &str) -> PathBuf {
        self.dir.join(format!(".{}.state", file_name(calendar_id)))
    }

    fn settings(&self, input: &ProjectionInput<'_>) -> String {
        use sha2::{Digest, Sha256};
        // The version names the renderer's output rules: v2 writes exact
        // instants in repeated hours (a series' override), which an
        // unchanged set of items would otherwise never re-render; v3 every
        // occurrence in a repeated or skipped hour up to a horizon that
        // moves once a year (bridge_core::ics::exact), re-rendered then.
        let s = format!(
            "v3|{:?}|{:?}|{}|{:?}|{}",
            self.privacy,
            self.refresh_minutes,
            input.calendar.name,
            input.calendar.timezone,
            bridge_core::ics::exact::horizon(input.now)
        );
        hex::encode(Sha256::digest(s.as_bytes()))
    }
}

impl Sink for IcsSink {
    fn target(&self) -> Target<'_> {
        Target::Projection(self)
    }
}

#[async_trait]
impl Projection for IcsSink {
    fn id(&self) -> &str {
        &self.id
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            tempfile::NamedTempFile::new_in(&dir).map(drop)
        })
        .await
        .map_err(|e| SinkError::transient(e.to_string()))?
        .map_err(|e| SinkError::transient(format!("cannot write in {}: {e}", self.dir.display())))
    }

    async fn publish(&self, input: ProjectionInput<'_>) -> Result<Published, SinkError> {
        let path = self.path_for(&input.calendar.id);
        let state_path = self.state_path(&input.calendar.id);
        let settings = self.settings(&input);
        let name = file_name(&input.calendar.id);
        if !input.changed {
            // Nothing changed in the items: skip the render when the file is
            // exactly what we last wrote with these settings.
            let (p, sp) = (path.clone(), state_path.clone());
            let current = tokio::task::spawn_blocking(move || {
                Some((file_digest(&p)?, std::fs::read_to_string(sp).ok()?))
            })
            .await
            .ok()
            .flatten();
            if let Some((digest, saved)) = current
                && saved.trim() == format!("{settings} {digest}")
            {
                tracing::debug!(file = %path.display(), "ICS file up to date");
                return Ok(Published {
                    location: name,
                    changed: false,
                });
            }
        }
        let opts = RenderOptions {
            name: input.calendar.name.clone(),
            privacy: self.privacy,
            dtstamp: input.now,
            refresh_minutes: self.refresh_minutes,
            timezone: input.calendar.timezone.clone(),
            revisions: input.revisions.clone(),
        };
        // Rendered straight into a temporary file next to the target while
        // hashing it (a 60 MB feed is never held in memory); the file only
        // replaces the target when the digests differ. The temporary file
        // is removed on every path that does not persist it.
        let written = blocking(|| -> std::io::Result<bool> {
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let tmp = tempfile::Builder::new()
                .prefix(&format!(".{name}.tmp"))
                .tempfile_in(dir)?;
            let mut w = HashingWriter {
                inner: std::io::BufWriter::with_capacity(256 * 1024, tmp),
                hasher: sha2::Sha256::default(),
            };
            let summary = render_series_to(input.series, &opts, &mut w)?;
            for warning in &summary.warnings {
                tracing::warn!(calendar = %input.calendar.id, "{warning}");
            }
            let (f, digest) = w.finish()?;
            let changed = file_digest(&path).as_deref() != Some(digest.as_str());
            if changed {
                f.as_file().sync_all()?;
                f.persist(&path).map_err(|e| e.error)?;
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            // Best effort: a missing state file only costs a render next time.
            let _ = std::fs::write(&state_path, format!("{settings} {digest}\n"));
            Ok(changed)
        });
        match written {
            Ok(changed) => {
                tracing::debug!(file = %path.display(), changed, "ICS file");
                Ok(Published {
                    location: name,
                    changed,
                })
            }
            Err(e) => Err(SinkError::transient(format!(
                "cannot write {}: {e}",
                path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(
            file_name("feishu.cn_abc@group.calendar.feishu.cn"),
            "feishu.cn_abc@group.calendar.feishu.cn.ics"
        );
        let a = file_name("a/b");
        let b = file_name("a_b");
        assert_ne!(a, b);
        assert!(!a.contains('/'));
        assert!(!file_name("../../etc/passwd").starts_with('.'));
    }
}
