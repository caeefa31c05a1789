//! The allowlist: the exact set of request targets this proxy answers.
//!
//! It is built once from a [`Config`] and then only read. A request target is
//! matched byte for byte against it: nothing is decoded, normalised, case
//! folded or trimmed first, so what matches is exactly what is forwarded. The
//! public path and the upstream path are always the same string — the proxy
//! publishes the issuer's own paths — so the forwarded target is the allowlist
//! entry itself (or, for the `*` namespace wildcard, a target that matched an
//! anchored pattern of a strict charset).

use std::collections::HashMap;
use std::fmt::Write as _;

use regex::Regex;

use crate::documents::catalog::{issuer_paths, DocKind};

use crate::config::{
    is_namespace_segment, Config, IssuerConfig, IssuerKind, MAX_NAMESPACE_DEPTH, MAX_NAME_LEN, RESERVED_NAMESPACES,
};

/// An issuer's place in `Config::issuers` (and so in `Snapshot::issuers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IssuerId(usize);

/// A listed document's place in [`Routes::routes`] (and so in
/// `Snapshot::docs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteId(usize);

impl RouteId {
    pub(crate) fn index(self) -> usize {
        self.0
    }
}

impl IssuerId {
    pub(crate) fn index(self) -> usize {
        self.0
    }

    /// Every issuer of `config`, in order.
    pub fn all(config: &Config) -> impl Iterator<Item = IssuerId> {
        (0..config.issuers.len()).map(IssuerId)
    }
}

/// Typed indexing: an id indexes only the vectors it was made for.
macro_rules! indexed_by {
    ($id:ty => $($t:ty),+) => {$(
        impl std::ops::Index<$id> for Vec<$t> {
            type Output = $t;
            fn index(&self, id: $id) -> &$t {
                &self[id.index()]
            }
        }
    )+};
}
pub(crate) use indexed_by;
indexed_by!(IssuerId => IssuerConfig);
indexed_by!(RouteId => Route);

/// Two issuers claim one path on one host.
#[derive(Debug, thiserror::Error)]
#[error("issuers {first:?} and {second:?} both publish {path} on the same host")]
pub struct Conflict {
    pub first: String,
    pub second: String,
    pub path: Box<str>,
}

/// One allowlisted document.
#[derive(Debug, Clone)]
pub struct Route {
    pub issuer: IssuerId,
    pub kind: DocKind,
    /// The public path, which is also the upstream path.
    pub path: Box<str>,
}

/// What a request target resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// A listed document.
    Static(RouteId),
    /// A document under a `*` namespace; `path` is the matched target.
    Dynamic { issuer: IssuerId, kind: DocKind, path: &'a str },
}

/// The allowlist, per host.
#[derive(Debug)]
pub struct Routes {
    /// Every listed document; their indices are stable for this snapshot.
    pub routes: Vec<Route>,
    any_host: Table,
    by_host: Vec<(Box<str>, Table)>,
    /// Per issuer: its `*` namespace pattern, if it has one.
    wildcards: Vec<Option<Regex>>,
}

#[derive(Debug, Default)]
struct Table {
    /// Built once from configuration and never grown by a request, so a
    /// fast hash (foldhash, a third of SipHash's cost on these paths) gives
    /// a client nothing to flood.
    exact: HashMap<Box<str>, RouteId, foldhash::fast::RandomState>,
    patterns: Vec<Pattern>,
}

#[derive(Debug)]
struct Pattern {
    issuer: IssuerId,
    /// Anchored; group 1 is the namespace prefix, group 2 the document.
    regex: Regex,
    /// Shown by `wif-proxy check`.
    template: String,
}

