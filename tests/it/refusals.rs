//! Slow and malformed clients on HTTP/1.1 and TLS, against the built binary:
//! each refusal is cut in its configured time, counted by its reason in
//! `wif_proxy_denied_requests_total`, and logged within the line budget,
//! library lines included. Also the h2 request corner cases that must match
//! HTTP/1.1: an empty END_STREAM DATA frame, a body, a bad `:scheme`, too
//! many headers.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::h2raw::*;
use crate::common::target::Target;
use crate::common::*;

/// Writes `first`, then one byte of `rest` every `every`, until the proxy
/// closes the connection; returns how long after `first` that was (`None`:
/// still open after `max`).
async fn trickle<S>(s: &mut S, first: &[u8], rest: &[u8], every: Duration, max: Duration) -> Option<Duration>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(first).await.expect("first bytes");
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    for b in rest.iter().cycle() {
        if start.elapsed() > max {
            return None;
        }
        match tokio::time::timeout(every, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => {
                if s.write_all(std::slice::from_ref(b)).await.is_err() {
                    return Some(start.elapsed());
                }
            }
        }
    }
    None
}

/// A client that sends one byte, then trickles one every 200 ms, is cut at
/// `header_read_timeout` from its first byte (not at the idle timeout), on
/// plain HTTP and after a TLS handshake; each cut is a `header_timeout`.
#[tokio::test]
async fn a_one_byte_trickle_is_cut_at_the_head_deadline() {
    let server = "header_read_timeout = \"1s\"\nidle_timeout = \"10s\"";
    let head = b"ET /v1/identity/oidc/plugins/.well-known/keys HTTP/1.1\r\nHost: wif.example.com\r\nX-A: b\r\n";
    for tls in [None, Some("")] {
        let t = Target::start_with(server, tls).await;
        let before = t.denied("header_timeout").await;
        let mut io = t.raw("127.0.3.1").await;
        let closed = trickle(&mut io, b"G", head, Duration::from_millis(200), Duration::from_secs(6)).await;
        let closed = closed.unwrap_or_else(|| panic!("tls={tls:?}: a trickling head was never cut"));
        assert!(
            closed >= Duration::from_millis(900) && closed < Duration::from_millis(2500),
            "tls={tls:?}: cut {closed:?} after the first byte, want about 1 s"
        );
        assert_eq!(t.denied_settled("header_timeout", before + 1).await, before + 1, "tls={tls:?}: counted once");
    }
}

/// Each way hyper or our deadlines refuse an HTTP/1.1 connection is counted
/// by its own word, and the good client is served throughout.
#[tokio::test]
async fn http1_refusals_are_counted_by_reason() {
    let t = Target::start(
        "header_read_timeout = \"800ms\"\nidle_timeout = \"800ms\"\nmax_header_bytes = 8192\nmax_headers = 16",
        false,
    )
    .await;
    // Connects and never speaks: idle_timeout.
    let mut silent = connect_from(Some("127.0.3.2"), t.addr()).await;
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0) | Err(_))), "silent connection closed: {r:?}");
    // A head over max_header_bytes, and one over max_headers: 431.
    let big = format!("GET {} HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", root_keys(), "a".repeat(9000));
    let many: String = (0..20).map(|i| format!("X-{i}: v\r\n")).collect();
    for head in [big, format!("GET {} HTTP/1.1\r\nHost: x\r\n{many}\r\n", root_keys())] {
        let out = raw_from(Some("127.0.3.3"), t.addr(), head.as_bytes()).await;
        assert_eq!(parse_responses(&out, false).first().map(|r| r.status), Some(431));
    }
    // Not HTTP at all: 400.
    let out = raw_from(Some("127.0.3.4"), t.addr(), b"\x16\x03\x01 definitely not http\r\n\r\n").await;
    assert_eq!(parse_responses(&out, false).first().map(|r| r.status), Some(400));
    // Half a head, then silence: header_timeout.
    let mut half = connect_from(Some("127.0.3.5"), t.addr()).await;
    half.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(3), half.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0) | Err(_))), "half a head closed: {r:?}");

    assert!(t.denied("idle_timeout").await >= 1, "idle_timeout counted");
    assert_eq!(t.denied_settled("head_too_large", 2).await, 2, "head_too_large counted");
    assert_eq!(t.denied_settled("malformed", 1).await, 1, "malformed counted");
    assert_eq!(t.denied_settled("header_timeout", 1).await, 1, "header_timeout counted");
    assert_eq!(http1_status_from("127.0.3.6", t.addr(), root_keys()).await, Ok(200));
}

