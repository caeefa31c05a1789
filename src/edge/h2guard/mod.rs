//! HTTP/2 frame guard: per-connection budgets on what a client may make the
//! server do, enforced on the byte stream beneath hyper.
//!
//! hyper 1 and h2 0.4 bound streams, header lists, CONTINUATION frames per
//! header block, remotely reset streams awaiting accept and locally
//! generated resets, but nothing bounds how many SETTINGS, PING,
//! WINDOW_UPDATE, PRIORITY or RST_STREAM frames a peer may send: each costs
//! parsing and locking, SETTINGS and PING each cost an answer, and a peer
//! that sends them without pause holds a core. hyper also has no h2 idle
//! timeout, no deadline for a header block and no write timeout. This guard
//! wraps a connection's I/O once it is known to be h2 and reads the 9-byte
//! header of every frame going either way (across read and write
//! boundaries, skipping payloads without copying them):
//!
//! * **Inbound budgets**, one GCRA token bucket per frame kind
//!   ([`H2Limits`]): a burst, then a steady rate. WINDOW_UPDATE frames also
//!   earn credit from the DATA frames we send (acknowledging data is what
//!   they are for), as in Envoy's per-DATA-frame budget. Empty frames and
//!   header blocks have structural limits (consecutive empty frames,
//!   CONTINUATION frames and bytes per block), and the streams the client
//!   holds open are capped.
//! * **Deadlines**: a connection with no stream in flight is closed after
//!   `idle_timeout` (control frames such as PING do not keep it alive, as in
//!   Envoy); a header block must be complete within `header_block_timeout`
//!   of its HEADERS frame; a response that has started but sends no DATA for
//!   `write_timeout` (the peer grants no flow-control window), or a socket
//!   that accepts no bytes for `write_timeout`, ends the connection.
//!
//! **Cutting.** When a budget is exceeded, the bytes from the offending frame
//! on are never passed to hyper. The guard waits until hyper's outbound frame
//! in progress (if any) is complete, writes `GOAWAY` with
//! `ENHANCE_YOUR_CALM` (`NO_ERROR` for an idle close) and the highest client
//! stream id hyper saw, flushes it and shuts the write side down within
//! `goaway_timeout`, and then fails every read and write so hyper drops the
//! connection. Why it cut is kept in an [`H2Verdict`] for the caller to
//! count and log once, with what h2 itself sent to refuse things (the error
//! code of its GOAWAY, how many RST_STREAM frames), which the guard reads off
//! the outbound frames anyway.
//!
//! **Cost.** Per frame a few integer operations (a bucket is one `max`, one
//! add and one compare); per read or write one clock read; the timer is
//! touched only on pending paths. Nothing is allocated per frame: the open
//! stream table is sized once when the preface arrives.
//!
//! A connection that turns out not to open with the h2 preface (a cleartext
//! `POST` sniffed for h2, say) is passed through untouched.
//!
//! Wiring, where the connection is known to be (or may be) h2:
//!
//! ```ignore
//! let guard = H2Guard::new(io, &limits);
//! let verdict = guard.verdict();
//! builder.serve_connection(TokioIo::new(guard), service).await;
//! if let Some(why) = verdict.get() { /* count why.as_str(), log once */ }
//! ```

mod budgets;
mod frames;
#[cfg(test)]
mod io_tests;
mod refusal;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub use budgets::{H2Limits, DEFAULT_WRITE_TIMEOUT};
pub use refusal::{H2Refusal, H2Verdict};

use frames::{nanos, Inspector, GOAWAY};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for hyper to finish the outbound frame it is writing.
    Drain,
    /// Writing our GOAWAY.
    Send,
    Flush,
    Shutdown,
    Done,
}

#[derive(Debug)]
struct Cut {
    why: H2Refusal,
    phase: Phase,
    goaway: [u8; 17],
    sent: u8,
    /// Give up writing the GOAWAY at this time (ns).
    until: u64,
    /// The reader waiting for the cut to finish.
    reader: Option<Waker>,
}

/// A connection's I/O with the HTTP/2 frame guard; see the module docs.
#[derive(Debug)]
pub struct H2Guard<IO> {
    io: IO,
    inspect: Inspector,
    origin: Instant,
    verdict: H2Verdict,
    timer: Option<Pin<Box<Sleep>>>,
    /// The deadline the timer is set for (ns).
    armed: Option<u64>,
    /// Since when writes have been pending without a byte accepted (ns).
    write_blocked_since: Option<u64>,
    cut: Option<Cut>,
}

