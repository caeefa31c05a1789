//! The allowlist per kind, host routing, our response headers, and the
//! mapping of every upstream failure to our own fixed errors.

use std::time::Duration;

use crate::common::*;

const LEAKS: &[&str] = &["vault", "secret", "10.9.8.7", "sealed", "x-vault", "set-cookie"];

/// Nothing of the issuer's answer (other than a validated document) may show.
fn assert_no_leak(r: &Resp) {
    for (n, v) in &r.headers {
        assert!(
            [
                "content-type",
                "content-length",
                "cache-control",
                "x-content-type-options",
                "date",
                "age",
                "etag",
                "allow",
                "connection",
                "retry-after"
            ]
            .contains(&n.as_str()),
            "unexpected response header {n}: {v}"
        );
        for leak in LEAKS {
            assert!(!v.to_ascii_lowercase().contains(leak), "header {n}: {v} leaks {leak}");
        }
    }
}

#[tokio::test]
async fn serves_plugin_wif_documents_byte_for_byte_with_our_headers() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config("", &vault_issuer("vault", &si.origin(), &["", "ns1/team-a"]))).await;
    for path in
        [root_keys().to_string(), root_discovery().to_string(), ns_keys("ns1/team-a"), ns_discovery("ns1/team-a")]
    {
        let r = p.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let expected = if path.ends_with("keys") { standin::jwks("k1") } else { standin::discovery(PUBLIC_URL, &path) };
        assert_eq!(r.text(), expected, "{path}: body must be byte-identical");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("content-length"), Some(expected.len().to_string().as_str()));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(r.header("cache-control").is_some_and(|v| v.starts_with("public, max-age=")));
        assert!(r.header("server").is_none());
        assert_no_leak(&r);
    }
    for r in si.requests() {
        assert_fixed_request(&r, si.addr);
    }
    // Not configured: another namespace, the parent namespace.
    for path in [ns_keys("ns1"), ns_keys("ns2"), ns_keys("ns1/team-a/x")] {
        assert_eq!(p.get(&path).await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn every_kind_has_exactly_its_paths() {
    let si = StandIn::start().await;
    let o = si.origin();
    let issuers = format!(
        "[[issuer]]\nname = \"idt\"\nkind = \"vault-identity\"\nupstream = \"{o}\"\nnamespaces = [\"\", \"ns1\"]\n\
         [[issuer]]\nname = \"prov\"\nkind = \"vault-oidc-provider\"\nupstream = \"{o}\"\nproviders = [\"default\", \"my-app\"]\n\
         [[issuer]]\nname = \"custom\"\nkind = \"custom\"\nupstream = \"{o}\"\npaths = [\"/tenant/.well-known/openid-configuration\", \"/tenant/jwks.json\"]\n\
         [[issuer]]\nname = \"spire\"\nkind = \"spire\"\nupstream = \"{o}\"\nhosts = [\"spire.example.com\"]\n"
    );
    let p = TestProxy::start(&config("", &issuers)).await;
    let served = [
        "/v1/identity/oidc/.well-known/keys",
        "/v1/identity/oidc/.well-known/openid-configuration",
        "/v1/ns1/identity/oidc/.well-known/keys",
        "/v1/identity/oidc/provider/default/.well-known/keys",
        "/v1/identity/oidc/provider/my-app/.well-known/openid-configuration",
        "/tenant/jwks.json",
    ];
    for path in served {
        assert_eq!(p.get(path).await.status, 200, "{path}");
    }
    let custom_discovery = p.get("/tenant/.well-known/openid-configuration").await;
    assert_eq!(custom_discovery.status, 200);
    let denied = [
        "/v1/identity/oidc/plugins/.well-known/keys",
        "/v1/identity/oidc/provider/other/.well-known/keys",
        "/v1/identity/oidc/provider/default/authorize",
        "/v1/identity/oidc/provider/default/userinfo",
        "/v1/identity/oidc/provider/default/token",
        "/v1/identity/oidc/key/named",
        "/v1/identity/oidc/token/role",
        "/tenant/other",
        "/keys",
        "/.well-known/openid-configuration",
    ];
    for path in denied {
        assert_eq!(p.get(path).await.status, 404, "{path}");
    }
    // SPIRE is bound to its host: served there, and only there.
    let spire = request(p.addr, "GET", "/keys", &[]).await;
    assert_eq!(spire.status, 404, "Host wif.example.com must not reach the spire issuer");
    let mut req = b"GET /keys HTTP/1.1\r\nHost: SPIRE.example.com:443\r\nConnection: close\r\n\r\n".to_vec();
    let r = parse_responses(&raw(p.addr, &req).await, false).remove(0);
    assert_eq!(r.status, 200, "host match is case-insensitive and ignores the port");
    req = b"GET /keys HTTP/1.1\r\nHost: other.example.com\r\nConnection: close\r\n\r\n".to_vec();
    assert_eq!(parse_responses(&raw(p.addr, &req).await, false).remove(0).status, 404);
    let h2 = h2_requests(
        p.addr,
        vec![http::Request::get("https://spire.example.com/keys").body(Default::default()).unwrap()],
    )
    .await;
    assert_eq!(h2[0].as_ref().expect("h2").status, 200, "h2 :authority routes too");
    for r in si.requests() {
        // SPIRE's provider is sent the public host it must publish.
        if r.target == "/keys" || r.target == "/.well-known/openid-configuration" {
            assert_fixed_request_to(&r, "wif.example.com");
        } else {
            assert_fixed_request(&r, si.addr);
        }
    }
    // Everything configured is prefetched; nothing else may be asked for.
    let allowed: Vec<String> = p.shared.snapshot().routes.routes.iter().map(|r| r.path.to_string()).collect();
    assert_eq!(allowed.len(), 12);
    assert!(si.requests().iter().all(|r| allowed.contains(&r.target)), "{:?}", si.requests());
}

#[tokio::test]
async fn wildcard_namespaces_are_strict() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config("", &vault_issuer("vault", &si.origin(), &["*"]))).await;
    for path in [root_keys().to_string(), ns_keys("a"), ns_keys("a/b/c"), ns_discovery("team_1/x-y")] {
        assert_eq!(p.get(&path).await.status, 200, "{path}");
    }
    for path in [
        ns_keys("sys"),
        ns_keys("a/auth"),
        ns_keys("a/../b"),
        ns_keys("a%2fb"),
        ns_keys("1/2/3/4/5/6/7/8/9"),
        ns_keys(".hidden"),
        ns_keys(&"x".repeat(65)),
    ] {
        assert_eq!(p.get(&path).await.status, 404, "{path}");
    }
    let targets: Vec<String> = si.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(targets.len(), 4, "{targets:?}");
}

