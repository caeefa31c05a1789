//! A connection's byte stream as the HTTP server sees it: deadlines, the
//! request-head scanner, and parking.
//!
//! * **Idle**: no byte moved in either direction for `idle` closes the
//!   connection: a client that connects and never speaks, an idle keep-alive
//!   or h2 connection, a client that stops reading our response.
//! * **Head**: from the first byte of an HTTP/1 request head (for the first
//!   request, the connection's first byte), the whole head must arrive
//!   within `head`; trickling bytes does not extend it.
//!
//! A deadline that passes ends the connection with an `io::Error` carrying
//! an [`Expired`], so the server can count the cut by its reason.
//!
//! hyper's own header-read timer also runs while a keep-alive connection
//! waits for its next request, which would make it the keep-alive timeout.
//! nginx and Envoy keep the two apart, and so do we: requests this proxy
//! serves have no body (one with a body is refused and the connection
//! closed), so an empty line always ends a head and a tiny scanner over the
//! bytes read finds it. Connections that open with the h2 preface are not
//! scanned; h2 has its own limits.
//!
//! Deadlines are re-armed lazily: progress only records an `Instant`; the
//! timer is reset when it fires early, so the hot path pays no timer cost.
//!
//! **Parking** (HTTP/1 only, see `edge::http`): once a response has been
//! flushed, no new request has begun, and nothing moved for `park_after`,
//! the next read reports end-of-stream to hyper. hyper then finishes the
//! connection without shutting the socket down and hands the I/O back, and
//! with it goes everything it held per connection (two 8 KiB buffers and its
//! state). The bare stream waits for the client's next byte; a new hyper
//! connection serves the next request. An idle keep-alive connection so
//! costs a socket and a small task, not hyper's buffers. The byte read while
//! parked is put back ([`ConnIo::unpark`]) through [`Rewind`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::edge::rewind::Rewind;

/// Wraps a connection's I/O with its deadlines.
#[derive(Debug)]
pub struct ConnIo<T> {
    inner: Rewind<T>,
    idle: Duration,
    head: Option<Duration>,
    last_progress: Instant,
    /// Set while an HTTP/1 request head is being read.
    head_deadline: Option<Instant>,
    scan: Scan,
    timer: Pin<Box<Sleep>>,
    /// Parking: `None` = never.
    park_after: Option<Duration>,
    /// Shutdown has begun: park (and so close) at the first quiet moment.
    draining: Option<CancellationToken>,
    /// A response was flushed and no request byte has arrived since.
    quiet: bool,
    /// Request heads completed since the connection was last quiet.
    heads: u8,
    /// Bytes were written since the connection was last quiet.
    wrote: bool,
    /// End-of-stream was reported to hyper to park the connection.
    parked: bool,
    /// Bytes at the front of `inner` that the head scanner has already seen
    /// (read while parked and put back).
    scanned_ahead: usize,
    /// The last write was refused for want of room (the peer reads nothing).
    write_blocked: bool,
}

/// Which deadline ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Expired {
    #[error("request head timeout")]
    Head,
    #[error("write timeout: the peer accepted no bytes")]
    Write,
    #[error("idle timeout")]
    Idle,
}

impl From<Expired> for crate::telemetry::metrics::Cut {
    fn from(e: Expired) -> Self {
        use crate::telemetry::metrics::Cut;
        match e {
            Expired::Head => Cut::HeaderTimeout,
            Expired::Write => Cut::WriteTimeout,
            Expired::Idle => Cut::IdleTimeout,
        }
    }
}

impl Expired {
    /// The deadline behind `e`, if one ended the connection.
    pub fn of(e: &io::Error) -> Option<Expired> {
        e.get_ref()?.downcast_ref::<Expired>().copied()
    }
}

/// Where the head scanner stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Fewer than three bytes seen on the connection.
    Sniff { seen: [u8; 3], len: u8 },
    /// Between heads, or inside one: `nl` is 1 after a `\n`, 2 after `\n\r`.
    Http1 { nl: u8 },
    /// Not scanned (h2, or head tracking off).
    Off,
}

