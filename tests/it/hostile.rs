//! The hostile-request corpus. Each entry is raw bytes on a fresh connection
//! (or an h2 request); the decisive assertion is on what the issuer stand-in
//! received: only byte-exact allowlisted GETs with our fixed header set.

use std::collections::BTreeSet;

use crate::common::*;

const K: &str = "/v1/identity/oidc/plugins/.well-known/keys";
const D: &str = "/v1/identity/oidc/plugins/.well-known/openid-configuration";
const NK: &str = "/v1/ns1/team-a/identity/oidc/plugins/.well-known/keys";

/// Targets that must never match, whatever their encoding trick.
fn denied_targets() -> Vec<String> {
    let mut t: Vec<String> = [
        // traversal and dot segments
        "/v1/identity/oidc/plugins/.well-known/../.well-known/keys",
        "/v1/sys/../identity/oidc/plugins/.well-known/keys",
        "/v1/identity/oidc/plugins/.well-known/./keys",
        "/./v1/identity/oidc/plugins/.well-known/keys",
        "/v1/identity/oidc/plugins/.well-known/keys/..",
        "/v1/identity/oidc/plugins/.well-known/keys/.",
        "/v1/identity/oidc/plugins/.well-known/keys/../../../../sys/health",
        "/../v1/identity/oidc/plugins/.well-known/keys",
        "/v1/ns1/../identity/oidc/plugins/.well-known/keys",
        "/v1/ns1/team-a/../../identity/oidc/plugins/.well-known/keys",
        // percent-encoding in every form
        "/v1/identity/oidc/plugins/.well-known/%2e%2e/.well-known/keys",
        "/v1/identity/oidc/plugins/.well-known/%2E%2E/.well-known/keys",
        "/v1/identity/oidc/plugins/%2ewell-known/keys",
        "/v1/identity/oidc/plugins/.well-known%2fkeys",
        "/v1/identity/oidc/plugins/.well-known%2Fkeys",
        "/v1%2fidentity/oidc/plugins/.well-known/keys",
        "/v1/identity/oidc/plugins/.well-known/%6beys",
        "/v1/identity/oidc/plugins/.well-known/keys%00",
        "/v1/identity/oidc/plugins/.well-known/keys%0a",
        "/v1/identity/oidc/plugins/.well-known/keys%0d%0aX-Vault-Token:%20x",
        "/v1/identity/oidc/plugins/.well-known/keys%20",
        "/v1/identity/oidc/plugins/.well-known/keys%09",
        "/v1/identity/oidc/plugins/.well-known/%252e%252e/keys",
        "/v1/identity/oidc/plugins/.well-known/..%2fkeys",
        "/v1/identity/oidc/plugins/.well-known/..%5ckeys",
        "/v1/identity/oidc/plugins/.well-known/%c0%ae%c0%ae/keys",
        "/v1/identity/oidc/plugins/.well-known/%u002e%u002e/keys",
        "/v1/ns1%2fteam-a/identity/oidc/plugins/.well-known/keys",
        "/v1/sys%2fhealth",
        "/%76%31/identity/oidc/plugins/.well-known/keys",
        // path parameters
        "/v1/identity/oidc/plugins/.well-known/keys;x=1",
        "/v1/identity/oidc/plugins/.well-known/keys;",
        "/v1;/identity/oidc/plugins/.well-known/keys",
        "/v1/identity/oidc/plugins/.well-known/..;/keys",
        "/v1/sys/health;/../identity/oidc/plugins/.well-known/keys",
        // double slashes
        "//v1/identity/oidc/plugins/.well-known/keys",
        "/v1//identity/oidc/plugins/.well-known/keys",
        "/v1/identity/oidc/plugins/.well-known//keys",
        "/v1/identity/oidc/plugins//.well-known/keys",
        "/v1/ns1//team-a/identity/oidc/plugins/.well-known/keys",
        // case
        "/V1/identity/oidc/plugins/.well-known/keys",
        "/v1/IDENTITY/oidc/plugins/.well-known/keys",
        "/v1/identity/oidc/plugins/.well-known/KEYS",
        "/v1/identity/oidc/plugins/.Well-Known/keys",
        "/v1/NS1/team-a/identity/oidc/plugins/.well-known/keys",
        // trailing slash and suffixes
        "/v1/identity/oidc/plugins/.well-known/keys/",
        "/v1/identity/oidc/plugins/.well-known/openid-configuration/",
        "/v1/identity/oidc/plugins/.well-known/keys.json",
        "/v1/identity/oidc/plugins/.well-known/keysx",
        "/v1/identity/oidc/plugins/.well-known/keys/extra",
        "/v1/identity/oidc/plugins/.well-known",
        "/v1/identity/oidc/plugins/.well-known/",
        "/v1/identity/oidc/plugins",
        // queries
        "/v1/identity/oidc/plugins/.well-known/keys?",
        "/v1/identity/oidc/plugins/.well-known/keys?help",
        "/v1/identity/oidc/plugins/.well-known/keys?help=1",
        "/v1/identity/oidc/plugins/.well-known/keys?list=true",
        "/v1/identity/oidc/plugins/.well-known/keys?x=1&y=2",
        "/v1/identity/oidc/plugins/.well-known/keys?%00",
        "/v1/identity/oidc/plugins/.well-known/openid-configuration?warn=1",
        "/v1/identity/oidc/plugins/.well-known/keys?/../../sys/health",
        // the rest of Vault
        "/v1/sys/health",
        "/v1/sys/seal-status",
        "/v1/sys/leader",
        "/v1/sys/internal/ui/mounts",
        "/v1/sys/metrics",
        "/v1/sys/pprof/",
        "/v1/auth/token/lookup-self",
        "/v1/secret/data/app",
        "/v1/identity/oidc/.well-known/keys",
        "/v1/identity/oidc/key/default",
        "/v1/identity/oidc/plugins/.well-known/openid-configuration.json",
        "/v1/ns2/identity/oidc/plugins/.well-known/keys",
        "/v1/ns1/identity/oidc/plugins/.well-known/keys",
        "/ui/",
        "/",
        "/.well-known/openid-configuration",
        "/keys",
        "/robots.txt",
        "/v1/identity/oidc/plugins/.well-known/keys\\..\\..\\sys\\health",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    t.push(format!("/{}", "a/".repeat(2000)));
    t
}

fn req(method: &str, target: &str, extra: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: wif.example.com\r\n{extra}Connection: close\r\n\r\n").into_bytes()
}

/// (label, raw bytes, expected statuses in order; empty = "no 2xx at all").
fn corpus() -> Vec<(String, Vec<u8>, Vec<u16>)> {
    let mut c: Vec<(String, Vec<u8>, Vec<u16>)> = Vec::new();
    for t in denied_targets() {
        c.push((format!("target {}", &t[..t.len().min(80)]), req("GET", &t, ""), vec![]));
    }
    for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "LIST", "PROPFIND", "FOO", "get", "Get"] {
        c.push((format!("method {m}"), req(m, K, ""), vec![]));
    }
    c.push(("CONNECT".into(), b"CONNECT 127.0.0.1:8200 HTTP/1.1\r\nHost: 127.0.0.1:8200\r\n\r\n".to_vec(), vec![]));
    c.push(("OPTIONS *".into(), b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), vec![]));
    for (label, target) in [
        ("absolute-form http", format!("http://127.0.0.1:8200{K}")),
        ("absolute-form https", format!("https://wif.example.com{K}")),
        ("absolute-form other host", format!("http://vault.internal{K}")),
        ("authority-form", "127.0.0.1:8200".to_string()),
        ("asterisk", "*".to_string()),
        ("relative", "v1/identity/oidc/plugins/.well-known/keys".to_string()),
    ] {
        c.push((label.into(), req("GET", &target, ""), vec![]));
    }
    // Bodies and smuggling: refused, never forwarded.
    for (label, extra_and_body) in [
        ("content-length body", "Content-Length: 5\r\n\r\nhello".to_string()),
        ("chunked body", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_string()),
        ("empty chunked", "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_string()),
        ("CL and TE", "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_string()),
        ("TE obfuscated", "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n".to_string()),
        ("TE space", "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n".to_string()),
        ("duplicate CL", "Content-Length: 0\r\nContent-Length: 5\r\n\r\nhello".to_string()),
        ("negative CL", "Content-Length: -1\r\n\r\n".to_string()),
        (
            "smuggled request in body",
            "Content-Length: 44\r\n\r\nGET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        ),
        (
            "smuggled via TE",
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        ),
    ] {
        let raw = format!("GET {K} HTTP/1.1\r\nHost: wif.example.com\r\n{extra_and_body}");
        c.push((label.into(), raw.into_bytes(), vec![]));
    }
    // Headers a client might hope to pass through: served, never forwarded.
    for h in [
        "X-Vault-Token: hvs.secret",
        "X-Vault-Namespace: sys",
        "X-Vault-Request: true",
        "X-Vault-Wrap-TTL: 60",
        "X-Original-URL: /v1/sys/health",
        "X-Rewrite-URL: /v1/sys/health",
        "X-Forwarded-For: 10.0.0.1",
        "X-Forwarded-Host: vault.internal",
        "X-Forwarded-Proto: http",
        "Forwarded: for=10.0.0.1;host=vault.internal",
        "Authorization: Bearer hvs.secret",
        "Cookie: token=secret",
        "X-HTTP-Method-Override: DELETE",
        "Accept-Encoding: gzip",
        "Range: bytes=0-10",
        "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT",
        "Max-Forwards: 0",
        "Expect: 100-continue",
        "Upgrade: websocket",
        "Content-Length: 0",
    ] {
        c.push((format!("header {h}"), req("GET", K, &format!("{h}\r\n")), vec![200]));
    }
    c.push((
        "Host spoof".into(),
        format!("GET {K} HTTP/1.1\r\nHost: 127.0.0.1:8200\r\nConnection: close\r\n\r\n").into_bytes(),
        vec![200],
    ));
    c.push(("no Host".into(), format!("GET {K} HTTP/1.1\r\nConnection: close\r\n\r\n").into_bytes(), vec![400]));
    c.push((
        "two Hosts".into(),
        format!("GET {K} HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n").into_bytes(),
        vec![400],
    ));
    c.push(("HTTP/1.0 no Host".into(), format!("GET {K} HTTP/1.0\r\n\r\n").into_bytes(), vec![200]));
    c.push(("HTTP/0.9".into(), format!("GET {K}\r\n\r\n").into_bytes(), vec![]));
    c.push(("HTTP/2.0 on h1".into(), format!("GET {K} HTTP/2.0\r\nHost: x\r\n\r\n").into_bytes(), vec![]));
    c.push(("HTTP/1.2".into(), format!("GET {K} HTTP/1.2\r\nHost: x\r\n\r\n").into_bytes(), vec![]));
    c.push(("space in target".into(), b"GET /v1/identity oidc HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), vec![]));
    c.push(("NUL in target".into(), format!("GET {K}\0 HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(), vec![]));
    c.push(("CR in target".into(), format!("GET {K}\rX HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(), vec![]));
    c.push((
        "obs-fold".into(),
        format!("GET {K} HTTP/1.1\r\nHost: x\r\n X-Vault-Token: y\r\n\r\n").into_bytes(),
        vec![],
    ));
    c.push((
        "header without colon".into(),
        format!("GET {K} HTTP/1.1\r\nHost: x\r\nX-Vault-Token\r\n\r\n").into_bytes(),
        vec![],
    ));
    c.push(("huge header".into(), req("GET", K, &format!("X-Pad: {}\r\n", "a".repeat(20_000))), vec![]));
    c.push((
        "too many headers".into(),
        req("GET", K, &(0..100).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()),
        vec![],
    ));
    c.push(("huge target".into(), req("GET", &format!("{K}{}", "x".repeat(20_000)), ""), vec![]));
    c.push((
        "h2c upgrade".into(),
        req(
            "GET",
            K,
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
        ),
        vec![200],
    ));
    c.push((
        "pipelined allowed then denied".into(),
        format!("GET {K} HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\nGET {D} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .into_bytes(),
        vec![200, 404, 200],
    ));
    c.push((
        "pipelined after a body".into(),
        format!(
            "GET {K} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .into_bytes(),
        vec![400],
    ));
    c.push(("fragment".into(), req("GET", &format!("{K}#frag"), ""), vec![200]));
    c.push(("nested ok".into(), req("GET", NK, ""), vec![200]));
    c
}

#[tokio::test]
async fn hostile_requests_never_reach_the_issuer() {
    let si = StandIn::start().await;
    // Short freshness so the issuer is asked often while the corpus runs.
    let cfg = config(
        "",
        &format!(
            "[cache]\nmin_ttl = \"100ms\"\nmax_ttl = \"100ms\"\n{}",
            vault_issuer("vault", &si.origin(), &["", "ns1/team-a"])
        ),
    );
    let p = TestProxy::start(&cfg).await;
    let corpus = corpus();
    assert!(corpus.len() >= 150, "corpus has {} entries", corpus.len());
    let addr = p.addr;
    let results = futures_join(corpus.iter().map(|(_, bytes, _)| {
        let bytes = bytes.clone();
        async move { raw(addr, &bytes).await }
    }))
    .await;
    let mut failures = Vec::new();
    for ((label, _, expected), out) in corpus.iter().zip(results) {
        let head_only = false;
        let statuses: Vec<u16> = parse_responses(&out, head_only).iter().map(|r| r.status).collect();
        let ok = if expected.is_empty() {
            statuses.iter().all(|s| !(200..300).contains(s) && *s != 101)
        } else {
            statuses == *expected
        };
        if !ok {
            failures.push(format!("{label}: got {statuses:?}, expected {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{} corpus entries misbehaved:\n{}", failures.len(), failures.join("\n"));
    assert_issuer_saw_only_allowlisted(&si);
}

#[tokio::test]
async fn hostile_requests_over_h2() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config("", &vault_issuer("vault", &si.origin(), &["", "ns1/team-a"]))).await;
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for t in denied_targets() {
        // Targets that are not valid URIs cannot even be expressed by a client.
        if let Ok(r) = http::Request::get(format!("http://wif.example.com{t}")).body(Default::default()) {
            requests.push(r);
            expected.push(false);
        }
    }
    for (n, v) in [
        ("x-vault-token", "hvs.secret"),
        ("x-vault-namespace", "sys"),
        ("x-original-url", "/v1/sys/health"),
        ("authorization", "Bearer x"),
        ("cookie", "a=b"),
        ("host", "vault.internal"),
    ] {
        requests.push(
            http::Request::get(format!("http://wif.example.com{K}")).header(n, v).body(Default::default()).unwrap(),
        );
        expected.push(true);
    }
    for m in ["POST", "PUT", "DELETE", "OPTIONS", "TRACE", "LIST"] {
        requests.push(
            http::Request::builder()
                .method(m)
                .uri(format!("http://wif.example.com{K}"))
                .body(Default::default())
                .unwrap(),
        );
        expected.push(false);
    }
    let n = requests.len();
    assert!(n > 80, "h2 corpus has {n}");
    let results = h2_requests(p.addr, requests).await;
    for (i, (r, ok)) in results.iter().zip(&expected).enumerate() {
        match r {
            Ok(r) => assert_eq!((200..300).contains(&r.status), *ok, "h2 request {i}: status {}", r.status),
            Err(e) => assert!(!ok, "h2 request {i} failed: {e}"),
        }
    }
    assert_issuer_saw_only_allowlisted(&si);
}

#[tokio::test]
async fn h2_requests_with_a_body_are_refused() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config("", &vault_issuer("vault", &si.origin(), &[""]))).await;
    let stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://wif.example.com{K}"))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"payload")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    // Only the start-up prefetch reached the issuer, without any body.
    assert!(si.requests().iter().all(|r| r.target == K || r.target == D));
    for r in si.requests() {
        assert_fixed_request(&r, si.addr);
    }
}

fn assert_issuer_saw_only_allowlisted(si: &StandIn) {
    let allowed: BTreeSet<&str> =
        [K, D, NK, "/v1/ns1/team-a/identity/oidc/plugins/.well-known/openid-configuration"].into_iter().collect();
    let seen = si.requests();
    assert!(!seen.is_empty(), "the allowed requests should have reached the issuer");
    for r in &seen {
        assert!(allowed.contains(r.target.as_str()), "issuer received a non-allowlisted target: {r:?}");
        assert_fixed_request(r, si.addr);
    }
}

async fn futures_join<F: std::future::Future<Output = Vec<u8>> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<Vec<u8>> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
