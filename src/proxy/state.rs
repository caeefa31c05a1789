//! The running configuration as one immutable [`Snapshot`], and the atomic
//! swap that replaces it on reload.
//!
//! A request loads the current snapshot once and uses only it, so a reload in
//! the middle of a request cannot mix two configurations. A new snapshot
//! reuses the cache slots whose identity did not change, so a reload never
//! drops cached documents. An invalid file is rejected before anything is swapped: the old snapshot keeps serving.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::admission::ranges::{Ranges, RangesError};
use crate::admission::ratelimit::RateLimit;
use crate::config::{Config, ConfigError, IssuerConfig};
use crate::documents::cache::{Policy, Refreshed, Slot, Source};
use crate::documents::catalog::{self, DocKind};
use crate::documents::entry::SlotKey;
use crate::documents::persist::{OpenError, Persist};
use crate::documents::served::Tally;
use crate::documents::upstream::{Upstream, UpstreamError};
use crate::documents::validate::Remedy;
use crate::edge::tls::{Tls, TlsError};
use crate::proxy::allowlist::{indexed_by, Conflict, IssuerId, Lookup, RouteId, Routes};
use crate::telemetry::accesslog;
use crate::telemetry::metrics::{FetchLabels, Metrics, NamespaceLabels};

/// A served document: its cache slot and where it comes from.
#[derive(Debug, Clone)]
pub struct Doc {
    pub slot: Arc<Slot>,
    pub source: Arc<Source>,
    pub issuer: IssuerId,
    pub kind: DocKind,
    /// The `namespace` metric label: the Vault namespace (`root` for the
    /// root), with `/provider/<name>` for OIDC providers; the path otherwise.
    pub namespace: String,
    /// What its access-log lines name it by.
    pub log: accesslog::Names,
    /// `wif_proxy_requests_total` for this document, per status class.
    pub requests: [prometheus_client::metrics::counter::Counter; 4],
    /// Fetch accounting, indexed by [`Ranges::source_of`]: one tally per
    /// `ip_allow` source, then `other`.
    pub fetched_by: Arc<[Arc<Tally>]>,
}

impl Doc {
    /// The namespace as an operator names it: [`Doc::namespace`], except
    /// that a `*`-namespace document (labelled `*` to bound the metrics)
    /// names its own.
    pub fn namespace_name(&self) -> String {
        match self.namespace.as_str() {
            "*" => namespace_label(&self.slot.key.path),
            listed => listed.to_string(),
        }
    }
}

indexed_by!(IssuerId => IssuerRuntime);
indexed_by!(RouteId => Doc);

/// Per-issuer runtime state.
#[derive(Debug)]
pub struct IssuerRuntime {
    pub config: IssuerConfig,
    pub upstream: Arc<Upstream>,
}

/// Everything a request needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub routes: Routes,
    pub issuers: Vec<IssuerRuntime>,
    /// Parallel to `routes.routes`: indexed by the same [`RouteId`](crate::proxy::allowlist::RouteId).
    pub docs: Vec<Doc>,
    pub dynamic: DynamicDocs,
    pub policy: Policy,
    pub persist: Option<Arc<Persist>>,
    /// The source-address allowlist.
    pub ranges: Arc<Ranges>,
    /// `None` when `rate_limit.enabled = false`.
    pub rate_limit: Option<Arc<RateLimit>>,
    /// `Strict-Transport-Security` for TLS responses.
    pub hsts: Option<http::HeaderValue>,
    pub metrics: Arc<Metrics>,
}

/// Why a configuration could not become a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The file is valid but what it names cannot be set up.
    #[error("{path}: {source}")]
    Build { path: String, source: Box<BuildError> },
}

/// What a valid configuration names that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Allowlist(#[from] Conflict),
    #[error(transparent)]
    CacheDir(#[from] OpenError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Ranges(#[from] RangesError),
}

impl LoadError {
    /// `source`, attributed to the configuration file.
    fn build(config: &Config, source: impl Into<BuildError>) -> LoadError {
        LoadError::Build { path: config.source.display().to_string(), source: Box::new(source.into()) }
    }
}

