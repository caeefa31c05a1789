//! TLS on the public listener, files mode: SNI per host, hot reload with a
//! held connection, refused replacements, protocol policy, handshake
//! timeout, HSTS, and the plain-HTTP listener's redirects.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::common::pki::{client_config, tls_connect, tls_request, Pki};
use crate::common::*;

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files { dir: tempfile::tempdir().unwrap() }
    }
    fn write(&self, name: &str, pair: &(String, String)) {
        std::fs::write(self.dir.path().join(format!("{name}.pem")), &pair.0).unwrap();
        std::fs::write(self.dir.path().join(format!("{name}-key.pem")), &pair.1).unwrap();
    }
    fn section(&self, names: &[&str]) -> String {
        names
            .iter()
            .map(|n| {
                format!(
                    "[[tls.certificate]]\ncert = \"{0}/{n}.pem\"\nkey = \"{0}/{n}-key.pem\"\n",
                    self.dir.path().display()
                )
            })
            .collect()
    }
}

fn tls_config(files: &Files, names: &[&str], extra: &str) -> String {
    format!(
        "[tls]\nmode = \"files\"\nreload_interval = \"100ms\"\nhandshake_timeout = \"500ms\"\n{extra}\n{}",
        files.section(names)
    )
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().as_ref().to_vec()
}

#[tokio::test]
async fn files_mode_serves_per_host_certificates_with_hsts() {
    let si = StandIn::start().await;
    let pki = Pki::new();
    let files = Files::new();
    let a = pki.leaf(&["a.example.com", "wif.example.com"], -1, 30);
    let b = pki.leaf(&["b.example.com", "*.b.example.com"], -1, 30);
    files.write("a", &a);
    files.write("b", &b);
    let p = TestProxy::start(&config(
        "",
        &format!("{}{}", tls_config(&files, &["a", "b"], ""), vault_issuer("v", &si.origin(), &[""])),
    ))
    .await;
    let client = client_config(&pki.ca_pem, &[b"http/1.1"]);
    for (sni, expected) in
        [("a.example.com", &a), ("wif.example.com", &a), ("b.example.com", &b), ("x.b.example.com", &b)]
    {
        let (mut tls, leaf) = tls_connect(p.addr, sni, client.clone()).await.unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(leaf, der_of(&expected.0), "{sni} got the wrong certificate");
        let r = tls_request(&mut tls, root_keys()).await.expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("strict-transport-security"), Some("max-age=31536000"));
    }
    // h2 over TLS (ALPN).
    let (tls, _) = tls_connect(p.addr, "wif.example.com", client_config(&pki.ca_pem, &[b"h2"])).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // Readiness reports expiry per host.
    let ready = p.wait_ready().await.json();
    assert!(ready["certificates"]["a.example.com"].is_string(), "{ready}");
    // A plain-HTTP client on the TLS port gets nothing useful.
    let out = raw(p.addr, &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]).await;
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
}

#[tokio::test]
async fn certificate_files_reload_without_touching_open_connections() {
    let si = StandIn::start().await;
    let pki = Pki::new();
    let files = Files::new();
    let first = pki.leaf(&["wif.example.com"], -1, 30);
    files.write("c", &first);
    let p = TestProxy::start(&config(
        "",
        &format!("{}{}", tls_config(&files, &["c"], ""), vault_issuer("v", &si.origin(), &[""])),
    ))
    .await;
    let client = client_config(&pki.ca_pem, &[b"http/1.1"]);
    let (mut held, leaf) = tls_connect(p.addr, "wif.example.com", client.clone()).await.unwrap();
    assert_eq!(leaf, der_of(&first.0));
    assert_eq!(tls_request(&mut held, root_keys()).await.unwrap().status, 200);

    // cert-manager rotates the pair in place.
    let second = pki.leaf(&["wif.example.com"], -1, 60);
    files.write("c", &second);
    let mut rotated = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, leaf) = tls_connect(p.addr, "wif.example.com", client.clone()).await.unwrap();
        if leaf == der_of(&second.0) {
            rotated = true;
            break;
        }
    }
    assert!(rotated, "new handshakes never saw the new certificate");
    assert_eq!(tls_request(&mut held, root_keys()).await.unwrap().status, 200, "the held connection keeps working");

    // Broken replacements are refused; the current pair keeps serving.
    let other = pki.leaf(&["wif.example.com"], -1, 30);
    let broken: Vec<(&str, (String, String))> = vec![
        ("garbage", ("not a certificate".into(), second.1.clone())),
        ("mismatched key", (second.0.clone(), other.1.clone())),
        ("expired", pki.leaf(&["wif.example.com"], -30, -1)),
        ("not yet valid", pki.leaf(&["wif.example.com"], 2, 30)),
    ];
    for (what, pair) in broken {
        files.write("c", &pair);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (_, leaf) = tls_connect(p.addr, "wif.example.com", client.clone()).await.unwrap();
        assert_eq!(leaf, der_of(&second.0), "{what}: the previous certificate must keep serving");
    }
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_with_strong_suites() {
    let si = StandIn::start().await;
    let pki = Pki::new();
    let files = Files::new();
    files.write("p", &pki.leaf(&["wif.example.com"], -1, 30));
    let p = TestProxy::start(&config(
        "",
        &format!("{}{}", tls_config(&files, &["p"], ""), vault_issuer("v", &si.origin(), &[""])),
    ))
    .await;
    let addr = p.addr.to_string();
    // Async: a blocking call here would starve the in-process proxy.
    let s_client = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new("openssl");
        cmd.args(["s_client", "-connect", &addr, "-servername", "wif.example.com"])
            .args(args)
            .stdin(std::process::Stdio::null());
        async move {
            let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
                .await
                .expect("openssl finished")
                .expect("openssl (scripts/test installs it)");
            String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
        }
    };
    let negotiated = |out: &str| out.contains("Cipher is ") && !out.contains("Cipher is (NONE)");
    for old in ["-tls1", "-tls1_1"] {
        let out = s_client(&[old, "-cipher", "ALL:@SECLEVEL=0"]).await;
        assert!(!negotiated(&out), "{old} must fail:\n{out}");
    }
    for weak in ["AES128-SHA", "AES256-SHA256", "ECDHE-RSA-AES128-SHA", "DES-CBC3-SHA"] {
        let out = s_client(&["-tls1_2", "-cipher", &format!("{weak}:@SECLEVEL=0")]).await;
        assert!(!negotiated(&out), "{weak} must be refused:\n{out}");
    }
    assert!(negotiated(&s_client(&["-tls1_2"]).await), "TLS 1.2 with a modern suite works");
    assert!(negotiated(&s_client(&["-tls1_3"]).await), "TLS 1.3 works");
}

