//! HTTP/1.1 and h2 on an established stream, with our limits.
//!
//! HTTP/1 is served one stretch of activity at a time: between requests the
//! connection parks (after [`PARK_AFTER`] of quiet) and waits for the next
//! request's first byte holding nothing but the stream; hyper serves each
//! stretch. h2 (by ALPN, or a cleartext connection opening with `P`, which
//! could be the h2 preface) goes to hyper-util's auto builder, which tells
//! the two apart and serves h2 with its own limits.
//!
//! Shutdown: a parked connection closes at once; a busy one finishes what it
//! is answering and closes at its next quiet moment.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::edge::conn_io::{ConnIo, Expired};
use crate::edge::h2guard::{H2Guard, H2Limits, H2Refusal, DEFAULT_WRITE_TIMEOUT};
use crate::edge::rewind::Rewind;
use crate::telemetry::budget::Budget;
use crate::telemetry::metrics::{Cut, Deny, Metrics, ParkedGauge};

/// Every response the edge serves: fixed, fully buffered bodies.
pub type Body = http_body_util::Full<Bytes>;

/// What answers the requests of one connection.
pub trait ConnService:
    Service<http::Request<Incoming>, Response = http::Response<Body>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> ConnService for S where
    S: Service<http::Request<Incoming>, Response = http::Response<Body>, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// One connection's HTTP limits, copied out of the configuration once.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// No byte either way for this long closes the connection.
    pub idle_timeout: Duration,
    /// A request head must arrive within this of its first byte.
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub h2_max_concurrent_streams: u32,
    /// Whether h2 is spoken at all (the admin listener is HTTP/1.1 only).
    pub h2: bool,
}

/// How long an HTTP/1 connection waits between requests before it parks:
/// hyper's connection and buffers are dropped and the bare stream waits for
/// the next request (see conn_io.rs). Long enough that a client sending
/// requests back to back never parks.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// Serves HTTP on `io` (with any bytes already read from it put back in
/// front) until the connection ends or, once `drain` is
/// cancelled, until its next quiet moment. `h2` says ALPN chose h2.
/// `metrics` counts parked connections and the h2 guard's cuts.
// A plain fn returning an async block: an `async fn` would copy its
// arguments into its state a second time, and this state is what a parked
// connection costs (hyper's part is boxed in `session`).
#[allow(clippy::manual_async_fn)]
pub fn serve<'d, I, S>(
    io: Rewind<I>,
    service: S,
    limits: ConnLimits,
    drain: &'d CancellationToken,
    metrics: Arc<Metrics>,
    h2: bool,
) -> impl Future<Output = ()> + Send + 'd
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
{
    async move {
        let mut io = ConnIo::new(io, limits.idle_timeout, Some(limits.header_read_timeout));
        let mut service = service;
        if h2 && limits.h2 {
            return Box::pin(serve_auto(io, service, limits, drain, &metrics)).await;
        }
        io.park_after(PARK_AFTER, drain.clone());
        // Counts this connection in `connections_parked` while it waits.
        let mut _counted: Option<ParkedGauge> = None;
        // A connection is accepted to be answered: its first request is
        // served even when a drain began since the accept (the client sent
        // it, or is sending it, expecting an answer; closing would fail it).
        // The wait is bounded by the idle timeout, the drain by
        // `shutdown_grace`. Between later requests a drain closes at once.
        let mut first_request = true;
        loop {
            // Parked: wait for the next request's first byte, holding no buffer.
            let mut first = [0u8; 1];
            let n = tokio::select! {
                r = io.read(&mut first) => r.unwrap_or_else(|e| {
                    let _ = ended(&metrics, &e);
                    0
                }),
                () = drain.cancelled(), if !first_request => 0,
            };
            first_request = false;
            _counted = None;
            if n == 0 {
                return;
            }
            io.unpark(one_byte(first[0]));
            if first[0] == b'P' && limits.h2 {
                io.never_park();
                return Box::pin(serve_auto(io, service, limits, drain, &metrics)).await;
            }
            match Box::pin(session(io, service, limits, &metrics)).await {
                Session::Parked(i, s) => {
                    (io, service) = (i, s);
                    _counted = Some(ParkedGauge::park(&metrics.connections_parked));
                }
                Session::Ended => return,
                Session::Leftover(i, s) => return Box::pin(serve_auto(i, s, limits, drain, &metrics)).await,
            }
        }
    }
}

/// How a stretch of HTTP/1 requests served by hyper ended.
enum Session<I, S> {
    /// Parked between requests: the stream and service come back.
    Parked(ConnIo<I>, S),
    /// The connection is over.
    Ended,
    /// hyper held unread bytes (never expected: parking waits for a request
    /// boundary); they are a request's, so serve on without parking.
    Leftover(ConnIo<I>, S),
}

