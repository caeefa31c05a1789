//! The one outbound HTTP client: how this program asks another server for
//! something (the issuer's documents, cloud range files, `doctor`'s checks).
//!
//! * HTTP/1.1 only (ALPN offers `http/1.1` and nothing else), over TLS from
//!   [`crate::net::trust`] or, when a caller allows it, plain TCP.
//! * Connects where the URL says, where a [`ConnectTo`] rule sends that host
//!   and port, or — with [`ClientOptions::unix_socket`] — to that unix
//!   socket whatever the URL says (plain HTTP; the URL then only gives the
//!   path and the default `Host`), with an explicit connect timeout and
//!   `TCP_NODELAY`. Nothing is read from the environment: `HTTP_PROXY`,
//!   `HTTPS_PROXY` and `NO_PROXY` are not honoured, so a request goes exactly
//!   where its caller pointed it.
//! * Every request leaves with our fixed `User-Agent` and the `Host` of its
//!   URL unless the caller set one; everything else on it is the caller's,
//!   built from configuration. A caller's `Host` never changes whom the
//!   connection trusts: TLS keeps verifying (and sending as SNI) the URL's
//!   host. Bodies are empty by type. Redirects are never followed (the
//!   legacy client does not follow them) and no request is retried.
//! * [`read_body`] reads an answer with a byte ceiling, checked against
//!   `Content-Length` first and then while the body streams in.
//!
//! Deadlines for a whole exchange belong to the caller, which knows what
//! its limit means (an issuer's `upstream_timeout`, AWS's five seconds).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, USER_AGENT};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_rustls::{DefaultServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// `User-Agent` of every outbound request.
pub const USER_AGENT_VALUE: &str = concat!("wif-proxy/", env!("CARGO_PKG_VERSION"));

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// Idle connections kept per origin.
const POOL_PER_ORIGIN: usize = 4;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Trust (and client identity) for `https` URLs, usually from
    /// [`crate::net::trust::client_config`]. Its ALPN list is replaced.
    pub tls: rustls::ClientConfig,
    /// Upper bound on opening one TCP connection (divided between the
    /// addresses a name resolves to).
    pub connect_timeout: Duration,
    /// Refuse `http://` URLs instead of speaking plain HTTP.
    pub https_only: bool,
    /// Address overrides, like curl's `--connect-to`.
    pub connect_to: Vec<ConnectTo>,
    /// Dial this unix socket for every URL instead of TCP.
    pub unix_socket: Option<PathBuf>,
}

/// Connect to `addr` for URLs whose host is `host` and port is `port`; the
/// `Host` header and the TLS server name stay those of the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTo {
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
}

/// Why no answer came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No connection (refused, unreachable, timed out, TLS refused).
    #[error("connection failed: {0}")]
    Connect(String),
    /// Connected, but the exchange failed.
    #[error("request failed: {0}")]
    Request(String),
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the body: {0}")]
    Read(String),
}

/// A pooled HTTP/1.1 client; cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<Dialer>, Empty<Bytes>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    /// Builds a client; no connection is opened until the first request.
    pub fn new(options: ClientOptions) -> HttpClient {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(options.connect_timeout));
        let dialer = Dialer {
            tcp,
            connect_to: options.connect_to.into(),
            unix: options.unix_socket.map(Arc::from),
            connect_timeout: options.connect_timeout,
        };
        let mut tls = options.tls;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector =
            HttpsConnector::new(dialer, tls, options.https_only, Arc::new(DefaultServerNameResolver::default()));
        let inner = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_PER_ORIGIN)
            .retry_canceled_requests(false)
            .build(connector);
        HttpClient { inner }
    }

    /// Sends `request` (its URI absolute) and returns the answer's head; the
    /// body is still to be read with [`read_body`]. `User-Agent` is set to
    /// [`USER_AGENT_VALUE`] whatever the request said; `Host` is the URL's
    /// unless the request sets one.
    pub async fn send(&self, mut request: Request<Empty<Bytes>>) -> Result<Response<Incoming>, SendError> {
        request.headers_mut().insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        self.inner.request(request).await.map_err(|e| {
            if e.is_connect() {
                SendError::Connect(error_chain(&e))
            } else {
                SendError::Request(error_chain(&e))
            }
        })
    }
}

