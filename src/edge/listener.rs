//! One way in for every listener: accept, cap, learn the client, admit,
//! handshake, serve.
//!
//! Limits are applied in order of cost: the global connection cap before
//! anything is read; the PROXY header (only from trusted peers, under its
//! own timeout); the per-address cap and the source-address allowlist once
//! the client is known; the TLS handshake under its timeout; then HTTP with
//! hyper's header limits, our head deadline and idle timeout, and h2's
//! stream limits (see [`http`](super::http)).
//!
//! Listeners differ only in two functions: the [`Rules`] a connection is
//! held to, read from the live configuration when it is accepted (and dropped
//! before it is served, so a reload applies to the next one), and the service
//! that answers its requests.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::edge::caps::ConnCaps;
use crate::edge::clientip;
use crate::edge::http::{self, ConnLimits, ConnService};
use crate::edge::rewind::Rewind;
use crate::edge::tls::{AcceptError, Accepted, Tls};
use crate::net::ipset::IpSet;
use crate::telemetry::budget::Budget;
use crate::telemetry::metrics::{ConnectionGauge, Cut, Deny, Metrics};

/// What the edge knows about a connection before any request.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The client address (the peer, or what a PROXY header named).
    pub client_ip: IpAddr,
    /// Behind a trusted X-Forwarded-For proxy: the client is per request.
    pub forwarded: bool,
    /// Arrived over TLS (responses carry HSTS).
    pub tls: bool,
}

/// How the client address of a connection is learned.
#[derive(Debug, Clone, Copy)]
pub enum ClientIp<'a> {
    /// The TCP peer.
    Peer,
    /// A PROXY header at the start of the connection, from `trusted` peers.
    ProxyProtocol { trusted: &'a IpSet, timeout: Duration },
    /// Per request, from X-Forwarded-For (the peer is a proxy).
    Forwarded,
}

/// One connection's rules.
pub trait Rules: Send + Sync + 'static {
    fn limits(&self) -> ConnLimits;
    fn client_ip(&self) -> ClientIp<'_>;
    /// The per-address connection cap; `None` for none.
    fn max_per_ip(&self) -> Option<usize>;
    /// Whether `addr` speaks for many clients (a trusted proxy), and so is
    /// not capped per address.
    fn shared_address(&self, addr: IpAddr) -> bool;
    /// The source-address allowlist, asked before a TLS handshake completes.
    fn admit(&self, client: IpAddr) -> bool;
    fn tls(&self) -> Option<&Arc<Tls>>;
}

/// Makes the service that answers one connection's requests.
pub trait MakeService: Send + Sync + 'static {
    type Service: ConnService;
    fn make(&self, conn: ConnInfo) -> Self::Service;
}

impl<F, S> MakeService for F
where
    F: Fn(ConnInfo) -> S + Send + Sync + 'static,
    S: ConnService,
{
    type Service = S;
    fn make(&self, conn: ConnInfo) -> S {
        self(conn)
    }
}

/// A bound listener and what it serves.
pub struct Listener<R, M> {
    /// The configuration field that named the address (for logs).
    name: &'static str,
    socket: TcpListener,
    caps: Arc<ConnCaps>,
    serves: Arc<Serves<R, M>>,
}

/// What a listener's connections are held to and answered by.
struct Serves<R, M> {
    rules: R,
    make_service: M,
    metrics: Arc<Metrics>,
    /// Counted in `connections_active` (public listeners).
    public: bool,
}

impl<R, M, Ru> Listener<R, M>
where
    R: Fn() -> Ru + Send + Sync + 'static,
    Ru: Rules,
    M: MakeService,
{
    /// `rules` is called once per accepted connection; `make_service` once
    /// per connection that gets to HTTP.
    pub fn new(
        name: &'static str,
        socket: TcpListener,
        caps: Arc<ConnCaps>,
        rules: R,
        make_service: M,
        metrics: Arc<Metrics>,
        public: bool,
    ) -> Self {
        Listener { name, socket, caps, serves: Arc::new(Serves { rules, make_service, metrics, public }) }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Accepts until `shutdown` is cancelled, then closes the socket; the
    /// connections finish what they answer and close at their next quiet
    /// moment (their end is awaited through the caps).
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                a = accept(&self.socket, self.name) => a,
            };
            let Some((stream, peer)) = accepted else { continue };
            let Some(total) = self.caps.try_total() else {
                self.serves.metrics.deny(Deny::ConnLimit);
                tracing::debug!(listener = self.name, peer = %peer, "max_connections reached; closing new connection");
                continue;
            };
            let serves = Arc::clone(&self.serves);
            tokio::spawn(connection(serves, Arc::clone(&self.caps), stream, peer, total, shutdown.clone()));
        }
    }
}

