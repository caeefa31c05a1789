//! The source-address allowlist: cloud-provider ranges, read from the files
//! the providers publish.
//!
//! Nobody publishes the addresses cloud STS services fetch discovery
//! documents from, so `report` mode exists to observe before `enforce`.
//! Sources are files (re-read on SIGHUP), inline CIDRs, or URLs fetched on
//! start-up and every `refresh`. A fetch or parse that fails keeps the last
//! good set; URL data is kept in `state_dir` so a restart without network
//! still has it. Everything is merged into one [`IpSet`] for O(log n) lookups.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use ipnet::IpNet;
use serde::Deserialize;

use crate::config::{IpAllowConfig, IpAllowMode, RangeFormat, RangeLocation, RangeSourceConfig};
use crate::net::ipset::{parse_net, IpSet};

/// Largest range document we read (the full Azure file is ~4 MB).
const MAX_RANGE_BYTES: usize = 64 * 1024 * 1024;

/// Parses `data` in `format`, applies the source's filters, and returns the
/// distinct prefixes. A filter that matches nothing is an error: it is
/// almost certainly a typo, and an empty allowlist would deny everyone.
pub fn parse(src: &RangeSourceConfig, data: &[u8]) -> Result<Vec<IpNet>, String> {
    let any =
        |filter: &[String], value: &str| filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value));
    let mut out: Vec<IpNet> = Vec::new();
    let mut push = |s: &str| -> Result<(), String> {
        out.push(parse_net(s).ok_or_else(|| format!("invalid prefix {s:?}"))?);
        Ok(())
    };
    match src.format {
        RangeFormat::Cidrs => {
            let text = std::str::from_utf8(data).map_err(|_| "not UTF-8 text".to_string())?;
            for (i, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if !line.is_empty() {
                    push(line).map_err(|e| format!("line {}: {e}", i + 1))?;
                }
            }
        }
        RangeFormat::Aws => {
            let doc: Aws = serde_json::from_slice(data).map_err(|e| format!("not an AWS ip-ranges.json: {e}"))?;
            for p in &doc.prefixes {
                if any(&src.services, &p.service) && any(&src.regions, &p.region) {
                    push(&p.ip_prefix)?;
                }
            }
            for p in &doc.ipv6_prefixes {
                if any(&src.services, &p.service) && any(&src.regions, &p.region) {
                    push(&p.ipv6_prefix)?;
                }
            }
        }
        RangeFormat::Gcp | RangeFormat::Goog => {
            let doc: Google = serde_json::from_slice(data).map_err(|e| format!("not a Google ranges file: {e}"))?;
            for p in &doc.prefixes {
                if src.format == RangeFormat::Gcp && !any(&src.scopes, p.scope.as_deref().unwrap_or("")) {
                    continue;
                }
                match (&p.ipv4_prefix, &p.ipv6_prefix) {
                    (Some(a), _) | (None, Some(a)) => push(a)?,
                    (None, None) => return Err("a prefix entry has neither ipv4Prefix nor ipv6Prefix".into()),
                }
            }
        }
        RangeFormat::Azure => {
            let doc: Azure =
                serde_json::from_slice(data).map_err(|e| format!("not an Azure Service Tags file: {e}"))?;
            for v in &doc.values {
                if any(&src.tags, &v.name) {
                    for p in &v.properties.address_prefixes {
                        push(p)?;
                    }
                }
            }
        }
        RangeFormat::Oracle => {
            let doc: Oracle =
                serde_json::from_slice(data).map_err(|e| format!("not an Oracle public_ip_ranges.json: {e}"))?;
            for r in &doc.regions {
                if !any(&src.regions, &r.region) {
                    continue;
                }
                for c in &r.cidrs {
                    if src.tags.is_empty() || c.tags.iter().any(|t| any(&src.tags, t)) {
                        push(&c.cidr)?;
                    }
                }
            }
        }
    }
    let mut out: Vec<IpNet> = out.into_iter().map(|n| n.trunc()).collect();
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err("no prefixes matched the source's filters".into());
    }
    Ok(out)
}

#[derive(Deserialize)]
struct Aws {
    prefixes: Vec<AwsV4>,
    #[serde(default)]
    ipv6_prefixes: Vec<AwsV6>,
}

#[derive(Deserialize)]
struct AwsV4 {
    ip_prefix: String,
    region: String,
    service: String,
}

#[derive(Deserialize)]
struct AwsV6 {
    ipv6_prefix: String,
    region: String,
    service: String,
}

