//! One validator per kind of value: durations, integers, socket addresses,
//! CIDRs, paths, URLs and origins, enumerated words, names, DNS names,
//! header values, namespaces and custom paths; and the two rules lists
//! share (a list that must be absent, entries that must be distinct). Each
//! kind is checked here and nowhere else, so the same text means the same
//! thing in every table, and its message is the same wherever it is refused.
//!
//! The `Cx` methods take a value with its place in the file and return
//! either the typed value or a [`ConfigError`] naming file, line, field and
//! value; the plain `is_*`/`check_*` functions are the rules themselves,
//! shared with the request path (namespace segments) and the tests.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::context::Cx;
use super::defaults::{
    Int, Interval, MAX_CUSTOM_PATH_BYTES, MAX_DNS_LABEL_LEN, MAX_DNS_NAME_LEN, MAX_NAMESPACE_DEPTH, MAX_NAME_LEN,
    MAX_UNIX_SOCKET_PATH, UNIX_UPSTREAM_HOST,
};
use super::file::{Number, Text};
use super::keyword::Keyword;
use super::{BearerTokenError, ConfigError, CustomPathError, Listen, ListenError, NamespaceError, UpstreamUrl};
use crate::net::ipset;

/// Vault path segments that can never be namespace names.
pub const RESERVED_NAMESPACES: &[&str] = &["root", "sys", "audit", "auth", "cubbyhole", "identity"];

