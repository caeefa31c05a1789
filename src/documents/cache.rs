//! The document cache that outlives the issuer.
//!
//! Each served document has a [`Slot`]. A slot holds the last good document
//! (an [`Entry`]) in an `ArcSwap`, so the hit path is one atomic load: no lock
//! that a writer holds, no allocation. Everything that talks to the issuer
//! goes through one async mutex per slot, which gives request coalescing for
//! free: a request that waited for the mutex sees that an attempt finished
//! while it waited and takes that attempt's result instead of making another.
//!
//! Freshness follows the issuer's `Cache-Control`, clamped to
//! `[min_ttl, max_ttl]`. A document read in the last tenth of its lifetime is
//! refreshed in the background (refresh-ahead); an expired one is served at
//! once while one background refresh runs (stale-while-revalidate); when the
//! issuer fails, the last good document is served for up to `max_stale`
//! (stale-if-error). Failed attempts back off, so an outage never turns into
//! a stream of requests to the issuer, and a document that does not exist is
//! remembered for `negative_ttl`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::StatusCode;

use crate::config::CacheConfig;
use crate::documents::catalog::{DocKind, Expected};
use crate::documents::persist::{Persist, Record};
use crate::documents::served::Served;
use crate::documents::upstream::{FetchError, Freshness, Upstream};
use crate::documents::validate::{self, Facts, InvalidDocument, IssuerMismatch, Remedy};
use crate::telemetry::metrics::{CacheEvent, ChangeStamp, IssuerLabels, Metrics, UpstreamLabels};

/// What a slot serves and how it is named; they live in their own module so
/// that the cache and the on-disk copy both use them without using each other.
pub use crate::documents::entry::{Entry, SlotKey};

/// The freshness rules of one snapshot (the `[cache]` settings).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// The shortest freshness, whatever the issuer says (also the freshness
    /// of a document the issuer said nothing about, and the backoff cap).
    pub min_ttl: Duration,
    /// The longest freshness, whatever the issuer says.
    pub max_ttl: Duration,
    /// How long past its freshness a document is still served while the
    /// issuer fails (stale-if-error).
    pub max_stale: Duration,
    /// How long an issuer 404 is remembered before the issuer is asked again.
    pub negative_ttl: Duration,
}

impl From<&CacheConfig> for Policy {
    fn from(c: &CacheConfig) -> Self {
        Policy { min_ttl: c.min_ttl, max_ttl: c.max_ttl, max_stale: c.max_stale, negative_ttl: c.negative_ttl }
    }
}

impl Policy {
    /// How long a document the issuer described with `f` stays fresh.
    pub fn ttl(&self, f: Freshness) -> Duration {
        match f {
            Freshness::MaxAge(d) => d.clamp(self.min_ttl, self.max_ttl),
            Freshness::NoStore | Freshness::Unspecified => self.min_ttl,
        }
    }
}

/// Where a slot's document comes from and what it must look like. Rebuilt
/// with every snapshot; slots outlive it.
#[derive(Debug)]
pub struct Source {
    pub upstream: Arc<Upstream>,
    pub kind: DocKind,
    /// The issuer guard's expectation (discovery documents only).
    pub expected: Option<Expected>,
    /// Whether an issuer-guard finding makes the document unservable.
    pub strict_issuer: bool,
    /// What the guard advises when a discovery document does not match.
    pub remedy: Remedy,
    pub policy: Policy,
    /// Where good documents are saved, when `cache.dir` is set.
    pub persist: Option<Arc<Persist>>,
    pub metrics: Arc<Metrics>,
    /// `jwks_changes_total` of this document (key sets only count).
    pub jwks_changes: prometheus_client::metrics::counter::Counter,
}

