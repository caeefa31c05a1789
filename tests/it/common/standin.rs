//! An issuer stand-in: a raw HTTP/1.1 server (TCP, TLS or a unix socket)
//! that records every request exactly as it arrived (method, raw target,
//! every header, any body bytes) and answers the way Vault does, or fails
//! the way Vault fails. It can also play SPIRE's OIDC discovery provider
//! ([`StandIn::spire_domains`]: its Host check and the URLs it builds from
//! the Host) and a Kubernetes API server ([`StandIn::require_bearer`]: 401
//! with a `Status` object without the token).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// The public origin the stand-in's discovery documents claim by default.
pub const PUBLIC_URL: &str = "https://wif.example.com";

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub version: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// Bytes that followed the head on the connection before the next head.
    pub had_body: bool,
}

/// How to answer a path.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// 200 with a Vault-like document for the path (discovery or keys).
    Vault,
    /// 200 with this exact body and these extra headers.
    Body { body: String, cache_control: Option<String> },
    /// A status with a body, like Vault's own errors.
    Status { status: u16, body: String, location: Option<String> },
    /// 200 with this exact body and Content-Type.
    Typed { body: String, content_type: String },
    /// Wait, then behave like the inner behavior.
    Slow(Duration, Box<Behavior>),
    /// Close the connection without answering.
    Drop,
}

