//! Who the client is and who may ask: rate limits per loopback source
//! address, connection caps, the source-address allowlist, PROXY protocol,
//! X-Forwarded-For, slow clients, and the limiter's memory bound.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::common::*;

fn get_req(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: wif.example.com\r\nConnection: close\r\n\r\n").into_bytes()
}

/// One request from `source`; `None` when the connection was closed unanswered.
async fn get_from(source: &str, addr: std::net::SocketAddr, path: &str) -> Option<Resp> {
    let out = raw_from(Some(source), addr, &get_req(path)).await;
    parse_responses(&out, false).into_iter().next()
}

#[tokio::test]
async fn a_flooding_client_is_limited_and_others_are_not() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config(
        "",
        &format!(
            "[rate_limit]\nper_client = 1\nper_client_burst = 5\nexempt = [\"127.0.0.4/32\"]\n{}",
            vault_issuer("v", &si.origin(), &[""])
        ),
    ))
    .await;
    let mut limited = None;
    for _ in 0..20 {
        let r = get_from("127.0.0.2", p.addr, root_keys()).await.expect("answered");
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200);
    }
    let r = limited.expect("the flooding client was limited");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.text(), wif_proxy::error_body(http::StatusCode::TOO_MANY_REQUESTS));
    // Denied paths count too: the limiter runs before anything else.
    assert_eq!(get_from("127.0.0.2", p.addr, "/v1/sys/health").await.unwrap().status, 429);
    // Another address is unaffected; an exempt one is never limited.
    for _ in 0..5 {
        assert_eq!(get_from("127.0.0.3", p.addr, root_keys()).await.unwrap().status, 200);
    }
    for _ in 0..30 {
        assert_eq!(get_from("127.0.0.4", p.addr, root_keys()).await.unwrap().status, 200);
    }
    // The bucket refills (one a second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get_from("127.0.0.2", p.addr, root_keys()).await.unwrap().status, 200);
}

#[tokio::test]
async fn the_global_quota_covers_everybody() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config(
        "",
        &format!("[rate_limit]\nglobal = 1\nglobal_burst = 6\n{}", vault_issuer("v", &si.origin(), &[""])),
    ))
    .await;
    let mut statuses = Vec::new();
    let started = std::time::Instant::now();
    for i in 0..12 {
        let src = format!("127.0.1.{}", i + 1);
        statuses.push(get_from(&src, p.addr, root_keys()).await.unwrap().status);
    }
    // The burst of 6, and one more for each second a slow machine took.
    let refilled = started.elapsed().as_secs() as usize;
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert!((6..=6 + refilled).contains(&served), "{statuses:?} in {:?}", started.elapsed());
    assert!(statuses[..6].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(statuses[6..].iter().filter(|s| **s == 429).count() >= 6 - refilled.min(6), "{statuses:?}");
}

#[tokio::test]
async fn connections_are_capped_per_address() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config("max_connections_per_ip = 2", &vault_issuer("v", &si.origin(), &[""]))).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from(Some("127.0.0.5"), p.addr).await;
        s.write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", root_keys()).as_bytes()).await.unwrap();
        let out = read_until_quiet(&mut s, Duration::from_millis(100), Duration::from_secs(3)).await;
        assert_eq!(parse_responses(&out, false)[0].status, 200);
        held.push(s);
    }
    assert!(get_from("127.0.0.5", p.addr, root_keys()).await.is_none(), "a third connection from 127.0.0.5 is closed");
    assert_eq!(get_from("127.0.0.6", p.addr, root_keys()).await.unwrap().status, 200, "other addresses are unaffected");
    drop(held);
    assert_eq!(status_soon(Some("127.0.0.5"), p.addr, root_keys()).await, 200, "slots are released");
}

