//! `wif-proxy doctor`: checks a public issuer the way AWS, GCP and Azure
//! will, and prints the commands that make them trust it.
//!
//! Every check yields `pass`, `warn` or `fail` with the reason. Fetches use
//! their own TLS connection (so the presented chain can be inspected), never
//! follow redirects, and must finish within 5 seconds (AWS's limit). When the
//! chain does not verify, that is a failure, and the remaining checks still
//! run over an unverified connection so every problem shows at once.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

/// AWS gives an issuer this long to answer.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Which providers' rules to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Provider {
    Aws,
    Gcp,
    Azure,
    All,
}

impl Provider {
    fn includes(self, p: Provider) -> bool {
        self == Provider::All || self == p
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub message: String,
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct Options {
    pub provider: Provider,
    /// Extra trust roots (PEM) instead of the system's.
    pub ca: Option<PathBuf>,
    /// `HOST:PORT` → `ADDR:PORT`, like curl's `--connect-to`.
    pub connect_to: Vec<(String, u16, SocketAddr)>,
    /// Audience for the snippets (defaults per provider).
    pub audience: Option<String>,
}

/// Everything a run found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub issuer: String,
    pub checks: Vec<Check>,
    /// SHA-1 of the last certificate the JWKS host presented, 40 lowercase hex.
    pub thumbprint: Option<String>,
    pub snippets: Value,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    fn add(&mut self, name: &'static str, status: Status, message: impl Into<String>) {
        self.checks.push(Check { name, status, message: message.into() });
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = format!("issuer {}\n", self.issuer);
        for c in &self.checks {
            let tag = match c.status {
                Status::Pass => "pass",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            let _ = writeln!(out, "  [{tag}] {}: {}", c.name, c.message);
        }
        if let Some(t) = &self.thumbprint {
            let _ = writeln!(out, "\nAWS thumbprint: {t}\n  (AWS ignores it when the chain ends in a CA it trusts; it is still required by the API.)");
        }
        for (provider, s) in self.snippets.as_object().into_iter().flatten() {
            let _ = writeln!(out, "\n# {provider}");
            for (k, v) in s.as_object().into_iter().flatten() {
                let text = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| serde_json::to_string_pretty(v).unwrap_or_default());
                let _ = writeln!(out, "## {k}\n{text}");
            }
        }
        out
    }
}

/// Runs every check against `issuer`.
pub async fn run(issuer: &str, opts: &Options) -> Report {
    let mut r = Report { issuer: issuer.to_string(), checks: Vec::new(), thumbprint: None, snippets: json!({}) };
    let Ok(uri) = issuer.parse::<http::Uri>() else {
        r.add("issuer URL", Status::Fail, "not a URL");
        return r;
    };
    check_url(&mut r, issuer, &uri, opts.provider);
    if uri.host().is_none() {
        return r;
    }
    let discovery_url = format!("{issuer}/.well-known/openid-configuration");
    let discovery = match fetch(&discovery_url, opts).await {
        Ok(f) => f,
        Err(e) => {
            r.add("discovery", Status::Fail, format!("{discovery_url}: {e}"));
            return r;
        }
    };
    tls_checks(&mut r, "discovery TLS", &discovery);
    if !http_ok(&mut r, "discovery", &discovery_url, &discovery) {
        return r;
    }
    cache_headers(&mut r, "discovery cache headers", &discovery);
    let Ok(doc) = serde_json::from_slice::<Value>(&discovery.body) else {
        r.add("discovery", Status::Fail, "not JSON");
        return r;
    };
    if !doc.is_object() {
        r.add("discovery", Status::Fail, "not a JSON object");
        return r;
    }
    match doc["issuer"].as_str() {
        Some(i) if i == issuer => r.add("issuer", Status::Pass, "matches the URL byte for byte"),
        Some(i) => r.add(
            "issuer",
            Status::Fail,
            format!("the document says {i:?} but the URL is {issuer:?}; AWS and Azure compare them exactly (for Vault: `vault write identity/oidc/config issuer=<public origin>`)"),
        ),
        None => r.add("issuer", Status::Fail, "no string \"issuer\" in the discovery document"),
    }
    let Some(jwks_uri) = doc["jwks_uri"].as_str().map(str::to_string) else {
        r.add("jwks_uri", Status::Fail, "no string \"jwks_uri\" in the discovery document");
        return r;
    };
    let jwks_parsed = jwks_uri.parse::<http::Uri>().ok();
    match &jwks_parsed {
        Some(u) if u.scheme_str() == Some("https") && u.host() == uri.host() => {
            r.add("jwks_uri", Status::Pass, format!("{jwks_uri} (https, same host)"))
        }
        Some(u) if u.scheme_str() == Some("https") => {
            r.add("jwks_uri", Status::Warn, format!("{jwks_uri} is on another host than the issuer"))
        }
        _ => r.add("jwks_uri", Status::Fail, format!("{jwks_uri} must be an https URL")),
    }
    let keys = match fetch(&jwks_uri, opts).await {
        Ok(f) => f,
        Err(e) => {
            r.add("JWKS", Status::Fail, format!("{jwks_uri}: {e}"));
            return r;
        }
    };
    r.thumbprint = keys.chain.last().map(|c| hex(&Sha1::digest(c.as_ref())));
    if !http_ok(&mut r, "JWKS", &jwks_uri, &keys) {
        return r;
    }
    cache_headers(&mut r, "JWKS cache headers", &keys);
    let Ok(jwks) = serde_json::from_slice::<Value>(&keys.body) else {
        r.add("JWKS", Status::Fail, "not JSON");
        return r;
    };
    check_keys(&mut r, &jwks, opts.provider);
    r.snippets = snippets(issuer, r.thumbprint.as_deref(), &jwks, opts);
    r
}

fn check_url(r: &mut Report, issuer: &str, uri: &http::Uri, provider: Provider) {
    if uri.scheme_str() != Some("https") {
        r.add("issuer URL", Status::Fail, "must be https: cloud providers fetch documents only over https");
    }
    if uri.query().is_some() || issuer.contains('#') {
        r.add("issuer URL", Status::Fail, "must not have a query or fragment");
    }
    if uri.port().is_some() {
        let status = if provider.includes(Provider::Aws) { Status::Fail } else { Status::Warn };
        r.add("issuer URL", status, "has an explicit port: AWS accepts only the default port 443");
    }
    if issuer.ends_with('/') {
        r.add(
            "issuer URL",
            Status::Fail,
            "ends with '/': the issuer in tokens and documents has no trailing slash, and providers compare byte for byte",
        );
    }
    if !r.checks.iter().any(|c| c.name == "issuer URL") {
        r.add("issuer URL", Status::Pass, "https, no port, query, fragment or trailing slash");
    }
}

fn http_ok(r: &mut Report, name: &'static str, url: &str, f: &Fetched) -> bool {
    if f.status.is_redirection() {
        r.add(
            name,
            Status::Fail,
            format!("{url} answered {} (a redirect): cloud providers do not follow redirects", f.status.as_u16()),
        );
        return false;
    }
    if f.status != http::StatusCode::OK {
        r.add(name, Status::Fail, format!("{url} answered {}", f.status.as_u16()));
        return false;
    }
    r.add(name, Status::Pass, format!("fetched in {} ms", f.took.as_millis()));
    true
}

fn cache_headers(r: &mut Report, name: &'static str, f: &Fetched) {
    let cc = f.headers.get(http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).unwrap_or("");
    let max_age = cc.split(',').find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok());
    match max_age {
        _ if cc.is_empty() => r.add(name, Status::Warn, "no Cache-Control: providers will refetch on every exchange"),
        Some(0) => r.add(name, Status::Warn, format!("Cache-Control: {cc} (nothing is cached)")),
        Some(s) if s > 86_400 => {
            r.add(name, Status::Warn, format!("Cache-Control: {cc}: key rotation would take over a day to be seen"))
        }
        Some(_) => r.add(name, Status::Pass, format!("Cache-Control: {cc}")),
        None => r.add(name, Status::Warn, format!("Cache-Control: {cc} (no max-age)")),
    }
}