impl Snapshot {
    /// Builds a snapshot, reusing slots and upstream pools from `previous`.
    pub fn build(
        config: Config,
        previous: Option<&Snapshot>,
        ranges: Arc<Ranges>,
        metrics: &Arc<Metrics>,
    ) -> Result<Snapshot, LoadError> {
        let routes = Routes::build(&config).map_err(|e| LoadError::build(&config, e))?;
        let persist = match &config.cache.dir {
            Some(dir) => match previous.and_then(|p| p.persist.as_ref()).filter(|p| p.dir() == dir.as_path()) {
                Some(p) => Some(Arc::clone(p)),
                None => Some(Arc::new(Persist::open(dir).map_err(|e| LoadError::build(&config, e))?)),
            },
            None => None,
        };
        let mut issuers = Vec::with_capacity(config.issuers.len());
        for ic in &config.issuers {
            // Always rebuilt, so a reload re-reads rotated CA and client
            // certificates; what is known of its nodes carries over.
            let upstream = Arc::new(Upstream::new(ic).map_err(|e| LoadError::build(&config, e))?);
            if let Some(old) = previous.and_then(|p| p.issuers.iter().find(|i| i.config.name == ic.name)) {
                upstream.inherit(&old.upstream);
            }
            issuers.push(IssuerRuntime { config: ic.clone(), upstream });
        }
        let policy = Policy::from(&config.cache);
        let old_slots = previous.map(Snapshot::slots_by_key).unwrap_or_default();
        let docs = routes
            .routes
            .iter()
            .map(|r| {
                let issuer = &issuers[r.issuer];
                let key = slot_key(&issuer.config, &r.path);
                let slot = old_slots.get(&key).cloned().unwrap_or_else(|| Arc::new(Slot::new(key)));
                let namespace = namespace_label(&r.path);
                Doc {
                    fetched_by: tallies(&slot, &issuer.config.name, r.kind, &namespace, &ranges, metrics),
                    slot,
                    source: Arc::new(source(issuer, r.kind, &r.path, &namespace, policy, persist.clone(), metrics)),
                    issuer: r.issuer,
                    kind: r.kind,
                    namespace,
                    log: accesslog::Names::listed(&issuer.config.name, &r.path),
                    requests: metrics.request_counters(&issuer.config.name, r.kind.as_str()),
                }
            })
            .collect();
        let dynamic = DynamicDocs::new(config.cache.max_dynamic_entries);
        // Keep the limiter (and what it knows about clients) when its settings did not change.
        let rate_limit = config.rate_limit.enabled.then(|| {
            match previous.and_then(|p| p.rate_limit.as_ref()).filter(|l| *l.config() == config.rate_limit) {
                Some(l) => Arc::clone(l),
                None => RateLimit::new(&config.rate_limit),
            }
        });
        let hsts = config.tls.hsts.as_deref().and_then(|v| http::HeaderValue::from_str(v).ok());
        let snapshot = Snapshot {
            config,
            routes,
            issuers,
            docs,
            dynamic,
            policy,
            persist,
            ranges,
            rate_limit,
            hsts,
            metrics: Arc::clone(metrics),
        };
        if let Some(prev) = previous {
            // Carry `*`-namespace documents over when their issuer still
            // matches them, unless the new configuration lists the path
            // (its listed document took the slot over).
            let carried: Vec<Arc<Slot>> = prev.dynamic.slots();
            for slot in carried {
                if snapshot.docs.iter().any(|d| Arc::ptr_eq(&d.slot, &slot)) {
                    continue;
                }
                if let Some((issuer, kind)) = snapshot.wildcard_owner(&slot.key) {
                    snapshot.dynamic.insert_slot(&snapshot, issuer, kind, slot);
                }
            }
        }
        Ok(snapshot)
    }

    fn slots_by_key(&self) -> HashMap<SlotKey, Arc<Slot>> {
        let mut map: HashMap<SlotKey, Arc<Slot>> =
            self.docs.iter().map(|d| (d.slot.key.clone(), Arc::clone(&d.slot))).collect();
        for s in self.dynamic.slots() {
            map.insert(s.key.clone(), s);
        }
        map
    }

    /// The wildcard issuer that would serve `key`, if any.
    fn wildcard_owner(&self, key: &SlotKey) -> Option<(IssuerId, DocKind)> {
        IssuerId::all(&self.config).find_map(|id| {
            if *key != slot_key(&self.issuers[id].config, &key.path) {
                return None;
            }
            self.routes.wildcard_match(id, &key.path).map(|kind| (id, kind))
        })
    }