/// Why [`Slot::restore`] did not install a persisted document. Logged as
/// "cache.dir: not restoring persisted document: …".
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The stored body does not pass validation (the rules may be stricter
    /// than those of the version that saved it).
    #[error(transparent)]
    Invalid(#[from] InvalidDocument),
    /// The issuer guard rejects it and `strict_issuer = true`.
    #[error("issuer mismatch (strict_issuer = true): {0}")]
    Mismatch(#[from] IssuerMismatch),
    /// Older than its freshness plus `max_stale`: not even servable as stale.
    #[error("too old to serve ({}s; max_stale allows {}s)", .age.as_secs(), .allowed.as_secs())]
    TooOld { age: Duration, allowed: Duration },
}

/// The last failed attempt of a slot.
#[derive(Debug)]
struct Failure {
    error: FetchError,
    /// No new attempt before this instant (backoff or negative caching).
    retry_at: Instant,
    consecutive: u32,
}

/// What one forced refetch ([`Slot::refresh`]) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// New bytes are served; for a key set, the `kid`s that came and went.
    Changed { added: Vec<String>, removed: Vec<String> },
    /// The issuer sent the same bytes.
    Unchanged,
    /// The attempt failed; the last good document (if any) keeps serving.
    Failed(FetchError),
}

impl Refreshed {
    /// Its word in `/refresh`'s answer.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refreshed::Changed { .. } => "changed",
            Refreshed::Unchanged => "unchanged",
            Refreshed::Failed(_) => "failed",
        }
    }
}

/// The `kid`s in `new` and not in `old`, and those in `old` and not in `new`.
fn kid_changes(old: &Facts, new: &Facts) -> (Vec<String>, Vec<String>) {
    let kids = |f: &Facts| -> std::collections::BTreeSet<String> {
        match f {
            Facts::Keys { kids, .. } => kids.iter().cloned().collect(),
            Facts::Discovery { .. } => Default::default(),
        }
    };
    let (old, new) = (kids(old), kids(new));
    (new.difference(&old).cloned().collect(), old.difference(&new).cloned().collect())
}

/// How a document was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Fresh from the cache.
    Hit,
    /// Fetched for this request (possibly by a coalesced peer).
    Miss,
    /// Past its freshness, served while a refresh runs or the issuer fails.
    Stale,
}

impl CacheStatus {
    /// Its name in the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
        }
    }
}

/// One cached document.
#[derive(Debug)]
pub struct Slot {
    pub key: SlotKey,
    entry: ArcSwapOption<Entry>,
    failure: ArcSwapOption<Failure>,
    /// Held by whoever talks to the issuer for this slot.
    fetch: tokio::sync::Mutex<()>,
    /// Completed attempts; lets coalesced waiters see that one finished.
    attempts: AtomicU64,
    refreshing: AtomicBool,
    /// Issuer-guard finding of the last fetched (or restored) discovery document.
    mismatch: ArcSwapOption<IssuerMismatch>,
    /// For the log: only changes of state are logged.
    failing: Mutex<Option<&'static str>>,
    /// When the document's bytes last changed (the key set, for a JWKS).
    pub changed: ChangeStamp,
    /// Fetch accounting: what each source of clients got last.
    pub served: Served,
}

impl Slot {
    pub fn new(key: SlotKey) -> Slot {
        Slot {
            key,
            entry: ArcSwapOption::empty(),
            failure: ArcSwapOption::empty(),
            fetch: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
            mismatch: ArcSwapOption::empty(),
            failing: Mutex::new(None),
            changed: ChangeStamp::default(),
            served: Served::default(),
        }
    }

    /// The last good document, if any (however old).
    pub fn entry(&self) -> Option<Arc<Entry>> {
        self.entry.load_full()
    }

    /// The issuer guard's complaint about the last discovery document fetched
    /// or restored for this slot, if any (shown in `/readyz`).
    pub fn mismatch(&self) -> Option<Arc<IssuerMismatch>> {
        self.mismatch.load_full()
    }

    /// The last error, while the slot is failing.
    pub fn last_error(&self) -> Option<FetchError> {
        self.failure.load().as_ref().map(|f| f.error.clone())
    }

