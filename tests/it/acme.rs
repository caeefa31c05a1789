//! Real ACME issuance against Pebble (Debian's `pebble` and
//! `pebble-challtestsrv`, started here on loopback).
//!
//! The proxy starts without a certificate, obtains one over TLS-ALPN-01 (the
//! validation connection comes from 127.0.0.1, which the source-address
//! allowlist does not admit: ACME validation must pass it anyway), serves the
//! issuer's JWKS to a client that trusts only Pebble's issuing root, and after
//! a restart with Pebble gone serves the cached certificate.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::common::pki::{client_config, Pki};
use crate::common::*;

/// The tool is there, or (outside CI) the test is skipped with a note.
pub fn require(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{tool} is required in CI (scripts/test installs it)");
        eprintln!("skipping: {tool} is not installed (scripts/test installs it)");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

/// GET over TLS with the given trust, from an optional source address.
async fn https_get(
    addr: SocketAddr,
    source: Option<&str>,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let sock = TcpSocket::new_v4()?;
    if let Some(src) = source {
        sock.bind(format!("{src}:0").parse().unwrap())?;
    }
    let tcp = sock.connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
    let leaf =
        tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec()).unwrap_or_default();
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    Ok((out, leaf))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_tls_alpn_01_against_pebble_then_restart_from_cache() {
    pebble_flow(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_http_01_against_pebble_through_the_plain_http_listener() {
    pebble_flow(true).await;
}

async fn pebble_flow(http01: bool) {
    if !require("pebble") || !require("pebble-challtestsrv") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    // Pebble's own HTTPS listener certificate, from a throw-away CA.
    let pki = Pki::new();
    std::fs::write(dir.join("pebble.pem"), &pki.server_pem).unwrap();
    std::fs::write(dir.join("pebble-key.pem"), &pki.server_key_pem).unwrap();
    std::fs::write(dir.join("directory-ca.pem"), &pki.ca_pem).unwrap();
    let (dns, challtest_mgmt, acme, acme_mgmt, tls_port, http_port) =
        (free_port(), free_port(), free_port(), free_port(), free_port(), free_port());
    std::fs::write(
        dir.join("pebble.json"),
        format!(
            r#"{{"pebble":{{"listenAddress":"127.0.0.1:{acme}","managementListenAddress":"127.0.0.1:{acme_mgmt}","certificate":"{0}/pebble.pem","privateKey":"{0}/pebble-key.pem","httpPort":{http_port},"tlsPort":{tls_port},"ocspResponderURL":"","externalAccountBindingRequired":false}}}}"#,
            dir.display()
        ),
    )
    .unwrap();
    let mut challtest = tokio::process::Command::new("pebble-challtestsrv")
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-http01", "", "-https01", "", "-tlsalpn01", ""])
        .args(["-dns01", &format!("127.0.0.1:{dns}"), "-management", &format!("127.0.0.1:{challtest_mgmt}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("pebble-challtestsrv");
    let mut pebble = tokio::process::Command::new("pebble")
        .args(["-config", dir.join("pebble.json").to_str().unwrap(), "-dnsserver", &format!("127.0.0.1:{dns}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("pebble");
    wait_port(acme).await;
    wait_port(challtest_mgmt).await;

    let si = StandIn::start().await;
    si.set_public_url("https://wif.test");
    // HTTP-01: Pebble asks http://wif.test:<httpPort>/.well-known/acme-challenge/<token>,
    // which is the proxy's plain-HTTP listener.
    let (http_listen, challenge) = if http01 {
        (format!("http_listen = \"127.0.0.1:{http_port}\"\n"), "challenge = \"http-01\"\n".to_string())
    } else {
        (String::new(), String::new())
    };
    let cfg_path = dir.join("proxy.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{tls_port}\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"https://wif.test\"\n\
             [tls]\nmode = \"acme\"\n{http_listen}[tls.acme]\ndomains = [\"wif.test\"]\ncontact = [\"ops@wif.test\"]\n\
             directory = \"https://127.0.0.1:{acme}/dir\"\ndirectory_ca = \"directory-ca.pem\"\ncache_dir = \"acme\"\n{challenge}\
             [ip_allow]\nmode = \"enforce\"\n[[ip_allow.source]]\nname = \"clients\"\ncidrs = [\"127.0.0.2/32\"]\n{}",
            vault_issuer("vault", &si.origin(), &[""])
        ),
    )
    .unwrap();

    // 1. Starts without a certificate: not ready, and says why.
    let first = Process::start(&cfg_path).await;
    let r = get(first.admin, "/readyz").await;
    if r.status == 503 {
        assert!(r.text().contains("wif.test"), "{}", r.text());
    }
    // 2. Obtains one.
    let mut ready = false;
    for _ in 0..600 {
        if get(first.admin, "/readyz").await.status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "no certificate from Pebble: {}\n{}", get(first.admin, "/readyz").await.text(), first.log_text());
    // The validation really went through the listener for the chosen challenge.
    if http01 {
        assert!(first.log_text().contains("\"cache\":\"acme-challenge\""), "{}", first.log_text());
    } else {
        assert!(first.log_text().contains("answered an ACME TLS-ALPN-01 validation"), "{}", first.log_text());
    }

    // 3. A client that trusts only Pebble's issuing root fetches the JWKS.
    let root = {
        let (raw, _) = https_get(
            format!("127.0.0.1:{acme_mgmt}").parse().unwrap(),
            None,
            "127.0.0.1",
            client_config(&pki.ca_pem, &[]),
            "/roots/0",
        )
        .await
        .expect("Pebble's issuing root");
        let text = String::from_utf8_lossy(&raw).to_string();
        text[text.find("-----BEGIN").expect("PEM")..].to_string()
    };
    let trust = client_config(&root, &[b"http/1.1"]);
    let public: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let (raw, leaf) =
        https_get(public, Some("127.0.0.2"), "wif.test", Arc::clone(&trust), root_keys()).await.expect("https fetch");
    let resp = parse_responses(&raw, false).remove(0);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), standin::jwks("k1"));
    assert_eq!(resp.header("strict-transport-security"), Some("max-age=31536000"));
    // The allowlist still applies to everybody else (the handshake is refused).
    assert!(https_get(public, None, "wif.test", Arc::clone(&trust), root_keys())
        .await
        .map(|(raw, _)| raw.is_empty())
        .unwrap_or(true));
    // Account and certificate cached with mode 0600.
    // Readiness follows "deployed", which rustls-acme reports before its
    // cache store finishes: wait for the stored file; skip in-flight temp files.
    let finished = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir.join("acme"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with(".tmp-"))
            .collect()
    };
    for _ in 0..100 {
        if finished().iter().any(|p| p.file_name().unwrap().to_string_lossy().starts_with("cert-")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cached = finished();
    assert!(cached.iter().any(|p| p.file_name().unwrap().to_string_lossy().starts_with("cert-")), "{cached:?}");
    for p in &cached {
        assert_eq!(std::fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600, "{p:?}");
    }
    assert!(get(first.admin, "/readyz").await.json()["certificates"]["wif.test"].is_string());

    // 4. Restart with Pebble gone: the cached certificate is served.
    let mut first = first;
    first.signal("TERM");
    first.wait_exit(Duration::from_secs(10)).await;
    let _ = pebble.kill().await;
    let _ = challtest.kill().await;
    let second = Process::start(&cfg_path).await;
    let mut ready = false;
    for _ in 0..100 {
        if get(second.admin, "/readyz").await.status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "restart did not reuse the cached certificate: {}", second.log_text());
    let (raw, leaf_again) =
        https_get(public, Some("127.0.0.2"), "wif.test", trust, root_keys()).await.expect("https after restart");
    assert_eq!(parse_responses(&raw, false).remove(0).status, 200);
    assert_eq!(leaf_again, leaf, "the same certificate, from the cache");
}