    /// Resolves a lookup to the document that serves it. `None` only when
    /// the `*`-namespace cache is full of documents it must keep.
    pub fn doc(&self, lookup: Lookup<'_>) -> Option<std::borrow::Cow<'_, Doc>> {
        match lookup {
            Lookup::Static(i) => Some(std::borrow::Cow::Borrowed(&self.docs[i])),
            Lookup::Dynamic { issuer, kind, path } => {
                self.dynamic.get_or_insert(self, issuer, kind, path).map(std::borrow::Cow::Owned)
            }
        }
    }

    /// Loads persisted documents into the slots that still serve them.
    pub fn restore_persisted(&self) {
        let Some(persist) = &self.persist else { return };
        let (mut restored, mut skipped) = (0usize, 0usize);
        for record in persist.load_all() {
            let key = record.key();
            let doc = match self.docs.iter().find(|d| d.slot.key == key) {
                Some(d) => Some(d.clone()),
                None => self
                    .wildcard_owner(&key)
                    .and_then(|(issuer, kind)| self.dynamic.get_or_insert(self, issuer, kind, &key.path)),
            };
            let Some(doc) = doc else {
                // No longer allowlisted (or from another upstream): never served.
                skipped += 1;
                continue;
            };
            if record.kind != doc.kind.as_str() {
                skipped += 1;
                continue;
            }
            match doc.slot.restore(&doc.source, &record) {
                Ok(()) => restored += 1,
                Err(e) => {
                    skipped += 1;
                    tracing::warn!(path = %record.path, "cache.dir: not restoring persisted document: {e}");
                }
            }
        }
        tracing::info!(dir = %persist.dir().display(), restored, skipped, "cache.dir: persisted documents loaded");
    }

    /// The listed documents, then the `*`-namespace ones that hold a
    /// document, by path (a name asked for but never fetched is not one).
    pub fn served_docs(&self) -> Vec<Doc> {
        let mut dynamic: Vec<Doc> = self.dynamic.docs().into_iter().filter(|d| d.slot.entry().is_some()).collect();
        dynamic.sort_by(|a, b| a.slot.key.path.cmp(&b.slot.key.path));
        let mut docs = self.docs.clone();
        docs.extend(dynamic);
        docs
    }

    /// Issuer requests a refresh round has in flight at once: a round over
    /// many `*`-namespace documents must not become a burst of hundreds.
    const REFRESH_CONCURRENCY: usize = 8;

    /// Refetches every served document (only `issuer`'s, when named) at
    /// once, bypassing freshness and backoff: the listed documents and the
    /// `*`-namespace ones that hold a document (never-fetched names are not
    /// worth an issuer request). Failures keep the last good document.
    pub async fn refresh(&self, issuer: Option<&str>) -> Vec<(Doc, Refreshed)> {
        let mut docs = self.served_docs();
        docs.retain(|d| issuer.is_none_or(|name| self.issuers[d.issuer].config.name == name));
        use futures_util::StreamExt as _;
        let fetches: Vec<_> = docs.iter().map(|d| d.slot.refresh(&d.source)).collect();
        let outcomes: Vec<Refreshed> =
            futures_util::stream::iter(fetches).buffered(Self::REFRESH_CONCURRENCY).collect().await;
        docs.into_iter().zip(outcomes).collect()
    }

    /// Starts fetching every listed document that is not fresh.
    pub fn prefetch(&self) {
        for d in &self.docs {
            d.slot.prefetch(&d.source);
        }
    }
}

fn slot_key(issuer: &IssuerConfig, path: &str) -> SlotKey {
    SlotKey { issuer: issuer.name.as_str().into(), upstream: issuer.upstream_label().into(), path: path.into() }
}

/// See [`Doc::fetched_by`]. A slot keeps its tallies by source name, so a
/// reload that keeps both keeps what each source was served.
fn tallies(
    slot: &Slot,
    issuer: &str,
    kind: DocKind,
    namespace: &str,
    ranges: &Ranges,
    metrics: &Metrics,
) -> Arc<[Arc<Tally>]> {
    (0..=ranges.sources.len())
        .map(|i| {
            let source = ranges.source_name(i);
            slot.served.tally(source, || {
                metrics.source_counter(&FetchLabels {
                    issuer: issuer.to_string(),
                    document: kind.as_str(),
                    namespace: namespace.to_string(),
                    source: source.to_string(),
                })
            })
        })
        .collect()
}

/// See [`Doc::namespace`].
fn namespace_label(path: &str) -> String {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return path.to_string();
    };
    // The last occurrence: a `*` namespace comes from the request, and a
    // segment such as `team-aidentity/oidc` must not move the split (what
    // follows it, a provider name included, holds no `/`).
    let Some(at) = rest.rfind("identity/oidc") else {
        return path.to_string();
    };
    let ns = rest[..at].trim_end_matches('/');
    let ns = if ns.is_empty() { "root" } else { ns };
    match rest[at..].strip_prefix("identity/oidc/provider/").and_then(|p| p.split('/').next()) {
        Some(provider) => format!("{ns}/provider/{provider}"),
        None => ns.to_string(),
    }
}