    /// Serves the document: from the cache when possible, else from one
    /// (coalesced) upstream attempt. `Err` carries the status to answer with.
    pub async fn get(self: &Arc<Self>, src: &Arc<Source>) -> Result<(Arc<Entry>, CacheStatus), StatusCode> {
        let now = Instant::now();
        if let Some(entry) = self.entry.load_full() {
            let fresh_until = entry.fresh_until();
            if now < fresh_until {
                if fresh_until - now <= entry.ttl / 10 {
                    self.refresh_in_background(src);
                }
                src.metrics.cache_event(CacheEvent::Hit);
                return Ok((entry, CacheStatus::Hit));
            }
            if now < fresh_until + src.policy.max_stale {
                self.refresh_in_background(src);
                src.metrics.cache_event(CacheEvent::Stale);
                return Ok((entry, CacheStatus::Stale));
            }
        }
        if let Some(f) = self.failure.load().as_ref() {
            if now < f.retry_at {
                return Err(self.failure_status(&f.error));
            }
        }
        src.metrics.cache_event(CacheEvent::Miss);
        let seen = self.attempts.load(Ordering::Acquire);
        let _guard = self.fetch.lock().await;
        if self.attempts.load(Ordering::Acquire) != seen {
            // Someone finished an attempt while we waited: share its result.
            src.metrics.cache_event(CacheEvent::Coalesced);
            if let Some(entry) = self.entry.load_full() {
                if Instant::now() < entry.fresh_until() + src.policy.max_stale {
                    return Ok((entry, CacheStatus::Miss));
                }
            }
            if let Some(f) = self.failure.load().as_ref() {
                return Err(self.failure_status(&f.error));
            }
        }
        match self.attempt(src).await {
            Ok((entry, _)) => Ok((entry, CacheStatus::Miss)),
            Err(e) => Err(self.failure_status(&e)),
        }
    }

    /// Fetches now unless the slot is fresh, backing off, or already fetching.
    /// Used to warm the cache at start-up and after reloads.
    pub fn prefetch(self: &Arc<Self>, src: &Arc<Source>) {
        let fresh = self.entry.load().as_ref().is_some_and(|e| Instant::now() < e.fresh_until());
        if !fresh {
            self.refresh_in_background(src);
        }
    }

    /// Starts one background attempt, unless the slot is backing off or one
    /// is already running; the requests that triggered it do not wait.
    fn refresh_in_background(self: &Arc<Self>, src: &Arc<Source>) {
        if let Some(f) = self.failure.load().as_ref() {
            if Instant::now() < f.retry_at {
                return;
            }
        }
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        src.metrics.cache_event(CacheEvent::Refresh);
        let (slot, src) = (Arc::clone(self), Arc::clone(src));
        tokio::spawn(async move {
            if let Ok(_guard) = slot.fetch.try_lock() {
                let _ = slot.attempt(&src).await;
            }
            slot.refreshing.store(false, Ordering::Release);
        });
    }

    /// Refetches now, whatever the document's freshness or backoff (an
    /// operator's `POST /refresh` after a key rotation). Waits for an attempt
    /// already running, then makes its own: that one may have started before
    /// the rotation. A failure keeps the last good document serving.
    pub async fn refresh(&self, src: &Source) -> Refreshed {
        let _guard = self.fetch.lock().await;
        match self.attempt(src).await {
            Ok((_, change)) => change,
            Err(e) => Refreshed::Failed(e),
        }
    }

    /// With no usable document: the error's own status, except that a
    /// document we had but may no longer serve (older than `max_stale`) is
    /// reported as unavailable.
    fn failure_status(&self, e: &FetchError) -> StatusCode {
        if self.entry.load().is_some() && *e != FetchError::NotFound {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            e.status()
        }
    }

