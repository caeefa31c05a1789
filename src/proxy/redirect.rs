//! The plain-HTTP listener beside TLS: ACME HTTP-01 answers, and redirects
//! to https for allowlisted paths. It serves no documents.

use std::net::IpAddr;
use std::time::Instant;

use http::header::LOCATION;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::edge::listener::ConnInfo;
use crate::proxy::allowlist::Lookup;
use crate::proxy::handler::{access_log, close_after_body, h2_await_end, preflight, record, request_host, Outcome};
use crate::proxy::response::{self, Body, Deny};
use crate::proxy::state::{Shared, Snapshot};

/// Answers a request on the plain-HTTP listener that sits beside TLS: ACME
/// HTTP-01 challenges, a 308 to https for allowlisted paths (built from the
/// issuer's public URL, never from the request's Host), 404 otherwise.
pub async fn serve_redirect(shared: &Shared, conn: &ConnInfo, mut req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let snap = shared.snapshot();
    h2_await_end(&snap, &mut req).await;
    let (mut resp, outcome) = redirect_answer(shared, &snap, conn.client_ip, &req);
    close_after_body(&mut resp, &outcome);
    let took = started.elapsed();
    record(&snap.metrics, &outcome, took);
    if snap.config.log.access {
        access_log(&snap, conn.client_ip, &req, &resp, &outcome, started, took);
    }
    resp
}

fn redirect_answer(
    shared: &Shared,
    snap: &Snapshot,
    client: IpAddr,
    req: &Request<Incoming>,
) -> (Response<Body>, Outcome) {
    let deny = |d: Deny| (response::error(d.status()), Outcome::Denied(d));
    // This listener serves no documents, so the source-address allowlist
    // does not apply (ACME HTTP-01 validations must pass).
    let target = match preflight(snap, client, false, req) {
        Ok(t) => t,
        Err(refusal) => return refusal.answer(),
    };
    if let Some(token) = target.strip_prefix("/.well-known/acme-challenge/") {
        if let Some(key_auth) = shared.tls.as_ref().and_then(|t| t.http01_key_auth(token)) {
            return (response::text(key_auth), Outcome::Challenge);
        }
        return deny(Deny::Path);
    }
    let Ok(host) = request_host(req, true) else {
        return deny(Deny::Host);
    };
    let issuer = match snap.routes.lookup(host, target) {
        Some(Lookup::Static(i)) => snap.routes.routes[i].issuer,
        Some(Lookup::Dynamic { issuer, .. }) => issuer,
        None => return deny(Deny::Path),
    };
    let issuer = &snap.issuers[issuer].config;
    let location = format!("{}{target}", issuer.public_url.replacen("http://", "https://", 1));
    let Ok(location) = HeaderValue::from_str(&location) else {
        return deny(Deny::Target);
    };
    let mut resp = response::error(StatusCode::PERMANENT_REDIRECT);
    resp.headers_mut().insert(LOCATION, location);
    (resp, Outcome::Redirect)
}
