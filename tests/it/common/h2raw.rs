//! HTTP/2 spoken by hand: frames encoded byte by byte, a fixed HPACK block
//! for a GET, a frame reader that reports how a connection ended, and
//! well-behaved clients (hyper's) from a chosen loopback address, over h2c
//! or TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;
pub const CANCEL: u32 = 0x8;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in params {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

pub fn settings_ack() -> Vec<u8> {
    frame(SETTINGS, ACK, 0, &[])
}

pub fn ping(n: u64) -> Vec<u8> {
    frame(PING, 0, 0, &n.to_be_bytes())
}

pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

pub fn priority(stream: u32, depends_on: u32, weight: u8) -> Vec<u8> {
    let mut p = depends_on.to_be_bytes().to_vec();
    p.push(weight);
    frame(PRIORITY, 0, stream, &p)
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// One header field, HPACK "literal without indexing, new name" (RFC 7541
/// §6.2.2), no Huffman; names and values under 127 bytes.
pub fn hpack_literal(name: &str, value: &str) -> Vec<u8> {
    assert!(name.len() < 127 && value.len() < 127);
    let mut b = vec![0x00, name.len() as u8];
    b.extend_from_slice(name.as_bytes());
    b.push(value.len() as u8);
    b.extend_from_slice(value.as_bytes());
    b
}

/// The header block of `GET path` (no dynamic table involved: every block
/// stands alone, so blocks can be sent in any order or dropped).
pub fn get_block(scheme: &str, path: &str) -> Vec<u8> {
    [
        hpack_literal(":method", "GET"),
        hpack_literal(":scheme", scheme),
        hpack_literal(":authority", "wif.example.com"),
        hpack_literal(":path", path),
    ]
    .concat()
}

/// HEADERS for `GET path` on `stream`, complete and ending the stream.
pub fn get_headers(stream: u32, scheme: &str, path: &str) -> Vec<u8> {
    frame(HEADERS, END_STREAM | END_HEADERS, stream, &get_block(scheme, path))
}

/// The client's opening: preface and SETTINGS.
pub fn opening(params: &[(u16, u32)]) -> Vec<u8> {
    [PREFACE.to_vec(), settings(params)].concat()
}

/// A frame read from the server.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// (last stream id, error code) of a GOAWAY.
    pub fn goaway(&self) -> Option<(u32, u32)> {
        (self.kind == GOAWAY && self.payload.len() >= 8).then(|| {
            let p = &self.payload;
            (u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff, u32::from_be_bytes([p[4], p[5], p[6], p[7]]))
        })
    }
}

/// Splits whole frames off the front of `buf`.
pub fn parse_frames(buf: &mut Vec<u8>) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 9 {
        let h = &buf[at..at + 9];
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
        if buf.len() - at < 9 + len {
            break;
        }
        out.push(Frame {
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
            payload: buf[at + 9..at + 9 + len].to_vec(),
        });
        at += 9 + len;
    }
    buf.drain(..at);
    out
}

/// How a connection ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A GOAWAY arrived (last stream id, error code); then the connection
    /// closed (or was still open when reading stopped: `closed`).
    GoAway { last: u32, code: u32, closed: bool },
    /// Closed (EOF or reset) without a GOAWAY.
    Closed,
    /// Still open when reading stopped.
    Open,
}

impl Ending {
    /// Cut: closed, or told to go away with ENHANCE_YOUR_CALM.
    pub fn is_cut(&self) -> bool {
        match *self {
            Ending::GoAway { code, closed, .. } => closed || code == ENHANCE_YOUR_CALM,
            Ending::Closed => true,
            Ending::Open => false,
        }
    }
}

/// What a reader saw on a connection.
#[derive(Debug, Clone)]
pub struct Seen {
    pub ending: Ending,
    /// When the connection was cut (the GOAWAY, or the close), from the
    /// reader's start.
    pub after: Option<Duration>,
    pub frames: usize,
    /// `:status` is not decoded; HEADERS frames received.
    pub headers: usize,
}

