//! How the issuer is reached (issue 17): SPIRE's provider and the Host it
//! checks, a Kubernetes API server that wants a bearer token, several
//! nodes with failover, and a unix-socket upstream. Real sockets, stand-ins
//! from `common::standin`.

use std::path::Path;
use std::time::Duration;

use crate::common::pki::Pki;
use crate::common::standin::{self, Recorded, KUBERNETES_401};
use crate::common::*;

/// Client headers that must never reach an issuer.
const HOSTILE: [(&str, &str); 6] = [
    ("Authorization", "Bearer client-token"),
    ("Cookie", "session=client"),
    ("Impersonate-User", "system:admin"),
    ("Impersonate-Group", "system:masters"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Proto", "gopher"),
];

fn header<'a>(r: &'a Recorded, name: &str) -> Option<&'a str> {
    r.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// The header names a request carried, sorted.
fn names(r: &Recorded) -> Vec<&str> {
    let mut names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names
}

/// A SPIRE `[[issuer]]` in front of `upstream`.
fn spire(upstream: &str, extra: &str) -> String {
    config(
        "",
        &format!(
            "[[issuer]]\nname = \"spire\"\nkind = \"spire\"\nupstream = \"{upstream}\"\nupstream_timeout = \"1s\"\nstrict_issuer = true\n{extra}"
        ),
    )
}

#[tokio::test]
async fn spire_sees_the_public_host_and_publishes_the_public_url() {
    let si = StandIn::start().await;
    si.spire_domains(&["wif.example.com"]);
    let p = TestProxy::start(&spire(&si.origin(), "")).await;
    p.wait_ready().await;
    let d = request(p.addr, "GET", "/.well-known/openid-configuration", &HOSTILE).await;
    assert_eq!(d.status, 200, "{}", d.text());
    assert_eq!(d.json()["issuer"], PUBLIC_URL);
    assert_eq!(d.json()["jwks_uri"], format!("{PUBLIC_URL}/keys"));
    assert_eq!(request(p.addr, "GET", "/keys", &HOSTILE).await.status, 200);
    assert!(si.total() >= 2);
    for r in si.requests() {
        assert_eq!(names(&r), ["accept", "host", "user-agent"], "{r:?}");
        assert_eq!(header(&r, "host"), Some("wif.example.com"), "the public host, by default for spire: {r:?}");
    }
}

#[tokio::test]
async fn spire_refuses_the_internal_name_and_the_client_never_sees_why() {
    let si = StandIn::start().await;
    si.spire_domains(&["wif.example.com"]);
    // As before upstream_host: the upstream's own name is sent.
    let p = TestProxy::start(&spire(&si.origin(), &format!("upstream_host = \"{}\"\n", si.addr))).await;
    let r = p.get("/.well-known/openid-configuration").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(!r.text().contains("not allowed") && !r.text().contains("domain"), "{}", r.text());
    let ready = get(p.admin, "/readyz").await;
    assert!(ready.text().contains("answered 400"), "{}", ready.text());
    assert!(si.requests().iter().all(|r| header(r, "host") == Some(&si.addr.to_string())));
}

#[tokio::test]
async fn forwarding_headers_come_from_the_public_url_never_from_the_client() {
    let si = StandIn::start().await;
    si.spire_domains(&["wif.example.com"]);
    let extra = "upstream_host = \"spire-internal\"\nupstream_forwarded_headers = true\n";
    let p = TestProxy::start(&spire(&si.origin(), extra)).await;
    p.wait_ready().await;
    let d = request(p.addr, "GET", "/.well-known/openid-configuration", &HOSTILE).await;
    assert_eq!(d.json()["issuer"], PUBLIC_URL, "the provider read X-Forwarded-Host");
    for r in si.requests() {
        assert_eq!(names(&r), ["accept", "host", "user-agent", "x-forwarded-host", "x-forwarded-proto"], "{r:?}");
        assert_eq!(header(&r, "host"), Some("spire-internal"));
        assert_eq!(header(&r, "x-forwarded-host"), Some("wif.example.com"));
        assert_eq!(header(&r, "x-forwarded-proto"), Some("https"));
    }
}

