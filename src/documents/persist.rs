//! Last-known-good documents on disk, so a restart during an issuer outage
//! still has something to serve.
//!
//! One JSON file per document, named by a hash of its [`SlotKey`]. Files are
//! written atomically (temp file, fsync, rename, fsync of the directory) with
//! mode 0600, and carry a SHA-256 of the body so a torn or edited file is
//! detected and ignored rather than served.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::documents::catalog::DocKind;
use crate::documents::entry::{Entry, SlotKey};
use crate::files;

/// The record format written today; files of any other version are skipped.
const VERSION: u32 = 1;

/// One persisted document: the cache file's contents, as JSON.
///
/// Everything needed to serve the document again is here, and nothing is
/// trusted on the way back in: [`Persist::load_all`] checks the format and
/// the checksum, and [`Slot::restore`](crate::documents::cache::Slot::restore)
/// validates the body again before serving it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// [`VERSION`] when written.
    pub version: u32,
    /// The three parts of the document's [`SlotKey`].
    pub issuer: String,
    pub upstream: String,
    pub path: String,
    /// [`DocKind::as_str`] of the document when it was fetched.
    pub kind: String,
    /// Wall-clock fetch time, milliseconds since the Unix epoch.
    pub fetched_at_ms: u64,
    /// How long it was fresh for, in milliseconds.
    pub ttl_ms: u64,
    /// Hex SHA-256 of `body`.
    pub sha256: String,
    /// The document, byte for byte (validated JSON is always UTF-8).
    pub body: String,
}

impl Record {
    /// The record of `entry`, served as `key` (a document of `kind`).
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

    /// The key the record was saved under.
    pub fn key(&self) -> SlotKey {
        SlotKey {
            issuer: self.issuer.as_str().into(),
            upstream: self.upstream.as_str().into(),
            path: self.path.as_str().into(),
        }
    }
}

/// Why the cache directory cannot be used. Reported as a configuration error
/// (at start-up the proxy does not start; on reload the old snapshot stays).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cache.dir {}: cannot create: {error}", .dir.display())]
    Create { dir: PathBuf, error: io::Error },
    /// Probed by creating (and removing) an empty file in it.
    #[error("cache.dir {}: not writable: {error}", .dir.display())]
    NotWritable { dir: PathBuf, error: io::Error },
}

/// Why a cache file was ignored at start-up. The log line that reports it
/// names the file.
#[derive(Debug, thiserror::Error)]
enum Damage {
    /// The operating system's own words (permissions, a vanished file…).
    #[error(transparent)]
    Unreadable(#[from] io::Error),
    #[error("larger than any document we store")]
    TooLarge,
    #[error("not a cache record: {0}")]
    NotARecord(serde_json::Error),
    #[error("unknown version {0}")]
    Version(u32),
    #[error("body does not match its checksum")]
    Checksum,
    /// More than a minute ahead of our clock: trusting it would make a
    /// document look younger than it is.
    #[error("fetched in the future")]
    FromTheFuture,
}

/// The largest cache file read back; no document we store comes near it.
const MAX_FILE_BYTES: u64 = 128 * 1024 * 1024;

/// The cache directory (`cache.dir`): where documents are saved as they are
/// fetched, and read back once at start-up.
#[derive(Debug)]
pub struct Persist {
    dir: PathBuf,
}

impl Persist {
    /// Creates the directory (mode 0700) if needed and checks it is writable.
    pub fn open(dir: &Path) -> Result<Persist, OpenError> {
        fs::create_dir_all(dir).map_err(|error| OpenError::Create { dir: dir.to_path_buf(), error })?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        fs::write(&probe, b"").map_err(|error| OpenError::NotWritable { dir: dir.to_path_buf(), error })?;
        let _ = fs::remove_file(&probe);
        Ok(Persist { dir: dir.to_path_buf() })
    }

    /// The directory, as configured.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a key is stored in: the first 32 hex digits of the SHA-256 of
    /// `issuer`, `upstream` and `path` joined by newlines, plus `.json`. Fixed
    /// length, no characters from the path, and the same across restarts.
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

    /// Every readable, intact record; damaged files are logged and skipped
    /// (never deleted: an operator may want to look at them). Temp files a
    /// crash left behind are deleted.
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

/// Reads one cache file back, trusting nothing in it that it cannot check.
fn read_record(path: &Path) -> Result<Record, Damage> {
    if fs::metadata(path)?.len() > MAX_FILE_BYTES {
        return Err(Damage::TooLarge);
    }
    let text = fs::read(path)?;
    let r: Record = serde_json::from_slice(&text).map_err(Damage::NotARecord)?;
    if r.version != VERSION {
        return Err(Damage::Version(r.version));
    }
    if hex_sha256(r.body.as_bytes()) != r.sha256 {
        return Err(Damage::Checksum);
    }
    if r.fetched_at_ms > SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64) + 60_000 {
        return Err(Damage::FromTheFuture);
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

    fn record(path: &str) -> Record {
        let body = bytes::Bytes::from_static(br#"{"keys":[]}"#);
        let facts = crate::documents::validate::Facts::Keys { count: 0, kids: Vec::new() };
        let entry =
            Entry::new(body, std::time::Duration::from_secs(60), facts, std::time::Instant::now(), SystemTime::now());
        let key = SlotKey { issuer: "vault".into(), upstream: "http://127.0.0.1:8200".into(), path: path.into() };
        Record::new(&key, DocKind::Keys, &entry)
    }

    #[test]
    fn saved_records_load_back_and_damaged_files_are_skipped_with_a_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let persist = Persist::open(dir.path()).expect("open");
        let good = record("/keys");
        persist.save(&good).expect("save");
        let write = |name: &str, r: &Record| {
            fs::write(dir.path().join(name), serde_json::to_vec(r).expect("json")).expect("write")
        };
        let mut edited = record("/edited");
        edited.body.push(' ');
        write("edited.json", &edited);
        let mut newer = record("/newer");
        newer.version = 2;
        write("newer.json", &newer);
        let mut future = record("/future");
        future.fetched_at_ms += 3_600_000;
        write("future.json", &future);
        fs::write(dir.path().join("junk.json"), "not json").expect("write");
        fs::write(dir.path().join(format!("{}9-9", files::TEMP_PREFIX)), "half").expect("write");

        assert_eq!(persist.load_all(), vec![good]);
        let reason = |name: &str| read_record(&dir.path().join(name)).expect_err("damaged").to_string();
        assert_eq!(reason("edited.json"), "body does not match its checksum");
        assert_eq!(reason("newer.json"), "unknown version 2");
        assert_eq!(reason("future.json"), "fetched in the future");
        assert_eq!(reason("junk.json"), "not a cache record: expected ident at line 1 column 2");
        assert_eq!(reason("gone.json"), "No such file or directory (os error 2)");
        assert!(!dir.path().join(format!("{}9-9", files::TEMP_PREFIX)).exists(), "a crash's temp file is cleaned up");
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        fs::write(&file, b"").expect("write");
        let under_a_file = file.join("cache");
        let e = Persist::open(&under_a_file).expect_err("a file is in the way").to_string();
        let want = format!("cache.dir {}: cannot create: ", under_a_file.display());
        assert!(e.starts_with(&want), "{e}");
    }
}
