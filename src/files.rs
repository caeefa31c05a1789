//! Replacing files on disk so that no reader and no crash ever sees half of
//! one: the cached documents, the ACME certificate store and the copies of
//! the cloud IP ranges are all written this way. And reading a small file
//! named by configuration (a bearer token) without trusting its size.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// How the names of [`replace`]'s temp files start. A temp file left by a
/// crash is never renamed into place, so whoever owns a directory may delete
/// every file with this prefix at start-up.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Numbers the temp files of this process, so that two writers (two threads,
/// or two callers sharing a directory) never open the same temp name.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Replaces `target` with `bytes` so that a reader sees the old file or the
/// new one, never a mix, and a crash leaves one of the two.
///
/// Writes `bytes` to a new temp file next to `target` (mode 0600, named
/// [`TEMP_PREFIX`] + process id + a per-process counter), fsyncs it, renames
/// it over `target` and fsyncs the directory, so the rename itself is durable.
/// On error the temp file is removed and `target` is untouched.
/// For example, `replace(Path::new("/var/cache/wif-proxy/doc.json"), b"{}\n")`.
pub fn replace(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, target)?;
        fs::File::open(dir)?.sync_all()
    };
    let result = write();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Replaces the directory `target` with one `fill` writes, so that nothing
/// half-written ever stands at `target`: `fill` writes into a new temp
/// directory beside it (mode 0755: a mirror is meant to be read), which is
/// then renamed into place, the old directory moved aside and removed.
/// If `fill` fails, the temp directory is removed and `target` is untouched.
/// (Between the two renames `target` is briefly absent, never partial.)
pub fn replace_dir(target: &Path, fill: impl FnOnce(&Path) -> std::io::Result<()>) -> std::io::Result<()> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent)?;
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = parent.join(format!("{TEMP_PREFIX}{name}-{}-{n}", std::process::id()));
    let old = parent.join(format!("{TEMP_PREFIX}{name}-{}-{n}.old", std::process::id()));
    let build = || -> std::io::Result<()> {
        fs::DirBuilder::new().mode(0o755).create(&tmp)?;
        fill(&tmp)?;
        fs::File::open(&tmp)?.sync_all()
    };
    if let Err(e) = build() {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let had_old = match fs::rename(target, &old) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = fs::rename(&tmp, target) {
        if had_old {
            let _ = fs::rename(&old, target);
        }
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // The new directory is in place: what follows cannot undo that, so its
    // failures are not the caller's (a leftover `.old` carries TEMP_PREFIX).
    if had_old {
        let _ = fs::remove_dir_all(&old);
    }
    let _ = fs::File::open(parent).and_then(|d| d.sync_all());
    Ok(())
}

/// A small regular file read whole, with the metadata of the handle read.
#[derive(Debug)]
pub struct SmallFile {
    pub text: String,
    pub meta: fs::Metadata,
}

/// Why [`read_small`] refused a file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a regular file")]
    NotAFile,
    #[error("larger than {0} bytes")]
    TooLarge(usize),
    #[error("not UTF-8 text")]
    NotText,
}

/// Reads the regular file `path`, at most `max` bytes. A FIFO would block
/// and a device (`/dev/zero`) never end: both are refused before they are
/// opened, and the handle is checked again; the read stops one byte past
/// `max` whatever the size the file claims.
pub fn read_small(path: &Path, max: usize) -> Result<SmallFile, ReadError> {
    use std::io::Read as _;
    if !fs::metadata(path)?.is_file() {
        return Err(ReadError::NotAFile);
    }
    let file = fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile);
    }
    let limit = u64::try_from(max).unwrap_or(u64::MAX);
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len().min(limit)).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() > max {
        return Err(ReadError::TooLarge(max));
    }
    let text = String::from_utf8(bytes).map_err(|_| ReadError::NotText)?;
    Ok(SmallFile { text, meta })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).expect("list").map(|e| e.expect("entry").file_name().to_string_lossy().into()).collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_whole_files_with_mode_0600_and_leaves_no_temp_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("doc.json");
        replace(&target, b"old").expect("first write");
        replace(&target, b"new").expect("second write");
        assert_eq!(fs::read(&target).expect("read"), b"new");
        assert_eq!(fs::metadata(&target).expect("stat").permissions().mode() & 0o777, 0o600);
        assert_eq!(names(dir.path()), ["doc.json"]);
    }

    #[test]
    fn concurrent_writers_never_share_a_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::thread::scope(|s| {
            for t in 0..4 {
                let dir = dir.path();
                s.spawn(move || {
                    for i in 0..50 {
                        replace(&dir.join(format!("f{t}-{}", i % 3)), format!("{t}/{i}").as_bytes()).expect("write");
                    }
                });
            }
        });
        let mut want: Vec<String> = (0..4).flat_map(|t| (0..3).map(move |i| format!("f{t}-{i}"))).collect();
        want.sort();
        assert_eq!(names(dir.path()), want);
        assert_eq!(fs::read(dir.path().join("f2-1")).expect("read"), b"2/49");
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("doc.json");
        replace(&target, b"good").expect("write");
        // Renaming a file over a directory fails after the temp file exists.
        let blocked = dir.path().join("sub");
        fs::create_dir(&blocked).expect("mkdir");
        fs::write(blocked.join("x"), b"").expect("fill");
        assert!(replace(&blocked, b"bad").is_err());
        assert_eq!(fs::read(&target).expect("read"), b"good");
        assert_eq!(names(dir.path()), ["doc.json", "sub"]);
    }

    #[test]
    fn a_directory_is_replaced_whole_or_not_at_all() {
        let top = tempfile::tempdir().expect("tempdir");
        let target = top.path().join("mirror");
        let fill = |body: &'static [u8]| move |d: &Path| fs::write(d.join("doc"), body);
        replace_dir(&target, fill(b"one")).expect("first");
        replace_dir(&target, fill(b"two")).expect("second");
        assert_eq!(fs::read(target.join("doc")).expect("read"), b"two");
        let failed = replace_dir(&target, |d: &Path| {
            fs::write(d.join("doc"), b"half")?;
            Err(std::io::Error::other("fetch failed"))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read(target.join("doc")).expect("read"), b"two", "untouched");
        assert_eq!(names(top.path()), vec!["mirror".to_string()], "no temp directory left");
    }
}
