//! Operating the proxy: `POST /refresh` and `wif-proxy refresh` after an
//! emergency key rotation, `wif-proxy export` (the static mirror), systemd
//! socket activation with a restart that refuses nobody, and SIGHUP under
//! load.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

/// The stand-in's key set with `kid`, fresh for an hour: only a refresh
/// brings a new one in.
fn keys(kid: &str) -> Behavior {
    Behavior::Body { body: standin::jwks(kid), cache_control: Some("max-age=3600".into()) }
}

fn kid_of(r: &Resp) -> String {
    r.json()["keys"][0]["kid"].as_str().unwrap_or_else(|| panic!("no kid: {}", r.text())).to_string()
}

async fn post_refresh(admin: std::net::SocketAddr, query: &str) -> Resp {
    request(admin, "POST", &format!("/refresh{query}"), &[]).await
}

/// The entry of `path` in a refresh answer.
fn outcome<'a>(v: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    v["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .find(|d| d["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in {v}"))
}

#[tokio::test]
async fn a_rotated_key_is_served_only_after_post_refresh() {
    let si = StandIn::start().await;
    si.set(root_keys(), keys("k1"));
    let p = TestProxy::start(&config(
        "",
        &format!(
            "{}{}",
            vault_issuer("vault", &si.origin(), &["", "ns1"]),
            vault_issuer("other", &si.origin(), &["ns2"])
        ),
    ))
    .await;
    p.wait_ready().await;
    assert_eq!(kid_of(&p.get(root_keys()).await), "k1");

    si.set(root_keys(), keys("k2"));
    assert_eq!(kid_of(&p.get(root_keys()).await), "k1", "cached until refreshed");

    for method in ["GET", "HEAD", "PUT", "DELETE"] {
        let r = request(p.admin, method, "/refresh", &[]).await;
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("POST"), "{method}");
    }
    let r = request(p.admin, "POST", "/refresh", &[("origin", "https://evil.example")]).await;
    assert_eq!(r.status, 403, "a browser's cross-site POST: {}", r.text());
    assert_eq!(kid_of(&p.get(root_keys()).await), "k1", "a refused refresh fetched nothing");
    assert_eq!(post_refresh(p.admin, "?issuer=nope").await.status, 404);
    assert_eq!(post_refresh(p.admin, "?issuer").await.status, 400);
    assert_eq!(post_refresh(p.admin, "?issuer=vault&x=1").await.status, 400);

    let before = si.count(root_keys());
    let r = post_refresh(p.admin, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    assert_eq!(v["documents"].as_array().unwrap().len(), 6, "every document of every issuer: {v}");
    let k = outcome(&v, root_keys());
    assert_eq!((k["result"].as_str(), k["document"].as_str()), (Some("changed"), Some("keys")), "{v}");
    assert_eq!(k["kids_added"], serde_json::json!(["k2"]));
    assert_eq!(k["kids_removed"], serde_json::json!(["k1"]));
    assert_eq!(outcome(&v, root_discovery())["result"], "unchanged");
    assert_eq!((v["changed"].as_u64(), v["unchanged"].as_u64(), v["failed"].as_u64()), (Some(1), Some(5), Some(0)));
    assert_eq!(si.count(root_keys()), before + 1, "one issuer request per document");
    assert_eq!(kid_of(&p.get(root_keys()).await), "k2", "the new key is served at once");

    // One issuer only.
    let v = post_refresh(p.admin, "?issuer=other").await.json();
    let paths: Vec<&str> = v["documents"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert_eq!(paths.len(), 2, "{v}");
    assert!(paths.iter().all(|p| p.contains("/ns2/")), "{v}");
    assert_eq!(v["issuer"], "other");

    let metrics = get(p.admin, "/metrics").await.text();
    assert!(
        metrics.contains("wif_proxy_jwks_changes_total{issuer=\"vault\",namespace=\"root\"} 1\n"),
        "{}",
        metrics.lines().filter(|l| l.contains("jwks_changes")).collect::<Vec<_>>().join("\n")
    );
    assert!(metrics.contains("wif_proxy_jwks_changes_total{issuer=\"vault\",namespace=\"ns1\"} 0\n"));
}

#[tokio::test]
async fn concurrent_refreshes_coalesce_and_rounds_are_rate_limited() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config("", &vault_issuer("vault", &si.origin(), &[""]))).await;
    p.wait_ready().await;
    si.set(root_keys(), Behavior::Slow(Duration::from_millis(300), Box::new(keys("k1"))));
    let before = si.count(root_keys());
    let calls: Vec<_> = (0..8).map(|_| tokio::spawn(post_refresh(p.admin, ""))).collect();
    let mut coalesced = 0;
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        coalesced += usize::from(r.json()["coalesced"] == true);
    }
    let rounds = si.count(root_keys()) - before;
    assert!((1..=2).contains(&rounds), "8 concurrent calls, {rounds} rounds");
    assert!(coalesced >= 6, "{coalesced} of 8 shared a round");

    // Back to back: past the burst the answer is 429, and nothing is fetched.
    si.set(root_keys(), keys("k1"));
    let mut limited = None;
    for _ in 0..8 {
        let r = post_refresh(p.admin, "").await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200);
    }
    let r = limited.expect("rate limited within 8 back-to-back rounds");
    assert!(r.header("retry-after").and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s >= 1), "{:?}", r.headers);
    assert_eq!(r.json()["error"], "rate_limited");
    let seen = si.count(root_keys());
    assert_eq!(post_refresh(p.admin, "").await.status, 429);
    assert_eq!(si.count(root_keys()), seen, "a limited call reaches no issuer");
}