impl<T> ConnIo<T> {
    /// `head = None` disables head tracking (only the idle deadline applies).
    /// `inner` may already hold bytes read ahead (past a PROXY header): they
    /// are read, and scanned, first.
    pub fn new(inner: Rewind<T>, idle: Duration, head: Option<Duration>) -> Self {
        let now = Instant::now();
        ConnIo {
            inner,
            idle,
            head,
            last_progress: now,
            head_deadline: None,
            scan: if head.is_some() { Scan::Sniff { seen: [0; 3], len: 0 } } else { Scan::Off },
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            park_after: None,
            draining: None,
            quiet: false,
            heads: 0,
            wrote: false,
            parked: false,
            scanned_ahead: 0,
            write_blocked: false,
        }
    }

    /// Parks the connection after `after` of quiet between requests, or at
    /// once when `draining` is set.
    pub fn park_after(&mut self, after: Duration, draining: CancellationToken) {
        self.park_after = Some(after);
        self.draining = Some(draining);
        let first = self.last_progress + after;
        if first < self.deadline() {
            self.timer.as_mut().reset(first);
        }
    }

    /// Stops parking (the connection turned out to be h2).
    pub fn never_park(&mut self) {
        self.park_after = None;
    }

    /// Whether end-of-stream was reported to park the connection (rather
    /// than because the client closed it).
    pub fn is_parked(&self) -> bool {
        self.parked
    }

    /// Ready to serve again: `bytes` (already seen by the head scanner) are
    /// read first.
    pub fn unpark(&mut self, bytes: bytes::Bytes) {
        self.parked = false;
        self.quiet = false;
        self.wrote = false;
        self.scanned_ahead = bytes.len();
        self.inner.rewind(bytes);
    }

    /// Whether the connection may be parked at `now`.
    fn parkable(&self, now: Instant) -> bool {
        let draining = || self.draining.as_ref().is_some_and(CancellationToken::is_cancelled);
        self.quiet && !self.parked && self.park_after.is_some_and(|p| now >= self.last_progress + p || draining())
    }

    fn deadline(&self) -> Instant {
        let idle = self.last_progress + self.idle;
        match self.head_deadline {
            Some(h) if h < idle => h,
            _ => idle,
        }
    }

    fn expired(&self) -> io::Error {
        let why = if self.head_deadline.is_some_and(|h| Instant::now() >= h) {
            Expired::Head
        } else if self.write_blocked {
            Expired::Write
        } else {
            Expired::Idle
        };
        io::Error::new(io::ErrorKind::TimedOut, why)
    }