#[tokio::test]
async fn head_and_h2_serve_the_same_document() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config("", &vault_issuer("vault", &si.origin(), &[""]))).await;
    let get = p.get(root_keys()).await;
    let head = request(p.addr, "HEAD", root_keys(), &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), get.header("content-length"));
    assert_eq!(head.header("etag"), get.header("etag"));
    let h2 = h2_requests(p.addr, vec![h2_get(root_keys())]).await.remove(0).expect("h2");
    assert_eq!(h2.status, 200);
    assert_eq!(&h2.body[..], &get.body[..]);
    assert_eq!(si.count(root_keys()), 1, "all three were served from one fetch");
}

/// Each failure class on a cold cache → our status and fixed body; nothing
/// of the issuer's answer leaks.
#[tokio::test]
async fn upstream_failures_map_to_fixed_errors() {
    let si = StandIn::start().await;
    let cases: Vec<(&str, Behavior, u16)> = vec![
        ("sealed", Behavior::sealed(), 503),
        ("standby", Behavior::standby(), 502),
        (
            "error",
            Behavior::Status {
                status: 500,
                body: r#"{"errors":["internal error at 10.9.8.7"]}"#.into(),
                location: None,
            },
            502,
        ),
        (
            "forbidden",
            Behavior::Status { status: 403, body: r#"{"errors":["permission denied"]}"#.into(), location: None },
            502,
        ),
        ("missing", Behavior::Status { status: 404, body: r#"{"errors":[]}"#.into(), location: None }, 404),
        ("slow", Behavior::Slow(Duration::from_millis(1500), Box::new(Behavior::Vault)), 504),
        ("malformed", Behavior::Body { body: "{\"keys\":[{\"kty\":\"RSA\"}".into(), cache_control: None }, 502),
        ("html", Behavior::Body { body: "<html>vault secret</html>".into(), cache_control: None }, 502),
        ("nokty", Behavior::Body { body: r#"{"keys":[{"kid":"a"}]}"#.into(), cache_control: None }, 502),
        (
            "oversized",
            Behavior::Body { body: format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(5000)), cache_control: None },
            502,
        ),
        ("dropped", Behavior::Drop, 502),
    ];
    let ns: Vec<&str> = cases.iter().map(|c| c.0).collect();
    for (name, b, _) in &cases {
        si.set(&ns_keys(name), b.clone());
    }
    let issuer = vault_issuer("vault", &si.origin(), &ns)
        .replace("upstream_timeout = \"1s\"", "upstream_timeout = \"1s\"\nmax_document_bytes = 4096");
    let p = TestProxy::start(&config("", &issuer)).await;
    // Let the start-up prefetch settle so each case is answered from its first failure.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    for (name, _, status) in &cases {
        let r = p.get(&ns_keys(name)).await;
        assert_eq!(r.status, *status, "{name}: {}", r.text());
        let expected = wif_proxy::error_body(http::StatusCode::from_u16(*status).unwrap());
        assert_eq!(r.text(), expected, "{name}: only our fixed body");
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_no_leak(&r);
    }
    // Connection refused: an upstream nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let p2 = TestProxy::start(&config("", &vault_issuer("vault", &format!("http://{closed}"), &[""]))).await;
    let r = p2.get(root_keys()).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(!r.text().contains(&closed.port().to_string()));
    for r in si.requests() {
        assert_fixed_request(&r, si.addr);
    }
}

#[tokio::test]
async fn admin_health_and_readiness() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config("", &vault_issuer("vault", &si.origin(), &[""]))).await;
    let h = get(p.admin, "/healthz").await;
    assert_eq!((h.status, h.json()["status"].as_str()), (200, Some("ok")));
    let r = p.wait_ready().await;
    assert_eq!(r.json()["documents"]["servable"], 2);
    // The public listener does not serve admin paths, and vice versa.
    assert_eq!(p.get("/healthz").await.status, 404);
    assert_eq!(get(p.admin, root_keys()).await.status, 404);
}

#[tokio::test]
async fn not_ready_names_the_missing_document() {
    let si = StandIn::start().await;
    si.set(&ns_keys("gone"), Behavior::Status { status: 404, body: String::new(), location: None });
    let p = TestProxy::start(&config("", &vault_issuer("vault", &si.origin(), &["gone"]))).await;
    // Poll until the start-up fetch has been answered 404 (never ready).
    let mut reasons = String::new();
    for _ in 0..60 {
        let r = get(p.admin, "/readyz").await;
        assert_eq!(r.status, 503);
        let v = r.json();
        assert_eq!(v["ready"], false);
        reasons = v["not_ready"].to_string();
        if reasons.contains("404") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reasons.contains(&ns_keys("gone")) && reasons.contains("404"), "{reasons}");
}

#[tokio::test]
async fn https_upstreams_need_the_right_ca_and_client_certificate() {
    let pki = pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let files = pki.write(dir.path());
    let plain_tls = StandIn::start_tls(pki.server_config(false)).await;
    let mtls = StandIn::start_tls(pki.server_config(true)).await;
    let issuer = |name: &str, si: &StandIn, ns: &str, extra: &str| {
        format!("{}{extra}\n", vault_issuer(name, &si.origin(), &[ns]))
    };
    let ca = format!("upstream_ca = \"{}\"", files.ca.display());
    let client = format!(
        "{ca}\nupstream_client_cert = \"{}\"\nupstream_client_key = \"{}\"",
        files.client_cert.display(),
        files.client_key.display()
    );
    let issuers = [
        issuer("tls-ca", &plain_tls, "a", &ca),
        issuer("tls-system-roots", &plain_tls, "b", ""),
        issuer("mtls-no-client-cert", &mtls, "c", &ca),
        issuer("mtls", &mtls, "d", &client),
    ]
    .concat();
    let p = TestProxy::start(&config("", &issuers)).await;
    assert_eq!(p.get(&ns_keys("a")).await.status, 200, "custom CA bundle");
    let r = p.get(&ns_keys("b")).await;
    assert_eq!(r.status, 502, "an unknown CA is not trusted");
    assert_no_leak(&r);
    assert_eq!(p.get(&ns_keys("c")).await.status, 502, "the upstream requires a client certificate");
    assert_eq!(p.get(&ns_keys("d")).await.status, 200, "client certificate presented");
    assert_eq!(plain_tls.count(&ns_keys("b")), 0, "no request was sent over an untrusted connection");
    for si in [&plain_tls, &mtls] {
        for r in si.requests() {
            assert_fixed_request(&r, si.addr);
        }
    }
}