impl Behavior {
    pub fn sealed() -> Behavior {
        Behavior::Status { status: 503, body: r#"{"errors":["Vault is sealed"]}"#.into(), location: None }
    }
    pub fn standby() -> Behavior {
        Behavior::Status {
            status: 307,
            body: String::new(),
            location: Some("http://10.9.8.7:8200/v1/identity/oidc/plugins/.well-known/keys".into()),
        }
    }
    pub fn keys_with_cache_control(cc: &str) -> Behavior {
        Behavior::Body { body: jwks("k1"), cache_control: Some(cc.into()) }
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    by_path: HashMap<String, Behavior>,
    /// Overrides every path when set.
    all: Option<Behavior>,
    /// The public URL discovery documents claim.
    public_url: Option<String>,
    /// Stopped: open connections are closed at their next request.
    down: bool,
    https: bool,
    /// Play SPIRE's provider: answer only for these domains.
    spire_domains: Option<Vec<String>>,
    /// Play the API server: answer only requests bearing this token.
    bearer: Option<String>,
    /// The TLS server names clients asked for, one per connection.
    server_names: Vec<Option<String>>,
}

/// The body a Kubernetes API server sends with its 401.
pub const KUBERNETES_401: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#;

/// A running stand-in. Dropping it stops accepting.
#[derive(Clone)]
pub struct StandIn {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl StandIn {
    pub async fn start() -> StandIn {
        Self::start_with(None).await
    }

    /// An https stand-in with this TLS configuration.
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> StandIn {
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stand-in");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let st = Arc::clone(&state);
        let https = tls.is_some();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let st = Arc::clone(&st);
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let sni = s.get_ref().1.server_name().map(str::to_string);
                                st.lock().unwrap().server_names.push(sni);
                                serve(s, st).await
                            }
                        }
                        None => serve(stream, st).await,
                    }
                });
            }
        });
        state.lock().unwrap().https = https;
        StandIn { addr, state, task: Arc::new(task) }
    }

    /// A stand-in on a unix socket at `path`; `addr` is a placeholder.
    pub async fn start_unix(path: &std::path::Path) -> StandIn {
        let listener = tokio::net::UnixListener::bind(path).expect("bind unix stand-in");
        let state = Arc::new(Mutex::new(State::default()));
        let st = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                tokio::spawn(serve(stream, Arc::clone(&st)));
            }
        });
        StandIn { addr: "127.0.0.1:9".parse().unwrap(), state, task: Arc::new(task) }
    }

    /// Behaves as SPIRE's OIDC discovery provider with these `domains`.
    pub fn spire_domains(&self, domains: &[&str]) {
        self.state.lock().unwrap().spire_domains = Some(domains.iter().map(|d| d.to_string()).collect());
    }

    /// Behaves as an API server that only answers requests with this token.
    pub fn require_bearer(&self, token: &str) {
        self.state.lock().unwrap().bearer = Some(token.to_string());
    }

    /// The TLS server name of each connection so far.
    pub fn server_names(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().server_names.clone()
    }

    pub fn origin(&self) -> String {
        let scheme = if self.state.lock().unwrap().https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Goes away: new connections are refused, pooled ones are closed.
    pub fn stop(&self) {
        self.state.lock().unwrap().down = true;
        self.task.abort();
    }

    pub fn set(&self, path: &str, b: Behavior) {
        self.state.lock().unwrap().by_path.insert(path.to_string(), b);
    }

    pub fn set_all(&self, b: Option<Behavior>) {
        self.state.lock().unwrap().all = b;
    }

    pub fn set_public_url(&self, url: &str) {
        self.state.lock().unwrap().public_url = Some(url.to_string());
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn count(&self, path: &str) -> usize {
        self.state.lock().unwrap().requests.iter().filter(|r| r.target == path).count()
    }

    pub fn total(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }
}

/// A Vault-shaped JWKS (compact JSON, one RSA key).
pub fn jwks(kid: &str) -> String {
    format!(
        r#"{{"keys":[{{"use":"sig","kty":"RSA","kid":"{kid}","alg":"RS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}}]}}"#
    )
}

/// A Vault-shaped discovery document for `path` published under `public`.
pub fn discovery(public: &str, path: &str) -> String {
    let prefix = path.strip_suffix("/.well-known/openid-configuration").unwrap_or(path);
    let jwks_uri =
        if prefix.is_empty() { format!("{public}/keys") } else { format!("{public}{prefix}/.well-known/keys") };
    format!(
        r#"{{"issuer":"{public}{prefix}","jwks_uri":"{jwks_uri}","response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256","ES256","EdDSA"]}}"#
    )
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, state: Arc<Mutex<State>>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.splitn(3, ' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let version = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string())))
            .collect();
        let had_body =
            headers.iter().any(|(n, _)| n == "content-length" || n == "transfer-encoding") || !buf.is_empty();
        let (behavior, public) = {
            let mut st = state.lock().unwrap();
            if st.down {
                return;
            }
            let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
            let authorization = header("authorization");
            // SPIRE's provider: X-Forwarded-Host wins over Host.
            let seen_host = header("x-forwarded-host").or_else(|| header("host")).unwrap_or_default();
            st.requests.push(Recorded { method, target: target.clone(), version, headers, had_body });
            let b = if st.bearer.as_ref().is_some_and(|t| authorization != Some(format!("Bearer {t}"))) {
                Some(Behavior::Status { status: 401, body: KUBERNETES_401.into(), location: None })
            } else {
                st.all.clone().or_else(|| st.by_path.get(&target).cloned())
            };
            match (&st.spire_domains, b) {
                (_, Some(b)) => (b, st.public_url.clone().unwrap_or_else(|| PUBLIC_URL.to_string())),
                (Some(domains), None) => {
                    let name = seen_host.rsplit_once(':').map_or(seen_host.as_str(), |(h, _)| h);
                    if domains.iter().any(|d| d == name) {
                        (Behavior::Vault, format!("https://{seen_host}"))
                    } else {
                        let body = format!("domain {seen_host:?} is not allowed\n");
                        (Behavior::Status { status: 400, body, location: None }, String::new())
                    }
                }
                (None, None) => (Behavior::Vault, st.public_url.clone().unwrap_or_else(|| PUBLIC_URL.to_string())),
            }
        };
        if !respond(&mut stream, behavior, &target, &public).await {
            return;
        }
    }
}

/// Writes the answer; false when the connection should end.
async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, mut b: Behavior, target: &str, public: &str) -> bool {
    while let Behavior::Slow(d, inner) = b {
        tokio::time::sleep(d).await;
        b = *inner;
    }
    let mut content_type = "application/json".to_string();
    let (status, body, cc, location) = match b {
        Behavior::Vault => {
            let body = if target.ends_with("openid-configuration") { discovery(public, target) } else { jwks("k1") };
            let cc = if target.ends_with("openid-configuration") { "max-age=3600" } else { "max-age=3599" };
            (200, body, Some(cc.to_string()), None)
        }
        Behavior::Body { body, cache_control } => (200, body, cache_control, None),
        Behavior::Typed { body, content_type: ct } => {
            content_type = ct;
            (200, body, None, None)
        }
        Behavior::Status { status, body, location } => (status, body, None, location),
        Behavior::Drop => return false,
        Behavior::Slow(..) => unreachable!(),
    };
    let mut resp = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nServer: vault-standin/1.17\r\nX-Vault-Index: secret-index\r\nSet-Cookie: vault-session=secret\r\nStrict-Transport-Security: max-age=1\r\n",
        body.len()
    );
    if let Some(cc) = cc {
        resp.push_str(&format!("Cache-Control: {cc}\r\n"));
    }
    if let Some(l) = location {
        resp.push_str(&format!("Location: {l}\r\n"));
    }
    resp.push_str("\r\n");
    resp.push_str(&body);
    stream.write_all(resp.as_bytes()).await.is_ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
