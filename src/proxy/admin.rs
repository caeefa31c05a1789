//! The admin listener: liveness and readiness for orchestrators, metrics,
//! and the operator's status page (`/`, `/status.json`; see
//! [`status`](crate::proxy::status)). Never public.
//!
//! `/healthz` says the process is alive. `/readyz` says whether it should get
//! traffic: the configuration is loaded, the public listener accepts, and
//! every listed document can be served (fetched, or restored from the
//! persisted cache). Its JSON body names whatever is not ready, and reports
//! issuer-guard findings.

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

use crate::documents::catalog::DocKind;
use crate::documents::validate::Facts;
use crate::proxy::state::{Shared, Snapshot};
use crate::proxy::status;
use crate::telemetry::metrics::{
    unix_seconds, DocumentLabels, FetchLabels, HostLabels, Metrics, NamespaceLabels, NodeLabels, SourceLabels,
};

/// Answers one admin request.
pub(crate) fn route(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "method_not_allowed"}));
    }
    match req.uri().path() {
        "/healthz" => json_response(StatusCode::OK, &json!({"status": "ok"})),
        "/" => status_page(shared),
        "/status.json" => {
            let status = status::gather(shared);
            json_response(StatusCode::OK, &serde_json::to_value(&status).unwrap_or_default())
        }
        "/metrics" => {
            let text = shared.metrics.encode(|m| fill_state(shared, m));
            let mut resp = Response::new(Full::new(Bytes::from(text)));
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(crate::telemetry::metrics::CONTENT_TYPE));
            resp
        }
        "/readyz" => {
            let (ready, body) = readiness(shared);
            let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            json_response(status, &body)
        }
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
    }
}

/// Whether the proxy should receive traffic, and the details.
pub fn readiness(shared: &Shared) -> (bool, serde_json::Value) {
    let snap = shared.snapshot();
    let listening = shared.is_listening();
    let mut not_ready = Vec::new();
    let mut mismatches = Vec::new();
    let mut served = 0usize;
    for doc in &snap.docs {
        let issuer = &snap.issuers[doc.issuer].config;
        let path = &doc.slot.key.path;
        if let Some(msg) = doc.slot.mismatch() {
            mismatches.push(json!({"issuer": issuer.name, "path": path.as_ref(), "strict": issuer.strict_issuer, "message": msg.to_string()}));
        }
        if doc.slot.entry().is_some() {
            served += 1;
        } else {
            let why = match doc.slot.last_error() {
                Some(e) => format!("not fetched yet: {e}"),
                None => "not fetched yet".to_string(),
            };
            not_ready.push(json!({"issuer": issuer.name, "path": path.as_ref(), "reason": why}));
        }
    }
    if !listening {
        not_ready.push(json!({"reason": "public listener is not accepting"}));
    }
    let mut certificates = serde_json::Map::new();
    if let Some(tls) = &shared.tls {
        if let Err(why) = tls.ready() {
            not_ready.push(json!({"reason": format!("tls: {why}")}));
        }
        for (host, not_after) in tls.expiry().iter() {
            certificates.insert(host.clone(), json!(humantime::format_rfc3339_seconds(*not_after).to_string()));
        }
    }
    let ready = not_ready.is_empty();
    let body = json!({
        "ready": ready,
        "config": snap.config.source.display().to_string(),
        "listening": listening,
        "documents": {"total": snap.docs.len(), "servable": served},
        "not_ready": not_ready,
        "issuer_mismatch": mismatches,
        "certificates": certificates,
        "upstreams": upstream_nodes(&snap),
    });
    (ready, body)
}

/// Each issuer's nodes and how each last answered. No credential is part
/// of a node's state.
fn upstream_nodes(snap: &Snapshot) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for issuer in &snap.issuers {
        for node in issuer.upstream.nodes() {
            let (state, error, at) = match &node.last {
                Some(l) => (l.outcome, l.error.clone(), Some(humantime::format_rfc3339_seconds(l.at).to_string())),
                None => ("unknown", None, None),
            };
            out.push(json!({
                "issuer": issuer.config.name,
                "node": node.origin,
                "state": state,
                "error": error,
                "since": at,
                "preferred": node.preferred,
            }));
        }
    }
    out
}

/// Sets the gauges that describe current state, from the live snapshot.
fn fill_state(shared: &Shared, m: &Metrics) {
    let snap = shared.snapshot();
    let now = std::time::Instant::now();
    for doc in &snap.docs {
        let issuer = snap.issuers[doc.issuer].config.name.clone();
        let labels =
            DocumentLabels { issuer: issuer.clone(), document: doc.kind.as_str(), namespace: doc.namespace.clone() };
        let ns = NamespaceLabels { issuer, namespace: doc.namespace.clone() };
        if let Some(entry) = doc.slot.entry() {
            m.document_age.get_or_create(&labels).set(now.saturating_duration_since(entry.fetched).as_secs_f64());
            m.document_stale.get_or_create(&labels).set(i64::from(now >= entry.fresh_until()));
            if let Facts::Keys { count, .. } = entry.facts {
                m.jwks_keys.get_or_create(&ns).set(count as i64);
                m.jwks_last_change.get_or_create(&ns).set(doc.slot.changed.get() as i64);
            }
        }
        if doc.kind == DocKind::Discovery {
            m.issuer_mismatch.get_or_create(&ns).set(i64::from(doc.slot.mismatch().is_some()));
        }
        for (i, tally) in doc.fetched_by.iter().enumerate() {
            let Some((at, _)) = tally.last() else { continue };
            let labels = FetchLabels {
                issuer: labels.issuer.clone(),
                document: labels.document,
                namespace: labels.namespace.clone(),
                source: snap.ranges.source_name(i).to_string(),
            };
            // Documents sharing labels (aliases) show the latest fetch.
            let gauge = m.source_last_fetch.get_or_create(&labels);
            gauge.set(gauge.get().max(unix_seconds(at)));
        }
    }
    for issuer in &snap.issuers {
        for (i, node) in issuer.upstream.nodes().into_iter().enumerate() {
            if let Some(last) = node.last {
                // The node's place in the list: addresses never become labels.
                let labels = NodeLabels { issuer: issuer.config.name.clone(), node: i.to_string() };
                m.upstream_node_up.get_or_create(&labels).set(i64::from(last.outcome == "ok"));
            }
        }
    }
    if let Some(tls) = &shared.tls {
        for (host, not_after) in tls.expiry().iter() {
            m.certificate_expiry.get_or_create(&HostLabels { host: host.clone() }).set(unix_seconds(*not_after));
        }
    }
    for s in &snap.ranges.sources {
        let labels = SourceLabels { source: s.config.name.clone() };
        m.range_prefixes.get_or_create(&labels).set(s.prefixes.load().len() as i64);
        m.range_last_refresh.get_or_create(&labels).set(s.loaded_at.load(std::sync::atomic::Ordering::Relaxed) as i64);
    }
}

/// The status page, under a policy that lets nothing load or run.
fn status_page(shared: &Shared) -> Response<Full<Bytes>> {
    let page = status::html::render(&status::gather(shared));
    let mut resp = Response::new(Full::new(Bytes::from(page)));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(csp) = HeaderValue::from_str(status::html::content_security_policy()) {
        h.insert(CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

pub(crate) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
