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
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(p.get(root_keys()).await.status, 200, "capacity is released when connections close");
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
