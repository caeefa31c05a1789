//! The cache that outlives the issuer: coalescing, freshness, refresh-ahead,
//! stale-if-error through every kind of outage, persistence across restarts,
//! conditional requests, negative caching and the issuer guard.

use std::time::Duration;

use crate::common::*;

fn cache(min: &str, max: &str, stale: &str) -> String {
    format!("[cache]\nmin_ttl = \"{min}\"\nmax_ttl = \"{max}\"\nmax_stale = \"{stale}\"\n")
}

fn max_age(r: &Resp) -> u64 {
    let cc = r.header("cache-control").expect("cache-control");
    cc.strip_prefix("public, max-age=").and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("cache-control: {cc}"))
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_request() {
    let si = StandIn::start().await;
    let path = ns_keys("cold");
    si.set(&path, Behavior::Slow(Duration::from_millis(400), Box::new(Behavior::Vault)));
    // `*` documents are not prefetched: the first request finds a cold cache.
    let issuer =
        vault_issuer("vault", &si.origin(), &["*"]).replace("upstream_timeout = \"1s\"", "upstream_timeout = \"5s\"");
    let p = TestProxy::start(&config("", &issuer)).await;
    let handles: Vec<_> = (0..200)
        .map(|_| {
            let (addr, path) = (p.addr, path.clone());
            tokio::spawn(async move { get(addr, &path).await })
        })
        .collect();
    let mut bodies = std::collections::HashSet::new();
    for h in handles {
        let r = h.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        bodies.insert(r.body);
    }
    assert_eq!(bodies.len(), 1);
    assert_eq!(si.count(&path), 1, "200 concurrent misses, one upstream request");
}

#[tokio::test]
async fn freshness_follows_cache_control_within_bounds() {
    let si = StandIn::start().await;
    si.set(&ns_keys("long"), Behavior::keys_with_cache_control("max-age=3600"));
    si.set(&ns_keys("zero"), Behavior::keys_with_cache_control("max-age=0"));
    si.set(&ns_keys("nostore"), Behavior::keys_with_cache_control("no-store"));
    si.set(&ns_keys("mid"), Behavior::keys_with_cache_control("public, max-age=45"));
    let p = TestProxy::start(&config(
        "",
        &format!(
            "{}{}",
            cache("30s", "60s", "1h"),
            vault_issuer("vault", &si.origin(), &["long", "zero", "nostore", "mid"])
        ),
    ))
    .await;
    p.wait_ready().await;
    let snap = p.shared.snapshot();
    let ttl_of = |path: &str| {
        let d = snap.docs.iter().find(|d| &*d.slot.key.path == path).expect("doc");
        d.slot.entry().expect("fetched").ttl
    };
    assert_eq!(ttl_of(&ns_keys("long")), Duration::from_secs(60), "clamped to max_ttl");
    assert_eq!(ttl_of(&ns_keys("zero")), Duration::from_secs(30), "jittered max-age=0 counts as min_ttl");
    assert_eq!(ttl_of(&ns_keys("nostore")), Duration::from_secs(30), "no-store counts as min_ttl");
    assert_eq!(ttl_of(&ns_keys("mid")), Duration::from_secs(45));
    let r = p.get(&ns_keys("long")).await;
    assert!((58..=60).contains(&max_age(&r)), "{:?}", r.header("cache-control"));
    assert!(r.header("age").is_some_and(|a| a == "0" || a == "1"));
    let r = p.get(&ns_keys("zero")).await;
    assert!((28..=30).contains(&max_age(&r)));
}

