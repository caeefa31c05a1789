//! Every response the public listener sends is built here: a validated issuer
//! document with our own headers, or one of a fixed set of error bodies. No
//! issuer header or error body ever passes through.

use std::time::Instant;

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, AGE, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, ETAG, RETRY_AFTER,
};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::documents::cache::Entry;

/// The body type of every response.
pub use crate::edge::http::Body;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const X_CONTENT_TYPE_OPTIONS: HeaderName = HeaderName::from_static("x-content-type-options");

pub use crate::telemetry::events::Deny;

// The answer to each refusal lives here, with the answers.
impl Deny {
    pub fn status(self) -> StatusCode {
        match self {
            Deny::Method => StatusCode::METHOD_NOT_ALLOWED,
            Deny::Body | Deny::Host | Deny::Malformed => StatusCode::BAD_REQUEST,
            Deny::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Deny::Target | Deny::Path => StatusCode::NOT_FOUND,
            Deny::Capacity => StatusCode::SERVICE_UNAVAILABLE,
            Deny::Ip => StatusCode::FORBIDDEN,
            Deny::RateLimit => StatusCode::TOO_MANY_REQUESTS,
            // Connection-level: closed, never answered; for completeness.
            Deny::ConnLimit => StatusCode::SERVICE_UNAVAILABLE,
            Deny::ProxyProtocol => StatusCode::BAD_REQUEST,
        }
    }
}

/// The fixed body for an error status.
pub fn error_body(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => r#"{"error":"bad_request","message":"only GET and HEAD requests without a body are served"}"#,
        403 => r#"{"error":"forbidden","message":"this client address is not allowed"}"#,
        404 => r#"{"error":"not_found","message":"this proxy publishes only OIDC discovery documents and key sets"}"#,
        405 => r#"{"error":"method_not_allowed","message":"only GET and HEAD are allowed"}"#,
        429 => r#"{"error":"too_many_requests","message":"slow down"}"#,
        431 => r#"{"error":"request_header_fields_too_large","message":"the request head is too large"}"#,
        502 => r#"{"error":"bad_gateway","message":"the issuer did not return a valid document"}"#,
        503 => r#"{"error":"unavailable","message":"the issuer is unavailable and no cached document may be served"}"#,
        504 => r#"{"error":"gateway_timeout","message":"the issuer did not answer in time"}"#,
        308 => r#"{"error":"moved","message":"use https"}"#,
        _ => r#"{"error":"internal_error"}"#,
    }
}

/// Header fields a response can carry: ours (at most six), HSTS, and the
/// `Date` hyper adds on h2. Allocated once at that size: a map that grows
/// on its seventh field (HSTS, or hyper's `Date` after our six) reallocates
/// and rehashes, ~1,250 instructions a request.
const HEADER_ROOM: usize = 8;

/// A response with `body` and room for every header it will get.
fn with_room(body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body));
    *resp.headers_mut() = http::HeaderMap::with_capacity(HEADER_ROOM);
    resp
}

/// One of our fixed error responses: its header block is built once per
/// status and cloned (two small copies, no hashing).
pub fn error(status: StatusCode) -> Response<Body> {
    static BLOCKS: std::sync::LazyLock<Vec<(StatusCode, http::HeaderMap)>> = std::sync::LazyLock::new(|| {
        [400, 403, 404, 405, 429, 431, 500, 502, 503, 504, 308]
            .into_iter()
            .filter_map(|s| StatusCode::from_u16(s).ok())
            .map(|s| (s, error_headers(s)))
            .collect()
    });
    let mut resp = Response::new(Full::new(Bytes::from_static(error_body(status).as_bytes())));
    *resp.status_mut() = status;
    *resp.headers_mut() = match BLOCKS.iter().find(|(s, _)| *s == status) {
        Some((_, block)) => block.clone(),
        None => error_headers(status),
    };
    resp
}

