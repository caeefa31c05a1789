//! Connection-level limits: header-read timeout, idle timeout, the global
//! connection cap, header size and count.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// Reads until EOF or error; returns how long that took (None: still open at `max`).
async fn closed_within(s: &mut tokio::net::TcpStream, max: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(max.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off_at_header_read_timeout() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config(
        "header_read_timeout = \"500ms\"\nidle_timeout = \"10s\"",
        &vault_issuer("v", &si.origin(), &[""]),
    ))
    .await;
    let mut s = connect_from(None, p.addr).await;
    s.write_all(b"GET /v1/identity/oidc/plugins/.well-known/keys HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Keep trickling header bytes: progress does not extend the head's deadline.
    let trickle = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(b"X-A: b\r\n").await.is_err() {
                break;
            }
        }
    };
    trickle.await;
    let closed = closed_within(&mut s, Duration::from_secs(3)).await;
    assert!(closed.is_some(), "connection should have been closed at the header-read timeout");
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed_at_idle_timeout() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config(
        "idle_timeout = \"700ms\"\nheader_read_timeout = \"5s\"",
        &vault_issuer("v", &si.origin(), &[""]),
    ))
    .await;
    // Connects and never speaks.
    let mut silent = connect_from(None, p.addr).await;
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await.is_some(), "silent connection left open");
    // Keep-alive connection that goes quiet after one request.
    let mut ka = connect_from(None, p.addr).await;
    ka.write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", root_keys()).as_bytes()).await.unwrap();
    let first = read_until_quiet(&mut ka, Duration::from_millis(200), Duration::from_secs(3)).await;
    assert_eq!(parse_responses(&first, false)[0].status, 200);
    assert!(closed_within(&mut ka, Duration::from_secs(3)).await.is_some(), "idle keep-alive connection left open");
}

#[tokio::test]
async fn keep_alive_connections_are_reused_within_idle_timeout() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config(
        "idle_timeout = \"5s\"\nheader_read_timeout = \"1s\"",
        &vault_issuer("v", &si.origin(), &[""]),
    ))
    .await;
    let mut ka = connect_from(None, p.addr).await;
    for _ in 0..2 {
        ka.write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", root_keys()).as_bytes()).await.unwrap();
        let out = read_until_quiet(&mut ka, Duration::from_millis(200), Duration::from_secs(3)).await;
        assert_eq!(parse_responses(&out, false).first().map(|r| r.status), Some(200));
        // Idle longer than the header-read timeout, shorter than the idle timeout.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

#[tokio::test]
async fn connections_beyond_max_connections_are_closed() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config(
        "max_connections = 3\nidle_timeout = \"10s\"",
        &vault_issuer("v", &si.origin(), &[""]),
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from(None, p.addr).await;
        s.write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", root_keys()).as_bytes()).await.unwrap();
        let out = read_until_quiet(&mut s, Duration::from_millis(100), Duration::from_secs(3)).await;
        assert_eq!(parse_responses(&out, false)[0].status, 200);
        held.push(s);
    }
    let mut extra = connect_from(None, p.addr).await;
    let _ = extra.write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", root_keys()).as_bytes()).await;
    let out = read_until_quiet(&mut extra, Duration::from_millis(100), Duration::from_secs(2)).await;
    assert!(out.is_empty(), "a 4th connection must be closed unanswered: {}", String::from_utf8_lossy(&out));
    drop(held);
    assert_eq!(status_soon(None, p.addr, root_keys()).await, 200, "capacity is released when connections close");
}

#[tokio::test]
async fn oversized_heads_are_refused() {
    let si = StandIn::start().await;
    let p =
        TestProxy::start(&config("max_header_bytes = 8192\nmax_headers = 16", &vault_issuer("v", &si.origin(), &[""])))
            .await;
    let big = format!("GET {} HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", root_keys(), "a".repeat(9000));
    let out = raw(p.addr, big.as_bytes()).await;
    let statuses: Vec<u16> = parse_responses(&out, false).iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 431 || *s == 400), "{statuses:?}");
    let many: String = (0..20).map(|i| format!("X-{i}: v\r\n")).collect();
    let out = raw(p.addr, format!("GET {} HTTP/1.1\r\nHost: x\r\n{many}\r\n", root_keys()).as_bytes()).await;
    let statuses: Vec<u16> = parse_responses(&out, false).iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 431 || *s == 400), "{statuses:?}");
    let ok: String = (0..10).map(|i| format!("X-{i}: v\r\n")).collect();
    let out =
        raw(p.addr, format!("GET {} HTTP/1.1\r\nHost: x\r\n{ok}Connection: close\r\n\r\n", root_keys()).as_bytes())
            .await;
    assert_eq!(parse_responses(&out, false)[0].status, 200);
}

