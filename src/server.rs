//! The listeners put together: the public listener, the plain-HTTP one
//! beside TLS and the admin listener, each an [`edge::Listener`] with its
//! [`Site`]; and shutdown, which stops accepting at once and lets in-flight
//! requests finish within `shutdown_grace`.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Listen;
use crate::edge::caps::ConnCaps;
use crate::edge::clientip::Source as ClientIpSource;
use crate::edge::http::ConnLimits;
use crate::edge::listener::{ClientIp, ConnInfo, Listener, Rules};
use crate::edge::systemd::{Passed, SystemdError};
use crate::edge::tls::Tls;
use crate::proxy::refresh::{self, Refresher};
use crate::proxy::state::{Shared, Snapshot};
use crate::proxy::{admin, handler, redirect};

/// A listener's service maker: every request of a connection is answered
/// by `$answer`, with `$s` the shared state and `$conn` what the edge knows of
/// the connection. A macro rather than a generic function: the answer is
/// written into the one async block hyper polls, not wrapped in a second
/// future (which cost ~150 instructions a request on the hit path).
macro_rules! per_connection {
    ($shared:expr, |$s:ident, $conn:ident, $req:ident| $answer:expr) => {{
        let shared: Arc<Shared> = $shared;
        move |conn: ConnInfo| {
            let (shared, info) = (Arc::clone(&shared), Arc::new(conn));
            service_fn(move |$req| {
                let ($s, $conn) = (Arc::clone(&shared), Arc::clone(&info));
                async move { Ok::<_, Infallible>($answer) }
            })
        }
    }};
}

/// Open admin connections at most: probes and scrapers need a handful.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// The admin listener's limits: probes and scrapes are small and quick.
const ADMIN_LIMITS: ConnLimits = ConnLimits {
    idle_timeout: Duration::from_secs(30),
    header_read_timeout: Duration::from_secs(5),
    max_header_bytes: 16 * 1024,
    max_headers: 64,
    h2_max_concurrent_streams: 1,
    h2: false,
};

/// Why the listeners could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {field} {listen}: {source}")]
    Bind { field: &'static str, listen: String, source: std::io::Error },
    #[error(transparent)]
    Systemd(#[from] SystemdError),
}

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
    /// A listener configured as `systemd` is refused here (no sockets were
    /// passed): reading systemd's variables clears them, which is sound only
    /// while the process is single-threaded, so the binary reads them before
    /// its runtime starts and calls [`bind_passed`](Server::bind_passed).
    pub async fn bind(shared: Arc<Shared>) -> Result<Server, BindError> {
        Server::bind_passed(shared, &mut Passed::none()).await
    }

    /// [`bind`](Server::bind), taking `systemd` listeners from `passed`.
    pub async fn bind_passed(shared: Arc<Shared>, passed: &mut Passed) -> Result<Server, BindError> {
        let snap = shared.snapshot();
        let backlog = snap.config.server.listen_backlog;
        let mut open = |l: &Listen, field: &'static str| -> Result<TcpListener, BindError> {
            let socket = match l {
                // systemd's sockets come listening, with the unit's Backlog=.
                Listen::Addr(addr) => listen(*addr, backlog),
                Listen::Systemd(name) => {
                    let std = passed.take(field, name.as_deref())?;
                    std.set_nonblocking(true).and_then(|()| TcpListener::from_std(std))
                }
            };
            socket.map_err(|source| BindError::Bind { field, listen: l.to_string(), source })
        };
        let public = open(&snap.config.server.listen, "server.listen")?;
        let admin = open(&snap.config.server.admin_listen, "server.admin_listen")?;
        let http = match &snap.config.tls.http_listen {
            Some(l) => Some(open(l, "tls.http_listen")?),
            None => None,
        };
        let unused = passed.unused();
        if !unused.is_empty() {
            tracing::warn!(sockets = %unused.join(", "), "systemd passed sockets no listener takes; they stay open, unserved");
        }
        let bound = [
            ("server.listen", Some(&public)),
            ("server.admin_listen", Some(&admin)),
            ("tls.http_listen", http.as_ref()),
        ];
        let _ = shared
            .listeners
            .set(bound.iter().filter_map(|(name, l)| Some((*name, (*l)?.local_addr().ok()?))).collect());
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
        let metrics = Arc::clone(&shared.metrics);
        let max = shared.snapshot().config.server.max_connections;
        // One budget for every public port: the plain-HTTP listener counts too.
        let caps = ConnCaps::new(max);
        let stop = CancellationToken::new();
        let admin_stop = CancellationToken::new();

        let refresher = Arc::new(Refresher::default());
        let admin_service = {
            let shared = Arc::clone(&shared);
            move |_conn: ConnInfo| {
                let (shared, refresher) = (Arc::clone(&shared), Arc::clone(&refresher));
                service_fn(move |req| {
                    let (s, r) = (Arc::clone(&shared), Arc::clone(&refresher));
                    async move { Ok::<_, Infallible>(admin_answer(&s, &r, req).await) }
                })
            }
        };
        let admin = Listener::new(
            "server.admin_listen",
            admin,
            ConnCaps::new(MAX_ADMIN_CONNECTIONS),
            || AdminRules,
            admin_service,
            Arc::clone(&metrics),
            false,
        );
        let admin_task = tokio::spawn(admin.run(admin_stop.clone()));
        let http_task = http.map(|l| {
            let rules = public_rules(Arc::clone(&shared), Role::Redirect);
            let service =
                per_connection!(Arc::clone(&shared), |s, conn, req| redirect::serve_redirect(&s, &conn, req).await);
            let listener =
                Listener::new("tls.http_listen", l, Arc::clone(&caps), rules, service, Arc::clone(&metrics), true);
            tokio::spawn(listener.run(stop.clone()))
        });
        let rules = public_rules(Arc::clone(&shared), Role::Documents);
        let service = per_connection!(Arc::clone(&shared), |s, conn, req| handler::serve(&s, &conn, req).await);
        let public = Listener::new("server.listen", public, Arc::clone(&caps), rules, service, metrics, true);

        shared.snapshot().prefetch();
        shared.listening.store(true, Ordering::Release);
        tracing::info!(listen = %public.local_addr().map(|a| a.to_string()).unwrap_or_default(), "public listener accepting");
        let public_task = tokio::spawn(public.run(stop.clone()));

        shutdown.await;
        // Stops every public accept loop (closing its socket) and tells
        // every connection to finish at its next quiet moment.
        stop.cancel();
        let _ = public_task.await;
        if let Some(t) = http_task {
            let _ = t.await;
        }
        shared.listening.store(false, Ordering::Release);
        let grace = shared.snapshot().config.server.shutdown_grace;
        tracing::info!(open = caps.open(), grace = ?grace, "shutting down: draining connections");
        if !caps.drained(grace).await {
            tracing::warn!("shutdown_grace expired with connections still open; closing them");
        }
        admin_stop.cancel();
        let _ = admin_task.await;
    }
}