#[derive(Deserialize)]
struct Google {
    prefixes: Vec<GooglePrefix>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GooglePrefix {
    ipv4_prefix: Option<String>,
    ipv6_prefix: Option<String>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct Azure {
    values: Vec<AzureTag>,
}

#[derive(Deserialize)]
struct AzureTag {
    name: String,
    properties: AzureProperties,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzureProperties {
    address_prefixes: Vec<String>,
}

#[derive(Deserialize)]
struct Oracle {
    regions: Vec<OracleRegion>,
}

#[derive(Deserialize)]
struct OracleRegion {
    region: String,
    cidrs: Vec<OracleCidr>,
}

#[derive(Deserialize)]
struct OracleCidr {
    cidr: String,
    #[serde(default)]
    tags: Vec<String>,
}

/// One source and its current prefixes.
#[derive(Debug)]
pub struct SourceState {
    pub config: RangeSourceConfig,
    pub prefixes: ArcSwap<Vec<IpNet>>,
    /// Unix seconds of the last successful load or fetch.
    pub loaded_at: AtomicU64,
}

/// The allowlist of one configuration.
#[derive(Debug)]
pub struct Ranges {
    pub mode: IpAllowMode,
    pub sources: Vec<SourceState>,
    set: ArcSwap<IpSet>,
    state_dir: Option<PathBuf>,
    /// Report mode's count of what it would have denied.
    would_deny: prometheus_client::metrics::counter::Counter,
}

impl Ranges {
    /// Loads every source. File and inline sources must parse; URL sources
    /// are fetched (or, on failure, read from `state_dir`). `previous` lends
    /// its URL data on reloads, so a SIGHUP does not refetch.
    pub async fn load(
        config: &IpAllowConfig,
        previous: Option<&Ranges>,
        would_deny: prometheus_client::metrics::counter::Counter,
    ) -> Result<Arc<Ranges>, String> {
        let mut sources = Vec::with_capacity(config.sources.len());
        for src in &config.sources {
            let reused = previous.and_then(|p| {
                p.sources.iter().find(|s| s.config == *src && matches!(src.location, RangeLocation::Url(_)))
            });
            let (prefixes, at) = match (reused, &src.location) {
                (Some(old), _) => (old.prefixes.load_full(), old.loaded_at.load(Ordering::Relaxed)),
                (None, RangeLocation::Inline(nets)) => {
                    let mut nets: Vec<IpNet> = nets.iter().map(|n| n.trunc()).collect();
                    nets.sort_unstable();
                    nets.dedup();
                    (Arc::new(nets), now_secs())
                }
                (None, RangeLocation::File(path)) => {
                    let data = std::fs::read(path)
                        .map_err(|e| format!("ip_allow source {:?}: {}: {e}", src.name, path.display()))?;
                    let nets = parse(src, &data)
                        .map_err(|e| format!("ip_allow source {:?}: {}: {e}", src.name, path.display()))?;
                    (Arc::new(nets), now_secs())
                }
                (None, RangeLocation::Url(url)) => {
                    let (nets, at) = first_load(src, url, config.state_dir.as_deref()).await?;
                    (Arc::new(nets), at)
                }
            };
            sources.push(SourceState {
                config: src.clone(),
                prefixes: ArcSwap::new(prefixes),
                loaded_at: AtomicU64::new(at),
            });
        }
        let ranges = Arc::new(Ranges {
            mode: config.mode,
            set: ArcSwap::from_pointee(IpSet::default()),
            sources,
            state_dir: config.state_dir.clone(),
            would_deny,
        });
        ranges.rebuild();
        if ranges.sources.iter().any(|s| matches!(s.config.location, RangeLocation::Url(_))) {
            tokio::spawn(refresh_forever(Arc::downgrade(&ranges), config.refresh));
        }
        Ok(ranges)
    }

    /// The allowlist's verdict for `ip`, logged (throttled) when it would
    /// deny: `false` only in enforce mode.
    pub fn admit(&self, ip: IpAddr) -> bool {
        if self.mode == IpAllowMode::Off || self.contains(ip) {
            return true;
        }
        static DENIED: crate::telemetry::throttle::Throttle = crate::telemetry::throttle::Throttle::new();
        let enforce = self.mode == IpAllowMode::Enforce;
        if !enforce {
            self.would_deny.inc();
        }
        if let Some(left_out) = DENIED.allow() {
            if enforce {
                tracing::warn!(client = %ip, left_out, "ip_allow: denied an address outside every source");
            } else {
                tracing::info!(client = %ip, left_out, "ip_allow report: would deny an address outside every source");
            }
        }
        !enforce
    }

    /// Whether `ip` is in any source.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.set.load().contains(ip)
    }

    /// Which source and prefix admit `ip` (a linear scan: for the CLI).
    pub fn explain(&self, ip: IpAddr) -> Option<(&str, IpNet)> {
        let ip = ip.to_canonical();
        self.sources
            .iter()
            .find_map(|s| s.prefixes.load().iter().find(|n| n.contains(&ip)).map(|n| (s.config.name.as_str(), *n)))
    }

    fn rebuild(&self) {
        let all: Vec<IpNet> =
            self.sources.iter().flat_map(|s| s.prefixes.load().iter().copied().collect::<Vec<_>>()).collect();
        self.set.store(Arc::new(IpSet::new(&all)));
    }

    /// Fetches every URL source once; a failure keeps that source's last good data.
    pub async fn refresh_urls(&self) {
        for s in &self.sources {
            let RangeLocation::Url(url) = &s.config.location else { continue };
            match fetch_and_parse(&s.config, url).await {
                Ok((nets, raw)) => {
                    let changed = **s.prefixes.load() != nets;
                    s.prefixes.store(Arc::new(nets));
                    s.loaded_at.store(now_secs(), Ordering::Relaxed);
                    if let Some(dir) = &self.state_dir {
                        save_copy(dir, &s.config.name, &raw);
                    }
                    if changed {
                        self.rebuild();
                        tracing::info!(source = %s.config.name, prefixes = s.prefixes.load().len(), "ip_allow: source refreshed");
                    }
                }
                Err(e) => {
                    tracing::warn!(source = %s.config.name, "ip_allow: refresh failed, keeping the last good ranges: {e}")
                }
            }
        }
    }
}

async fn refresh_forever(ranges: Weak<Ranges>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match ranges.upgrade() {
            Some(r) => r.refresh_urls().await,
            None => return,
        }
    }
}

/// Start-up: the network, else the persisted copy, else an error.
async fn first_load(
    src: &RangeSourceConfig,
    url: &str,
    state_dir: Option<&std::path::Path>,
) -> Result<(Vec<IpNet>, u64), String> {
    match fetch_and_parse(src, url).await {
        Ok((nets, raw)) => {
            if let Some(dir) = state_dir {
                save_copy(dir, &src.name, &raw);
            }
            Ok((nets, now_secs()))
        }
        Err(fetch_err) => {
            let Some(dir) = state_dir else {
                return Err(format!("ip_allow source {:?}: {url}: {fetch_err}", src.name));
            };
            let path = copy_path(dir, &src.name);
            let persisted = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|data| parse(src, &data).map(|nets| (nets, &path)));
            match persisted {
                Ok((nets, path)) => {
                    tracing::warn!(source = %src.name, file = %path.display(), "ip_allow: {url} unreachable ({fetch_err}); using the persisted copy");
                    let at = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs());
                    Ok((nets, at))
                }
                Err(e) => Err(format!(
                    "ip_allow source {:?}: {url}: {fetch_err}; and no usable persisted copy at {}: {e}",
                    src.name,
                    path.display()
                )),
            }
        }
    }
}

