//! Whether an issuer document may be served: its shape ([`validate`]) and,
//! for a discovery document, whether it names the issuer and key URL this
//! proxy publishes (the issuer guard, [`check_issuer`]).
//!
//! A body passes only if it has the shape its kind requires; the bytes that
//! passed are then served exactly as received (never re-serialised), so what
//! a cloud provider sees is what the issuer signed off on.

use serde::Deserialize;

use crate::config::IssuerKind;
use crate::documents::catalog::{DocKind, Expected};

#[derive(Deserialize)]
struct Discovery<'a> {
    #[serde(borrow)]
    issuer: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    jwks_uri: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// What a valid document told us (for the issuer guard and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Facts {
    /// The two members the guard compares with the public URL.
    Discovery { issuer: String, jwks_uri: String },
    /// How many keys the set holds, and the key IDs (`kid`) of those that
    /// have one, in order (shown on the status page).
    Keys { count: usize, kids: Vec<String> },
}

/// Why a body is not a document of the kind it was fetched as. The text
/// reaches operators (logs, `/readyz`, the `invalid document: …` fetch error).
#[derive(Debug, thiserror::Error)]
pub enum InvalidDocument {
    /// The first non-blank byte is not `{`: an HTML error page, a JSON array…
    #[error("not a JSON object")]
    NotAnObject,
    /// No string `issuer` and `jwks_uri`, or not JSON at all.
    #[error("invalid discovery document: {0}")]
    Discovery(serde_json::Error),
    /// No `keys` array of objects, or not JSON at all.
    #[error("invalid JWKS: {0}")]
    Jwks(serde_json::Error),
    /// A key without a key type cannot be used by any verifier.
    #[error("invalid JWKS: keys[{index}] has no string \"kty\"")]
    KeyWithoutType { index: usize },
}

/// Checks `body` as a document of `kind` and says what it learned.
///
/// Only the members a cloud provider depends on are checked; everything else
/// the issuer puts in the document is allowed and served untouched.
pub fn validate(kind: DocKind, body: &[u8]) -> Result<Facts, InvalidDocument> {
    // Both shapes are JSON objects; check that first for a clear message.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(InvalidDocument::NotAnObject);
    }
    match kind {
        DocKind::Discovery => {
            let d: Discovery<'_> = serde_json::from_slice(body).map_err(InvalidDocument::Discovery)?;
            Ok(Facts::Discovery { issuer: d.issuer.into_owned(), jwks_uri: d.jwks_uri.into_owned() })
        }
        DocKind::Keys => {
            let k: Jwks = serde_json::from_slice(body).map_err(InvalidDocument::Jwks)?;
            if let Some(index) = k
                .keys
                .iter()
                .position(|key| !matches!(key.get("kty"), Some(serde_json::Value::String(s)) if !s.is_empty()))
            {
                return Err(InvalidDocument::KeyWithoutType { index });
            }
            let kids = k.keys.iter().filter_map(|key| key.get("kid")?.as_str().map(str::to_owned)).collect();
            Ok(Facts::Keys { count: k.keys.len(), kids })
        }
    }
}

/// The issuer guard's finding: a discovery document that names another
/// issuer, or keys elsewhere, than where this proxy publishes them. Cloud
/// providers would reject every token, so the text says what to change.
///
/// Stored per document and shown in `/readyz` under `issuer_mismatch`; it
/// makes the document unservable only with `strict_issuer = true`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerMismatch {
    #[error("discovery document says issuer {found:?} but this proxy publishes it as {expected:?}; cloud providers compare these byte for byte and will reject tokens.{remedy}")]
    Issuer { found: String, expected: String, remedy: Remedy },
    /// `expected` lists every URL the keys are published at, joined by " or ".
    #[error("discovery document says jwks_uri {found:?} but this proxy publishes the keys at {expected:?}; cloud providers will fail to fetch the keys.{remedy}")]
    JwksUri { found: String, expected: String, remedy: Remedy },
}

/// What to change when the guard fails, by kind of issuer. Displays as one
/// sentence with a leading space, appended to the finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// Vault: its issuer setting, per namespace.
    Vault,
    /// SPIRE and custom issuers: their own setting, or `public_url`.
    Other,
    /// A Kubernetes API server: its service-account issuer flags.
    Kubernetes,
}

impl Remedy {
    /// The advice for an issuer of `kind`.
    pub fn for_kind(kind: IssuerKind) -> Remedy {
        match kind {
            k if k.is_vault() => Remedy::Vault,
            IssuerKind::Kubernetes => Remedy::Kubernetes,
            _ => Remedy::Other,
        }
    }
}

impl std::fmt::Display for Remedy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Remedy::Vault => " Set Vault's issuer to this proxy's public origin: `vault write identity/oidc/config issuer=<public_url>` (plugin WIF and identity tokens) or the provider's `issuer` parameter (OIDC provider), in the right namespace.",
            Remedy::Kubernetes => " Start the API server with --service-account-issuer=<public_url> and --service-account-jwks-uri=<public_url>/openid/v1/jwks (on managed clusters the issuer is fixed: front only clusters whose flags you set).",
            Remedy::Other => " Configure the issuer (for SPIRE: the oidc-discovery-provider `domains`/`jwt_issuer`) to use this proxy's public origin, or set public_url in proxy.toml to what the issuer publishes.",
        })
    }
}