/// One accepted connection, from its first byte to its end.
// A plain fn returning an async block, like `http::serve`: its state is
// what a parked connection costs.
#[allow(clippy::manual_async_fn)]
fn connection<R, M, Ru>(
    serves: Arc<Serves<R, M>>,
    caps: Arc<ConnCaps>,
    mut stream: TcpStream,
    peer: SocketAddr,
    total: OwnedSemaphorePermit,
    drain: CancellationToken,
) -> impl Future<Output = ()> + Send
where
    R: Fn() -> Ru + Send + Sync + 'static,
    Ru: Rules,
    M: MakeService,
{
    async move {
        let _ = stream.set_nodelay(true);
        let metrics = &serves.metrics;
        let _open = serves.public.then(|| ConnectionGauge::open(&metrics.connections_active));
        let rules = (serves.rules)();
        let client_ip = rules.client_ip();
        let forwarded = matches!(client_ip, ClientIp::Forwarded);
        let (client, already_read) = match client_ip {
            ClientIp::ProxyProtocol { trusted, timeout } => {
                let header = Box::pin(clientip::read_proxy_header(&mut stream, peer, trusted, timeout)).await;
                match header {
                    Ok((named, rest)) => (named.map_or(peer.ip(), |a| a.ip()).to_canonical(), rest),
                    Err(e) => {
                        metrics.deny(Deny::ProxyProtocol);
                        if let Some(left_out) = PROXY_REFUSED.once_a_second() {
                            tracing::warn!(peer = %peer, left_out, "closing connection: {e}");
                        }
                        return;
                    }
                }
            }
            ClientIp::Peer | ClientIp::Forwarded => (peer.ip().to_canonical(), Bytes::new()),
        };
        let max_per_ip = rules.max_per_ip().filter(|_| !rules.shared_address(client));
        let Some(_slot) = caps.admit(total, client, max_per_ip) else {
            metrics.deny(Deny::ConnLimit);
            if let Some(left_out) = PER_IP_REFUSED.once_a_second() {
                tracing::warn!(client = %client, left_out, "closing connection: max_connections_per_ip reached");
            }
            return;
        };
        // Behind an X-Forwarded-For proxy the client is only known per
        // request; the request path checks it there.
        let admit = || {
            let ok = forwarded || rules.admit(client);
            if !ok {
                metrics.deny(Deny::Ip);
            }
            ok
        };
        let limits = rules.limits();
        let io = Rewind::with_prefix(already_read, stream);
        let info = |tls| ConnInfo { peer, client_ip: client, forwarded, tls };
        match rules.tls().cloned() {
            None => {
                if !admit() {
                    return;
                }
                // Serving may last hours: hold no configuration that long.
                drop(rules);
                http::serve(io, serves.make_service.make(info(false)), limits, &drain, Arc::clone(metrics), false)
                    .await;
            }
            // Boxed, as the handshake's state is large and needed only once.
            Some(tls) => match Box::pin(tls.accept(io, admit)).await {
                Ok(Accepted::Http(stream)) => {
                    drop(rules);
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    let stream = Rewind::new(stream);
                    http::serve(stream, serves.make_service.make(info(true)), limits, &drain, Arc::clone(metrics), h2)
                        .await;
                }
                Ok(Accepted::Challenge) => tracing::info!(peer = %peer, "tls: answered an ACME TLS-ALPN-01 validation"),
                Err(e) => {
                    // The allowlist refusal was counted by `admit`.
                    match e {
                        AcceptError::Timeout(_) => metrics.cut(Cut::HandshakeTimeout),
                        AcceptError::Handshake(_) => metrics.cut(Cut::HandshakeFailed),
                        AcceptError::Refused => {}
                    }
                    tracing::debug!(peer = %peer, "closing connection: {e}");
                }
            },
        }
    }
}

/// One accepted connection; `None` after a failed accept (out of file
/// descriptors and the like), having paused briefly instead of spinning.
async fn accept(listener: &TcpListener, what: &'static str) -> Option<(TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(listener = what, "accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

static PROXY_REFUSED: Budget = Budget::new();
static PER_IP_REFUSED: Budget = Budget::new();