impl Routes {
    /// Builds the allowlist; fails on two issuers claiming one path on one host.
    pub fn build(config: &Config) -> Result<Routes, Conflict> {
        let mut routes = Vec::new();
        let mut any_host = Table::default();
        let mut by_host: Vec<(Box<str>, Table)> = Vec::new();
        let mut wildcards = Vec::with_capacity(config.issuers.len());
        for (idx, issuer) in IssuerId::all(config).zip(&config.issuers) {
            let first = routes.len();
            for (path, kind) in issuer_paths(issuer) {
                routes.push(Route { issuer: idx, kind, path: path.into() });
            }
            let pattern = wildcard_pattern(issuer);
            wildcards.push(pattern.clone());
            let tables: Vec<&mut Table> = if issuer.hosts.is_empty() {
                vec![&mut any_host]
            } else {
                for h in &issuer.hosts {
                    if !by_host.iter().any(|(n, _)| **n == **h) {
                        by_host.push((h.as_str().into(), Table::default()));
                    }
                }
                by_host.iter_mut().filter(|(n, _)| issuer.hosts.iter().any(|h| **h == **n)).map(|(_, t)| t).collect()
            };
            for table in tables {
                for (i, route) in routes.iter().enumerate().skip(first) {
                    if let Some(&other) = table.exact.get(&route.path) {
                        return Err(Conflict {
                            first: config.issuers[routes[other].issuer].name.clone(),
                            second: issuer.name.clone(),
                            path: route.path.clone(),
                        });
                    }
                    table.exact.insert(route.path.clone(), RouteId(i));
                }
                if let Some(p) = &pattern {
                    table.patterns.push(Pattern { issuer: idx, regex: p.clone(), template: wildcard_template(issuer) });
                }
            }
        }
        Ok(Routes { routes, any_host, by_host, wildcards })
    }

    /// Whether `path` is a `*`-namespace document of issuer `issuer`.
    pub fn wildcard_match(&self, issuer: IssuerId, path: &str) -> Option<DocKind> {
        let regex = self.wildcards.get(issuer.0)?.as_ref()?;
        match_wildcard(regex, path)
    }

    /// Resolves a raw request target for an optional Host (without port).
    /// Whether any issuer is bound to hosts: only then is a request's host
    /// worth reading.
    pub fn host_bound(&self) -> bool {
        !self.by_host.is_empty()
    }

    pub fn lookup<'a>(&self, host: Option<&str>, target: &'a str) -> Option<Lookup<'a>> {
        if let Some(host) = host {
            if let Some((_, table)) = self.by_host.iter().find(|(n, _)| n.eq_ignore_ascii_case(host)) {
                if let Some(found) = table.find(target) {
                    return Some(found);
                }
            }
        }
        self.any_host.find(target)
    }

    /// A human-readable listing of everything exposed, for `wif-proxy check`.
    pub fn describe(&self, config: &Config) -> String {
        let mut out = String::new();
        let mut section = |title: &str, table: &Table| {
            let _ = writeln!(out, "{title}");
            let mut exact: Vec<_> = table.exact.iter().collect();
            exact.sort_by_key(|(path, _)| *path);
            for (path, &id) in exact {
                let r = &self.routes[id];
                let issuer = &config.issuers[r.issuer];
                let _ = writeln!(
                    out,
                    "  GET|HEAD {path}  ->  {}  [issuer {}, {}]",
                    upstream_targets(issuer, path),
                    issuer.name,
                    r.kind.as_str()
                );
            }
            for p in &table.patterns {
                let issuer = &config.issuers[p.issuer];
                let _ = writeln!(
                    out,
                    "  GET|HEAD {}  ->  {}  [issuer {}, any namespace; pattern {}]",
                    p.template,
                    upstream_targets(issuer, "<same path>"),
                    issuer.name,
                    p.regex.as_str()
                );
            }
        };
        if !self.any_host.exact.is_empty() || !self.any_host.patterns.is_empty() {
            section("any host:", &self.any_host);
        }
        for (host, table) in &self.by_host {
            section(&format!("host {host}:"), table);
        }
        out
    }
}

impl Table {
    fn find<'a>(&self, target: &'a str) -> Option<Lookup<'a>> {
        if let Some(&id) = self.exact.get(target) {
            return Some(Lookup::Static(id));
        }
        for p in &self.patterns {
            if let Some(kind) = match_wildcard(&p.regex, target) {
                return Some(Lookup::Dynamic { issuer: p.issuer, kind, path: target });
            }
        }
        None
    }
}