fn error_headers(status: StatusCode) -> http::HeaderMap {
    let body = error_body(status);
    let mut h = http::HeaderMap::with_capacity(HEADER_ROOM);
    h.insert(CONTENT_TYPE, JSON);
    h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(CACHE_CONTROL, NO_STORE);
    h.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            h.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        StatusCode::BAD_REQUEST => {
            // The request may have had a body we did not read: do not try to
            // find the next request in what follows.
            h.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
            h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    h
}

/// A plain-text 200 (ACME HTTP-01 key authorizations).
pub fn text(body: String) -> Response<Body> {
    let len = body.len();
    let mut resp = with_room(Bytes::from(body));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(len));
    resp.headers_mut().insert(CACHE_CONTROL, NO_STORE);
    resp
}

/// 429 with `Retry-After` in whole seconds (at least 1).
pub fn too_many_requests(wait: std::time::Duration) -> Response<Body> {
    let mut resp = error(StatusCode::TOO_MANY_REQUESTS);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
}

/// A cached document, or 304 when the client already has it.
pub fn document(entry: &Entry, now: Instant, not_modified: bool) -> Response<Body> {
    let left = entry.fresh_until().saturating_duration_since(now).as_secs();
    let age = now.saturating_duration_since(entry.fetched).as_secs();
    let headers = RECENT.with(|r| r.borrow_mut().block(entry, left, age, not_modified));
    let mut resp = Response::new(Full::new(if not_modified { Bytes::new() } else { entry.body.clone() }));
    if not_modified {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
    }
    *resp.headers_mut() = headers;
    resp
}

/// The header block of an answer from `entry`, built (the values from `recent`).
fn document_headers(entry: &Entry, cc: HeaderValue, age: HeaderValue, not_modified: bool) -> http::HeaderMap {
    let mut h = http::HeaderMap::with_capacity(HEADER_ROOM);
    if !not_modified {
        h.insert(CONTENT_TYPE, JSON);
        h.insert(CONTENT_LENGTH, entry.content_length.clone());
    }
    h.insert(CACHE_CONTROL, cc);
    h.insert(AGE, age);
    h.insert(ETAG, entry.etag.clone());
    h.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    h
}

fn format_cache_control(secs: u64) -> HeaderValue {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(b"public, max-age=");
    v.extend_from_slice(itoa::Buffer::new().format(secs).as_bytes());
    HeaderValue::from_maybe_shared(Bytes::from(v)).expect("digits are a valid header value")
}

/// `Cache-Control` and `Age` change once a second, and every answer from
/// one entry in that second carries the same header block: each worker
/// thread keeps the blocks it built last and clones one whose every value
/// matches (two small copies, no hashing), and the values themselves, so a
/// block for a new second clones shared values instead of formatting them.
struct Recent {
    max_age: Values,
    age: Values,
    blocks: [Option<Block>; 4],
    /// The slot the next new block takes.
    next: usize,
}

/// A header block and everything it was built from: equal inputs, equal
/// block, whichever entry they come from.
struct Block {
    left: u64,
    age: u64,
    not_modified: bool,
    etag: HeaderValue,
    length: HeaderValue,
    headers: http::HeaderMap,
}

impl Recent {
    fn block(&mut self, entry: &Entry, left: u64, age: u64, not_modified: bool) -> http::HeaderMap {
        let same = |b: &&Block| {
            b.left == left
                && b.age == age
                && b.not_modified == not_modified
                && b.etag == entry.etag
                && b.length == entry.content_length
        };
        if let Some(b) = self.blocks.iter().flatten().find(same) {
            return b.headers.clone();
        }
        let cc = self.max_age.get(left, format_cache_control);
        let age_value = self.age.get(age, HeaderValue::from);
        let headers = document_headers(entry, cc, age_value, not_modified);
        self.blocks[self.next] = Some(Block {
            left,
            age,
            not_modified,
            etag: entry.etag.clone(),
            length: entry.content_length.clone(),
            headers: headers.clone(),
        });
        self.next = (self.next + 1) % self.blocks.len();
        headers
    }
}

