//! Listeners and connections: accept, count, time out, serve, drain.
//!
//! Limits are applied in order of cost: the global connection cap before
//! anything is read, the PROXY header, the source-address allowlist and the
//! per-address cap once the client is known, hyper's header-size and header-count limits and our
//! request-head deadline before a request exists, the idle timeout for the
//! whole life of the connection, and h2 stream limits on top. Shutdown stops accepting at once
//! and lets in-flight requests finish within `shutdown_grace`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::{service_fn, Service};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::config::ServerConfig;
use crate::edge::clientip::{self, Prefixed};
use crate::edge::conn_io::Timeouts;
use crate::edge::tls::Accepted;
use crate::proxy::admin;
use crate::proxy::handler::ConnInfo;
use crate::proxy::state::Shared;
use crate::telemetry::metrics::{ConnectionGauge, ParkedGauge};
use crate::telemetry::throttle::Throttle;

/// A bound proxy, ready to [`run`](Server::run).
pub struct Server {
    shared: Arc<Shared>,
    public: TcpListener,
    admin: TcpListener,
    /// `tls.http_listen`: ACME HTTP-01 and redirects to https.
    http: Option<TcpListener>,
}

impl Server {
    /// Binds the public and admin listeners of the current configuration.
    pub async fn bind(shared: Arc<Shared>) -> std::io::Result<Server> {
        let cfg = shared.snapshot().config.server.clone();
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {what} {addr}: {e}")))
        };
        let public = bind(cfg.listen, "server.listen").await?;
        let admin = bind(cfg.admin_listen, "server.admin_listen").await?;
        let http = match shared.snapshot().config.tls.http_listen {
            Some(addr) => Some(bind(addr, "tls.http_listen").await?),
            None => None,
        };
        Ok(Server { shared, public, admin, http })
    }

    /// The plain-HTTP listener's address, when there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public.local_addr().expect("bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("bound listener has an address")
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { shared, public, admin, http } = self;
        let admin_task = tokio::spawn(admin::serve(admin, Arc::clone(&shared)));
        let max = shared.snapshot().config.server.max_connections;
        // One budget for every public port: the plain-HTTP listener counts too.
        let conns = Arc::new(Semaphore::new(max));
        let per_ip = Arc::new(PerIp::default());
        let drain = Arc::new(Drain::default());
        let http_task = http.map(|l| {
            let (conns, per_ip, drain) = (Arc::clone(&conns), Arc::clone(&per_ip), Arc::clone(&drain));
            tokio::spawn(serve_http_listener(l, Arc::clone(&shared), conns, per_ip, drain))
        });

        shared.snapshot().prefetch();
        shared.listening.store(true, Ordering::Release);
        tracing::info!(listen = %public.local_addr().map(|a| a.to_string()).unwrap_or_default(), "public listener accepting");

        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                a = accept(&public, "server.listen") => a,
            };
            let Some((stream, peer)) = accepted else { continue };
            let Ok(permit) = Arc::clone(&conns).try_acquire_owned() else {
                shared.metrics.deny("conn_limit");
                tracing::debug!(peer = %peer, "max_connections reached; closing new connection");
                continue;
            };
            let (shared, per_ip, drain) = (Arc::clone(&shared), Arc::clone(&per_ip), Arc::clone(&drain));
            tokio::spawn(handle_connection(shared, per_ip, drain, stream, peer, permit));
        }

        drop(public);
        shared.listening.store(false, Ordering::Release);
        let grace = shared.snapshot().config.server.shutdown_grace;
        if let Some(t) = http_task {
            t.abort();
        }
        tracing::info!(open = max - conns.available_permits(), grace = ?grace, "shutting down: draining connections");
        drain.start();
        // Every connection holds a permit until its task ends.
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, conns.acquire_many(all)).await.is_err() {
            tracing::warn!("shutdown_grace expired with connections still open; closing them");
        }
        admin_task.abort();
    }
}

