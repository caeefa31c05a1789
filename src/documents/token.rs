//! The bearer token an upstream is sent (`upstream_bearer_token_file`).
//!
//! The file is read again whenever it changes (size, modification time or
//! inode, following symlinks): a projected service-account token is
//! replaced about hourly by swapping the symlink the kubelet maintains. The
//! token lives in a header value marked sensitive, is never formatted into
//! a message, and is sent only on requests to this issuer's upstream.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use http::HeaderValue;

use crate::config::{check_bearer_token, BearerTokenError, MAX_BEARER_TOKEN_BYTES};
use crate::files::{read_small, ReadError};

/// Why no token can be sent; the upstream is then not asked at all.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("upstream_bearer_token_file {path}: {source}")]
    Read { path: String, source: ReadError },
    #[error("upstream_bearer_token_file {path}: {source}")]
    Content { path: String, source: BearerTokenError },
}

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: (u64, u64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp { len: meta.len(), modified: meta.modified().ok(), inode: (meta.dev(), meta.ino()) }
    }
}

/// A token file and the header made from its last version.
pub struct BearerToken {
    path: PathBuf,
    last: Mutex<Option<(Stamp, HeaderValue)>>,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerToken").field("path", &self.path).finish_non_exhaustive()
    }
}

impl BearerToken {
    pub fn new(path: &Path) -> BearerToken {
        BearerToken { path: path.to_path_buf(), last: Mutex::new(None) }
    }

    /// `Authorization: Bearer <token>` from the file as it is now.
    pub fn header(&self) -> Result<HeaderValue, TokenError> {
        let path = || self.path.display().to_string();
        let read = |source| TokenError::Read { path: path(), source };
        let meta = std::fs::metadata(&self.path).map_err(|e| read(ReadError::Io(e)))?;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, value)) = last.as_ref() {
            if *seen == Stamp::of(&meta) {
                return Ok(value.clone());
            }
        }
        let file = read_small(&self.path, MAX_BEARER_TOKEN_BYTES).map_err(read)?;
        let token = check_bearer_token(&file.text).map_err(|source| TokenError::Content { path: path(), source })?;
        // `check_bearer_token` passes visible ASCII only: always a header value.
        let mut value = HeaderValue::from_maybe_shared(bytes::Bytes::from(format!("Bearer {token}")))
            .map_err(|_| TokenError::Content { path: path(), source: BearerTokenError::NotAToken })?;
        value.set_sensitive(true);
        *last = Some((Stamp::of(&file.meta), value.clone()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").expect("write");
        let token = BearerToken::new(&path);
        assert_eq!(token.header().expect("token"), "Bearer first");
        // A rotation as the kubelet does it: a new file renamed into place.
        std::fs::write(dir.path().join("next"), "second-token").expect("write");
        std::fs::rename(dir.path().join("next"), &path).expect("rename");
        assert_eq!(token.header().expect("token"), "Bearer second-token");
        std::fs::write(&path, "two tokens").expect("write");
        let e = token.header().expect_err("not a token").to_string();
        assert!(!e.contains("two tokens"), "the content is never quoted: {e}");
        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(token.header(), Err(TokenError::Read { .. })));
        // A FIFO is never opened (it would block), a device never read.
        let zero = BearerToken::new(Path::new("/dev/zero"));
        assert!(matches!(zero.header(), Err(TokenError::Read { source: ReadError::NotAFile, .. })));
        assert!(!format!("{token:?}").contains("second"), "Debug shows the path only");
    }
}