/// Values by the number in them, a few at a time (several documents, or
/// answers straddling a second).
struct Values([(u64, Option<HeaderValue>); 4]);

impl Values {
    fn get(&mut self, n: u64, make: impl FnOnce(u64) -> HeaderValue) -> HeaderValue {
        let slot = &mut self.0[(n % 4) as usize];
        match slot {
            (m, Some(v)) if *m == n => v.clone(),
            _ => {
                let v = make(n);
                *slot = (n, Some(v.clone()));
                v
            }
        }
    }
}

thread_local! {
    static RECENT: std::cell::RefCell<Recent> = const {
        std::cell::RefCell::new(Recent {
            max_age: Values([const { (0, None) }; 4]),
            age: Values([const { (0, None) }; 4]),
            blocks: [const { None }; 4],
            next: 0,
        })
    };
}

/// Does `If-None-Match` name this entity tag? (Weak comparison, RFC 9110 13.1.2.)
pub fn if_none_match(value: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(value) = value.to_str() else { return false };
    let ours = etag.as_bytes();
    value.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).as_bytes() == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional() {
        let etag = HeaderValue::from_static("\"abc\"");
        for yes in ["\"abc\"", "W/\"abc\"", "\"x\", \"abc\"", "*"] {
            assert!(if_none_match(&HeaderValue::from_static(yes), &etag), "{yes}");
        }
        for no in ["\"ab\"", "abc", ""] {
            assert!(!if_none_match(&HeaderValue::from_static(no), &etag), "{no}");
        }
    }

    #[test]
    fn recent_values_are_built_once_per_number() {
        let mut v = Values([const { (0, None) }; 4]);
        let mut built = 0;
        let mut make = |n: u64| {
            built += 1;
            format_cache_control(n)
        };
        assert_eq!(v.get(300, &mut make), "public, max-age=300");
        assert_eq!(v.get(300, &mut make), "public, max-age=300");
        assert_eq!(v.get(299, &mut make), "public, max-age=299");
        assert_eq!(v.get(304, &mut make), "public, max-age=304", "same slot as 300");
        assert_eq!(v.get(0, &mut make), "public, max-age=0", "an empty slot is never taken for 0");
        assert_eq!(built, 4);
    }

    /// Answers from six documents, in turns over more documents than a
    /// thread keeps blocks for, and as 304s, carry each its own headers:
    /// exactly what building the block afresh gives.
    #[test]
    fn header_blocks_are_reused_only_for_equal_inputs() {
        use crate::documents::validate::Facts;
        let now = Instant::now();
        let entries: Vec<Entry> = (0..6)
            .map(|i| {
                let body = Bytes::from(format!("{{\"keys\":[{}]}}", "1,".repeat(i) + "1"));
                let facts = Facts::Keys { count: 0, kids: Vec::new() };
                Entry::new(body, std::time::Duration::from_secs(300), facts, now, std::time::SystemTime::now())
            })
            .collect();
        for round in 0..3 {
            for e in &entries {
                for not_modified in [false, true] {
                    let resp = document(e, now, not_modified);
                    let left = e.fresh_until().saturating_duration_since(now).as_secs();
                    let fresh = document_headers(e, format_cache_control(left), HeaderValue::from(0u64), not_modified);
                    assert_eq!(resp.headers(), &fresh, "round {round}");
                    assert_eq!(resp.headers()[ETAG], e.etag);
                    assert_eq!(resp.status() == StatusCode::NOT_MODIFIED, not_modified);
                }
            }
        }
    }

    #[test]
    fn error_bodies_are_json() {
        for s in [400u16, 403, 404, 405, 429, 502, 503, 504, 500] {
            let v: serde_json::Value =
                serde_json::from_str(error_body(StatusCode::from_u16(s).expect("status"))).expect("json");
            assert!(v.get("error").is_some());
        }
    }
}
