//! The built binary with a stand-in issuer, plain or TLS, as an attacker
//! meets it: raw connections from chosen loopback addresses, and a
//! well-behaved client to watch.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::common::h2raw::*;
use crate::common::pki::Pki;
use crate::common::*;

/// A running proxy binary and what it needs.
pub struct Target {
    pub p: Process,
    _si: StandIn,
    _dir: tempfile::TempDir,
    /// TLS: the CA its certificate chains to.
    pub ca: Option<String>,
}

impl Target {
    pub async fn start(server_extra: &str, tls: bool) -> Target {
        Target::start_with(server_extra, tls.then_some("")).await
    }

    /// `tls`: `None` for plain, else extra `[tls]` keys.
    pub async fn start_with(server_extra: &str, tls: Option<&str>) -> Target {
        let si = StandIn::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let (tls_section, ca) = if let Some(tls_extra) = tls {
            let pki = Pki::new();
            let (cert, key) = pki.leaf(&["wif.example.com"], -1, 30);
            std::fs::write(dir.path().join("c.pem"), cert).unwrap();
            std::fs::write(dir.path().join("k.pem"), key).unwrap();
            let s = format!(
                "[tls]\nmode = \"files\"\n{tls_extra}\n[[tls.certificate]]\ncert = \"{0}/c.pem\"\nkey = \"{0}/k.pem\"\n",
                dir.path().display()
            );
            (s, Some(pki.ca_pem.clone()))
        } else {
            (String::new(), None)
        };
        let rest =
            format!("[rate_limit]\nenabled = false\n{tls_section}{}", vault_issuer("vault", &si.origin(), &[""]));
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, config(server_extra, &rest)).unwrap();
        let p = Process::start(&path).await;
        for _ in 0..200 {
            if get(p.admin, "/readyz").await.status == 200 {
                return Target { p, _si: si, _dir: dir, ca };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("never ready:\n{}", p.log_text());
    }

    pub fn addr(&self) -> SocketAddr {
        self.p.public
    }

    pub fn pid(&self) -> u32 {
        self.p.child.id().expect("running")
    }

    pub fn scheme(&self) -> &'static str {
        if self.ca.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn watch(&self, source: &'static str) -> Watcher {
        Watcher::start(source, self.addr(), root_keys(), self.ca.clone())
    }

    /// `wif_proxy_denied_requests_total{reason}` now.
    pub async fn denied(&self, reason: &str) -> u64 {
        let text = String::from_utf8_lossy(&get(self.p.admin, "/metrics").await.body).into_owned();
        let prefix = format!("wif_proxy_denied_requests_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {prefix} in the metrics")) as u64
    }

    /// The count of `reason` once it reaches `expect` (or 3 s pass): a cut
    /// is counted as its connection ends, a moment after the client sees it
    /// end. The caller asserts equality, so a count past `expect` still fails.
    pub async fn denied_settled(&self, reason: &str, expect: u64) -> u64 {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let n = self.denied(reason).await;
            if n >= expect || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// A raw connection from `source`, TLS when the target is.
    pub async fn raw(&self, source: &str) -> Box<dyn Io> {
        match &self.ca {
            None => Box::new(tcp_from(source, self.addr()).await),
            Some(ca) => Box::new(tls_h2_from(source, self.addr(), ca).await),
        }
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}
