//! Certificates from an ACME CA through rustls-acme's low-level API: one
//! order state per domain, dispatched by SNI, each driven by its own task;
//! the account and certificates are kept in [`AtomicCache`].

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_acme::{AccountCache, AcmeConfig, CertCache, ResolvesServerCertAcme, UseChallenge};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use super::cert::leaf_facts;
use super::Expiry;
use crate::config::{AcmeChallenge, AcmeSettings};
use crate::net::trust::{self, Anchors, TrustError};
use crate::telemetry::metrics::{Metrics, OutcomeLabels};

/// Why ACME could not start.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("tls.acme.cache_dir {}: {source}", .path.display())]
    CacheDir { path: PathBuf, source: std::io::Error },
    #[error("tls.acme.directory_ca {0}")]
    DirectoryCa(TrustError),
    #[error("tls.acme.directory {directory}: {source}; set tls.acme.directory_ca to the CA that signed it")]
    DirectoryTrust { directory: String, source: TrustError },
}

/// Why TLS is not ready: the domains still without a certificate.
#[derive(Debug)]
pub struct NotReady(Vec<Pending>);

/// A domain without a certificate.
#[derive(Debug, thiserror::Error)]
pub enum Pending {
    #[error("{domain}: no certificate yet; the ACME server said: {said}")]
    Refused { domain: String, said: String },
    #[error("{domain}: no certificate yet; the ACME order is in progress")]
    InProgress { domain: String },
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NotReady {}

/// One rustls-acme state per domain, dispatched by SNI.
pub(super) struct AcmeResolver {
    domains: Vec<String>,
    resolvers: Vec<Arc<ResolvesServerCertAcme>>,
    challenges: Vec<Arc<ServerConfig>>,
    /// Per domain: `Ok` once a certificate is deployed, else the last problem.
    status: AcmeStatus,
}

type AcmeStatus = Arc<Mutex<HashMap<String, DomainState>>>;

/// Where one domain's certificate stands.
#[derive(Debug, Clone)]
enum DomainState {
    Deployed,
    /// No certificate yet; what the CA or the order last said.
    Failing(String),
}

impl fmt::Debug for AcmeResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeResolver").field("domains", &self.domains).finish_non_exhaustive()
    }
}

impl AcmeResolver {
    /// Opens the cache and starts one order driver per domain.
    pub(super) fn start(s: &AcmeSettings, expiry: Expiry, metrics: &Arc<Metrics>) -> Result<AcmeResolver, AcmeError> {
        std::fs::create_dir_all(&s.cache_dir)
            .map_err(|source| AcmeError::CacheDir { path: s.cache_dir.clone(), source })?;
        let _ = std::fs::set_permissions(&s.cache_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        let client = Arc::new(directory_client(s)?);
        let status: AcmeStatus = Arc::default();
        let mut resolvers = Vec::new();
        let mut challenges = Vec::new();
        for domain in &s.domains {
            let cache = AtomicCache { dir: s.cache_dir.clone(), expiry: Arc::clone(&expiry) };
            let challenge = match s.challenge {
                AcmeChallenge::TlsAlpn01 => UseChallenge::TlsAlpn01,
                AcmeChallenge::Http01 => UseChallenge::Http01,
            };
            let state = AcmeConfig::new_with_client_config([domain.as_str()], Arc::clone(&client))
                .cache(cache)
                .contact(s.contact.iter())
                .directory(&s.directory)
                .challenge_type(challenge)
                .state();
            resolvers.push(state.resolver());
            challenges.push(state.challenge_rustls_config_with_provider(trust::provider()));
            spawn_driver(domain.clone(), state, Arc::clone(&status), Arc::clone(metrics));
        }
        Ok(AcmeResolver { domains: s.domains.clone(), resolvers, challenges, status })
    }

    fn index(&self, sni: Option<&str>) -> usize {
        sni.and_then(|n| self.domains.iter().position(|d| d.eq_ignore_ascii_case(n))).unwrap_or(0)
    }

    /// The TLS-ALPN-01 answer for the domain `sni` names (else the first).
    pub(super) fn challenge_config(&self, sni: Option<&str>) -> Arc<ServerConfig> {
        Arc::clone(&self.challenges[self.index(sni)])
    }

    pub(super) fn http01_key_auth(&self, token: &str) -> Option<String> {
        self.resolvers.iter().find_map(|r| r.get_http_01_key_auth(token))
    }

    pub(super) fn ready(&self) -> Result<(), NotReady> {
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let missing: Vec<Pending> = self
            .domains
            .iter()
            .filter_map(|d| match status.get(d) {
                Some(DomainState::Deployed) => None,
                Some(DomainState::Failing(e)) => Some(Pending::Refused { domain: d.clone(), said: e.clone() }),
                None => Some(Pending::InProgress { domain: d.clone() }),
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(NotReady(missing))
        }
    }
}

impl ResolvesServerCert for AcmeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let i = self.index(hello.server_name());
        self.resolvers[i].resolve(hello)
    }
}