#[tokio::test]
async fn the_readme_command_runs_the_shipped_config() {
    let shipped = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml"));
    let mut p = Process::start(shipped).await;
    assert_eq!(p.public.to_string(), "127.0.0.1:8080");
    assert_eq!(get(p.admin, "/healthz").await.status, 200);
    // No Vault dev server here: not ready, and it says why.
    let r = get(p.admin, "/readyz").await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("/v1/identity/oidc/plugins/.well-known/keys"));
    assert_eq!(get(p.public, "/v1/sys/health").await.status, 404);
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(5)).await, Some(0));
}

/// The `wif_proxy_connections_parked` gauge, from the admin listener.
async fn parked(p: &TestProxy) -> i64 {
    let text = get(p.admin, "/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("wif_proxy_connections_parked "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no wif_proxy_connections_parked in:\n{text}"))
}

/// Sends one request on `s` and reads its one response, returning as soon
/// as it is complete (the connection parks 250 ms after an answer).
async fn exchange(s: &mut tokio::net::TcpStream, path: &str) -> Resp {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let raw = read_response(s, Duration::from_secs(5)).await;
    let mut all = parse_responses(&raw, false);
    assert_eq!(all.len(), 1, "{}", String::from_utf8_lossy(&raw));
    all.remove(0)
}

/// An idle keep-alive connection parks (hyper's state for it is dropped)
/// and is served again on the same socket when the client speaks; a head
/// split across the quiet period, a request waiting on a slow issuer and
/// pipelined requests are never cut by parking.
#[tokio::test]
async fn idle_keep_alive_connections_park_and_wake() {
    let si = standin::StandIn::start().await;
    // A `*`-namespace document: not prefetched, so the request waits for it.
    let slow_path = "/v1/slow/identity/oidc/.well-known/keys";
    si.set(slow_path, Behavior::Slow(Duration::from_millis(1200), Box::new(Behavior::Vault)));
    let any = format!(
        "[[issuer]]\nname = \"any\"\nkind = \"vault-identity\"\nupstream = \"{}\"\nnamespaces = [\"*\"]\nupstream_timeout = \"3s\"\n",
        si.origin()
    );
    let p = TestProxy::start(&config("", &format!("{}{any}", vault_issuer("vault", &si.origin(), &[""])))).await;
    p.wait_ready().await;
    assert_eq!(parked(&p).await, 0);

    let mut a = connect_from(Some("127.0.0.2"), p.addr).await;
    assert_eq!(exchange(&mut a, root_keys()).await.status, 200);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(parked(&p).await, 1, "the idle connection parked");
    let again = exchange(&mut a, root_keys()).await;
    assert_eq!(parked(&p).await, 0, "woken by the request");
    assert_eq!(again.status, 200, "a parked connection serves its next request");
    assert_eq!(again.body, get(p.addr, root_keys()).await.body);

    // A head split across more than the quiet period.
    let mut b = connect_from(Some("127.0.0.3"), p.addr).await;
    assert_eq!(exchange(&mut b, root_keys()).await.status, 200);
    let head = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", root_keys());
    let (first, rest) = head.split_at(20);
    b.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    b.write_all(rest.as_bytes()).await.unwrap();
    let raw = read_until_quiet(&mut b, Duration::from_millis(150), Duration::from_secs(5)).await;
    assert_eq!(parse_responses(&raw, false)[0].status, 200, "{}", String::from_utf8_lossy(&raw));

    // A request waiting longer than the quiet period for the issuer.
    let mut c = connect_from(Some("127.0.0.4"), p.addr).await;
    assert_eq!(exchange(&mut c, root_keys()).await.status, 200);
    c.write_all(format!("GET {slow_path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let raw = read_until_quiet(&mut c, Duration::from_millis(300), Duration::from_secs(5)).await;
    let slow = parse_responses(&raw, false);
    assert_eq!(slow.len(), 1, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(slow[0].status, 200);

    // Pipelined requests: all answered, and the connection keeps serving.
    let mut d = connect_from(Some("127.0.0.5"), p.addr).await;
    d.write_all(head.repeat(3).as_bytes()).await.unwrap();
    let raw = read_until_quiet(&mut d, Duration::from_millis(300), Duration::from_secs(5)).await;
    assert_eq!(parse_responses(&raw, false).iter().filter(|r| r.status == 200).count(), 3);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(exchange(&mut d, root_keys()).await.status, 200);

    // The issuer saw the allowlisted requests only, once each (cached).
    assert_eq!(si.count(root_keys()), 1);
    assert_eq!(si.count(slow_path), 1);
    p.stop().await;
}

/// `server.listen_backlog` reaches the kernel: `ss` shows a listening
/// socket's accept-queue size in its Send-Q column.
#[tokio::test]
async fn the_listen_backlog_is_configurable() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config("listen_backlog = 777", &vault_issuer("v", &si.origin(), &[""]))).await;
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", p.addr.port())])
        .output()
        .expect("ss (iproute2) is needed");
    let text = String::from_utf8_lossy(&out.stdout);
    let send_q: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    assert_eq!(send_q, ["777"], "ss -ltn: {text}");
}
