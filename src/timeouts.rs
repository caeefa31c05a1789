//! Connection deadlines: idle, and the time allowed to send a request head.
//!
//! * **Idle**: no byte moved in either direction for `idle` closes the
//!   connection: a client that connects and never speaks, an idle keep-alive
//!   or h2 connection, a client that stops reading our response.
//! * **Head**: once the first byte of an HTTP/1 request head arrives, the
//!   whole head must arrive within `head`; trickling bytes does not extend it.
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

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Wraps a connection's I/O with its deadlines.
#[derive(Debug)]
pub struct Timeouts<T> {
    inner: T,
    idle: Duration,
    head: Option<Duration>,
    last_progress: Instant,
    /// Set while an HTTP/1 request head is being read.
    head_deadline: Option<Instant>,
    scan: Scan,
    timer: Pin<Box<Sleep>>,
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

impl<T> Timeouts<T> {
    /// `head = None` disables head tracking (only the idle deadline applies).
    pub fn new(inner: T, idle: Duration, head: Option<Duration>) -> Self {
        let now = Instant::now();
        Timeouts {
            inner,
            idle,
            head,
            last_progress: now,
            head_deadline: None,
            scan: if head.is_some() { Scan::Sniff { seen: [0; 3], len: 0 } } else { Scan::Off },
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
        }
    }

    fn deadline(&self) -> Instant {
        let idle = self.last_progress + self.idle;
        match self.head_deadline {
            Some(h) if h < idle => h,
            _ => idle,
        }
    }

    fn expired(&self) -> io::Error {
        let what = if self.head_deadline.is_some_and(|h| Instant::now() >= h) {
            "request head timeout"
        } else {
            "idle timeout"
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }

    /// Called when the inner I/O is pending: errors once a deadline passed.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while self.timer.as_mut().poll(cx).is_ready() {
            let deadline = self.deadline();
            if Instant::now() >= deadline {
                return Err(self.expired());
            }
            self.timer.as_mut().reset(deadline);
        }
        Ok(())
    }

    /// Feeds bytes read to the head scanner.
    fn scanned(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match &mut self.scan {
                Scan::Off => return,
                Scan::Sniff { seen, len } => {
                    seen[*len as usize] = b;
                    *len += 1;
                    if *len == 3 {
                        self.scan = if seen == b"PRI" { Scan::Off } else { Scan::Http1 { nl: 0 } };
                        // The sniffed bytes start the first head.
                        if self.scan != Scan::Off {
                            self.head_deadline = self.head.map(|h| Instant::now() + h);
                        }
                    }
                }
                Scan::Http1 { nl } => {
                    if self.head_deadline.is_none() {
                        // First byte of a new head (bare line ends between
                        // pipelined requests are tolerated, as hyper does).
                        if b == b'\r' || b == b'\n' {
                            continue;
                        }
                        self.head_deadline = self.head.map(|h| Instant::now() + h);
                        *nl = 0;
                        continue;
                    }
                    *nl = match (b, *nl) {
                        (b'\n', 1 | 2) => {
                            self.head_deadline = None;
                            0
                        }
                        (b'\n', _) => 1,
                        (b'\r', 1) => 2,
                        _ => 0,
                    };
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Timeouts<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let now = Instant::now();
                this.last_progress = now;
                if this.scan != Scan::Off {
                    this.scanned(&buf.filled()[before..]);
                }
                match this.head_deadline {
                    Some(h) if now >= h => Poll::Ready(Err(this.expired())),
                    _ => Poll::Ready(Ok(())),
                }
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> Timeouts<T> {
    fn after_write<R>(&mut self, r: Poll<io::Result<R>>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                self.last_progress = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending => match self.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Timeouts<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.after_write(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> Timeouts<()> {
        Timeouts::new((), Duration::from_secs(60), Some(Duration::from_secs(5)))
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

    #[tokio::test]
    async fn h2_is_not_scanned() {
        let mut t = scanner();
        t.scanned(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(t.scan, Scan::Off);
        assert!(t.head_deadline.is_none());
    }

    #[tokio::test]
    async fn a_head_split_byte_by_byte_is_tracked() {
        let mut t = scanner();
        for b in b"GE" {
            t.scanned(&[*b]);
        }
        assert!(t.head_deadline.is_none(), "still sniffing");
        t.scanned(b"T");
        assert!(t.head_deadline.is_some());
        for b in b" / HTTP/1.1\r\nA: b\r\n\r" {
            t.scanned(&[*b]);
        }
        assert!(t.head_deadline.is_some());
        t.scanned(b"\n");
        assert!(t.head_deadline.is_none());
    }
}
