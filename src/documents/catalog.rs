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
        IssuerKind::Kubernetes => {
            vec![(DISCOVERY_SUFFIX.to_string(), DocKind::Discovery), (KUBERNETES_JWKS.to_string(), DocKind::Keys)]
        }
        IssuerKind::Custom => issuer.paths.iter().map(|p| (p.clone(), kind_of_custom(p))).collect(),
    }
}

/// Where a Kubernetes API server publishes its service-account keys
/// (ServiceAccountIssuerDiscovery), and the `jwks_uri` that
/// `--service-account-jwks-uri` must make it advertise.
pub const KUBERNETES_JWKS: &str = "/openid/v1/jwks";

/// The `Accept` header of every fetch for `kind`: JSON, and for Kubernetes
/// also the media type its API server gives key sets.
pub fn accept(kind: IssuerKind) -> &'static str {
    match kind {
        IssuerKind::Kubernetes => "application/json, application/jwk-set+json",
        _ => "application/json",
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
        IssuerKind::Kubernetes => vec![format!("{}{KUBERNETES_JWKS}", issuer.public_url)],
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn kubernetes_paths_and_what_its_discovery_document_must_say() {
        let text = "[server]\npublic_url = \"https://k8s-oidc.example.com\"\n[[issuer]]\nname = \"k\"\nkind = \"kubernetes\"\nupstream = \"https://127.0.0.1:6443\"\n";
        let config = Config::parse(std::path::Path::new("t.toml"), text).expect("valid");
        let issuer = &config.issuers[0];
        assert_eq!(
            issuer_paths(issuer),
            vec![
                ("/.well-known/openid-configuration".to_string(), DocKind::Discovery),
                ("/openid/v1/jwks".to_string(), DocKind::Keys),
            ]
        );
        let e = expected(issuer, "/.well-known/openid-configuration");
        assert_eq!(e.issuer, "https://k8s-oidc.example.com");
        assert_eq!(e.jwks_uris, vec!["https://k8s-oidc.example.com/openid/v1/jwks".to_string()]);
        assert_eq!(accept(IssuerKind::Kubernetes), "application/json, application/jwk-set+json");
        assert_eq!(accept(IssuerKind::Spire), "application/json");
    }
}
