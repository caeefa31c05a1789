//! A throw-away PKI for tests: a CA, a server certificate for 127.0.0.1 and
//! localhost, and a client certificate, all signed by the CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub struct Pki {
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
            server_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
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