    /// One upstream attempt, and what it changed (`Changed` or
    /// `Unchanged`); the caller holds `self.fetch`.
    async fn attempt(&self, src: &Source) -> Result<(Arc<Entry>, Refreshed), FetchError> {
        let started = Instant::now();
        let result = match src.upstream.fetch(&self.key.path).await {
            Ok(fetched) => self.accept(src, fetched.body, src.policy.ttl(fetched.freshness)),
            Err(e) => Err(e),
        };
        let issuer = IssuerLabels { issuer: self.key.issuer.to_string() };
        src.metrics.upstream_duration.get_or_create(&issuer).observe(started.elapsed());
        let outcome = result.as_ref().map_or_else(FetchError::label, |_| "ok");
        src.metrics.upstream_requests.get_or_create(&UpstreamLabels { issuer: issuer.issuer.clone(), outcome }).inc();
        src.metrics.upstream_up.get_or_create(&issuer).set(i64::from(result.is_ok()));
        let result = match result {
            Ok((body, ttl, facts)) => {
                let old = self.entry.load_full();
                let change = match &old {
                    Some(old) if old.body == body => Refreshed::Unchanged,
                    Some(old) if src.kind == DocKind::Keys => {
                        let (added, removed) = kid_changes(&old.facts, &facts);
                        self.note_key_change(src, &added, &removed, &facts);
                        Refreshed::Changed { added, removed }
                    }
                    _ => Refreshed::Changed { added: Vec::new(), removed: Vec::new() },
                };
                if !matches!(change, Refreshed::Unchanged) {
                    self.changed.set_now();
                }
                let entry = Arc::new(Entry::new(body, ttl, facts, Instant::now(), SystemTime::now()));
                self.served.note(&entry);
                self.entry.store(Some(Arc::clone(&entry)));
                self.failure.store(None);
                self.note_recovered();
                if let Some(p) = &src.persist {
                    p.save_in_background(Record::new(&self.key, src.kind, &entry));
                }
                Ok((entry, change))
            }
            Err(e) => {
                src.metrics.cache_event(CacheEvent::Error);
                let consecutive = self.failure.load().as_ref().map_or(1, |f| f.consecutive.saturating_add(1));
                let wait = if e == FetchError::NotFound {
                    src.policy.negative_ttl
                } else {
                    backoff(consecutive, src.policy.min_ttl)
                };
                self.note_failure(&e, self.entry.load().is_some());
                self.failure.store(Some(Arc::new(Failure {
                    error: e.clone(),
                    retry_at: Instant::now() + wait,
                    consecutive,
                })));
                Err(e)
            }
        };
        self.attempts.fetch_add(1, Ordering::AcqRel);
        result
    }

    /// Validates a fetched body and runs the issuer guard.
    fn accept(&self, src: &Source, body: Bytes, ttl: Duration) -> Result<(Bytes, Duration, Facts), FetchError> {
        let facts = validate::validate(src.kind, &body).map_err(|e| FetchError::Invalid(e.to_string()))?;
        self.guard(src, &facts).map_err(|e| FetchError::Mismatch(e.to_string()))?;
        Ok((body, ttl, facts))
    }

    /// Runs the issuer guard on a discovery document (nothing to check for a
    /// key set or a slot without an expectation). A finding is remembered for
    /// [`Slot::mismatch`] and logged when it changes; it is an error only
    /// with `strict_issuer`, otherwise the document is served regardless.
    fn guard(&self, src: &Source, facts: &Facts) -> Result<(), IssuerMismatch> {
        let Some(expected) = &src.expected else { return Ok(()) };
        match validate::check_issuer(facts, expected, src.remedy) {
            Ok(()) => {
                if self.mismatch.swap(None).is_some() {
                    tracing::info!(issuer = %self.key.issuer, path = %self.key.path, "issuer guard: discovery document now matches the public URL");
                }
                Ok(())
            }
            Err(msg) => {
                let changed = self.mismatch.load().as_deref() != Some(&msg);
                if changed {
                    tracing::warn!(issuer = %self.key.issuer, path = %self.key.path, strict = src.strict_issuer, "issuer guard: {msg}");
                    self.mismatch.store(Some(Arc::new(msg.clone())));
                }
                if src.strict_issuer {
                    Err(msg)
                } else {
                    Ok(())
                }
            }
        }
    }

