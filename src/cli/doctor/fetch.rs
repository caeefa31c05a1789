//! How `doctor` fetches a document: through the program's one outbound
//! client, with a fresh connection and a verifier that records the chain
//! the server presented and whether it verifies, instead of refusing it, so
//! that an untrusted issuer can still be examined (and reported as such).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::ACCEPT;
use http_body_util::Empty;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::RootCertStore;

use wif_proxy::client::{read_body, BodyError, ClientOptions, ConnectTo, HttpClient, SendError};
use wif_proxy::trust::{self, Anchors, TrustError};

use super::{Options, FETCH_TIMEOUT};

/// Largest document `doctor` reads.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// One fetched document and what its TLS connection showed.
pub(super) struct Fetched {
    pub(super) status: http::StatusCode,
    pub(super) headers: http::HeaderMap,
    pub(super) body: Bytes,
    /// The certificates the server presented, leaf first.
    pub(super) chain: Vec<CertificateDer<'static>>,
    /// Why the chain does not verify (`not TLS` for plain http).
    pub(super) verify_error: Option<String>,
    pub(super) took: Duration,
}

/// Why there is no answer to examine.
#[derive(Debug, thiserror::Error)]
pub(super) enum FetchError {
    #[error("not a URL")]
    NotAUrl,
    #[error("--ca {0}")]
    Ca(TrustError),
    #[error("{0}: give --ca with the CA that signed the issuer's certificate")]
    NoRoots(TrustError),
    #[error("TLS client setup: {0}")]
    Setup(TrustError),
    #[error("cannot verify certificates: {0}")]
    Verifier(rustls::client::VerifierBuilderError),
    #[error("cannot build the request: {0}")]
    Request(http::Error),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("no complete answer within {} s (AWS's limit)", FETCH_TIMEOUT.as_secs())]
    Timeout,
}

/// `GET url` as a cloud provider would: no redirects, within
/// [`FETCH_TIMEOUT`].
pub(super) async fn fetch(url: &str, opts: &Options) -> Result<Fetched, FetchError> {
    let started = Instant::now();
    match tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(url, opts)).await {
        Ok(Ok(mut f)) => {
            f.took = started.elapsed();
            Ok(f)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(FetchError::Timeout),
    }
}

async fn fetch_inner(url: &str, opts: &Options) -> Result<Fetched, FetchError> {
    let uri: http::Uri = url.parse().map_err(|_| FetchError::NotAUrl)?;
    if uri.host().is_none() {
        return Err(FetchError::NotAUrl);
    }
    // A fresh configuration per fetch: no session is resumed, so every
    // fetch's handshake shows (and verifies) the chain again.
    let recorder = match uri.scheme_str() {
        Some("https") => Some(Arc::new(Recording::new(roots(opts)?)?)),
        _ => None,
    };
    let tls = match &recorder {
        Some(r) => trust::client_builder()
            .map_err(FetchError::Setup)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::clone(r) as Arc<dyn ServerCertVerifier>)
            .with_no_client_auth(),
        None => trust::client_config(RootCertStore::empty(), None).map_err(FetchError::Setup)?,
    };
    let connect_to =
        opts.connect_to.iter().map(|(host, port, addr)| ConnectTo { host: host.clone(), port: *port, addr: *addr });
    let client = HttpClient::new(ClientOptions {
        tls,
        connect_timeout: FETCH_TIMEOUT,
        https_only: false,
        connect_to: connect_to.collect(),
        unix_socket: None,
    });
    let req =
        http::Request::get(uri).header(ACCEPT, "application/json").body(Empty::new()).map_err(FetchError::Request)?;
    let (head, body) = read_body(client.send(req).await?, MAX_BODY_BYTES).await?;
    let (chain, verify_error) = match recorder {
        Some(r) => r.take(),
        None => (Vec::new(), Some("not TLS".to_string())),
    };
    Ok(Fetched { status: head.status, headers: head.headers, body, chain, verify_error, took: Duration::ZERO })
}

/// `--ca` alone, or the system's roots.
fn roots(opts: &Options) -> Result<RootCertStore, FetchError> {
    match &opts.ca {
        Some(ca) => trust::root_store(Anchors::PemFile(ca)).map_err(FetchError::Ca),
        None => trust::root_store(Anchors::Platform).map_err(FetchError::NoRoots),
    }
}

/// Verifies like a browser would, but records the chain and any failure
/// instead of aborting, so the documents can still be examined.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<(Vec<CertificateDer<'static>>, Option<String>)>,
}

impl Recording {
    fn new(roots: RootCertStore) -> Result<Recording, FetchError> {
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), trust::provider())
            .build()
            .map_err(FetchError::Verifier)?;
        Ok(Recording { inner, seen: Mutex::default() })
    }

    /// The chain presented and why it does not verify, if it does not.
    fn take(&self) -> (Vec<CertificateDer<'static>>, Option<String>) {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        let chain = std::iter::once(end_entity).chain(intermediates).map(|c| c.clone().into_owned()).collect();
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = (chain, verdict.err().map(|e| e.to_string()));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A `--connect-to` value that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ConnectToError {
    #[error("expected HOST:PORT:ADDR:PORT")]
    Shape,
    #[error("bad port {0:?}")]
    Port(String),
    #[error("bad address {0:?} (write ADDR:PORT, [v6]:PORT)")]
    Address(String),
}

/// Parses `HOST:PORT:ADDR:PORT` (curl's `--connect-to`).
pub fn parse_connect_to(s: &str) -> Result<(String, u16, SocketAddr), ConnectToError> {
    let (host, rest) = s.split_once(':').ok_or(ConnectToError::Shape)?;
    let (port, target) = rest.split_once(':').ok_or(ConnectToError::Shape)?;
    let port: u16 = port.parse().map_err(|_| ConnectToError::Port(port.to_string()))?;
    let target: SocketAddr = target.parse().map_err(|_| ConnectToError::Address(target.to_string()))?;
    Ok((host.to_string(), port, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_to() {
        assert_eq!(
            parse_connect_to("wif.example.com:443:127.0.0.1:8443").unwrap().2,
            "127.0.0.1:8443".parse().unwrap()
        );
        assert!(parse_connect_to("wif.example.com:443").is_err());
    }
}
