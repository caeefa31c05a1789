//! `POST /refresh` on the admin listener: refetch every document (or one
//! issuer's, `?issuer=NAME`) now, whatever its freshness — the emergency
//! key rotation, when the old key must leave the published JWKS at once.
//!
//! The answer is `200` with JSON naming each document and whether it
//! `changed`, stayed `unchanged` or `failed` (a failure keeps the good
//! document serving). Concurrent calls coalesce: a call waits for the round
//! running when it arrived and then shares the next round, so a burst of
//! calls costs the issuer at most two rounds. Rounds are rate limited
//! ([`ROUND_BURST`], then one per [`ROUND_PERIOD`]), so a script in a loop
//! can never become an issuer flood; past the limit the answer is `429`.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::header::{ALLOW, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::documents::cache::Refreshed;
use crate::documents::catalog::DocKind;
use crate::proxy::admin::json_response;
use crate::proxy::state::Shared;

/// The admin path.
pub const PATH: &str = "/refresh";

/// Rounds that may start back to back: an operator retrying, a runbook
/// refreshing each issuer in turn.
const ROUND_BURST: u32 = 5;
/// Then one round per this: each round is one issuer request per document.
const ROUND_PERIOD: Duration = Duration::from_secs(2);

/// What one round found, per document.
#[derive(Debug)]
struct Report {
    /// The round's `?issuer=`, `None` for every issuer.
    scope: Option<String>,
    documents: Vec<Outcome>,
}

#[derive(Debug)]
struct Outcome {
    issuer: String,
    path: String,
    document: DocKind,
    result: Refreshed,
}

/// A finished round: its number (from [`Refresher::started`]) and report.
#[derive(Debug)]
struct Round {
    number: u64,
    report: Arc<Report>,
}

/// The coalescing and the rate limit, one per admin listener.
pub struct Refresher {
    /// Held for a whole round, by the round's own task; the last finished
    /// round and its number.
    last: Arc<tokio::sync::Mutex<Option<Round>>>,
    /// Rounds started so far.
    started: AtomicU64,
    limiter: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher").field("started", &self.started).finish()
    }
}

impl Default for Refresher {
    fn default() -> Self {
        let quota = Quota::with_period(ROUND_PERIOD)
            .expect("a non-zero period")
            .allow_burst(NonZeroU32::new(ROUND_BURST).expect("a non-zero burst"));
        Refresher {
            last: Arc::new(tokio::sync::Mutex::new(None)),
            started: AtomicU64::new(0),
            limiter: RateLimiter::direct(quota),
        }
    }
}

/// Answers a request for [`PATH`].
pub async fn serve<B>(shared: &Shared, refresher: &Refresher, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        let mut resp = json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "method_not_allowed"}));
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    // A browser sends Origin with every cross-site POST: a web page an
    // operator opens must not be able to start rounds on the admin port.
    // `wif-proxy refresh` and curl send none.
    if req.headers().contains_key(http::header::ORIGIN) {
        return json_response(
            StatusCode::FORBIDDEN,
            &json!({"error": "cross_origin", "message": "POST /refresh is not for browsers"}),
        );
    }
    let scope = match scope(req.uri().query()) {
        Ok(s) => s,
        Err(message) => {
            return json_response(StatusCode::BAD_REQUEST, &json!({"error": "bad_query", "message": message}))
        }
    };
    let snap = shared.snapshot();
    if let Some(name) = &scope {
        if !snap.issuers.iter().any(|i| i.config.name == *name) {
            let names: Vec<&str> = snap.issuers.iter().map(|i| i.config.name.as_str()).collect();
            return json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "unknown_issuer", "issuer": name, "issuers": names}),
            );
        }
    }
    let arrived = refresher.started.load(Ordering::Acquire);
    let mut last = Arc::clone(&refresher.last).lock_owned().await;
    // A round that started after this call arrived, for every issuer or for
    // this one, has just finished: its results are as fresh as our own.
    if let Some(Round { number, report }) = last.as_ref() {
        if *number > arrived && (report.scope.is_none() || report.scope == scope) {
            return answer(report, scope.as_deref(), true);
        }
    }
    if let Err(not_until) = refresher.limiter.check() {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        let mut resp = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"error": "rate_limited", "retry_after_seconds": secs}),
        );
        resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        return resp;
    }
    let round = refresher.started.fetch_add(1, Ordering::AcqRel) + 1;
    // The configuration as it is now: a reload may have come while this
    // call waited for the round before it.
    let snap = shared.snapshot();
    // The round is its own task, holding the lock to the end: a caller that
    // hangs up leaves neither a round half done nor the next call free to
    // start one beside it, and its report still serves those who waited.
    let task = {
        let scope = scope.clone();
        tokio::spawn(async move {
            let results = snap.refresh(scope.as_deref()).await;
            let documents = results
                .into_iter()
                .map(|(doc, result)| Outcome {
                    issuer: snap.issuers[doc.issuer].config.name.clone(),
                    path: doc.slot.key.path.to_string(),
                    document: doc.kind,
                    result,
                })
                .collect();
            let report = Arc::new(Report { scope, documents });
            let (changed, failed) = (report.count("changed"), report.count("failed"));
            let issuer = report.scope.as_deref().unwrap_or("*");
            tracing::info!(issuer, changed, failed, "refresh: documents refetched");
            *last = Some(Round { number: round, report: Arc::clone(&report) });
            report
        })
    };
    match task.await {
        Ok(report) => answer(&report, scope.as_deref(), false),
        Err(_) => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": "refresh_failed"})),
    }
}

impl Report {
    fn count(&self, word: &str) -> usize {
        self.documents.iter().filter(|d| d.result.as_str() == word).count()
    }
}

/// `?issuer=NAME` or nothing; the raw query, never decoded (issuer names
/// need no escaping).
fn scope(query: Option<&str>) -> Result<Option<String>, &'static str> {
    match query {
        None | Some("") => Ok(None),
        Some(q) => match q.strip_prefix("issuer=") {
            Some(name) if !name.is_empty() && !name.contains(['&', '=']) => Ok(Some(name.to_string())),
            _ => Err("the only parameter is issuer=NAME"),
        },
    }
}

/// The JSON answer: `report`'s documents of `scope`.
fn answer(report: &Report, scope: Option<&str>, coalesced: bool) -> Response<Full<Bytes>> {
    let docs: Vec<&Outcome> = report.documents.iter().filter(|d| scope.is_none_or(|s| d.issuer == s)).collect();
    let count = |word: &str| docs.iter().filter(|d| d.result.as_str() == word).count();
    let documents: Vec<serde_json::Value> = docs
        .iter()
        .map(|d| {
            let mut v = json!({"issuer": d.issuer, "path": d.path, "document": d.document.as_str(), "result": d.result.as_str()});
            match &d.result {
                Refreshed::Changed { added, removed } if d.document == DocKind::Keys => {
                    v["kids_added"] = json!(added);
                    v["kids_removed"] = json!(removed);
                }
                Refreshed::Failed(e) => v["error"] = json!(e.to_string()),
                _ => {}
            }
            v
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": scope,
            "coalesced": coalesced,
            "changed": count("changed"),
            "unchanged": count("unchanged"),
            "failed": count("failed"),
            "documents": documents,
        }),
    )
}
