//! Listeners and connections: accept, count, time out, serve, drain.
//!
//! Limits are applied in order of cost: the global connection cap before
//! anything is read, hyper's header-size and header-count limits and our
//! request-head deadline before a request exists, the idle timeout for the
//! whole life of the connection, and h2 stream limits on top. Shutdown stops accepting at once
//! and lets in-flight requests finish within `shutdown_grace`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::admin;
use crate::config::ServerConfig;
use crate::proxy::{self, ConnInfo};
use crate::state::Shared;
use crate::timeouts::Timeouts;

/// A bound proxy, ready to [`run`](Server::run).
pub struct Server {
    shared: Arc<Shared>,
    public: TcpListener,
    admin: TcpListener,
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
        Ok(Server { shared, public, admin })
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
        let Server { shared, public, admin } = self;
        let admin_task = tokio::spawn(admin::serve(admin, Arc::clone(&shared)));
        let max = shared.snapshot().config.server.max_connections;
        let conns = Arc::new(Semaphore::new(max));
        let graceful = GracefulShutdown::new();

        shared.snapshot().prefetch();
        shared.listening.store(true, Ordering::Release);
        tracing::info!(listen = %public.local_addr().map(|a| a.to_string()).unwrap_or_default(), "public listener accepting");

        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                a = public.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning on the error.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&conns).try_acquire_owned() else {
                tracing::debug!(peer = %peer, "max_connections reached; closing new connection");
                continue;
            };
            let cfg = shared.snapshot().config.server.clone();
            let conn = serve_connection(&cfg, Arc::clone(&shared), stream, peer);
            let watched = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = watched.await {
                    tracing::debug!(peer = %peer, "connection ended: {e}");
                }
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
    }
}

/// The hyper connection for one accepted socket.
fn serve_connection(
    cfg: &ServerConfig,
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
) -> impl hyper_util::server::graceful::GracefulConnection<Error = Box<dyn std::error::Error + Send + Sync>> {
    let _ = stream.set_nodelay(true);
    let info = Arc::new(ConnInfo { peer, client_ip: peer.ip().to_canonical() });
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let info = Arc::clone(&info);
        async move { Ok::<_, Infallible>(proxy::serve(&shared, &info, req).await) }
    });
    let io = TokioIo::new(Timeouts::new(stream, cfg.idle_timeout, Some(cfg.header_read_timeout)));
    http_builder(cfg).serve_connection(io, service).into_owned()
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
