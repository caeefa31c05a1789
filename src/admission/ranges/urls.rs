//! Range sources fetched from URLs: one client per source set, `GET` with
//! nothing but our `User-Agent`, 200 only, no redirects, bounded in size and
//! time; each good answer is kept in `state_dir` so that a start without
//! network still has the last one.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Empty;
use ipnet::IpNet;

use super::parse::{parse, ParseError};
use super::{now_secs, RangesError};
use crate::config::{RangeLocation, RangeSourceConfig};
use crate::net::client::{read_body, BodyError, ClientOptions, HttpClient, SendError};
use crate::net::trust::{self, Anchors, TrustError};

/// Largest range document we read (the full Azure file is ~4 MB).
const MAX_RANGE_BYTES: usize = 64 * 1024 * 1024;

/// Upper bound on opening a connection to a provider.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound on one whole fetch (the Azure file is large).
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a URL gave no usable ranges.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("not a request target: {0}")]
    Target(http::Error),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("answered {0}")]
    Status(http::StatusCode),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("timed out after {}s", .0.as_secs())]
    Timeout(Duration),
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// Why the persisted copy could not stand in.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// Fetches the URL sources of one configuration over one pooled client.
#[derive(Debug)]
pub(super) struct Fetcher {
    client: HttpClient,
}

impl Fetcher {
    /// The fetcher for `sources`. The system roots are loaded only when
    /// some URL is https (the configuration allows plain http to loopback
    /// only); no connection is opened until the first fetch.
    pub(super) fn for_sources(sources: &[RangeSourceConfig]) -> Result<Fetcher, TrustError> {
        let https =
            sources.iter().any(|s| matches!(&s.location, RangeLocation::Url(url) if url.starts_with("https://")));
        let roots = trust::root_store(if https { Anchors::Platform } else { Anchors::Empty })?;
        let client = HttpClient::new(ClientOptions {
            tls: trust::client_config(roots, None)?,
            connect_timeout: CONNECT_TIMEOUT,
            https_only: false,
            connect_to: Vec::new(),
            unix_socket: None,
        });
        Ok(Fetcher { client })
    }

    /// Fetches and parses `url` for `src`; returns the prefixes and the raw
    /// document (for the persisted copy).
    pub(super) async fn fetch_and_parse(
        &self,
        src: &RangeSourceConfig,
        url: &str,
    ) -> Result<(Vec<IpNet>, Bytes), UrlError> {
        let raw = self.fetch(url).await?;
        let nets = parse(src, &raw)?;
        Ok((nets, raw))
    }

    /// `GET url`: a 200 with a body within [`MAX_RANGE_BYTES`], within
    /// [`FETCH_TIMEOUT`].
    async fn fetch(&self, url: &str) -> Result<Bytes, UrlError> {
        let req = http::Request::get(url).body(Empty::new()).map_err(UrlError::Target)?;
        let exchange = async {
            let resp = self.client.send(req).await?;
            if resp.status() != http::StatusCode::OK {
                return Err(UrlError::Status(resp.status()));
            }
            Ok(read_body(resp, MAX_RANGE_BYTES).await?.1)
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange).await.map_err(|_| UrlError::Timeout(FETCH_TIMEOUT))?
    }

    /// Start-up: the network, else the persisted copy, else an error.
    pub(super) async fn first_load(
        &self,
        src: &RangeSourceConfig,
        url: &str,
        state_dir: Option<&Path>,
    ) -> Result<(Vec<IpNet>, u64), RangesError> {
        let fetch = match self.fetch_and_parse(src, url).await {
            Ok((nets, raw)) => {
                if let Some(dir) = state_dir {
                    save_copy(dir, &src.name, &raw);
                }
                return Ok((nets, now_secs()));
            }
            Err(fetch) => fetch,
        };
        let Some(dir) = state_dir else {
            return Err(RangesError::Unreachable { name: src.name.clone(), url: url.to_string(), source: fetch });
        };
        let path = copy_path(dir, &src.name);
        let persisted = std::fs::read(&path).map_err(CopyError::from).and_then(|data| Ok(parse(src, &data)?));
        match persisted {
            Ok(nets) => {
                tracing::warn!(source = %src.name, file = %path.display(), "ip_allow: {url} unreachable ({fetch}); using the persisted copy");
                let at = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                Ok((nets, at))
            }
            Err(copy) => Err(RangesError::NoCopy { name: src.name.clone(), url: url.to_string(), fetch, path, copy }),
        }
    }
}

fn copy_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("ranges-{name}.data"))
}

/// Keeps `raw` as the persisted copy of source `name` (a failure is logged:
/// the ranges themselves are good).
pub(super) fn save_copy(dir: &Path, name: &str, raw: &[u8]) {
    let result = std::fs::create_dir_all(dir).and_then(|()| crate::files::replace(&copy_path(dir, name), raw));
    if let Err(e) = result {
        tracing::warn!(source = %name, dir = %dir.display(), "ip_allow: could not persist the fetched ranges: {e}");
    }
}
