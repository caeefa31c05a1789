//! `wif-proxy doctor`: checks a public issuer the way AWS, GCP and Azure
//! will, and prints the commands that make them trust it.
//!
//! Every check yields `pass`, `warn` or `fail` with the reason. Fetches use
//! a fresh connection each (so the presented chain can be inspected), never
//! follow redirects, and must finish within 5 seconds (AWS's limit). When the
//! chain does not verify, that is a failure, and the remaining checks still
//! run over an unverified connection so every problem shows at once.
//!
//! This file holds the options, the report and the order of the run; the
//! checks are in `checks`, the fetching in `fetch`, the printed commands in
//! `snippets`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

mod checks;
mod fetch;
mod snippets;

pub use fetch::parse_connect_to;

use checks::{cache_headers, check_keys, check_url, http_ok, tls_checks};
use fetch::{fetch, Fetched};
use snippets::snippets;

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
    /// Whether any check failed (the exit code is then 1).
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
    let inspect = |r: &mut Report, f: &Fetched| tls_checks(r, "discovery TLS", f);
    let Some(doc) = document(&mut r, "discovery", "discovery cache headers", &discovery_url, opts, inspect).await
    else {
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
    let thumbprint = |r: &mut Report, f: &Fetched| {
        r.thumbprint = f.chain.last().map(|c| hex::encode(Sha1::digest(c.as_ref())));
    };
    let Some(jwks) = document(&mut r, "JWKS", "JWKS cache headers", &jwks_uri, opts, thumbprint).await else {
        return r;
    };
    check_keys(&mut r, &jwks, opts.provider);
    r.snippets = snippets(issuer, r.thumbprint.as_deref(), &jwks, opts);
    r
}

/// Fetches the document `name` and runs what every document gets: `inspect`
/// on the answer as it came, then the status, the cache headers (reported
/// as `cache`) and the JSON. `None` when the run cannot go on.
async fn document(
    r: &mut Report,
    name: &'static str,
    cache: &'static str,
    url: &str,
    opts: &Options,
    inspect: impl FnOnce(&mut Report, &Fetched),
) -> Option<Value> {
    let fetched = match fetch(url, opts).await {
        Ok(f) => f,
        Err(e) => {
            r.add(name, Status::Fail, format!("{url}: {e}"));
            return None;
        }
    };
    inspect(r, &fetched);
    if !http_ok(r, name, url, &fetched) {
        return None;
    }
    cache_headers(r, cache, &fetched);
    let json = serde_json::from_slice::<Value>(&fetched.body).ok();
    if json.is_none() {
        r.add(name, Status::Fail, "not JSON");
    }
    json
}
