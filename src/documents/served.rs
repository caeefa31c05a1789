//! Fetch accounting: what each source of clients was last served from one
//! document, so that "source aws last fetched the JWKS 40 s ago and got the
//! current key set" is one lookup.
//!
//! A [`Tally`] per (document, source) is resolved when a snapshot is built;
//! the request path only bumps its counter and, when they changed, stores the
//! second and the version ([`Entry::tag`]) it served: a few relaxed atomics,
//! no allocation, no lock. The slot keeps its tallies by source name, so they
//! live as long as the document's cache slot (across reloads). It also keeps
//! the last few versions it served, so the status page can name the ETag and
//! key IDs of what a source that is behind still has.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;

use crate::documents::entry::Entry;
use crate::documents::validate::Facts;

/// Versions of one document remembered for the sources that are behind.
const VERSIONS: usize = 8;

/// One source's fetches of one document.
#[derive(Debug)]
pub struct Tally {
    /// `wif_proxy_source_requests_total` for this document and source.
    pub requests: Counter,
    /// Unix seconds of the last fetch, plus one (0: never).
    at: AtomicU64,
    /// The [`Entry::tag`] served then.
    tag: AtomicU64,
}

impl Tally {
    fn new(requests: Counter) -> Tally {
        Tally { requests, at: AtomicU64::new(0), tag: AtomicU64::new(0) }
    }

    /// Counts one answered request, served `tag` at `now`. The time and tag
    /// are stored only when they change, so a busy source mostly reads a
    /// shared cache line; a reader may see a new time with the previous tag
    /// for an instant (the status page is a snapshot, not a transaction).
    #[inline]
    pub fn record(&self, now: Instant, tag: u64) {
        self.requests.inc();
        let at = unix_seconds_at(now) + 1;
        if self.at.load(Ordering::Relaxed) != at {
            self.at.store(at, Ordering::Relaxed);
        }
        if self.tag.load(Ordering::Relaxed) != tag {
            self.tag.store(tag, Ordering::Relaxed);
        }
    }

    /// When the source last fetched, and the version it got.
    pub fn last(&self) -> Option<(SystemTime, u64)> {
        let at = self.at.load(Ordering::Relaxed).checked_sub(1)?;
        Some((UNIX_EPOCH + Duration::from_secs(at), self.tag.load(Ordering::Relaxed)))
    }

    /// Requests counted.
    pub fn count(&self) -> u64 {
        self.requests.get()
    }
}

/// Wall-clock seconds at a monotonic instant, from one base taken at first
/// use: the request path already has an `Instant`, and reading it back costs
/// less than another clock read.
fn unix_seconds_at(at: Instant) -> u64 {
    static BASE: OnceLock<(Instant, Duration)> = OnceLock::new();
    let (base, wall) =
        BASE.get_or_init(|| (Instant::now(), SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()));
    (*wall + at.saturating_duration_since(*base)).as_secs()
}

/// One version of a document, as the status page names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub tag: u64,
    pub etag: String,
    /// The key IDs of a key set; empty for a discovery document.
    pub kids: Vec<String>,
    /// When this proxy first had it.
    pub since: SystemTime,
}

impl Version {
    fn of(entry: &Entry) -> Version {
        let kids = match &entry.facts {
            Facts::Keys { kids, .. } => kids.clone(),
            Facts::Discovery { .. } => Vec::new(),
        };
        Version {
            tag: entry.tag,
            etag: String::from_utf8_lossy(entry.etag.as_bytes()).into_owned(),
            kids,
            since: entry.fetched_wall,
        }
    }
}

/// A slot's fetch accounting: its tallies by source name and the versions
/// it served last (newest first).
#[derive(Debug, Default)]
pub struct Served {
    tallies: Mutex<HashMap<Arc<str>, Arc<Tally>>>,
    versions: Mutex<VecDeque<Version>>,
}

impl Served {
    /// The tally of `source`, made (with the counter `requests` gives) on
    /// first use. Called when a snapshot is built, never per request.
    pub fn tally(&self, source: &str, requests: impl FnOnce() -> Counter) -> Arc<Tally> {
        let mut map = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = map.get(source) {
            return Arc::clone(t);
        }
        let t = Arc::new(Tally::new(requests()));
        map.insert(source.into(), Arc::clone(&t));
        t
    }

    /// Remembers `entry` as the newest version (a refetch of the same bytes
    /// changes nothing).
    pub fn note(&self, entry: &Entry) {
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        if versions.front().is_some_and(|v| v.tag == entry.tag) {
            return;
        }
        versions.retain(|v| v.tag != entry.tag);
        versions.push_front(Version::of(entry));
        versions.truncate(VERSIONS);
    }

    /// The version `tag` names, if it is one of the last few.
    pub fn version(&self, tag: u64) -> Option<Version> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|v| v.tag == tag).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(body: &'static str) -> Entry {
        let facts = crate::documents::validate::validate(crate::documents::catalog::DocKind::Keys, body.as_bytes())
            .expect("valid");
        Entry::new(Bytes::from_static(body.as_bytes()), Duration::ZERO, facts, Instant::now(), SystemTime::now())
    }

    #[test]
    fn a_tally_remembers_the_last_fetch_and_version() {
        let served = Served::default();
        let t = served.tally("aws", Counter::default);
        assert!(t.last().is_none());
        assert!(Arc::ptr_eq(&t, &served.tally("aws", || panic!("made twice"))));
        let before = SystemTime::now() - Duration::from_secs(2);
        t.record(Instant::now(), 7);
        t.record(Instant::now(), 9);
        let (at, tag) = t.last().expect("fetched");
        assert_eq!((t.count(), tag), (2, 9));
        assert!(at >= before && at <= SystemTime::now() + Duration::from_secs(2), "{at:?}");
    }

    #[test]
    fn versions_are_newest_first_and_bounded() {
        let served = Served::default();
        let (a, b) = (entry(r#"{"keys":[{"kty":"RSA","kid":"a"}]}"#), entry(r#"{"keys":[{"kty":"RSA","kid":"b"}]}"#));
        served.note(&a);
        served.note(&a);
        served.note(&b);
        assert_eq!(served.version(a.tag).expect("kept").kids, vec!["a".to_string()]);
        assert_eq!(served.version(b.tag).expect("kept").etag, b.etag.to_str().unwrap());
        let versions = served.versions.lock().unwrap();
        assert_eq!(versions.iter().map(|v| v.tag).collect::<Vec<_>>(), vec![b.tag, a.tag]);
        drop(versions);
        for i in 0..VERSIONS {
            let body: &'static str = Box::leak(format!(r#"{{"keys":[{{"kty":"RSA","kid":"{i}"}}]}}"#).into_boxed_str());
            served.note(&entry(body));
        }
        assert!(served.version(a.tag).is_none(), "the oldest versions are forgotten");
        assert_eq!(served.versions.lock().unwrap().len(), VERSIONS);
    }
}