fn tls_checks(r: &mut Report, name: &'static str, f: &Fetched) {
    match &f.verify_error {
        Some(e) => r.add(name, Status::Fail, format!("the certificate chain does not verify: {e}")),
        None => r.add(name, Status::Pass, "the chain verifies"),
    }
    if let Some(leaf) = f.chain.first() {
        if let Ok(facts) = wif_proxy::edge::tls::leaf_facts(leaf) {
            let days = facts.not_after.duration_since(SystemTime::now()).map_or(-1, |d| (d.as_secs() / 86_400) as i64);
            let status = match days {
                d if d < 0 => Status::Fail,
                d if d < 14 => Status::Warn,
                _ => Status::Pass,
            };
            r.add("certificate expiry", status, format!("{days} days left"));
        }
    }
}

fn check_keys(r: &mut Report, jwks: &Value, provider: Provider) {
    let Some(keys) = jwks["keys"].as_array() else {
        r.add("JWKS", Status::Fail, "no \"keys\" array");
        return;
    };
    if keys.is_empty() {
        r.add("keys", Status::Fail, "the key set is empty: no token can be verified");
        return;
    }
    if keys.len() > 100 {
        r.add(
            "keys",
            Status::Fail,
            format!("{} keys: Azure uses only the first 100, and AWS has the same practical limit", keys.len()),
        );
    } else {
        r.add("keys", Status::Pass, format!("{} keys", keys.len()));
    }
    let mut seen = std::collections::HashSet::new();
    let mut problems: Vec<(Status, String)> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let kid = k["kid"].as_str();
        let label = kid.map_or_else(|| format!("keys[{i}]"), |kid| format!("key {kid:?}"));
        match kid {
            None => problems.push((Status::Fail, format!("{label}: no \"kid\": providers select keys by kid"))),
            Some(kid) if !seen.insert(kid.to_string()) => {
                problems.push((Status::Fail, format!("{label}: duplicate kid")))
            }
            _ => {}
        }
        let kty = k["kty"].as_str().unwrap_or("");
        if kty.is_empty() {
            problems.push((Status::Fail, format!("{label}: no \"kty\"")));
        }
        let alg = k["alg"].as_str();
        if alg.is_none() {
            problems.push((Status::Warn, format!("{label}: no \"alg\"")));
        }
        match k["use"].as_str() {
            Some("sig") => {}
            Some(other) => problems.push((Status::Fail, format!("{label}: \"use\" is {other:?}, not \"sig\""))),
            None => {
                let status = if provider.includes(Provider::Azure) { Status::Fail } else { Status::Warn };
                problems.push((status, format!("{label}: no \"use\": Azure expects \"use\": \"sig\"")));
            }
        }
        if kty == "RSA" {
            let bits = k["n"]
                .as_str()
                .and_then(|n| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(n.trim_end_matches('=')).ok())
                .map(|n| rsa_bits(&n));
            match bits {
                Some(b) if b < 2048 => {
                    problems.push((Status::Fail, format!("{label}: RSA key of {b} bits; at least 2048 are required")))
                }
                None => problems.push((Status::Fail, format!("{label}: RSA key without a readable \"n\""))),
                _ => {}
            }
        }
        let alg = alg.unwrap_or(match kty {
            "RSA" => "RS256",
            "EC" => "ES256",
            "OKP" => "EdDSA",
            _ => "",
        });
        if alg == "EdDSA" {
            problems.push((Status::Warn, format!("{label}: EdDSA keys are not accepted by AWS, GCP or Azure")));
        }
        let rules: [(Provider, &str, &[&str]); 3] = [
            (Provider::Azure, "Azure", &["RS256"]),
            (Provider::Aws, "AWS", &["RS256", "RS384", "RS512", "ES256", "ES384", "ES512"]),
            (Provider::Gcp, "GCP", &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]),
        ];
        for (p, pname, accepted) in rules {
            if provider.includes(p) && !accepted.contains(&alg) {
                problems.push((
                    Status::Fail,
                    format!("{label}: {pname} does not accept {alg} (accepts {})", accepted.join(", ")),
                ));
            }
        }
    }
    if problems.is_empty() {
        r.add(
            "key details",
            Status::Pass,
            "every key has a unique kid, kty, alg and use \"sig\"; RSA keys are 2048 bits or more",
        );
    }
    for (status, msg) in problems {
        r.add("key details", status, msg);
    }
}

