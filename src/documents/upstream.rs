//! The only way anything reaches the issuer.
//!
//! Every upstream request is built here, in [`Upstream::fetch`], from
//! configuration and constants: `GET <node><allowlisted path>` with the
//! kind's `Accept`, our fixed `User-Agent`, the `Host` (the node's own, or
//! `upstream_host`), and — only when configured — `X-Forwarded-Host` and
//! `X-Forwarded-Proto` from the public URL and `Authorization: Bearer` from
//! the token file; nothing else. No value from a client request is a
//! parameter of this module, so none can be copied. Redirects are never
//! followed, the body is capped while it streams in, and the whole exchange
//! runs under one deadline. The connection itself (trust, client
//! certificate, HTTP/1.1, connect timeout, unix sockets) comes from
//! [`crate::net`].
//!
//! An issuer with several nodes (`upstream = [...]`) is tried node by node,
//! starting with the one that last answered 200; a node that cannot answer
//! for the cluster (refused, timed out, reset, 5xx, 429, a standby's
//! redirect, a sealed 503) is passed over for the next, all within
//! `upstream_timeout`: the node asked first gets half of it, each other an
//! equal share of what is left. Each node's last
//! outcome is kept for `/readyz` and the metrics.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::Empty;

use crate::config::IssuerConfig;
use crate::documents::catalog;
use crate::documents::token::BearerToken;
use crate::net::client::{read_body, BodyError, ClientOptions, HttpClient, SendError};
use crate::net::trust::{self, Anchors, Identity, PemFileError, TrustError};

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

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
    #[error("issuer {issuer:?}: {field} is not a valid header value")]
    Header { issuer: String, field: &'static str },
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
    #[error("answered {0}: the upstream refused our credentials (upstream_bearer_token_file missing, expired, or not allowed to read the discovery documents)")]
    Unauthorized(u16),
    #[error("no bearer token: {0}")]
    Token(String),
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
            FetchError::Unauthorized(_) => "unauthorized",
            FetchError::Token(_) => "token",
            FetchError::Status(_) => "status",
            FetchError::TooLarge(_) => "too_large",
            FetchError::Other(_) => "error",
            FetchError::Invalid(_) => "invalid",
            FetchError::Mismatch(_) => "mismatch",
        }
    }
}