#[tokio::test]
async fn expired_documents_are_served_at_once_while_one_refresh_runs() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config(
        "",
        &format!(
            "{}{}",
            cache("300ms", "300ms", "1h"),
            vault_issuer("vault", &si.origin(), &[""])
                .replace("upstream_timeout = \"1s\"", "upstream_timeout = \"5s\"")
        ),
    ))
    .await;
    p.wait_ready().await;
    si.set(
        root_keys(),
        Behavior::Slow(
            Duration::from_millis(500),
            Box::new(Behavior::Body { body: standin::jwks("k2"), cache_control: None }),
        ),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Expired: served stale immediately (old key), the refresh runs behind.
    let handles: Vec<_> = (0..20).map(|_| tokio::spawn(get(p.addr, root_keys()))).collect();
    for h in handles {
        let r = h.await.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.text().contains("\"k1\""), "stale document served while revalidating");
        assert_eq!(max_age(&r), 0);
    }
    // The refresh takes 500 ms; wait for it rather than guess.
    let k2 = || async { p.get(root_keys()).await.text().contains("\"k2\"") };
    assert!(eventually(Duration::from_secs(3), k2).await, "the refreshed document replaced it");
    assert_eq!(si.count(root_keys()), 2, "one background refresh for twenty stale reads");
}

#[tokio::test]
async fn refresh_ahead_keeps_a_steadily_read_document_from_expiring() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config(
        "",
        &format!("{}{}", cache("2s", "2s", "1h"), vault_issuer("vault", &si.origin(), &[""])),
    ))
    .await;
    p.wait_ready().await;
    let start = std::time::Instant::now();
    let mut reads = 0;
    while start.elapsed() < Duration::from_millis(5000) {
        let r = p.get(root_keys()).await;
        assert_eq!(r.status, 200);
        // Age 2 or more would mean the entry outlived its 2 s lifetime (the
        // refresh ahead runs in its last 200 ms).
        let age: u64 = r.header("age").and_then(|a| a.parse().ok()).expect("age");
        assert!(age <= 1, "served a document past its freshness: Age {age}");
        reads += 1;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let fetches = si.count(root_keys());
    assert!(reads > 20, "{reads} reads");
    // One prefetch plus one refresh per ~1.8 s: never a fetch per read.
    assert!((2..=5).contains(&fetches), "{fetches} upstream fetches for {reads} reads");
}

