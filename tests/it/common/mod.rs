//! Shared test machinery: the issuer stand-in, an in-process proxy, the
//! built binary, and HTTP clients that speak raw bytes.

#![allow(dead_code)]

pub mod h2raw;
pub mod pki;
pub mod standin;
pub mod target;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use wif_proxy::Server;
use wif_proxy::Shared;

pub use standin::{Behavior, StandIn, PUBLIC_URL};

/// The fixed header set the issuer may receive, in any order, with the
/// upstream's own address as Host.
pub fn assert_fixed_request(r: &standin::Recorded, upstream: SocketAddr) {
    assert_fixed_request_to(r, &upstream.to_string())
}

/// The fixed header set, with `host` as Host (`upstream_host`, or the
/// public host a SPIRE issuer is sent).
pub fn assert_fixed_request_to(r: &standin::Recorded, host: &str) {
    assert_eq!(r.method, "GET", "{r:?}");
    assert_eq!(r.version, "HTTP/1.1", "{r:?}");
    assert!(!r.had_body, "a body reached the issuer: {r:?}");
    let mut names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, vec!["accept", "host", "user-agent"], "unexpected header set: {r:?}");
    for (n, v) in &r.headers {
        let expected = match n.as_str() {
            "accept" => "application/json".to_string(),
            "host" => host.to_string(),
            "user-agent" => format!("wif-proxy/{}", env!("CARGO_PKG_VERSION")),
            _ => unreachable!(),
        };
        assert_eq!(*v, expected, "header {n}: {r:?}");
    }
}

/// `[[issuer]]` for a Vault plugin-WIF upstream.
pub fn vault_issuer(name: &str, upstream: &str, namespaces: &[&str]) -> String {
    let ns: Vec<String> = namespaces.iter().map(|n| format!("{n:?}")).collect();
    format!(
        "[[issuer]]\nname = \"{name}\"\nkind = \"vault-plugin-wif\"\nupstream = \"{upstream}\"\nnamespaces = [{}]\nupstream_timeout = \"1s\"\n",
        ns.join(", ")
    )
}

/// A complete configuration on loopback, ephemeral ports.
pub fn config(server_extra: &str, rest: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"{PUBLIC_URL}\"\nshutdown_grace = \"2s\"\n{server_extra}\n{rest}"
    )
}

pub fn root_keys() -> &'static str {
    "/v1/identity/oidc/plugins/.well-known/keys"
}

pub fn root_discovery() -> &'static str {
    "/v1/identity/oidc/plugins/.well-known/openid-configuration"
}

pub fn ns_keys(ns: &str) -> String {
    format!("/v1/{ns}/identity/oidc/plugins/.well-known/keys")
}

pub fn ns_discovery(ns: &str) -> String {
    format!("/v1/{ns}/identity/oidc/plugins/.well-known/openid-configuration")
}

/// A proxy running inside the test process.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// `tls.http_listen`, when configured.
    pub http: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestProxy {
    pub async fn start(text: &str) -> TestProxy {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, text).await
    }

    /// Starts with the configuration written to `dir/proxy.toml`.
    pub async fn start_in(dir: tempfile::TempDir, text: &str) -> TestProxy {
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, text).expect("write config");
        let shared = Shared::load(&path).await.unwrap_or_else(|e| panic!("config rejected: {e}\n{text}"));
        let server = Server::bind(Arc::clone(&shared)).await.expect("bind");
        let (addr, admin, http) = (server.public_addr(), server.admin_addr(), server.http_addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestProxy { addr, admin, http, shared, dir, stop: Some(tx), task: Some(task) }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("proxy.toml")
    }

    /// Signals shutdown and waits for the drain to finish.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    pub async fn get(&self, path: &str) -> Resp {
        get(self.addr, path).await
    }

    /// Polls `/readyz` until it answers 200 (or gives up after 5 s).
    pub async fn wait_ready(&self) -> Resp {
        let mut last = None;
        for _ in 0..100 {
            let r = get(self.admin, "/readyz").await;
            if r.status == 200 {
                return r;
            }
            last = Some(r);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never ready: {}", last.map(|r| r.text()).unwrap_or_default());
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A parsed HTTP/1 response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Lower-cased names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// `GET path` over a fresh connection from 127.0.0.1.
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[]).await
}

/// One request with `Connection: close`; the response read to EOF.
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: wif.example.com\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let raw = raw(addr, req.as_bytes()).await;
    let mut all = parse_responses(&raw, method == "HEAD");
    assert_eq!(all.len(), 1, "expected one response to {method} {path}, got: {}", String::from_utf8_lossy(&raw));
    all.remove(0)
}

/// Sends raw bytes; returns everything the server sent until it closed the
/// connection or stayed silent for 400 ms after answering (5 s at most).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    raw_from(None, addr, bytes).await
}

/// Like [`raw`], from a chosen loopback source address.
pub async fn raw_from(source: Option<&str>, addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = connect_from(source, addr).await;
    let _ = s.write_all(bytes).await;
    read_until_quiet(&mut s, Duration::from_millis(400), Duration::from_secs(5)).await
}

