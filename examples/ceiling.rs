//! The benchmark ceiling: a bare hyper server (same runtime, same HTTP stack,
//! same TLS library as wif-proxy) that answers every request with the given
//! bytes and the headers wif-proxy sends, doing nothing else.
//!
//! It uses the system allocator (wif-proxy links jemalloc): a bare server.
//!
//!   ceiling <addr> <body-file> [<cert.pem> <key.pem>]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AGE, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls_pki_types::pem::PemObject;

const X_CONTENT_TYPE_OPTIONS: HeaderName = HeaderName::from_static("x-content-type-options");

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).expect("usage: ceiling <addr> <body-file> [cert key]").clone();
    let body = Bytes::from(std::fs::read(args.get(2).expect("body file")).expect("read body"));
    let tls = args.get(3).map(|cert| {
        let chain =
            rustls_pki_types::CertificateDer::pem_file_iter(cert).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(args.get(4).expect("key")).unwrap();
        let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(c))
    });
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    loop {
        let (stream, _) = listener.accept().await.expect("accept");
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req| {
                let body = body.clone();
                async move {
                    // Static names and values, as a server tuned for one answer would:
                    // the ceiling should not spend work wif-proxy does not.
                    let len = HeaderValue::from(body.len());
                    let mut r = hyper::Response::new(Full::new(body));
                    let h = r.headers_mut();
                    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    h.insert(CONTENT_LENGTH, len);
                    h.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=299"));
                    h.insert(AGE, HeaderValue::from_static("1"));
                    h.insert(ETAG, HeaderValue::from_static("\"0123456789abcdef0123456789abcdef\""));
                    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
                    Ok::<_, Infallible>(r)
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(s), service).await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}
