//! A throw-away PKI for tests: a CA, a server certificate for 127.0.0.1 and
//! localhost, and a client certificate, all signed by the CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    pub ca_pem: String,
    pub server_pem: String,
    pub server_key_pem: String,
    pub client_pem: String,
    pub client_key_pem: String,
}

/// Paths of a [`Pki`] written to disk.
pub struct PkiFiles {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "wif-proxy test CA");
        let ca = ca_params.self_signed(&ca_key).expect("ca");

        let server_key = KeyPair::generate().expect("key");
        let mut sp = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("params");
        sp.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        let server = sp.signed_by(&server_key, &ca, &ca_key).expect("server cert");

        let client_key = KeyPair::generate().expect("key");
        let mut cp = CertificateParams::new(vec!["wif-proxy".to_string()]).expect("params");
        cp.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        let client = cp.signed_by(&client_key, &ca, &ca_key).expect("client cert");

        Pki {
            ca_pem: ca.pem(),
            ca,
            ca_key,
            server_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    /// A server certificate for `names`, valid from `from` to `until`
    /// (days relative to now), as (chain PEM, key PEM).
    pub fn leaf(&self, names: &[&str], from_days: i64, until_days: i64) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        p.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::days(from_days);
        p.not_after = now + time::Duration::days(until_days);
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).expect("leaf");
        (cert.pem(), key.serialize_pem())
    }

    pub fn write(&self, dir: &Path) -> PkiFiles {
        let f = PkiFiles {
            ca: dir.join("ca.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        };
        std::fs::write(&f.ca, &self.ca_pem).unwrap();
        std::fs::write(&f.client_cert, &self.client_pem).unwrap();
        std::fs::write(&f.client_key, &self.client_key_pem).unwrap();
        f
    }

    /// A TLS server configuration for the stand-in.
    pub fn server_config(&self, require_client_cert: bool) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = vec![CertificateDer::from_pem_slice(self.server_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(builder.with_single_cert(chain, key).unwrap())
    }
}

/// A rustls client trusting only `ca_pem`.
pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(c)
}

/// TLS to `addr` with SNI `name`; returns the stream and the leaf certificate served.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<(tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Vec<u8>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let server_name = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(server_name, tcp).await?;
    let leaf =
        tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec()).unwrap_or_default();
    Ok((tls, leaf))
}

/// One HTTP/1.1 request over an established TLS stream (keep-alive).
pub async fn tls_request(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    path: &str,
) -> Option<super::Resp> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET {path} HTTP/1.1\r\nHost: wif.example.com\r\n\r\n");
    tls.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(3), tls.read(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        let parsed = super::parse_responses(&out, false);
        if let Some(r) = parsed.first() {
            let len: usize = r.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            if r.body.len() >= len {
                return parsed.into_iter().next();
            }
        }
    }
    super::parse_responses(&out, false).into_iter().next()
}
