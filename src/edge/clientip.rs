//! Who the client is.
//!
//! * `peer`: the TCP peer address.
//! * `proxy_protocol`: a PROXY v1 or v2 header is required at the start of
//!   every connection (never guessed), accepted only from `trusted_proxies`,
//!   and read under a short timeout. A missing, malformed or untrusted header
//!   closes the connection. This is how an AWS NLB or a Kubernetes
//!   LoadBalancer passes the source address.
//! * `x_forwarded_for`: only when the peer is a trusted proxy; the client is
//!   the right-most address that is not itself trusted. Entries to the left of
//!   it were written by the client and are never believed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use ppp::{HeaderResult, PartialResult};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::net::ipset::IpSet;

/// Longest PROXY header we read (v1 is at most 107 bytes; v2 carries TLVs).
const MAX_PROXY_HEADER: usize = 4096;

/// Where the client address comes from (a configuration value, `client_ip.source`).
pub use crate::config::ClientIpSource as Source;

/// Why a PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("peer {0} is not in client_ip.trusted_proxies")]
    Untrusted(IpAddr),
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before a complete PROXY header")]
    Closed,
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// Reads and checks the PROXY header at the start of `stream`. Returns the
/// client address it names (`None` for `LOCAL`/`UNKNOWN`, such as a load
/// balancer's health check: the peer is then the client) and any bytes read
/// past the header, which belong to the HTTP stream.
pub async fn read_proxy_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    trusted: &IpSet,
    timeout: Duration,
) -> Result<(Option<SocketAddr>, Bytes), ProxyHeaderError> {
    if !trusted.contains(peer.ip()) {
        return Err(ProxyHeaderError::Untrusted(peer.ip()));
    }
    let read = async {
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(ProxyHeaderError::Closed);
            }
            buf.extend_from_slice(&chunk[..n]);
            // ppp calls a missing prefix "incomplete"; refuse it at once.
            if !could_be_proxy_header(&buf) {
                return Err(ProxyHeaderError::Malformed("the connection does not start with a PROXY header".into()));
            }
            let parsed = HeaderResult::parse(&buf);
            if parsed.is_incomplete() {
                if buf.len() > MAX_PROXY_HEADER {
                    return Err(ProxyHeaderError::Malformed("longer than 4096 bytes".into()));
                }
                continue;
            }
            let (addr, len) = match parsed {
                HeaderResult::V1(Ok(h)) => (v1_source(&h.addresses), h.header.len()),
                HeaderResult::V2(Ok(h)) => (v2_source(&h), h.len()),
                HeaderResult::V1(Err(e)) => return Err(ProxyHeaderError::Malformed(format!("{e:?}"))),
                HeaderResult::V2(Err(e)) => return Err(ProxyHeaderError::Malformed(format!("{e:?}"))),
            };
            let rest = Bytes::copy_from_slice(&buf[len..]);
            return Ok((addr, rest));
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(ProxyHeaderError::Timeout(timeout)),
    }
}

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Whether `buf` starts like a v1 or v2 PROXY header.
fn could_be_proxy_header(buf: &[u8]) -> bool {
    let starts = |sig: &[u8]| buf[..buf.len().min(sig.len())] == sig[..buf.len().min(sig.len())];
    starts(V1_PREFIX) || starts(V2_SIGNATURE)
}

fn v1_source(a: &ppp::v1::Addresses) -> Option<SocketAddr> {
    match a {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        ppp::v1::Addresses::Unknown => None,
    }
}

fn v2_source(h: &ppp::v2::Header<'_>) -> Option<SocketAddr> {
    if h.command == ppp::v2::Command::Local {
        return None;
    }
    match &h.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        _ => None,
    }
}

/// The client address of a request under `x_forwarded_for`.
pub fn from_forwarded_for(peer: IpAddr, headers: &HeaderMap, trusted: &IpSet) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    // All X-Forwarded-For fields, in order, read right to left.
    let mut client = peer;
    let values: Vec<&str> = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        let Some(ip) = parse_forwarded_entry(entry) else {
            // Garbage where an address should be: stop believing the chain.
            break;
        };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    client.to_canonical()
}

/// One X-Forwarded-For entry: an address, optionally `[v6]:port` or `v4:port`.
fn parse_forwarded_entry(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).and_then(|r| r.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ipset::parse_net;

    fn trusted(nets: &[&str]) -> IpSet {
        let v: Vec<_> = nets.iter().map(|n| parse_net(n).unwrap()).collect();
        IpSet::new(&v)
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn right_most_untrusted_wins() {
        let t = trusted(&["10.0.0.0/8"]);
        let lb: IpAddr = "10.0.0.2".parse().unwrap();
        // The client claims to be 1.1.1.1; the LB saw 203.0.113.9.
        assert_eq!(
            from_forwarded_for(lb, &xff(&["1.1.1.1, 203.0.113.9"]), &t),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // Two trusted hops.
        assert_eq!(
            from_forwarded_for(lb, &xff(&["1.1.1.1, 203.0.113.9, 10.1.1.1"]), &t),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // Split over two header fields.
        assert_eq!(
            from_forwarded_for(lb, &xff(&["1.1.1.1", "203.0.113.9"]), &t),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // Untrusted peer: header ignored.
        let direct: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(from_forwarded_for(direct, &xff(&["1.1.1.1"]), &t), direct);
        // No header, or garbage: the peer.
        assert_eq!(from_forwarded_for(lb, &HeaderMap::new(), &t), lb);
        assert_eq!(from_forwarded_for(lb, &xff(&["1.1.1.1, nonsense"]), &t), lb);
        // Bracketed and port forms.
        assert_eq!(from_forwarded_for(lb, &xff(&["[2001:db8::1]:443"]), &t), "2001:db8::1".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn proxy_headers() {
        let t = trusted(&["127.0.0.0/8"]);
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut v1 = &b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n"[..];
        let (addr, rest) = read_proxy_header(&mut v1, peer, &t, Duration::from_secs(1)).await.unwrap();
        assert_eq!(addr, Some("203.0.113.7:56324".parse().unwrap()));
        assert_eq!(&rest[..], b"GET / HTTP/1.1\r\n");
        let mut unknown = &b"PROXY UNKNOWN\r\n"[..];
        assert_eq!(read_proxy_header(&mut unknown, peer, &t, Duration::from_secs(1)).await.unwrap().0, None);
        let mut garbage = &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..];
        assert!(matches!(
            read_proxy_header(&mut garbage, peer, &t, Duration::from_secs(1)).await,
            Err(ProxyHeaderError::Malformed(_))
        ));
        let mut any = &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"[..];
        let outsider: SocketAddr = "192.0.2.1:1".parse().unwrap();
        assert!(matches!(
            read_proxy_header(&mut any, outsider, &t, Duration::from_secs(1)).await,
            Err(ProxyHeaderError::Untrusted(_))
        ));
    }
}
