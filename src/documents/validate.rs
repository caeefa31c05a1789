//! Validation of issuer documents before they are ever served.
//!
//! A body passes only if it has the shape its kind requires; the bytes that
//! passed are then served exactly as received (never re-serialised), so what
//! a cloud provider sees is what the issuer signed off on.

use serde::Deserialize;

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
    Discovery { issuer: String, jwks_uri: String },
    Keys { count: usize },
}

/// Checks `body` as a document of `kind`.
pub fn validate(kind: DocKind, body: &[u8]) -> Result<Facts, String> {
    // Both shapes are JSON objects; check that first for a clear message.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("not a JSON object".into());
    }
    match kind {
        DocKind::Discovery => {
            let d: Discovery<'_> =
                serde_json::from_slice(body).map_err(|e| format!("invalid discovery document: {e}"))?;
            Ok(Facts::Discovery { issuer: d.issuer.into_owned(), jwks_uri: d.jwks_uri.into_owned() })
        }
        DocKind::Keys => {
            let k: Jwks = serde_json::from_slice(body).map_err(|e| format!("invalid JWKS: {e}"))?;
            for (i, key) in k.keys.iter().enumerate() {
                if !matches!(key.get("kty"), Some(serde_json::Value::String(s)) if !s.is_empty()) {
                    return Err(format!("invalid JWKS: keys[{i}] has no string \"kty\""));
                }
            }
            Ok(Facts::Keys { count: k.keys.len() })
        }
    }
}

/// The issuer guard: does a discovery document describe the issuer this proxy
/// publishes? Returns an operator-facing explanation when it does not.
pub fn check_issuer(facts: &Facts, expected: &Expected, vault: bool) -> Result<(), String> {
    let Facts::Discovery { issuer, jwks_uri } = facts else {
        return Ok(());
    };
    let hint = if vault {
        " Set Vault's issuer to this proxy's public origin: `vault write identity/oidc/config issuer=<public_url>` (plugin WIF and identity tokens) or the provider's `issuer` parameter (OIDC provider), in the right namespace."
    } else {
        " Configure the issuer (for SPIRE: the oidc-discovery-provider `domains`/`jwt_issuer`) to use this proxy's public origin, or set public_url in proxy.toml to what the issuer publishes."
    };
    if *issuer != expected.issuer {
        return Err(format!(
            "discovery document says issuer {issuer:?} but this proxy publishes it as {:?}; cloud providers compare these byte for byte and will reject tokens.{hint}",
            expected.issuer
        ));
    }
    if !expected.jwks_uris.iter().any(|u| u == jwks_uri) {
        return Err(format!(
            "discovery document says jwks_uri {jwks_uri:?} but this proxy publishes the keys at {:?}; cloud providers will fail to fetch the keys.{hint}",
            expected.jwks_uris.join(" or ")
        ));
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
        assert_eq!(validate(DocKind::Keys, br#"{"keys":[{"kty":"RSA"},{"kty":"EC"}]}"#), Ok(Facts::Keys { count: 2 }));
        assert_eq!(validate(DocKind::Keys, br#"{"keys":[]}"#), Ok(Facts::Keys { count: 0 }));
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
        assert!(check_issuer(&good, &e, true).is_ok());
        let bad = Facts::Discovery {
            issuer: "http://127.0.0.1:8200/v1/identity/oidc/plugins".into(),
            jwks_uri: e.jwks_uris[0].clone(),
        };
        let msg = check_issuer(&bad, &e, true).unwrap_err();
        assert!(msg.contains("identity/oidc/config issuer="), "{msg}");
    }
}