impl FetchError {
    /// Whether this says something about one node rather than the
    /// cluster, so that the next node should be asked: no connection, no
    /// complete answer, a 5xx (a sealed 503 included), a redirect (a
    /// standby's 307), a 429 (rate limits are per node: Vault's quotas, the
    /// API server's priority and fairness). A 200, 404, 401/403 or other 4xx
    /// is the cluster's answer.
    pub fn is_node_failure(&self) -> bool {
        match self {
            FetchError::Connect(_) | FetchError::Timeout(_) | FetchError::Other(_) => true,
            FetchError::Unavailable | FetchError::Redirect(_) => true,
            FetchError::Status(s) => *s >= 500 || *s == 429,
            _ => false,
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

/// One upstream node and its last outcome.
struct Node {
    /// As configured (`https://vault-0:8200`, `unix:/run/oidc.sock`).
    origin: String,
    /// What request URLs start with.
    base: String,
    /// The `Host` this node is sent.
    host: HeaderValue,
    client: HttpClient,
    last: Mutex<Option<NodeState>>,
}

/// How a node last answered (`/readyz`, `upstream_node_up`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// `ok`, or the [`FetchError::label`] of the failure.
    pub outcome: &'static str,
    /// The failure, as logged.
    pub error: Option<String>,
    pub at: SystemTime,
}

/// One node as `/readyz` and the metrics show it.
#[derive(Debug, Clone)]
pub struct NodeReport {
    pub origin: String,
    /// `None`: not asked yet.
    pub last: Option<NodeState>,
    /// The node the next fetch starts with.
    pub preferred: bool,
}

/// Connection pools to one issuer's nodes, with that issuer's limits and
/// its fixed request headers.
pub struct Upstream {
    nodes: Vec<Node>,
    /// The node the next fetch starts with: the last that answered 200.
    preferred: AtomicUsize,
    /// `Accept` and the forwarding headers: the same on every request.
    headers: HeaderMap,
    token: Option<BearerToken>,
    timeout: Duration,
    max_bytes: usize,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let origins: Vec<&str> = self.nodes.iter().map(|n| n.origin.as_str()).collect();
        f.debug_struct("Upstream").field("nodes", &origins).finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds the clients for `issuer`; reads its CA and client certificate.
    pub fn new(issuer: &IssuerConfig) -> Result<Upstream, UpstreamError> {
        let tls = tls_config(issuer)?;
        let header = |field, v: &str| {
            HeaderValue::from_str(v).map_err(|_| UpstreamError::Header { issuer: issuer.name.clone(), field })
        };
        let mut nodes = Vec::with_capacity(issuer.upstream.len());
        for u in &issuer.upstream {
            let client = HttpClient::new(ClientOptions {
                tls: tls.clone(),
                connect_timeout: issuer.upstream_connect_timeout,
                https_only: u.https,
                connect_to: Vec::new(),
                unix_socket: u.unix.clone(),
            });
            let host = header("upstream_host", issuer.upstream_host.as_deref().unwrap_or(&u.authority))?;
            nodes.push(Node { origin: u.origin.clone(), base: u.base(), host, client, last: Mutex::new(None) });
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(catalog::accept(issuer.kind)));
        if let Some(fwd) = &issuer.upstream_forwarded {
            headers.insert(X_FORWARDED_HOST, header("public_url", &fwd.host)?);
            headers.insert(X_FORWARDED_PROTO, header("public_url", &fwd.proto)?);
        }
        Ok(Upstream {
            nodes,
            preferred: AtomicUsize::new(0),
            headers,
            token: issuer.upstream_bearer_token_file.as_deref().map(BearerToken::new),
            timeout: issuer.upstream_timeout,
            max_bytes: issuer.max_document_bytes,
        })
    }

    /// `GET node + path` with the fixed header set, node after node as
    /// described in the module documentation; only a complete 200 with a
    /// body within the cap is `Ok`. With every node failing, the last
    /// node's error.
    pub async fn fetch(&self, path: &str) -> Result<Fetched, FetchError> {
        let deadline = Instant::now() + self.timeout;
        let auth = match &self.token {
            Some(t) => Some(t.header().map_err(|e| FetchError::Token(e.to_string()))?),
            None => None,
        };
        let n = self.nodes.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut last = FetchError::Timeout(self.timeout);
        for k in 0..n {
            let i = (first + k) % n;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // The node asked first (the one that last answered) gets half
            // of the time, the others an equal share of what is left: a
            // slow but healthy node is not cut short by the list's length,
            // and one that hangs cannot use up the others' time.
            let share = match k {
                _ if k + 1 == n => left,
                0 => left / 2,
                _ => left / (n - k) as u32,
            };
            let node = &self.nodes[i];
            let result = match tokio::time::timeout(share, self.exchange(node, path, auth.clone())).await {
                Ok(result) => result,
                Err(_) => Err(FetchError::Timeout(if n == 1 { self.timeout } else { share })),
            };
            node.record(&result);
            match result {
                Ok(fetched) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(fetched);
                }
                Err(e) if e.is_node_failure() => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Takes over what `previous` (the same issuer before a reload) learnt
    /// of the nodes both lists hold, matched by origin: their last outcomes
    /// and the node fetches start with. A reload must not send the next
    /// fetch back to a node known to be down, nor blank `/readyz`.
    pub fn inherit(&self, previous: &Upstream) {
        for node in &self.nodes {
            if let Some(old) = previous.nodes.iter().find(|o| o.origin == node.origin) {
                let last = old.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
                *node.last.lock().unwrap_or_else(|p| p.into_inner()) = last;
            }
        }
        // The node that answered last; when it is no longer listed, the
        // first one, as at start-up.
        let was = &previous.nodes[previous.preferred.load(Ordering::Relaxed) % previous.nodes.len()];
        if let Some(i) = self.nodes.iter().position(|n| n.origin == was.origin) {
            self.preferred.store(i, Ordering::Relaxed);
        }
    }

    /// The nodes in configured order, with their last outcomes.
    pub fn nodes(&self) -> Vec<NodeReport> {
        let preferred = self.preferred.load(Ordering::Relaxed) % self.nodes.len();
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeReport {
                origin: n.origin.clone(),
                last: n.last.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                preferred: i == preferred,
            })
            .collect()
    }

    async fn exchange(&self, node: &Node, path: &str, auth: Option<HeaderValue>) -> Result<Fetched, FetchError> {
        // The whole request: this line, these headers, no body.
        let mut req = Request::get(format!("{}{path}", node.base))
            .body(Empty::new())
            .map_err(|e| FetchError::Other(e.to_string()))?;
        let headers = req.headers_mut();
        headers.clone_from(&self.headers);
        headers.insert(HOST, node.host.clone());
        if let Some(auth) = auth {
            headers.insert(AUTHORIZATION, auth);
        }
        let resp = node.client.send(req).await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(FetchError::NotFound),
            StatusCode::SERVICE_UNAVAILABLE => return Err(FetchError::Unavailable),
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => return Err(FetchError::Unauthorized(s.as_u16())),
            s if s.is_redirection() => return Err(FetchError::Redirect(s.as_u16())),
            s => return Err(FetchError::Status(s.as_u16())),
        }
        let (head, body) = read_body(resp, self.max_bytes).await?;
        Ok(Fetched { body, freshness: freshness(&head.headers) })
    }
}

impl Node {
    fn record(&self, result: &Result<Fetched, FetchError>) {
        let state = NodeState {
            outcome: result.as_ref().map_or_else(FetchError::label, |_| "ok"),
            error: result.as_ref().err().map(ToString::to_string),
            at: SystemTime::now(),
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref().is_some_and(|l| l.outcome != state.outcome) || (last.is_none() && state.outcome != "ok") {
            match &state.error {
                Some(e) => tracing::warn!(node = %self.origin, "upstream node failing: {e}"),
                None => tracing::info!(node = %self.origin, "upstream node answering again"),
            }
        }
        *last = Some(state);
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
    let https = issuer.upstream.iter().any(|u| u.https);
    let anchors = match (&issuer.upstream_ca, https) {
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
