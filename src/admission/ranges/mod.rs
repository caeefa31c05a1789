//! The source-address allowlist: cloud-provider ranges, read from the files
//! the providers publish.
//!
//! Nobody publishes the addresses cloud STS services fetch discovery
//! documents from, so `report` mode exists to observe before `enforce`.
//! Sources are files (re-read on SIGHUP), inline CIDRs, or URLs fetched on
//! start-up and every `refresh`. A fetch or parse that fails keeps the last
//! good set; URL data is kept in `state_dir` so a restart without network
//! still has it. The sources that admit are merged into one [`IpSet`] for
//! O(log n) lookups; every source, in order, into one [`IpMap`] that names
//! the first source containing a client, for fetch accounting (in every
//! mode, `off` included).
//!
//! This file holds the allowlist itself and its loading; the provider
//! formats are in `parse`, fetching and persisted copies in `urls`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use ipnet::IpNet;

use crate::config::{IpAllowConfig, IpAllowMode, RangeLocation, RangeSourceConfig};
use crate::net::ipmap::IpMap;
use crate::net::ipset::IpSet;
use crate::net::trust::TrustError;

mod parse;
mod urls;

pub use parse::{parse, ParseError};
pub use urls::{CopyError, UrlError};

use urls::{save_copy, Fetcher};

/// The source name of clients in no source, in fetch accounting.
pub use crate::config::OTHER_SOURCE as OTHER;

/// Why the allowlist could not be loaded; each names the source and where
/// its data came from.
#[derive(Debug, thiserror::Error)]
pub enum RangesError {
    #[error("ip_allow source {name:?}: {}: {source}", .path.display())]
    Unreadable { name: String, path: PathBuf, source: std::io::Error },
    #[error("ip_allow source {name:?}: {}: {source}", .path.display())]
    Invalid { name: String, path: PathBuf, source: ParseError },
    #[error("ip_allow source {name:?}: {url}: {source}")]
    Unreachable { name: String, url: String, source: UrlError },
    #[error("ip_allow source {name:?}: {url}: {fetch}; and no usable persisted copy at {}: {copy}", .path.display())]
    NoCopy { name: String, url: String, fetch: UrlError, path: PathBuf, copy: CopyError },
    #[error("ip_allow: range URLs: {0}")]
    Trust(#[from] TrustError),
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
    /// The sources that admit, merged.
    set: ArcSwap<IpSet>,
    /// Every source, labelled by its index: who a client is.
    by_source: ArcSwap<IpMap>,
    state_dir: Option<PathBuf>,
    /// The client of the URL sources.
    fetcher: Fetcher,
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
    ) -> Result<Arc<Ranges>, RangesError> {
        let fetcher = Fetcher::for_sources(&config.sources)?;
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
                    let (name, path) = (src.name.clone(), path.clone());
                    let nets = match std::fs::read(&path) {
                        Ok(data) => parse(src, &data).map_err(|source| RangesError::Invalid { name, path, source })?,
                        Err(source) => return Err(RangesError::Unreadable { name, path, source }),
                    };
                    (Arc::new(nets), now_secs())
                }
                (None, RangeLocation::Url(url)) => {
                    let (nets, at) = fetcher.first_load(src, url, config.state_dir.as_deref()).await?;
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
            by_source: ArcSwap::from_pointee(IpMap::default()),
            sources,
            state_dir: config.state_dir.clone(),
            fetcher,
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
        static DENIED: crate::telemetry::budget::Budget = crate::telemetry::budget::Budget::new();
        let enforce = self.mode == IpAllowMode::Enforce;
        if !enforce {
            self.would_deny.inc();
        }
        if let Some(left_out) = DENIED.once_a_second() {
            if enforce {
                tracing::warn!(client = %ip, left_out, "ip_allow: denied an address outside every source");
            } else {
                tracing::info!(client = %ip, left_out, "ip_allow report: would deny an address outside every source");
            }
        }
        !enforce
    }

    /// Whether `ip` is in any source that admits.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.set.load().contains(ip)
    }

    /// The index in [`sources`](Ranges::sources) of the first source that
    /// contains `ip`, or `sources.len()` ("other") when none does: one
    /// lock-free load and one binary search, on every answered request.
    #[inline]
    pub fn source_of(&self, ip: IpAddr) -> usize {
        self.by_source.load().get(ip).unwrap_or(self.sources.len())
    }

    /// The name of [`source_of`](Ranges::source_of)'s answer.
    pub fn source_name(&self, index: usize) -> &str {
        self.sources.get(index).map_or(OTHER, |s| s.config.name.as_str())
    }

    /// Which source and prefix admit `ip` (a linear scan: for the CLI).
    pub fn explain(&self, ip: IpAddr) -> Option<(&str, IpNet)> {
        let ip = ip.to_canonical();
        self.sources
            .iter()
            .filter(|s| s.config.admit)
            .find_map(|s| s.prefixes.load().iter().find(|n| n.contains(&ip)).map(|n| (s.config.name.as_str(), *n)))
    }

    fn rebuild(&self) {
        let lists: Vec<Arc<Vec<IpNet>>> = self.sources.iter().map(|s| s.prefixes.load_full()).collect();
        let admitting = self.sources.iter().zip(&lists).filter(|(s, _)| s.config.admit).flat_map(|(_, l)| l.iter());
        self.set.store(Arc::new(IpSet::new(admitting)));
        self.by_source.store(Arc::new(IpMap::new(lists.iter().map(|l| l.as_slice()))));
    }

    /// Fetches every URL source once; a failure keeps that source's last good data.
    pub async fn refresh_urls(&self) {
        for s in &self.sources {
            let RangeLocation::Url(url) = &s.config.location else { continue };
            match self.fetcher.fetch_and_parse(&s.config, url).await {
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

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
