//! The ICS target: one `.ics` file per source calendar in a directory,
//! rendered whole from the calendar's items, written atomically (temporary
//! file, fsync, rename, directory fsync) and only when its bytes change.

pub mod config;

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bridge_core::{Privacy, RenderOptions, render_calendar_to};
use bridge_engine::{Applied, OpOutcome, Sink, SinkError, SinkInput};

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

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_for(&self, calendar_id: &str) -> PathBuf {
        self.dir.join(file_name(calendar_id))
    }
}

/// Whether `path` holds exactly `bytes`, read in chunks (a 60 MB feed is not
/// read into memory a second time).
fn same_content(path: &Path, bytes: &[u8]) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    if f.metadata().map(|m| m.len()).ok() != Some(bytes.len() as u64) {
        return false;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0;
    loop {
        match f.read(&mut buf) {
            Ok(0) => return offset == bytes.len(),
            Ok(n) => {
                if bytes.get(offset..offset + n) != Some(&buf[..n]) {
                    return false;
                }
                offset += n;
            }
            Err(_) => return false,
        }
    }
}

/// Replaces `path` with `bytes` unless it already holds exactly them.
/// Returns whether the file was written.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    if same_content(path, bytes) {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("calendar"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(true)
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
    inner: std::io::BufWriter<std::fs::File>,
    hasher: sha2::Sha256,
}

impl HashingWriter {
    /// Flushes; returns the file and the hex SHA-256 of everything written.
    fn finish(self) -> std::io::Result<(std::fs::File, String)> {
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

    fn settings(&self, input: &SinkInput<'_>) -> String {
        use sha2::{Digest, Sha256};
        let s = format!(
            "v1|{:?}|{:?}|{}|{:?}",
            self.privacy, self.refresh_minutes, input.calendar.name, input.calendar.timezone
        );
        hex::encode(Sha256::digest(s.as_bytes()))
    }
}

#[async_trait]
impl Sink for IcsSink {
    fn id(&self) -> &str {
        &self.id
    }

    fn privacy(&self) -> Privacy {
        self.privacy
    }

    async fn apply(&self, input: SinkInput<'_>) -> Vec<OpOutcome> {
        let path = self.path_for(&input.calendar.id);
        let state_path = self.state_path(&input.calendar.id);
        let settings = self.settings(&input);
        if input.ops.is_empty() {
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
                return Vec::new();
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
        let name = file_name(&input.calendar.id);
        // Rendered straight into a temporary file next to the target while
        // hashing it (a 60 MB feed is never held in memory); the file only
        // replaces the target when the digests differ.
        let written = blocking(|| -> std::io::Result<bool> {
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
            let mut w = HashingWriter {
                inner: std::io::BufWriter::with_capacity(256 * 1024, std::fs::File::create(&tmp)?),
                hasher: sha2::Sha256::default(),
            };
            let summary = match render_calendar_to(input.items.iter().copied(), &opts, &mut w) {
                Ok(s) => s,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            for warning in &summary.warnings {
                tracing::warn!(calendar = %input.calendar.id, "{warning}");
            }
            let (f, digest) = w.finish()?;
            let changed = file_digest(&path).as_deref() != Some(digest.as_str());
            if changed {
                f.sync_all()?;
                drop(f);
                std::fs::rename(&tmp, &path)?;
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
            } else {
                drop(f);
                std::fs::remove_file(&tmp)?;
            }
            // Best effort: a missing state file only costs a render next time.
            let _ = std::fs::write(&state_path, format!("{settings} {digest}\n"));
            Ok(changed)
        });
        let result = match written {
            Ok(changed) => {
                tracing::debug!(file = %path.display(), changed, "ICS file");
                Ok(())
            }
            Err(e) => Err(SinkError::transient(format!(
                "cannot write {}: {e}",
                path.display()
            ))),
        };
        input
            .ops
            .iter()
            .map(|op| OpOutcome {
                op: op.clone(),
                result: result.clone().map(|()| Applied {
                    remote_id: format!("{name}#{}", op.key()),
                    etag: None,
                }),
            })
            .collect()
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

    #[test]
    fn writes_only_when_changed() {
        let dir = std::env::temp_dir().join(format!("fb-ics-{}", std::process::id()));
        let path = dir.join("c.ics");
        assert!(write_if_changed(&path, b"one").unwrap());
        assert!(!write_if_changed(&path, b"one").unwrap());
        assert!(write_if_changed(&path, b"two").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