/// Drives one domain's ACME state (orders, renewals) and records its outcome.
/// Once a certificate is deployed, later failures (a renewal attempt) are
/// logged but the domain stays ready: its certificate is still valid.
fn spawn_driver(
    domain: String,
    mut state: rustls_acme::AcmeState<std::io::Error, std::io::Error>,
    status: AcmeStatus,
    metrics: Arc<Metrics>,
) {
    let count = move |outcome: &'static str| {
        metrics.acme_events.get_or_create(&OutcomeLabels { outcome }).inc();
    };
    tokio::spawn(async move {
        while let Some(event) = state.next().await {
            let mut status = status.lock().unwrap_or_else(|p| p.into_inner());
            match event {
                Ok(ok) => {
                    tracing::info!(domain = %domain, "acme: {ok:?}");
                    match ok {
                        rustls_acme::EventOk::DeployedCachedCert => count("deployed_cached"),
                        rustls_acme::EventOk::DeployedNewCert => count("deployed_new"),
                        _ => {}
                    }
                    if matches!(ok, rustls_acme::EventOk::DeployedCachedCert | rustls_acme::EventOk::DeployedNewCert) {
                        status.insert(domain.clone(), DomainState::Deployed);
                    }
                }
                Err(err) => {
                    tracing::error!(domain = %domain, "acme: {err}");
                    count("error");
                    if !matches!(status.get(&domain), Some(DomainState::Deployed)) {
                        status.insert(domain.clone(), DomainState::Failing(err.to_string()));
                    }
                }
            }
        }
    });
}

/// The client that talks to the ACME directory: the system roots, plus
/// `directory_ca` for a private CA (Pebble, step-ca).
fn directory_client(s: &AcmeSettings) -> Result<rustls::ClientConfig, AcmeError> {
    let trust_error = |source| match &s.directory_ca {
        Some(_) => AcmeError::DirectoryCa(source),
        None => AcmeError::DirectoryTrust { directory: s.directory.clone(), source },
    };
    let anchors = match &s.directory_ca {
        Some(ca) => Anchors::PlatformAndPemFile(ca),
        None => Anchors::Platform,
    };
    let roots = trust::root_store(anchors).map_err(trust_error)?;
    trust::client_config(roots, None).map_err(trust_error)
}

/// rustls-acme's cache, written atomically with mode 0600 (its own
/// directory cache does neither). Also records certificate expiry.
struct AtomicCache {
    dir: PathBuf,
    expiry: Expiry,
}

impl AtomicCache {
    /// `<kind>-<24 hex digits>.pem`, named by the domains (or contacts) and
    /// the directory, so two CAs or two domain sets never share a file.
    fn file(&self, kind: &str, parts: &[String], directory: &str) -> PathBuf {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p.as_bytes());
            h.update(b"\0");
        }
        h.update(directory.as_bytes());
        self.dir.join(format!("{kind}-{}.pem", hex::encode(&h.finalize()[..12])))
    }

    async fn read(path: PathBuf) -> std::io::Result<Option<Vec<u8>>> {
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn write(path: PathBuf, bytes: Vec<u8>) -> std::io::Result<()> {
        tokio::task::spawn_blocking(move || crate::files::replace(&path, &bytes))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Notes the expiry of a cached certificate (PEM: key, then chain).
    fn note(&self, domains: &[String], pem: &[u8]) {
        let leaf = CertificateDer::pem_slice_iter(pem).next().and_then(|c| c.ok());
        if let Some(facts) = leaf.as_ref().and_then(|c| leaf_facts(c).ok()) {
            let mut map = (**self.expiry.load()).clone();
            for d in domains {
                map.insert(d.clone(), facts.not_after);
            }
            self.expiry.store(Arc::new(map));
        }
    }
}

#[async_trait::async_trait]
impl CertCache for AtomicCache {
    type EC = std::io::Error;

    async fn load_cert(&self, domains: &[String], directory_url: &str) -> Result<Option<Vec<u8>>, Self::EC> {
        let pem = Self::read(self.file("cert", domains, directory_url)).await?;
        if let Some(p) = &pem {
            self.note(domains, p);
        }
        Ok(pem)
    }

    async fn store_cert(&self, domains: &[String], directory_url: &str, cert: &[u8]) -> Result<(), Self::EC> {
        self.note(domains, cert);
        Self::write(self.file("cert", domains, directory_url), cert.to_vec()).await
    }
}

#[async_trait::async_trait]
impl AccountCache for AtomicCache {
    type EA = std::io::Error;

    async fn load_account(&self, contact: &[String], directory_url: &str) -> Result<Option<Vec<u8>>, Self::EA> {
        Self::read(self.file("account", contact, directory_url)).await
    }

    async fn store_account(&self, contact: &[String], directory_url: &str, account: &[u8]) -> Result<(), Self::EA> {
        Self::write(self.file("account", contact, directory_url), account.to_vec()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_file_names_are_stable_and_distinct() {
        let cache = AtomicCache {
            dir: PathBuf::from("/cache"),
            expiry: Arc::new(arc_swap::ArcSwap::from_pointee(HashMap::new())),
        };
        let a = cache.file("cert", &["a.example.com".into()], "https://acme.test/dir");
        // The first 12 bytes of SHA-256("a.example.com\0https://acme.test/dir"):
        // names must not change between versions, or a restart re-orders.
        assert_eq!(a, PathBuf::from("/cache/cert-58e4952879b70001f888c40b.pem"));
        assert_ne!(a, cache.file("cert", &["a.example.com".into()], "https://other.test/dir"));
        assert_ne!(a, cache.file("account", &["a.example.com".into()], "https://acme.test/dir"));
    }
}
