//! Fetch accounting by source and the operator status page: which
//! `ip_allow` source fetched which version of each document, in metrics,
//! `/status.json`, the page (rendered by a real headless Chromium) and
//! `wif-proxy status`.
//!
//! Sources are inline CIDRs for loopback addresses: `aws` is 127.0.0.2,
//! `azure` 127.0.0.3; 127.0.0.5 is in no source (`other`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::acme::require;
use crate::common::standin::jwks;
use crate::common::*;

const AWS: &str = "127.0.0.2";
const AZURE: &str = "127.0.0.3";
const GCP: &str = "127.0.0.4";
const UNLISTED: &str = "127.0.0.5";

/// Two sources (and, given, a third that only counts), a Vault issuer, and
/// a cache that refetches a key set within 200 ms of a request.
fn accounting_config(upstream: &str, mode: &str, extra_source: &str) -> String {
    config(
        "",
        &format!(
            "[cache]\nmin_ttl = \"200ms\"\nmax_ttl = \"200ms\"\n\n[ip_allow]\nmode = \"{mode}\"\n\n\
             [[ip_allow.source]]\nname = \"aws\"\ncidrs = [\"{AWS}/32\"]\n\n\
             [[ip_allow.source]]\nname = \"azure\"\ncidrs = [\"{AZURE}/32\"]\n\n{extra_source}\n{}",
            vault_issuer("vault", upstream, &[""])
        ),
    )
}

/// `GET path` from the loopback address `ip`; `None` when the connection is
/// closed without an answer (an enforcing allowlist).
async fn get_from(ip: &str, addr: SocketAddr, path: &str) -> Option<Resp> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: wif.example.com\r\nConnection: close\r\n\r\n");
    let raw = raw_from(Some(ip), addr, req.as_bytes()).await;
    parse_responses(&raw, false).into_iter().next()
}

async fn status_json(admin: SocketAddr) -> Value {
    let r = get(admin, "/status.json").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

/// The status of the root key set.
fn keys_doc(status: &Value) -> &Value {
    let docs = status["issuers"][0]["documents"].as_array().expect("documents");
    docs.iter().find(|d| d["path"] == root_keys()).unwrap_or_else(|| panic!("no key set in {status:#}"))
}

/// One source's row of the root key set.
fn fetch_of<'a>(status: &'a Value, source: &str) -> &'a Value {
    let rows = keys_doc(status)["sources"].as_array().expect("sources");
    rows.iter().find(|r| r["source"] == source).unwrap_or_else(|| panic!("no source {source} in {status:#}"))
}

/// `wif_proxy_source_requests_total` of the root key set for `source`.
fn source_requests(metrics: &str, source: &str) -> Option<u64> {
    let series = format!(
        "wif_proxy_source_requests_total{{issuer=\"vault\",document=\"keys\",namespace=\"root\",source=\"{source}\"}} "
    );
    metrics.lines().find_map(|l| l.strip_prefix(&series)?.parse().ok())
}

fn has_last_fetch(metrics: &str, source: &str) -> bool {
    let series = format!(
        "wif_proxy_source_last_fetch_timestamp_seconds{{issuer=\"vault\",document=\"keys\",namespace=\"root\",source=\"{source}\"}} "
    );
    metrics.lines().any(|l| l.starts_with(&series))
}

