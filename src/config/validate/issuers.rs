//! `[[issuer]]`: what is published, where it is fetched from, and how.
//!
//! Which lists make sense depends on the kind; a list the kind ignores is
//! almost certainly a mistake, so it is an error rather than ignored.

use std::path::PathBuf;

use crate::config::context::Cx;
use crate::config::defaults::*;
use crate::config::file::RawUpstream;
use crate::config::file::{RawIssuer, Text};
use crate::config::values::is_dotted_name;
use crate::config::{
    check_custom_path, check_namespace, ConfigError, Forwarded, IssuerConfig, IssuerKind, Namespaces, UpstreamUrl,
};

/// Every `[[issuer]]`: at least one, names unique; `public_url` is the
/// default origin they are published under.
pub(super) fn issuers(cx: &Cx<'_>, raw: &[RawIssuer], public_url: &str) -> Result<Vec<IssuerConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(cx.whole("no [[issuer]] is configured: there would be nothing to serve"));
    }
    let mut issuers: Vec<IssuerConfig> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let issuer = issuer(cx, &Fields(i), r, public_url)?;
        if issuers.iter().any(|o| o.name == issuer.name) {
            return Err(cx.invalid(&format!("issuer[{i}].name"), &r.name, "another issuer already has this name"));
        }
        issuers.push(issuer);
    }
    Ok(issuers)
}

/// Names the keys of `[[issuer]]` number `.0`: `issuer[0].upstream`.
struct Fields(usize);

impl Fields {
    fn of(&self, key: &str) -> String {
        format!("issuer[{}].{key}", self.0)
    }
}

