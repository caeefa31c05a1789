//! Prometheus metrics, served as text on the admin listener's `/metrics`.
//!
//! Built on the Prometheus org's `prometheus-client`. Counters and
//! histograms are updated where things happen; everything that describes
//! current state (document age, key counts, issuer-guard findings,
//! certificate expiry, range sources, process figures) is computed from the
//! live state at scrape time, so a reload never leaves stale series behind.
//! Label values are bounded: issuer names, document kinds and namespaces from
//! the configuration, fixed reason and outcome words — never a raw path, an
//! address or a user agent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

pub use crate::telemetry::events::{CacheEvent, Cut, Deny};

/// Declares label sets: each row a struct whose fields are its labels.
macro_rules! label_sets {
    ($($name:ident { $($field:ident: $ty:ty),+ })*) => {$(
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        pub struct $name {
            $(pub $field: $ty,)+
        }
    )*};
}

// Label values are bounded: names from the configuration, fixed words.
label_sets! {
    RequestLabels { issuer: String, document: &'static str, status_class: &'static str }
    ReasonLabels { reason: &'static str }
    EventLabels { event: &'static str }
    UpstreamLabels { issuer: String, outcome: &'static str }
    IssuerLabels { issuer: String }
    NodeLabels { issuer: String, node: String }
    DocumentLabels { issuer: String, document: &'static str, namespace: String }
    NamespaceLabels { issuer: String, namespace: String }
    HostLabels { host: String }
    SourceLabels { source: String }
    FetchLabels { issuer: String, document: &'static str, namespace: String, source: String }
    OutcomeLabels { outcome: &'static str }
    VersionLabels { version: &'static str }
}

/// Buckets of [`LatencyHistogram`]: upper bounds 100 µs × 2^i, i = 0..18
/// (100 µs to ~13 s), then +Inf.
const LATENCY_BUCKETS: usize = 18;
const LATENCY_FIRST_NANOS: u64 = 100_000;

/// A latency histogram the request path updates without a lock: two relaxed
/// atomic adds (the bucket, the sum). prometheus-client's `Histogram` takes a
/// mutex on every observation, which all worker threads would contend on.
///
/// Each bucket counts only its own observations; the scrape adds them up, so
/// `_count` always equals the `+Inf` bucket. Sum and buckets are read without
/// a common snapshot: a scrape racing a request may see one and not the other.
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram(Arc<LatencyInner>);

#[derive(Debug, Default)]
struct LatencyInner {
    buckets: [AtomicU64; LATENCY_BUCKETS + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.buckets[latency_bucket(nanos)].fetch_add(1, Ordering::Relaxed);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// The smallest i with nanos <= 100 µs × 2^i, or the +Inf bucket.
fn latency_bucket(nanos: u64) -> usize {
    let q = nanos.div_ceil(LATENCY_FIRST_NANOS);
    let i = if q <= 1 { 0 } else { (u64::BITS - (q - 1).leading_zeros()) as usize };
    i.min(LATENCY_BUCKETS)
}

fn latency_bound(i: usize) -> f64 {
    if i == LATENCY_BUCKETS {
        f64::INFINITY
    } else {
        (LATENCY_FIRST_NANOS << i) as f64 / 1e9
    }
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0u64); LATENCY_BUCKETS + 1];
        let mut count = 0;
        for (i, (slot, bucket)) in buckets.iter_mut().zip(&self.0.buckets).enumerate() {
            let n = bucket.load(Ordering::Relaxed);
            *slot = (latency_bound(i), n);
            count += n;
        }
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

/// Every metric of one process.
pub struct Metrics {
    registry: Registry,
    /// `denials`, one counter per [`Deny`], indexed by it.
    deny_counters: Vec<Counter>,
    /// `denials` too, one counter per [`Cut`], indexed by it.
    cut_counters: Vec<Counter>,
    /// `cache_events`, one counter per [`CacheEvent`], indexed by it.
    cache_counters: Vec<Counter>,
    /// Serialises scrapes (state gauges are rebuilt per scrape).
    scrape: Mutex<()>,
    pub requests: Family<RequestLabels, Counter>,
    pub denials: Family<ReasonLabels, Counter>,
    pub request_duration: LatencyHistogram,
    pub cache_events: Family<EventLabels, Counter>,
    pub upstream_requests: Family<UpstreamLabels, Counter>,
    pub upstream_duration: Family<IssuerLabels, LatencyHistogram>,
    pub upstream_up: Family<IssuerLabels, Gauge>,
    pub acme_events: Family<OutcomeLabels, Counter>,
    pub config_reloads: Family<OutcomeLabels, Counter>,
    pub jwks_changes: Family<NamespaceLabels, Counter>,
    pub ip_allow_would_deny: Counter,
    pub source_requests: Family<FetchLabels, Counter>,
    pub connections_active: Gauge,
    pub connections_parked: Gauge,
    // Rebuilt at scrape time.
    pub document_age: Family<DocumentLabels, Gauge<f64, AtomicU64>>,
    pub document_stale: Family<DocumentLabels, Gauge>,
    pub jwks_keys: Family<NamespaceLabels, Gauge>,
    pub jwks_last_change: Family<NamespaceLabels, Gauge>,
    pub issuer_mismatch: Family<NamespaceLabels, Gauge>,
    pub upstream_node_up: Family<NodeLabels, Gauge>,
    pub certificate_expiry: Family<HostLabels, Gauge>,
    pub range_prefixes: Family<SourceLabels, Gauge>,
    pub range_last_refresh: Family<SourceLabels, Gauge>,
    pub source_last_fetch: Family<FetchLabels, Gauge>,
    /// A counter, as Prometheus' process metrics have it (`_total`).
    process_cpu: Counter<f64, AtomicU64>,
    process_rss: Gauge,
    process_fds: Gauge,
    process_max_fds: Gauge,
    process_start: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers each row `name, unit, metric, help` (unit `-` for none) in
/// `registry`: the metric families read as one table.
macro_rules! register {
    ($registry:expr; $($name:literal, $unit:tt, $metric:expr, $help:literal;)*) => {
        $(register!(@one $registry, $name, $unit, $metric, $help);)*
    };
    (@one $registry:expr, $name:literal, -, $metric:expr, $help:literal) => {
        $registry.register($name, $help, $metric.clone())
    };
    (@one $registry:expr, $name:literal, $unit:ident, $metric:expr, $help:literal) => {
        $registry.register_with_unit($name, $help, Unit::$unit, $metric.clone())
    };
}

impl Metrics {
    pub fn new() -> Metrics {
        let denials: Family<ReasonLabels, Counter> = Family::default();
        let cache_events: Family<EventLabels, Counter> = Family::default();
        let m = Metrics {
            registry: Registry::default(),
            deny_counters: Deny::ALL
                .iter()
                .map(|d| denials.get_or_create_owned(&ReasonLabels { reason: d.as_str() }))
                .collect(),
            cut_counters: Cut::ALL
                .iter()
                .map(|c| denials.get_or_create_owned(&ReasonLabels { reason: c.as_str() }))
                .collect(),
            cache_counters: CacheEvent::ALL
                .iter()
                .map(|e| cache_events.get_or_create_owned(&EventLabels { event: e.as_str() }))
                .collect(),
            scrape: Mutex::new(()),
            requests: Family::default(),
            denials,
            request_duration: LatencyHistogram::default(),
            cache_events,
            upstream_requests: Family::default(),
            upstream_duration: Family::default(),
            upstream_up: Family::default(),
            acme_events: Family::default(),
            config_reloads: Family::default(),
            jwks_changes: Family::default(),
            ip_allow_would_deny: Counter::default(),
            source_requests: Family::default(),
            connections_active: Gauge::default(),
            connections_parked: Gauge::default(),
            document_age: Family::default(),
            document_stale: Family::default(),
            jwks_keys: Family::default(),
            jwks_last_change: Family::default(),
            issuer_mismatch: Family::default(),
            upstream_node_up: Family::default(),
            certificate_expiry: Family::default(),
            range_prefixes: Family::default(),
            range_last_refresh: Family::default(),
            source_last_fetch: Family::default(),
            process_cpu: Counter::default(),
            process_rss: Gauge::default(),
            process_fds: Gauge::default(),
            process_max_fds: Gauge::default(),
            process_start: Gauge::default(),
        };
        let build: Family<VersionLabels, Gauge> = Family::default();
        build.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("wif_proxy");
        register! { r;
            "requests", -, m.requests,
                "Public requests answered with a document or an upstream error, by issuer, document and status class";
            "denied_requests", -, m.denials, "Requests and connections refused by the proxy itself, by reason";
            "request_duration", Seconds, m.request_duration, "Time to answer a public request";
            "cache_events", -, m.cache_events, "Document cache events: hit, miss, stale, refresh, coalesced, error";
            "upstream_requests", -, m.upstream_requests, "Requests to the issuer by outcome";
            "upstream_duration", Seconds, m.upstream_duration, "Time of one issuer exchange";
            "upstream_up", -, m.upstream_up, "1 when the last request to the issuer succeeded";
            "acme_events", -, m.acme_events, "ACME certificate events: deployed_cached, deployed_new, error";
            "config_reloads", -, m.config_reloads, "Configuration reloads by outcome";
            "ip_allow_would_deny", -, m.ip_allow_would_deny,
                "Requests or connections ip_allow report mode would have denied";
            "source_requests", -, m.source_requests,
                "Documents served, by issuer, document, namespace and the ip_allow source the client is in (other: none)";
            "source_last_fetch_timestamp", Seconds, m.source_last_fetch,
                "When clients in an ip_allow source (other: none) were last served a document";
            "connections_active", -, m.connections_active, "Open public connections";
            "connections_parked", -, m.connections_parked,
                "Open public HTTP/1 connections idle between requests, holding no HTTP state";
            "document_age", Seconds, m.document_age, "Age of the cached document";
            "document_stale", -, m.document_stale,
                "1 while a document is served past its freshness (issuer failing or refreshing)";
            "jwks_keys", -, m.jwks_keys, "Keys in the served JWKS";
            "jwks_last_change_timestamp", Seconds, m.jwks_last_change, "When the served key set last changed";
            "jwks_changes", -, m.jwks_changes,
                "Times a served key set was replaced by different bytes, per document (kids added and removed are logged)";
            "issuer_mismatch", -, m.issuer_mismatch,
                "1 when a discovery document's issuer or jwks_uri does not match the public URL";
            "upstream_node_up", -, m.upstream_node_up,
                "Per upstream node (its position in the issuer's upstream list; /readyz names it): 1 when its last answer was good, 0 when it failed (absent until asked)";
            "certificate_expiry_timestamp", Seconds, m.certificate_expiry, "Expiry of the served TLS certificate";
            "ip_ranges_prefixes", -, m.range_prefixes, "Prefixes loaded per ip_allow source";
            "ip_ranges_last_refresh_timestamp", Seconds, m.range_last_refresh,
                "Last successful load of an ip_allow source";
            "build", -, build, "Build information";
        }
        let p = root.sub_registry_with_prefix("process");
        register! { p;
            "cpu", Seconds, m.process_cpu, "User and system CPU time";
            "resident_memory", Bytes, m.process_rss, "Resident set size";
            "open_fds", -, m.process_fds, "Open file descriptors";
            "max_fds", -, m.process_max_fds, "Limit on open file descriptors";
            "start_time", Seconds, m.process_start, "Start time since the Unix epoch";
        }
        m.process_start.set(process_start_time());
        Metrics { registry: root, ..m }
    }

    /// Counts a refusal.
    pub fn deny(&self, reason: Deny) {
        self.deny_counters[reason as usize].inc();
    }

    /// Counts a connection cut.
    pub fn cut(&self, why: Cut) {
        self.cut_counters[why as usize].inc();
    }

    /// Counts a cache event.
    pub fn cache_event(&self, event: CacheEvent) {
        self.cache_counters[event as usize].inc();
    }

    /// The request counters of one document, one per status class, resolved
    /// once so the request path neither allocates labels nor locks the family.
    pub fn request_counters(&self, issuer: &str, document: &'static str) -> [Counter; 4] {
        ["2xx", "3xx", "4xx", "5xx"].map(|status_class| {
            self.requests.get_or_create_owned(&RequestLabels { issuer: issuer.to_string(), document, status_class })
        })
    }

    /// Refusals counted for `reason` so far.
    pub fn denied(&self, reason: Deny) -> u64 {
        self.deny_counters[reason as usize].get()
    }

    /// Connection cuts counted for `why` so far.
    pub fn cuts(&self, why: Cut) -> u64 {
        self.cut_counters[why as usize].get()
    }

    /// The fetch-accounting counter of one document and source, resolved
    /// when a snapshot is built.
    pub fn source_counter(&self, labels: &FetchLabels) -> Counter {
        self.source_requests.get_or_create_owned(labels)
    }

    /// Renders the text exposition; `refresh` rebuilds the state gauges first.
    pub fn encode(&self, refresh: impl FnOnce(&Metrics)) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.document_stale.clear();
        self.document_age.clear();
        self.jwks_keys.clear();
        self.jwks_last_change.clear();
        self.issuer_mismatch.clear();
        self.upstream_node_up.clear();
        self.certificate_expiry.clear();
        self.range_prefixes.clear();
        self.range_last_refresh.clear();
        self.source_last_fetch.clear();
        refresh(self);
        self.process();
        let mut out = String::with_capacity(16 * 1024);
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        to_classic_text(&out)
    }

    /// The process figures, from /proc (left as they were if it cannot be read).
    fn process(&self) {
        let Ok(me) = procfs::process::Process::myself() else { return };
        if let Ok(stat) = me.stat() {
            // Scrapes are serialised (`scrape`): the counter follows /proc
            // by the difference, and never goes down.
            let total = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
            let behind = total - self.process_cpu.get();
            if behind > 0.0 {
                self.process_cpu.inc_by(behind);
            }
        }
        if let Ok(statm) = me.statm() {
            self.process_rss.set(i64::try_from(statm.resident * procfs::page_size()).unwrap_or(i64::MAX));
        }
        if let Ok(n) = me.fd_count() {
            self.process_fds.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Ok(limits) = me.limits() {
            let max = match limits.max_open_files.soft_limit {
                procfs::process::LimitValue::Value(v) => i64::try_from(v).unwrap_or(i64::MAX),
                procfs::process::LimitValue::Unlimited => 0,
            };
            self.process_max_fds.set(max);
        }
    }
}

/// Turns prometheus-client's OpenMetrics output into the classic text format
/// (0.0.4) that every Prometheus and `promtool check metrics` read: counter
/// families are named with their `_total` suffix, `# UNIT` and `# EOF` go,
/// and the build gauge gets its conventional `_info` name.
pub fn to_classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].iter().find_map(|p| line.strip_prefix(p).map(|rest| (*p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if counters.contains(name) {
                    format!("{name}_total")
                } else {
                    name.replace("wif_proxy_build", "wif_proxy_build_info")
                };
                out.push_str(prefix);
                out.push_str(&name);
                out.push(' ');
                out.push_str(tail);
            }
            None if line.starts_with("wif_proxy_build ") || line.starts_with("wif_proxy_build{") => {
                out.push_str(&line.replacen("wif_proxy_build", "wif_proxy_build_info", 1));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The Content-Type of [`to_classic_text`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Seconds since the epoch at which this process started.
fn process_start_time() -> i64 {
    static START: std::sync::OnceLock<SystemTime> = std::sync::OnceLock::new();
    let start = *START.get_or_init(SystemTime::now);
    start.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs() as i64
}

/// Seconds since the epoch.
pub fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Counts one open connection while it lives.
pub struct ConnectionGauge<'a>(&'a Gauge);

impl<'a> ConnectionGauge<'a> {
    pub fn open(g: &'a Gauge) -> ConnectionGauge<'a> {
        g.inc();
        ConnectionGauge(g)
    }
}

impl Drop for ConnectionGauge<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts one parked connection while it lives.
pub struct ParkedGauge(Gauge);

impl ParkedGauge {
    pub fn park(g: &Gauge) -> ParkedGauge {
        g.inc();
        ParkedGauge(g.clone())
    }
}

impl Drop for ParkedGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The timestamp a key set last changed, per slot.
#[derive(Debug, Default)]
pub struct ChangeStamp(AtomicU64);

impl ChangeStamp {
    pub fn set_now(&self) {
        self.0.store(unix_seconds(SystemTime::now()) as u64, Ordering::Relaxed);
    }
    pub fn set(&self, secs: u64) {
        self.0.store(secs, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_bucket_is_the_smallest_bound_not_below_the_value() {
        let naive =
            |nanos: u64| (0..LATENCY_BUCKETS).find(|&i| nanos <= LATENCY_FIRST_NANOS << i).unwrap_or(LATENCY_BUCKETS);
        let mut probes = vec![0, 1, 99_999, u64::MAX];
        for i in 0..=LATENCY_BUCKETS as u32 + 1 {
            let b = LATENCY_FIRST_NANOS << i;
            probes.extend([b - 1, b, b + 1]);
        }
        for nanos in probes {
            assert_eq!(latency_bucket(nanos), naive(nanos), "{nanos} ns");
        }
    }

    #[test]
    fn latency_histogram_encodes_cumulative_buckets_sum_and_count() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(50)); // le 0.0001
        h.observe(Duration::from_micros(150)); // le 0.0002
        h.observe(Duration::from_secs(60)); // +Inf only
        let mut registry = Registry::default();
        registry.register_with_unit("t", "test", Unit::Seconds, h);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("# TYPE t_seconds histogram\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"0.0001\"} 1\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"0.0002\"} 2\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"13.1072\"} 2\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("t_seconds_count 3\n"), "{text}");
        assert!(text.contains("t_seconds_sum 60.0002\n"), "{text}");
    }
}