/// Reads the body of `response`, refusing more than `max_bytes`: a larger
/// `Content-Length` is refused before reading, a body without one is cut
/// off at the ceiling.
pub async fn read_body(
    response: Response<Incoming>,
    max_bytes: usize,
) -> Result<(http::response::Parts, Bytes), BodyError> {
    let declared = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_bytes as u64) {
        return Err(BodyError::TooLarge(max_bytes));
    }
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, max_bytes).collect().await.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            BodyError::TooLarge(max_bytes)
        } else {
            BodyError::Read(error_chain(&*e))
        }
    })?;
    Ok((parts, body.to_bytes()))
}

/// Flattens an error and its sources into one line for a log or a report.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_str = s.to_string();
        if !out.contains(&s_str) {
            out.push_str(": ");
            out.push_str(&s_str);
        }
        cur = s.source();
    }
    out
}

/// Opens the connection for a URL: to its host and port, to the address a
/// [`ConnectTo`] rule names for them, or to the client's unix socket. TLS
/// is layered on top by the `HttpsConnector`, which takes the server name
/// from the URL.
#[derive(Clone)]
struct Dialer {
    tcp: HttpConnector,
    connect_to: Arc<[ConnectTo]>,
    unix: Option<Arc<std::path::Path>>,
    connect_timeout: Duration,
}

impl Dialer {
    /// The URI the TCP connector should dial for `uri`.
    fn target(&self, uri: &Uri) -> Uri {
        let Some(host) = uri.host() else { return uri.clone() };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
        self.connect_to
            .iter()
            .find(|rule| rule.port == port && rule.host.eq_ignore_ascii_case(host))
            .and_then(|rule| format!("http://{}/", rule.addr).parse().ok())
            .unwrap_or_else(|| uri.clone())
    }
}

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<Stream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if let Some(path) = self.unix.clone() {
            let limit = self.connect_timeout;
            return Box::pin(async move {
                let stream = tokio::time::timeout(limit, UnixStream::connect(&*path))
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "unix socket connect timed out"))?
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                Ok(TokioIo::new(Stream::Unix(stream)))
            });
        }
        let connecting = self.tcp.call(self.target(&uri));
        Box::pin(async move { Ok(TokioIo::new(Stream::Tcp(connecting.await?.into_inner()))) })
    }
}