/// A TLS 1.2 ClientHello whose SNI is an IP address (as `wrk` or a scanner
/// addressing the server by IP sends): rustls warns about each one.
fn client_hello_with_ip_sni(ip: &str) -> Vec<u8> {
    let name = ip.as_bytes();
    let mut sni = vec![0x00, 0x00]; // extension: server_name
    let list_len = 3 + name.len();
    sni.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    sni.extend_from_slice(&(list_len as u16).to_be_bytes());
    sni.push(0x00); // host_name
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0xc0, 0x2f]); // two suites
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    body.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    body.extend_from_slice(&sni);
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

/// A handshake that never comes is cut at `tls.handshake_timeout`; a
/// stream of ClientHellos with an IP address as SNI fails and is counted
/// per connection, while rustls' warning about each is held to the library
/// budget (ten lines a second) and the rest are counted in the summary line.
#[tokio::test]
async fn tls_refusals_are_counted_and_library_lines_stay_within_budget() {
    const HELLOS: u64 = 300;
    let t = Target::start_with("", Some("handshake_timeout = \"700ms\"")).await;
    let started = Instant::now();
    let mut silent = connect_from(Some("127.0.3.7"), t.addr()).await;
    let mut buf = [0u8; 256];
    let r = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0) | Err(_))), "a silent TLS connection is closed: {r:?}");
    let hello = client_hello_with_ip_sni("127.0.0.1");
    for i in 0..HELLOS {
        let out = raw_from(Some(&format!("127.0.4.{}", 1 + i % 200)), t.addr(), &hello).await;
        assert!(!out.starts_with(b"HTTP"), "never an HTTP answer");
    }
    assert_eq!(t.denied_settled("handshake_timeout", 1).await, 1);
    assert_eq!(t.denied_settled("handshake_failed", HELLOS).await, HELLOS);
    // The summary line is written at the next second boundary: wait for
    // every line to be written or counted (5 s at most), then check.
    let tally = |log: &str| {
        let sni_lines = log.lines().filter(|l| l.contains("IP address presented as hostname")).count();
        let left_out: u64 = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["library_over_budget"].as_u64())
            .sum();
        (sni_lines, left_out)
    };
    let counted_by = Instant::now() + Duration::from_secs(5);
    let (log, (sni_lines, left_out)) = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let log = t.p.log_text();
        let (lines, left) = tally(&log);
        if lines as u64 + left >= HELLOS || Instant::now() >= counted_by {
            break (log, (lines, left));
        }
    };
    let elapsed = started.elapsed();
    let allowed = 10 * (elapsed.as_secs() as usize + 2);
    eprintln!("{HELLOS} IP-SNI hellos in {elapsed:?}: {sni_lines} rustls lines, {left_out} left out");
    assert!(sni_lines >= 1, "rustls' warning is kept within budget, not silenced:\n{log}");
    assert!(sni_lines <= allowed, "{sni_lines} rustls lines in {elapsed:?} (at most {allowed})");
    assert!(sni_lines as u64 + left_out >= HELLOS, "every line written or counted: {sni_lines} + {left_out}");
    assert_eq!(http1_status_over_tls(&t).await, 200, "a good client is served");
}