impl<IO> H2Guard<IO> {
    /// Guards `io`, whose first inbound bytes should be the client preface
    /// (a connection opening with anything else is passed through).
    pub fn new(io: IO, limits: &H2Limits) -> Self {
        H2Guard {
            io,
            inspect: Inspector::new(limits),
            origin: Instant::now(),
            verdict: H2Verdict::default(),
            timer: None,
            armed: None,
            write_blocked_since: None,
            cut: None,
        }
    }

    /// Where the guard's decision will be found once it has made one.
    pub fn verdict(&self) -> H2Verdict {
        self.verdict.clone()
    }

    fn now(&self) -> u64 {
        nanos(self.origin.elapsed())
    }

    fn at(&self, ns: u64) -> Instant {
        self.origin + Duration::from_nanos(ns)
    }

    /// Decides to cut: no more bytes for hyper; GOAWAY at the next outbound
    /// frame boundary.
    fn start_cut(&mut self, why: H2Refusal, now: u64) {
        if self.cut.is_some() {
            return;
        }
        self.verdict.set(why);
        let mut goaway = [0u8; 17];
        goaway[..9].copy_from_slice(&[0, 0, 8, GOAWAY, 0, 0, 0, 0, 0]);
        goaway[9..13].copy_from_slice(&self.inspect.highest.to_be_bytes());
        goaway[13..].copy_from_slice(&why.goaway_code().to_be_bytes());
        self.cut = Some(Cut {
            why,
            phase: Phase::Drain,
            goaway,
            sent: 0,
            until: now.saturating_add(nanos(self.inspect.limits.goaway_timeout)),
            reader: None,
        });
    }