/// One accepted connection, from its first byte to its end.
///
/// Order of work, cheapest first: the PROXY header (only from trusted peers,
/// under its own timeout), then the source-address allowlist and the
/// per-address connection cap when the client address is known now, then HTTP.
/// (A plain fn returning an async block, like `serve_http`: its state is a
/// parked connection's cost.)
#[allow(clippy::manual_async_fn)]
fn handle_connection(
    shared: Arc<Shared>,
    per_ip: Arc<PerIp>,
    drain: Arc<Drain>,
    mut stream: TcpStream,
    peer: SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send {
    async move {
        let _permit = permit;
        let _ = stream.set_nodelay(true);
        let metrics = Arc::clone(&shared.metrics);
        let _open = ConnectionGauge::open(&metrics.connections_active);
        let snap = shared.snapshot();
        let cfg = &snap.config;
        let (client_ip, already_read) = match cfg.client_ip.source {
            clientip::Source::ProxyProtocol => {
                let header = Box::pin(clientip::read_proxy_header(
                    &mut stream,
                    peer,
                    &cfg.client_ip.trusted_proxies,
                    cfg.client_ip.proxy_protocol_timeout,
                ))
                .await;
                match header {
                    Ok((named, rest)) => (named.map_or(peer.ip(), |a| a.ip()).to_canonical(), rest),
                    Err(e) => {
                        metrics.deny("proxy_protocol");
                        if let Some(left_out) = PROXY_REFUSED.allow() {
                            tracing::warn!(peer = %peer, left_out, "closing connection: {e}");
                        }
                        return;
                    }
                }
            }
            clientip::Source::Peer | clientip::Source::XForwardedFor => (peer.ip().to_canonical(), Bytes::new()),
        };
        // Behind an X-Forwarded-For proxy the client is only known per request
        // (proxy.rs checks it there), and the peer is the proxy: no cap on it.
        let forwarded = cfg.client_ip.source == clientip::Source::XForwardedFor;
        let _slot = if forwarded {
            None
        } else {
            match per_ip.acquire(client_ip, cfg.server.max_connections_per_ip) {
                Some(slot) => Some(slot),
                None => {
                    metrics.deny("conn_limit");
                    if let Some(left_out) = PER_IP_REFUSED.allow() {
                        tracing::warn!(client = %client_ip, left_out, "closing connection: max_connections_per_ip reached");
                    }
                    return;
                }
            }
        };
        let admit = || {
            let ok = forwarded || snap.ranges.admit(client_ip);
            if !ok {
                metrics.deny("ip");
            }
            ok
        };
        let limits = Limits::of(&cfg.server);
        let parked = metrics.connections_parked.clone();
        let io = Prefixed::new(already_read, stream);
        let service = |info: ConnInfo| {
            let (shared, info) = (Arc::clone(&shared), Arc::new(info));
            service_fn(move |req| {
                let shared = Arc::clone(&shared);
                let info = Arc::clone(&info);
                async move { Ok::<_, Infallible>(crate::proxy::handler::serve(&shared, &info, req).await) }
            })
        };
        match &shared.tls {
            None => {
                if !admit() {
                    return;
                }
                // Serving may last hours: hold no configuration snapshot that long.
                drop(snap);
                let info = ConnInfo { peer, client_ip, forwarded, tls: false };
                serve_http(Timeouts::for_http(io, limits), service(info), limits, &drain, parked, false).await;
            }
            // Boxed, as the handshake's state is large and needed only once.
            Some(tls) => match Box::pin(tls.accept(io, admit)).await {
                Ok(Accepted::Http(stream)) => {
                    drop(snap);
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    let info = ConnInfo { peer, client_ip, forwarded, tls: true };
                    serve_http(Timeouts::for_http(stream, limits), service(info), limits, &drain, parked, h2).await;
                }
                Ok(Accepted::Challenge) => tracing::info!(peer = %peer, "tls: answered an ACME TLS-ALPN-01 validation"),
                Err(e) => tracing::debug!(peer = %peer, "closing connection: {e}"),
            },
        }
    }
}

/// What answers the requests of one connection (`service_fn` over
/// `proxy::serve` or `proxy::serve_redirect`).
pub(crate) trait ConnService:
    Service<
        http::Request<Incoming>,
        Response = http::Response<crate::proxy::response::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> ConnService for S where
    S: Service<
            http::Request<Incoming>,
            Response = http::Response<crate::proxy::response::Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A connection's limits, copied out of the configuration once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    idle_timeout: Duration,
    header_read_timeout: Duration,
    max_header_bytes: usize,
    max_headers: usize,
    h2_max_concurrent_streams: u32,
}