async fn fetch_and_parse(src: &RangeSourceConfig, url: &str) -> Result<(Vec<IpNet>, Bytes), String> {
    let raw = fetch(url).await?;
    let nets = parse(src, &raw)?;
    Ok((nets, raw))
}

/// GET `url` (https with the system roots, or http to loopback), 200 only,
/// no redirects, bounded in size and time.
async fn fetch(url: &str) -> Result<Bytes, String> {
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    use hyper_util::rt::TokioExecutor;

    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let req = http::Request::get(url)
        .header(http::header::USER_AGENT, crate::net::client::USER_AGENT_VALUE)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!("answered {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_RANGE_BYTES).collect().await.map_err(|e| e.to_string())?;
        Ok(body.to_bytes())
    };
    tokio::time::timeout(Duration::from_secs(60), exchange).await.map_err(|_| "timed out after 60s".to_string())?
}

fn copy_path(dir: &std::path::Path, name: &str) -> PathBuf {
    dir.join(format!("ranges-{name}.data"))
}

fn save_copy(dir: &std::path::Path, name: &str, raw: &[u8]) {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| crate::files::write_atomic(&copy_path(dir, name), raw, SEQ.fetch_add(1, Ordering::Relaxed)));
    if let Err(e) = result {
        tracing::warn!(source = %name, dir = %dir.display(), "ip_allow: could not persist the fetched ranges: {e}");
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let aws = br#"{"prefixes":[{"ip_prefix":"3.5.140.0/22","region":"ap-northeast-2","service":"S3","network_border_group":"x"},{"ip_prefix":"15.230.56.104/31","region":"us-east-1","service":"EC2","network_border_group":"x"}],"ipv6_prefixes":[{"ipv6_prefix":"2600:1f14::/35","region":"us-west-2","service":"EC2","network_border_group":"x"}]}"#;
        let mut s = RangeSourceConfig::unfiltered("t", RangeFormat::Aws);
        assert_eq!(parse(&s, aws).unwrap().len(), 3);
        s.services = vec!["ec2".into()];
        assert_eq!(parse(&s, aws).unwrap().len(), 2);
        s.regions = vec!["us-west-2".into()];
        assert_eq!(parse(&s, aws).unwrap(), vec!["2600:1f14::/35".parse::<IpNet>().unwrap()]);
        s.regions = vec!["mars-1".into()];
        assert!(parse(&s, aws).unwrap_err().contains("no prefixes matched"));

        let text = b"# Cloudflare\n173.245.48.0/20\n\n103.21.244.0/22 # comment\n2400:cb00::/32\n";
        assert_eq!(parse(&RangeSourceConfig::unfiltered("t", RangeFormat::Cidrs), text).unwrap().len(), 3);
        assert!(parse(&RangeSourceConfig::unfiltered("t", RangeFormat::Cidrs), b"10.0.0.0/8\nnonsense\n")
            .unwrap_err()
            .contains("line 2"));
        assert!(parse(&RangeSourceConfig::unfiltered("t", RangeFormat::Azure), b"{\"values\":").is_err());
    }
}
