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
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::admin;
use crate::clientip::{self, Prefixed};
use crate::config::ServerConfig;
use crate::metrics::ConnectionGauge;
use crate::proxy::{self, ConnInfo};
use crate::state::Shared;
use crate::throttle::Throttle;
use crate::timeouts::Timeouts;
use crate::tls::Accepted;

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
        let http_task = http.map(|l| {
            tokio::spawn(serve_http_listener(l, Arc::clone(&shared), Arc::clone(&conns), Arc::clone(&per_ip)))
        });
        let graceful = GracefulShutdown::new();

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
            let (shared, per_ip, watcher) = (Arc::clone(&shared), Arc::clone(&per_ip), graceful.watcher());
            tokio::spawn(async move {
                handle_connection(shared, per_ip, watcher, stream, peer).await;
                drop(permit);
            });
        }

        drop(public);
        shared.listening.store(false, Ordering::Release);
        let grace = shared.snapshot().config.server.shutdown_grace;
        tracing::info!(open = graceful.count(), grace = ?grace, "shutting down: draining connections");
        if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
            tracing::warn!("shutdown_grace expired with connections still open; closing them");
        }
        admin_task.abort();
        if let Some(t) = http_task {
            t.abort();
        }
    }
}

/// One accepted connection, from its first byte to its end.
///
/// Order of work, cheapest first: the PROXY header (only from trusted peers,
/// under its own timeout), then the source-address allowlist and the
/// per-address connection cap when the client address is known now, then HTTP.
async fn handle_connection(
    shared: Arc<Shared>,
    per_ip: Arc<PerIp>,
    watcher: Watcher,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let metrics = Arc::clone(&shared.metrics);
    let _open = ConnectionGauge::open(&metrics.connections_active);
    let snap = shared.snapshot();
    let cfg = &snap.config;
    let (client_ip, already_read) = match cfg.client_ip.source {
        clientip::Source::ProxyProtocol => {
            let header = clientip::read_proxy_header(
                &mut stream,
                peer,
                &cfg.client_ip.trusted_proxies,
                cfg.client_ip.proxy_protocol_timeout,
            )
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
    let io = Prefixed::new(already_read, stream);
    match &shared.tls {
        None => {
            if !admit() {
                return;
            }
            let info = ConnInfo { peer, client_ip, forwarded, tls: false };
            serve_http(io, info, Arc::clone(&shared), &cfg.server, watcher).await;
        }
        Some(tls) => match tls.accept(io, admit).await {
            Ok(Accepted::Http(stream)) => {
                let info = ConnInfo { peer, client_ip, forwarded, tls: true };
                serve_http(stream, info, Arc::clone(&shared), &cfg.server, watcher).await;
            }
            Ok(Accepted::Challenge) => tracing::info!(peer = %peer, "tls: answered an ACME TLS-ALPN-01 validation"),
            Err(e) => tracing::debug!(peer = %peer, "closing connection: {e}"),
        },
    }
}

/// HTTP/1.1 and h2 on an established stream, with our deadlines.
async fn serve_http<I>(io: I, info: ConnInfo, shared: Arc<Shared>, cfg: &ServerConfig, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let info = Arc::new(info);
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let info = Arc::clone(&info);
        async move { Ok::<_, Infallible>(proxy::serve(&shared, &info, req).await) }
    });
    let io = TokioIo::new(Timeouts::new(io, cfg.idle_timeout, Some(cfg.header_read_timeout)));
    let builder = http_builder(cfg);
    if let Err(e) = watcher.watch(builder.serve_connection(io, service)).await {
        tracing::debug!(peer = %peer, "connection ended: {e}");
    }
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
async fn serve_http_listener(listener: TcpListener, shared: Arc<Shared>, conns: Arc<Semaphore>, per_ip: Arc<PerIp>) {
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
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _held = (permit, slot);
            let cfg = shared.snapshot().config.server.clone();
            let info = Arc::new(ConnInfo { peer, client_ip: peer.ip().to_canonical(), forwarded: false, tls: false });
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                let info = Arc::clone(&info);
                async move { Ok::<_, Infallible>(proxy::serve_redirect(&shared, &info, req).await) }
            });
            let io = TokioIo::new(Timeouts::new(stream, cfg.idle_timeout, Some(cfg.header_read_timeout)));
            let _ = http_builder(&cfg).serve_connection(io, service).await;
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
fn http_builder(cfg: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        // Our Timeouts wrapper enforces the head deadline; hyper's timer
        // would also cut idle keep-alive connections (see timeouts.rs).
        .header_read_timeout(None)
        .max_buf_size(cfg.max_header_bytes.max(8192))
        .max_headers(cfg.max_headers)
        .keep_alive(true)
        .half_close(false);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.h2_max_concurrent_streams)
        .max_header_list_size(cfg.max_header_bytes as u32)
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(256))
        .max_send_buf_size(64 * 1024)
        .keep_alive_interval(None);
    b
}