/// Where `path` is fetched from, for `check`: each node in the order tried
/// (`a | b`), a unix socket as `unix:/p.sock <path>`, and the Host sent
/// when it is not the node's own.
fn upstream_targets(issuer: &IssuerConfig, path: &str) -> String {
    let nodes: Vec<String> = issuer
        .upstream
        .iter()
        .map(|u| if u.unix.is_some() { format!("{} {path}", u.origin) } else { format!("{}{path}", u.origin) })
        .collect();
    let mut out = nodes.join(" | ");
    if let Some(host) = &issuer.upstream_host {
        out.push_str(&format!(" (Host: {host})"));
    }
    out
}

/// Strips an optional `:port` (and one trailing dot) from a Host value.
pub fn host_name(host: &str) -> &str {
    let name = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    name.strip_suffix('.').unwrap_or(name)
}

fn wildcard_pattern(issuer: &IssuerConfig) -> Option<Regex> {
    if !issuer.namespaces.wildcard {
        return None;
    }
    let seg = format!("[A-Za-z0-9][A-Za-z0-9_-]{{0,{}}}/", MAX_NAME_LEN - 1);
    let ns = format!("((?:{seg}){{0,{MAX_NAMESPACE_DEPTH}}})");
    let tail = match issuer.kind {
        IssuerKind::VaultPluginWif => "identity/oidc/plugins".to_string(),
        IssuerKind::VaultIdentity => "identity/oidc".to_string(),
        IssuerKind::VaultOidcProvider => {
            let names: Vec<String> = issuer.providers.iter().map(|p| regex::escape(p)).collect();
            format!("identity/oidc/provider/(?:{})", names.join("|"))
        }
        IssuerKind::Spire | IssuerKind::Kubernetes | IssuerKind::Custom => return None,
    };
    let re = format!(r"^/v1/{ns}{tail}/\.well-known/(openid-configuration|keys)$");
    Some(Regex::new(&re).expect("wildcard pattern is built from escaped, validated parts"))
}

fn wildcard_template(issuer: &IssuerConfig) -> String {
    let tail = match issuer.kind {
        IssuerKind::VaultPluginWif => "identity/oidc/plugins".to_string(),
        IssuerKind::VaultIdentity => "identity/oidc".to_string(),
        _ => format!("identity/oidc/provider/{{{}}}", issuer.providers.join(",")),
    };
    format!("/v1/<namespace/>{tail}/.well-known/{{openid-configuration,keys}}")
}