#[tokio::test]
async fn tls_verifies_the_upstreams_own_name_whatever_host_is_sent() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let files = pki.write(dir.path());
    let si = StandIn::start_tls(pki.server_config(false)).await;
    si.spire_domains(&["wif.example.com"]);
    let origin = format!("https://localhost:{}", si.addr.port());
    let p = TestProxy::start(&spire(&origin, &format!("upstream_ca = \"{}\"\n", files.ca.display()))).await;
    p.wait_ready().await;
    assert!(si.requests().iter().all(|r| header(r, "host") == Some("wif.example.com")));
    let names = si.server_names();
    assert!(!names.is_empty() && names.iter().all(|n| n.as_deref() == Some("localhost")), "SNI: {names:?}");
}

#[tokio::test]
async fn a_unix_socket_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("spire-oidc-server.sock");
    let si = StandIn::start_unix(&sock).await;
    si.spire_domains(&["wif.example.com"]);
    let p = TestProxy::start(&spire(&format!("unix:{}", sock.display()), "")).await;
    p.wait_ready().await;
    let d = p.get("/.well-known/openid-configuration").await;
    assert_eq!(d.json()["issuer"], PUBLIC_URL, "{}", d.text());
    assert_eq!(p.get("/keys").await.body, standin::jwks("k1").as_bytes());
    assert_eq!(p.get("/v1/sys/health").await.status, 404);
    let seen: Vec<String> = si.requests().iter().map(|r| r.target.clone()).collect();
    assert!(seen.iter().all(|t| t == "/.well-known/openid-configuration" || t == "/keys"), "{seen:?}");
    for r in si.requests() {
        assert_eq!((r.method.as_str(), header(&r, "host")), ("GET", Some("wif.example.com")), "{r:?}");
    }
    let ready = get(p.admin, "/readyz").await.json();
    assert_eq!(ready["upstreams"][0]["node"], format!("unix:{}", sock.display()));
    assert_eq!(ready["upstreams"][0]["state"], "ok");
}

// ---------------------------------------------------------------------------
// A Kubernetes API server.

const K8S_PUBLIC: &str = "https://wif.example.com";

fn k8s_discovery() -> String {
    format!(
        r#"{{"issuer":"{K8S_PUBLIC}","jwks_uri":"{K8S_PUBLIC}/openid/v1/jwks","response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"]}}"#
    )
}

/// An API server stand-in over TLS with the token `token`, and the proxy's
/// configuration in front of it (token file `dir/token`).
async fn api_server(dir: &Path, token: &str, cache: &str) -> (StandIn, String) {
    let pki = Pki::new();
    let files = pki.write(dir);
    let si = StandIn::start_tls(pki.server_config(false)).await;
    si.require_bearer(token);
    si.set("/.well-known/openid-configuration", Behavior::Body { body: k8s_discovery(), cache_control: None });
    si.set(
        "/openid/v1/jwks",
        Behavior::Typed { body: standin::jwks("k8s"), content_type: "application/jwk-set+json".into() },
    );
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    let text = config(
        "",
        &format!(
            "{cache}[[issuer]]\nname = \"k8s\"\nkind = \"kubernetes\"\nupstream = \"https://localhost:{}\"\nupstream_ca = \"{}\"\nupstream_bearer_token_file = \"{}\"\nupstream_timeout = \"1s\"\nstrict_issuer = true\n",
            si.addr.port(),
            files.ca.display(),
            dir.join("token").display()
        ),
    );
    (si, text)
}

/// Replaces the token file the way the kubelet does: a new file renamed in.
fn rotate(dir: &Path, token: &str) {
    std::fs::write(dir.join("token.new"), token).unwrap();
    std::fs::rename(dir.join("token.new"), dir.join("token")).unwrap();
}

