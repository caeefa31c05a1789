//! `wif-proxy export`: a static mirror of every listed document, for a
//! bucket behind a CDN or a hand upload (GCP's `jwks_json`).
//!
//! The documents are fetched and validated by the proxy's own cache slots
//! (the same upstream request, validation and issuer guard, no persisted
//! copies), and written byte for byte as the proxy serves them at
//! `DIR/<public path>`, beside a `manifest.json` naming each file's path,
//! content type, ETag and Cache-Control. All or nothing: any document that
//! cannot be fetched or does not validate fails the export and leaves `DIR`
//! as it was (see [`files::replace_dir`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use crate::admission::ranges::Ranges;
use crate::config::{Config, IpAllowMode};
use crate::documents::cache::Refreshed;
use crate::documents::catalog::DocKind;
use crate::documents::entry::etag;
use crate::files;
use crate::proxy::state::{LoadError, Snapshot};
use crate::telemetry::metrics::Metrics;

/// The manifest's file name, at the top of the export.
pub const MANIFEST: &str = "manifest.json";

/// The Content-Type the proxy serves every document with.
const CONTENT_TYPE: &str = "application/json";

/// The members of a key that GCP's `jwks_json` upload accepts, and the key
/// types it supports.
const GCP_MEMBERS: [&str; 9] = ["kty", "alg", "use", "kid", "n", "e", "x", "y", "crv"];
const GCP_KEY_TYPES: [&str; 2] = ["RSA", "EC"];

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Every document, byte-identical to what the proxy serves.
    Files,
    /// Only the key sets, each reduced to what GCP's upload accepts.
    GcpJwksJson,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Files => "files",
            Format::GcpJwksJson => "gcp-jwks-json",
        }
    }
}

/// One document, as fetched and validated.
#[derive(Debug, Clone)]
pub struct Exported {
    pub issuer: String,
    /// The public path (the request target the proxy answers).
    pub path: String,
    pub kind: DocKind,
    pub body: Bytes,
    /// What the proxy would say for it fresh: `public, max-age=<ttl>`.
    pub max_age: u64,
    /// The issuer guard's finding, when it has one and `strict_issuer` is
    /// off (the proxy serves such a document too, and says so in `/readyz`).
    pub mismatch: Option<String>,
}

/// Why nothing was exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{} document(s) could not be fetched or did not validate; nothing was written:\n{}", .0.len(), .0.join("\n"))]
    Failed(Vec<String>),
    #[error("the configuration lists no document to export (issuers with \"*\" namespaces publish only on request)")]
    Empty,
    #[error("public path {0:?} cannot name a file")]
    Path(String),
    #[error("two documents would be written at {0:?} (issuers bound to different hosts publish the same path): export them with separate configurations")]
    Collision(String),
    #[error("the key set at {0} has no key GCP accepts (RSA or EC): an upload of it would trust nothing")]
    NoGcpKeys(String),
    #[error("{}: exists and is not an earlier export (no {MANIFEST}): refusing to replace it", .0.display())]
    NotAnExport(PathBuf),
    #[error("{}: {source}", .dir.display())]
    Io { dir: PathBuf, source: std::io::Error },
}

/// What was written, as `manifest.json` says it.
#[derive(Debug)]
pub struct Written {
    pub manifest: serde_json::Value,
    /// Keys left out of a `gcp-jwks-json` export (type or members GCP refuses).
    pub dropped: Vec<String>,
}

