//! What an outbound TLS connection trusts and presents: root certificates
//! from the platform or from a PEM file named in configuration, an optional
//! client certificate, and the rustls client configuration built from them.
//!
//! Every TLS client of the program starts here (issuer fetches, range URLs,
//! the ACME directory, `doctor`), so they share one crypto provider (*ring*),
//! one protocol floor (TLS 1.2) and one set of error messages. Each error
//! names the file and what was wrong with it; callers put the configuration
//! field in front (`upstream_ca /etc/ca.pem: no PEM certificate found`).
//!
//! A trust set with no anchors is refused when it is built: nothing could
//! ever verify against it, and the failure would otherwise surface as an
//! unhelpful "unknown issuer" on every connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WantsClientCert;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ConfigBuilder, RootCertStore, WantsVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto provider of every TLS endpoint in the program, client or server.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where the root certificates of a client come from.
#[derive(Debug, Clone, Copy)]
pub enum Anchors<'a> {
    /// The operating system's store, as rustls-native-certs finds it
    /// (`SSL_CERT_FILE` and `SSL_CERT_DIR` override it, as for OpenSSL).
    Platform,
    /// Only the certificates of this PEM file (a private CA bundle).
    PemFile(&'a Path),
    /// The platform's store and, in addition, the certificates of this file.
    PlatformAndPemFile(&'a Path),
    /// No anchors: for a client that only ever speaks plain HTTP.
    Empty,
}

/// A PEM file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PemFileError {
    #[error("{}: cannot be read: {source}", .path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{}: not valid PEM: {source}", .path.display())]
    BadPem { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("{}: no PEM certificate found", .path.display())]
    NoCertificates { path: PathBuf },
    #[error("{}: no PEM private key found", .path.display())]
    NoPrivateKey { path: PathBuf },
}

/// Why a root store or a client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    File(#[from] PemFileError),
    #[error("{}: certificate {index} is not a usable trust anchor: {source}", .path.display())]
    Anchor { path: PathBuf, index: usize, source: rustls::Error },
    #[error("no system CA certificates were found")]
    NoPlatformRoots,
    #[error("client certificate: {0}")]
    ClientAuth(rustls::Error),
    #[error("TLS client setup: {0}")]
    Setup(rustls::Error),
}

/// Builds the root store `anchors` describes.
///
/// Platform certificates that do not parse are skipped (a system store
/// always holds a few oddities); certificates of a named file must all be
/// usable, and the file must hold at least one.
pub fn root_store(anchors: Anchors<'_>) -> Result<RootCertStore, TrustError> {
    let mut roots = RootCertStore::empty();
    let file = match anchors {
        Anchors::Empty => return Ok(roots),
        Anchors::PemFile(path) => Some(path),
        Anchors::Platform | Anchors::PlatformAndPemFile(_) => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!("system CA certificates: {e}");
            }
            roots.add_parsable_certificates(found.certs);
            match anchors {
                Anchors::PlatformAndPemFile(path) => Some(path),
                _ => None,
            }
        }
    };
    if let Some(path) = file {
        for (index, cert) in read_certificates(path)?.into_iter().enumerate() {
            roots.add(cert).map_err(|source| TrustError::Anchor { path: path.to_path_buf(), index, source })?;
        }
    }
    if roots.is_empty() {
        return Err(TrustError::NoPlatformRoots);
    }
    Ok(roots)
}

/// A certificate chain and its private key, presented to servers that ask.
#[derive(Debug)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// A chain (leaf first, as [`read_certificates`] returns it) and its key
    /// (as [`read_private_key`] returns it). Whether they belong together is
    /// checked by [`client_config`].
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Identity {
        Identity { chain, key }
    }
}

/// A client configuration that verifies servers against `roots` and, when
/// given, presents `identity`. ALPN is left empty for the HTTP connector to
/// set.
pub fn client_config(roots: RootCertStore, identity: Option<Identity>) -> Result<ClientConfig, TrustError> {
    let builder = client_builder()?.with_root_certificates(roots);
    with_identity(builder, identity)
}

/// The first steps every client configuration shares: the provider and
/// TLS 1.2 and 1.3. For callers that install their own verifier.
pub fn client_builder() -> Result<ConfigBuilder<ClientConfig, WantsVerifier>, TrustError> {
    ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().map_err(TrustError::Setup)
}

