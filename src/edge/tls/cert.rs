//! One certificate pair from files, checked before it may serve: the chain
//! parses, the key is usable and belongs to the leaf, and the leaf is inside
//! its validity period. Also what a leaf says about itself ([`leaf_facts`]).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::config::CertificateFiles;
use crate::net::trust::{self, PemFileError};

/// Why a pair of files cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(transparent)]
    File(#[from] PemFileError),
    #[error("{}: unusable key: {source}", .path.display())]
    UnusableKey { path: PathBuf, source: rustls::Error },
    #[error("{}: {source}", .path.display())]
    Leaf { path: PathBuf, source: LeafError },
    #[error("{} and {} do not belong together: {source}", .cert.display(), .key.display())]
    Mismatch { cert: PathBuf, key: PathBuf, source: rustls::Error },
    #[error("{}: expired at {}", .path.display(), humantime::format_rfc3339_seconds(*.at))]
    Expired { path: PathBuf, at: SystemTime },
    #[error("{}: not valid before {}", .path.display(), humantime::format_rfc3339_seconds(*.at))]
    NotYetValid { path: PathBuf, at: SystemTime },
}

/// The leaf is not a certificate at all.
#[derive(Debug, thiserror::Error)]
#[error("not an X.509 certificate: {0}")]
pub struct LeafError(x509_parser::nom::Err<x509_parser::error::X509Error>);

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafFacts {
    /// DNS names (lower-cased) and IP addresses of its subjectAltName.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// One loaded pair, ready to serve the names it carries.
pub(super) struct Loaded {
    pub(super) key: Arc<CertifiedKey>,
    pub(super) names: Vec<String>,
    pub(super) not_after: SystemTime,
}

/// Reads and checks a pair; returns it with the fingerprint of the bytes
/// it was built from (see [`fingerprint`]).
pub(super) fn load_pair(f: &CertificateFiles) -> Result<(Loaded, Vec<u8>), CertError> {
    let cert_pem = trust::read(&f.cert)?;
    let key_pem = trust::read(&f.key)?;
    let fp = digest(&cert_pem, &key_pem);
    let chain = trust::parse_certificates(&f.cert, &cert_pem)?;
    let key = trust::parse_private_key(&f.key, &key_pem)?;
    let signing = trust::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| CertError::UnusableKey { path: f.key.clone(), source })?;
    let leaf = chain.first().ok_or_else(|| PemFileError::NoCertificates { path: f.cert.clone() })?;
    let facts = leaf_facts(leaf).map_err(|source| CertError::Leaf { path: f.cert.clone(), source })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|source| CertError::Mismatch {
        cert: f.cert.clone(),
        key: f.key.clone(),
        source,
    })?;
    let now = SystemTime::now();
    if now >= facts.not_after {
        return Err(CertError::Expired { path: f.cert.clone(), at: facts.not_after });
    }
    if now < facts.not_before {
        return Err(CertError::NotYetValid { path: f.cert.clone(), at: facts.not_before });
    }
    Ok((Loaded { key: Arc::new(certified), names: facts.names, not_after: facts.not_after }, fp))
}

/// What identifies the current contents of a pair of files: a change to
/// either file changes it.
pub(super) fn fingerprint(f: &CertificateFiles) -> std::io::Result<Vec<u8>> {
    Ok(digest(&std::fs::read(&f.cert)?, &std::fs::read(&f.key)?))
}

fn digest(cert: &[u8], key: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(cert);
    h.update(b"\0");
    h.update(key);
    h.finalize().to_vec()
}

/// The subjectAltName entries and the validity period of a certificate.
pub fn leaf_facts(der: &CertificateDer<'_>) -> Result<LeafFacts, LeafError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(LeafError)?;
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
    Ok(LeafFacts { names, not_before: at(cert.validity().not_before), not_after: at(cert.validity().not_after) })
}