/// Fetches every listed document of `config` as the proxy would.
pub async fn fetch_all(config: &Config) -> Result<Vec<Exported>, ExportError> {
    let mut config = config.clone();
    // No range sources to load, nothing read from or saved to cache.dir:
    // only the issuer's answer counts.
    config.ip_allow.mode = IpAllowMode::Off;
    config.ip_allow.sources.clear();
    config.cache.dir = None;
    let metrics = Arc::new(Metrics::new());
    let ranges = Ranges::load(&config.ip_allow, None, Default::default())
        .await
        .map_err(|e| LoadError::Build { path: config.source.display().to_string(), source: Box::new(e.into()) })?;
    let snap = Snapshot::build(config, None, ranges, &metrics)?;
    let results = snap.refresh(None).await;
    if results.is_empty() {
        return Err(ExportError::Empty);
    }
    let mut failed = Vec::new();
    let mut out = Vec::with_capacity(results.len());
    for (doc, result) in results {
        let issuer = snap.issuers[doc.issuer].config.name.clone();
        match (result, doc.slot.entry()) {
            (Refreshed::Failed(e), _) => failed.push(format!("  {issuer} {}: {e}", doc.slot.key.path)),
            (_, Some(entry)) => out.push(Exported {
                issuer,
                path: doc.slot.key.path.to_string(),
                kind: doc.kind,
                body: entry.body.clone(),
                max_age: entry.ttl.as_secs(),
                mismatch: doc.slot.mismatch().map(|m| m.to_string()),
            }),
            (_, None) => failed.push(format!("  {issuer} {}: no document", doc.slot.key.path)),
        }
    }
    if failed.is_empty() {
        Ok(out)
    } else {
        Err(ExportError::Failed(failed))
    }
}

/// Writes `docs` in `format` as the directory `dir`, replacing it whole.
pub fn write(dir: &Path, docs: &[Exported], format: Format) -> Result<Written, ExportError> {
    let mut files: Vec<(PathBuf, Bytes, &Exported)> = Vec::new();
    let mut dropped = Vec::new();
    for d in docs {
        let body = match format {
            Format::Files => d.body.clone(),
            Format::GcpJwksJson if d.kind == DocKind::Keys => {
                gcp_jwks(d, &mut dropped).ok_or_else(|| ExportError::NoGcpKeys(d.path.clone()))?
            }
            Format::GcpJwksJson => continue,
        };
        files.push((relative(&d.path)?, body, d));
    }
    if files.is_empty() {
        return Err(ExportError::Empty);
    }
    // One file per path, and no file where another needs a directory.
    let mut names: Vec<&PathBuf> = files.iter().map(|(f, _, _)| f).collect();
    names.sort();
    for pair in names.windows(2) {
        if pair[0] == pair[1] || pair[1].starts_with(pair[0]) {
            return Err(ExportError::Collision(pair[1].display().to_string()));
        }
    }
    // The whole directory is replaced: only ever an empty one or an export.
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !dir.is_dir() || !(empty || dir.join(MANIFEST).is_file()) {
            return Err(ExportError::NotAnExport(dir.to_path_buf()));
        }
    }
    let entries: Vec<serde_json::Value> = files
        .iter()
        .map(|(file, body, d)| {
            json!({
                "path": d.path,
                "file": file.display().to_string(),
                "issuer": d.issuer,
                "document": d.kind.as_str(),
                "content_type": CONTENT_TYPE,
                "etag": String::from_utf8_lossy(etag(body).as_bytes()),
                "cache_control": format!("public, max-age={}", d.max_age),
                "bytes": body.len(),
            })
        })
        .collect();
    let manifest = json!({"format": format.as_str(), "documents": entries});
    let fill = |tmp: &Path| -> std::io::Result<()> {
        for (file, body, _) in &files {
            let path = tmp.join(file);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            write_synced(&path, body)?;
        }
        let mut text = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
        text.push(b'\n');
        write_synced(&tmp.join(MANIFEST), &text)
    };
    files::replace_dir(dir, fill).map_err(|source| ExportError::Io { dir: dir.to_path_buf(), source })?;
    Ok(Written { manifest, dropped })
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// `path` below the export's top, refusing anything that could leave it or
/// collide with the manifest.
fn relative(path: &str) -> Result<PathBuf, ExportError> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let ok = !rest.is_empty()
        && rest != MANIFEST
        && rest.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && !rest.contains(['\\', '\0', '?', '#']);
    if ok {
        Ok(PathBuf::from(rest))
    } else {
        Err(ExportError::Path(path.to_string()))
    }
}