    fn note_failure(&self, e: &FetchError, serving_stale: bool) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if *failing != Some(e.label()) {
            *failing = Some(e.label());
            tracing::warn!(
                issuer = %self.key.issuer,
                upstream = %self.key.upstream,
                path = %self.key.path,
                serving_stale,
                "issuer fetch failing: {e}"
            );
        }
    }

    /// A served key set was replaced: logged and counted once (the caller
    /// holds the fetch lock, so each change is seen by one attempt only).
    fn note_key_change(&self, src: &Source, added: &[String], removed: &[String], new: &Facts) {
        src.jwks_changes.inc();
        let keys = match new {
            Facts::Keys { count, .. } => *count,
            Facts::Discovery { .. } => 0,
        };
        // Routine (issuers rotate on a schedule) but worth a line each time:
        // after an emergency rotation it is the proof the old key is gone.
        tracing::info!(
            issuer = %self.key.issuer,
            path = %self.key.path,
            added = %added.join(","),
            removed = %removed.join(","),
            keys,
            "key set changed"
        );
    }

    fn note_recovered(&self) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if failing.take().is_some() {
            tracing::info!(issuer = %self.key.issuer, path = %self.key.path, "issuer fetch recovered");
        }
    }

    /// Installs a persisted document as a stale entry (start-up only), so it
    /// is served at once under stale-if-error while the first fetch runs.
    /// The record is checked as if it had just been fetched; `Err` says why
    /// it is unusable and leaves the slot empty.
    pub fn restore(&self, src: &Source, record: &Record) -> Result<(), RestoreError> {
        let body = Bytes::copy_from_slice(record.body.as_bytes());
        let facts = validate::validate(src.kind, &body)?;
        self.guard(src, &facts)?;
        let ttl = Duration::from_millis(record.ttl_ms);
        let fetched_wall = SystemTime::UNIX_EPOCH + Duration::from_millis(record.fetched_at_ms);
        let age = SystemTime::now().duration_since(fetched_wall).unwrap_or(Duration::ZERO);
        let allowed = ttl + src.policy.max_stale;
        if age >= allowed {
            return Err(RestoreError::TooOld { age, allowed });
        }
        // Age it correctly on the monotonic clock; never treat it as fresh.
        let now = Instant::now();
        let fetched = now.checked_sub(age.max(ttl)).unwrap_or(now);
        let entry = Entry::new(body, ttl, facts, fetched, fetched_wall);
        self.changed.set(record.fetched_at_ms / 1000);
        self.served.note(&entry);
        self.entry.store(Some(Arc::new(entry)));
        Ok(())
    }
}

/// 1s, 2s, 4s, ... capped at `cap`.
fn backoff(consecutive: u32, cap: Duration) -> Duration {
    let secs = 1u64 << consecutive.saturating_sub(1).min(16);
    Duration::from_secs(secs).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_clamps() {
        let p = Policy {
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(300),
            max_stale: Duration::ZERO,
            negative_ttl: Duration::ZERO,
        };
        assert_eq!(p.ttl(Freshness::MaxAge(Duration::from_secs(3600))), Duration::from_secs(300));
        assert_eq!(p.ttl(Freshness::MaxAge(Duration::ZERO)), Duration::from_secs(30));
        assert_eq!(p.ttl(Freshness::MaxAge(Duration::from_secs(60))), Duration::from_secs(60));
        assert_eq!(p.ttl(Freshness::NoStore), Duration::from_secs(30));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let cap = Duration::from_secs(30);
        let seq: Vec<u64> = (1..=7).map(|n| backoff(n, cap).as_secs()).collect();
        assert_eq!(seq, vec![1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn restore_errors_read_as_before() {
        let too_old = RestoreError::TooOld { age: Duration::from_millis(100_900), allowed: Duration::from_secs(90) };
        assert_eq!(too_old.to_string(), "too old to serve (100s; max_stale allows 90s)");
        let invalid = RestoreError::from(validate::validate(DocKind::Keys, b"[]").expect_err("not an object"));
        assert_eq!(invalid.to_string(), "not a JSON object");
        let e = Expected { issuer: "https://w".into(), jwks_uris: vec!["https://w/keys".into()] };
        let facts = Facts::Discovery { issuer: "http://x".into(), jwks_uri: "https://w/keys".into() };
        let mismatch = validate::check_issuer(&facts, &e, Remedy::Other).expect_err("mismatch");
        let text = RestoreError::from(mismatch.clone()).to_string();
        assert_eq!(text, format!("issuer mismatch (strict_issuer = true): {mismatch}"));
        assert_eq!(text, FetchError::Mismatch(mismatch.to_string()).to_string(), "same words as a strict fetch");
    }
}
