//! The catalogue of documents: which documents each issuer kind publishes,
//! at which paths, and what a discovery document must say about itself.
//! A new issuer kind starts here.

use crate::config::{IssuerConfig, IssuerKind};

/// The two documents an OIDC issuer publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    /// `.../.well-known/openid-configuration`
    Discovery,
    /// The JSON Web Key Set.
    Keys,
}

impl DocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Discovery => "discovery",
            DocKind::Keys => "keys",
        }
    }
}

pub const DISCOVERY_SUFFIX: &str = "/.well-known/openid-configuration";

/// The listed documents of one issuer, in a stable order.
pub fn issuer_paths(issuer: &IssuerConfig) -> Vec<(String, DocKind)> {
    let both = |prefix: &str| {
        vec![
            (format!("{prefix}{DISCOVERY_SUFFIX}"), DocKind::Discovery),
            (format!("{prefix}/.well-known/keys"), DocKind::Keys),
        ]
    };
    let ns_prefix = |ns: &str| if ns.is_empty() { "/v1/".to_string() } else { format!("/v1/{ns}/") };
    match issuer.kind {
        IssuerKind::VaultPluginWif => issuer
            .namespaces
            .listed
            .iter()
            .flat_map(|ns| both(&format!("{}identity/oidc/plugins", ns_prefix(ns))))
            .collect(),
        IssuerKind::VaultIdentity => {
            issuer.namespaces.listed.iter().flat_map(|ns| both(&format!("{}identity/oidc", ns_prefix(ns)))).collect()
        }
        IssuerKind::VaultOidcProvider => issuer
            .namespaces
            .listed
            .iter()
            .flat_map(|ns| {
                issuer.providers.iter().flat_map(move |p| both(&format!("{}identity/oidc/provider/{p}", ns_prefix(ns))))
            })
            .collect(),
        IssuerKind::Spire => {
            vec![(DISCOVERY_SUFFIX.to_string(), DocKind::Discovery), ("/keys".to_string(), DocKind::Keys)]
        }
        IssuerKind::Custom => issuer.paths.iter().map(|p| (p.clone(), kind_of_custom(p))).collect(),
    }
}

/// A custom path ending in `/.well-known/openid-configuration` is a discovery
/// document; every other custom path is a key set.
pub fn kind_of_custom(path: &str) -> DocKind {
    if path.ends_with(DISCOVERY_SUFFIX) {
        DocKind::Discovery
    } else {
        DocKind::Keys
    }
}

/// What a discovery document served under `path` must say about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub issuer: String,
    /// `jwks_uri` must equal one of these.
    pub jwks_uris: Vec<String>,
}

/// The issuer guard's expectation for a discovery document at `path`.
pub fn expected(issuer: &IssuerConfig, path: &str) -> Expected {
    let prefix = path.strip_suffix(DISCOVERY_SUFFIX).unwrap_or(path);
    let iss = format!("{}{prefix}", issuer.public_url);
    let jwks_uris = match issuer.kind {
        IssuerKind::Spire => vec![format!("{}/keys", issuer.public_url)],
        IssuerKind::Custom => issuer
            .paths
            .iter()
            .filter(|p| kind_of_custom(p) == DocKind::Keys)
            .map(|p| format!("{}{p}", issuer.public_url))
            .collect(),
        _ => vec![format!("{iss}/.well-known/keys")],
    };
    Expected { issuer: iss, jwks_uris }
}