/// Reads frames until the connection closes or `max` passes; reports the
/// first GOAWAY and when the connection was cut.
pub async fn read_until_end<R: AsyncRead + Unpin>(r: &mut R, max: Duration) -> Seen {
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut goaway = None;
    let mut cut_at = None;
    let (mut frames, mut headers) = (0, 0);
    loop {
        let left = max.saturating_sub(start.elapsed());
        let n = match tokio::time::timeout(left, r.read(&mut chunk)).await {
            Err(_) => {
                let ending = match goaway {
                    Some((last, code)) => Ending::GoAway { last, code, closed: false },
                    None => Ending::Open,
                };
                return Seen { ending, after: cut_at, frames, headers };
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                let after = cut_at.or(Some(start.elapsed()));
                let ending = match goaway {
                    Some((last, code)) => Ending::GoAway { last, code, closed: true },
                    None => Ending::Closed,
                };
                return Seen { ending, after, frames, headers };
            }
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        for f in parse_frames(&mut buf) {
            frames += 1;
            headers += usize::from(f.kind == HEADERS);
            if goaway.is_none() {
                if let Some(g) = f.goaway() {
                    goaway = Some(g);
                    if g.1 == ENHANCE_YOUR_CALM {
                        cut_at = Some(start.elapsed());
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Connections from a chosen loopback address.

pub async fn tcp_from(source: &str, addr: SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(format!("{source}:0").parse().expect("source address")).expect("bind source");
    let s = sock.connect(addr).await.expect("connect");
    let _ = s.set_nodelay(true);
    s
}

pub type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// TLS with ALPN h2 from `source`, SNI wif.example.com, trusting `ca_pem`.
pub async fn tls_h2_from(source: &str, addr: SocketAddr, ca_pem: &str) -> TlsStream {
    let config = super::pki::client_config(ca_pem, &[b"h2"]);
    let tcp = tcp_from(source, addr).await;
    let name = rustls_pki_types::ServerName::try_from("wif.example.com").expect("name");
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
    tls
}

/// A well-behaved h2 client (hyper's) on one connection.
pub struct GoodClient {
    send: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    scheme: &'static str,
}

impl GoodClient {
    pub async fn over<IO>(io: IO, scheme: &'static str) -> GoodClient
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(io))
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        GoodClient { send, scheme }
    }

    pub async fn h2c_from(source: &str, addr: SocketAddr) -> GoodClient {
        GoodClient::over(tcp_from(source, addr).await, "http").await
    }

    pub async fn tls_from(source: &str, addr: SocketAddr, ca_pem: &str) -> GoodClient {
        GoodClient::over(tls_h2_from(source, addr, ca_pem).await, "https").await
    }

    /// `GET path`: the status and the body's length.
    pub async fn get(&mut self, path: &str) -> Result<(u16, usize), String> {
        let req = http::Request::get(format!("{}://wif.example.com{path}", self.scheme))
            .version(http::Version::HTTP_2)
            .body(Empty::new())
            .expect("request");
        self.send.ready().await.map_err(|e| e.to_string())?;
        let resp = self.send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, body.len()))
    }
}

/// A client on its own address asking for `path` every `every` until
/// stopped; it records every answer and how long each took.
pub struct Watcher {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(Result<u16, String>, Duration)>>,
}

/// What the watcher saw.
#[derive(Debug)]
pub struct Watched {
    pub answers: Vec<(Result<u16, String>, Duration)>,
}

impl Watched {
    pub fn all_ok(&self) -> bool {
        !self.answers.is_empty() && self.answers.iter().all(|(r, _)| matches!(r, Ok(200)))
    }

    pub fn failures(&self) -> Vec<&(Result<u16, String>, Duration)> {
        self.answers.iter().filter(|(r, _)| !matches!(r, Ok(200))).collect()
    }

    pub fn median(&self) -> Duration {
        let mut t: Vec<Duration> = self.answers.iter().map(|(_, d)| *d).collect();
        t.sort();
        t.get(t.len() / 2).copied().unwrap_or_default()
    }

    pub fn max(&self) -> Duration {
        self.answers.iter().map(|(_, d)| *d).max().unwrap_or_default()
    }
}

impl Watcher {
    /// Over h2c (one connection, reconnecting if it is lost) and over a
    /// fresh HTTP/1.1 connection, alternately. `tls`: the CA to reach a TLS
    /// listener with instead.
    pub fn start(source: &'static str, addr: SocketAddr, path: &'static str, tls: Option<String>) -> Watcher {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut client: Option<GoodClient> = None;
            let mut n = 0u64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) && out.len() < 10_000 {
                n += 1;
                let start = Instant::now();
                let r = if n % 2 == 0 && tls.is_none() {
                    http1_status_from(source, addr, path).await
                } else {
                    if client.is_none() {
                        client = Some(match &tls {
                            None => GoodClient::h2c_from(source, addr).await,
                            Some(ca) => GoodClient::tls_from(source, addr, ca).await,
                        });
                    }
                    let r = tokio::time::timeout(Duration::from_secs(5), client.as_mut().expect("client").get(path))
                        .await
                        .unwrap_or_else(|_| Err("no answer within 5 s".into()));
                    if r.is_err() {
                        client = None;
                    }
                    r.map(|(s, _)| s)
                };
                out.push((r, start.elapsed()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            out
        });
        Watcher { stop, task }
    }

    pub async fn stop(self) -> Watched {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        Watched { answers: self.task.await.expect("watcher") }
    }
}

/// `GET path` over a fresh HTTP/1.1 connection from `source`.
pub async fn http1_status_from(source: &str, addr: SocketAddr, path: &str) -> Result<u16, String> {
    use tokio::io::AsyncWriteExt;
    let mut s = tcp_from(source, addr).await;
    let req = format!("GET {path} HTTP/1.1\r\nHost: wif.example.com\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
        .map_err(|e| e.to_string())?;
    super::parse_responses(&out, false).first().map(|r| r.status).ok_or_else(|| "no response".into())
}

// ---------------------------------------------------------------------------
// The proxy process.

/// Resident memory of a process, from /proc (bytes).
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// CPU time a process has used (user + system).
pub fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    // /proc counts in USER_HZ, which the kernel ABI fixes at 100 on Linux
    // (whatever the kernel's own HZ), so no sysconf call is needed.
    const USER_HZ: u64 = 100;
    Duration::from_millis(ticks * 1000 / USER_HZ)
}