/// One admin request: `/refresh` (which waits on the issuer), or the
/// routes of [`admin::route`].
async fn admin_answer(
    shared: &Shared,
    refresher: &Refresher,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    if req.uri().path() == refresh::PATH {
        return refresh::serve(shared, refresher, &req).await;
    }
    admin::route(shared, &req)
}

/// What a public listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `server.listen`: the allowlisted documents.
    Documents,
    /// `tls.http_listen`: ACME HTTP-01 answers and redirects to https. The
    /// source-address allowlist does not apply (validations must pass) and
    /// the client is the peer.
    Redirect,
}

/// The live configuration, as one public connection's rules.
struct PublicRules {
    snap: Arc<Snapshot>,
    tls: Option<Arc<Tls>>,
    role: Role,
}

fn public_rules(shared: Arc<Shared>, role: Role) -> impl Fn() -> PublicRules + Send + Sync + 'static {
    move || {
        let tls = match role {
            Role::Documents => shared.tls.clone(),
            Role::Redirect => None,
        };
        PublicRules { snap: shared.snapshot(), tls, role }
    }
}

impl Rules for PublicRules {
    fn limits(&self) -> ConnLimits {
        let s = &self.snap.config.server;
        ConnLimits {
            idle_timeout: s.idle_timeout,
            header_read_timeout: s.header_read_timeout,
            max_header_bytes: s.max_header_bytes,
            max_headers: s.max_headers,
            h2_max_concurrent_streams: s.h2_max_concurrent_streams,
            h2: true,
        }
    }

    fn client_ip(&self) -> ClientIp<'_> {
        let c = &self.snap.config.client_ip;
        match (self.role, c.source) {
            (Role::Redirect, _) | (Role::Documents, ClientIpSource::Peer) => ClientIp::Peer,
            (Role::Documents, ClientIpSource::ProxyProtocol) => {
                ClientIp::ProxyProtocol { trusted: &c.trusted_proxies, timeout: c.proxy_protocol_timeout }
            }
            (Role::Documents, ClientIpSource::XForwardedFor) => ClientIp::Forwarded,
        }
    }

    fn max_per_ip(&self) -> Option<usize> {
        Some(self.snap.config.server.max_connections_per_ip)
    }

    fn shared_address(&self, addr: IpAddr) -> bool {
        self.snap.config.client_ip.trusted_proxies.contains(addr)
    }

    fn admit(&self, client: IpAddr) -> bool {
        self.role == Role::Redirect || self.snap.ranges.admit(client)
    }

    fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }
}

/// The admin listener's rules: fixed limits, plain HTTP/1.1, never public.
struct AdminRules;

impl Rules for AdminRules {
    fn limits(&self) -> ConnLimits {
        ADMIN_LIMITS
    }
    fn client_ip(&self) -> ClientIp<'_> {
        ClientIp::Peer
    }
    fn max_per_ip(&self) -> Option<usize> {
        None
    }
    fn shared_address(&self, _addr: IpAddr) -> bool {
        false
    }
    fn admit(&self, _client: IpAddr) -> bool {
        true
    }
    fn tls(&self) -> Option<&Arc<Tls>> {
        None
    }
}

/// A listening socket on `addr` with an accept queue of `backlog`
/// (`server.listen_backlog`), `SO_REUSEADDR` set as `TcpListener::bind`
/// does, so a restart does not wait for old connections' TIME_WAIT.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
