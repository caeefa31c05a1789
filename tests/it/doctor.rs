//! `wif-proxy doctor` against the proxy itself (TLS from a test CA, the
//! issuer stand-in behind it) and, for answers the proxy never gives
//! (redirects, non-JSON), against the stand-in over TLS directly.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::pki::Pki;
use crate::common::*;

fn n_of(bytes: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![0xC5u8; bytes])
}

fn rsa(kid: &str, bytes: usize) -> Value {
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n_of(bytes), "e": "AQAB"})
}

fn keys(list: Vec<Value>) -> Behavior {
    Behavior::Body { body: json!({ "keys": list }).to_string(), cache_control: Some("max-age=300".into()) }
}

struct Setup {
    _si: StandIn,
    proxy: TestProxy,
    dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    chain_last: std::path::PathBuf,
}

async fn setup() -> Setup {
    let si = StandIn::start().await;
    let mut no_use = rsa("a", 256);
    no_use.as_object_mut().unwrap().remove("use");
    si.set(&ns_keys("nouse"), keys(vec![no_use]));
    si.set(&ns_keys("dupkid"), keys(vec![rsa("same", 256), rsa("same", 256)]));
    si.set(&ns_keys("rsa1024"), keys(vec![rsa("small", 128)]));
    si.set(&ns_keys("eddsa"), keys(vec![json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "use": "sig", "alg": "EdDSA", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})]));
    si.set(&ns_keys("many"), keys((0..150).map(|i| rsa(&format!("k{i}"), 256)).collect()));
    si.set(&ns_keys("slow"), Behavior::Slow(Duration::from_millis(6500), Box::new(Behavior::Vault)));
    si.set(
        &ns_discovery("mismatch"),
        Behavior::Body {
            body: standin::discovery("http://127.0.0.1:8200", &ns_discovery("mismatch"))
                .replace("\"jwks_uri\":\"http://127.0.0.1:8200", "\"jwks_uri\":\"https://wif.example.com"),
            cache_control: Some("max-age=300".into()),
        },
    );
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (leaf, key) = pki.leaf(&["wif.example.com"], -1, 60);
    // The served chain ends with the CA certificate: the AWS thumbprint's subject.
    std::fs::write(dir.path().join("chain.pem"), format!("{leaf}{}", pki.ca_pem)).unwrap();
    std::fs::write(dir.path().join("key.pem"), key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
    let namespaces = ["good", "mismatch", "nouse", "dupkid", "rsa1024", "eddsa", "many", "slow"];
    let issuer = vault_issuer("vault", &si.origin(), &namespaces)
        .replace("upstream_timeout = \"1s\"", "upstream_timeout = \"10s\"");
    let proxy = TestProxy::start(&config(
        "",
        &format!(
            "[tls]\nmode = \"files\"\n[[tls.certificate]]\ncert = \"{0}/chain.pem\"\nkey = \"{0}/key.pem\"\n[cache]\nmin_ttl = \"60s\"\n{issuer}",
            dir.path().display()
        ),
    ))
    .await;
    let (ca, chain_last) = (dir.path().join("ca.pem"), dir.path().join("ca.pem"));
    Setup { _si: si, proxy, dir, ca, chain_last }
}