/// A caller that hangs up mid-round does not end the round: it finishes,
/// is logged, and a call that arrived during it waits for it rather than
/// starting a second round beside it.
#[tokio::test]
async fn a_refresh_whose_caller_hangs_up_still_finishes_its_round() {
    use tokio::io::AsyncWriteExt as _;
    let si = StandIn::start().await;
    si.set(root_keys(), keys("k1"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let issuer =
        vault_issuer("vault", &si.origin(), &[""]).replace("upstream_timeout = \"1s\"", "upstream_timeout = \"5s\"");
    std::fs::write(&path, config("", &issuer)).unwrap();
    let p = Process::start(&path).await;
    assert_eq!(kid_of(&get(p.public, root_keys()).await), "k1");
    si.set(root_keys(), Behavior::Slow(Duration::from_millis(600), Box::new(keys("k2"))));
    let asked = si.count(root_keys());
    let mut gone = tokio::net::TcpStream::connect(p.admin).await.unwrap();
    gone.write_all(b"POST /refresh HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n").await.unwrap();
    // Hang up once the round has reached the issuer.
    eventually(Duration::from_secs(2), || async { si.count(root_keys()) > asked }).await;
    assert_eq!(si.count(root_keys()), asked + 1, "the round began");
    drop(gone);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = post_refresh(p.admin, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(outcome(&r.json(), root_keys())["result"], "unchanged", "the abandoned round brought k2 in first");
    let rounds = || p.log_text().matches("refresh: documents refetched").count();
    eventually(Duration::from_secs(2), || async { rounds() >= 2 }).await;
    assert_eq!(rounds(), 2, "both rounds ran to the end:\n{}", p.log_text());
    assert_eq!(kid_of(&get(p.public, root_keys()).await), "k2");
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn the_refresh_command_reports_changes_and_failures_and_the_change_is_logged_once() {
    let si = StandIn::start().await;
    si.set(root_keys(), keys("k1"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let admin = format!("127.0.0.1:{}", free_port());
    let text = config("", &vault_issuer("vault", &si.origin(), &[""]))
        .replace("admin_listen = \"127.0.0.1:0\"", &format!("admin_listen = \"{admin}\""));
    std::fs::write(&path, text).unwrap();
    let p = Process::start(&path).await;
    assert_eq!(p.admin.to_string(), admin);
    for _ in 0..100 {
        if get(p.admin, "/readyz").await.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    si.set(root_keys(), keys("k2"));
    let config_arg = path.to_str().unwrap();
    let out = tokio::task::spawn_blocking({
        let c = config_arg.to_string();
        move || run_binary(&["refresh", "--config", &c])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("changed   vault {}: kids added [k2], removed [k1]", root_keys())), "{stdout}");
    assert!(stdout.contains("1 changed, 1 unchanged, 0 failed"), "{stdout}");
    assert_eq!(kid_of(&get(p.public, root_keys()).await), "k2");
    p.wait_log("key set changed").await;
    let changes: Vec<String> =
        p.log_text().lines().filter(|l| l.contains("key set changed")).map(str::to_string).collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let line: serde_json::Value = serde_json::from_str(&changes[0]).unwrap();
    assert_eq!((line["added"].as_str(), line["removed"].as_str()), (Some("k2"), Some("k1")), "{line}");
    assert_eq!(line["path"], root_keys());

    // The issuer goes away: the refresh reports it, the good set keeps serving.
    si.stop();
    let out = tokio::task::spawn_blocking({
        let c = config_arg.to_string();
        move || run_binary(&["refresh", "--config", &c, "--json"])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "a failed document fails the command");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints the answer");
    assert_eq!(v["failed"], 2, "{v}");
    assert!(outcome(&v, root_keys())["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    let r = get(p.public, root_keys()).await;
    assert_eq!((r.status, kid_of(&r)), (200, "k2".to_string()), "stale-if-error after a failed refresh");
    assert_eq!(p.log_text().matches("key set changed").count(), 1, "no change, no line");
}

#[tokio::test]
async fn export_writes_what_the_proxy_serves_and_a_failed_export_leaves_the_directory_alone() {
    let si = StandIn::start().await;
    si.set(root_keys(), Behavior::Body {
        body: r#"{"keys":[{"kty":"RSA","kid":"r","n":"x","e":"AQAB","x5c":["c"],"use":"sig"},{"kty":"OKP","kid":"ed","crv":"Ed25519","x":"y"}]}"#.into(),
        cache_control: Some("max-age=120".into()),
    });
    let p = TestProxy::start(&config("", &vault_issuer("vault", &si.origin(), &["", "ns1"]))).await;
    p.wait_ready().await;
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("mirror");
    let cfg = p.config_path();
    let export = |extra: &'static [&'static str]| {
        let (cfg, out_dir) = (cfg.clone(), out_dir.clone());
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["export", "--config", cfg.to_str().unwrap(), "--out", out_dir.to_str().unwrap()];
            args.extend_from_slice(extra);
            run_binary(&args)
        })
    };
    let out = export(&[]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["format"], "files");
    let docs = manifest["documents"].as_array().unwrap();
    assert_eq!(docs.len(), 4, "{manifest}");
    for path in [root_keys().to_string(), root_discovery().to_string(), ns_keys("ns1"), ns_discovery("ns1")] {
        let served = p.get(&path).await;
        assert_eq!(served.status, 200);
        let file = std::fs::read(out_dir.join(path.trim_start_matches('/'))).unwrap();
        assert_eq!(file, served.body, "{path}: byte-identical");
        let entry = docs.iter().find(|d| d["path"] == path.as_str()).unwrap();
        assert_eq!(entry["content_type"], "application/json");
        assert_eq!(served.header("content-type"), Some("application/json"));
        assert_eq!(entry["etag"].as_str(), served.header("etag"), "{path}");
        assert_eq!(entry["file"], path.trim_start_matches('/'));
    }
    assert_eq!(docs.iter().find(|d| d["path"] == root_keys()).unwrap()["cache_control"], "public, max-age=120");

    // GCP's upload: key sets only, RSA and EC keys, accepted members only.
    let (gcp_cfg, gcp_dir) = (cfg.clone(), work.path().join("gcp"));
    let out = tokio::task::spawn_blocking({
        let d = gcp_dir.clone();
        move || {
            run_binary(&[
                "export",
                "--config",
                gcp_cfg.to_str().unwrap(),
                "--out",
                d.to_str().unwrap(),
                "--format",
                "gcp-jwks-json",
            ])
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kid ed (kty \"OKP\""), "the dropped key is named");
    let gcp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gcp_dir.join(root_keys().trim_start_matches('/'))).unwrap()).unwrap();
    assert_eq!(gcp, serde_json::json!({"keys":[{"kty":"RSA","kid":"r","n":"x","e":"AQAB","use":"sig"}]}));
    assert!(!gcp_dir.join(root_discovery().trim_start_matches('/')).exists(), "key sets only");

    // The issuer goes away: exit 1, the previous export untouched, nothing left beside it.
    let snapshot = |dir: &std::path::Path| {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    files.push((e.path(), std::fs::read(e.path()).unwrap()));
                }
            }
        }
        files.sort();
        files
    };
    let before = snapshot(&out_dir);
    si.stop();
    let out = export(&[]).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not be fetched or did not validate; nothing was written"), "{stderr}");
    assert_eq!(snapshot(&out_dir), before, "DIR untouched");
    let beside: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut beside = beside;
    beside.sort();
    assert_eq!(beside, vec!["gcp".to_string(), "mirror".to_string()], "no temp directory left");
}

/// Load from one address: the per-client rate limit is not what is tested.
const NO_RATE_LIMIT: &str = "[rate_limit]\nenabled = false\n";

/// Clients requesting the JWKS on a new connection each, until stopped;
/// returns (answered, failures).
fn load(
    addr: std::net::SocketAddr,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(usize, Vec<String>)>> {
    (0..clients)
        .map(|_| {
            let stop = Arc::clone(stop);
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, Vec::new());
                let req = format!("GET {} HTTP/1.1\r\nHost: wif.example.com\r\nConnection: close\r\n\r\n", root_keys());
                while !stop.load(Ordering::Relaxed) {
                    // Raw, so that a connection closed unanswered is counted, not a panic.
                    let answer = raw(addr, req.as_bytes()).await;
                    match parse_responses(&answer, false).first() {
                        Some(r) if r.status == 200 && r.body.starts_with(b"{\"keys\":[") => ok += 1,
                        Some(r) => failed.push(format!("{} {}", r.status, r.text())),
                        None => failed.push(format!("no answer ({} bytes)", answer.len())),
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

async fn finish(stop: &AtomicBool, clients: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>, at_least: usize) {
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for h in clients {
        let (o, f) = h.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} failed of {}: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok >= at_least, "{ok} answered");
    eprintln!("load: {ok} requests answered, none failed");
}

/// `sh -c` script: stdin and stdout become fds 3 and 4, LISTEN_PID the pid.
const TWO_FDS: &str = r#"LISTEN_PID=$$ LISTEN_FDS=2 exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#;

/// The binary with `sockets` as fds 3, 4, … named `names` (LISTEN_FDNAMES),
/// and LISTEN_PID its own pid. Rust's std cannot place an fd at 3 nor
/// know the child's pid before exec without `unsafe`; so the sockets go in
/// as stdin and stdout, and `sh` moves them to 3 and 4 and execs the proxy
/// with `$$` (its pid, which exec keeps).
async fn socket_activated(sockets: [&std::net::TcpListener; 2], names: &str, config: &std::path::Path) -> Process {
    let fd = |l: &std::net::TcpListener| Stdio::from(OwnedFd::from(l.try_clone().unwrap()));
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", TWO_FDS, binary()])
        .args(["--config", config.to_str().unwrap(), "--log-format", "json"])
        .env("LISTEN_FDNAMES", names)
        .stdin(fd(sockets[0]))
        .stdout(fd(sockets[1]));
    Process::spawn(cmd).await
}

#[tokio::test]
async fn a_restart_on_systemd_sockets_refuses_no_request() {
    let si = StandIn::start().await;
    let public = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (public_addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let text = config("", &format!("{NO_RATE_LIMIT}{}", vault_issuer("vault", &si.origin(), &[""]))).replace(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"",
        "listen = \"systemd:https\"\nadmin_listen = \"systemd:admin\"",
    );
    assert!(text.contains("systemd:https"));
    std::fs::write(&path, text).unwrap();

    let mut first = socket_activated([&public, &admin], "https:admin", &path).await;
    assert_eq!((first.public, first.admin), (public_addr, admin_addr), "the passed sockets, by name");
    assert_eq!(get(admin_addr, "/healthz").await.status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(public_addr, 4, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // `systemctl restart`: SIGTERM, wait for the exit, start the new one;
    // meanwhile connections wait in the socket's queue.
    first.signal("TERM");
    assert_eq!(first.wait_exit(Duration::from_secs(10)).await, Some(0));
    let second = socket_activated([&public, &admin], "https:admin", &path).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    finish(&stop, clients, 8).await;
    assert!(second.log_text().contains("\"status\":200"), "the second process answered some: {}", second.log_text());
    assert!(first.log_text().contains("draining connections"), "{}", first.log_text());
}

#[tokio::test]
async fn a_systemd_listener_without_sockets_is_a_clear_start_up_error() {
    let si = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let listen_on = |value: &str| {
        let text = config("", &vault_issuer("vault", &si.origin(), &[""]));
        std::fs::write(&path, text.replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"{value}\""), 1)).unwrap();
    };
    listen_on("systemd");
    let out = run_binary(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.listen = \"systemd\": no sockets were passed by systemd (LISTEN_FDS is not set)"),
        "{stderr}"
    );

    // Sockets under other names: the error lists what was passed.
    let (a, b) =
        (std::net::TcpListener::bind("127.0.0.1:0").unwrap(), std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let fd = |l: &std::net::TcpListener| Stdio::from(OwnedFd::from(l.try_clone().unwrap()));
    listen_on("systemd:https");
    let out = std::process::Command::new("sh")
        .args(["-c", TWO_FDS, binary(), "--config", path.to_str().unwrap()])
        .env("LISTEN_FDNAMES", "web:admin")
        .stdin(fd(&a))
        .stdout(fd(&b))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("server.listen = \"systemd:https\": systemd passed no socket of that name (passed: web, admin)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sighup_reloads_under_load_fail_no_request() {
    let si = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config("", &format!("{NO_RATE_LIMIT}{}", vault_issuer("vault", &si.origin(), &["", "ns1"]))))
        .unwrap();
    let p = Process::start(&path).await;
    assert_eq!(get(p.public, root_keys()).await.status, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(p.public, 4, &stop);
    for i in 0..20 {
        if i == 10 {
            // A reload that changes something (a namespace more) and keeps the key set.
            let issuer = vault_issuer("vault", &si.origin(), &["", "ns1", "ns2"]);
            std::fs::write(&path, config("", &format!("{NO_RATE_LIMIT}{issuer}"))).unwrap();
        }
        p.signal("HUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.wait_log("SIGHUP: configuration reloaded").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    finish(&stop, clients, 20).await;
    assert!(p.log_text().matches("SIGHUP: configuration reloaded").count() >= 2, "{}", p.log_text());
    assert_eq!(get(p.public, &ns_keys("ns2")).await.status, 200, "the reloaded configuration serves");
}