    fn next_deadline(&self) -> Option<u64> {
        if let Some(cut) = &self.cut {
            return (cut.phase != Phase::Done).then_some(cut.until);
        }
        let write = match (self.write_blocked_since, self.inspect.write_ns) {
            (Some(since), Some(w)) => Some(since.saturating_add(w)),
            _ => None,
        };
        match (self.inspect.deadline(), write) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// On a pending path: polls the next deadline (registering `cx`), and
    /// starts a cut, or gives up on one, when it has passed. The timer is
    /// reset only when the deadline moved earlier; when it moved later (most
    /// progress does that) the timer fires early and is set again, so the hot
    /// path never touches it.
    fn watch(&mut self, cx: &mut Context<'_>) {
        for _ in 0..4 {
            let Some(deadline) = self.next_deadline() else { return };
            let now = self.now();
            if now >= deadline {
                self.armed = None;
                if let Some(cut) = &mut self.cut {
                    cut.phase = Phase::Done;
                    return;
                }
                let blocked = matches!((self.write_blocked_since, self.inspect.write_ns), (Some(s), Some(w)) if now >= s.saturating_add(w));
                let why = if blocked { Some(H2Refusal::WriteTimeout) } else { self.inspect.expired(now) };
                match why {
                    Some(why) => self.start_cut(why, now),
                    None => return,
                }
                continue;
            }
            let at = self.at(deadline);
            let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if self.armed.is_none_or(|armed| deadline < armed) {
                timer.as_mut().reset(at);
                self.armed = Some(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return;
            }
            // Fired early (the deadline moved on): set it again.
            self.armed = None;
        }
    }
}

impl<IO> Drop for H2Guard<IO> {
    /// Publishes what hyper sent (counted per frame here, without atomics).
    fn drop(&mut self) {
        let cell = &self.verdict.0;
        if let Some(code) = self.inspect.sent_goaway {
            cell.goaway.store(code.saturating_add(1), Ordering::Release);
        }
        cell.resets.store(self.inspect.resets_sent, Ordering::Release);
    }
}

impl<IO: AsyncWrite + Unpin> H2Guard<IO> {
    /// Drives a cut to its end: GOAWAY written, flushed, write side shut.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Some(cut) = &mut self.cut else { return Poll::Ready(()) };
            // Each arm either moves to the next phase (`continue`) or is
            // pending on the inner I/O (or, draining, on hyper).
            match cut.phase {
                Phase::Drain => {
                    if self.inspect.out_remaining() == 0 {
                        cut.phase = Phase::Send;
                        continue;
                    }
                }
                Phase::Send => match Pin::new(&mut self.io).poll_write(cx, &cut.goaway[cut.sent as usize..]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        cut.sent += n as u8;
                        if cut.sent as usize == cut.goaway.len() {
                            cut.phase = Phase::Flush;
                        }
                        continue;
                    }
                    Poll::Ready(_) => {
                        cut.phase = Phase::Done;
                        continue;
                    }
                    Poll::Pending => {}
                },
                Phase::Flush => match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        cut.phase = Phase::Shutdown;
                        continue;
                    }
                    Poll::Ready(Err(_)) => {
                        cut.phase = Phase::Done;
                        continue;
                    }
                    Poll::Pending => {}
                },
                Phase::Shutdown => match Pin::new(&mut self.io).poll_shutdown(cx) {
                    Poll::Ready(_) => {
                        cut.phase = Phase::Done;
                        continue;
                    }
                    Poll::Pending => {}
                },
                Phase::Done => {
                    if let Some(w) = cut.reader.take() {
                        w.wake();
                    }
                    return Poll::Ready(());
                }
            }
            // Pending: bounded by the GOAWAY deadline.
            self.watch(cx);
            if self.cut.as_ref().is_some_and(|c| c.phase == Phase::Done) {
                continue;
            }
            return Poll::Pending;
        }
    }

    fn cut_error(&self, kind: io::ErrorKind) -> io::Error {
        let why = self.cut.as_ref().map_or("cut", |c| c.why.as_str());
        io::Error::new(kind, format!("h2 guard: {why}"))
    }

    fn poll_cut_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.drive(cx) {
            Poll::Ready(()) => Poll::Ready(Err(self.cut_error(io::ErrorKind::ConnectionAborted))),
            Poll::Pending => {
                if let Some(cut) = &mut self.cut {
                    cut.reader = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// A write while cutting: the rest of hyper's frame in progress, then
    /// nothing.
    fn poll_cut_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let remaining = self.inspect.out_remaining();
        if self.cut.as_ref().is_some_and(|c| c.phase == Phase::Drain) && remaining > 0 && !buf.is_empty() {
            let part = &buf[..remaining.min(buf.len())];
            return match Pin::new(&mut self.io).poll_write(cx, part) {
                Poll::Ready(Ok(n)) => {
                    let now = self.now();
                    self.inspect.outbound(&part[..n], now);
                    Poll::Ready(Ok(n))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.watch(cx);
                    if self.cut.as_ref().is_some_and(|c| c.phase == Phase::Done) {
                        return Poll::Ready(Err(self.cut_error(io::ErrorKind::BrokenPipe)));
                    }
                    Poll::Pending
                }
            };
        }
        match self.drive(cx) {
            Poll::Ready(()) => Poll::Ready(Err(self.cut_error(io::ErrorKind::BrokenPipe))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// After the inner I/O accepted (or refused) bytes.
    fn after_write(&mut self, cx: &mut Context<'_>, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) if *n > 0 => self.write_blocked_since = None,
            Poll::Pending => {
                if self.write_blocked_since.is_none() {
                    self.write_blocked_since = Some(self.now());
                }
                self.watch(cx);
            }
            _ => {}
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for H2Guard<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cut.is_some() {
            return this.poll_cut_read(cx);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.inspect.passthrough() || buf.filled().len() == before {
                    return Poll::Ready(Ok(()));
                }
                let now = this.now();
                match this.inspect.inbound(&buf.filled()[before..], now) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err((keep, why)) => {
                        buf.set_filled(before + keep);
                        this.start_cut(why, now);
                        if keep > 0 {
                            Poll::Ready(Ok(()))
                        } else {
                            this.poll_cut_read(cx)
                        }
                    }
                }
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if !this.inspect.passthrough() {
                    this.watch(cx);
                    if this.cut.is_some() {
                        return this.poll_cut_read(cx);
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for H2Guard<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.inspect.passthrough() {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        if this.cut.is_some() {
            return this.poll_cut_write(cx, buf);
        }
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            let now = this.now();
            this.inspect.outbound(&buf[..n], now);
        }
        this.after_write(cx, &r);
        if this.cut.is_some() && r.is_pending() {
            return this.poll_cut_write(cx, buf);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.inspect.passthrough() {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        if this.cut.is_some() {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
            return this.poll_cut_write(cx, first);
        }
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            let now = this.now();
            let mut left = n;
            for b in bufs {
                if left == 0 {
                    break;
                }
                let k = left.min(b.len());
                this.inspect.outbound(&b[..k], now);
                left -= k;
            }
        }
        this.after_write(cx, &r);
        if this.cut.is_some() && r.is_pending() {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
            return this.poll_cut_write(cx, first);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(cut) = &this.cut {
            if cut.phase == Phase::Drain && this.inspect.out_remaining() > 0 {
                return Pin::new(&mut this.io).poll_flush(cx);
            }
            return match this.drive(cx) {
                Poll::Ready(()) => Poll::Ready(Err(this.cut_error(io::ErrorKind::BrokenPipe))),
                Poll::Pending => Poll::Pending,
            };
        }
        let r = Pin::new(&mut this.io).poll_flush(cx);
        if r.is_pending() && !this.inspect.passthrough() {
            this.watch(cx);
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