/// Every kind of outage: the last good document keeps being served, byte
/// for byte, until `max_stale`; then our fixed 503.
#[tokio::test]
async fn outages_serve_the_last_good_document_until_max_stale() {
    let si = StandIn::start().await;
    let down = StandIn::start().await;
    let outages: Vec<(&str, Behavior)> = vec![
        ("sealed", Behavior::sealed()),
        ("standby", Behavior::standby()),
        ("slow", Behavior::Slow(Duration::from_millis(1500), Box::new(Behavior::Vault))),
        ("malformed", Behavior::Body { body: "{\"keys\":[".into(), cache_control: None }),
        ("invalid", Behavior::Body { body: r#"{"keys":[{"kid":"no-kty"}]}"#.into(), cache_control: None }),
        (
            "oversized",
            Behavior::Body { body: format!("{{\"keys\":[],\"p\":\"{}\"}}", "x".repeat(9000)), cache_control: None },
        ),
        ("error", Behavior::Status { status: 500, body: "{}".into(), location: None }),
        ("gone", Behavior::Status { status: 404, body: "{}".into(), location: None }),
        ("reset", Behavior::Drop),
    ];
    let ns: Vec<&str> = outages.iter().map(|o| o.0).collect();
    let issuers = format!(
        "{}{}{}",
        cache("300ms", "300ms", "3s"),
        vault_issuer("vault", &si.origin(), &ns)
            .replace("upstream_timeout = \"1s\"", "upstream_timeout = \"1s\"\nmax_document_bytes = 8192"),
        vault_issuer("down", &down.origin(), &["refused"]),
    );
    let p = TestProxy::start(&config("", &issuers)).await;
    p.wait_ready().await;
    let mut paths: Vec<String> = ns.iter().map(|n| ns_keys(n)).collect();
    paths.push(ns_keys("refused"));
    let mut good = Vec::new();
    for path in &paths {
        let r = p.get(path).await;
        assert_eq!(r.status, 200);
        good.push(r.body);
    }
    // The outages begin.
    for (name, b) in &outages {
        si.set(&ns_keys(name), b.clone());
    }
    down.stop();
    let failed_at = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(400)).await;
    while failed_at.elapsed() < Duration::from_millis(1700) {
        for (path, body) in paths.iter().zip(&good) {
            let r = p.get(path).await;
            assert_eq!(r.status, 200, "{path} during the outage: {}", r.text());
            assert_eq!(&r.body, body, "{path}: the identical last good document");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Past max_stale (3 s after the 300 ms freshness ran out, which was
    // before `failed_at`).
    tokio::time::sleep(Duration::from_millis(3300).saturating_sub(failed_at.elapsed()) + Duration::from_millis(300))
        .await;
    for path in &paths {
        let r = p.get(path).await;
        let expected = if path.contains("/gone/") { 404 } else { 503 };
        assert_eq!(r.status, expected, "{path} after max_stale: {}", r.text());
        assert_eq!(r.text(), wif_proxy::error_body(http::StatusCode::from_u16(expected).unwrap()));
    }
    // The issuer was not flooded: backoff between failed attempts.
    for name in &ns {
        let n = si.count(&ns_keys(name));
        assert!(n <= 8, "{name}: {n} upstream requests in ~3.6 s of outage");
    }
}

#[tokio::test]
async fn conditional_requests_etag_age_and_head() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config("", &vault_issuer("vault", &si.origin(), &[""]))).await;
    let r = p.get(root_keys()).await;
    let etag = r.header("etag").expect("etag").to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 34, "strong etag: {etag}");
    assert!(r.header("age").is_some());
    for inm in [etag.clone(), format!("W/{etag}"), format!("\"other\", {etag}"), "*".to_string()] {
        let c = request(p.addr, "GET", root_keys(), &[("If-None-Match", &inm)]).await;
        assert_eq!(c.status, 304, "If-None-Match: {inm}");
        assert!(c.body.is_empty());
        assert_eq!(c.header("etag"), Some(etag.as_str()));
        assert!(c.header("cache-control").is_some());
    }
    let c = request(p.addr, "GET", root_keys(), &[("If-None-Match", "\"stale-tag\"")]).await;
    assert_eq!(c.status, 200);
    let h = request(p.addr, "HEAD", root_keys(), &[("If-None-Match", &etag)]).await;
    assert_eq!(h.status, 304);
    let h = request(p.addr, "HEAD", root_keys(), &[]).await;
    assert_eq!((h.status, h.header("etag")), (200, Some(etag.as_str())));
    // A different document has a different tag.
    let d = p.get(root_discovery()).await;
    assert_ne!(d.header("etag"), Some(etag.as_str()));
}

#[tokio::test]
async fn missing_documents_are_remembered_for_negative_ttl() {
    let si = StandIn::start().await;
    si.set(&ns_keys("deleted"), Behavior::Status { status: 404, body: "{}".into(), location: None });
    let p = TestProxy::start(&config("", &vault_issuer("vault", &si.origin(), &["*"]))).await;
    for _ in 0..20 {
        assert_eq!(p.get(&ns_keys("deleted")).await.status, 404);
    }
    assert_eq!(si.count(&ns_keys("deleted")), 1, "a scanner cannot turn 404s into an issuer flood");
}

#[tokio::test]
async fn issuer_guard_warns_reports_and_enforces() {
    let si = StandIn::start().await;
    si.set_public_url("http://127.0.0.1:8200");
    let strict = StandIn::start().await;
    strict.set_public_url("http://127.0.0.1:8200");
    let issuers = format!(
        "{}[[issuer]]\nname = \"strict\"\nkind = \"vault-plugin-wif\"\nupstream = \"{}\"\nnamespaces = [\"strict\"]\nstrict_issuer = true\n",
        vault_issuer("lenient", &si.origin(), &[""]),
        strict.origin()
    );
    let p = TestProxy::start(&config("", &issuers)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Lenient: served, but reported.
    let r = p.get(root_discovery()).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("http://127.0.0.1:8200"));
    // Strict: refused with our error.
    let r = p.get(&ns_discovery("strict")).await;
    assert_eq!(r.status, 502);
    assert!(!r.text().contains("127.0.0.1"));
    let ready = get(p.admin, "/readyz").await;
    assert_eq!(ready.status, 503, "a strict mismatch leaves a document unservable");
    let v = ready.json();
    let mismatches = v["issuer_mismatch"].as_array().expect("array");
    assert_eq!(mismatches.len(), 2, "{v}");
    let text = v.to_string();
    assert!(text.contains("identity/oidc/config issuer="), "actionable: names the Vault setting: {text}");
    assert!(text.contains("https://wif.example.com/v1/identity/oidc/plugins"), "{text}");
    assert!(v["not_ready"].to_string().contains(&ns_discovery("strict")));
    // Fixing Vault's issuer clears the finding.
    strict.set_public_url(PUBLIC_URL);
    si.set_public_url(PUBLIC_URL);
    p.shared.reload().await.expect("reload");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = p.get(&ns_discovery("strict")).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn persisted_documents_survive_a_restart_during_an_outage() {
    let si = StandIn::start().await;
    let state = tempfile::tempdir().unwrap();
    let cache_dir = state.path().join("cache");
    let text = |namespaces: &[&str]| {
        config(
            "",
            &format!(
                "[cache]\nmin_ttl = \"1s\"\nmax_ttl = \"1s\"\ndir = \"{}\"\n{}",
                cache_dir.display(),
                vault_issuer("vault", &si.origin(), namespaces)
            ),
        )
    };
    let cfg_path = state.path().join("proxy.toml");
    std::fs::write(&cfg_path, text(&["", "a", "b"])).unwrap();
    let mut first = Process::start(&cfg_path).await;
    let mut good = std::collections::HashMap::new();
    for path in [root_keys().to_string(), root_discovery().to_string(), ns_keys("a"), ns_keys("b")] {
        let r = get(first.public, &path).await;
        assert_eq!(r.status, 200);
        good.insert(path, r.body);
    }
    // Written atomically with mode 0600.
    // Only finished files count (a `.tmp-` file may be mid-rename).
    let json_files = || -> Vec<std::path::PathBuf> {
        let entries: Vec<_> = match std::fs::read_dir(&cache_dir) {
            Ok(d) => d.flatten().map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        };
        entries.into_iter().filter(|p| p.extension().is_some_and(|x| x == "json")).collect()
    };
    for _ in 0..100 {
        if json_files().len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let files = json_files();
    assert_eq!(files.len(), 6, "{files:?}");
    for f in &files {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600, "{f:?}");
    }
    first.signal("TERM");
    assert_eq!(first.wait_exit(Duration::from_secs(5)).await, Some(0));

    // The issuer goes away; one cache file is damaged; namespace "b" is
    // dropped from the configuration.
    si.stop();
    let discovery_file = files
        .iter()
        .find(|f| {
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
            v["path"] == root_discovery()
        })
        .expect("discovery file")
        .clone();
    std::fs::write(&discovery_file, "{\"version\":1,\"truncated").unwrap();
    std::fs::write(cache_dir.join("junk.json"), "not json").unwrap();
    std::fs::write(&cfg_path, text(&["", "a"])).unwrap();

    let second = Process::start(&cfg_path).await;
    for path in [root_keys().to_string(), ns_keys("a")] {
        let r = get(second.public, &path).await;
        assert_eq!(r.status, 200, "{path} from the persisted cache: {}", r.text());
        assert_eq!(r.body, good[&path], "{path}: identical bytes");
        assert_eq!(max_age(&r), 0, "restored documents are stale, never fresh");
    }
    assert_eq!(get(second.public, &ns_keys("b")).await.status, 404, "no longer allowlisted: never served");
    assert_eq!(get(second.public, root_discovery()).await.status, 502, "damaged file ignored, issuer down");
    second.wait_log("ignoring damaged cache file").await;
    let log = second.log_text();
    assert!(log.contains("junk.json"), "{log}");
}
