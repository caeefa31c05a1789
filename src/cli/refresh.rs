//! `wif-proxy refresh`: `POST /refresh` to the running proxy's admin
//! listener, for scripts and runbooks (the emergency key rotation).
//! Exit status 0: every document refetched; 1: one failed, or the proxy
//! refused or could not be reached; 2: usage.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use wif_proxy::config::{Config, Listen};

/// Long enough for a round over slow issuers (each bounded by its
/// `upstream_timeout`), short enough that a script does not hang.
const TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(config_path: &Path, issuer: Option<&str>, admin: Option<SocketAddr>, json: bool) -> ExitCode {
    let addr = match admin {
        Some(a) => a,
        None => match Config::load(config_path) {
            Ok(c) => match &c.server.admin_listen {
                Listen::Addr(a) => reachable(*a),
                l @ Listen::Systemd(_) => {
                    eprintln!("error: server.admin_listen = \"{l}\" is a socket systemd passes; give its address with --admin");
                    return ExitCode::from(2);
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let target = match issuer {
        Some(name) => format!("/refresh?issuer={name}"),
        None => "/refresh".to_string(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (status, body) = match runtime.block_on(async { tokio::time::timeout(TIMEOUT, post(addr, &target)).await }) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("error: POST http://{addr}{target}: {e:#}");
            return ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!("error: POST http://{addr}{target}: no answer within {}s", TIMEOUT.as_secs());
            return ExitCode::FAILURE;
        }
    };
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    if json {
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    }
    if status != 200 {
        if !json {
            eprintln!("error: the proxy answered {status}: {}", String::from_utf8_lossy(&body));
        }
        return ExitCode::FAILURE;
    }
    let failed = value["failed"].as_u64().unwrap_or(0);
    if !json {
        for d in value["documents"].as_array().into_iter().flatten() {
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
            let list = |k: &str| -> Vec<String> {
                d[k].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
            };
            let detail = match s("result").as_str() {
                "failed" => format!(": {}", s("error")),
                "changed" if d.get("kids_added").is_some() => {
                    format!(
                        ": kids added [{}], removed [{}]",
                        list("kids_added").join(", "),
                        list("kids_removed").join(", ")
                    )
                }
                _ => String::new(),
            };
            println!("{:<9} {} {}{detail}", s("result"), s("issuer"), s("path"));
        }
        println!(
            "{} changed, {} unchanged, {failed} failed{}",
            value["changed"],
            value["unchanged"],
            if value["coalesced"] == true { " (shared a refresh already running)" } else { "" }
        );
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A wildcard listen address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

async fn post(addr: SocketAddr, target: &str) -> anyhow::Result<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::post(target)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, concat!("wif-proxy-refresh/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}