#[tokio::test]
async fn a_kubernetes_api_server_with_a_bearer_token_and_its_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let cache = "[cache]\nmin_ttl = \"100ms\"\nmax_ttl = \"100ms\"\nmax_stale = \"1h\"\n";
    let (si, text) = api_server(dir.path(), "token-1", cache).await;
    let p = TestProxy::start(&text).await;
    p.wait_ready().await;
    let d = request(p.addr, "GET", "/.well-known/openid-configuration", &HOSTILE).await;
    assert_eq!((d.status, d.text()), (200, k8s_discovery()));
    let k = request(p.addr, "GET", "/openid/v1/jwks", &HOSTILE).await;
    assert_eq!((k.status, k.body.as_slice()), (200, standin::jwks("k8s").as_bytes()));
    assert_eq!(k.header("content-type"), Some("application/json"), "our fixed type, whatever the issuer said");
    for r in si.requests() {
        assert_eq!(names(&r), ["accept", "authorization", "host", "user-agent"], "{r:?}");
        assert_eq!(header(&r, "authorization"), Some("Bearer token-1"), "the file's token, never the client's");
        assert_eq!(header(&r, "accept"), Some("application/json, application/jwk-set+json"));
        assert_eq!(header(&r, "host"), Some(format!("localhost:{}", si.addr.port()).as_str()));
        assert!(r.target == "/.well-known/openid-configuration" || r.target == "/openid/v1/jwks", "{r:?}");
    }

    // The token rotates; the server accepts only the new one from now on.
    rotate(dir.path(), "token-2");
    si.require_bearer("token-2");
    let mut rotated = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(p.get("/openid/v1/jwks").await.status, 200);
        if si.requests().iter().any(|r| header(r, "authorization") == Some("Bearer token-2")) {
            rotated = true;
            break;
        }
    }
    assert!(rotated, "the new token was never sent");

    // Revoked: 401 is an issuer failure; the last good documents keep serving.
    si.require_bearer("token-3");
    let before = si.total();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let d = p.get("/.well-known/openid-configuration").await;
        assert_eq!((d.status, d.text()), (200, k8s_discovery()), "stale-if-error");
        if si.total() > before + 1 {
            break;
        }
    }
    assert!(si.total() > before + 1, "the issuer was asked again");
    let ready = get(p.admin, "/readyz").await.text();
    let metrics = get(p.admin, "/metrics").await.text();
    for secret in ["token-1", "token-2", "token-3"] {
        assert!(!ready.contains(secret) && !metrics.contains(secret), "{secret} leaked");
    }
    assert!(ready.contains("answered 401"), "{ready}");
    assert!(
        metrics.contains("wif_proxy_upstream_requests_total{issuer=\"k8s\",outcome=\"unauthorized\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_401_without_a_good_document_is_our_fixed_error() {
    let dir = tempfile::tempdir().unwrap();
    let (si, text) = api_server(dir.path(), "right", "").await;
    rotate(dir.path(), "wrong");
    let p = TestProxy::start(&text).await;
    for path in ["/.well-known/openid-configuration", "/openid/v1/jwks"] {
        let r = request(p.addr, "GET", path, &HOSTILE).await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert_eq!(r.text(), wif_proxy::error_body(http::StatusCode::BAD_GATEWAY), "our fixed error");
        assert!(!r.text().contains("Status") && !r.text().contains("Unauthorized"));
        assert!(r.header("www-authenticate").is_none());
    }
    assert!(si.requests().iter().all(|r| header(r, "authorization") == Some("Bearer wrong")));
    assert!(KUBERNETES_401.contains("\"code\":401"));
}

// ---------------------------------------------------------------------------
// Several nodes.

/// A Vault issuer over `nodes`, documents expiring at once and never
/// served stale, so every client request after expiry needs a fetch.
fn cluster(nodes: &[String], timeout: &str) -> String {
    let list: Vec<String> = nodes.iter().map(|n| format!("\"{n}\"")).collect();
    config(
        "",
        &format!(
            "[cache]\nmin_ttl = \"100ms\"\nmax_ttl = \"100ms\"\nmax_stale = \"0s\"\n[[issuer]]\nname = \"v\"\nkind = \"vault-plugin-wif\"\nupstream = [{}]\nupstream_timeout = \"{timeout}\"\n",
            list.join(", ")
        ),
    )
}

/// An address nothing listens on.
async fn dead_origin() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

fn node_states(readyz: &serde_json::Value) -> Vec<(String, String, bool)> {
    readyz["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node"].as_str().unwrap().into(), n["state"].as_str().unwrap().into(), n["preferred"] == true))
        .collect()
}

