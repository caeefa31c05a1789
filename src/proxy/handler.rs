//! The request path, top to bottom.
//!
//! Every public request runs through [`serve`]: method, body, target form,
//! host, allowlist, then the cache. Each step either passes the request on or
//! answers it with one of our fixed errors. The request itself is never given
//! to anything that talks to the issuer: only the allowlist entry it matched is.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::header::{CONTENT_LENGTH, HOST, IF_NONE_MATCH, STRICT_TRANSPORT_SECURITY, TRANSFER_ENCODING};
use http::{Method, Request, Response, Version};
use hyper::body::{Body as _, Incoming};

use crate::documents::cache::CacheStatus;
use crate::documents::catalog::DocKind;
use crate::edge::clientip;
use crate::edge::http::CloseConnection;
use crate::edge::listener::ConnInfo;
use crate::proxy::allowlist::host_name;
use crate::proxy::response::{self, Body, Deny};
use crate::proxy::state::{Shared, Snapshot};
use crate::telemetry::accesslog;
use crate::telemetry::metrics::Metrics;

/// How a request was handled, for the access log.
pub(crate) enum Outcome {
    Denied(Deny),
    Served {
        names: accesslog::Names,
        kind: DocKind,
        cache: CacheStatus,
    },
    Failed {
        names: accesslog::Names,
        kind: DocKind,
    },
    /// Plain-HTTP listener: redirected to https.
    Redirect,
    /// Plain-HTTP listener: an ACME HTTP-01 answer.
    Challenge,
}

/// Answers one public request.
pub async fn serve(shared: &Shared, conn: &ConnInfo, mut req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let snap = shared.snapshot();
    h2_await_end(&snap, &mut req).await;
    let client = if conn.forwarded {
        clientip::from_forwarded_for(conn.peer.ip(), req.headers(), &snap.config.client_ip.trusted_proxies)
    } else {
        conn.client_ip
    };
    let (mut resp, outcome) = answer(&snap, conn, client, &req, started).await;
    close_after_body(&mut resp, &outcome);
    if conn.tls {
        if let Some(hsts) = &snap.hsts {
            resp.headers_mut().insert(STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }
    // One clock read serves the histogram and the log line.
    let took = started.elapsed();
    record(&snap.metrics, &outcome, took);
    if snap.config.log.access {
        access_log(&snap, client, &req, &resp, &outcome, started, took);
    }
    resp
}

/// A request that sent a body is refused and its connection closed, as
/// HTTP/1.1 closes it: what follows the body cannot be trusted to frame.
pub(crate) fn close_after_body(resp: &mut Response<Body>, outcome: &Outcome) {
    if let Outcome::Denied(Deny::Body) = outcome {
        resp.extensions_mut().insert(CloseConnection);
    }
}

pub(crate) fn record(metrics: &Metrics, outcome: &Outcome, took: Duration) {
    metrics.request_duration.observe(took);
    match outcome {
        Outcome::Denied(d) => metrics.deny(*d),
        // Counted in `answer`, on the document's pre-resolved counters.
        Outcome::Served { .. } | Outcome::Failed { .. } | Outcome::Redirect | Outcome::Challenge => {}
    }
}

async fn answer(
    snap: &Snapshot,
    conn: &ConnInfo,
    client: IpAddr,
    req: &Request<Incoming>,
    started: Instant,
) -> (Response<Body>, Outcome) {
    let deny = |d: Deny| (response::error(d.status()), Outcome::Denied(d));

    // 0-3. Who may ask, how often, and only a bodiless GET/HEAD of an origin-form target.
    let target = match preflight(snap, client, conn.forwarded, req) {
        Ok(t) => t,
        Err(refusal) => return refusal.answer(),
    };
    // 4. Host (read only when issuers are bound to hosts).
    let Ok(host) = request_host(req, snap.routes.host_bound()) else {
        return deny(Deny::Host);
    };
    // 5. The allowlist: the raw target, byte for byte.
    let Some(lookup) = snap.routes.lookup(host, target) else {
        return deny(Deny::Path);
    };
    let Some(doc) = snap.doc(lookup) else {
        return deny(Deny::Capacity);
    };
    // 6. The document, from the cache or one coalesced upstream fetch.
    let (resp, outcome) = match doc.slot.get(&doc.source).await {
        Ok((entry, cache)) => {
            // 7. Fetch accounting: who got which version (one range lookup).
            if let Some(tally) = doc.fetched_by.get(snap.ranges.source_of(client)) {
                tally.record(started, entry.tag);
            }
            let not_modified =
                req.headers().get(IF_NONE_MATCH).is_some_and(|v| response::if_none_match(v, &entry.etag));
            (
                // Ages are whole seconds: the request's start will do.
                response::document(&entry, started, not_modified),
                Outcome::Served { names: doc.log, kind: doc.kind, cache },
            )
        }
        Err(status) => (response::error(status), Outcome::Failed { names: doc.log, kind: doc.kind }),
    };
    let class = match resp.status().as_u16() {
        200..=299 => 0,
        300..=399 => 1,
        400..=499 => 2,
        _ => 3,
    };
    doc.requests[class].inc();
    (resp, outcome)
}

/// The checks every request passes before its target is looked at, in
/// order: the source-address allowlist (when the address is only known per
/// request; an address known at accept time was checked there), the rate
/// limits, GET/HEAD only (hyper answers HEAD from the same response, minus the
/// body), no body announced or sent, and an origin-form target (an HTTP/1
/// absolute-form target has a scheme or authority; h2 carries them as
/// pseudo-headers, with `:path` apart). Returns the raw target.
pub(crate) fn preflight<'r>(
    snap: &Snapshot,
    client: IpAddr,
    check_ip: bool,
    req: &'r Request<Incoming>,
) -> Result<&'r str, Refusal> {
    if check_ip && !snap.ranges.admit(client) {
        return Err(Refusal::Deny(Deny::Ip));
    }
    if let Some(limit) = &snap.rate_limit {
        limit.check(client).map_err(Refusal::RateLimited)?;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(Refusal::Deny(Deny::Method));
    }
    if has_body(req) {
        return Err(Refusal::Deny(Deny::Body));
    }
    // hyper holds HTTP/1 heads to this itself (answering `431`); h2 header
    // lists are bounded only in bytes.
    if req.headers().len() > snap.config.server.max_headers {
        return Err(Refusal::Deny(Deny::HeadTooLarge));
    }
    let uri = req.uri();
    if req.version() < Version::HTTP_2 {
        if uri.scheme().is_some() || uri.authority().is_some() {
            return Err(Refusal::Deny(Deny::Target));
        }
    } else if !matches!(uri.scheme_str(), Some("https" | "http")) {
        return Err(Refusal::Deny(Deny::Malformed));
    }
    uri.path_and_query().map(|p| p.as_str()).ok_or(Refusal::Deny(Deny::Target))
}