/// Runs the doctor binary (asynchronously: the proxy runs in this process).
async fn doctor(s: &Setup, url: &str, extra: Vec<String>) -> (Option<i32>, Value, String) {
    let connect_to = format!("wif.example.com:443:{}", s.proxy.addr);
    let out = tokio::process::Command::new(binary())
        .args(["doctor", url, "--json", "--connect-to", &connect_to])
        .args(&extra)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("doctor --json ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), v, stdout)
}

fn issuer_url(ns: &str) -> String {
    format!("https://wif.example.com/v1/{ns}/identity/oidc/plugins")
}

fn fails(v: &Value) -> Vec<String> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["message"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_good_issuer_and_prints_what_to_paste() {
    let s = setup().await;
    let ca = s.ca.to_str().unwrap().to_string();
    let (code, v, _) = doctor(&s, &issuer_url("good"), vec!["--ca".into(), ca.clone()]).await;
    assert_eq!(fails(&v), Vec::<String>::new(), "{v:#}");
    assert_eq!(code, Some(0));
    // Thumbprint: SHA-1 of the last certificate presented, as openssl computes it.
    let out = tokio::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha1", "-in", s.chain_last.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let openssl =
        String::from_utf8_lossy(&out.stdout).split('=').nth(1).unwrap().trim().replace(':', "").to_lowercase();
    assert_eq!(v["thumbprint"].as_str(), Some(openssl.as_str()));
    assert_eq!(openssl.len(), 40);
    // AWS snippets: the command and a trust policy with the right condition keys.
    let aws = &v["snippets"]["aws"];
    assert!(aws["command"].as_str().unwrap().contains(&format!("--url {} ", issuer_url("good"))));
    assert!(aws["command"].as_str().unwrap().ends_with(&format!("--thumbprint-list {openssl}")));
    let policy: Value = serde_json::from_str(&aws["trust_policy"].to_string()).unwrap();
    let st = &policy["Statement"][0];
    assert_eq!(st["Action"], "sts:AssumeRoleWithWebIdentity");
    let bare = "wif.example.com/v1/good/identity/oidc/plugins";
    assert_eq!(st["Condition"]["StringEquals"][format!("{bare}:aud")], "sts.amazonaws.com");
    assert!(st["Condition"]["StringEquals"][format!("{bare}:sub")].as_str().unwrap().starts_with("plugin-identity:"));
    assert!(st["Principal"]["Federated"].as_str().unwrap().ends_with(&format!(":oidc-provider/{bare}")));
    // GCP and Azure.
    assert!(v["snippets"]["gcp"]["command"]
        .as_str()
        .unwrap()
        .contains(&format!("--issuer-uri={}", issuer_url("good"))));
    assert_eq!(v["snippets"]["gcp"]["jwk_json"]["keys"][0]["kid"], "k1");
    assert!(v["snippets"]["azure"]["command"].as_str().unwrap().contains("--audiences api://AzureADTokenExchange"));
    // The human form says the same.
    let out = tokio::process::Command::new(binary())
        .args([
            "doctor",
            &issuer_url("good"),
            "--ca",
            &ca,
            "--connect-to",
            &format!("wif.example.com:443:{}", s.proxy.addr),
        ])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("result: ok") && text.contains("aws iam create-open-id-connect-provider"), "{text}");
    drop(s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_finds_each_problem_precisely() {
    let s = setup().await;
    let ca = s.ca.to_str().unwrap().to_string();
    let cases: Vec<(String, Vec<&str>, &str)> = vec![
        (
            issuer_url("mismatch"),
            vec![],
            "the document says \"http://127.0.0.1:8200/v1/mismatch/identity/oidc/plugins\"",
        ),
        (format!("{}/", issuer_url("good")), vec![], "ends with '/'"),
        (issuer_url("nouse"), vec!["--provider", "azure"], "no \"use\""),
        (issuer_url("dupkid"), vec![], "duplicate kid"),
        (issuer_url("rsa1024"), vec![], "RSA key of 1024 bits"),
        (issuer_url("eddsa"), vec!["--provider", "azure"], "Azure does not accept EdDSA"),
        (issuer_url("many"), vec![], "150 keys"),
        (issuer_url("slow"), vec![], "within 5 s"),
    ];
    let runs = cases.iter().map(|(url, extra, _)| {
        let mut args = vec!["--ca".to_string(), ca.clone()];
        args.extend(extra.iter().map(|a| a.to_string()));
        doctor(&s, url, args)
    });
    let results = futures_util::future::join_all(runs).await;
    for ((url, _, needle), (code, v, _)) in cases.iter().zip(results) {
        assert_eq!(code, Some(1), "{url}: {v:#}");
        assert!(
            fails(&v).iter().any(|m| m.contains(needle)),
            "{url}: no failure mentioning {needle:?} in {:#?}",
            fails(&v)
        );
    }
    // Missing "use" is only a warning when Azure is not involved.
    let (_, v, _) =
        doctor(&s, &issuer_url("nouse"), vec!["--ca".into(), ca.clone(), "--provider".into(), "aws".into()]).await;
    assert!(fails(&v).is_empty(), "{v:#}");
    // Without --ca the test CA is unknown: the chain does not verify.
    let (code, v, _) = doctor(&s, &issuer_url("good"), vec![]).await;
    assert_eq!(code, Some(1));
    assert!(fails(&v).iter().any(|m| m.contains("does not verify")), "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_refuses_redirects_and_non_json() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
    let si = StandIn::start_tls(pki.server_config(false)).await;
    si.set(&ns_discovery("moved"), Behavior::standby());
    si.set(&ns_discovery("html"), Behavior::Body { body: "<html>hello</html>".into(), cache_control: None });
    let base = format!("https://localhost:{}", si.addr.port());
    for (ns, needle) in [("moved", "answered 307 (a redirect)"), ("html", "not JSON")] {
        let out = tokio::process::Command::new(binary())
            .args([
                "doctor",
                &format!("{base}/v1/{ns}/identity/oidc/plugins"),
                "--json",
                "--ca",
                dir.path().join("ca.pem").to_str().unwrap(),
            ])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(fails(&v).iter().any(|m| m.contains(needle)), "{ns}: {v:#}");
        assert!(fails(&v).iter().any(|m| m.contains("explicit port")), "AWS refuses a port: {v:#}");
    }
    // Usage errors exit 2.
    let out = tokio::process::Command::new(binary()).args(["doctor", "--provider", "oracle"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_every_issuer_a_config_publishes() {
    let s = setup().await;
    let out = tokio::process::Command::new(binary())
        .args(["doctor", "--config", s.proxy.config_path().to_str().unwrap(), "--json", "--ca", s.ca.to_str().unwrap()])
        .args(["--connect-to", &format!("wif.example.com:443:{}", s.proxy.addr), "--provider", "aws"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "some namespaces are broken on purpose");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reports = v.as_array().expect("one report per published issuer");
    assert_eq!(reports.len(), 8);
    let good = reports.iter().find(|r| r["issuer"] == issuer_url("good")).expect("good");
    assert!(fails(good).is_empty(), "{good:#}");
    let bad = reports.iter().find(|r| r["issuer"] == issuer_url("rsa1024")).expect("rsa1024");
    assert!(!fails(bad).is_empty());
}
