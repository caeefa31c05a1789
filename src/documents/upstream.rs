//! The only way anything reaches the issuer.
//!
//! Every upstream request is built here, in [`Upstream::fetch`], from
//! configuration and constants: `GET <origin><allowlisted path>` with
//! `Accept: application/json` and our fixed `User-Agent`; the client adds
//! the origin's `Host`, and nothing else. No value from a client request is a
//! parameter of this module, so none can be copied. Redirects are never
//! followed, the body is capped while it streams in, and the whole exchange
//! runs under one deadline. The connection itself (trust, client
//! certificate, HTTP/1.1, connect timeout) comes from [`crate::net`].

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, USER_AGENT};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::Empty;

use crate::config::IssuerConfig;
use crate::net::client::{read_body, BodyError, ClientOptions, HttpClient, SendError, USER_AGENT_VALUE};
use crate::net::trust::{self, Anchors, Identity, PemFileError, TrustError};

/// Why the client for an issuer could not be built (a configuration error:
/// the issuer's CA or client certificate files).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("issuer {issuer:?}: upstream_ca {source}")]
    Anchors { issuer: String, source: TrustError },
    #[error("issuer {issuer:?}: https upstream without upstream_ca, and no system CA certificates were found")]
    NoSystemRoots { issuer: String },
    #[error("issuer {issuer:?}: {field} {source}")]
    Identity { issuer: String, field: &'static str, source: PemFileError },
    #[error("issuer {issuer:?}: {source}")]
    Tls { issuer: String, source: TrustError },
}

/// Why no good document came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("answered {0} (redirects are never followed; a Vault standby answers 307: point upstream at the active node or at a load balancer that only routes to it)")]
    Redirect(u16),
    #[error("answered 404: the document does not exist (namespace, mount or provider missing?)")]
    NotFound,
    #[error("answered 503 (Vault sealed, uninitialised or in standby?)")]
    Unavailable,
    #[error("answered {0}")]
    Status(u16),
    #[error("document larger than max_document_bytes ({0} bytes)")]
    TooLarge(usize),
    #[error("request failed: {0}")]
    Other(String),
    #[error("invalid document: {0}")]
    Invalid(String),
    #[error("issuer mismatch (strict_issuer = true): {0}")]
    Mismatch(String),
}

impl FetchError {
    /// The status the proxy answers with when it has nothing better to serve.
    pub fn status(&self) -> StatusCode {
        match self {
            FetchError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            FetchError::NotFound => StatusCode::NOT_FOUND,
            FetchError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// A short, bounded label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FetchError::Connect(_) => "connect",
            FetchError::Timeout(_) => "timeout",
            FetchError::Redirect(_) => "redirect",
            FetchError::NotFound => "not_found",
            FetchError::Unavailable => "unavailable",
            FetchError::Status(_) => "status",
            FetchError::TooLarge(_) => "too_large",
            FetchError::Other(_) => "error",
            FetchError::Invalid(_) => "invalid",
            FetchError::Mismatch(_) => "mismatch",
        }
    }
}

impl From<SendError> for FetchError {
    fn from(e: SendError) -> FetchError {
        match e {
            SendError::Connect(chain) => FetchError::Connect(chain),
            SendError::Request(chain) => FetchError::Other(chain),
        }
    }
}

impl From<BodyError> for FetchError {
    fn from(e: BodyError) -> FetchError {
        match e {
            BodyError::TooLarge(max) => FetchError::TooLarge(max),
            read @ BodyError::Read(_) => FetchError::Other(read.to_string()),
        }
    }
}

/// How long the issuer said a document may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// `max-age=N` (N may be 0).
    MaxAge(Duration),
    /// `no-store` or `no-cache`.
    NoStore,
    /// Nothing usable was said.
    Unspecified,
}

/// A 200 answer, not yet validated.
#[derive(Debug)]
pub struct Fetched {
    pub body: Bytes,
    pub freshness: Freshness,
}

