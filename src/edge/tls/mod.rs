//! TLS for the public listener: certificate files with hot reload, or ACME.
//!
//! * `files`: PEM chains and keys (PKCS#8, SEC1 or PKCS#1; RSA, ECDSA or
//!   Ed25519). Each certificate serves the names in its SANs (SNI picks it;
//!   the first is the default). The files are polled and re-read on SIGHUP;
//!   a pair that does not parse, does not match, or is outside its validity
//!   is refused with a log line and the old pair keeps serving. Connections
//!   already open keep the certificate they started with.
//! * `acme`: rustls-acme through its low-level API, one certificate per
//!   domain. Every connection's handshake runs in its own task under
//!   `handshake_timeout`; a ClientHello offering `acme-tls/1` is a TLS-ALPN-01
//!   validation and is answered with the challenge certificate (it passes the
//!   source-address allowlist: CAs do not publish their validation addresses).
//!   Account and certificates are cached with mode 0600, atomically.
//!
//! TLS 1.2 and 1.3 only, the *ring* provider's safe suites, ALPN `h2` and
//! `http/1.1`.
//!
//! This file holds [`Tls`]: start-up, the handshake of each connection,
//! readiness and expiry. The pieces are in `files` (certificate files and
//! their reload), `cert` (loading and checking one pair), and `acme`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::ResolvesServerCert;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::config::{TlsConfig, TlsMode};
use crate::net::trust;
use crate::telemetry::metrics::Metrics;

mod acme;
mod cert;
mod files;

pub use acme::{AcmeError, NotReady};
pub use cert::{leaf_facts, CertError};

use acme::AcmeResolver;
use files::{poll_files, FilesResolver};

/// Certificate expiry per host name, shared by the resolvers (which write
/// it) and the admin listener (which reports it).
type Expiry = Arc<ArcSwap<HashMap<String, SystemTime>>>;

/// Why TLS could not start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Certificate(#[from] CertError),
    #[error("tls.acme is missing")]
    AcmeMissing,
    #[error(transparent)]
    Acme(#[from] AcmeError),
    #[error("TLS server setup: {0}")]
    Setup(rustls::Error),
}

/// The outcome of accepting one TLS connection.
pub enum Accepted<S> {
    /// A completed handshake: serve HTTP on it.
    Http(Box<TlsStream<S>>),
    /// A TLS-ALPN-01 validation, answered and closed.
    Challenge,
}

/// Why a connection did not become an HTTP connection.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("no TLS handshake within {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("refused by the source-address allowlist")]
    Refused,
}

/// The TLS state of the running proxy (outside the reloadable snapshot:
/// ACME orders and renewals outlive configuration reloads).
pub struct Tls {
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
    files: Option<Arc<FilesResolver>>,
    acme: Option<Arc<AcmeResolver>>,
    /// Certificate expiry per host name.
    expiry: Expiry,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("handshake_timeout", &self.handshake_timeout).finish_non_exhaustive()
    }
}

impl Tls {
    /// Starts TLS for `cfg`; `None` when TLS is off. Files must load now.
    pub fn start(cfg: &TlsConfig, metrics: &Arc<Metrics>) -> Result<Option<Arc<Tls>>, TlsError> {
        let expiry: Expiry = Arc::new(ArcSwap::from_pointee(HashMap::new()));
        let (resolver, files, acme): (Arc<dyn ResolvesServerCert>, _, _) = match cfg.mode {
            TlsMode::Off => return Ok(None),
            TlsMode::Files => {
                let files = Arc::new(FilesResolver::load(&cfg.certificates, Arc::clone(&expiry))?);
                tokio::spawn(poll_files(Arc::downgrade(&files), cfg.reload_interval));
                (files.clone(), Some(files), None)
            }
            TlsMode::Acme => {
                let settings = cfg.acme.as_ref().ok_or(TlsError::AcmeMissing)?;
                let acme = Arc::new(AcmeResolver::start(settings, Arc::clone(&expiry), metrics)?);
                (acme.clone(), None, Some(acme))
            }
        };
        let mut config = ServerConfig::builder_with_provider(trust::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Arc::new(Tls {
            config: Arc::new(config),
            handshake_timeout: cfg.handshake_timeout,
            files,
            acme,
            expiry,
        })))
    }

    /// Re-reads certificate files (SIGHUP). ACME settings change on restart only.
    pub fn reload(&self, cfg: &TlsConfig) {
        if let Some(files) = &self.files {
            files.reload(&cfg.certificates);
        }
    }

    /// Accepts one connection. `admit` is asked before the handshake
    /// completes; ACME validation handshakes are never refused.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        admit: impl FnOnce() -> bool,
    ) -> Result<Accepted<S>, AcceptError> {
        let work = async {
            let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                .await
                .map_err(AcceptError::Handshake)?;
            let hello = start.client_hello();
            if let Some(acme) = &self.acme {
                if rustls_acme::is_tls_alpn_challenge(&hello) {
                    let config = acme.challenge_config(hello.server_name());
                    let mut tls = start.into_stream(config).await.map_err(AcceptError::Handshake)?;
                    let _ = tls.shutdown().await;
                    return Ok(Accepted::Challenge);
                }
            }
            if !admit() {
                return Err(AcceptError::Refused);
            }
            let tls = start.into_stream(Arc::clone(&self.config)).await.map_err(AcceptError::Handshake)?;
            Ok(Accepted::Http(Box::new(tls)))
        };
        match tokio::time::timeout(self.handshake_timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(AcceptError::Timeout(self.handshake_timeout)),
        }
    }

    /// `Err` naming the domains while some have no certificate to serve.
    pub fn ready(&self) -> Result<(), NotReady> {
        match &self.acme {
            Some(acme) => acme.ready(),
            None => Ok(()),
        }
    }

    /// The HTTP-01 key authorization for `token`, if an order is waiting for it.
    pub fn http01_key_auth(&self, token: &str) -> Option<String> {
        self.acme.as_ref()?.http01_key_auth(token)
    }

    /// Certificate expiry per host name.
    pub fn expiry(&self) -> Arc<HashMap<String, SystemTime>> {
        self.expiry.load_full()
    }
}
