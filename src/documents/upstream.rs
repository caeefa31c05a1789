//! The only way anything reaches the issuer.
//!
//! Every upstream request is built here from constants: `GET <allowlisted
//! path>` with the upstream's own `Host`, `Accept: application/json` and our
//! `User-Agent`. No value from a client request is a parameter of this module,
//! so none can be copied. Redirects are never followed, the body is capped
//! while it streams in, and the whole exchange runs under one deadline.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, USER_AGENT};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::IssuerConfig;

/// `User-Agent` of every upstream request.
pub const USER_AGENT_VALUE: &str = concat!("wif-proxy/", env!("CARGO_PKG_VERSION"));

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
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
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
    pub fn new(issuer: &IssuerConfig) -> Result<Upstream, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(issuer.upstream_connect_timeout));
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls_config(issuer)?);
        let connector = if issuer.upstream.https {
            builder.https_only().enable_http1().wrap_connector(http)
        } else {
            builder.https_or_http().enable_http1().wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .retry_canceled_requests(false)
            .build(connector);
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
        let resp = self.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                FetchError::Connect(error_chain(&e))
            } else {
                FetchError::Other(error_chain(&e))
            }
        })?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(FetchError::NotFound),
            StatusCode::SERVICE_UNAVAILABLE => return Err(FetchError::Unavailable),
            s if s.is_redirection() => return Err(FetchError::Redirect(s.as_u16())),
            s => return Err(FetchError::Status(s.as_u16())),
        }
        if let Some(len) = resp.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
            if len > self.max_bytes as u64 {
                return Err(FetchError::TooLarge(self.max_bytes));
            }
        }
        let freshness = freshness(resp.headers());
        let body = Limited::new(resp.into_body(), self.max_bytes).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                FetchError::TooLarge(self.max_bytes)
            } else {
                FetchError::Other(format!("reading the body: {e}"))
            }
        })?;
        Ok(Fetched { body: body.to_bytes(), freshness })
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

fn tls_config(issuer: &IssuerConfig) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &issuer.upstream_ca {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("issuer {:?}: upstream_ca {}: {e}", issuer.name, ca.display()))?;
        if certs.is_empty() {
            return Err(format!("issuer {:?}: upstream_ca {}: no PEM certificate found", issuer.name, ca.display()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("issuer {:?}: upstream_ca {}: {e}", issuer.name, ca.display()))?;
        }
    } else if issuer.upstream.https {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(format!(
                "issuer {:?}: https upstream without upstream_ca, and no system CA certificates were found",
                issuer.name
            ));
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    // ALPN (http/1.1 only) is set by the connector's enable_http1().
    let config = match (&issuer.upstream_client_cert, &issuer.upstream_client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("issuer {:?}: upstream_client_cert {}: {e}", issuer.name, cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("issuer {:?}: upstream_client_key {}: {e}", issuer.name, key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("issuer {:?}: client certificate: {e}", issuer.name))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// Flattens an error and its sources into one line for the log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_str = s.to_string();
        if !out.contains(&s_str) {
            out.push_str(": ");
            out.push_str(&s_str);
        }
        cur = s.source();
    }
    out
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