/// Why `preflight` refused a request.
pub(crate) enum Refusal {
    Deny(Deny),
    RateLimited(std::time::Duration),
}

impl Refusal {
    pub(crate) fn answer(self) -> (Response<Body>, Outcome) {
        match self {
            Refusal::Deny(d) => (response::error(d.status()), Outcome::Denied(d)),
            Refusal::RateLimited(wait) => (response::too_many_requests(wait), Outcome::Denied(Deny::RateLimit)),
        }
    }
}

/// A request has a body if it says so or sends one.
fn has_body(req: &Request<Incoming>) -> bool {
    announces_body(req.headers()) || !req.body().is_end_stream() || req.extensions().get::<SentBody>().is_some()
}

fn announces_body(h: &http::HeaderMap) -> bool {
    h.contains_key(TRANSFER_ENCODING) || h.get_all(CONTENT_LENGTH).iter().any(|v| v.as_bytes() != b"0")
}

/// Marks an h2 request that sent DATA (see [`h2_await_end`]).
#[derive(Clone, Copy)]
struct SentBody;

/// An h2 GET may end with an empty DATA frame carrying END_STREAM instead
/// of END_STREAM on its HEADERS; some fetchers do that. Reads up to that
/// end, within the head deadline (the request is not complete before it
/// ends). A request that sends data, trailers, or does not end in time is
/// marked as having a body, which `preflight` refuses.
pub(crate) async fn h2_await_end(snap: &Snapshot, req: &mut Request<Incoming>) {
    use http_body_util::BodyExt as _;
    if req.version() != Version::HTTP_2 || req.body().is_end_stream() || announces_body(req.headers()) {
        return;
    }
    let within = snap.config.server.header_read_timeout;
    let ended = tokio::time::timeout(within, async {
        loop {
            match req.body_mut().frame().await {
                None => return true,
                Some(Ok(frame)) if frame.data_ref().is_some_and(|d| d.is_empty()) => continue,
                Some(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    if !ended {
        req.extensions_mut().insert(SentBody);
    }
}

/// The host name a request is addressed to, without port (`None` unless
/// `read`, when only its presence is checked). HTTP/1.1 requires exactly one
/// Host header; h2 carries it in `:authority`.
pub(crate) fn request_host(req: &Request<Incoming>, read: bool) -> Result<Option<&str>, ()> {
    if req.version() >= Version::HTTP_2 {
        // Parsing the authority costs ~400 instructions: only when read.
        return Ok(if read { req.uri().host().map(host_name) } else { None });
    }
    let mut hosts = req.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), None) if !read => Ok(None),
        (Some(h), None) => h.to_str().map(|h| Some(host_name(h))).map_err(|_| ()),
        (None, None) if req.version() == Version::HTTP_10 => Ok(None),
        _ => Err(()),
    }
}

/// Hands the access log a record of what happened; it is formatted and
/// written on the log thread (`accesslog`).
pub(crate) fn access_log(
    snap: &Snapshot,
    client: IpAddr,
    req: &Request<Incoming>,
    resp: &Response<Body>,
    outcome: &Outcome,
    started: Instant,
    took: Duration,
) {
    if !accesslog::enabled() {
        return;
    }
    let deny = match outcome {
        Outcome::Denied(d) => d.as_str(),
        _ => "",
    };
    accesslog::submit(!deny.is_empty(), snap.config.log.denied_lines_per_second, || {
        let target = req.uri().path_and_query().map_or("", |p| p.as_str());
        let (issuer, doc, cache, target) = match outcome {
            Outcome::Served { names, kind, cache } => {
                (names.issuer, kind.as_str(), cache.as_str(), names.target(target))
            }
            Outcome::Failed { names, kind } => (names.issuer, kind.as_str(), "error", names.target(target)),
            Outcome::Denied(_) => ("", "", "", accesslog::Target::raw(target.as_bytes())),
            Outcome::Redirect => ("", "", "redirect", accesslog::Target::raw(target.as_bytes())),
            Outcome::Challenge => ("", "", "acme-challenge", accesslog::Target::raw(target.as_bytes())),
        };
        accesslog::Record {
            at: started.checked_add(took).unwrap_or(started),
            client,
            method: req.method().clone(),
            target,
            version: req.version(),
            status: resp.status().as_u16(),
            bytes: if req.method() == Method::HEAD { 0 } else { resp.body().size_hint().exact().unwrap_or(0) },
            duration_us: took.as_micros() as u64,
            issuer,
            doc,
            cache,
            deny,
        }
    });
}