/// In every mode, each answered request is counted for the first source
/// containing the client, or `other`; a source with `admit = false` counts
/// but admits nobody (report mode still reports it); enforce mode answers
/// no unlisted client, so nothing is counted for `other` there.
#[tokio::test]
async fn answered_requests_are_attributed_to_their_source_in_every_mode() {
    let issuer = StandIn::start().await;
    let gcp = format!("[[ip_allow.source]]\nname = \"gcp\"\ncidrs = [\"{GCP}/32\"]\nadmit = false\n");
    for mode in ["off", "report", "enforce"] {
        let proxy = TestProxy::start(&accounting_config(&issuer.origin(), mode, &gcp)).await;
        proxy.wait_ready().await;
        for ip in [AWS, AWS, AZURE, GCP, UNLISTED] {
            let r = get_from(ip, proxy.addr, root_keys()).await;
            let answered = r.as_ref().map(|r| r.status);
            let expected = if mode == "enforce" && (ip == GCP || ip == UNLISTED) { None } else { Some(200) };
            assert_eq!(answered, expected, "mode {mode}, client {ip}");
        }
        assert_eq!(get_from(AWS, proxy.addr, root_discovery()).await.map(|r| r.status), Some(200));
        let enforce = mode == "enforce";

        let metrics = get(proxy.admin, "/metrics").await.text();
        let want = |n: u64| if enforce { None } else { Some(n) };
        assert_eq!(source_requests(&metrics, "aws"), Some(2), "mode {mode}:\n{metrics}");
        assert_eq!(source_requests(&metrics, "azure"), Some(1), "mode {mode}");
        assert_eq!(source_requests(&metrics, "gcp").filter(|n| *n > 0), want(1), "mode {mode}");
        assert_eq!(source_requests(&metrics, "other").filter(|n| *n > 0), want(1), "mode {mode}");
        assert!(has_last_fetch(&metrics, "aws") && has_last_fetch(&metrics, "azure"), "mode {mode}:\n{metrics}");
        assert_eq!(has_last_fetch(&metrics, "other"), !enforce, "mode {mode}");
        let discovery = "wif_proxy_source_requests_total{issuer=\"vault\",document=\"discovery\",namespace=\"root\",source=\"aws\"} 1";
        assert!(metrics.contains(discovery), "mode {mode}:\n{metrics}");

        let status = status_json(proxy.admin).await;
        assert_eq!(status["ip_allow"]["mode"], mode);
        let names: Vec<&str> =
            keys_doc(&status)["sources"].as_array().unwrap().iter().map(|r| r["source"].as_str().unwrap()).collect();
        assert_eq!(names, ["aws", "azure", "gcp", "other"], "configuration order, then other");
        for (source, n) in [("aws", 2), ("azure", 1), ("gcp", 1), ("other", 1)] {
            let row = fetch_of(&status, source);
            let n = if enforce && (source == "gcp" || source == "other") { 0 } else { n };
            assert_eq!(row["requests"], n, "mode {mode}: {row}");
            let state = if n == 0 { "never" } else { "current" };
            assert_eq!(row["state"], state, "mode {mode}: {row}");
            if n > 0 {
                assert_eq!(row["key_ids"], serde_json::json!(["k1"]), "mode {mode}: {row}");
                assert_eq!(row["etag"], keys_doc(&status)["etag"], "mode {mode}: {row}");
                assert!(row["last_fetch_age_seconds"].as_u64().is_some_and(|a| a < 60), "mode {mode}: {row}");
            }
        }
        let would_deny = status["ip_allow"]["would_deny"].as_u64().unwrap();
        assert_eq!(would_deny > 0, mode == "report", "mode {mode}: gcp and the unlisted client: {would_deny}");
        let gcp_row = &status["ip_allow"]["sources"][2];
        assert_eq!((gcp_row["name"].as_str(), gcp_row["admit"].as_bool()), (Some("gcp"), Some(false)));
        proxy.stop().await;
    }
}

/// The issuer rotates to a key set whose only key is `kid`; `client` asks
/// until the cache has refetched it. The first request past freshness is
/// served the old set while the refetch runs, so this asks again (bounded).
async fn rotate(issuer: &StandIn, proxy: &TestProxy, kid: &str, client: &str) {
    issuer.set(root_keys(), Behavior::Body { body: jwks(kid), cache_control: Some("max-age=0".into()) });
    let served = format!("\"kid\":\"{kid}\"");
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if get_from(client, proxy.addr, root_keys()).await.expect("answered").text().contains(&served) {
            return;
        }
    }
    panic!("the cache never refetched the rotated key set");
}