/// `GET path` from `source` until it is answered `200`, for up to 3 s: for
/// capacity a closed connection releases a moment after the client sees it
/// close. The last status seen (0: closed unanswered).
pub async fn status_soon(source: Option<&str>, addr: SocketAddr, path: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: wif.example.com\r\nConnection: close\r\n\r\n");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let out = raw_from(source, addr, req.as_bytes()).await;
        let status = parse_responses(&out, false).first().map_or(0, |r| r.status);
        if status == 200 || tokio::time::Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn connect_from(source: Option<&str>, addr: SocketAddr) -> TcpStream {
    match source {
        None => TcpStream::connect(addr).await.expect("connect"),
        Some(ip) => {
            let sock = TcpSocket::new_v4().expect("socket");
            sock.bind(format!("{ip}:0").parse().expect("source addr")).expect("bind source");
            sock.connect(addr).await.expect("connect")
        }
    }
}

pub async fn read_until_quiet(s: &mut TcpStream, quiet: Duration, max: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + max;
    let mut buf = [0u8; 16384];
    loop {
        let wait = if out.is_empty() { deadline.saturating_duration_since(tokio::time::Instant::now()) } else { quiet };
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
        if tokio::time::Instant::now() >= deadline {
            return out;
        }
    }
}

/// Polls `check` every 20 ms until it holds or `within` passes; whether it
/// held. For what the server does a moment after the client sees it.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads until one whole HTTP/1 response (body by Content-Length) has
/// arrived, the connection ends, or `max` passes: no quiet period to wait
/// out, for tests where what happens right after the answer matters.
pub async fn read_response(s: &mut TcpStream, max: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + max;
    let mut buf = [0u8; 16384];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let r = parse_responses(&out[..end + 4], true).remove(0);
            let len: usize = r.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            if out.len() >= end + 4 + len {
                return out;
            }
        }
        match tokio::time::timeout(deadline.saturating_duration_since(tokio::time::Instant::now()), s.read(&mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Splits a byte stream into HTTP/1 responses (bodies by Content-Length).
pub fn parse_responses(mut raw: &[u8], head_request: bool) -> Vec<Resp> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&raw[..end]).to_string();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string())))
            .collect();
        let len: usize = if head_request || status == 304 || (100..200).contains(&status) {
            0
        } else {
            headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
        };
        let body_start = end + 4;
        let body_end = (body_start + len).min(raw.len());
        out.push(Resp { status, headers, body: raw[body_start..body_end].to_vec() });
        raw = &raw[body_end..];
    }
    out
}

/// A response over h2 (prior knowledge, cleartext).
#[derive(Debug)]
pub struct H2Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Sends `requests` over one h2 connection; `Err` for a stream the server
/// refused or reset.
pub async fn h2_requests(addr: SocketAddr, requests: Vec<http::Request<Empty<Bytes>>>) -> Vec<Result<H2Resp, String>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut out = Vec::new();
    for req in requests {
        let r = async {
            send.ready().await.map_err(|e| e.to_string())?;
            let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok(H2Resp { status, headers, body })
        }
        .await;
        out.push(r);
    }
    out
}

pub fn h2_get(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("http://wif.example.com{path}"))
        .version(http::Version::HTTP_2)
        .body(Empty::new())
        .expect("request")
}

// ---------------------------------------------------------------------------
// The built binary.

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_wif-proxy")
}

/// Runs `wif-proxy <args>` to completion.
pub fn run_binary(args: &[&str]) -> std::process::Output {
    std::process::Command::new(binary()).args(args).output().expect("run wif-proxy")
}

/// The binary running as a server; stderr lines are collected.
pub struct Process {
    pub child: tokio::process::Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
    /// While set, the proxy's stderr is not read: its pipe fills and the
    /// log thread's writes block, as when a log collector stalls.
    pub log_paused: Arc<std::sync::atomic::AtomicBool>,
}

impl Process {
    /// Starts `wif-proxy --config path` and waits for its start-up line.
    pub async fn start(path: &Path) -> Process {
        let mut cmd = tokio::process::Command::new(binary());
        cmd.args(["--config", path.to_str().expect("utf-8 path"), "--log-format", "json"]).stdout(Stdio::null());
        Process::spawn(cmd).await
    }

    /// Starts `cmd` (which runs the binary as a server, stdout set by the
    /// caller) and waits for its start-up line.
    pub async fn spawn(mut cmd: tokio::process::Command) -> Process {
        let mut child = cmd
            .env("WIF_PROXY_LOG", "info")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn wif-proxy");
        // Read on a thread of its own, as a log collector would: a test's
        // runtime busy with clients does not slow the proxy's log down.
        let stderr = child.stderr.take().expect("stderr").into_owned_fd().expect("stderr fd");
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sink = Arc::clone(&log);
        let log_paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let paused = Arc::clone(&log_paused);
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            let mut tx = Some(tx);
            let mut lines = std::io::BufReader::new(std::fs::File::from(stderr)).lines();
            loop {
                while paused.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let Some(Ok(line)) = lines.next() else { break };
                if line.contains("wif-proxy started") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line.clone());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let line = tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .unwrap_or_else(|_| panic!("no start-up line; log: {:?}", log.lock().unwrap()))
            .unwrap_or_else(|_| panic!("exited before start-up; log: {:?}", log.lock().unwrap()));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        let public = v["public"].as_str().expect("public").parse().expect("addr");
        let admin = v["admin"].as_str().expect("admin").parse().expect("addr");
        Process { child, public, admin, log, log_paused }
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        let ok = std::process::Command::new("kill").args(["-s", sig, &pid]).status().expect("kill").success();
        assert!(ok, "kill -s {sig} failed");
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        for _ in 0..200 {
            if self.log_text().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("log never contained {needle:?}:\n{}", self.log_text());
    }

    /// Waits for exit; returns the exit code.
    pub async fn wait_exit(&mut self, max: Duration) -> Option<i32> {
        let status = tokio::time::timeout(max, self.child.wait()).await.expect("exit in time").expect("wait");
        status.code()
    }
}
