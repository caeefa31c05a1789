//! The checks of a `doctor` run, each adding its findings to the report:
//! the issuer URL, the answers (status, cache headers, TLS), and the keys.

use std::time::SystemTime;

use base64::Engine as _;
use serde_json::Value;

use super::fetch::Fetched;
use super::{Provider, Report, Status};

/// The issuer URL itself: https, default port, no query, fragment or
/// trailing slash.
pub(super) fn check_url(r: &mut Report, issuer: &str, uri: &http::Uri, provider: Provider) {
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

/// A 200, not a redirect; `false` stops the run.
pub(super) fn http_ok(r: &mut Report, name: &'static str, url: &str, f: &Fetched) -> bool {
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

/// Whether providers can cache the document, and not for too long.
pub(super) fn cache_headers(r: &mut Report, name: &'static str, f: &Fetched) {
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

/// Whether the chain verifies, and how long the leaf has left.
pub(super) fn tls_checks(r: &mut Report, name: &'static str, f: &Fetched) {
    match &f.verify_error {
        Some(e) => r.add(name, Status::Fail, format!("the certificate chain does not verify: {e}")),
        None => r.add(name, Status::Pass, "the chain verifies"),
    }
    if let Some(leaf) = f.chain.first() {
        if let Ok(facts) = wif_proxy::leaf_facts(leaf) {
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

/// Every key against every selected provider's rules.
pub(super) fn check_keys(r: &mut Report, jwks: &Value, provider: Provider) {
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

/// The size in bits of a big-endian RSA modulus.
fn rsa_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
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
}