/// The key set of `d` with only the keys and members GCP accepts; `None`
/// when no key is left.
fn gcp_jwks(d: &Exported, dropped: &mut Vec<String>) -> Option<Bytes> {
    #[derive(serde::Deserialize)]
    struct Jwks {
        keys: Vec<serde_json::Map<String, serde_json::Value>>,
    }
    // The body passed validation as a key set: it parses.
    let keys = serde_json::from_slice::<Jwks>(&d.body).map(|j| j.keys).unwrap_or_default();
    let mut kept = Vec::with_capacity(keys.len());
    for (i, key) in keys.into_iter().enumerate() {
        let kty = key.get("kty").and_then(|v| v.as_str()).unwrap_or_default();
        if !GCP_KEY_TYPES.contains(&kty) {
            let kid = key.get("kid").and_then(|v| v.as_str()).map_or(format!("keys[{i}]"), |k| format!("kid {k}"));
            dropped.push(format!("{} {}: {kid} (kty {kty:?}; GCP accepts RSA and EC)", d.issuer, d.path));
            continue;
        }
        let reduced: serde_json::Map<String, serde_json::Value> =
            key.into_iter().filter(|(k, _)| GCP_MEMBERS.contains(&k.as_str())).collect();
        kept.push(serde_json::Value::Object(reduced));
    }
    (!kept.is_empty()).then(|| Bytes::from(json!({ "keys": kept }).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_paths_stay_below_the_export() {
        assert_eq!(
            relative("/v1/identity/oidc/plugins/.well-known/keys").ok(),
            Some("v1/identity/oidc/plugins/.well-known/keys".into())
        );
        for bad in ["/", "/a/../b", "/a//b", "/manifest.json", "/./x", "/a?b"] {
            assert!(relative(bad).is_err(), "{bad}");
        }
    }

    fn doc(path: &str) -> Exported {
        Exported {
            issuer: "i".into(),
            path: path.into(),
            kind: DocKind::Keys,
            body: Bytes::from_static(b"{\"keys\":[]}"),
            max_age: 60,
            mismatch: None,
        }
    }

    /// Two documents at one file, or a file where a directory must be, are
    /// refused; so is replacing a directory that is not an export. Nothing
    /// is written either way.
    #[test]
    fn collisions_and_foreign_directories_are_refused() {
        let top = tempfile::tempdir().expect("tempdir");
        let out = top.path().join("mirror");
        for docs in [vec![doc("/keys"), doc("/keys")], vec![doc("/a"), doc("/a/keys")]] {
            assert!(matches!(write(&out, &docs, Format::Files), Err(ExportError::Collision(_))));
            assert!(!out.exists(), "nothing written");
        }
        let home = top.path().join("home");
        std::fs::create_dir(&home).expect("mkdir");
        std::fs::write(home.join("notes.txt"), "mine").expect("write");
        assert!(matches!(write(&home, &[doc("/keys")], Format::Files), Err(ExportError::NotAnExport(_))));
        assert_eq!(std::fs::read_to_string(home.join("notes.txt")).expect("kept"), "mine");
        // An earlier export is replaced.
        write(&out, &[doc("/keys")], Format::Files).expect("first");
        write(&out, &[doc("/keys2")], Format::Files).expect("an export replaces an export");
        assert!(out.join("keys2").is_file() && !out.join("keys").exists());
    }

    #[test]
    fn gcp_keeps_rsa_and_ec_keys_and_their_accepted_members() {
        let body = br#"{"keys":[{"kty":"RSA","kid":"a","n":"x","e":"AQAB","use":"sig","alg":"RS256","x5c":["..."]},{"kty":"OKP","kid":"b","crv":"Ed25519","x":"y"},{"kty":"EC","kid":"c","crv":"P-256","x":"1","y":"2"}]}"#;
        let d = Exported {
            issuer: "i".into(),
            path: "/k".into(),
            kind: DocKind::Keys,
            body: Bytes::from_static(body),
            max_age: 60,
            mismatch: None,
        };
        let mut dropped = Vec::new();
        let out: serde_json::Value = serde_json::from_slice(&gcp_jwks(&d, &mut dropped).expect("keys")).expect("json");
        assert_eq!(
            out,
            json!({"keys":[{"kty":"RSA","kid":"a","n":"x","e":"AQAB","use":"sig","alg":"RS256"},{"kty":"EC","kid":"c","crv":"P-256","x":"1","y":"2"}]})
        );
        assert_eq!(dropped, vec!["i /k: kid b (kty \"OKP\"; GCP accepts RSA and EC)".to_string()]);
    }
}