/// After the issuer rotates its key and the cache refetches (a 200 ms
/// freshness here), the source that fetched since shows the current key set
/// and the one that did not shows behind, with the ETag and key IDs it has.
#[tokio::test]
async fn after_a_rotation_the_source_that_has_not_fetched_since_is_behind() {
    let issuer = StandIn::start().await;
    let proxy = TestProxy::start(&accounting_config(&issuer.origin(), "report", "")).await;
    proxy.wait_ready().await;
    for ip in [AWS, AZURE] {
        assert!(get_from(ip, proxy.addr, root_keys()).await.expect("answered").text().contains("\"kid\":\"k1\""));
    }
    let before = status_json(proxy.admin).await;
    let old_etag = keys_doc(&before)["etag"].clone();
    assert!(old_etag.is_string(), "{before:#}");
    assert_eq!(fetch_of(&before, "azure")["state"], "current");

    rotate(&issuer, &proxy, "k2", AWS).await;

    let after = status_json(proxy.admin).await;
    let doc = keys_doc(&after);
    assert_eq!(doc["key_ids"], serde_json::json!(["k2"]), "{doc:#}");
    assert_ne!(doc["etag"], old_etag);
    assert!(doc["last_change"].is_string(), "{doc:#}");
    let aws = fetch_of(&after, "aws");
    assert_eq!(
        (&aws["state"], &aws["key_ids"], &aws["etag"]),
        (&"current".into(), &serde_json::json!(["k2"]), &doc["etag"])
    );
    let azure = fetch_of(&after, "azure");
    assert_eq!(azure["state"], "behind", "{azure:#}");
    assert_eq!(azure["key_ids"], serde_json::json!(["k1"]), "what azure still has: {azure:#}");
    assert_eq!(azure["etag"], old_etag);
    assert_eq!(fetch_of(&after, "other")["state"], "never");

    let page = get(proxy.admin, "/").await.text();
    assert!(page.contains("data-source=\"azure\" data-state=\"behind\""), "{page}");
    assert!(page.contains("data-source=\"aws\" data-state=\"current\""), "{page}");

    // Azure fetches again: now every source that fetched is current.
    assert!(get_from(AZURE, proxy.addr, root_keys()).await.expect("answered").text().contains("\"kid\":\"k2\""));
    assert_eq!(fetch_of(&status_json(proxy.admin).await, "azure")["state"], "current");
}

/// A `*`-namespace issuer's documents are shown once fetched, under their
/// own namespace, with the same fetch accounting as listed ones.
#[tokio::test]
async fn wildcard_namespace_documents_are_shown_once_fetched() {
    let issuer = StandIn::start().await;
    let text = config(
        "",
        &format!(
            "[ip_allow]\nmode = \"report\"\n\n[[ip_allow.source]]\nname = \"aws\"\ncidrs = [\"{AWS}/32\"]\n\n{}",
            vault_issuer("vault", &issuer.origin(), &["*"])
        ),
    );
    let proxy = TestProxy::start(&text).await;
    proxy.wait_ready().await;
    let docs = |s: &Value| s["issuers"][0]["documents"].as_array().expect("documents").clone();
    assert!(docs(&status_json(proxy.admin).await).is_empty(), "nothing fetched, nothing shown");
    let path = ns_keys("team-a");
    assert_eq!(get_from(AWS, proxy.addr, &path).await.expect("answered").status, 200);
    let status = status_json(proxy.admin).await;
    let shown = docs(&status);
    assert_eq!(shown.len(), 1, "{status:#}");
    let doc = &shown[0];
    assert_eq!(
        (&doc["path"], &doc["namespace"], &doc["state"]),
        (&path.as_str().into(), &"team-a".into(), &"fresh".into())
    );
    assert_eq!(doc["key_ids"], serde_json::json!(["k1"]));
    let aws = doc["sources"].as_array().unwrap().iter().find(|r| r["source"] == "aws").expect("aws row").clone();
    assert_eq!((&aws["state"], aws["requests"].as_u64()), (&"current".into(), Some(1)), "{aws:#}");
    let page = get(proxy.admin, "/").await.text();
    assert!(page.contains(&path), "{page}");

    // The namespace becomes listed: its document is shown once, not also
    // as a `*` one (the listed document took the slot over).
    std::fs::write(proxy.config_path(), text.replace("namespaces = [\"*\"]", "namespaces = [\"team-a\", \"*\"]"))
        .unwrap();
    proxy.shared.reload().await.expect("reload");
    let status = status_json(proxy.admin).await;
    let rows = docs(&status).iter().filter(|d| d["path"] == path.as_str()).count();
    assert_eq!(rows, 1, "{status:#}");
}

