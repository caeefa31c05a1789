//! File helpers shared by the cache, the certificate store and the range
//! copies.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// Replaces `target` with `bytes` so that a reader sees the old file or the
/// new one, never a mix, and a crash leaves one of the two: write a temp file
/// in the same directory (mode 0600), fsync it, rename it over the target,
/// fsync the directory. `unique` keeps concurrent writers' temp files apart.
pub fn write_atomic(target: &Path, bytes: &[u8], unique: u64) -> std::io::Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".tmp-{}-{unique}", std::process::id()));
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
