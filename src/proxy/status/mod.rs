//! The operator's view of a running proxy: one [`Status`] gathered from the
//! live state, served by the admin listener as a page (`/`, [`html`]) and as
//! JSON (`/status.json`), and printed by `wif-proxy status`.
//!
//! It answers the question asked after a key rotation — has every cloud
//! fetched the new key set? — beside what else an operator looks at first:
//! listeners and certificates, each document's state, the source-address
//! allowlist and what was refused. Gathering reads atomics and takes the
//! slots' small accounting locks; nothing here runs on the request path.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::documents::cache::Slot;
use crate::documents::validate::Facts;
use crate::proxy::allowlist::IssuerId;
use crate::proxy::state::{Doc, Shared, Snapshot};
use crate::telemetry::events::{Cut, Deny};
use crate::telemetry::metrics::unix_seconds;

pub mod html;

/// Everything the status page shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    /// When this was gathered (RFC 3339, UTC).
    pub generated_at: String,
    pub generated_unix: i64,
    /// The configuration file.
    pub config: String,
    /// What `/readyz` says.
    pub ready: bool,
    pub listeners: Vec<ListenerStatus>,
    pub certificates: Vec<CertificateStatus>,
    pub issuers: Vec<IssuerStatus>,
    pub ip_allow: IpAllowStatus,
    pub refusals: Refusals,
}

/// One bound listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// Its configuration key: `server.listen`, `server.admin_listen`, `tls.http_listen`.
    pub name: String,
    pub address: String,
    /// `tls` or `plain`.
    pub protocol: String,
    /// Public listeners: accepting now.
    pub accepting: bool,
}

/// One served TLS certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateStatus {
    pub host: String,
    pub not_after: String,
    /// Negative once expired.
    pub expires_in_seconds: i64,
}

/// One issuer and its documents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuerStatus {
    pub name: String,
    pub kind: String,
    pub public_url: String,
    pub documents: Vec<DocumentStatus>,
}

/// What a document's cache slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocState {
    /// Fetched and within its freshness.
    Fresh,
    /// Served past its freshness while a refresh runs.
    Stale,
    /// The last fetch failed (the last good copy, if any, is still served).
    Failing,
    /// Nothing fetched or restored yet.
    NeverFetched,
}

impl DocState {
    /// Its word in `/status.json` (and the page's `data-state`).
    pub fn as_str(self) -> &'static str {
        match self {
            DocState::Fresh => "fresh",
            DocState::Stale => "stale",
            DocState::Failing => "failing",
            DocState::NeverFetched => "never_fetched",
        }
    }

    /// How the page and the terminal say it.
    pub fn label(self) -> &'static str {
        match self {
            DocState::NeverFetched => "never fetched",
            other => other.as_str(),
        }
    }
}

/// One listed document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentStatus {
    pub path: String,
    /// `discovery` or `keys`.
    pub document: String,
    pub namespace: String,
    pub state: DocState,
    pub fetched_at: Option<String>,
    pub age_seconds: Option<u64>,
    /// When its bytes (for a key set: the keys) last changed.
    pub last_change: Option<String>,
    pub etag: Option<String>,
    /// Key sets: the number of keys and the key IDs served now.
    pub keys: Option<usize>,
    pub key_ids: Vec<String>,
    /// The last fetch error, while failing.
    pub error: Option<String>,
    /// The issuer guard's finding, if any.
    pub issuer_mismatch: Option<String>,
    /// Fetch accounting: one row per `ip_allow` source, then `other`.
    pub sources: Vec<SourceFetch>,
}

/// Whether a source got the version served now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchState {
    /// Its last fetch got the document served now.
    Current,
    /// Its last fetch got an older version: it has not fetched since the change.
    Behind,
    /// It has not fetched this document.
    Never,
}

impl FetchState {
    /// Its word in `/status.json` (and the page's `data-state`).
    pub fn as_str(self) -> &'static str {
        match self {
            FetchState::Current => "current",
            FetchState::Behind => "behind",
            FetchState::Never => "never",
        }
    }

    /// How the page and the terminal say it.
    pub fn label(self) -> &'static str {
        match self {
            FetchState::Never => "never fetched",
            other => other.as_str(),
        }
    }
}

/// What one source of clients was last served from one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFetch {
    pub source: String,
    pub state: FetchState,
    pub requests: u64,
    pub last_fetch: Option<String>,
    pub last_fetch_age_seconds: Option<u64>,
    /// The ETag and key IDs it got (`None` once that version is forgotten).
    pub etag: Option<String>,
    pub key_ids: Option<Vec<String>>,
}

/// The source-address allowlist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpAllowStatus {
    /// `off`, `report` or `enforce`.
    pub mode: String,
    /// What report mode would have denied so far.
    pub would_deny: u64,
    /// Denied by it so far (enforce mode).
    pub denied: u64,
    pub sources: Vec<RangeSourceStatus>,
}

/// One `[[ip_allow.source]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RangeSourceStatus {
    pub name: String,
    pub format: String,
    /// `false`: counted in fetch accounting only.
    pub admit: bool,
    pub prefixes: usize,
    pub last_refresh: Option<String>,
}

/// What the proxy refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusals {
    pub rate_limit_enabled: bool,
    /// Requests answered 429 so far.
    pub rate_limited: u64,
    /// Every refusal and connection cut by reason word, as in
    /// `wif_proxy_denied_requests_total`.
    pub by_reason: BTreeMap<String, u64>,
}

