//! The real published range files in `../shared/data`, used as they are:
//! every format parses, prefix counts per filter match an independent count
//! made here from the raw JSON, and known addresses are classified right.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use crate::common::*;

fn data(name: &str) -> PathBuf {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data")).join(name);
    assert!(p.exists(), "missing {} (the shared data directory beside the project)", p.display());
    p
}

fn json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(data(name)).unwrap()).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Independent counts, straight from the JSON values.
fn aws_count(service: &str, region: &str) -> usize {
    let v = json("aws-ip-ranges.json");
    let mut set = BTreeSet::new();
    for (list, key) in [("prefixes", "ip_prefix"), ("ipv6_prefixes", "ipv6_prefix")] {
        for p in v[list].as_array().unwrap() {
            if (service.is_empty() || s(&p["service"]) == service) && (region.is_empty() || s(&p["region"]) == region) {
                set.insert(s(&p[key]).to_string());
            }
        }
    }
    set.len()
}

fn gcp_count(scope: &str) -> usize {
    let v = json("gcp-cloud.json");
    v["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| scope.is_empty() || s(&p["scope"]) == scope)
        .map(|p| if p["ipv4Prefix"].is_string() { s(&p["ipv4Prefix"]) } else { s(&p["ipv6Prefix"]) }.to_string())
        .collect::<BTreeSet<_>>()
        .len()
}

fn azure_count(tag: &str) -> usize {
    let v = json("azure-servicetags.json");
    let mut set = BTreeSet::new();
    for t in v["values"].as_array().unwrap() {
        if tag.is_empty() || s(&t["name"]) == tag {
            for p in t["properties"]["addressPrefixes"].as_array().unwrap() {
                set.insert(s(p).to_string());
            }
        }
    }
    set.len()
}

fn oracle_count(tag: &str) -> usize {
    let v = json("oracle-public-ip-ranges.json");
    let mut set = BTreeSet::new();
    for r in v["regions"].as_array().unwrap() {
        for c in r["cidrs"].as_array().unwrap() {
            if tag.is_empty() || c["tags"].as_array().unwrap().iter().any(|t| s(t) == tag) {
                set.insert(s(&c["cidr"]).to_string());
            }
        }
    }
    set.len()
}

fn text_count(name: &str) -> usize {
    std::fs::read_to_string(data(name)).unwrap().lines().filter(|l| !l.trim().is_empty()).collect::<BTreeSet<_>>().len()
}

/// Some address inside the first prefix of a list (its network address + 1).
fn inside(prefix: &str) -> String {
    let net: ipnet::IpNet = prefix.parse().unwrap();
    match net {
        ipnet::IpNet::V4(n) => std::net::Ipv4Addr::from(u32::from(n.network()) + 1).to_string(),
        ipnet::IpNet::V6(n) => std::net::Ipv6Addr::from(u128::from(n.network()) + 1).to_string(),
    }
}

#[test]
fn every_provider_file_parses_with_the_right_counts() {
    let dir = tempfile::tempdir().unwrap();
    let src = |name: &str, format: &str, file: &str, filter: &str| {
        format!(
            "[[ip_allow.source]]\nname = \"{name}\"\nformat = \"{format}\"\nfile = \"{}\"\n{filter}\n",
            data(file).display()
        )
    };
    let sources = [
        src("aws-all", "aws", "aws-ip-ranges.json", ""),
        src("aws-ec2-use1", "aws", "aws-ip-ranges.json", "services = [\"EC2\"]\nregions = [\"us-east-1\"]"),
        src("gcp-all", "gcp", "gcp-cloud.json", ""),
        src("gcp-usc1", "gcp", "gcp-cloud.json", "scopes = [\"us-central1\"]"),
        src("goog", "goog", "gcp-goog.json", ""),
        src("azure-aad", "azure", "azure-servicetags.json", "tags = [\"AzureActiveDirectory\"]"),
        src("azure-cloud", "azure", "azure-servicetags.json", "tags = [\"AzureCloud\"]"),
        src("azure-all", "azure", "azure-servicetags.json", ""),
        src("oracle-oci", "oracle", "oracle-public-ip-ranges.json", "tags = [\"OCI\"]"),
        src("cf-v4", "cidrs", "cloudflare-ips-v4.txt", ""),
        src("cf-v6", "cidrs", "cloudflare-ips-v6.txt", ""),
    ]
    .concat();
    let path = dir.path().join("ranges.toml");
    std::fs::write(
        &path,
        config(
            "",
            &format!("[ip_allow]\nmode = \"enforce\"\n{sources}{}", vault_issuer("v", "http://127.0.0.1:1", &[""])),
        ),
    )
    .unwrap();

    // Known addresses: one inside a prefix of each file, and one in none.
    let aws = json("aws-ip-ranges.json");
    let aws_ip = inside(s(&aws["prefixes"][0]["ip_prefix"]));
    let gcp = json("gcp-cloud.json");
    let gcp_ip = inside(s(&gcp["prefixes"][0]["ipv4Prefix"]));
    let azure = json("azure-servicetags.json");
    let aad = azure["values"].as_array().unwrap().iter().find(|t| t["name"] == "AzureActiveDirectory").unwrap();
    let aad_ip = inside(s(&aad["properties"]["addressPrefixes"][0]));
    let cf_ip = inside(std::fs::read_to_string(data("cloudflare-ips-v6.txt")).unwrap().lines().next().unwrap());
    let oracle = json("oracle-public-ip-ranges.json");
    let oci_ip = inside(s(&oracle["regions"][0]["cidrs"][0]["cidr"]));

    let out = run_binary(&[
        "ranges",
        "--config",
        path.to_str().unwrap(),
        &aws_ip,
        &gcp_ip,
        &aad_ip,
        &cf_ip,
        &oci_ip,
        "192.0.2.1",
        "2001:db8::1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let count = |name: &str| -> usize {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("source {name} ")))
            .unwrap_or_else(|| panic!("{name}: {stdout}"));
        line.split(": ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(count("aws-all"), aws_count("", ""));
    // The data README counts entries (8971 + 4373); AWS lists a prefix once
    // per service (AMAZON and EC2 ...), so the distinct prefixes are fewer.
    let aws_entries = aws["prefixes"].as_array().unwrap().len() + aws["ipv6_prefixes"].as_array().unwrap().len();
    assert_eq!(aws_entries, 8971 + 4373);
    assert!(count("aws-all") < aws_entries);
    assert_eq!(count("aws-ec2-use1"), aws_count("EC2", "us-east-1"));
    assert_eq!(count("gcp-all"), gcp_count(""));
    assert_eq!(count("gcp-usc1"), gcp_count("us-central1"));
    assert_eq!(count("goog"), 84);
    assert_eq!(count("azure-aad"), azure_count("AzureActiveDirectory"));
    assert_eq!(count("azure-cloud"), azure_count("AzureCloud"));
    assert_eq!(count("azure-all"), azure_count(""));
    assert_eq!(count("azure-all"), 50_887, "unique prefixes across the full Service Tags file");
    assert_eq!(count("oracle-oci"), oracle_count("OCI"));
    assert_eq!(count("cf-v4"), text_count("cloudflare-ips-v4.txt"));
    assert_eq!(count("cf-v6"), text_count("cloudflare-ips-v6.txt"));

    let verdict = |ip: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{ip}: ")))
            .unwrap_or_else(|| panic!("{ip}: {stdout}"))
            .to_string()
    };
    assert!(verdict(&aws_ip).contains("allowed by aws-all"), "{}", verdict(&aws_ip));
    assert!(verdict(&gcp_ip).contains("allowed by"), "{}", verdict(&gcp_ip));
    assert!(verdict(&aad_ip).contains("allowed by"), "{}", verdict(&aad_ip));
    assert!(verdict(&cf_ip).contains("allowed by cf-v6"), "{}", verdict(&cf_ip));
    assert!(verdict(&oci_ip).contains("allowed by"), "{}", verdict(&oci_ip));
    assert!(verdict("192.0.2.1").contains("denied"));
    assert!(verdict("2001:db8::1").contains("denied"));
}

#[test]
fn bad_range_sources_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!("format = \"aws\"\nfile = \"{}\"\nregions = [\"mars-1\"]", data("aws-ip-ranges.json").display()),
            "no prefixes matched",
        ),
        (
            format!("format = \"azure\"\nfile = \"{}\"", data("aws-ip-ranges.json").display()),
            "not an Azure Service Tags file",
        ),
        ("format = \"aws\"\nfile = \"/nonexistent/ranges.json\"".to_string(), "/nonexistent/ranges.json"),
        (
            format!("format = \"gcp\"\nfile = \"{}\"\ntags = [\"x\"]", data("gcp-cloud.json").display()),
            "has no tags filter",
        ),
        ("cidrs = [\"10.0.0.0/33\"]".to_string(), "ip_allow.source[0].cidrs[0]"),
        ("format = \"aws\"\nurl = \"http://ranges.example.com/ip-ranges.json\"".to_string(), "https"),
    ];
    for (i, (body, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        let text = config(
            "",
            &format!(
                "[ip_allow]\nmode = \"enforce\"\nstate_dir = \"state\"\n[[ip_allow.source]]\nname = \"s\"\n{body}\n{}",
                vault_issuer("v", "http://127.0.0.1:1", &[""])
            ),
        );
        std::fs::write(&path, text).unwrap();
        let out = run_binary(&["ranges", "--config", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "case {i}: {stderr}");
        assert!(stderr.contains(needle), "case {i}: {stderr:?} should mention {needle:?}");
    }
}

#[tokio::test]
async fn url_sources_refresh_and_survive_a_restart_without_network() {
    // A loopback "provider" serving a plain CIDR list.
    let si = StandIn::start().await;
    si.set("/ips-v4", Behavior::Body { body: "127.0.0.11/32\n".into(), cache_control: None });
    let state = tempfile::tempdir().unwrap();
    let text = config(
        "",
        &format!(
            "[ip_allow]\nmode = \"enforce\"\nrefresh = \"1s\"\nstate_dir = \"{}\"\n[[ip_allow.source]]\nname = \"cf\"\nformat = \"cidrs\"\nurl = \"{}/ips-v4\"\n{}",
            state.path().display(),
            si.origin(),
            vault_issuer("v", "http://127.0.0.1:1", &[""])
        ),
    );
    let p = TestProxy::start(&text).await;
    let allowed = |ip: &str| p.shared.snapshot().ranges.contains(ip.parse().unwrap());
    assert!(allowed("127.0.0.11"));
    assert!(!allowed("127.0.0.12"));
    // The provider changes its list: picked up at the next refresh.
    si.set("/ips-v4", Behavior::Body { body: "127.0.0.12/32\n".into(), cache_control: None });
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(allowed("127.0.0.12") && !allowed("127.0.0.11"));
    // A broken list is refused; the last good set stays.
    si.set("/ips-v4", Behavior::Body { body: "this is not a CIDR\n".into(), cache_control: None });
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(allowed("127.0.0.12"), "the last good set keeps serving");
    drop(p);
    // Restart with the provider unreachable: the persisted copy is used.
    si.stop();
    let p2 = TestProxy::start(&text).await;
    assert!(p2.shared.snapshot().ranges.contains("127.0.0.12".parse().unwrap()));
    // Without a persisted copy and without the network, start-up fails clearly.
    let empty = tempfile::tempdir().unwrap();
    let no_copy = text.replace(&state.path().display().to_string(), &empty.path().display().to_string());
    let cfg = empty.path().join("proxy.toml");
    std::fs::write(&cfg, no_copy).unwrap();
    let out = run_binary(&["ranges", "--config", cfg.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no usable persisted copy"), "{stderr}");
}

use std::time::Duration;