/// Where the screenshot is kept: beside the build, under `test-artifacts/`.
fn artifacts() -> PathBuf {
    let target = std::path::Path::new(binary()).parent().and_then(|p| p.parent()).expect("target dir");
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

/// Runs headless Chromium on `url` with `args`; its stdout. Every name it
/// might resolve fails, so it can reach nothing but the loopback URL.
async fn chromium(url: &str, args: &[&str]) -> Vec<u8> {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = tokio::process::Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--no-pings",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        &format!("--user-data-dir={}", profile.path().display()),
    ])
    .args(args)
    .arg(url)
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finished within 90 s")
        .expect("run chromium");
    assert!(out.status.success(), "chromium {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The page rendered by a real browser after a rotation to a key whose ID
/// is HTML: issuers, both key IDs and every source are in its DOM, with aws
/// current, azure behind and other never fetched; the hostile key ID shows
/// as text (no element, no script), the policy lets nothing load or run,
/// and a screenshot is kept.
#[tokio::test]
async fn the_status_page_renders_in_headless_chromium_with_every_value_escaped() {
    if !require("chromium") {
        return;
    }
    let hostile = "<b id=injected>rot-2</b><script>document.title='owned'</script>";
    let issuer = StandIn::start().await;
    let proxy = TestProxy::start(&accounting_config(&issuer.origin(), "report", "")).await;
    proxy.wait_ready().await;
    assert_eq!(get_from(AZURE, proxy.addr, root_keys()).await.map(|r| r.status), Some(200));
    rotate(&issuer, &proxy, hostile, AWS).await;

    let r = get(proxy.admin, "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = r.header("content-security-policy").expect("a policy");
    assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
    assert!(!csp.contains("unsafe") && !csp.contains("script-src"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let page = r.text();
    assert!(!page.contains("<b id=injected>") && !page.contains("<script"), "unescaped key ID in:\n{page}");
    assert!(page.contains("&lt;b id=injected&gt;rot-2&lt;/b&gt;&lt;script&gt;"), "{page}");
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"), "no external asset");

    let url = format!("http://{}/", proxy.admin);
    let dom = String::from_utf8(chromium(&url, &["--dump-dom"]).await).expect("utf-8 DOM");
    assert!(dom.contains("<title>wif-proxy status</title>"), "the script in the key ID ran, or no page:\n{dom}");
    for needle in [
        "vault",
        root_keys(),
        ">k1<",
        "rot-2",
        "data-source=\"aws\" data-state=\"current\"",
        "data-source=\"azure\" data-state=\"behind\"",
        "data-source=\"other\" data-state=\"never\"",
    ] {
        assert!(dom.contains(needle), "{needle:?} not in the rendered DOM:\n{dom}");
    }
    assert!(!dom.contains("id=\"injected\""), "the key ID became an element:\n{dom}");
    assert!(dom.contains("&lt;b id=injected&gt;rot-2"), "the key ID is not shown as text:\n{dom}");

    let shot = artifacts().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&url, &[&format!("--screenshot={}", shot.display()), "--window-size=1280,1600", "--hide-scrollbars"])
        .await;
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{} bytes", png.len());
    eprintln!("status page screenshot: {}", shot.display());
}

/// `wif-proxy status --config F` asks the admin listener F names and prints
/// the same facts for a terminal; `--json` prints `/status.json`.
#[tokio::test]
async fn the_status_command_prints_what_the_page_shows() {
    let issuer = StandIn::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = accounting_config(&issuer.origin(), "off", "")
        .replace("admin_listen = \"127.0.0.1:0\"", &format!("admin_listen = \"127.0.0.1:{port}\""));
    let proxy = TestProxy::start(&text).await;
    proxy.wait_ready().await;
    assert_eq!(get_from(AWS, proxy.addr, root_keys()).await.map(|r| r.status), Some(200));
    let config = proxy.config_path();
    let run = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(binary()).args(&args).output().await.expect("run status");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let c = config.display().to_string();
    let shown = run(vec!["status".into(), "--config".into(), c.clone()]).await;
    for needle in ["ready", "issuer vault (vault-plugin-wif)", root_keys(), "key IDs k1", "server.admin_listen"] {
        assert!(shown.contains(needle), "{needle:?} not in:\n{shown}");
    }
    // The key set's rows follow its path line.
    let keys: Vec<&str> = shown.lines().skip_while(|l| !l.contains(root_keys())).collect();
    let row = |source: &str| {
        let prefix = format!("{source} ");
        keys.iter()
            .find(|l| l.trim_start().starts_with(&prefix))
            .copied()
            .unwrap_or_else(|| panic!("no {source} row:\n{shown}"))
    };
    assert!(row("aws").contains("current") && row("aws").contains("k1"), "{shown}");
    assert!(row("azure").contains("never fetched"), "{shown}");
    assert!(shown.contains("ip_allow mode off"), "{shown}");
    eprintln!("{shown}");

    let json: Value = serde_json::from_str(&run(vec!["status".into(), "--config".into(), c, "--json".into()]).await)
        .expect("--json prints JSON");
    assert_eq!(fetch_of(&json, "aws")["state"], "current");

    let _kept = proxy.stop().await;
    let out = tokio::process::Command::new(binary())
        .args(["status", "--config", config.to_str().unwrap()])
        .output()
        .await
        .expect("run status");
    assert!(!out.status.success(), "a stopped proxy is an error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/status.json"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The listeners with their bound addresses and protocol, and each TLS
/// certificate with its expiry, on the page and in `/status.json`.
#[tokio::test]
async fn listeners_and_certificates_are_shown_with_their_expiry() {
    let issuer = StandIn::start().await;
    let pki = crate::common::pki::Pki::new();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = pki.leaf(&["wif.example.com"], -1, 30);
    std::fs::write(certs.path().join("c.pem"), &cert).unwrap();
    std::fs::write(certs.path().join("k.pem"), &key).unwrap();
    let tls = format!(
        "[tls]\nmode = \"files\"\n[[tls.certificate]]\ncert = \"{0}/c.pem\"\nkey = \"{0}/k.pem\"\n",
        certs.path().display()
    );
    let proxy =
        TestProxy::start(&config("", &format!("{tls}{}", vault_issuer("vault", &issuer.origin(), &[""])))).await;
    proxy.wait_ready().await;
    let status = status_json(proxy.admin).await;
    let listeners = status["listeners"].as_array().expect("listeners");
    let public = listeners.iter().find(|l| l["name"] == "server.listen").expect("public listener");
    assert_eq!(public["address"], proxy.addr.to_string(), "the bound port, not :0");
    assert_eq!((&public["protocol"], &public["accepting"]), (&"tls".into(), &true.into()));
    let admin = listeners.iter().find(|l| l["name"] == "server.admin_listen").expect("admin listener");
    assert_eq!((&admin["address"], &admin["protocol"]), (&proxy.admin.to_string().into(), &"plain".into()));
    let certificate = &status["certificates"][0];
    assert_eq!(certificate["host"], "wif.example.com", "{status:#}");
    let left = certificate["expires_in_seconds"].as_i64().expect("seconds");
    assert!((29 * 86_400..=30 * 86_400 + 60).contains(&left), "{left}");
    assert!(certificate["not_after"].as_str().is_some_and(|t| t.ends_with('Z')), "{certificate}");
    let page = get(proxy.admin, "/").await.text();
    assert!(page.contains("<code>wif.example.com</code>") && page.contains(" d</span>"), "{page}");
    assert!(page.contains(&proxy.addr.to_string()), "{page}");
}

/// The operator's path after an emergency rotation: the cache is fresh
/// (30 s), so nobody sees the new key until `POST /refresh`; then the source
/// that fetches again is current and the one that has not is behind.
#[tokio::test]
async fn after_a_rotation_and_post_refresh_the_status_shows_who_is_behind() {
    let issuer = StandIn::start().await;
    let text = accounting_config(&issuer.origin(), "report", "")
        .replace("min_ttl = \"200ms\"\nmax_ttl = \"200ms\"", "min_ttl = \"30s\"\nmax_ttl = \"5m\"");
    let proxy = TestProxy::start(&text).await;
    proxy.wait_ready().await;
    for ip in [AWS, AZURE] {
        assert!(get_from(ip, proxy.addr, root_keys()).await.expect("answered").text().contains("\"kid\":\"k1\""));
    }
    issuer.set(root_keys(), Behavior::Body { body: jwks("k2"), cache_control: Some("max-age=300".into()) });
    let still = get_from(AWS, proxy.addr, root_keys()).await.expect("answered").text();
    assert!(still.contains("\"kid\":\"k1\""), "fresh until refreshed: {still}");
    assert_eq!(fetch_of(&status_json(proxy.admin).await, "azure")["state"], "current", "nothing changed yet");

    let r = request(proxy.admin, "POST", "/refresh", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["changed"].as_u64().is_some_and(|n| n >= 1), "{}", r.text());
    assert!(get_from(AWS, proxy.addr, root_keys()).await.expect("answered").text().contains("\"kid\":\"k2\""));

    let after = status_json(proxy.admin).await;
    assert_eq!(keys_doc(&after)["key_ids"], serde_json::json!(["k2"]));
    let aws = fetch_of(&after, "aws");
    assert_eq!((&aws["state"], &aws["key_ids"]), (&"current".into(), &serde_json::json!(["k2"])), "{aws:#}");
    let azure = fetch_of(&after, "azure");
    assert_eq!((&azure["state"], &azure["key_ids"]), (&"behind".into(), &serde_json::json!(["k1"])), "{azure:#}");
}