/// A dialled connection: TCP or a unix socket.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Tcp(s) => s.connected(),
            Stream::Unix(s) => s.connected(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::trust;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn options(tls: rustls::ClientConfig, https_only: bool, connect_to: Vec<ConnectTo>) -> ClientOptions {
        ClientOptions { tls, connect_timeout: Duration::from_secs(2), https_only, connect_to, unix_socket: None }
    }

    fn plain() -> rustls::ClientConfig {
        trust::client_config(rustls::RootCertStore::empty(), None).expect("config")
    }

    /// Reads one request head from `io` and answers `response`; returns the head.
    async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut io: S, response: &[u8]) -> String {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = io.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before the head ended");
            head.extend_from_slice(&buf[..n]);
        }
        io.write_all(response).await.expect("write");
        io.shutdown().await.ok();
        String::from_utf8(head).expect("utf-8 head")
    }

    /// A loopback server answering one connection with `response`.
    async fn serve_once(response: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (io, _) = listener.accept().await.expect("accept");
            answer(io, response).await
        });
        (addr, task)
    }

    fn get(uri: &str) -> Request<Empty<Bytes>> {
        Request::get(uri).header(USER_AGENT, "caller-chosen/1").body(Empty::new()).expect("request")
    }

    #[tokio::test]
    async fn requests_carry_the_fixed_user_agent_and_the_url_host() {
        let (addr, server) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        let client = HttpClient::new(options(plain(), false, Vec::new()));
        let resp = client.send(get(&format!("http://{addr}/a/b"))).await.expect("answer");
        let (parts, body) = read_body(resp, 16).await.expect("body");
        assert_eq!((parts.status, &body[..]), (http::StatusCode::OK, &b"ok"[..]));
        let head = server.await.expect("server").to_ascii_lowercase();
        assert!(head.starts_with("get /a/b http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nhost: {addr}\r\n")), "{head}");
        assert!(head.contains(&format!("\r\nuser-agent: {}\r\n", USER_AGENT_VALUE.to_ascii_lowercase())), "{head}");
        assert!(!head.contains("caller-chosen"), "{head}");
    }

    #[tokio::test]
    async fn bodies_are_bounded() {
        /// What the server sends, the ceiling, what `read_body` returns.
        type Case = (&'static [u8], usize, Result<&'static [u8], BodyError>);
        let cases: [Case; 3] = [
            (b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world", 10, Err(BodyError::TooLarge(10))),
            (b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello world", 10, Err(BodyError::TooLarge(10))),
            (b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello world", 11, Ok(b"hello world")),
        ];
        for (i, (response, max, expected)) in cases.into_iter().enumerate() {
            let (addr, _server) = serve_once(response).await;
            let client = HttpClient::new(options(plain(), false, Vec::new()));
            let resp = client.send(get(&format!("http://{addr}/"))).await.expect("answer");
            let got = read_body(resp, max).await.map(|(_, b)| b);
            assert_eq!(got.as_deref().map_err(Clone::clone), expected, "case {i}");
        }
    }

    #[tokio::test]
    async fn connect_to_dials_elsewhere_but_keeps_the_host() {
        let (addr, server) = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let rule = ConnectTo { host: "wif.example.test".into(), port: 80, addr };
        let client = HttpClient::new(options(plain(), false, vec![rule]));
        let resp = client.send(get("http://WIF.example.test/x")).await.expect("answer");
        assert_eq!(resp.status(), http::StatusCode::NO_CONTENT);
        let head = server.await.expect("server").to_ascii_lowercase();
        assert!(head.contains("\r\nhost: wif.example.test\r\n"), "{head}");
    }

    #[tokio::test]
    async fn a_unix_socket_client_dials_the_socket_and_sends_the_given_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("oidc.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (io, _) = listener.accept().await.expect("accept");
            answer(io, b"HTTP/1.1 204 No Content\r\n\r\n").await
        });
        let client = HttpClient::new(ClientOptions { unix_socket: Some(path), ..options(plain(), false, Vec::new()) });
        let mut req = get("http://localhost/keys");
        req.headers_mut().insert(http::header::HOST, HeaderValue::from_static("oidc.example.com"));
        assert_eq!(client.send(req).await.expect("answer").status(), http::StatusCode::NO_CONTENT);
        let head = server.await.expect("server").to_ascii_lowercase();
        assert!(head.starts_with("get /keys http/1.1\r\n"), "{head}");
        assert!(head.contains("\r\nhost: oidc.example.com\r\n") && !head.contains("localhost"), "{head}");
    }

    #[tokio::test]
    async fn https_only_never_dials_plain_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = HttpClient::new(options(plain(), true, Vec::new()));
        let e = client.send(get(&format!("http://{addr}/"))).await.expect_err("refused");
        assert!(e.to_string().contains("unsupported scheme http"), "{e}");
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a connection was opened");
    }

    #[tokio::test]
    async fn tls_offers_http1_only_and_verifies_against_the_given_anchors() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.pem()).expect("write");
        let mut server = rustls::ServerConfig::builder_with_provider(trust::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let mut alpn = Vec::new();
            for _ in 0..2 {
                let (io, _) = listener.accept().await.expect("accept");
                match acceptor.accept(io).await {
                    Ok(tls) => {
                        alpn.push(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                        answer(tls, b"HTTP/1.1 204 No Content\r\n\r\n").await;
                    }
                    Err(_) => alpn.push(None),
                }
            }
            alpn
        });
        let url = format!("https://localhost:{port}/");
        let trusted = trust::client_config(trust::root_store(trust::Anchors::PemFile(&ca)).expect("roots"), None);
        let client = HttpClient::new(options(trusted.expect("config"), true, Vec::new()));
        assert_eq!(client.send(get(&url)).await.expect("answer").status(), http::StatusCode::NO_CONTENT);
        let stranger = HttpClient::new(options(plain(), true, Vec::new()));
        let e = stranger.send(get(&url)).await.expect_err("untrusted");
        assert!(matches!(e, SendError::Connect(_)) && e.to_string().contains("certificate"), "{e}");
        assert_eq!(task.await.expect("server"), vec![Some(b"http/1.1".to_vec()), None]);
    }
}
