//! A stream with bytes already read from it put back in front.
//!
//! Two places read ahead of the HTTP server: the PROXY header reader (which
//! may read past the header) and a parked connection (which reads the next
//! request's first byte before hyper is back). Both hand the bytes back here.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, with `prefix` read first.
#[derive(Debug)]
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub fn new(inner: T) -> Self {
        Rewind { prefix: Bytes::new(), inner }
    }

    /// `inner` with `prefix` to be read before it.
    pub fn with_prefix(prefix: Bytes, inner: T) -> Self {
        Rewind { prefix, inner }
    }

    /// Puts `bytes` back in front of whatever is still unread.
    pub fn rewind(&mut self, bytes: Bytes) {
        if self.prefix.is_empty() {
            self.prefix = bytes;
        } else {
            let mut joined = Vec::with_capacity(bytes.len() + self.prefix.len());
            joined.extend_from_slice(&bytes);
            joined.extend_from_slice(&self.prefix);
            self.prefix = joined.into();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn prefix_then_rewound_bytes_then_the_stream() {
        let mut r = Rewind::with_prefix(Bytes::from_static(b"cd"), &b"ef"[..]);
        r.rewind(Bytes::from_static(b"ab"));
        let mut all = String::new();
        r.read_to_string(&mut all).await.expect("read");
        assert_eq!(all, "abcdef");
    }
}
