//! A good document, ready to serve, and the key that names it.
//!
//! Both the cache (which serves entries) and the on-disk copy (which saves and
//! restores them) need these two types; they live here so that neither of
//! those modules has to import the other's internals.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use sha2::{Digest, Sha256};

use crate::documents::validate::Facts;

/// Identifies a document across reloads: same issuer, same upstream, same path.
///
/// A reload that keeps all three keeps the cached document; changing the
/// upstream origin starts the document afresh, so bytes fetched from one
/// server are never served as if another had sent them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlotKey {
    pub issuer: Arc<str>,
    pub upstream: Arc<str>,
    pub path: Arc<str>,
}

/// One good document, ready to serve.
///
/// Everything the hit path sends besides the body is computed once, here,
/// when the document is accepted.
#[derive(Debug)]
pub struct Entry {
    pub body: Bytes,
    /// Strong validator: `"` + the first 16 bytes of the body's SHA-256 in
    /// lowercase hex + `"`. Same body, same tag, across restarts and replicas.
    pub etag: HeaderValue,
    /// The first 8 bytes of the same digest: names this version of the
    /// document in one word, for fetch accounting ("which version did this
    /// source get?").
    pub tag: u64,
    /// Pre-built, so the hit path formats nothing it can avoid.
    pub content_length: HeaderValue,
    /// When it was fetched, on the monotonic clock (drives freshness).
    pub fetched: Instant,
    /// When it was fetched, on the wall clock (persisted; survives restarts).
    pub fetched_wall: SystemTime,
    /// How long it stays fresh after `fetched`.
    pub ttl: Duration,
    /// What validation learned about it.
    pub facts: Facts,
}

impl Entry {
    /// Wraps a validated `body`, computing its `ETag` and `Content-Length`.
    pub fn new(body: Bytes, ttl: Duration, facts: Facts, fetched: Instant, fetched_wall: SystemTime) -> Entry {
        let (etag, tag) = etag_and_tag(&body);
        Entry { etag, tag, content_length: HeaderValue::from(body.len()), body, fetched, fetched_wall, ttl, facts }
    }

    /// The instant it stops being fresh.
    pub fn fresh_until(&self) -> Instant {
        self.fetched + self.ttl
    }
}

/// The strong `ETag` of `body` (see [`Entry::etag`]).
pub(crate) fn etag(body: &[u8]) -> HeaderValue {
    etag_and_tag(body).0
}

/// The strong `ETag` of `body` and its [`Entry::tag`], from one digest.
fn etag_and_tag(body: &[u8]) -> (HeaderValue, u64) {
    let digest = Sha256::digest(body);
    let mut tag = [b'"'; 34];
    hex::encode_to_slice(&digest[..16], &mut tag[1..33]).expect("16 bytes are 32 hex digits");
    let word = u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 8 bytes"));
    (HeaderValue::from_bytes(&tag).expect("quoted hex is a valid header value"), word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &'static [u8]) -> Entry {
        Entry::new(
            Bytes::from_static(body),
            Duration::ZERO,
            Facts::Keys { count: 0, kids: Vec::new() },
            Instant::now(),
            SystemTime::now(),
        )
    }

    #[test]
    fn etag_is_strong_and_stable() {
        let (a, b) = (entry(b"{\"keys\":[]}"), entry(b"{\"keys\":[]}"));
        assert_eq!(a.etag, b.etag);
        assert_eq!(a.etag.len(), 34);
        assert!(!a.etag.to_str().expect("ascii").starts_with("W/"));
    }

    #[test]
    fn etag_bytes_are_the_quoted_hex_prefix_of_the_sha256() {
        // Pinned (from `sha256sum`): clients and the caches in front of
        // replicas hold these tags, so the bytes must never drift.
        assert_eq!(entry(b"{\"keys\":[]}").etag, "\"9638d11914735d0072002dd4d67c734a\"");
        assert_eq!(entry(b"{\"keys\":[]}").tag, 0x9638_d119_1473_5d00, "the tag is the ETag's first 16 digits");
    }
}