/// Finishes `builder` with `identity`, or without client authentication.
fn with_identity(
    builder: ConfigBuilder<ClientConfig, WantsClientCert>,
    identity: Option<Identity>,
) -> Result<ClientConfig, TrustError> {
    match identity {
        Some(Identity { chain, key }) => builder.with_client_auth_cert(chain, key).map_err(TrustError::ClientAuth),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Reads every certificate of a PEM file; at least one is required.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemFileError> {
    parse_certificates(path, &read(path)?)
}

/// Reads the first private key of a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemFileError> {
    parse_private_key(path, &read(path)?)
}

/// The certificates of `pem`, the contents of `path` (named in errors).
/// Sections of other kinds (a key bundled in the same file) are skipped.
pub fn parse_certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemFileError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PemFileError::BadPem { path: path.to_path_buf(), source })?;
    if certs.is_empty() {
        return Err(PemFileError::NoCertificates { path: path.to_path_buf() });
    }
    Ok(certs)
}

/// The first private key of `pem`, the contents of `path` (named in errors).
pub fn parse_private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemFileError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => PemFileError::NoPrivateKey { path: path.to_path_buf() },
        source => PemFileError::BadPem { path: path.to_path_buf(), source },
    })
}

/// The bytes of `path`, with the file named in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, PemFileError> {
    std::fs::read(path).map_err(|source| PemFileError::Unreadable { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("self-signed").pem()
    }

    #[test]
    fn a_ca_file_is_read_and_its_problems_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, format!("{}{}", ca_pem(), ca_pem())).expect("write");
        assert_eq!(root_store(Anchors::PemFile(&good)).expect("two anchors").len(), 2);

        let cases: [(&str, &[u8], &str); 3] = [
            ("empty.pem", b"", "empty.pem: no PEM certificate found"),
            ("text.pem", b"hello\n", "text.pem: no PEM certificate found"),
            ("cut.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n", "cut.pem: not valid PEM: "),
        ];
        for (name, contents, needle) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).expect("write");
            let e = root_store(Anchors::PemFile(&path)).expect_err(name).to_string();
            assert!(e.contains(needle) && e.starts_with(&dir.path().display().to_string()), "{name}: {e}");
        }
        let missing = dir.path().join("missing.pem");
        let e = root_store(Anchors::PemFile(&missing)).expect_err("missing").to_string();
        assert!(e.contains("missing.pem: cannot be read: "), "{e}");

        let not_a_cert = dir.path().join("junk.pem");
        std::fs::write(&not_a_cert, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").expect("write");
        let e = root_store(Anchors::PemFile(&not_a_cert)).expect_err("junk").to_string();
        assert!(e.contains("junk.pem: certificate 0 is not a usable trust anchor"), "{e}");
    }

    #[test]
    fn a_private_ca_adds_to_the_platform_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_pem()).expect("write");
        let only = root_store(Anchors::PemFile(&ca)).expect("file").len();
        let both = root_store(Anchors::PlatformAndPemFile(&ca)).expect("both").len();
        let platform = root_store(Anchors::Platform).map_or(0, |r| r.len());
        assert_eq!((only, both), (1, platform + 1));
        assert!(root_store(Anchors::Empty).expect("empty").is_empty());
    }

    #[test]
    fn an_identity_needs_a_chain_and_a_matching_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["client.test".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (cert_path, key_path, other_key) =
            (dir.path().join("c.pem"), dir.path().join("k.pem"), dir.path().join("o.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write");
        std::fs::write(&key_path, key.serialize_pem()).expect("write");
        std::fs::write(&other_key, rcgen::KeyPair::generate().expect("key").serialize_pem()).expect("write");
        let roots = || root_store(Anchors::PemFile(&cert_path)).expect("roots");
        let identity = |key: &Path| {
            Identity::new(read_certificates(&cert_path).expect("chain"), read_private_key(key).expect("key"))
        };
        assert!(client_config(roots(), Some(identity(&key_path))).is_ok());
        let e = client_config(roots(), Some(identity(&other_key))).expect_err("mismatch").to_string();
        assert!(e.starts_with("client certificate: "), "{e}");
        let e = read_private_key(&cert_path).expect_err("no key").to_string();
        assert!(e.ends_with("c.pem: no PEM private key found"), "{e}");
        let e = read_certificates(&key_path).expect_err("no chain").to_string();
        assert!(e.ends_with("k.pem: no PEM certificate found"), "{e}");
    }
}