/// hyper serves HTTP/1 requests until the connection parks or ends.
async fn session<I, S>(io: ConnIo<I>, service: S, limits: ConnLimits, metrics: &Metrics) -> Session<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
{
    let parts = match http1_builder(limits).serve_connection(TokioIo::new(io), service).without_shutdown().await {
        Ok(parts) => parts,
        Err(e) => {
            http1_ended(metrics, &e);
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

/// Any protocol, by hyper-util's auto builder (h2 and HTTP/1 without
/// parking), beneath it the h2 guard; a cut is counted and logged once.
async fn serve_auto<I, S>(io: ConnIo<I>, service: S, limits: ConnLimits, drain: &CancellationToken, metrics: &Metrics)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
{
    let builder = auto_builder(limits);
    // Beneath hyper: frame budgets, the h2 idle rule, the header-block
    // deadline and the write timeout. A connection that does not open with
    // the h2 preface is passed through untouched.
    let guard = H2Guard::new(io, &h2_limits(limits));
    let verdict = guard.verdict();
    let close = Arc::new(Notify::new());
    let result = {
        let conn = builder.serve_connection(TokioIo::new(guard), Boxed { service, close: Arc::clone(&close) });
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => r,
            // Shutdown, or an answer that closes the connection: h2 sends
            // GOAWAY and finishes the streams it has.
            () = drain.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            () = close.notified() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
        // The guard is dropped here: what h2 sent is in the verdict now.
    };
    if let Some(why) = verdict.get() {
        cut(metrics, why);
    }
    if let Err(e) = result {
        match e.downcast_ref::<hyper::Error>() {
            Some(e) if verdict.get().is_none() => http1_ended(metrics, e),
            _ => {}
        }
        tracing::debug!(goaway = ?verdict.sent_goaway(), resets = verdict.resets_sent(), "connection ended: {e}");
    }
}

/// Counts why hyper ended an HTTP/1 connection with an error, when the
/// reason is ours to refuse: a head over our limits (hyper answered `431`),
/// one that is not HTTP (`400`), or one of our deadlines. A peer that
/// closed or reset is not a refusal.
fn http1_ended(metrics: &Metrics, e: &hyper::Error) {
    if e.is_parse_too_large() {
        metrics.deny(Deny::HeadTooLarge);
    } else if e.is_parse() {
        metrics.deny(Deny::Malformed);
    } else if let Some(io) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>()) {
        if ended(metrics, io) {
            return;
        }
    }
    tracing::debug!("connection ended: {e}");
}

/// Counts a connection our deadline ended: at debug only, the count is
/// what an operator watches (a trickling client is routine on the internet).
/// Returns whether `e` was one.
fn ended(metrics: &Metrics, e: &std::io::Error) -> bool {
    let Some(why) = Expired::of(e) else { return false };
    let cut = Cut::from(why);
    metrics.cut(cut);
    tracing::debug!(reason = cut.as_str(), "connection closed: {why}");
    true
}

/// A service whose answers are boxed. hyper's h2 task per stream holds the
/// service's future inline, sized for it, until the response body is sent;
/// a stream the peer grants no window would keep the whole request path's
/// state. Boxed, that state is freed the moment the answer is ready, and
/// the stream waits holding only its response.
///
/// An answer marked [`CloseConnection`] closes an h2 connection (GOAWAY,
/// then close once the streams in flight are answered), as `Connection:
/// close` closes an HTTP/1 one.
#[derive(Clone)]
struct Boxed<S> {
    service: S,
    close: Arc<Notify>,
}

impl<S: ConnService> Service<http::Request<Incoming>> for Boxed<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer<S::Future>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        Answer { answer: Box::pin(self.service.call(req)), close: Arc::clone(&self.close) }
    }
}

/// Marks an answer after which the connection is closed, whatever the
/// protocol: a refused body (a client that sends one may be trying to
/// smuggle a request after it). HTTP/1 answers carry `Connection: close` too.
#[derive(Debug, Clone, Copy)]
pub struct CloseConnection;

/// The boxed answer of [`Boxed`].
struct Answer<F> {
    answer: Pin<Box<F>>,
    close: Arc<Notify>,
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<http::Response<Body>, Infallible>>,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let out = std::task::ready!(self.answer.as_mut().poll(cx));
        if let Ok(resp) = &out {
            if resp.extensions().get::<CloseConnection>().is_some() {
                self.close.notify_one();
            }
        }
        std::task::Poll::Ready(out)
    }
}

/// Counts a cut of the h2 guard and logs it once: at warn within one line a
/// second (with how many were left out), otherwise at debug. An idle close
/// is routine and only ever logged at debug.
fn cut(metrics: &Metrics, why: H2Refusal) {
    metrics.cut(Cut::from(why));
    if why != H2Refusal::Idle {
        if let Some(left_out) = H2_CUT.once_a_second() {
            tracing::warn!(reason = why.as_str(), left_out, "h2: GOAWAY sent, connection closed: {why}");
            return;
        }
    }
    tracing::debug!(reason = why.as_str(), "h2: GOAWAY sent, connection closed: {why}");
}

/// The warn lines of h2 guard cuts.
static H2_CUT: Budget = Budget::new();

/// The h2 guard's limits for a connection held to `limits`: the streams and
/// header list h2 is told of, our idle timeout and head deadline, and a
/// write timeout no longer than the idle timeout.
fn h2_limits(limits: ConnLimits) -> H2Limits {
    H2Limits {
        idle_timeout: Some(limits.idle_timeout),
        header_block_timeout: Some(limits.header_read_timeout),
        write_timeout: Some(limits.idle_timeout.min(DEFAULT_WRITE_TIMEOUT)),
        ..H2Limits::default()
            .with_max_concurrent_streams(limits.h2_max_concurrent_streams)
            .with_max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
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

/// hyper's HTTP/1.1 server, every limit explicit.
fn http1_builder(limits: ConnLimits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    // ConnIo enforces the head deadline; hyper's timer would also cut idle
    // keep-alive connections (see conn_io.rs).
    b.header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true)
        .half_close(false);
    b
}

/// hyper-util's auto builder: HTTP/1.1 as in `http1_builder`, and h2 with
/// its limits.
fn auto_builder(limits: ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
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
        // Above the guard's RST_STREAM burst, so the guard (which counts
        // and logs within budget) cuts rapid resets, not h2 (which logs a
        // WARN per connection).
        .max_pending_accept_reset_streams(Some(128))
        .max_local_error_reset_streams(Some(256))
        .max_send_buf_size(64 * 1024)
        .keep_alive_interval(None);
    if !limits.h2 {
        b = b.http1_only();
    }
    b
}