/// The issuer guard: does a discovery document describe the issuer this proxy
/// publishes? A key set has nothing to check and always passes. `remedy`
/// is what the finding suggests.
pub fn check_issuer(facts: &Facts, expected: &Expected, remedy: Remedy) -> Result<(), IssuerMismatch> {
    let Facts::Discovery { issuer, jwks_uri } = facts else {
        return Ok(());
    };
    if *issuer != expected.issuer {
        return Err(IssuerMismatch::Issuer { found: issuer.clone(), expected: expected.issuer.clone(), remedy });
    }
    if !expected.jwks_uris.iter().any(|u| u == jwks_uri) {
        return Err(IssuerMismatch::JwksUri {
            found: jwks_uri.clone(),
            expected: expected.jwks_uris.join(" or "),
            remedy,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery() {
        let ok = br#"{"issuer":"https://a/v1/identity/oidc/plugins","jwks_uri":"https://a/v1/identity/oidc/plugins/.well-known/keys","x":[1]}"#;
        assert!(matches!(validate(DocKind::Discovery, ok), Ok(Facts::Discovery { .. })));
        for bad in [&b"[]"[..], b"{}", br#"{"issuer":1,"jwks_uri":"x"}"#, b"{\"issuer\":\"a\"", b"<html>"] {
            assert!(validate(DocKind::Discovery, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn keys() {
        assert_eq!(
            validate(DocKind::Keys, br#"{"keys":[{"kty":"RSA","kid":"a"},{"kty":"EC"},{"kty":"EC","kid":7}]}"#).ok(),
            Some(Facts::Keys { count: 3, kids: vec!["a".into()] }),
            "only string key IDs are named"
        );
        assert_eq!(validate(DocKind::Keys, br#"{"keys":[]}"#).ok(), Some(Facts::Keys { count: 0, kids: vec![] }));
        for bad in [
            &br#"{"keys":{}}"#[..],
            br#"{"keys":[1]}"#,
            br#"{"keys":[{"kid":"a"}]}"#,
            br#"{"keys":[{"kty":""}]}"#,
            b"{}",
        ] {
            assert!(validate(DocKind::Keys, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn guard() {
        let e = Expected {
            issuer: "https://w/v1/identity/oidc/plugins".into(),
            jwks_uris: vec!["https://w/v1/identity/oidc/plugins/.well-known/keys".into()],
        };
        let good = Facts::Discovery { issuer: e.issuer.clone(), jwks_uri: e.jwks_uris[0].clone() };
        assert!(check_issuer(&good, &e, Remedy::Vault).is_ok());
        let bad = Facts::Discovery {
            issuer: "http://127.0.0.1:8200/v1/identity/oidc/plugins".into(),
            jwks_uri: e.jwks_uris[0].clone(),
        };
        let msg = check_issuer(&bad, &e, Remedy::Vault).unwrap_err().to_string();
        assert!(msg.contains("identity/oidc/config issuer="), "{msg}");
    }

    /// Operators read these (logs, `/readyz`) and tests match on them: the
    /// texts are pinned as they were when the errors were strings.
    #[test]
    fn messages_are_unchanged() {
        let text = |kind, body: &[u8]| validate(kind, body).expect_err("invalid").to_string();
        assert_eq!(text(DocKind::Discovery, b"<html>"), "not a JSON object");
        assert_eq!(
            text(DocKind::Discovery, b"{}"),
            "invalid discovery document: missing field `issuer` at line 1 column 2"
        );
        assert_eq!(
            text(DocKind::Keys, br#"{"keys":[{"kty":"RSA"},{"kid":"a"}]}"#),
            r#"invalid JWKS: keys[1] has no string "kty""#
        );
        assert_eq!(
            text(DocKind::Keys, br#"{"keys":{}}"#),
            "invalid JWKS: invalid type: map, expected a sequence at line 1 column 8"
        );

        let e = Expected {
            issuer: "https://w/a".into(),
            jwks_uris: vec!["https://w/a/keys".into(), "https://w/b/keys".into()],
        };
        let wrong_issuer = Facts::Discovery { issuer: "http://x/a".into(), jwks_uri: "https://w/a/keys".into() };
        let wrong_keys = Facts::Discovery { issuer: "https://w/a".into(), jwks_uri: "http://x/keys".into() };
        let guard = |f, vault: bool| {
            check_issuer(f, &e, if vault { Remedy::Vault } else { Remedy::Other }).expect_err("mismatch").to_string()
        };
        let vault = " Set Vault's issuer to this proxy's public origin: `vault write identity/oidc/config issuer=<public_url>` (plugin WIF and identity tokens) or the provider's `issuer` parameter (OIDC provider), in the right namespace.";
        let other = " Configure the issuer (for SPIRE: the oidc-discovery-provider `domains`/`jwt_issuer`) to use this proxy's public origin, or set public_url in proxy.toml to what the issuer publishes.";
        let issuer = r#"discovery document says issuer "http://x/a" but this proxy publishes it as "https://w/a"; cloud providers compare these byte for byte and will reject tokens."#;
        let keys = r#"discovery document says jwks_uri "http://x/keys" but this proxy publishes the keys at "https://w/a/keys or https://w/b/keys"; cloud providers will fail to fetch the keys."#;
        assert_eq!(guard(&wrong_issuer, true), format!("{issuer}{vault}"));
        assert_eq!(guard(&wrong_keys, true), format!("{keys}{vault}"));
        assert_eq!(guard(&wrong_issuer, false), format!("{issuer}{other}"));
        assert_eq!(guard(&wrong_keys, false), format!("{keys}{other}"));
    }
}
