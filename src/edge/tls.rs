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

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_acme::{AccountCache, AcmeConfig, CertCache, ResolvesServerCertAcme, UseChallenge};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::config::{AcmeChallenge, AcmeSettings, CertificateFiles, TlsConfig, TlsMode};
use crate::telemetry::metrics::{Metrics, OutcomeLabels};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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
    expiry: Arc<ArcSwap<HashMap<String, SystemTime>>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("handshake_timeout", &self.handshake_timeout).finish_non_exhaustive()
    }
}

impl Tls {
    /// Starts TLS for `cfg`; `None` when TLS is off. Files must load now.
    pub fn start(cfg: &TlsConfig, metrics: &Arc<Metrics>) -> Result<Option<Arc<Tls>>, String> {
        let expiry = Arc::new(ArcSwap::from_pointee(HashMap::new()));
        let (resolver, files, acme): (Arc<dyn ResolvesServerCert>, _, _) = match cfg.mode {
            TlsMode::Off => return Ok(None),
            TlsMode::Files => {
                let files = Arc::new(FilesResolver::load(&cfg.certificates, Arc::clone(&expiry))?);
                tokio::spawn(poll_files(Arc::downgrade(&files), cfg.reload_interval));
                (files.clone(), Some(files), None)
            }
            TlsMode::Acme => {
                let settings = cfg.acme.as_ref().ok_or("tls.acme is missing")?;
                let acme = Arc::new(AcmeResolver::start(settings, Arc::clone(&expiry), metrics)?);
                (acme.clone(), None, Some(acme))
            }
        };
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
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

    /// `Err(reason)` while no certificate can be served.
    pub fn ready(&self) -> Result<(), String> {
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

// ---------------------------------------------------------------------------
// Files.

/// One loaded pair.
struct Loaded {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
    not_after: SystemTime,
}

/// Serves certificates from files; swaps them atomically on change.
struct FilesResolver {
    current: ArcSwap<CertMap>,
    expiry: Arc<ArcSwap<HashMap<String, SystemTime>>>,
    /// The configured files and the bytes last seen (loaded or refused).
    watched: Mutex<Vec<(CertificateFiles, Vec<u8>)>>,
}

#[derive(Default)]
struct CertMap {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` entries, stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl fmt::Debug for FilesResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FilesResolver")
    }
}

impl FilesResolver {
    fn load(
        files: &[CertificateFiles],
        expiry: Arc<ArcSwap<HashMap<String, SystemTime>>>,
    ) -> Result<FilesResolver, String> {
        let mut loaded = Vec::new();
        let mut watched = Vec::new();
        for f in files {
            let (pair, fingerprint) = load_pair(f)?;
            loaded.push(pair);
            watched.push((f.clone(), fingerprint));
        }
        let r =
            FilesResolver { current: ArcSwap::from_pointee(CertMap::default()), expiry, watched: Mutex::new(watched) };
        r.install(&loaded);
        Ok(r)
    }

    fn install(&self, loaded: &[Loaded]) {
        let mut map = CertMap::default();
        let mut expiry = HashMap::new();
        for l in loaded {
            map.default.get_or_insert_with(|| Arc::clone(&l.key));
            for name in &l.names {
                expiry.entry(name.clone()).or_insert(l.not_after);
                match name.strip_prefix("*.") {
                    Some(base) => map.wildcard.entry(base.to_string()).or_insert_with(|| Arc::clone(&l.key)),
                    None => map.by_name.entry(name.clone()).or_insert_with(|| Arc::clone(&l.key)),
                };
            }
        }
        self.current.store(Arc::new(map));
        self.expiry.store(Arc::new(expiry));
    }

    /// Loads every pair again if any file changed; all or nothing.
    fn reload(&self, files: &[CertificateFiles]) {
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let same_files = watched.len() == files.len() && watched.iter().zip(files).all(|((w, _), f)| w == f);
        let changed = !same_files || watched.iter().any(|(f, seen)| fingerprint(f).is_ok_and(|now| now != *seen));
        if !changed {
            return;
        }
        let mut loaded = Vec::new();
        let mut next = Vec::new();
        for f in files {
            match load_pair(f) {
                Ok((pair, fp)) => {
                    loaded.push(pair);
                    next.push((f.clone(), fp));
                }
                Err(e) => {
                    tracing::error!("tls: new certificate refused, the previous one keeps serving: {e}");
                    // Remember what was refused so it is reported once, not every poll.
                    for (w, seen) in watched.iter_mut() {
                        if let Ok(fp) = fingerprint(w) {
                            *seen = fp;
                        }
                    }
                    return;
                }
            }
        }
        self.install(&loaded);
        *watched = next;
        tracing::info!(certificates = loaded.len(), "tls: certificates reloaded");
    }
}

impl ResolvesServerCert for FilesResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let map = self.current.load();
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            if let Some(k) = map.by_name.get(&name) {
                return Some(Arc::clone(k));
            }
            if let Some((_, base)) = name.split_once('.') {
                if let Some(k) = map.wildcard.get(base) {
                    return Some(Arc::clone(k));
                }
            }
        }
        map.default.clone()
    }
}

async fn poll_files(files: std::sync::Weak<FilesResolver>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(f) = files.upgrade() else { return };
        let list: Vec<CertificateFiles> =
            f.watched.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(c, _)| c.clone()).collect();
        tokio::task::spawn_blocking(move || f.reload(&list)).await.ok();
    }
}

/// What identifies the current contents of a pair of files.
fn fingerprint(f: &CertificateFiles) -> std::io::Result<Vec<u8>> {
    let mut h = Sha256::new();
    h.update(std::fs::read(&f.cert)?);
    h.update(b"\0");
    h.update(std::fs::read(&f.key)?);
    Ok(h.finalize().to_vec())
}

fn load_pair(f: &CertificateFiles) -> Result<(Loaded, Vec<u8>), String> {
    let name = |p: &PathBuf| p.display().to_string();
    let fp = fingerprint(f).map_err(|e| format!("{} / {}: {e}", name(&f.cert), name(&f.key)))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&f.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", name(&f.cert)))?;
    let leaf = chain.first().ok_or_else(|| format!("{}: no PEM certificate", name(&f.cert)))?;
    let key = PrivateKeyDer::from_pem_file(&f.key).map_err(|e| format!("{}: {e}", name(&f.key)))?;
    let signing =
        provider().key_provider.load_private_key(key).map_err(|e| format!("{}: unusable key: {e}", name(&f.key)))?;
    let (names, not_before, not_after) = leaf_facts(leaf).map_err(|e| format!("{}: {e}", name(&f.cert)))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("{} and {} do not belong together: {e}", name(&f.cert), name(&f.key)))?;
    let now = SystemTime::now();
    if now >= not_after {
        return Err(format!("{}: expired at {}", name(&f.cert), humantime::format_rfc3339_seconds(not_after)));
    }
    if now < not_before {
        return Err(format!("{}: not valid before {}", name(&f.cert), humantime::format_rfc3339_seconds(not_before)));
    }
    Ok((Loaded { key: Arc::new(certified), names, not_after }, fp))
}

/// DNS names (SANs, lower-cased), notBefore and notAfter of a certificate.
pub fn leaf_facts(der: &CertificateDer<'_>) -> Result<(Vec<String>, SystemTime, SystemTime), String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let at = |t: x509_parser::time::ASN1Time| UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64);
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                        _ => None,
                    };
                    names.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    Ok((names, at(cert.validity().not_before), at(cert.validity().not_after)))
}

// ---------------------------------------------------------------------------
// ACME.

/// One rustls-acme state per domain, dispatched by SNI.
struct AcmeResolver {
    domains: Vec<String>,
    resolvers: Vec<Arc<ResolvesServerCertAcme>>,
    challenges: Vec<Arc<ServerConfig>>,
    /// Per domain: `Ok` once a certificate is deployed, else the last problem.
    status: AcmeStatus,
}

type AcmeStatus = Arc<Mutex<HashMap<String, Result<(), String>>>>;

impl fmt::Debug for AcmeResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeResolver").field("domains", &self.domains).finish_non_exhaustive()
    }
}

impl AcmeResolver {
    fn start(
        s: &AcmeSettings,
        expiry: Arc<ArcSwap<HashMap<String, SystemTime>>>,
        metrics: &Arc<Metrics>,
    ) -> Result<AcmeResolver, String> {
        std::fs::create_dir_all(&s.cache_dir)
            .map_err(|e| format!("tls.acme.cache_dir {}: {e}", s.cache_dir.display()))?;
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
            challenges.push(state.challenge_rustls_config_with_provider(provider()));
            spawn_driver(domain.clone(), state, Arc::clone(&status), Arc::clone(metrics));
        }
        Ok(AcmeResolver { domains: s.domains.clone(), resolvers, challenges, status })
    }

    fn index(&self, sni: Option<&str>) -> usize {
        sni.and_then(|n| self.domains.iter().position(|d| d.eq_ignore_ascii_case(n))).unwrap_or(0)
    }

    fn challenge_config(&self, sni: Option<&str>) -> Arc<ServerConfig> {
        Arc::clone(&self.challenges[self.index(sni)])
    }

    fn http01_key_auth(&self, token: &str) -> Option<String> {
        self.resolvers.iter().find_map(|r| r.get_http_01_key_auth(token))
    }

    fn ready(&self) -> Result<(), String> {
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let missing: Vec<String> = self
            .domains
            .iter()
            .filter_map(|d| match status.get(d) {
                Some(Ok(())) => None,
                Some(Err(e)) => Some(format!("{d}: no certificate yet; the ACME server said: {e}")),
                None => Some(format!("{d}: no certificate yet; the ACME order is in progress")),
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("; "))
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
                        status.insert(domain.clone(), Ok(()));
                    }
                }
                Err(err) => {
                    tracing::error!(domain = %domain, "acme: {err}");
                    count("error");
                    if !matches!(status.get(&domain), Some(Ok(()))) {
                        status.insert(domain.clone(), Err(err.to_string()));
                    }
                }
            }
        }
    });
}

fn directory_client(s: &AcmeSettings) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(ca) = &s.directory_ca {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("tls.acme.directory_ca {}: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("tls.acme.directory_ca {}: no PEM certificate", ca.display()));
        }
        for c in certs {
            roots.add(c).map_err(|e| format!("tls.acme.directory_ca {}: {e}", ca.display()))?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// rustls-acme's cache, written atomically with mode 0600 (its own
/// directory cache does neither). Also records certificate expiry.
struct AtomicCache {
    dir: PathBuf,
    expiry: Arc<ArcSwap<HashMap<String, SystemTime>>>,
}

static CACHE_SEQ: AtomicU64 = AtomicU64::new(0);

impl AtomicCache {
    fn file(&self, kind: &str, parts: &[String], directory: &str) -> PathBuf {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p.as_bytes());
            h.update(b"\0");
        }
        h.update(directory.as_bytes());
        let id: String = h.finalize()[..12].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{kind}-{id}.pem"))
    }

    async fn read(path: PathBuf) -> std::io::Result<Option<Vec<u8>>> {
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn write(path: PathBuf, bytes: Vec<u8>) -> std::io::Result<()> {
        let seq = CACHE_SEQ.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || crate::files::write_atomic(&path, &bytes, seq))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Notes the expiry of a cached certificate (PEM: key, then chain).
    fn note(&self, domains: &[String], pem: &[u8]) {
        let leaf = CertificateDer::pem_slice_iter(pem).next().and_then(|c| c.ok());
        if let Some((_, _, not_after)) = leaf.as_ref().and_then(|c| leaf_facts(c).ok()) {
            let mut map = (**self.expiry.load()).clone();
            for d in domains {
                map.insert(d.clone(), not_after);
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