impl Cx<'_> {
    /// A duration such as `"5s"` or `"250ms"`, at least `rule.min`;
    /// `rule.default` when absent.
    pub(super) fn duration(&self, field: &str, v: &Option<Text>, rule: Interval) -> Result<Duration, ConfigError> {
        let Some(v) = v else { return Ok(rule.default) };
        let d = humantime::parse_duration(v.get_ref().trim()).map_err(|e| {
            self.invalid(field, v, format!("not a duration ({e}); write e.g. \"5s\", \"250ms\", \"10m\", \"24h\""))
        })?;
        if d < rule.min {
            return Err(self.invalid(field, v, format!("must be at least {}", humantime::format_duration(rule.min))));
        }
        Ok(d)
    }

    /// An integer within `rule`'s inclusive range; `rule.default` when absent.
    pub(super) fn int<T>(&self, field: &str, v: &Option<Number>, rule: Int<T>) -> Result<T, ConfigError>
    where
        T: TryFrom<i64> + PartialOrd + fmt::Display + Copy,
    {
        let Some(v) = v else { return Ok(rule.default) };
        T::try_from(*v.get_ref())
            .ok()
            .filter(|n| (rule.min..=rule.max).contains(n))
            .ok_or_else(|| self.invalid(field, v, format!("must be between {} and {}", rule.min, rule.max)))
    }

    /// `IP:port`.
    pub(super) fn socket_addr(&self, field: &str, v: &Text) -> Result<SocketAddr, ConfigError> {
        v.get_ref().parse().map_err(|_| {
            self.invalid(field, v, "not a socket address; write \"IP:port\", e.g. \"0.0.0.0:443\" or \"[::]:443\"")
        })
    }

    /// A listener: `IP:port`, `systemd` or `systemd:NAME`.
    pub(super) fn listen(&self, field: &str, v: &Text) -> Result<Listen, ConfigError> {
        if v.get_ref().starts_with("systemd") {
            v.get_ref().parse().map_err(|e: ListenError| self.invalid(field, v, e))
        } else {
            self.socket_addr(field, v).map(Listen::Addr)
        }
    }

    /// [`listen`](Self::listen), `default` when absent.
    pub(super) fn listen_or(&self, field: &str, v: &Option<Text>, default: SocketAddr) -> Result<Listen, ConfigError> {
        v.as_ref().map_or(Ok(Listen::Addr(default)), |v| self.listen(field, v))
    }

    /// A list of CIDRs or bare addresses; errors name the index.
    pub(super) fn nets(&self, field: &str, list: &[Text]) -> Result<Vec<IpNet>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(j, v)| {
                ipset::parse_net(v.get_ref()).ok_or_else(|| {
                    self.invalid(
                        &format!("{field}[{j}]"),
                        v,
                        "not a CIDR or address, e.g. \"10.0.0.0/8\" or \"2001:db8::/32\"",
                    )
                })
            })
            .collect()
    }

    /// A file or folder. Relative paths are taken relative to the
    /// configuration file, as nginx and Caddy users expect, not to whatever
    /// the working directory is.
    pub(super) fn path(&self, field: &str, v: &Text) -> Result<PathBuf, ConfigError> {
        if v.get_ref().trim().is_empty() {
            return Err(self.invalid(field, v, "must not be empty"));
        }
        let p = PathBuf::from(v.get_ref());
        Ok(if p.is_relative() { self.path.parent().unwrap_or(Path::new(".")).join(p) } else { p })
    }

    /// An optional file where `""` means "none" (so a template can blank it).
    pub(super) fn optional_path(&self, field: &str, v: &Option<Text>) -> Result<Option<PathBuf>, ConfigError> {
        v.as_ref().filter(|v| !v.get_ref().is_empty()).map(|v| self.path(field, v)).transpose()
    }

    /// A URL the proxy fetches: https, or plain http where `plain` allows.
    pub(super) fn url(&self, field: &str, v: &Text, plain: PlainHttp) -> Result<String, ConfigError> {
        let uri: http::Uri = v.get_ref().parse().map_err(|_| self.invalid(field, v, "not a URL"))?;
        let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match (uri.scheme_str(), plain) {
            (Some("https"), _) => Ok(v.get_ref().clone()),
            (Some("http"), PlainHttp::ToLoopback) if loopback => Ok(v.get_ref().clone()),
            (_, PlainHttp::ToLoopback) => {
                Err(self.invalid(field, v, "must be an https URL (plain http only to a loopback address)"))
            }
            (_, PlainHttp::Never) => Err(self.invalid(field, v, "must be an https URL")),
        }
    }

    /// The origin this proxy is reached at: `https://host[:port]`, compared
    /// byte for byte with what issuers write, so no trailing slash.
    pub(super) fn public_url(&self, field: &str, v: &Text) -> Result<String, ConfigError> {
        let s = v.get_ref();
        if s.ends_with('/') {
            return Err(self.invalid(field, v, "remove the trailing slash: issuers are compared byte for byte"));
        }
        split_origin(s).ok_or_else(|| {
            self.invalid(
                field,
                v,
                "must be an origin such as \"https://wif.example.com\": no path, query or credentials",
            )
        })?;
        Ok(s.clone())
    }

    /// An issuer node: `http(s)://host[:port]`, or `unix:/absolute/path.sock`.
    pub(super) fn upstream(&self, field: &str, v: &Text) -> Result<UpstreamUrl, ConfigError> {
        let s = v.get_ref();
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') || path.ends_with('/') || path.contains('\0') {
                return Err(self.invalid(field, v, "a unix socket upstream is unix:/absolute/path/to.sock"));
            }
            if path.len() > MAX_UNIX_SOCKET_PATH {
                return Err(self.invalid(
                    field,
                    v,
                    format!("unix socket paths are at most {MAX_UNIX_SOCKET_PATH} bytes"),
                ));
            }
            return Ok(UpstreamUrl {
                https: false,
                authority: UNIX_UPSTREAM_HOST.to_string(),
                origin: s.clone(),
                unix: Some(PathBuf::from(path)),
            });
        }
        if let Some((scheme, _)) = s.split_once("://").filter(|(scheme, _)| !matches!(*scheme, "http" | "https")) {
            return Err(self.invalid(
                field,
                v,
                format!("unknown scheme {scheme:?}: write http://host:port, https://host:port or unix:/path/to.sock"),
            ));
        }
        let (https, rest) = split_origin(s).ok_or_else(|| {
            self.invalid(
                field,
                v,
                "must be an origin: http://host:port or https://host:port, with no path, query or credentials",
            )
        })?;
        Ok(UpstreamUrl { https, authority: rest.to_string(), origin: s.clone(), unix: None })
    }

    /// A Host header value: a DNS name or IP address, with an optional
    /// port, lower-cased.
    pub(super) fn authority(&self, field: &str, v: &Text) -> Result<String, ConfigError> {
        let text = v.get_ref().to_ascii_lowercase();
        let bad = || self.invalid(field, v, "a Host is host or host:port (a DNS name or an IP address), nothing else");
        let uri: http::Uri = format!("http://{text}/").parse().map_err(|_| bad())?;
        let authority = uri.authority().ok_or_else(bad)?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        if authority.as_str() != text || text.contains('@') || !(is_dns_name(host) || host.parse::<IpAddr>().is_ok()) {
            return Err(bad());
        }
        Ok(text)
    }

    /// One of an enum's words; `default` when absent.
    pub(super) fn keyword<T: Keyword>(&self, field: &str, v: &Option<Text>, default: T) -> Result<T, ConfigError> {
        v.as_ref().map_or(Ok(default), |v| self.word(field, v))
    }

    /// One of an enum's words; an unknown one is refused with the list.
    pub(super) fn word<T: Keyword>(&self, field: &str, v: &Text) -> Result<T, ConfigError> {
        T::from_word(v.get_ref()).ok_or_else(|| self.invalid(field, v, T::expected()))
    }

    /// Refuses a list the rest of the section makes meaningless (a filter a
    /// format has not, a list a kind ignores): such a list is a mistake.
    pub(super) fn absent(&self, field: &str, list: &[Text], why: &str) -> Result<(), ConfigError> {
        match list.first() {
            Some(v) => Err(self.invalid(field, v, why)),
            None => Ok(()),
        }
    }

    /// Each entry of a list, checked by `entry` (given `field[index]`; `None`
    /// to pass over an entry); an entry given twice is refused.
    pub(super) fn distinct<T: PartialEq>(
        &self,
        field: &str,
        list: &[Text],
        mut entry: impl FnMut(&str, &Text) -> Result<Option<T>, ConfigError>,
    ) -> Result<Vec<T>, ConfigError> {
        let mut out: Vec<T> = Vec::with_capacity(list.len());
        for (j, v) in list.iter().enumerate() {
            let field = format!("{field}[{j}]");
            let Some(value) = entry(&field, v)? else { continue };
            if out.contains(&value) {
                return Err(self.invalid(&field, v, "listed twice"));
            }
            out.push(value);
        }
        Ok(out)
    }

    /// A name (issuer, range source): see [`is_name`].
    pub(super) fn name(&self, field: &str, v: &Text) -> Result<String, ConfigError> {
        if !is_name(v.get_ref()) {
            return Err(self.invalid(field, v, format!("must be 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 - _")));
        }
        Ok(v.get_ref().clone())
    }

    /// A host the proxy answers for: a DNS name, lower-cased.
    pub(super) fn host(&self, field: &str, v: &Text) -> Result<String, ConfigError> {
        let host = v.get_ref().to_ascii_lowercase();
        if !is_dns_name(&host) {
            return Err(self.invalid(
                field,
                v,
                "a host is a DNS name (letters, digits, '-', '.'), without port or scheme",
            ));
        }
        Ok(host)
    }

    /// A name a certificate is issued for: a DNS name with at least one
    /// dot, lower-cased.
    pub(super) fn fqdn(&self, field: &str, v: &Text) -> Result<String, ConfigError> {
        let name = v.get_ref().to_ascii_lowercase();
        if !(name.contains('.') && is_dns_name(&name)) {
            return Err(self.invalid(field, v, "a fully qualified DNS name such as \"wif.example.com\""));
        }
        Ok(name)
    }

    /// An HTTP header value the proxy sends as written.
    pub(super) fn header_value(&self, field: &str, v: &Text) -> Result<String, ConfigError> {
        http::HeaderValue::from_str(v.get_ref()).map_err(|_| self.invalid(field, v, "not a valid header value"))?;
        Ok(v.get_ref().clone())
    }
}