#[tokio::test]
async fn a_client_that_never_says_hello_is_closed_at_the_handshake_timeout() {
    let si = StandIn::start().await;
    let pki = Pki::new();
    let files = Files::new();
    files.write("t", &pki.leaf(&["wif.example.com"], -1, 30));
    let p = TestProxy::start(&config(
        "idle_timeout = \"30s\"",
        &format!("{}{}", tls_config(&files, &["t"], ""), vault_issuer("v", &si.origin(), &[""])),
    ))
    .await;
    let started = std::time::Instant::now();
    let mut s = connect_from(None, p.addr).await;
    let out = read_until_quiet(&mut s, Duration::from_millis(100), Duration::from_secs(5)).await;
    assert!(out.is_empty());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(3), "closed after {took:?}");
    // A partial ClientHello does not extend it either.
    let mut s = connect_from(None, p.addr).await;
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    let started = std::time::Instant::now();
    let _ = read_until_quiet(&mut s, Duration::from_millis(100), Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn the_http_listener_redirects_allowlisted_paths_only() {
    let si = StandIn::start().await;
    let pki = Pki::new();
    let files = Files::new();
    files.write("h", &pki.leaf(&["wif.example.com"], -1, 30));
    let p = TestProxy::start(&config(
        "",
        &format!(
            "{}{}",
            tls_config(&files, &["h"], "http_listen = \"127.0.0.1:0\""),
            vault_issuer("v", &si.origin(), &[""])
        ),
    ))
    .await;
    let http = p.http.expect("http listener");
    let out = raw(
        http,
        format!("GET {} HTTP/1.1\r\nHost: evil.example.net\r\nConnection: close\r\n\r\n", root_keys()).as_bytes(),
    )
    .await;
    let r = parse_responses(&out, false).remove(0);
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://wif.example.com{}", root_keys()).as_str()),
        "built from public_url, never from Host"
    );
    for path in ["/v1/sys/health", "/", "/.well-known/acme-challenge/unknown-token", &format!("{}?x", root_keys())] {
        assert_eq!(request(http, "GET", path, &[]).await.status, 404, "{path}");
    }
    assert_eq!(request(http, "POST", root_keys(), &[]).await.status, 405);
    // h2c (prior knowledge) is held to the same rules: a GET that ends with
    // an empty DATA frame is redirected; one with a body gets `400` and its
    // connection is closed.
    let h2c = || async {
        let io = tokio::net::TcpStream::connect(http).await.unwrap();
        let (send, conn) = h2::client::handshake(io).await.expect("h2c handshake");
        (send, tokio::spawn(async move { drop(conn.await) }))
    };
    let get = || http::Request::get(format!("http://wif.example.com{}", root_keys())).body(()).unwrap();
    let (mut send, _task) = h2c().await;
    let (resp, mut body) = send.send_request(get(), false).expect("send");
    body.send_data(bytes::Bytes::new(), true).expect("empty data");
    assert_eq!(resp.await.expect("response").status(), 308, "empty END_STREAM DATA is no body");
    let (mut send, task) = h2c().await;
    let (resp, mut body) = send.send_request(get(), false).expect("send");
    body.send_data(bytes::Bytes::from_static(b"x"), true).expect("data");
    assert_eq!(resp.await.expect("response").status(), 400, "a body");
    tokio::time::timeout(Duration::from_secs(3), task).await.expect("the connection closed after a body").unwrap();
    // The http listener never fetches or serves documents.
    assert!(si.requests().iter().all(|r| r.target == root_keys() || r.target == root_discovery()));
}

