//! The migration guide's commands run against a real proxy: every
//! ```` ```sh proxy-test ```` block of docs/migrating-from-ngrok.md, and its
//! proxy.toml, so the guide and the code cannot drift.

use crate::common::pki::Pki;
use crate::common::*;

const GUIDE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/migrating-from-ngrok.md");

/// Fenced blocks whose info string is exactly `info`.
fn blocks(markdown: &str, info: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(i)) if i.trim() == info => current = Some(String::new()),
            (Some(_), Some("")) => out.push(current.take().unwrap_or_default()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_guide_commands_work() {
    if !crate::acme::require("curl") {
        return;
    }
    let guide = std::fs::read_to_string(GUIDE).unwrap();
    let commands: Vec<String> = blocks(&guide, "sh proxy-test")
        .iter()
        .flat_map(|b| {
            b.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(commands.len() >= 4, "{commands:?}");
    let tomls = blocks(&guide, "toml proxy.toml");
    assert_eq!(tomls.len(), 1, "the guide shows one proxy.toml");

    // The guide's configuration, beside a Vault CA as the guide says.
    let pki = Pki::new();
    let etc = tempfile::tempdir().unwrap();
    std::fs::write(etc.path().join("vault-ca.pem"), &pki.ca_pem).unwrap();
    let guide_config = etc.path().join("proxy.toml");
    std::fs::write(&guide_config, &tomls[0]).unwrap();

    // A running proxy publishing the same documents, with a certificate for
    // wif.example.com from a test CA (ACME is proven elsewhere, against Pebble).
    let si = StandIn::start().await;
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = pki.leaf(&["wif.example.com"], -1, 30);
    std::fs::write(certs.path().join("c.pem"), format!("{cert}{}", pki.ca_pem)).unwrap();
    std::fs::write(certs.path().join("k.pem"), key).unwrap();
    std::fs::write(certs.path().join("ca.pem"), &pki.ca_pem).unwrap();
    let p = TestProxy::start(&config(
        "",
        &format!(
            "[tls]\nmode = \"files\"\n[[tls.certificate]]\ncert = \"{0}/c.pem\"\nkey = \"{0}/k.pem\"\n{1}",
            certs.path().display(),
            vault_issuer("vault", &si.origin(), &[""])
        ),
    ))
    .await;
    p.wait_ready().await;
    let ca = certs.path().join("ca.pem");
    let connect_to = format!("wif.example.com:443:{}", p.addr);

    for cmd in &commands {
        // Only the test environment differs: where the files are, which CA
        // to trust, and where wif.example.com is.
        let mut line = cmd.replace("/etc/wif-proxy/proxy.toml", guide_config.to_str().unwrap());
        if line.starts_with("wif-proxy doctor") {
            line = format!("{line} --ca {} --connect-to {connect_to}", ca.display());
        }
        if line.starts_with("curl ") {
            line = line.replacen("curl ", &format!("curl --cacert {} --connect-to {connect_to} ", ca.display()), 1);
        }
        let line = line.replacen("wif-proxy ", &format!("{} ", binary()), 1);
        let out = tokio::process::Command::new("sh").args(["-c", &line]).output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "guide command failed: {cmd}\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
        if cmd.starts_with("curl ") {
            let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{cmd}: {e}: {stdout}"));
            assert!(v.get("issuer").is_some() || v.get("keys").is_some(), "{cmd}: {stdout}");
        }
        if cmd.starts_with("wif-proxy check") {
            assert!(stdout.contains("/v1/identity/oidc/plugins/.well-known/keys"), "{stdout}");
        }
        if cmd.starts_with("wif-proxy doctor") {
            assert!(
                stdout.contains("aws iam create-open-id-connect-provider") && stdout.contains("result: ok"),
                "{stdout}"
            );
        }
    }
}