fn source(
    issuer: &IssuerRuntime,
    kind: DocKind,
    path: &str,
    namespace: &str,
    policy: Policy,
    persist: Option<Arc<Persist>>,
    metrics: &Arc<Metrics>,
) -> Source {
    let labels = NamespaceLabels { issuer: issuer.config.name.clone(), namespace: namespace.to_string() };
    Source {
        jwks_changes: metrics.jwks_changes.get_or_create_owned(&labels),
        metrics: Arc::clone(metrics),
        upstream: Arc::clone(&issuer.upstream),
        kind,
        expected: (kind == DocKind::Discovery).then(|| catalog::expected(&issuer.config, path)),
        strict_issuer: issuer.config.strict_issuer,
        remedy: Remedy::for_kind(issuer.config.kind),
        policy,
        persist,
    }
}

/// Documents under `*` namespaces, created on first request, bounded.
///
/// When full, a new namespace may only displace a document that is not worth
/// keeping (one that never fetched, or failed); good documents are never
/// evicted by a scanner trying names.
#[derive(Debug)]
pub struct DynamicDocs {
    max: usize,
    map: Mutex<HashMap<Arc<str>, Doc>>,
}

impl DynamicDocs {
    fn new(max: usize) -> DynamicDocs {
        DynamicDocs { max, map: Mutex::new(HashMap::new()) }
    }

    fn docs(&self) -> Vec<Doc> {
        self.lock().values().cloned().collect()
    }

