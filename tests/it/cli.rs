//! The built binary: `check`, configuration errors, SIGHUP reload, graceful
//! shutdown.

use std::time::Duration;

use crate::common::*;

#[test]
fn check_lists_exactly_what_the_shipped_config_exposes() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml");
    let out = run_binary(&["check", "--config", shipped]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let exposed: Vec<&str> = stdout.lines().filter(|l| l.trim_start().starts_with("GET|HEAD")).collect();
    assert_eq!(exposed.len(), 2, "{stdout}");
    for doc in ["keys", "openid-configuration"] {
        let path = format!("/v1/identity/oidc/plugins/.well-known/{doc}");
        assert!(
            exposed.iter().any(|l| l.contains(&format!("GET|HEAD {path}  ->  http://127.0.0.1:8200{path}"))),
            "{stdout}"
        );
    }
}

#[test]
fn config_errors_name_file_line_field_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[server]\npublic_url = \"https://wif.example.com\"\n";
    let issuer = "[[issuer]]\nname = \"v\"\nkind = \"vault-plugin-wif\"\nupstream = \"http://127.0.0.1:8200\"\n";
    // (file text, substrings the message must contain)
    let cases: Vec<(String, Vec<&str>)> = vec![
        (format!("{base}bogus = 1\n{issuer}"), vec![":3:", "bogus"]),
        (format!("{base}header_read_timeout = \"5 parsecs\"\n{issuer}"), vec![":3:", "server.header_read_timeout", "5 parsecs"]),
        (format!("{base}listen = \"localhost\"\n{issuer}"), vec![":3:", "server.listen", "\"localhost\""]),
        (format!("{base}max_connections = -5\n{issuer}"), vec![":3:", "server.max_connections", "-5"]),
        (format!("{base}listen_backlog = 0\n{issuer}"), vec![":3:", "server.listen_backlog", "0"]),
        (base.to_string(), vec!["no [[issuer]]"]),
        (format!("{base}{issuer}namespaces = [\"a/../b\"]\n"), vec![":7:", "issuer[0].namespaces[0]", "a/../b", ".."]),
        (format!("{base}{issuer}namespaces = [\"a//b\"]\n"), vec![":7:", "namespaces[0]", "//"]),
        (format!("{base}{issuer}namespaces = [\"a%2fb\"]\n"), vec![":7:", "a%2fb", "'%'"]),
        (format!("{base}{issuer}namespaces = [\"a b\"]\n"), vec![":7:", "whitespace"]),
        (format!("{base}{issuer}namespaces = [\"\", \"sys\"]\n"), vec![":7:", "namespaces[1]", "\"sys\"", "reserved"]),
        (format!("{base}{issuer}namespaces = [\"ns1/identity\"]\n"), vec![":7:", "reserved"]),
        (format!("{base}{issuer}namespaces = [\"cubbyhole\"]\n"), vec!["reserved"]),
        (issuer.replace("vault-plugin-wif", "vault-magic").replace("[[issuer]]", &format!("{base}[[issuer]]")), vec![":5:", "issuer[0].kind", "vault-magic", "expected one of"]),
        (format!("{base}{}", issuer.replace("8200\"", "8200/v1\"")), vec![":6:", "issuer[0].upstream", "no path"]),
        (base.replace(".com\"", ".com/\"") + issuer, vec![":2:", "server.public_url", "trailing slash"]),
        (format!("{base}{issuer}{issuer}"), vec![":8:", "issuer[1].name", "another issuer"]),
        (format!("{base}[[issuer]]\nname = \"c\"\nkind = \"custom\"\nupstream = \"http://127.0.0.1:1\"\n"), vec!["custom needs paths"]),
        (format!("{base}[[issuer]]\nname = \"c\"\nkind = \"custom\"\nupstream = \"http://127.0.0.1:1\"\npaths = [\"/a/../b\"]\n"), vec![":7:", "paths[0]"]),
        (
            format!("{base}{issuer}[[issuer]]\nname = \"w\"\nkind = \"vault-plugin-wif\"\nupstream = \"http://127.0.0.1:8300\"\n"),
            vec!["both publish"],
        ),
        (format!("{base}{}", issuer.replace("http://127.0.0.1:8200", "https://127.0.0.1:8200")) + "upstream_ca = \"missing-ca.pem\"\n", vec!["upstream_ca", "missing-ca.pem"]),
        (format!("{base}[cache]\nmin_ttl = \"10m\"\n{issuer}"), vec![":4:", "cache.min_ttl", "max_ttl"]),
        (format!("{base}{issuer}upstream_timeout = 5\n"), vec![":7:", "upstream_timeout"]),
        ("[server\n".to_string(), vec![":1:"]),
        (format!("{base}{}", issuer.replace("\"http://127.0.0.1:8200\"", "[]")), vec![":6:", "issuer[0].upstream = []", "upstream is empty"]),
        (format!("{base}{}", issuer.replace("http://127.0.0.1:8200", "ftp://127.0.0.1:8200")), vec![":6:", "issuer[0].upstream", "ftp://127.0.0.1:8200", "unknown scheme"]),
        (format!("{base}{}", issuer.replace("\"http://127.0.0.1:8200\"", "[\"http://127.0.0.1:8200\",\n  \"tcp://127.0.0.1:8201\"]")), vec![":7:", "issuer[0].upstream[1]", "tcp://127.0.0.1:8201", "unknown scheme"]),
        (format!("{base}{issuer}upstream_bearer_token_file = \"no-such-token\"\n"), vec![":7:", "issuer[0].upstream_bearer_token_file", "no-such-token", "cannot read"]),
        (format!("{base}{issuer}upstream_host = \"a b\"\n"), vec![":7:", "issuer[0].upstream_host", "\"a b\"", "a Host is"]),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = run_binary(&["check", "--config", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "case {i} should fail:\n{text}\n{stderr}");
        assert!(stderr.contains(&format!("case{i}.toml")), "case {i}: message must name the file: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "case {i}: {stderr:?} should contain {n:?}\n{text}");
        }
    }
    // Running (not just checking) refuses to start on a bad file, too.
    let bad = dir.path().join("case0.toml");
    let out = run_binary(&["--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
}

#[tokio::test]
async fn sighup_reloads_and_rejects_bad_files_without_dropping_anything() {
    let si = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config("", &vault_issuer("vault", &si.origin(), &[""]))).unwrap();
    let p = Process::start(&path).await;
    assert_eq!(get(p.public, root_keys()).await.status, 200);
    assert_eq!(get(p.public, &ns_keys("ns1")).await.status, 404);

    // A client holding a keep-alive connection across the reload.
    let mut held = connect_from(None, p.public).await;
    let ka = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", root_keys());
    tokio::io::AsyncWriteExt::write_all(&mut held, ka.as_bytes()).await.unwrap();
    let first = read_until_quiet(&mut held, Duration::from_millis(200), Duration::from_secs(3)).await;
    assert_eq!(parse_responses(&first, false)[0].status, 200);

    std::fs::write(&path, config("", &vault_issuer("vault", &si.origin(), &["", "ns1"]))).unwrap();
    p.signal("HUP");
    p.wait_log("configuration reloaded").await;
    assert_eq!(get(p.public, &ns_keys("ns1")).await.status, 200);
    assert_eq!(si.count(root_keys()), 1, "the cached root document survived the reload");

    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\nnot valid").unwrap();
    p.signal("HUP");
    p.wait_log("configuration rejected").await;
    assert!(p.log_text().contains("proxy.toml"), "the rejection names the file");
    assert_eq!(get(p.public, &ns_keys("ns1")).await.status, 200, "the old configuration keeps serving");

    tokio::io::AsyncWriteExt::write_all(&mut held, ka.as_bytes()).await.unwrap();
    let again = read_until_quiet(&mut held, Duration::from_millis(200), Duration::from_secs(3)).await;
    assert_eq!(parse_responses(&again, false)[0].status, 200, "the held connection survived both reloads");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let si = StandIn::start().await;
    si.set(&ns_keys("slow"), Behavior::Slow(Duration::from_millis(1500), Box::new(Behavior::Vault)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let issuer = vault_issuer("vault", &si.origin(), &["slow"])
        .replace("upstream_timeout = \"1s\"", "upstream_timeout = \"3s\"");
    std::fs::write(&path, config("", &issuer)).unwrap();
    let mut p = Process::start(&path).await;
    let addr = p.public;
    let in_flight = tokio::spawn(async move { get(addr, &ns_keys("slow")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.signal("TERM");
    p.wait_log("draining").await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no new connections once draining");
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request completed: {}", r.text());
    assert_eq!(p.wait_exit(Duration::from_secs(5)).await, Some(0));
}

#[test]
fn every_example_config_passes_check() {
    // Each example is checked from a copy, beside generated PEM files for the
    // relative paths it names (in production they sit next to the config).
    let pki = pki::Pki::new();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).expect("deploy/examples") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let work = tempfile::tempdir().unwrap();
        for name in text.split('"').filter(|t| t.ends_with(".pem") && !t.starts_with('/')) {
            let pem = if name.contains("ca") {
                &pki.ca_pem
            } else if name.contains("key") {
                &pki.client_key_pem
            } else {
                &pki.client_pem
            };
            std::fs::write(work.path().join(name), pem).unwrap();
        }
        let copy = work.path().join(path.file_name().unwrap());
        std::fs::write(&copy, &text).unwrap();
        let out = run_binary(&["check", "--config", copy.to_str().unwrap()]);
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} examples");
}