/// Where a fetched URL may be plain http.
#[derive(Debug, Clone, Copy)]
pub(super) enum PlainHttp {
    /// Nowhere: https only.
    Never,
    /// To a loopback address (local mirrors and tests), nowhere else.
    ToLoopback,
}

/// A name: 1 to [`MAX_NAME_LEN`] characters of `A-Z a-z 0-9 - _`.
pub(super) fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Names joined by single dots, [`MAX_NAME_LEN`] at most in all (Vault OIDC
/// provider names): no leading, trailing or double dot.
pub(super) fn is_dotted_name(s: &str) -> bool {
    s.len() <= MAX_NAME_LEN && s.split('.').all(is_name)
}

/// A lower-case DNS name (RFC 1123): at most [`MAX_DNS_NAME_LEN`] bytes of
/// dot-separated labels, each 1 to [`MAX_DNS_LABEL_LEN`] of `a-z 0-9 -`,
/// neither starting nor ending with `-`. No trailing dot, no wildcard.
pub(super) fn is_dns_name(s: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= MAX_DNS_LABEL_LEN
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    s.len() <= MAX_DNS_NAME_LEN && s.split('.').all(label)
}

/// Splits `http(s)://authority` into (is_https, authority); `None` when it has
/// anything beyond an origin.
pub(super) fn split_origin(s: &str) -> Option<(bool, &str)> {
    let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = s.strip_prefix("http://") {
        (false, r)
    } else {
        return None;
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ', '\\', '%']) {
        return None;
    }
    // Let the http crate judge the authority's syntax (ports, IPv6 brackets).
    let uri: http::Uri = s.parse().ok()?;
    let host = uri.host()?;
    if host.is_empty() {
        return None;
    }
    Some((https, rest))
}

/// Checks one explicit namespace: `""` (root), `a`, `a/b`, ... at most
/// [`MAX_NAMESPACE_DEPTH`] deep, each segment [`is_namespace_segment`] and
/// none of [`RESERVED_NAMESPACES`].
pub fn check_namespace(ns: &str) -> Result<(), NamespaceError> {
    if ns.is_empty() {
        return Ok(());
    }
    if ns.contains("..") {
        return Err(NamespaceError::DotDot);
    }
    if ns.contains("//") {
        return Err(NamespaceError::EmptySegment);
    }
    if ns.contains('%') {
        return Err(NamespaceError::Encoded);
    }
    if ns.chars().any(char::is_whitespace) {
        return Err(NamespaceError::Whitespace);
    }
    if ns.starts_with('/') || ns.ends_with('/') {
        return Err(NamespaceError::EdgeSlash);
    }
    if ns.split('/').count() > MAX_NAMESPACE_DEPTH {
        return Err(NamespaceError::TooDeep);
    }
    for seg in ns.split('/') {
        if let Some(r) = RESERVED_NAMESPACES.iter().find(|r| seg.eq_ignore_ascii_case(r)) {
            return Err(NamespaceError::Reserved(r));
        }
        if !is_namespace_segment(seg) {
            return Err(NamespaceError::Segment(seg.to_string()));
        }
    }
    Ok(())
}

/// The strict namespace segment charset: a [name](is_name) starting with a
/// letter or digit. The `*` wildcard's regex uses the same.
pub fn is_namespace_segment(seg: &str) -> bool {
    is_name(seg) && seg.as_bytes()[0].is_ascii_alphanumeric()
}

/// The token in a bearer token file's content: the content without
/// surrounding whitespace (a trailing newline is common), one run of
/// visible ASCII.
pub fn check_bearer_token(content: &str) -> Result<&str, BearerTokenError> {
    let token = content.trim();
    if token.is_empty() {
        return Err(BearerTokenError::Empty);
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BearerTokenError::NotAToken);
    }
    Ok(token)
}

