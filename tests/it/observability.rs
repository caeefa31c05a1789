//! Metrics scraped by a real Prometheus, promtool on the exposition and the
//! alert rules, the dashboard's queries, and readiness that means something.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::acme::require;
use crate::common::*;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

/// Percent-encodes a query-string value.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn promql(prometheus: std::net::SocketAddr, query: &str) -> Option<f64> {
    let r = get(prometheus, &format!("/api/v1/query?query={}", encode(query))).await;
    // While it starts, Prometheus answers 503 in plain text: not yet.
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    let value = v["data"]["result"].get(0)?["value"][1].as_str()?.to_string();
    value.parse().ok()
}

/// Metric family names in an exposition (histogram series folded).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap_or("").to_string())
        .collect()
}

/// `wif_proxy_*` names used in a rules or dashboard file.
fn names_used(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"wif_proxy_[a-z_]+").unwrap();
    re.find_iter(text)
        .map(|m| {
            let n = m.as_str();
            ["_bucket", "_sum", "_count"].iter().find_map(|s| n.strip_suffix(s)).unwrap_or(n).to_string()
        })
        .collect()
}

#[tokio::test]
async fn alert_rules_pass_promtool_check_and_unit_tests() {
    if !require("promtool") {
        return;
    }
    let dir = format!("{DEPLOY}/prometheus");
    for args in [vec!["check", "rules", "alerts.yml"], vec!["test", "rules", "alerts_test.yml"]] {
        let out = tokio::process::Command::new("promtool").args(&args).current_dir(&dir).output().await.unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let test = std::fs::read_to_string(format!("{dir}/alerts_test.yml")).unwrap();
    let rules = std::fs::read_to_string(format!("{dir}/alerts.yml")).unwrap();
    for alert in regex::Regex::new(r"alert: (\w+)").unwrap().captures_iter(&rules) {
        assert!(test.contains(&format!("alertname: {}", &alert[1])), "no unit test for {}", &alert[1]);
    }
}

#[tokio::test]
async fn a_live_scrape_is_clean_and_has_every_metric_rules_and_dashboard_use() {
    if !require("promtool") {
        return;
    }
    let si = StandIn::start().await;
    // TLS on, so the certificate gauges exist too.
    let pki = crate::common::pki::Pki::new();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = pki.leaf(&["wif.example.com"], -1, 30);
    std::fs::write(certs.path().join("c.pem"), cert).unwrap();
    std::fs::write(certs.path().join("k.pem"), key).unwrap();
    let p = TestProxy::start(&config(
        "",
        &format!(
            "[tls]\nmode = \"files\"\n[[tls.certificate]]\ncert = \"{0}/c.pem\"\nkey = \"{0}/k.pem\"\n\
             [ip_allow]\nmode = \"report\"\n[[ip_allow.source]]\nname = \"office\"\ncidrs = [\"192.0.2.0/24\"]\n{1}",
            certs.path().display(),
            vault_issuer("vault", &si.origin(), &["", "ns1"])
        ),
    ))
    .await;
    p.wait_ready().await;
    let client = crate::common::pki::client_config(&pki.ca_pem, &[b"http/1.1"]);
    let (mut tls, _) = crate::common::pki::tls_connect(p.addr, "wif.example.com", client).await.unwrap();
    assert_eq!(crate::common::pki::tls_request(&mut tls, root_keys()).await.unwrap().status, 200);
    assert_eq!(crate::common::pki::tls_request(&mut tls, "/v1/sys/health").await.unwrap().status, 404);
    let scrape = get(p.admin, "/metrics").await;
    assert_eq!(scrape.status, 200);
    assert!(scrape.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = scrape.text();
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool has remarks: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Values the traffic must have produced, and state gauges.
    for needle in [
        "wif_proxy_requests_total{issuer=\"vault\",document=\"keys\",status_class=\"2xx\"} 1",
        "wif_proxy_denied_requests_total{reason=\"path\"} 1",
        "wif_proxy_jwks_keys{issuer=\"vault\",namespace=\"root\"} 1",
        "wif_proxy_jwks_keys{issuer=\"vault\",namespace=\"ns1\"} 1",
        "wif_proxy_issuer_mismatch{issuer=\"vault\",namespace=\"root\"} 0",
        "wif_proxy_upstream_up{issuer=\"vault\"} 1",
        "wif_proxy_ip_ranges_prefixes{source=\"office\"} 1",
        "wif_proxy_build_info{version=",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "wif_proxy_certificate_expiry_timestamp_seconds{host=\"wif.example.com\"}",
        "wif_proxy_connections_active 1",
        // The lock-free latency histograms: both answers timed, every fetch timed.
        "wif_proxy_request_duration_seconds_bucket{le=\"+Inf\"} 2\n",
        "wif_proxy_request_duration_seconds_count 2\n",
        "wif_proxy_upstream_duration_seconds_bucket{le=\"+Inf\",issuer=\"vault\"} ",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let fetches = text
        .lines()
        .find_map(|l| l.strip_prefix("wif_proxy_upstream_duration_seconds_count{issuer=\"vault\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(fetches.is_some_and(|n| n >= 2), "upstream fetches not timed: {fetches:?}");
    // No raw path, address or user agent ever becomes a label.
    assert!(!text.contains("/v1/sys/health") && !text.contains("127.0.0.1"), "{text}");

    let have = families(&text);
    for file in ["prometheus/alerts.yml", "grafana/wif-proxy.json"] {
        let used = names_used(&std::fs::read_to_string(format!("{DEPLOY}/{file}")).unwrap());
        assert!(!used.is_empty());
        for name in used {
            assert!(have.contains(&name), "{file} uses {name}, which /metrics does not expose");
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DEPLOY}/grafana/wif-proxy.json")).unwrap()).unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_expected_values() {
    if !require("prometheus") {
        return;
    }
    let si = StandIn::start().await;
    let p = TestProxy::start(&config("", &vault_issuer("vault", &si.origin(), &[""]))).await;
    p.wait_ready().await;
    // Known traffic: 7 keys fetched, 5 denied paths, 3 wrong methods.
    for _ in 0..7 {
        assert_eq!(p.get(root_keys()).await.status, 200);
    }
    for i in 0..5 {
        assert_eq!(p.get(&format!("/v1/sys/health{i}")).await.status, 404);
    }
    for _ in 0..3 {
        assert_eq!(request(p.addr, "POST", root_keys(), &[]).await.status, 405);
    }
    let work = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        work.path().join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: wif-proxy\n    static_configs:\n      - targets: [\"{}\"]\n", p.admin),
    )
    .unwrap();
    let mut prom = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", work.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", work.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus");
    let prometheus: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let expect = [
        ("sum(wif_proxy_requests_total{document=\"keys\",status_class=\"2xx\"})", 7.0),
        ("sum(wif_proxy_denied_requests_total{reason=\"path\"})", 5.0),
        ("sum(wif_proxy_denied_requests_total{reason=\"method\"})", 3.0),
        ("wif_proxy_upstream_up{issuer=\"vault\"}", 1.0),
        ("wif_proxy_jwks_keys{namespace=\"root\"}", 1.0),
        ("up{job=\"wif-proxy\"}", 1.0),
    ];
    let mut last = Vec::new();
    for _ in 0..120 {
        last.clear();
        for (q, want) in &expect {
            let got = if tokio::net::TcpStream::connect(prometheus).await.is_ok() {
                promql(prometheus, q).await
            } else {
                None
            };
            last.push((q, got, want));
        }
        if last.iter().all(|(_, got, want)| *got == Some(**want)) {
            let _ = prom.kill().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = prom.kill().await;
    panic!("Prometheus never saw the expected values: {last:?}");
}

#[tokio::test]
async fn readiness_waits_for_the_first_fetch_and_names_the_cause() {
    let si = StandIn::start().await;
    si.set(root_keys(), Behavior::Slow(Duration::from_millis(800), Box::new(Behavior::Vault)));
    // A timeout well past the stand-in's delay: the start-up fetch is the
    // only one, and it must not fail on a slow machine.
    let issuer =
        vault_issuer("vault", &si.origin(), &[""]).replace("upstream_timeout = \"1s\"", "upstream_timeout = \"5s\"");
    let p = TestProxy::start(&config("", &issuer)).await;
    let r = get(p.admin, "/readyz").await;
    assert_eq!(r.status, 503);
    let v = r.json();
    assert_eq!(v["ready"], false);
    assert!(v["not_ready"].to_string().contains(root_keys()), "{v}");
    assert!(v["not_ready"].to_string().contains("not fetched yet"), "{v}");
    let r = p.wait_ready().await.json();
    assert_eq!(r["documents"]["servable"], 2);
    assert_eq!(r["not_ready"], serde_json::json!([]));
}

/// The access log, as the binary writes it: one JSON line per request with
/// what was asked and what was answered; denied requests over
/// `log.denied_lines_per_second` are counted in a summary line instead, so
/// the lines plus the counts add up to the requests sent.
#[tokio::test]
async fn access_log_lines_and_the_denied_line_budget() {
    let si = standin::StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let rest = format!(
        "[log]\naccess = true\ndenied_lines_per_second = 5\n[rate_limit]\nenabled = false\n{}",
        vault_issuer("vault", &si.origin(), &[""])
    );
    std::fs::write(&path, config("", &rest)).unwrap();
    let p = Process::start(&path).await;

    let served = raw_from(
        Some("127.0.0.2"),
        p.public,
        format!("GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", root_keys()).as_bytes(),
    )
    .await;
    let served = &parse_responses(&served, false)[0];
    assert_eq!(served.status, 200);
    let method = raw_from(Some("127.0.0.3"), p.public, b"BREW /pot\x7e HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(parse_responses(&method, false)[0].status, 405);

    // A flood of denied requests on one keep-alive connection.
    const FLOOD: usize = 300;
    let mut s = connect_from(Some("127.0.0.4"), p.public).await;
    s.write_all("GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n".repeat(FLOOD).as_bytes()).await.unwrap();
    let answers = read_until_quiet(&mut s, Duration::from_millis(300), Duration::from_secs(10)).await;
    assert_eq!(parse_responses(&answers, false).iter().filter(|r| r.status == 404).count(), FLOOD);

    let access = |log: &str| -> Vec<serde_json::Value> {
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            // Access lines, and the summary of what was left out.
            .filter(|v| v["target"] == "access" || v["target"] == "log")
            .collect()
    };
    // Lines and left-out counts add up once the log thread has reported.
    let mut settled = None;
    for _ in 0..100 {
        let lines = access(&p.log_text());
        let denied_lines = lines.iter().filter(|v| v["deny"].as_str().is_some_and(|d| !d.is_empty())).count();
        let left_out: u64 = lines.iter().filter_map(|v| v["denied_over_budget"].as_u64()).sum();
        // Every denied request (the 405 and the flood) is a line or counted.
        if denied_lines as u64 + left_out == FLOOD as u64 + 1 {
            settled = Some((lines, denied_lines));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (lines, denied_lines) = settled.unwrap_or_else(|| panic!("counts never added up:\n{}", p.log_text()));
    // The flood took well under a few seconds: 5 lines a second allow a handful.
    assert!((2..=20).contains(&denied_lines), "at most 5 denied lines a second, got {denied_lines}");
    assert!(lines.iter().all(|v| v["queue_full"].as_u64().unwrap_or(0) == 0), "nothing dropped");

    let ok = lines.iter().find(|v| v["status"] == 200).expect("served line");
    assert_eq!(ok["client"], "127.0.0.2");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["uri"], root_keys());
    assert_eq!(ok["version"], "HTTP/1.1");
    assert_eq!(ok["bytes"].as_u64(), Some(served.body.len() as u64));
    assert_eq!(ok["issuer"], "vault");
    assert_eq!(ok["doc"], "keys");
    // Start-up prefetch may or may not have cached it before the request.
    assert!(ok["cache"] == "miss" || ok["cache"] == "hit", "{ok}");
    assert_eq!(ok["deny"], "");
    assert!(ok["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));

    let brew = lines.iter().find(|v| v["client"] == "127.0.0.3").expect("denied line");
    assert_eq!((brew["method"].as_str(), brew["status"].as_u64()), (Some("BREW"), Some(405)));
    assert_eq!((brew["uri"].as_str(), brew["deny"].as_str()), (Some("/pot~"), Some("method")));
    let flood = lines.iter().find(|v| v["client"] == "127.0.0.4").expect("flood line");
    assert_eq!((flood["uri"].as_str(), flood["deny"].as_str()), (Some("/v1/sys/health"), Some("path")));
}

/// Sends `n` pipelined GETs of `path` from `source` on one connection and
/// reads until all are answered; their statuses.
async fn pipelined(source: &str, addr: std::net::SocketAddr, path: &str, n: usize) -> Vec<u16> {
    use tokio::io::AsyncReadExt;
    let mut s = connect_from(Some(source), addr).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let (mut rx, mut tx) = s.split();
    let send = async {
        tx.write_all(request.repeat(n).as_bytes()).await.expect("send");
    };
    let receive = async {
        let (mut got, mut buf, mut answers, mut scanned) = (Vec::new(), vec![0u8; 65536], 0, 0usize);
        while answers < n {
            match tokio::time::timeout(Duration::from_secs(30), rx.read(&mut buf)).await {
                Ok(Ok(read)) if read > 0 => got.extend_from_slice(&buf[..read]),
                other => panic!("{source}: connection ended or stalled: {other:?}"),
            }
            // Status lines, counted once each as they arrive.
            let from = scanned.saturating_sub(8);
            answers += got[from..].windows(9).filter(|w| w == b"HTTP/1.1 ").count();
            scanned = got.len();
        }
        got
    };
    let ((), got) = tokio::join!(send, receive);
    parse_responses(&got, false).iter().map(|r| r.status).collect()
}

/// Under load every request is one access line, in order and stamped with
/// the wall-clock time it was answered; when the log's reader stalls the
/// proxy goes on answering, and every line it could not keep is counted —
/// lines plus the count add up to the requests sent. (Two threads: the
/// proxy's log is read beside the clients, as a log collector would.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_logged_or_counted_when_the_reader_stalls() {
    let si = standin::StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let rest =
        format!("[log]\naccess = true\n[rate_limit]\nenabled = false\n{}", vault_issuer("vault", &si.origin(), &[""]));
    std::fs::write(&path, config("", &rest)).unwrap();
    let p = Process::start(&path).await;
    assert_eq!(get(p.public, root_keys()).await.status, 200);

    const CLIENTS: [&str; 4] = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"];
    const EACH: usize = 1_500;
    let lines_from = |log: &str, clients: &[&str]| -> (Vec<serde_json::Value>, u64) {
        let values: Vec<serde_json::Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let dropped = values.iter().filter_map(|v| v["queue_full"].as_u64()).sum();
        let access = values
            .into_iter()
            .filter(|v| v["target"] == "access" && clients.iter().any(|c| v["client"] == *c))
            .collect();
        (access, dropped)
    };

    // Normal load: four clients at once, as fast as they are answered.
    let before = std::time::SystemTime::now();
    let answered = futures_util::future::join_all(CLIENTS.map(|c| pipelined(c, p.public, root_keys(), EACH))).await;
    let after = std::time::SystemTime::now();
    assert!(answered.iter().flatten().all(|&s| s == 200));
    let total = CLIENTS.len() * EACH;
    // (Counted without parsing: parsing the whole log each poll would slow its reader.)
    let access_lines = || p.log.lock().unwrap().iter().filter(|l| l.contains(r#""target":"access""#)).count();
    let settled = eventually(Duration::from_secs(10), || async { access_lines() > total }).await;
    let (lines, dropped) = lines_from(&p.log_text(), &CLIENTS);
    assert!(
        settled && lines.len() == total,
        "{} lines for {total} requests; last: {:?}",
        lines.len(),
        p.log.lock().unwrap().iter().filter(|l| !l.contains("\"target\":\"access\"")).collect::<Vec<_>>()
    );
    assert_eq!(dropped, 0, "nothing dropped under normal load");
    for client in CLIENTS {
        let stamps: Vec<&str> =
            lines.iter().filter(|v| v["client"] == client).filter_map(|v| v["timestamp"].as_str()).collect();
        assert_eq!(stamps.len(), EACH, "{client}");
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{client}: lines in the order answered");
        for stamp in [stamps[0], stamps[EACH - 1]] {
            let t = humantime::parse_rfc3339(stamp).expect("rfc 3339");
            let slack = Duration::from_millis(100);
            assert!(t + slack >= before && t <= after + slack, "{stamp} outside the run");
        }
    }
    assert!(lines.iter().all(|v| v["uri"] == root_keys() && v["status"] == 200 && v["issuer"] == "vault"));

    // The reader stalls: the pipe fills, the log thread blocks writing,
    // its queue fills. Requests are still answered at once.
    const STALLED: [&str; 4] = ["127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"];
    const MORE: usize = 2_000;
    p.log_paused.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(STALLED.map(|c| pipelined(c, p.public, root_keys(), MORE))),
    )
    .await
    .expect("answered while the log's reader stalls");
    assert!(answered.iter().flatten().all(|&s| s == 200));
    p.log_paused.store(false, std::sync::atomic::Ordering::Relaxed);
    let total = (STALLED.len() * MORE) as u64;
    let stalled_count = || {
        let log = p.log.lock().unwrap();
        let lines = log.iter().filter(|l| l.contains(r#""client":"127.0.0.2"#)).count() as u64;
        let dropped: u64 = log
            .iter()
            .filter(|l| l.contains("queue_full"))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["queue_full"].as_u64())
            .sum();
        lines + dropped
    };
    let adds_up = eventually(Duration::from_secs(20), || async { stalled_count() >= total }).await;
    let (lines, dropped) = lines_from(&p.log_text(), &STALLED);
    assert!(adds_up, "{} lines + {dropped} counted as dropped != {total}", lines.len());
    // The queue holds 4,096 records: most of 8,000 sent into a stalled log
    // cannot all be kept.
    assert!(dropped > 0 && lines.len() >= 4_000, "{} lines, {dropped} dropped", lines.len());
}