#[tokio::test]
async fn tls_settings_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[tls]\nmode = \"files\"\n", "needs at least one [[tls.certificate]]"),
        ("[tls]\nmode = \"acme\"\n", "needs a [tls.acme] table"),
        ("[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"wif.example.com\"]\n", "cache_dir is required"),
        ("[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"wif\"]\ncache_dir = \"acme\"\n", "tls.acme.domains[0]"),
        ("[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"wif.example.com\"]\ncache_dir = \"acme\"\nchallenge = \"http-01\"\n", "needs tls.http_listen"),
        ("[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"wif.example.com\"]\ncache_dir = \"acme\"\ndirectory = \"http://acme.example.com/dir\"\n", "https URL"),
        ("[tls]\nmode = \"tls13\"\n", "expected one of off, files, acme"),
    ];
    for (i, (tls, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("tls{i}.toml"));
        std::fs::write(&path, config("", &format!("{tls}{}", vault_issuer("v", "http://127.0.0.1:1", &[""])))).unwrap();
        let out = run_binary(&["check", "--config", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "case {i}");
        assert!(stderr.contains(needle), "case {i}: {stderr:?} should mention {needle:?}");
    }
    // A files-mode start with a broken pair fails with the file named.
    let pki = Pki::new();
    let files = Files::new();
    files.write("x", &pki.leaf(&["wif.example.com"], -30, -1));
    let path = dir.path().join("expired.toml");
    std::fs::write(
        &path,
        config("", &format!("{}{}", tls_config(&files, &["x"], ""), vault_issuer("v", "http://127.0.0.1:1", &[""]))),
    )
    .unwrap();
    let out = run_binary(&["--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("x.pem") && stderr.contains("expired"), "{stderr}");
}

#[tokio::test]
async fn sslscan_finds_no_weak_protocol_or_cipher() {
    if !crate::acme::require("sslscan") {
        return;
    }
    let si = StandIn::start().await;
    let pki = Pki::new();
    let files = Files::new();
    files.write("s", &pki.leaf(&["wif.example.com"], -1, 30));
    let p = TestProxy::start(&config(
        "",
        &format!("{}{}", tls_config(&files, &["s"], ""), vault_issuer("v", &si.origin(), &[""])),
    ))
    .await;
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("sslscan")
            .args(["--no-colour", "--sni-name=wif.example.com", &p.addr.to_string()])
            .output(),
    )
    .await
    .expect("sslscan finished")
    .expect("sslscan ran");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    for proto in ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(proto))
            .unwrap_or_else(|| panic!("{proto} not reported:\n{text}"));
        assert!(line.contains("disabled"), "{line}\n{text}");
    }
    for proto in ["TLSv1.2", "TLSv1.3"] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(proto))
            .unwrap_or_else(|| panic!("{proto} not reported:\n{text}"));
        assert!(line.contains("enabled"), "{line}");
    }
    let accepted: Vec<&str> =
        text.lines().filter(|l| l.starts_with("Preferred") || l.starts_with("Accepted")).collect();
    assert!(!accepted.is_empty(), "{text}");
    for line in accepted {
        let strong =
            (line.contains("GCM") || line.contains("CHACHA20")) && (line.contains("TLSv1.3") || line.contains("ECDHE"));
        assert!(strong, "weak suite accepted: {line}");
    }
}

#[tokio::test]
async fn the_http_listener_counts_against_the_connection_caps() {
    let si = StandIn::start().await;
    let pki = Pki::new();
    let files = Files::new();
    files.write("cap", &pki.leaf(&["wif.example.com"], -1, 30));
    let p = TestProxy::start(&config(
        "max_connections_per_ip = 2\nidle_timeout = \"10s\"",
        &format!(
            "{}{}",
            tls_config(&files, &["cap"], "http_listen = \"127.0.0.1:0\""),
            vault_issuer("v", &si.origin(), &[""])
        ),
    ))
    .await;
    let http = p.http.expect("http listener");
    let req = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", root_keys());
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from(Some("127.0.0.20"), http).await;
        s.write_all(req.as_bytes()).await.unwrap();
        let out = read_until_quiet(&mut s, Duration::from_millis(100), Duration::from_secs(3)).await;
        assert_eq!(parse_responses(&out, false)[0].status, 308);
        held.push(s);
    }
    let out = raw_from(Some("127.0.0.20"), http, req.as_bytes()).await;
    assert!(out.is_empty(), "a third connection from one address is closed: {}", String::from_utf8_lossy(&out));
    assert_eq!(parse_responses(&raw_from(Some("127.0.0.21"), http, req.as_bytes()).await, false)[0].status, 308);
}