/// Gathers the status of the running proxy.
pub fn gather(shared: &Shared) -> Status {
    let snap = shared.snapshot();
    let (now, wall) = (Instant::now(), SystemTime::now());
    let listening = shared.is_listening();
    let tls_on = shared.tls.is_some();
    let listeners = shared
        .listeners
        .get()
        .map(|all| {
            all.iter()
                .map(|(name, addr)| ListenerStatus {
                    name: name.to_string(),
                    address: addr.to_string(),
                    protocol: if *name == "server.listen" && tls_on { "tls" } else { "plain" }.to_string(),
                    accepting: *name == "server.admin_listen" || listening,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut certificates: Vec<CertificateStatus> = shared
        .tls
        .as_ref()
        .map(|tls| {
            tls.expiry()
                .iter()
                .map(|(host, not_after)| CertificateStatus {
                    host: host.clone(),
                    not_after: rfc3339(*not_after),
                    expires_in_seconds: unix_seconds(*not_after) - unix_seconds(wall),
                })
                .collect()
        })
        .unwrap_or_default();
    certificates.sort_by(|a, b| a.host.cmp(&b.host));
    let docs = snap.served_docs();
    let issuers = IssuerId::all(&snap.config)
        .map(|i| (i, &snap.issuers[i]))
        .map(|(i, issuer)| IssuerStatus {
            name: issuer.config.name.clone(),
            kind: issuer.config.kind.as_str().to_string(),
            public_url: issuer.config.public_url.clone(),
            documents: docs.iter().filter(|d| d.issuer == i).map(|d| document(&snap, d, now, wall)).collect(),
        })
        .collect();
    let metrics = &snap.metrics;
    let ip_allow = IpAllowStatus {
        mode: snap.ranges.mode.as_str().to_string(),
        would_deny: metrics.ip_allow_would_deny.get(),
        denied: metrics.denied(Deny::Ip),
        sources: snap
            .ranges
            .sources
            .iter()
            .map(|s| {
                let at = s.loaded_at.load(std::sync::atomic::Ordering::Relaxed);
                RangeSourceStatus {
                    name: s.config.name.clone(),
                    format: s.config.format.as_str().to_string(),
                    admit: s.config.admit,
                    prefixes: s.prefixes.load().len(),
                    last_refresh: (at > 0)
                        .then(|| rfc3339(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(at))),
                }
            })
            .collect(),
    };
    let mut by_reason: BTreeMap<String, u64> =
        Deny::ALL.iter().map(|d| (d.as_str().to_string(), metrics.denied(*d))).collect();
    by_reason.extend(Cut::ALL.iter().map(|c| (c.as_str().to_string(), metrics.cuts(*c))));
    Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        generated_at: rfc3339(wall),
        generated_unix: unix_seconds(wall),
        config: snap.config.source.display().to_string(),
        ready: crate::proxy::admin::readiness(shared).0,
        listeners,
        certificates,
        issuers,
        ip_allow,
        refusals: Refusals {
            rate_limit_enabled: snap.rate_limit.is_some(),
            rate_limited: metrics.denied(Deny::RateLimit),
            by_reason,
        },
    }
}

/// One document's row, with its fetch accounting.
fn document(snap: &Snapshot, doc: &Doc, now: Instant, wall: SystemTime) -> DocumentStatus {
    let slot: &Slot = &doc.slot;
    let entry = slot.entry();
    let error = slot.last_error().map(|e| e.to_string());
    let state = match (&entry, &error) {
        (_, Some(_)) => DocState::Failing,
        (None, None) => DocState::NeverFetched,
        (Some(e), None) if now < e.fresh_until() => DocState::Fresh,
        (Some(_), None) => DocState::Stale,
    };
    let (keys, key_ids) = match entry.as_ref().map(|e| &e.facts) {
        Some(Facts::Keys { count, kids }) => (Some(*count), kids.clone()),
        _ => (None, Vec::new()),
    };
    let changed = slot.changed.get();
    let current = entry.as_ref().map(|e| e.tag);
    let sources = doc
        .fetched_by
        .iter()
        .enumerate()
        .map(|(i, tally)| {
            let last = tally.last();
            let state = match (last, current) {
                (None, _) => FetchState::Never,
                (Some((_, got)), Some(now_serving)) if got == now_serving => FetchState::Current,
                (Some(_), _) => FetchState::Behind,
            };
            let version = last.and_then(|(_, tag)| slot.served.version(tag));
            SourceFetch {
                source: snap.ranges.source_name(i).to_string(),
                state,
                requests: tally.count(),
                last_fetch: last.map(|(at, _)| rfc3339(at)),
                last_fetch_age_seconds: last.map(|(at, _)| wall.duration_since(at).map_or(0, |d| d.as_secs())),
                etag: version.as_ref().map(|v| v.etag.clone()),
                key_ids: version.map(|v| v.kids),
            }
        })
        .collect();
    DocumentStatus {
        path: slot.key.path.to_string(),
        document: doc.kind.as_str().to_string(),
        namespace: doc.namespace_name(),
        state,
        fetched_at: entry.as_ref().map(|e| rfc3339(e.fetched_wall)),
        age_seconds: entry.as_ref().map(|e| now.saturating_duration_since(e.fetched).as_secs()),
        last_change: (changed > 0).then(|| rfc3339(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(changed))),
        etag: entry.as_ref().map(|e| String::from_utf8_lossy(e.etag.as_bytes()).into_owned()),
        keys,
        key_ids,
        error,
        issuer_mismatch: slot.mismatch().map(|m| m.to_string()),
        sources,
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