    /// Called when the inner I/O is pending: errors once a deadline passed;
    /// `Ok(true)` when the connection should be parked now.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let deadline = self.deadline();
            if now >= deadline {
                return Err(self.expired());
            }
            if self.parkable(now) {
                return Ok(true);
            }
            // While parking is possible, look again every `park_after`
            // (lazily: progress never touches the timer).
            let next = match self.park_after {
                Some(p) if !self.parked => deadline.min(self.last_progress.max(now) + p),
                _ => deadline,
            };
            self.timer.as_mut().reset(next);
        }
        Ok(false)
    }

    /// Feeds bytes read to the head scanner.
    fn scanned(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            if self.head_deadline.is_some() && matches!(self.scan, Scan::Http1 { .. }) {
                // Inside a head: jump from line end to line end.
                match self.head_end(&bytes[i..]) {
                    Some(n) => {
                        self.head_deadline = None;
                        self.heads = self.heads.saturating_add(1);
                        i += n;
                        continue;
                    }
                    None => return,
                }
            }
            let b = bytes[i];
            i += 1;
            match &mut self.scan {
                Scan::Off => return,
                Scan::Sniff { seen, len } => {
                    seen[*len as usize] = b;
                    *len += 1;
                    // The connection's first byte starts the first head's
                    // deadline, whatever it turns out to be.
                    if *len == 1 {
                        self.head_deadline = self.head.map(|h| Instant::now() + h);
                    }
                    if *len == 3 {
                        // The h2 preface: h2 has its own header-block deadline.
                        if seen == b"PRI" {
                            self.scan = Scan::Off;
                            self.head_deadline = None;
                        } else {
                            self.scan = Scan::Http1 { nl: 0 };
                        }
                    }
                }
                Scan::Http1 { nl } => {
                    // Between heads: the first byte of the next one (bare
                    // line ends between pipelined requests are tolerated,
                    // as hyper does).
                    if b != b'\r' && b != b'\n' {
                        self.head_deadline = self.head.map(|h| Instant::now() + h);
                        *nl = 0;
                    }
                }
            }
        }
    }

    /// Inside a head: the offset just past the empty line that ends it, or
    /// `None` (with the line state kept for the next read). `nl` carries a
    /// line end across reads: 1 after `\n`, 2 after `\n\r`.
    fn head_end(&mut self, bytes: &[u8]) -> Option<usize> {
        let Scan::Http1 { nl } = &mut self.scan else { return None };
        let mut line_start = 0;
        for i in memchr::memchr_iter(b'\n', bytes) {
            let line = &bytes[line_start..i];
            let empty = match (line_start, *nl) {
                (0, 1) => line.is_empty() || line == b"\r",
                (0, 2) => line.is_empty(),
                (0, _) => false,
                _ => line.is_empty() || line == b"\r",
            };
            if empty {
                *nl = 0;
                return Some(i + 1);
            }
            line_start = i + 1;
        }
        let tail = &bytes[line_start..];
        *nl = match (line_start, *nl, tail) {
            (0, carried, []) => carried,
            (0, 1, b"\r") => 2,
            (0, _, _) => 0,
            (_, _, []) => 1,
            (_, _, b"\r") => 2,
            _ => 0,
        };
        None
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ConnIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let now = Instant::now();
                this.last_progress = now;
                this.quiet = false;
                let fresh = &buf.filled()[before..];
                let seen = this.scanned_ahead.min(fresh.len());
                this.scanned_ahead -= seen;
                if this.scan != Scan::Off {
                    this.scanned(&fresh[seen..]);
                }
                match this.head_deadline {
                    Some(h) if now >= h => Poll::Ready(Err(this.expired())),
                    _ => Poll::Ready(Ok(())),
                }
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.check(cx) {
                Ok(false) => Poll::Pending,
                // End-of-stream, as far as hyper is concerned.
                Ok(true) => {
                    this.parked = true;
                    Poll::Ready(Ok(()))
                }
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> ConnIo<T> {
    fn after_write<R>(&mut self, r: Poll<io::Result<R>>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        self.write_blocked = r.is_pending();
        match r {
            Poll::Ready(r) => {
                self.last_progress = Instant::now();
                self.quiet = false;
                Poll::Ready(r)
            }
            // Parking happens only on a read.
            Poll::Pending => match self.check(cx) {
                Ok(_) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ConnIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote |= matches!(r, Poll::Ready(Ok(n)) if n > 0);
        this.after_write(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote |= matches!(r, Poll::Ready(Ok(n)) if n > 0);
        this.after_write(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        if r.is_ready() {
            this.write_blocked = false;
        }
        match r {
            // hyper flushes on every turn of its loop, also while a request is
            // being served and while the connection idles: only a flush after
            // bytes were written is progress, and it may end an answer.
            Poll::Ready(Ok(())) if this.wrote => {
                this.last_progress = Instant::now();
                // The answer to the one request read is out and no request is
                // half read: the connection may park. Pipelined requests (two
                // heads read before an answer) could still sit in hyper's
                // buffer: such a connection never parks.
                let between_heads = this.scan == (Scan::Http1 { nl: 0 }) && this.head_deadline.is_none();
                if between_heads {
                    match this.heads {
                        1 => this.quiet = true,
                        0 => {}
                        _ => this.park_after = None,
                    }
                    this.heads = 0;
                    this.wrote = false;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => {
                this.write_blocked = true;
                match this.check(cx) {
                    Ok(_) => Poll::Pending,
                    Err(e) => Poll::Ready(Err(e)),
                }
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> ConnIo<()> {
        ConnIo::new(Rewind::new(()), Duration::from_secs(60), Some(Duration::from_secs(5)))
    }

    #[tokio::test]
    async fn finds_the_end_of_each_head() {
        let mut t = scanner();
        t.scanned(b"GET /a HTTP/1.1\r\nHost: x\r\n");
        assert!(t.head_deadline.is_some(), "inside a head");
        t.scanned(b"\r\n");
        assert!(t.head_deadline.is_none(), "head ended");
        t.scanned(b"GET /b HTTP/1.1\nHost: x\n\nGET /c");
        assert!(t.head_deadline.is_some(), "bare-LF head ended, a pipelined one began");
        t.scanned(b" HTTP/1.1\r\n\r\n");
        assert!(t.head_deadline.is_none());
    }

    /// The line-end jumping scanner agrees with the byte-at-a-time rule
    /// (a head ends at `\n` right after `\n` or `\n\r`) for every way of
    /// splitting the same bytes into reads.
    #[tokio::test]
    async fn fast_scanner_matches_the_byte_rule_for_any_split() {
        let inputs: [&[u8]; 6] = [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\nA: b\n\n\r\nGET / HTTP/1.1\n\r\n",
            b"GET / HTTP/1.1\r\nA: \r\r\n\r\r\nB: c\r\n\r\n",
            b"GET / HTTP/1.1\r\n\rX\r\n\n",
            b"XYZ\n\r\r\n\r\n",
            b"GET /\r\n\r",
        ];
        for input in inputs {
            // Reference: heads completed, byte at a time.
            let mut reference = scanner();
            for b in input {
                reference.scanned(std::slice::from_ref(b));
            }
            for a in 0..=input.len() {
                for b in a..=input.len() {
                    let mut t = scanner();
                    t.scanned(&input[..a]);
                    t.scanned(&input[a..b]);
                    t.scanned(&input[b..]);
                    assert_eq!(
                        (t.heads, t.head_deadline.is_some(), t.scan),
                        (reference.heads, reference.head_deadline.is_some(), reference.scan),
                        "{:?} split at {a}, {b}",
                        String::from_utf8_lossy(input)
                    );
                }
            }
        }
    }

    async fn served_once() -> (ConnIo<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(4096);
        let mut t = ConnIo::new(Rewind::new(server), Duration::from_secs(60), Some(Duration::from_secs(5)));
        t.park_after(Duration::from_millis(250), CancellationToken::new());
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        let mut buf = [0u8; 64];
        assert_eq!(t.read(&mut buf).await.expect("read"), 27);
        (t, client)
    }

    /// hyper flushes on every turn of its loop; a flush that writes nothing
    /// is not progress and must not keep an idle connection from parking.
    #[tokio::test(start_paused = true)]
    async fn parks_after_the_answer_whatever_hyper_flushes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut t, _client) = served_once().await;
        t.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.expect("write");
        t.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(100)).await;
        t.flush().await.expect("flush");
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(1), t.read(&mut buf)).await.expect("parked within 1 s");
        assert_eq!(n.expect("read"), 0, "end-of-stream for hyper");
        assert!(t.is_parked());
    }

    /// A request being served (hyper flushed, nothing written yet) never parks.
    #[tokio::test(start_paused = true)]
    async fn never_parks_while_a_request_is_answered() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut t, _client) = served_once().await;
        t.flush().await.expect("flush");
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), t.read(&mut buf)).await;
        assert!(read.is_err(), "still waiting, not end-of-stream: {read:?}");
        assert!(!t.is_parked());
    }

    #[tokio::test]
    async fn h2_is_not_scanned() {
        let mut t = scanner();
        t.scanned(b"P");
        assert!(t.head_deadline.is_some(), "not yet known to be h2");
        t.scanned(b"RI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(t.scan, Scan::Off);
        assert!(t.head_deadline.is_none());
    }

    #[tokio::test]
    async fn a_head_split_byte_by_byte_is_tracked() {
        let mut t = scanner();
        t.scanned(b"G");
        let first = t.head_deadline;
        assert!(first.is_some(), "the first byte starts the deadline");
        for b in b"ET" {
            t.scanned(&[*b]);
        }
        assert_eq!(t.head_deadline, first, "later bytes do not move it");
        for b in b" / HTTP/1.1\r\nA: b\r\n\r" {
            t.scanned(&[*b]);
        }
        assert!(t.head_deadline.is_some());
        t.scanned(b"\n");
        assert!(t.head_deadline.is_none());
    }
}