/// Checks a `custom` public path: absolute, no query/fragment/encoding, no
/// dot segments, no empty segments, no trailing slash.
pub fn check_custom_path(p: &str) -> Result<(), CustomPathError> {
    if !p.starts_with('/') || p.len() < 2 {
        return Err(CustomPathError::NotAbsolute);
    }
    if p.len() > MAX_CUSTOM_PATH_BYTES {
        return Err(CustomPathError::TooLong);
    }
    if p.ends_with('/') {
        return Err(CustomPathError::TrailingSlash);
    }
    if p.contains("//") {
        return Err(CustomPathError::EmptySegment);
    }
    if let Some(c) = p.chars().find(|c| !(c.is_ascii_alphanumeric() || "-._~!$&'()*+,=:@/".contains(*c))) {
        return Err(CustomPathError::Char(c));
    }
    if p.split('/').any(|s| s == "." || s == "..") {
        return Err(CustomPathError::DotSegment);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_rules() {
        for bad in ["a/../b", "a//b", "a%2fb", "a b", "/a", "a/", "sys", "a/identity", "ROOT", "a.b"] {
            assert!(check_namespace(bad).is_err(), "{bad} should be rejected");
        }
        for good in ["", "ns1", "ns1/team-a", "a_b/c-d/e"] {
            assert!(check_namespace(good).is_ok(), "{good} should be accepted");
        }
        assert_eq!(check_namespace("a/b/c/d/e/f/g/h/i"), Err(NamespaceError::TooDeep));
        assert_eq!(
            check_namespace("ok/-x").unwrap_err().to_string(),
            "namespace segment \"-x\" must be 1-64 characters of A-Z a-z 0-9 - _, starting with a letter or digit"
        );
        assert_eq!(
            check_namespace("a/Sys").unwrap_err().to_string(),
            "\"sys\" is a reserved Vault name, not a namespace"
        );
    }

    #[test]
    fn custom_paths() {
        assert!(check_custom_path("/.well-known/openid-configuration").is_ok());
        for bad in ["keys", "/a/", "/a//b", "/a/../b", "/a?x", "/a%2f", "/a#b", "/a\\b", "/"] {
            assert!(check_custom_path(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(
            check_custom_path(&format!("/{}", "a".repeat(1024))).unwrap_err().to_string(),
            "longer than 1024 bytes"
        );
        assert_eq!(
            check_custom_path("/a?x").unwrap_err().to_string(),
            "must not contain '?': paths are matched byte for byte, unencoded, without query"
        );
    }

    #[test]
    fn origins() {
        assert_eq!(split_origin("https://wif.example.com"), Some((true, "wif.example.com")));
        assert_eq!(split_origin("http://[::1]:8200"), Some((false, "[::1]:8200")));
        for bad in ["wif.example.com", "https://", "https://a/b", "https://u@a", "ftp://a", "https://a?b"] {
            assert_eq!(split_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn names() {
        for good in ["v", "vault-1", "A_b", &"n".repeat(64)] {
            assert!(is_name(good), "{good}");
        }
        for bad in ["", "a.b", "a b", "ä", &"n".repeat(65)] {
            assert!(!is_name(bad), "{bad}");
        }
        for good in ["p", "team.a", "a-b_c.d"] {
            assert!(is_dotted_name(good), "{good}");
        }
        for bad in ["", ".a", "a.", "a..b", "a/b", &"n".repeat(65)] {
            assert!(!is_dotted_name(bad), "{bad}");
        }
        assert!(is_namespace_segment("a_") && !is_namespace_segment("_a") && !is_namespace_segment(""));
    }

    #[test]
    fn dns_names() {
        for good in ["wif", "wif.example.com", "a-b.example", "1.example", &format!("{}.com", "a".repeat(63))] {
            assert!(is_dns_name(good), "{good}");
        }
        let long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(62)].join(".");
        assert_eq!(long.len(), 254);
        for bad in ["", ".a", "a.", "a..b", "-a.com", "a-.com", "a_b.com", "A.com", "*.a.com", "a:80", &long] {
            assert!(!is_dns_name(bad), "{bad}");
        }
        assert!(is_dns_name(&long[1..]));
    }
}