/// Runs a wildcard pattern and applies the checks a regex cannot express
/// (reserved names). Returns the document kind on a match.
fn match_wildcard(regex: &Regex, target: &str) -> Option<DocKind> {
    let caps = regex.captures(target)?;
    let ns = caps.get(1).map_or("", |m| m.as_str());
    for seg in ns.split('/').filter(|s| !s.is_empty()) {
        if !is_namespace_segment(seg) || RESERVED_NAMESPACES.iter().any(|r| seg.eq_ignore_ascii_case(r)) {
            return None;
        }
    }
    match caps.get(2)?.as_str() {
        "openid-configuration" => Some(DocKind::Discovery),
        _ => Some(DocKind::Keys),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn routes(issuers: &str) -> (Config, Routes) {
        let text = format!("[server]\npublic_url = \"https://wif.example.com\"\n{issuers}");
        let c = Config::parse(Path::new("t.toml"), &text).expect("valid config");
        let r = Routes::build(&c).expect("routes");
        (c, r)
    }

    #[test]
    fn plugin_wif_root_and_nested() {
        let (_, r) = routes("[[issuer]]\nname=\"v\"\nkind=\"vault-plugin-wif\"\nupstream=\"http://127.0.0.1:8200\"\nnamespaces=[\"\",\"a/b\"]\n");
        assert!(matches!(r.lookup(None, "/v1/identity/oidc/plugins/.well-known/keys"), Some(Lookup::Static(_))));
        assert!(matches!(
            r.lookup(None, "/v1/a/b/identity/oidc/plugins/.well-known/openid-configuration"),
            Some(Lookup::Static(_))
        ));
        for miss in [
            "/v1/a/identity/oidc/plugins/.well-known/keys",
            "/v1/identity/oidc/plugins/.well-known/keys/",
            "/V1/identity/oidc/plugins/.well-known/keys",
        ] {
            assert_eq!(r.lookup(None, miss), None, "{miss}");
        }
    }

    #[test]
    fn wildcard_is_strict() {
        let (_, r) = routes("[[issuer]]\nname=\"v\"\nkind=\"vault-plugin-wif\"\nupstream=\"http://127.0.0.1:8200\"\nnamespaces=[\"*\"]\n");
        let t = "/v1/x/y-z/identity/oidc/plugins/.well-known/keys";
        assert_eq!(r.lookup(None, t), Some(Lookup::Dynamic { issuer: IssuerId(0), kind: DocKind::Keys, path: t }));
        assert!(r.lookup(None, "/v1/identity/oidc/plugins/.well-known/openid-configuration").is_some());
        for miss in [
            "/v1/sys/identity/oidc/plugins/.well-known/keys",
            "/v1/a/../identity/oidc/plugins/.well-known/keys",
            "/v1/a%2fb/identity/oidc/plugins/.well-known/keys",
            "/v1/a//identity/oidc/plugins/.well-known/keys",
            "/v1/1/2/3/4/5/6/7/8/9/identity/oidc/plugins/.well-known/keys",
            "/v1/x/identity/oidc/plugins/.well-known/keys?x",
            "/v1/x/identity/oidc/plugins/.well-known/keys\n",
        ] {
            assert_eq!(r.lookup(None, miss), None, "{miss}");
        }
    }

    #[test]
    fn hosts_route_separately() {
        let (_, r) = routes(
            "[[issuer]]\nname=\"a\"\nkind=\"spire\"\nupstream=\"http://127.0.0.1:1\"\nhosts=[\"A.example.com\"]\n\
             [[issuer]]\nname=\"b\"\nkind=\"spire\"\nupstream=\"http://127.0.0.1:2\"\nhosts=[\"b.example.com\"]\n",
        );
        let Some(Lookup::Static(i)) = r.lookup(Some("a.EXAMPLE.com"), "/keys") else { panic!("a") };
        assert_eq!(r.routes[i].issuer, IssuerId(0));
        let Some(Lookup::Static(i)) = r.lookup(Some("b.example.com"), "/keys") else { panic!("b") };
        assert_eq!(r.routes[i].issuer, IssuerId(1));
        assert_eq!(r.lookup(Some("c.example.com"), "/keys"), None);
        assert_eq!(r.lookup(None, "/keys"), None);
    }

    #[test]
    fn conflicts_are_errors() {
        let text = "[server]\npublic_url = \"https://w.example\"\n[[issuer]]\nname=\"a\"\nkind=\"spire\"\nupstream=\"http://127.0.0.1:1\"\n[[issuer]]\nname=\"b\"\nkind=\"spire\"\nupstream=\"http://127.0.0.1:2\"\n";
        let c = Config::parse(Path::new("t.toml"), text).expect("config");
        assert!(Routes::build(&c).unwrap_err().to_string().contains("both publish /.well-known/openid-configuration"));
    }

    #[test]
    fn expectations() {
        let (c, _) = routes("[[issuer]]\nname=\"v\"\nkind=\"vault-plugin-wif\"\nupstream=\"http://127.0.0.1:8200\"\nnamespaces=[\"ns1\"]\n");
        let e = crate::documents::catalog::expected(
            &c.issuers[0],
            "/v1/ns1/identity/oidc/plugins/.well-known/openid-configuration",
        );
        assert_eq!(e.issuer, "https://wif.example.com/v1/ns1/identity/oidc/plugins");
        assert_eq!(e.jwks_uris, vec!["https://wif.example.com/v1/ns1/identity/oidc/plugins/.well-known/keys"]);
    }

    #[test]
    fn host_names() {
        assert_eq!(host_name("a.example.com:443"), "a.example.com");
        assert_eq!(host_name("a.example.com."), "a.example.com");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
    }
}