fn rsa_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

fn snippets(issuer: &str, thumbprint: Option<&str>, jwks: &Value, opts: &Options) -> Value {
    let bare = issuer.trim_start_matches("https://");
    let mut out = serde_json::Map::new();
    if opts.provider.includes(Provider::Aws) {
        let aud = opts.audience.clone().unwrap_or_else(|| "sts.amazonaws.com".to_string());
        let policy = json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Federated": format!("arn:aws:iam::<ACCOUNT_ID>:oidc-provider/{bare}")},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {
                    format!("{bare}:aud"): aud,
                    format!("{bare}:sub"): "plugin-identity:<NAMESPACE_ID>:secret:<MOUNT_ACCESSOR>",
                }}
            }]
        });
        out.insert(
            "aws".into(),
            json!({
                "command": format!(
                    "aws iam create-open-id-connect-provider --url {issuer} --client-id-list {aud} --thumbprint-list {}",
                    thumbprint.unwrap_or("<THUMBPRINT>")
                ),
                "trust_policy": policy,
                "note": "Restrict :sub to one Vault mount: plugin-identity:<namespace id>:<secret|auth>:<mount accessor> (vault read sys/mounts/<path> shows the accessor).",
            }),
        );
    }
    if opts.provider.includes(Provider::Gcp) {
        let aud = opts.audience.clone().unwrap_or_else(|| {
            "//iam.googleapis.com/projects/<PROJECT_NUMBER>/locations/global/workloadIdentityPools/<POOL_ID>/providers/<PROVIDER_ID>".into()
        });
        out.insert(
            "gcp".into(),
            json!({
                "command": format!(
                    "gcloud iam workload-identity-pools providers create-oidc <PROVIDER_ID> --location=global --workload-identity-pool=<POOL_ID> --issuer-uri={issuer} --allowed-audiences={aud} --attribute-mapping=google.subject=assertion.sub"
                ),
                "jwk_json": jwks,
                "note": "To upload the keys instead of exposing the endpoint, save jwk_json to a file and add --jwk-json-path=<file>.",
            }),
        );
    }
    if opts.provider.includes(Provider::Azure) {
        let aud = opts.audience.clone().unwrap_or_else(|| "api://AzureADTokenExchange".to_string());
        out.insert(
            "azure".into(),
            json!({
                "command": format!(
                    "az identity federated-credential create --name <CREDENTIAL_NAME> --identity-name <IDENTITY_NAME> --resource-group <RESOURCE_GROUP> --issuer {issuer} --subject <SUBJECT> --audiences {aud}"
                ),
            }),
        );
    }
    Value::Object(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One fetched document and what its TLS connection showed.
struct Fetched {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
    chain: Vec<CertificateDer<'static>>,
    verify_error: Option<String>,
    took: Duration,
}

async fn fetch(url: &str, opts: &Options) -> Result<Fetched, String> {
    let started = std::time::Instant::now();
    match tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(url, opts)).await {
        Ok(Ok(mut f)) => {
            f.took = started.elapsed();
            Ok(f)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no complete answer within {} s (AWS's limit)", FETCH_TIMEOUT.as_secs())),
    }
}

async fn fetch_inner(url: &str, opts: &Options) -> Result<Fetched, String> {
    let uri: http::Uri = url.parse().map_err(|_| "not a URL".to_string())?;
    let host = uri.host().ok_or("no host")?.trim_start_matches('[').trim_end_matches(']').to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let target = opts
        .connect_to
        .iter()
        .find(|(h, p, _)| h.eq_ignore_ascii_case(&host) && *p == port)
        .map(|(_, _, a)| a.to_string())
        .unwrap_or_else(|| format!("{host}:{port}"));
    let tcp = tokio::net::TcpStream::connect(&target).await.map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or(host.clone());
    if !https {
        let (status, headers, body) = get_over(tcp, &authority, &path).await?;
        return Ok(Fetched {
            status,
            headers,
            body,
            chain: Vec::new(),
            verify_error: Some("not TLS".into()),
            took: Duration::ZERO,
        });
    }
    let roots = roots(opts)?;
    let name = ServerName::try_from(host.clone()).map_err(|_| format!("invalid host name {host}"))?;
    let verifier = Arc::new(Recording {
        inner: rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?,
        error: std::sync::Mutex::new(None),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let chain: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let verify_error = verifier.error.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (status, headers, body) = get_over(tls, &authority, &path).await?;
    Ok(Fetched { status, headers, body, chain, verify_error, took: Duration::ZERO })
}

async fn get_over<S>(io: S, authority: &str, path: &str) -> Result<(http::StatusCode, http::HeaderMap, Bytes), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, concat!("wif-proxy-doctor/", env!("CARGO_PKG_VERSION")))
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, 4 * 1024 * 1024).collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts.status, parts.headers, body))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(opts: &Options) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &opts.ca {
        Some(ca) => {
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("--ca {}: {e}", ca.display()))? {
                roots.add(c.map_err(|e| format!("--ca {}: {e}", ca.display()))?).map_err(|e| e.to_string())?;
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    Ok(roots)
}

/// Verifies like a browser would, but records a failure instead of aborting,
/// so the documents can still be examined.
#[derive(Debug)]
struct Recording {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    error: std::sync::Mutex<Option<String>>,
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
        if let Err(e) = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }
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

/// Parses `HOST:PORT:ADDR:PORT` (curl's `--connect-to`).
pub fn parse_connect_to(s: &str) -> Result<(String, u16, SocketAddr), String> {
    let (host, rest) = s.split_once(':').ok_or("expected HOST:PORT:ADDR:PORT")?;
    let (port, target) = rest.split_once(':').ok_or("expected HOST:PORT:ADDR:PORT")?;
    let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
    let target: SocketAddr =
        target.parse().map_err(|_| format!("bad address {target:?} (write ADDR:PORT, [v6]:PORT)"))?;
    Ok((host.to_string(), port, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_sizes() {
        assert_eq!(rsa_bits(&[0x80; 256]), 2048);
        assert_eq!(rsa_bits(&[0x00, 0x80, 0x01]), 16);
        assert_eq!(rsa_bits(&[0x01; 128]), 1017);
    }

    #[test]
    fn connect_to() {
        assert_eq!(
            parse_connect_to("wif.example.com:443:127.0.0.1:8443").unwrap().2,
            "127.0.0.1:8443".parse().unwrap()
        );
        assert!(parse_connect_to("wif.example.com:443").is_err());
    }
}