/// Client requests for a while (documents expire every 100 ms): every one
/// must succeed.
async fn every_request_succeeds(p: &TestProxy, rounds: usize) {
    for i in 0..rounds {
        for path in [root_discovery(), root_keys()] {
            let r = p.get(path).await;
            assert_eq!(r.status, 200, "round {i} {path}: {}", r.text());
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
}

#[tokio::test]
async fn a_dead_a_sealed_and_a_good_node_serve_without_a_failed_request() {
    let dead = dead_origin().await;
    let sealed = StandIn::start().await;
    sealed.set_all(Some(Behavior::sealed()));
    let standby = StandIn::start().await;
    standby.set_all(Some(Behavior::standby()));
    let good = StandIn::start().await;
    let nodes = [dead.clone(), sealed.origin(), standby.origin(), good.origin()];
    let p = TestProxy::start(&cluster(&nodes, "2s")).await;
    p.wait_ready().await;
    every_request_succeeds(&p, 8).await;
    assert!(good.total() >= 6, "documents were fetched again and again: {}", good.total());
    let states = node_states(&get(p.admin, "/readyz").await.json());
    assert_eq!(
        states,
        vec![
            (dead.clone(), "connect".into(), false),
            (sealed.origin(), "unavailable".into(), false),
            (standby.origin(), "redirect".into(), false),
            (good.origin(), "ok".into(), true),
        ]
    );
    // Fetches start with the node that answered: the others were asked only
    // until it was found.
    let (sealed_seen, standby_seen) = (sealed.total(), standby.total());
    assert!(sealed_seen <= 2 && standby_seen <= 2, "{sealed_seen} {standby_seen}");
    for r in good.requests() {
        assert_fixed_request(&r, good.addr);
    }
    let metrics = get(p.admin, "/metrics").await.text();
    // Nodes are labelled by their place in the list, never by address.
    for (node, up) in [(0, 0), (1, 0), (2, 0), (3, 1)] {
        let line = format!("wif_proxy_upstream_node_up{{issuer=\"v\",node=\"{node}\"}} {up}\n");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    assert!(!metrics.contains("127.0.0.1"), "{metrics}");

    // A reload keeps what is known of the nodes: /readyz is unchanged and
    // fetches still start with the good node.
    p.shared.reload().await.expect("reload");
    assert_eq!(node_states(&get(p.admin, "/readyz").await.json()), states, "after a reload");
    every_request_succeeds(&p, 4).await;
    assert_eq!((sealed.total(), standby.total()), (sealed_seen, standby_seen), "a reload sent no fetch back to them");

    // The good node goes down and the sealed one is unsealed.
    good.stop();
    sealed.set_all(None);
    every_request_succeeds(&p, 8).await;
    assert!(sealed.total() >= sealed_seen + 4, "fetches moved to the unsealed node");
    let states = node_states(&get(p.admin, "/readyz").await.json());
    assert_eq!(states[1], (sealed.origin(), "ok".into(), true));
    // Its pooled connection was closed ("error") or it refused ("connect").
    assert!(["error", "connect"].contains(&states[3].1.as_str()) && !states[3].2, "{states:?}");
    assert_eq!(standby.total(), standby_seen, "once unsealed, the standby is not asked");
}

#[tokio::test]
async fn a_hanging_a_resetting_and_a_failing_node_are_skipped_within_the_timeout() {
    let hanging = StandIn::start().await;
    hanging.set_all(Some(Behavior::Slow(Duration::from_secs(30), Box::new(Behavior::Vault))));
    let resetting = StandIn::start().await;
    resetting.set_all(Some(Behavior::Drop));
    let failing = StandIn::start().await;
    failing.set_all(Some(Behavior::Status { status: 500, body: "{\"errors\":[\"internal\"]}".into(), location: None }));
    let good = StandIn::start().await;
    let nodes = [hanging.origin(), resetting.origin(), failing.origin(), good.origin()];
    let p = TestProxy::start(&cluster(&nodes, "2s")).await;
    p.wait_ready().await;
    every_request_succeeds(&p, 4).await;
    let states = node_states(&get(p.admin, "/readyz").await.json());
    let outcomes: Vec<&str> = states.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(outcomes, ["timeout", "error", "status", "ok"], "{states:?}");
    assert!(states[3].2, "the good node is where fetches start");
    assert!(hanging.total() <= 2, "asked only until the good node was found: {}", hanging.total());
    // Every node failing: the client gets our fixed error (within the
    // helper's 5 s read limit: upstream_timeout bounds the whole fetch).
    good.set_all(Some(Behavior::sealed()));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = p.get(root_keys()).await;
    assert!([502, 503, 504].contains(&r.status), "{} {}", r.status, r.text());
    assert!(!r.text().contains("sealed") && !r.text().contains("internal"), "{}", r.text());
}