fn issuer(cx: &Cx<'_>, f: &Fields, r: &RawIssuer, default_public_url: &str) -> Result<IssuerConfig, ConfigError> {
    let name = cx.name(&f.of("name"), &r.name)?;
    let kind: IssuerKind = cx.word(&f.of("kind"), &r.kind)?;
    let upstream = upstream_nodes(cx, f, r)?;
    let namespaces = namespaces(cx, f, r, kind)?;
    let providers = providers(cx, f, r, kind)?;
    let paths = paths(cx, f, r, kind)?;
    let mut hosts: Vec<String> = Vec::with_capacity(r.hosts.len());
    for (j, h) in r.hosts.iter().enumerate() {
        let host = cx.host(&f.of(&format!("hosts[{j}]")), h)?;
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    let public_url = match &r.public_url {
        Some(v) => cx.public_url(&f.of("public_url"), v)?,
        None => default_public_url.to_string(),
    };
    let (public_proto, public_host) = public_url.split_once("://").unwrap_or(("https", &public_url));
    let upstream_host = match &r.upstream_host {
        Some(v) => Some(cx.authority(&f.of("upstream_host"), v)?),
        // SPIRE's provider answers only for its `domains` and builds its
        // URLs from the Host it sees: the public host is what it must see.
        None if kind == IssuerKind::Spire => Some(public_host.to_ascii_lowercase()),
        None => None,
    };
    let upstream_forwarded = r
        .upstream_forwarded_headers
        .unwrap_or(UPSTREAM_FORWARDED_HEADERS)
        .then(|| Forwarded { host: public_host.to_ascii_lowercase(), proto: public_proto.to_string() });
    let upstream_bearer_token_file = bearer_token_file(cx, f, r, &upstream)?;
    let UpstreamTls { ca: upstream_ca, client_cert: upstream_client_cert, client_key: upstream_client_key } =
        upstream_tls(cx, f, r, &upstream)?;
    let upstream_timeout = cx.duration(&f.of("upstream_timeout"), &r.upstream_timeout, UPSTREAM_TIMEOUT)?;
    // Connecting never takes longer than the whole fetch by default.
    let connect =
        Interval { default: upstream_timeout.min(UPSTREAM_CONNECT_TIMEOUT.default), ..UPSTREAM_CONNECT_TIMEOUT };
    let upstream_connect_timeout =
        cx.duration(&f.of("upstream_connect_timeout"), &r.upstream_connect_timeout, connect)?;
    Ok(IssuerConfig {
        name,
        kind,
        upstream,
        upstream_host,
        upstream_forwarded,
        upstream_bearer_token_file,
        namespaces,
        providers,
        paths,
        hosts,
        public_url,
        upstream_ca,
        upstream_client_cert,
        upstream_client_key,
        upstream_connect_timeout,
        upstream_timeout,
        max_document_bytes: cx.int(&f.of("max_document_bytes"), &r.max_document_bytes, MAX_DOCUMENT_BYTES)?,
        strict_issuer: r.strict_issuer.unwrap_or(STRICT_ISSUER),
    })
}

/// Vault kinds: explicit namespaces checked and distinct, `"*"` for any
/// valid one, never an empty list (`""` is the root namespace); the root
/// alone when absent. Other kinds: none.
fn namespaces(cx: &Cx<'_>, f: &Fields, r: &RawIssuer, kind: IssuerKind) -> Result<Namespaces, ConfigError> {
    let field = f.of("namespaces");
    match (&r.namespaces, kind.is_vault()) {
        (Some(list), true) if list.is_empty() => {
            Err(cx.whole(format!("{field} is empty: list \"\" for the root namespace")))
        }
        (Some(list), true) => {
            let listed = cx.distinct(&field, list, |field, v| match v.get_ref().as_str() {
                "*" => Ok(None),
                ns => check_namespace(ns).map(|()| Some(ns.to_string())).map_err(|why| cx.invalid(field, v, why)),
            })?;
            Ok(Namespaces { listed, wildcard: list.iter().any(|v| v.get_ref() == "*") })
        }
        (None, true) => {
            Ok(Namespaces { listed: NAMESPACES.iter().map(|ns| ns.to_string()).collect(), wildcard: false })
        }
        (Some(list), false) => {
            cx.absent(&field, list, &format!("namespaces apply only to Vault kinds, not {}", kind.as_str()))?;
            Ok(Namespaces::default())
        }
        (None, false) => Ok(Namespaces::default()),
    }
}

/// `vault-oidc-provider`: at least one provider name, each distinct.
fn providers(cx: &Cx<'_>, f: &Fields, r: &RawIssuer, kind: IssuerKind) -> Result<Vec<String>, ConfigError> {
    if kind != IssuerKind::VaultOidcProvider {
        cx.absent(&f.of("providers"), &r.providers, "providers apply only to kind = \"vault-oidc-provider\"")?;
        return Ok(Vec::new());
    }
    if r.providers.is_empty() {
        return Err(cx.invalid(
            &f.of("kind"),
            &r.kind,
            "vault-oidc-provider needs providers = [\"<provider name>\", ...]",
        ));
    }
    cx.distinct(&f.of("providers"), &r.providers, |field, p: &Text| {
        if !is_dotted_name(p.get_ref()) {
            return Err(cx.invalid(
                field,
                p,
                format!(
                    "a provider name is 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 - _ . (no leading, trailing or double dot)"
                ),
            ));
        }
        Ok(Some(p.get_ref().clone()))
    })
}

/// `custom`: at least one exact public path, each distinct.
fn paths(cx: &Cx<'_>, f: &Fields, r: &RawIssuer, kind: IssuerKind) -> Result<Vec<String>, ConfigError> {
    if kind != IssuerKind::Custom {
        cx.absent(&f.of("paths"), &r.paths, "paths apply only to kind = \"custom\"")?;
        return Ok(Vec::new());
    }
    if r.paths.is_empty() {
        return Err(cx.invalid(&f.of("kind"), &r.kind, "custom needs paths = [\"/exact/public/path\", ...]"));
    }
    cx.distinct(&f.of("paths"), &r.paths, |field, p| match check_custom_path(p.get_ref()) {
        Ok(()) => Ok(Some(p.get_ref().clone())),
        Err(why) => Err(cx.invalid(field, p, why)),
    })
}

/// The files an https upstream is reached with (`""` means none).
struct UpstreamTls {
    ca: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

/// A client certificate comes with its key, and none of these files means
/// anything to a plain-http upstream.
fn upstream_tls(cx: &Cx<'_>, f: &Fields, r: &RawIssuer, upstream: &[UpstreamUrl]) -> Result<UpstreamTls, ConfigError> {
    let ca = cx.optional_path(&f.of("upstream_ca"), &r.upstream_ca)?;
    let client_cert = cx.optional_path(&f.of("upstream_client_cert"), &r.upstream_client_cert)?;
    let client_key = cx.optional_path(&f.of("upstream_client_key"), &r.upstream_client_key)?;
    if client_cert.is_some() != client_key.is_some() {
        return Err(cx.at(
            &f.of("upstream_client_cert"),
            r.upstream_client_cert.as_ref().or(r.upstream_client_key.as_ref()),
            "upstream_client_cert and upstream_client_key go together",
        ));
    }
    if !upstream[0].https {
        for (field, v) in [("upstream_ca", &ca), ("upstream_client_cert", &client_cert)] {
            if v.is_some() {
                return Err(cx.invalid(&f.of(field), &r.upstream, format!("{field} needs an https upstream")));
            }
        }
    }
    Ok(UpstreamTls { ca, client_cert, client_key })
}

/// `upstream`: one node or a list, each checked, distinct, at most
/// [`MAX_UPSTREAM_NODES`], all of one scheme (so the TLS settings mean the
/// same for every node).
fn upstream_nodes(cx: &Cx<'_>, f: &Fields, r: &RawIssuer) -> Result<Vec<UpstreamUrl>, ConfigError> {
    let field = f.of("upstream");
    let nodes = match r.upstream.get_ref() {
        RawUpstream::One(s) => vec![cx.upstream(&field, &Text::new(r.upstream.span(), s.clone()))?],
        RawUpstream::Many(list) if list.is_empty() => {
            return Err(cx.invalid(
                &field,
                &r.upstream,
                "upstream is empty: give one origin, or several to fail over between",
            ))
        }
        RawUpstream::Many(list) => {
            if let Some(v) = list.get(MAX_UPSTREAM_NODES) {
                return Err(cx.invalid(
                    &format!("{field}[{MAX_UPSTREAM_NODES}]"),
                    v,
                    format!("at most {MAX_UPSTREAM_NODES} upstream nodes"),
                ));
            }
            let nodes = cx.distinct(&field, list, |field, v| cx.upstream(field, v).map(Some))?;
            let scheme = |u: &UpstreamUrl| (u.https, u.unix.is_some());
            if let Some(j) = nodes.iter().position(|u| scheme(u) != scheme(&nodes[0])) {
                return Err(cx.invalid(
                    &format!("{field}[{j}]"),
                    &list[j],
                    "every node of one issuer is reached the same way: all https, all http or all unix",
                ));
            }
            nodes
        }
    };
    Ok(nodes)
}

/// `upstream_bearer_token_file`: a readable, non-empty file of at most
/// [`MAX_BEARER_TOKEN_BYTES`] that is a valid header value; never sent in
/// clear across a network (https, a unix socket or loopback only).
fn bearer_token_file(
    cx: &Cx<'_>,
    f: &Fields,
    r: &RawIssuer,
    upstream: &[UpstreamUrl],
) -> Result<Option<PathBuf>, ConfigError> {
    let field = f.of("upstream_bearer_token_file");
    let Some(v) = r.upstream_bearer_token_file.as_ref() else { return Ok(None) };
    let path = cx.path(&field, v)?;
    let in_clear = upstream.iter().find(|u| !u.https && u.unix.is_none() && !is_loopback_authority(&u.authority));
    if let Some(u) = in_clear {
        return Err(cx.invalid(
            &field,
            v,
            format!("the token would cross the network in clear to {}: use an https upstream", u.origin),
        ));
    }
    let file = crate::files::read_small(&path, MAX_BEARER_TOKEN_BYTES).map_err(|e| cx.invalid(&field, v, e))?;
    if let Err(why) = crate::config::check_bearer_token(&file.text) {
        return Err(cx.invalid(&field, v, why));
    }
    Ok(Some(path))
}

/// `localhost`, `127.0.0.1:8200`, `[::1]:8200`.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
