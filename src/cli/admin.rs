//! Reaching the running proxy's admin listener from the command line
//! (`refresh`, `status`): the address given, or `server.admin_listen` of the
//! configuration, with a wildcard address reached on loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use wif_proxy::config::{Config, Listen};

/// The largest answer read from the admin listener.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Where to reach the admin listener: `admin`, or what `config` says.
/// `Err` (exit status 2, said on stderr) for a configuration that cannot be
/// read or names a socket systemd passes, whose address it does not know.
pub(super) fn address(config: &Path, admin: Option<SocketAddr>) -> Result<SocketAddr, ExitCode> {
    if let Some(a) = admin {
        return Ok(a);
    }
    match Config::load(config) {
        Ok(c) => {
            match &c.server.admin_listen {
                Listen::Addr(a) => Ok(reachable(*a)),
                l @ Listen::Systemd(_) => {
                    eprintln!("error: server.admin_listen = \"{l}\" is a socket systemd passes; give its address with --admin");
                    Err(ExitCode::from(2))
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// One request to the admin listener at `addr`, with the command's own
/// `User-Agent`: its status and body (at most 8 MiB).
pub(super) async fn ask(
    addr: SocketAddr,
    method: http::Method,
    target: &str,
    agent: &'static str,
) -> anyhow::Result<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(target)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, agent)
        .body(Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES).collect().await.map_err(|e| anyhow::anyhow!(e))?;
    Ok((status, body.to_bytes()))
}

/// A wildcard listen address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_admin_address_is_reached_on_loopback() {
        assert_eq!(reachable("0.0.0.0:9090".parse().unwrap()), "127.0.0.1:9090".parse().unwrap());
        assert_eq!(reachable("[::]:9090".parse().unwrap()), "[::1]:9090".parse().unwrap());
        assert_eq!(reachable("10.0.0.1:9090".parse().unwrap()), "10.0.0.1:9090".parse().unwrap());
    }
}