/// A connection pool to one issuer, with that issuer's limits.
pub struct Upstream {
    client: HttpClient,
    origin: String,
    timeout: Duration,
    max_bytes: usize,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("origin", &self.origin).finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the client for `issuer`; reads its CA and client certificate.
    pub fn new(issuer: &IssuerConfig) -> Result<Upstream, UpstreamError> {
        let client = HttpClient::new(ClientOptions {
            tls: tls_config(issuer)?,
            connect_timeout: issuer.upstream_connect_timeout,
            https_only: issuer.upstream.https,
            connect_to: Vec::new(),
        });
        Ok(Upstream {
            client,
            origin: issuer.upstream.origin.clone(),
            timeout: issuer.upstream_timeout,
            max_bytes: issuer.max_document_bytes,
        })
    }

    /// `GET origin + path` with the fixed header set; only a complete 200 with
    /// a body within the cap is `Ok`.
    pub async fn fetch(&self, path: &str) -> Result<Fetched, FetchError> {
        // The whole request: this line, these two headers, no body; the
        // client adds `Host` from the configured origin, and nothing else.
        let req = Request::get(format!("{}{path}", self.origin))
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .body(Empty::new())
            .map_err(|e| FetchError::Other(e.to_string()))?;
        match tokio::time::timeout(self.timeout, self.exchange(req)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout(self.timeout)),
        }
    }

    async fn exchange(&self, req: Request<Empty<Bytes>>) -> Result<Fetched, FetchError> {
        let resp = self.client.send(req).await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(FetchError::NotFound),
            StatusCode::SERVICE_UNAVAILABLE => return Err(FetchError::Unavailable),
            s if s.is_redirection() => return Err(FetchError::Redirect(s.as_u16())),
            s => return Err(FetchError::Status(s.as_u16())),
        }
        let (head, body) = read_body(resp, self.max_bytes).await?;
        Ok(Fetched { body, freshness: freshness(&head.headers) })
    }
}

/// Reads `Cache-Control` the way a shared cache would for our purpose.
pub fn freshness(headers: &HeaderMap) -> Freshness {
    let mut out = Freshness::Unspecified;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(str::trim) {
            if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache") {
                return Freshness::NoStore;
            }
            if let Some((name, secs)) = directive.split_once('=') {
                if name.trim().eq_ignore_ascii_case("max-age") {
                    if let Ok(secs) = secs.trim().trim_matches('"').parse::<u64>() {
                        out = Freshness::MaxAge(Duration::from_secs(secs));
                    }
                }
            }
        }
    }
    out
}

/// The issuer's TLS client: its `upstream_ca` alone, or the system roots
/// for an https upstream without one; its client certificate when set.
fn tls_config(issuer: &IssuerConfig) -> Result<rustls::ClientConfig, UpstreamError> {
    let name = || issuer.name.clone();
    let anchors = match (&issuer.upstream_ca, issuer.upstream.https) {
        (Some(ca), _) => Anchors::PemFile(ca),
        (None, true) => Anchors::Platform,
        (None, false) => Anchors::Empty,
    };
    let roots = trust::root_store(anchors).map_err(|source| match source {
        TrustError::NoPlatformRoots => UpstreamError::NoSystemRoots { issuer: name() },
        source => UpstreamError::Anchors { issuer: name(), source },
    })?;
    let identity = match (&issuer.upstream_client_cert, &issuer.upstream_client_key) {
        (Some(cert), Some(key)) => {
            let file = |field| move |source| UpstreamError::Identity { issuer: name(), field, source };
            let chain = trust::read_certificates(cert).map_err(file("upstream_client_cert"))?;
            Some(Identity::new(chain, trust::read_private_key(key).map_err(file("upstream_client_key"))?))
        }
        _ => None,
    };
    trust::client_config(roots, identity).map_err(|source| UpstreamError::Tls { issuer: name(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(v: &[&str]) -> Freshness {
        let mut h = HeaderMap::new();
        for x in v {
            h.append(CACHE_CONTROL, HeaderValue::from_str(x).expect("header"));
        }
        freshness(&h)
    }

    #[test]
    fn cache_control() {
        assert_eq!(cc(&["max-age=3600"]), Freshness::MaxAge(Duration::from_secs(3600)));
        assert_eq!(cc(&["public, Max-Age=0"]), Freshness::MaxAge(Duration::ZERO));
        assert_eq!(cc(&["no-store"]), Freshness::NoStore);
        assert_eq!(cc(&["max-age=10", "no-cache"]), Freshness::NoStore);
        assert_eq!(cc(&["max-age=abc"]), Freshness::Unspecified);
        assert_eq!(cc(&[]), Freshness::Unspecified);
    }
}