#[tokio::test]
async fn the_allowlist_enforces_reports_or_stays_off() {
    let si = StandIn::start().await;
    let allow = "[[ip_allow.source]]\nname = \"office\"\ncidrs = [\"127.0.0.7/32\", \"127.0.2.0/24\"]\n";
    let enforce = TestProxy::start(&config(
        "",
        &format!("[ip_allow]\nmode = \"enforce\"\n{allow}{}", vault_issuer("v", &si.origin(), &[""])),
    ))
    .await;
    assert_eq!(get_from("127.0.0.7", enforce.addr, root_keys()).await.unwrap().status, 200);
    assert_eq!(get_from("127.0.2.9", enforce.addr, root_keys()).await.unwrap().status, 200);
    assert!(get_from("127.0.0.8", enforce.addr, root_keys()).await.is_none(), "closed before any HTTP");
    let report = TestProxy::start(&config(
        "",
        &format!("[ip_allow]\nmode = \"report\"\n{allow}{}", vault_issuer("v", &si.origin(), &[""])),
    ))
    .await;
    assert_eq!(
        get_from("127.0.0.8", report.addr, root_keys()).await.unwrap().status,
        200,
        "report mode denies nothing"
    );
}

#[tokio::test]
async fn proxy_protocol_from_trusted_peers_only() {
    let si = StandIn::start().await;
    let cfg = config(
        "",
        &format!(
            "[client_ip]\nsource = \"proxy_protocol\"\ntrusted_proxies = [\"127.0.0.1/32\"]\nproxy_protocol_timeout = \"500ms\"\n\
             [ip_allow]\nmode = \"enforce\"\n[[ip_allow.source]]\nname = \"clients\"\ncidrs = [\"203.0.113.0/24\", \"2001:db8::/32\"]\n\
             [rate_limit]\nper_client = 1\nper_client_burst = 2\n{}",
            vault_issuer("v", &si.origin(), &[""])
        ),
    );
    let p = TestProxy::start(&cfg).await;
    let with_header = |header: &[u8]| {
        let mut b = header.to_vec();
        b.extend_from_slice(&get_req(root_keys()));
        b
    };
    let status = |out: Vec<u8>| parse_responses(&out, false).first().map(|r| r.status);

    // v1 naming an allowed client.
    let v1 = with_header(b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\n");
    assert_eq!(status(raw(p.addr, &v1).await), Some(200));
    // v2 (binary) naming an allowed IPv6 client.
    let v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (
            "[2001:db8::5]:40000".parse::<std::net::SocketAddr>().unwrap(),
            "[2001:db8::1]:443".parse::<std::net::SocketAddr>().unwrap(),
        ),
    )
    .build()
    .unwrap();
    assert_eq!(status(raw(p.addr, &with_header(&v2)).await), Some(200));
    // The named address is the client: outside the allowlist → closed.
    let outsider = with_header(b"PROXY TCP4 198.51.100.1 10.0.0.1 1 443\r\n");
    assert_eq!(status(raw(p.addr, &outsider).await), None);
    // ...and it is what the rate limiter counts (burst 2 for 203.0.113.8).
    let limited = with_header(b"PROXY TCP4 203.0.113.8 10.0.0.1 1 443\r\n");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(status(raw(p.addr, &limited).await));
    }
    assert_eq!(seen, vec![Some(200), Some(200), Some(429)]);
    // Untrusted peer, missing header, garbage, truncated: closed unanswered.
    assert_eq!(status(raw_from(Some("127.0.0.9"), p.addr, &v1).await), None, "untrusted peer");
    assert_eq!(status(raw(p.addr, &get_req(root_keys())).await), None, "no header");
    assert_eq!(status(raw(p.addr, &with_header(b"PROXY TCP4 nonsense\r\n")).await), None, "garbage");
    assert_eq!(status(raw(p.addr, &with_header(b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n")).await), None, "bad protocol");
    let started = std::time::Instant::now();
    let mut s = connect_from(None, p.addr).await;
    s.write_all(b"PROXY TCP4 203.0.113.7").await.unwrap();
    let out = read_until_quiet(&mut s, Duration::from_millis(100), Duration::from_secs(3)).await;
    assert!(out.is_empty());
    assert!(started.elapsed() < Duration::from_secs(2), "a truncated header is cut off at proxy_protocol_timeout");
    for r in si.requests() {
        assert_fixed_request(&r, si.addr);
    }
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let si = StandIn::start().await;
    let cfg = config(
        "",
        &format!(
            "[client_ip]\nsource = \"x_forwarded_for\"\ntrusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]\n\
             [ip_allow]\nmode = \"enforce\"\n[[ip_allow.source]]\nname = \"clients\"\ncidrs = [\"203.0.113.0/24\"]\n{}",
            vault_issuer("v", &si.origin(), &[""])
        ),
    );
    let p = TestProxy::start(&cfg).await;
    let with_xff = |source: Option<&'static str>, xff: &'static str| {
        let addr = p.addr;
        async move {
            let req = format!(
                "GET {} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n",
                root_keys()
            );
            let out = raw_from(source, addr, req.as_bytes()).await;
            parse_responses(&out, false).first().map(|r| r.status)
        }
    };
    assert_eq!(with_xff(None, "203.0.113.9").await, Some(200));
    assert_eq!(with_xff(None, "203.0.113.9, 10.1.2.3").await, Some(200), "trusted hops are skipped");
    assert_eq!(with_xff(None, "198.51.100.1").await, Some(403));
    assert_eq!(
        with_xff(None, "203.0.113.9, 198.51.100.1").await,
        Some(403),
        "a spoofed left-most entry is not believed"
    );
    assert_eq!(with_xff(Some("127.0.0.10"), "203.0.113.9").await, Some(403), "untrusted peer: its header is ignored");
    let r = parse_responses(&raw(p.addr, &get_req(root_keys())).await, false).remove(0);
    assert_eq!(r.status, 403, "no header: the (trusted proxy) peer itself is the client");
    assert_eq!(r.text(), wif_proxy::error_body(http::StatusCode::FORBIDDEN));
}

#[tokio::test]
async fn slow_clients_do_not_stop_others_and_are_cut_off() {
    let si = StandIn::start().await;
    let p = TestProxy::start(&config(
        "header_read_timeout = \"1s\"\nmax_connections_per_ip = 1000",
        &vault_issuer("v", &si.origin(), &[""]),
    ))
    .await;
    // 300 connections sending a request head one byte every 100 ms.
    let mut slow = Vec::new();
    for i in 0..300 {
        let addr = p.addr;
        slow.push(tokio::spawn(async move {
            let src = format!("127.0.3.{}", i % 250 + 1);
            let mut s = connect_from(Some(&src), addr).await;
            let head = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", root_keys());
            let started = std::time::Instant::now();
            for b in head.as_bytes() {
                if s.write_all(&[*b]).await.is_err() {
                    return Some(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        }));
    }
    // Meanwhile everybody else is served normally.
    for _ in 0..20 {
        assert_eq!(p.get(root_keys()).await.status, 200);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for h in slow {
        let cut = h.await.unwrap().expect("a slow head must be cut off before it completes");
        assert!(cut < Duration::from_secs(4), "cut off after {cut:?}");
    }
}

#[tokio::test]
async fn an_address_rotation_flood_keeps_the_limiter_bounded() {
    let si = StandIn::start().await;
    let cfg = config(
        "",
        &format!(
            "[client_ip]\nsource = \"x_forwarded_for\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
             [rate_limit]\nmax_clients = 500\nper_client = 1\nper_client_burst = 1\n{}",
            vault_issuer("v", &si.origin(), &[""])
        ),
    );
    let p = TestProxy::start(&cfg).await;
    // 4000 distinct IPv6 /64s, pipelined over a few connections.
    let mut tasks = Vec::new();
    for c in 0..8u32 {
        let addr = p.addr;
        tasks.push(tokio::spawn(async move {
            let mut batch = String::new();
            for i in 0..500u32 {
                let n = c * 500 + i;
                batch.push_str(&format!(
                    "GET {} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 2001:db8:{:x}:{:x}::1\r\n\r\n",
                    root_keys(),
                    n >> 16,
                    n & 0xffff
                ));
            }
            batch.push_str(&format!("GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", root_keys()));
            let mut s = connect_from(None, addr).await;
            s.write_all(batch.as_bytes()).await.unwrap();
            let out = read_until_quiet(&mut s, Duration::from_millis(500), Duration::from_secs(20)).await;
            parse_responses(&out, false).iter().map(|r| r.status).collect::<Vec<_>>()
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        for s in t.await.unwrap() {
            match s {
                200 => ok += 1,
                429 => limited += 1,
                other => panic!("unexpected status {other}"),
            }
        }
    }
    assert_eq!(ok + limited, 8 * 501);
    let tracked = p.shared.snapshot().rate_limit.as_ref().expect("enabled").tracked();
    assert!(tracked <= 500, "the limiter tracks {tracked} addresses, more than max_clients");
    assert!(limited > 3000, "addresses beyond max_clients share one strict bucket ({limited} limited)");
}