    fn slots(&self) -> Vec<Arc<Slot>> {
        self.lock().values().map(|d| Arc::clone(&d.slot)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Doc>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get_or_insert(&self, snap: &Snapshot, issuer: IssuerId, kind: DocKind, path: &str) -> Option<Doc> {
        if let Some(d) = self.lock().get(path) {
            return Some(d.clone());
        }
        let key = slot_key(&snap.issuers[issuer].config, path);
        self.insert_slot(snap, issuer, kind, Arc::new(Slot::new(key)))
    }

    fn insert_slot(&self, snap: &Snapshot, issuer: IssuerId, kind: DocKind, slot: Arc<Slot>) -> Option<Doc> {
        let mut map = self.lock();
        if let Some(d) = map.get(&*slot.key.path) {
            return Some(d.clone());
        }
        if map.len() >= self.max {
            let victim = map.iter().find(|(_, d)| d.slot.entry().is_none()).map(|(k, _)| Arc::clone(k));
            match victim {
                Some(k) => {
                    map.remove(&k);
                }
                None => return None,
            }
        }
        let issuer_name = &snap.issuers[issuer].config.name;
        let doc = Doc {
            fetched_by: tallies(&slot, issuer_name, kind, "*", &snap.ranges, &snap.metrics),
            source: Arc::new(source(
                &snap.issuers[issuer],
                kind,
                &slot.key.path,
                "*",
                snap.policy,
                snap.persist.clone(),
                &snap.metrics,
            )),
            namespace: "*".to_string(),
            log: accesslog::Names::dynamic(issuer_name),
            requests: snap.metrics.request_counters(issuer_name, kind.as_str()),
            slot,
            issuer,
            kind,
        };
        map.insert(Arc::clone(&doc.slot.key.path), doc.clone());
        Some(doc)
    }
}

/// State shared by every connection: the current snapshot and liveness facts.
#[derive(Debug)]
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    reload: tokio::sync::Mutex<()>,
    /// Set once the public listener is accepting.
    pub listening: AtomicBool,
    /// The bound listeners (configuration name, address), set once bound:
    /// the status page shows the real ports, also when configured as `:0`.
    pub listeners: std::sync::OnceLock<Vec<(&'static str, std::net::SocketAddr)>>,
    /// TLS on the public listener; `None` when `tls.mode = "off"`.
    pub tls: Option<Arc<Tls>>,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    pub fn new(snapshot: Snapshot, tls: Option<Arc<Tls>>) -> Arc<Shared> {
        Arc::new(Shared {
            metrics: Arc::clone(&snapshot.metrics),
            snapshot: ArcSwap::from_pointee(snapshot),
            reload: tokio::sync::Mutex::new(()),
            listening: AtomicBool::new(false),
            listeners: std::sync::OnceLock::new(),
            tls,
        })
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Re-reads the configuration file and swaps it in, or keeps the current
    /// one and says why. Listener addresses are bound once: a change to them
    /// is reported and needs a restart.
    pub async fn reload(&self) -> Result<(), LoadError> {
        let result = self.reload_inner().await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics.config_reloads.get_or_create(&crate::telemetry::metrics::OutcomeLabels { outcome }).inc();
        result
    }

    async fn reload_inner(&self) -> Result<(), LoadError> {
        let _one_at_a_time = self.reload.lock().await;
        let current = self.snapshot();
        let config = Config::load(&current.config.source)?;
        let ranges = load_ranges(&config, Some(&current.ranges), &self.metrics).await?;
        for (what, old, new) in [
            ("server.listen", &current.config.server.listen, &config.server.listen),
            ("server.admin_listen", &current.config.server.admin_listen, &config.server.admin_listen),
        ] {
            if old != new {
                tracing::warn!(field = what, old = %old, new = %new, "listener addresses change only on restart; still listening on the old address");
            }
        }
        if config.tls.mode != current.config.tls.mode || config.tls.acme != current.config.tls.acme {
            tracing::warn!("tls.mode and tls.acme change only on restart; keeping the running TLS setup");
        }
        let next = Snapshot::build(config, Some(&current), ranges, &self.metrics)?;
        if let Some(tls) = &self.tls {
            tls.reload(&next.config.tls);
        }
        next.prefetch();
        self.snapshot.store(Arc::new(next));
        Ok(())
    }

    /// Loads `path`, builds the first snapshot and restores persisted documents.
    pub async fn load(path: &Path) -> Result<Arc<Shared>, LoadError> {
        let config = Config::load(path)?;
        let metrics = Arc::new(Metrics::new());
        let ranges = load_ranges(&config, None, &metrics).await?;
        let tls = Tls::start(&config.tls, &metrics).map_err(|e| LoadError::build(&config, e))?;
        let snapshot = Snapshot::build(config, None, ranges, &metrics)?;
        snapshot.restore_persisted();
        Ok(Shared::new(snapshot, tls))
    }
}

async fn load_ranges(
    config: &Config,
    previous: Option<&Arc<Ranges>>,
    metrics: &Metrics,
) -> Result<Arc<Ranges>, LoadError> {
    Ranges::load(&config.ip_allow, previous.map(|p| p.as_ref()), metrics.ip_allow_would_deny.clone())
        .await
        .map_err(|e| LoadError::build(config, e))
}

#[cfg(test)]
mod tests {
    use super::namespace_label;

    #[test]
    fn namespace_labels_split_at_the_fixed_tail() {
        for (path, want) in [
            ("/v1/identity/oidc/plugins/.well-known/keys", "root"),
            ("/v1/team-a/identity/oidc/.well-known/openid-configuration", "team-a"),
            ("/v1/a/b/identity/oidc/provider/web/.well-known/keys", "a/b/provider/web"),
            // A request-chosen `*` namespace ending in the marker's text.
            ("/v1/team-aidentity/oidc/identity/oidc/plugins/.well-known/keys", "team-aidentity/oidc"),
            ("/keys", "/keys"),
        ] {
            assert_eq!(namespace_label(path), want, "{path}");
        }
    }
}