impl<I> Timeouts<I> {
    fn for_http(io: I, limits: Limits) -> Self {
        Timeouts::new(io, limits.idle_timeout, Some(limits.header_read_timeout))
    }
}

impl Limits {
    fn of(cfg: &ServerConfig) -> Limits {
        Limits {
            idle_timeout: cfg.idle_timeout,
            header_read_timeout: cfg.header_read_timeout,
            max_header_bytes: cfg.max_header_bytes,
            max_headers: cfg.max_headers,
            h2_max_concurrent_streams: cfg.h2_max_concurrent_streams,
        }
    }
}

/// How long an HTTP/1 connection waits between requests before it parks:
/// hyper's connection and buffers are dropped and the bare stream waits for
/// the next request (see timeouts.rs). Long enough that a client sending
/// requests back to back never parks.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// Shutdown, as connections see it: a flag that flips once, and a wake-up
/// for connections waiting for their next request.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    started: Arc<AtomicBool>,
    notify: tokio::sync::Notify,
}

impl Drain {
    fn start(&self) {
        self.started.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Resolves once shutdown has started.
    async fn started(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.started.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// HTTP/1.1 and h2 on an established stream, with our deadlines.
///
/// HTTP/1 is served one stretch of activity at a time: between requests the
/// connection parks (after [`PARK_AFTER`] of quiet) and waits for the next
/// request's first byte holding nothing but the stream; hyper serves each
/// stretch. h2 (by ALPN, or a cleartext connection opening with `P`, which
/// could be the h2 preface) goes to hyper-util's auto builder, which tells
/// the two apart and serves h2 with its own limits.
///
/// Shutdown: a parked connection closes at once; a busy one finishes what it
/// is answering and closes at its next quiet moment.
// A plain fn returning an async block: an `async fn` would copy its
// arguments into its state a second time, and this state is what a parked
// connection costs (hyper's part is boxed in `session`).
#[allow(clippy::manual_async_fn)]
fn serve_http<'d, I, S>(
    mut io: Timeouts<I>,
    mut service: S,
    limits: Limits,
    drain: &'d Drain,
    parked: prometheus_client::metrics::gauge::Gauge,
    h2: bool,
) -> impl Future<Output = ()> + Send + 'd
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
{
    async move {
        if h2 {
            return Box::pin(serve_auto(io, service, limits, drain)).await;
        }
        io.park_after(PARK_AFTER, Arc::clone(&drain.started));
        // Counts this connection in `connections_parked` while it waits.
        let mut _counted: Option<ParkedGauge> = None;
        loop {
            // Parked: wait for the next request's first byte, holding no buffer.
            let mut first = [0u8; 1];
            let n = tokio::select! {
                r = io.read(&mut first) => r.unwrap_or(0),
                () = drain.started() => 0,
            };
            _counted = None;
            if n == 0 {
                return;
            }
            io.unpark(one_byte(first[0]));
            if first[0] == b'P' {
                io.never_park();
                return Box::pin(serve_auto(io, service, limits, drain)).await;
            }
            match Box::pin(session(io, service, limits)).await {
                Session::Parked(i, s) => {
                    (io, service) = (i, s);
                    _counted = Some(ParkedGauge::park(&parked));
                }
                Session::Ended => return,
                Session::Leftover(i, s) => return Box::pin(serve_auto(i, s, limits, drain)).await,
            }
        }
    }
}

/// How a stretch of HTTP/1 requests served by hyper ended.
enum Session<I, S> {
    /// Parked between requests: the stream and service come back.
    Parked(Timeouts<I>, S),
    /// The connection is over.
    Ended,
    /// hyper held unread bytes (never expected: parking waits for a request
    /// boundary); they are a request's, so serve on without parking.
    Leftover(Timeouts<I>, S),
}

/// hyper serves HTTP/1 requests until the connection parks or ends.
async fn session<I, S>(io: Timeouts<I>, service: S, limits: Limits) -> Session<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
{
    let parts = match http1_builder(limits).serve_connection(TokioIo::new(io), service).without_shutdown().await {
        Ok(parts) => parts,
        Err(e) => {
            tracing::debug!("connection ended: {e}");
            return Session::Ended;
        }
    };
    let mut io = parts.io.into_inner();
    if !io.is_parked() {
        // The client closed, or the answer closed the connection
        // (`Connection: close`, a refused body): finish the stream.
        let _ = io.shutdown().await;
        return Session::Ended;
    }
    if !parts.read_buf.is_empty() {
        io.unpark(parts.read_buf);
        io.never_park();
        return Session::Leftover(io, parts.service);
    }
    Session::Parked(io, parts.service)
}

/// Any protocol, by hyper-util's auto builder (h2 and HTTP/1 without parking).
async fn serve_auto<I, S>(io: Timeouts<I>, service: S, limits: Limits, drain: &Drain)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
{
    let builder = auto_builder(limits);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = drain.started() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}

/// A one-byte `Bytes` without allocating.
fn one_byte(b: u8) -> Bytes {
    static ALL: [u8; 256] = {
        let mut all = [0u8; 256];
        let mut i = 0;
        while i < 256 {
            all[i] = i as u8;
            i += 1;
        }
        all
    };
    let i = usize::from(b);
    Bytes::from_static(&ALL[i..=i])
}

/// One accepted connection; `None` after a failed accept (out of file
/// descriptors and the like), having paused briefly instead of spinning.
pub(crate) async fn accept(listener: &TcpListener, what: &'static str) -> Option<(TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(listener = what, "accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// The plain-HTTP listener next to a TLS one: ACME HTTP-01 answers and
/// redirects to https. It serves no documents, but it is public, so its
/// connections count against the same global and per-address caps.
async fn serve_http_listener(
    listener: TcpListener,
    shared: Arc<Shared>,
    conns: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    drain: Arc<Drain>,
) {
    loop {
        let Some((stream, peer)) = accept(&listener, "tls.http_listen").await else { continue };
        let Ok(permit) = Arc::clone(&conns).try_acquire_owned() else {
            shared.metrics.deny("conn_limit");
            continue;
        };
        let snap = shared.snapshot();
        let client_ip = peer.ip().to_canonical();
        // A trusted proxy carries many clients: no per-address cap on it.
        let slot = if snap.config.client_ip.trusted_proxies.contains(client_ip) {
            None
        } else {
            match per_ip.acquire(client_ip, snap.config.server.max_connections_per_ip) {
                Some(slot) => Some(slot),
                None => {
                    shared.metrics.deny("conn_limit");
                    continue;
                }
            }
        };
        let (shared, drain) = (Arc::clone(&shared), Arc::clone(&drain));
        tokio::spawn(async move {
            let _held = (permit, slot);
            let limits = Limits::of(&shared.snapshot().config.server);
            let parked = shared.metrics.connections_parked.clone();
            let info = Arc::new(ConnInfo { peer, client_ip: peer.ip().to_canonical(), forwarded: false, tls: false });
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                let info = Arc::clone(&info);
                async move { Ok::<_, Infallible>(crate::proxy::handler::serve_redirect(&shared, &info, req).await) }
            });
            serve_http(Timeouts::for_http(stream, limits), service, limits, &drain, parked, false).await;
        });
    }
}

static PROXY_REFUSED: Throttle = Throttle::new();
static PER_IP_REFUSED: Throttle = Throttle::new();

/// Open connections per client address. Bounded by `max_connections`
/// entries, since every entry is an open connection.
#[derive(Debug, Default)]
struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; uncounted when dropped.
struct PerIpSlot {
    tracker: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PerIpSlot> {
        let mut counts = self.lock();
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PerIpSlot { tracker: Arc::clone(self), ip })
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut counts = self.tracker.lock();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// hyper's HTTP/1.1 + h2 server with every limit set explicitly.
fn http1_builder(limits: Limits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    // Our Timeouts wrapper enforces the head deadline; hyper's timer would
    // also cut idle keep-alive connections (see timeouts.rs).
    b.header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true)
        .half_close(false);
    b
}

fn auto_builder(limits: Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // As in `http1_builder`.
    b.http1()
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true)
        .half_close(false);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(256))
        .max_send_buf_size(64 * 1024)
        .keep_alive_interval(None);
    b
}
