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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub issuer: String,
    pub document: &'static str,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub issuer: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerLabels {
    pub issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DocumentLabels {
    pub issuer: String,
    pub document: &'static str,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub issuer: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabels {
    pub host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
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
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
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
/// Denial reasons and cache events with pre-resolved counters.
const DENY_REASONS: [&str; 10] =
    ["path", "method", "body", "host", "target", "ip", "rate_limit", "conn_limit", "proxy_protocol", "capacity"];
const CACHE_EVENTS: [&str; 6] = ["hit", "miss", "stale", "refresh", "coalesced", "error"];

pub struct Metrics {
    registry: Registry,
    deny_counters: Vec<Counter>,
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
    pub ip_allow_would_deny: Counter,
    pub connections_active: Gauge,
    pub connections_parked: Gauge,
    // Rebuilt at scrape time.
    pub document_age: Family<DocumentLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub document_stale: Family<DocumentLabels, Gauge>,
    pub jwks_keys: Family<NamespaceLabels, Gauge>,
    pub jwks_last_change: Family<NamespaceLabels, Gauge>,
    pub issuer_mismatch: Family<NamespaceLabels, Gauge>,
    pub certificate_expiry: Family<HostLabels, Gauge>,
    pub range_prefixes: Family<SourceLabels, Gauge>,
    pub range_last_refresh: Family<SourceLabels, Gauge>,
    process_cpu: Gauge<f64, AtomicU64>,
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

impl Metrics {
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("wif_proxy");
        let denials: Family<ReasonLabels, Counter> = Family::default();
        let cache_events: Family<EventLabels, Counter> = Family::default();
        let m = Metrics {
            registry: Registry::default(),
            deny_counters: DENY_REASONS
                .iter()
                .map(|&reason| denials.get_or_create_owned(&ReasonLabels { reason }))
                .collect(),
            cache_counters: CACHE_EVENTS
                .iter()
                .map(|&event| cache_events.get_or_create_owned(&EventLabels { event }))
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
            ip_allow_would_deny: Counter::default(),
            connections_active: Gauge::default(),
            connections_parked: Gauge::default(),
            document_age: Family::default(),
            document_stale: Family::default(),
            jwks_keys: Family::default(),
            jwks_last_change: Family::default(),
            issuer_mismatch: Family::default(),
            certificate_expiry: Family::default(),
            range_prefixes: Family::default(),
            range_last_refresh: Family::default(),
            process_cpu: Gauge::default(),
            process_rss: Gauge::default(),
            process_fds: Gauge::default(),
            process_max_fds: Gauge::default(),
            process_start: Gauge::default(),
        };
        r.register(
            "requests",
            "Public requests answered with a document or an upstream error, by issuer, document and status class",
            m.requests.clone(),
        );
        r.register(
            "denied_requests",
            "Requests and connections refused by the proxy itself, by reason",
            m.denials.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time to answer a public request",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        r.register(
            "cache_events",
            "Document cache events: hit, miss, stale, refresh, coalesced, error",
            m.cache_events.clone(),
        );
        r.register("upstream_requests", "Requests to the issuer by outcome", m.upstream_requests.clone());
        r.register_with_unit(
            "upstream_duration",
            "Time of one issuer exchange",
            Unit::Seconds,
            m.upstream_duration.clone(),
        );
        r.register("upstream_up", "1 when the last request to the issuer succeeded", m.upstream_up.clone());
        r.register(
            "acme_events",
            "ACME certificate events: deployed_cached, deployed_new, error",
            m.acme_events.clone(),
        );
        r.register("config_reloads", "Configuration reloads by outcome", m.config_reloads.clone());
        r.register(
            "ip_allow_would_deny",
            "Requests or connections ip_allow report mode would have denied",
            m.ip_allow_would_deny.clone(),
        );
        r.register("connections_active", "Open public connections", m.connections_active.clone());
        r.register(
            "connections_parked",
            "Open public HTTP/1 connections idle between requests, holding no HTTP state",
            m.connections_parked.clone(),
        );
        r.register_with_unit("document_age", "Age of the cached document", Unit::Seconds, m.document_age.clone());
        r.register(
            "document_stale",
            "1 while a document is served past its freshness (issuer failing or refreshing)",
            m.document_stale.clone(),
        );
        r.register("jwks_keys", "Keys in the served JWKS", m.jwks_keys.clone());
        r.register_with_unit(
            "jwks_last_change_timestamp",
            "When the served key set last changed",
            Unit::Seconds,
            m.jwks_last_change.clone(),
        );
        r.register(
            "issuer_mismatch",
            "1 when a discovery document's issuer or jwks_uri does not match the public URL",
            m.issuer_mismatch.clone(),
        );
        r.register_with_unit(
            "certificate_expiry_timestamp",
            "Expiry of the served TLS certificate",
            Unit::Seconds,
            m.certificate_expiry.clone(),
        );
        r.register("ip_ranges_prefixes", "Prefixes loaded per ip_allow source", m.range_prefixes.clone());
        r.register_with_unit(
            "ip_ranges_last_refresh_timestamp",
            "Last successful load of an ip_allow source",
            Unit::Seconds,
            m.range_last_refresh.clone(),
        );
        let build: Family<VersionLabels, Gauge> = Family::default();
        build.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        r.register("build", "Build information", build);
        let p = root.sub_registry_with_prefix("process");
        p.register_with_unit("cpu", "User and system CPU time", Unit::Seconds, m.process_cpu.clone());
        p.register_with_unit("resident_memory", "Resident set size", Unit::Bytes, m.process_rss.clone());
        p.register("open_fds", "Open file descriptors", m.process_fds.clone());
        p.register("max_fds", "Limit on open file descriptors", m.process_max_fds.clone());
        p.register_with_unit("start_time", "Start time since the Unix epoch", Unit::Seconds, m.process_start.clone());
        m.process_start.set(process_start_time());
        Metrics { registry: root, ..m }
    }

    /// Counts a denial.
    pub fn deny(&self, reason: &'static str) {
        match DENY_REASONS.iter().position(|r| *r == reason) {
            Some(i) => self.deny_counters[i].inc(),
            None => self.denials.get_or_create(&ReasonLabels { reason }).inc(),
        };
    }

    pub fn cache_event(&self, event: &'static str) {
        match CACHE_EVENTS.iter().position(|e| *e == event) {
            Some(i) => self.cache_counters[i].inc(),
            None => self.cache_events.get_or_create(&EventLabels { event }).inc(),
        };
    }

    /// The request counters of one document, one per status class, resolved
    /// once so the request path neither allocates labels nor locks the family.
    pub fn request_counters(&self, issuer: &str, document: &'static str) -> [Counter; 4] {
        ["2xx", "3xx", "4xx", "5xx"].map(|status_class| {
            self.requests.get_or_create_owned(&RequestLabels { issuer: issuer.to_string(), document, status_class })
        })
    }

    /// Renders the text exposition; `refresh` rebuilds the state gauges first.
    pub fn encode(&self, refresh: impl FnOnce(&Metrics)) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.document_stale.clear();
        self.document_age.clear();
        self.jwks_keys.clear();
        self.jwks_last_change.clear();
        self.issuer_mismatch.clear();
        self.certificate_expiry.clear();
        self.range_prefixes.clear();
        self.range_last_refresh.clear();
        refresh(self);
        self.process();
        let mut out = String::with_capacity(16 * 1024);
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        to_classic_text(&out)
    }

    fn process(&self) {
        let ticks = clock_ticks();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name, which may contain spaces.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                self.process_cpu.set((ut + st) / ticks);
            }
        }
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
            let pages: i64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            self.process_rss.set(pages * page_size());
        }
        if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
            self.process_fds.set(d.count() as i64);
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            let max = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
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

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn page_size() -> i64 {
    // SAFETY: as above.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as i64
    } else {
        4096
    }
}

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