async fn http1_status_over_tls(t: &Target) -> u16 {
    let io = tls_h2_from("127.0.3.8", t.addr(), t.ca.as_deref().expect("tls")).await;
    let alpn_h2 = io.get_ref().1.alpn_protocol() == Some(b"h2");
    assert!(alpn_h2, "the helper negotiates h2");
    let (mut send, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::get(format!("https://wif.example.com{}", root_keys())).body(()).unwrap();
    let (resp, _) = send.send_request(req, true).expect("send");
    resp.await.expect("response").status().as_u16()
}

/// An h2 connection from a raw socket, with the `h2` crate's client: the
/// connection's task is returned so a test can see it end.
async fn h2_client(t: &Target, source: &str) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let io = tcp_from(source, t.addr()).await;
    let (send, conn) = h2::client::handshake(io).await.expect("h2c handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, task)
}

fn h2_get_to(scheme: &str, headers: usize) -> http::Request<()> {
    let mut req = http::Request::get(format!("{scheme}://wif.example.com{}", root_keys()));
    for i in 0..headers {
        req = req.header(format!("x-h-{i}"), "v");
    }
    req.body(()).unwrap()
}

/// h2 requests held to what HTTP/1.1 gets: a GET that ends with an empty
/// DATA frame carrying END_STREAM is served; one with a body gets `400`
/// and the connection is closed (GOAWAY), as every `400` closes it;
/// `:scheme ftp` gets `400`; more than `max_headers` headers get `431`.
#[tokio::test]
async fn h2_requests_are_held_to_the_http1_rules() {
    let t = Target::start("max_headers = 64", false).await;
    let (mut send, _task) = h2_client(&t, "127.0.3.9").await;
    // HEADERS without END_STREAM, then an empty DATA frame with it.
    let (resp, mut body) = send.send_request(h2_get_to("http", 0), false).expect("send");
    body.send_data(Bytes::new(), true).expect("empty data");
    assert_eq!(resp.await.expect("response").status(), 200, "empty END_STREAM DATA is no body");
    let (resp, _) = send.send_request(h2_get_to("http", 100), true).expect("send");
    assert_eq!(resp.await.expect("response").status(), 431, "100 headers");
    let (resp, _) = send.send_request(h2_get_to("https", 10), true).expect("send");
    assert_eq!(resp.await.expect("response").status(), 200, "still open, https scheme and 10 headers served");
    assert_eq!(t.denied("head_too_large").await, 1);
    // A 400 closes the connection, as on HTTP/1.1.
    let (resp, _) = send.send_request(h2_get_to("ftp", 0), true).expect("send");
    assert_eq!(resp.await.expect("response").status(), 400, ":scheme ftp");
    assert_eq!(t.denied("malformed").await, 1);

    // A body: 400, then the connection goes.
    let (mut send, task) = h2_client(&t, "127.0.3.10").await;
    let (resp, mut body) = send.send_request(h2_get_to("http", 0), false).expect("send");
    body.send_data(Bytes::from_static(b"x"), true).expect("data");
    assert_eq!(resp.await.expect("response").status(), 400, "a body");
    tokio::time::timeout(Duration::from_secs(3), task).await.expect("the connection closed after a body").unwrap();
    assert_eq!(t.denied("body").await, 1);
}

/// A busy but well-behaved h2 client (a load generator, an ingress
/// multiplexing its clients): 1,500 requests on one connection, ten at a
/// time, as fast as they are answered, are all served; no stream budget
/// cuts it (at first the HEADERS budget allowed 200, then 100 a second).
#[tokio::test]
async fn a_fast_h2_client_on_one_connection_is_not_cut() {
    const REQUESTS: usize = 1500;
    let t = Target::start("", false).await;
    let (send, _task) = h2_client(&t, "127.0.3.11").await;
    let mut ok = 0;
    for _ in 0..REQUESTS / 10 {
        let mut waiting = Vec::new();
        for _ in 0..10 {
            let mut send = match send.clone().ready().await {
                Ok(s) => s,
                Err(e) => panic!("after {ok} answers: {e}\n{}", t.p.log_text()),
            };
            let (resp, _) = send.send_request(h2_get_to("https", 0), true).expect("send");
            waiting.push(resp);
        }
        for resp in waiting {
            let resp = match resp.await {
                Ok(r) => r,
                Err(e) => {
                    let m = String::from_utf8_lossy(&get(t.p.admin, "/metrics").await.body).into_owned();
                    let cuts: Vec<&str> =
                        m.lines().filter(|l| l.starts_with("wif_proxy_denied") && !l.ends_with(" 0")).collect();
                    panic!("after {ok} answers: {e}; refusals: {cuts:?}")
                }
            };
            ok += usize::from(resp.status() == 200);
        }
    }
    assert_eq!(ok, REQUESTS);
    assert_eq!(t.denied("stream_flood").await, 0);
}
