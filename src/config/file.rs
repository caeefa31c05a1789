//! What the file may say: the TOML shape, one struct per table.
//!
//! Unknown keys are errors (`deny_unknown_fields`), so a typo never silently
//! falls back to a default. Every value that needs a check beyond its TOML
//! type is kept [`Spanned`], so its message can name the line; enumerated
//! words are read as strings here and turned into their enums by
//! validation, which can then list the accepted words. Nothing here decides
//! a default or a meaning: absent is `None` (or an empty list).
//!
//! A new key is one field here, one constant in `defaults`, one line in its
//! `validate` section.

use serde::Deserialize;
use toml::Spanned;

use super::context::Cx;
use super::ConfigError;

/// A string value with its place in the file.
pub(super) type Text = Spanned<String>;
/// An integer value with its place in the file.
pub(super) type Number = Spanned<i64>;

/// Parses the whole file, or says on which line it is not what it may be.
pub(super) fn read(cx: &Cx<'_>) -> Result<RawConfig, ConfigError> {
    toml::from_str(cx.text).map_err(|e| cx.syntax(e.span().map(|s| s.start), e.message()))
}

/// The file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server: Option<RawServer>,
    pub(super) cache: Option<RawCache>,
    pub(super) log: Option<RawLog>,
    pub(super) client_ip: Option<RawClientIp>,
    pub(super) rate_limit: Option<RawRateLimit>,
    pub(super) ip_allow: Option<RawIpAllow>,
    pub(super) tls: Option<RawTls>,
    #[serde(default)]
    pub(super) issuer: Vec<RawIssuer>,
}

/// `[server]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Text>,
    pub(super) admin_listen: Option<Text>,
    pub(super) public_url: Option<Text>,
    pub(super) max_connections: Option<Number>,
    pub(super) header_read_timeout: Option<Text>,
    pub(super) idle_timeout: Option<Text>,
    pub(super) shutdown_grace: Option<Text>,
    pub(super) max_header_bytes: Option<Number>,
    pub(super) max_headers: Option<Number>,
    pub(super) h2_max_concurrent_streams: Option<Number>,
    pub(super) max_connections_per_ip: Option<Number>,
    pub(super) listen_backlog: Option<Number>,
}

/// `[cache]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub(super) min_ttl: Option<Text>,
    pub(super) max_ttl: Option<Text>,
    pub(super) max_stale: Option<Text>,
    pub(super) negative_ttl: Option<Text>,
    pub(super) dir: Option<Text>,
    pub(super) max_dynamic_entries: Option<Number>,
}

/// `[log]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) access: Option<bool>,
    pub(super) denied_lines_per_second: Option<Number>,
}

/// `[client_ip]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientIp {
    pub(super) source: Option<Text>,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<Text>,
    pub(super) proxy_protocol_timeout: Option<Text>,
}

/// `[rate_limit]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) enabled: Option<bool>,
    pub(super) per_client: Option<Number>,
    pub(super) per_client_burst: Option<Number>,
    pub(super) global: Option<Number>,
    pub(super) global_burst: Option<Number>,
    pub(super) ipv6_prefix: Option<Number>,
    #[serde(default)]
    pub(super) exempt: Vec<Text>,
    pub(super) max_clients: Option<Number>,
}

/// `[ip_allow]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIpAllow {
    pub(super) mode: Option<Text>,
    pub(super) refresh: Option<Text>,
    pub(super) state_dir: Option<Text>,
    #[serde(default)]
    pub(super) source: Vec<RawRangeSource>,
}

/// `[[ip_allow.source]]`: exactly one of `file`, `url`, `cidrs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRangeSource {
    pub(super) name: Text,
    pub(super) format: Option<Text>,
    pub(super) file: Option<Text>,
    pub(super) url: Option<Text>,
    pub(super) cidrs: Option<Vec<Text>>,
    pub(super) admit: Option<bool>,
    #[serde(default)]
    pub(super) services: Vec<Text>,
    #[serde(default)]
    pub(super) regions: Vec<Text>,
    #[serde(default)]
    pub(super) scopes: Vec<Text>,
    #[serde(default)]
    pub(super) tags: Vec<Text>,
}

/// `[tls]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) mode: Option<Text>,
    pub(super) handshake_timeout: Option<Text>,
    pub(super) hsts: Option<Text>,
    pub(super) http_listen: Option<Text>,
    #[serde(default)]
    pub(super) certificate: Vec<RawCertificate>,
    pub(super) reload_interval: Option<Text>,
    pub(super) acme: Option<RawAcme>,
}

/// `[[tls.certificate]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub(super) cert: Text,
    pub(super) key: Text,
}

/// `[tls.acme]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcme {
    pub(super) domains: Vec<Text>,
    #[serde(default)]
    pub(super) contact: Vec<Text>,
    pub(super) directory: Option<Text>,
    pub(super) directory_ca: Option<Text>,
    pub(super) cache_dir: Option<Text>,
    pub(super) challenge: Option<Text>,
}

/// `[[issuer]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIssuer {
    pub(super) name: Text,
    pub(super) kind: Text,
    pub(super) upstream: Spanned<RawUpstream>,
    pub(super) upstream_host: Option<Text>,
    pub(super) upstream_forwarded_headers: Option<bool>,
    pub(super) upstream_bearer_token_file: Option<Text>,
    #[serde(default)]
    pub(super) namespaces: Option<Vec<Text>>,
    #[serde(default)]
    pub(super) providers: Vec<Text>,
    #[serde(default)]
    pub(super) paths: Vec<Text>,
    #[serde(default)]
    pub(super) hosts: Vec<Text>,
    pub(super) public_url: Option<Text>,
    pub(super) upstream_ca: Option<Text>,
    pub(super) upstream_client_cert: Option<Text>,
    pub(super) upstream_client_key: Option<Text>,
    pub(super) upstream_connect_timeout: Option<Text>,
    pub(super) upstream_timeout: Option<Text>,
    pub(super) max_document_bytes: Option<Number>,
    pub(super) strict_issuer: Option<bool>,
}

/// `upstream`: one origin, or a list of them tried in order.
pub(super) enum RawUpstream {
    /// `upstream = "https://vault:8200"` (its span is the outer value's).
    One(String),
    /// `upstream = ["https://vault-0:8200", "https://vault-1:8200"]`.
    Many(Vec<Text>),
}

/// As written, for messages: the string, or the list of strings.
impl std::fmt::Debug for RawUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawUpstream::One(s) => write!(f, "{s:?}"),
            RawUpstream::Many(list) => f.debug_list().entries(list.iter().map(|v| v.get_ref())).finish(),
        }
    }
}

impl<'de> Deserialize<'de> for RawUpstream {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RawUpstream;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an origin string or a list of origin strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawUpstream, E> {
                Ok(RawUpstream::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawUpstream, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<Text>()? {
                    out.push(v);
                }
                Ok(RawUpstream::Many(out))
            }
        }
        d.deserialize_any(Visit)
    }
}
