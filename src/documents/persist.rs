//! Last-known-good documents on disk, so a restart during an issuer outage
//! still has something to serve.
//!
//! One JSON file per document, named by a hash of its [`SlotKey`]. Files are
//! written atomically (temp file, fsync, rename, fsync of the directory) with
//! mode 0600, and carry a SHA-256 of the body so a torn or edited file is
//! detected and ignored rather than served.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::documents::catalog::DocKind;
use crate::documents::entry::{Entry, SlotKey};
use crate::files;

const VERSION: u32 = 1;

/// One persisted document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub version: u32,
    pub issuer: String,
    pub upstream: String,
    pub path: String,
    pub kind: String,
    /// Wall-clock fetch time, milliseconds since the Unix epoch.
    pub fetched_at_ms: u64,
    pub ttl_ms: u64,
    /// Hex SHA-256 of `body`.
    pub sha256: String,
    /// The document, byte for byte (validated JSON is always UTF-8).
    pub body: String,
}

impl Record {
    pub fn new(key: &SlotKey, kind: DocKind, entry: &Entry) -> Record {
        let body = String::from_utf8_lossy(&entry.body).into_owned();
        Record {
            version: VERSION,
            issuer: key.issuer.to_string(),
            upstream: key.upstream.to_string(),
            path: key.path.to_string(),
            kind: kind.as_str().to_string(),
            fetched_at_ms: entry.fetched_wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            ttl_ms: entry.ttl.as_millis() as u64,
            sha256: hex_sha256(body.as_bytes()),
            body,
        }
    }

    pub fn key(&self) -> SlotKey {
        SlotKey {
            issuer: self.issuer.as_str().into(),
            upstream: self.upstream.as_str().into(),
            path: self.path.as_str().into(),
        }
    }
}

/// The cache directory.
#[derive(Debug)]
pub struct Persist {
    dir: PathBuf,
}

impl Persist {
    /// Creates the directory (mode 0700) if needed and checks it is writable.
    pub fn open(dir: &Path) -> Result<Persist, String> {
        fs::create_dir_all(dir).map_err(|e| format!("cache.dir {}: cannot create: {e}", dir.display()))?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        fs::write(&probe, b"").map_err(|e| format!("cache.dir {}: not writable: {e}", dir.display()))?;
        let _ = fs::remove_file(&probe);
        Ok(Persist { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a key is stored in.
    pub fn file_for(&self, key: &SlotKey) -> PathBuf {
        let id = hex_sha256(format!("{}\n{}\n{}", key.issuer, key.upstream, key.path).as_bytes());
        self.dir.join(format!("{}.json", &id[..32]))
    }

    /// Writes `record` off the async runtime; failures are logged.
    pub fn save_in_background(self: &std::sync::Arc<Self>, record: Record) {
        let this = std::sync::Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = this.save(&record) {
                tracing::warn!(path = %record.path, "cache.dir: could not persist document: {e}");
            }
        });
    }

    /// Atomically replaces the file for `record`.
    pub fn save(&self, record: &Record) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec(record)?;
        bytes.push(b'\n');
        files::replace(&self.file_for(&record.key()), &bytes)
    }

    /// Every readable, intact record; damaged files are reported and skipped.
    pub fn load_all(&self) -> Vec<Record> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), "cache.dir: cannot list: {e}");
                return out;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(files::TEMP_PREFIX) {
                let _ = fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            match read_record(&path) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(file = %path.display(), "cache.dir: ignoring damaged cache file: {e}"),
            }
        }
        out
    }
}

fn read_record(path: &Path) -> Result<Record, String> {
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > 128 * 1024 * 1024 {
        return Err("larger than any document we store".into());
    }
    let text = fs::read(path).map_err(|e| e.to_string())?;
    let r: Record = serde_json::from_slice(&text).map_err(|e| format!("not a cache record: {e}"))?;
    if r.version != VERSION {
        return Err(format!("unknown version {}", r.version));
    }
    if hex_sha256(r.body.as_bytes()) != r.sha256 {
        return Err("body does not match its checksum".into());
    }
    if r.fetched_at_ms > SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64) + 60_000 {
        return Err("fetched in the future".into());
    }
    Ok(r)
}

/// The SHA-256 of `data` in lowercase hex (64 digits).
fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_and_checksums_are_pinned() {
        // Pinned (from `sha256sum`): existing cache directories are found by
        // these names, and their records carry these checksums.
        let dir = tempfile::tempdir().expect("tempdir");
        let persist = Persist::open(dir.path()).expect("open");
        let key = SlotKey {
            issuer: "vault".into(),
            upstream: "http://127.0.0.1:8200".into(),
            path: "/v1/identity/oidc/plugins/.well-known/keys".into(),
        };
        assert_eq!(persist.file_for(&key), dir.path().join("e1c21f75cb96a9a7ea6f7744cefe3987.json"));
        assert_eq!(hex_sha256(b"hello"), "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    }
}
