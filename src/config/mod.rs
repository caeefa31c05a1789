//! Configuration: one TOML file, read as plain data and validated completely
//! up front.
//!
//! The raw structs mirror the file (`deny_unknown_fields`, spans kept for every
//! value that needs a semantic check) and exist only inside this module. What
//! leaves it is [`Config`]: fully defaulted, typed and checked, so the rest of
//! the proxy never has to wonder whether a value is sane. Every error names the
//! file, the line, the field and the offending value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::net::ipset::{self, IpSet};

/// Vault path segments that can never be namespace names.
pub const RESERVED_NAMESPACES: &[&str] = &["root", "sys", "audit", "auth", "cubbyhole", "identity"];

/// The deepest namespace nesting the `*` wildcard accepts.
pub const MAX_NAMESPACE_DEPTH: usize = 8;

/// Longest single namespace segment or provider name we accept.
pub const MAX_NAME_LEN: usize = 64;

/// A validated, immutable configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from (for messages and reloads).
    pub source: PathBuf,
    pub server: ServerConfig,
    pub cache: CacheConfig,
    pub log: LogConfig,
    pub client_ip: ClientIpConfig,
    pub rate_limit: RateLimitConfig,
    pub ip_allow: IpAllowConfig,
    pub tls: TlsConfig,
    pub issuers: Vec<IssuerConfig>,
}

/// TLS on the public listener (see `tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// A connection must finish its TLS handshake within this.
    pub handshake_timeout: Duration,
    /// `Strict-Transport-Security` value on TLS responses; `None` to omit.
    pub hsts: Option<String>,
    /// Optional plain-HTTP listener: ACME HTTP-01, redirects for allowlisted paths.
    pub http_listen: Option<SocketAddr>,
    /// `files` mode: certificate chains and keys; hosts come from their SANs.
    pub certificates: Vec<CertificateFiles>,
    /// How often certificate files are checked for changes.
    pub reload_interval: Duration,
    /// `acme` mode settings.
    pub acme: Option<AcmeSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Off,
    Files,
    Acme,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    TlsAlpn01,
    Http01,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// One certificate per domain (SNI picks it).
    pub domains: Vec<String>,
    /// `mailto:` URIs.
    pub contact: Vec<String>,
    /// The ACME directory URL.
    pub directory: String,
    /// Extra trust root for the directory (Pebble, step-ca).
    pub directory_ca: Option<PathBuf>,
    /// Account and certificates, written atomically with mode 0600.
    pub cache_dir: PathBuf,
    pub challenge: AcmeChallenge,
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Where client addresses come from (see `edge::clientip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIpConfig {
    pub source: ClientIpSource,
    pub trusted_proxies: IpSet,
    pub proxy_protocol_timeout: Duration,
}

/// Which address is the client's: `client_ip.source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIpSource {
    Peer,
    ProxyProtocol,
    XForwardedFor,
}

/// Request rate limits (see `ratelimit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Sustained requests per second per client address (IPv6: per prefix).
    pub per_client: u32,
    pub per_client_burst: u32,
    /// Sustained requests per second for all clients together.
    pub global: u32,
    pub global_burst: u32,
    pub ipv6_prefix: u8,
    pub exempt: IpSet,
    /// Bound on tracked client addresses; beyond it new ones share a bucket.
    pub max_clients: usize,
}

/// What the source-address allowlist does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpAllowMode {
    Off,
    /// Log and count what would be denied, deny nothing.
    Report,
    Enforce,
}

/// The source-address allowlist (see `ipranges`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpAllowConfig {
    pub mode: IpAllowMode,
    /// How often URL sources are fetched again.
    pub refresh: Duration,
    /// Where fetched URL sources are kept (last good copy).
    pub state_dir: Option<PathBuf>,
    pub sources: Vec<RangeSourceConfig>,
}

/// The published range formats wif-proxy reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeFormat {
    /// One CIDR or address per line, `#` comments (Cloudflare's lists).
    Cidrs,
    /// AWS `ip-ranges.json`.
    Aws,
    /// GCP `cloud.json`.
    Gcp,
    /// Google `goog.json`.
    Goog,
    /// Azure Service Tags JSON.
    Azure,
    /// Oracle `public_ip_ranges.json`.
    Oracle,
}

impl RangeFormat {
    pub const NAMES: &'static str = "cidrs, aws, gcp, goog, azure, oracle";

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cidrs" => Self::Cidrs,
            "aws" => Self::Aws,
            "gcp" => Self::Gcp,
            "goog" => Self::Goog,
            "azure" => Self::Azure,
            "oracle" => Self::Oracle,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cidrs => "cidrs",
            Self::Aws => "aws",
            Self::Gcp => "gcp",
            Self::Goog => "goog",
            Self::Azure => "azure",
            Self::Oracle => "oracle",
        }
    }
}

impl RangeSourceConfig {
    /// A source without filters whose data is handed to `ipranges::parse`
    /// directly (benchmarks, tests, tools).
    pub fn unfiltered(name: &str, format: RangeFormat) -> RangeSourceConfig {
        RangeSourceConfig {
            name: name.to_string(),
            format,
            location: RangeLocation::Inline(Vec::new()),
            services: Vec::new(),
            regions: Vec::new(),
            scopes: Vec::new(),
            tags: Vec::new(),
        }
    }
}

/// Where a range source's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeLocation {
    File(PathBuf),
    Url(String),
    Inline(Vec<IpNet>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSourceConfig {
    pub name: String,
    pub format: RangeFormat,
    pub location: RangeLocation,
    /// AWS `service` values (e.g. `EC2`, `AMAZON`); empty = all.
    pub services: Vec<String>,
    /// AWS or Oracle regions; empty = all.
    pub regions: Vec<String>,
    /// GCP scopes; empty = all.
    pub scopes: Vec<String>,
    /// Azure service tag names (`AzureActiveDirectory`, `AzureCloud.westeurope`)
    /// or Oracle tags (`OCI`); empty = all.
    pub tags: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Origin (`scheme://host[:port]`, no path, no trailing slash) the cloud
    /// providers use to reach this proxy.
    pub public_url: String,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Upper bound on request header bytes (HTTP/1 read buffer, h2 header list).
    pub max_header_bytes: usize,
    /// Upper bound on the number of request headers (HTTP/1).
    pub max_headers: usize,
    pub h2_max_concurrent_streams: u32,
    /// Open connections allowed per client address.
    pub max_connections_per_ip: usize,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub max_stale: Duration,
    pub negative_ttl: Duration,
    pub dir: Option<PathBuf>,
    /// Bound on cache entries created for `*`-namespace documents.
    pub max_dynamic_entries: usize,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// One line per request on the `access` target.
    pub access: bool,
    /// At most this many access-log lines a second for requests the proxy
    /// denied (the rest are counted and reported in one summary line), so a
    /// flood of hostile requests cannot become a logging storm. 0 = none.
    pub denied_lines_per_second: usize,
}

/// What kind of issuer sits behind the proxy; decides the public path set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerKind {
    VaultPluginWif,
    VaultIdentity,
    VaultOidcProvider,
    Spire,
    Custom,
}

impl IssuerKind {
    pub const NAMES: &'static str = "vault-plugin-wif, vault-identity, vault-oidc-provider, spire, custom";

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "vault-plugin-wif" => Self::VaultPluginWif,
            "vault-identity" => Self::VaultIdentity,
            "vault-oidc-provider" => Self::VaultOidcProvider,
            "spire" => Self::Spire,
            "custom" => Self::Custom,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::VaultPluginWif => "vault-plugin-wif",
            Self::VaultIdentity => "vault-identity",
            Self::VaultOidcProvider => "vault-oidc-provider",
            Self::Spire => "spire",
            Self::Custom => "custom",
        }
    }

    pub fn is_vault(self) -> bool {
        matches!(self, Self::VaultPluginWif | Self::VaultIdentity | Self::VaultOidcProvider)
    }
}

/// Which Vault namespaces an issuer publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// Explicit namespaces, `""` for root, else `a` or `a/b` (no slashes at the ends).
    pub listed: Vec<String>,
    /// `"*"`: any valid namespace (root included), matched per request.
    pub wildcard: bool,
}

#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub name: String,
    pub kind: IssuerKind,
    pub upstream: UpstreamUrl,
    pub namespaces: Namespaces,
    pub providers: Vec<String>,
    pub paths: Vec<String>,
    /// Lower-cased host names; empty means "every host".
    pub hosts: Vec<String>,
    /// Origin this issuer is published under (defaults to `server.public_url`).
    pub public_url: String,
    pub upstream_ca: Option<PathBuf>,
    pub upstream_client_cert: Option<PathBuf>,
    pub upstream_client_key: Option<PathBuf>,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub max_document_bytes: usize,
    /// Refuse to serve a discovery document whose `issuer`/`jwks_uri` do not
    /// match what this proxy publishes.
    pub strict_issuer: bool,
}

/// An upstream origin: `http(s)://host[:port]`, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub https: bool,
    /// `host:port` or `host` exactly as written (used as the Host header).
    pub authority: String,
    /// `scheme://authority`, the prefix requests are built on.
    pub origin: String,
}

/// Everything that can be wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax { path: String, line: usize, message: String },
    #[error("{path}:{line}: {field} = {value}: {message}")]
    Invalid { path: String, line: usize, field: String, value: String, message: String },
    #[error("{path}: {message}")]
    Whole { path: String, message: String },
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(path, &text)
    }

    /// Validates `text` as if it had been read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let cx = Cx { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| cx.line_of(s.start)).unwrap_or(1);
            // toml's type errors do not name the key: quote the line instead.
            let message = match text.lines().nth(line - 1).map(str::trim).filter(|l| !l.is_empty()) {
                Some(l) => format!("{} (in `{}`)", e.message().trim(), l.chars().take(120).collect::<String>()),
                None => e.message().trim().to_string(),
            };
            ConfigError::Syntax { path: path.display().to_string(), line, message }
        })?;
        cx.validate(raw)
    }
}

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Option<RawServer>,
    cache: Option<RawCache>,
    log: Option<RawLog>,
    client_ip: Option<RawClientIp>,
    rate_limit: Option<RawRateLimit>,
    ip_allow: Option<RawIpAllow>,
    tls: Option<RawTls>,
    #[serde(default)]
    issuer: Vec<RawIssuer>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    mode: Option<Spanned<String>>,
    handshake_timeout: Option<Spanned<String>>,
    hsts: Option<Spanned<String>>,
    http_listen: Option<Spanned<String>>,
    #[serde(default)]
    certificate: Vec<RawCertificate>,
    reload_interval: Option<Spanned<String>>,
    acme: Option<RawAcme>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    cert: Spanned<String>,
    key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcme {
    domains: Vec<Spanned<String>>,
    #[serde(default)]
    contact: Vec<Spanned<String>>,
    directory: Option<Spanned<String>>,
    directory_ca: Option<Spanned<String>>,
    cache_dir: Option<Spanned<String>>,
    challenge: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawClientIp {
    source: Option<Spanned<String>>,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
    proxy_protocol_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    enabled: Option<bool>,
    per_client: Option<Spanned<i64>>,
    per_client_burst: Option<Spanned<i64>>,
    global: Option<Spanned<i64>>,
    global_burst: Option<Spanned<i64>>,
    ipv6_prefix: Option<Spanned<i64>>,
    #[serde(default)]
    exempt: Vec<Spanned<String>>,
    max_clients: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIpAllow {
    mode: Option<Spanned<String>>,
    refresh: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
    #[serde(default)]
    source: Vec<RawRangeSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRangeSource {
    name: Spanned<String>,
    format: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    cidrs: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    services: Vec<Spanned<String>>,
    #[serde(default)]
    regions: Vec<Spanned<String>>,
    #[serde(default)]
    scopes: Vec<Spanned<String>>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    admin_listen: Option<Spanned<String>>,
    public_url: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    header_read_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
    max_header_bytes: Option<Spanned<i64>>,
    max_headers: Option<Spanned<i64>>,
    h2_max_concurrent_streams: Option<Spanned<i64>>,
    max_connections_per_ip: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCache {
    min_ttl: Option<Spanned<String>>,
    max_ttl: Option<Spanned<String>>,
    max_stale: Option<Spanned<String>>,
    negative_ttl: Option<Spanned<String>>,
    dir: Option<Spanned<String>>,
    max_dynamic_entries: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    access: Option<bool>,
    denied_lines_per_second: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    name: Spanned<String>,
    kind: Spanned<String>,
    upstream: Spanned<String>,
    #[serde(default)]
    namespaces: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    providers: Vec<Spanned<String>>,
    #[serde(default)]
    paths: Vec<Spanned<String>>,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
    public_url: Option<Spanned<String>>,
    upstream_ca: Option<Spanned<String>>,
    upstream_client_cert: Option<Spanned<String>>,
    upstream_client_key: Option<Spanned<String>>,
    upstream_connect_timeout: Option<Spanned<String>>,
    upstream_timeout: Option<Spanned<String>>,
    max_document_bytes: Option<Spanned<i64>>,
    strict_issuer: Option<bool>,
}

// ---------------------------------------------------------------------------
// Validation.

/// Validation context: knows the file so every error can name it and a line.
struct Cx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Cx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn invalid<T: std::fmt::Debug>(&self, field: &str, value: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.display().to_string(),
            line: self.line_of(value.span().start),
            field: field.to_string(),
            value: format!("{:?}", value.get_ref()),
            message: message.into(),
        }
    }

    fn whole(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Whole { path: self.path.display().to_string(), message: message.into() }
    }

    fn duration(
        &self,
        field: &str,
        v: &Option<Spanned<String>>,
        default: Duration,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(v) = v else { return Ok(default) };
        let d = humantime::parse_duration(v.get_ref().trim()).map_err(|e| {
            self.invalid(field, v, format!("not a duration ({e}); write e.g. \"5s\", \"250ms\", \"10m\", \"24h\""))
        })?;
        if d < min {
            return Err(self.invalid(field, v, format!("must be at least {}", humantime::format_duration(min))));
        }
        Ok(d)
    }

    fn int(
        &self,
        field: &str,
        v: &Option<Spanned<i64>>,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
    ) -> Result<usize, ConfigError> {
        let Some(v) = v else { return Ok(default) };
        usize::try_from(*v.get_ref())
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| self.invalid(field, v, format!("must be between {} and {}", range.start(), range.end())))
    }

    fn addr(&self, field: &str, v: &Option<Spanned<String>>, default: &str) -> Result<SocketAddr, ConfigError> {
        let Some(v) = v else {
            return Ok(default.parse().expect("default address is valid"));
        };
        v.get_ref().parse().map_err(|_| {
            self.invalid(field, v, "not a socket address; write \"IP:port\", e.g. \"0.0.0.0:443\" or \"[::]:443\"")
        })
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let s = raw.server.unwrap_or_default();
        let listen = self.addr("server.listen", &s.listen, "127.0.0.1:8080")?;
        let admin_listen = self.addr("server.admin_listen", &s.admin_listen, "127.0.0.1:9901")?;
        if listen == admin_listen && listen.port() != 0 {
            let v = s.admin_listen.as_ref().or(s.listen.as_ref());
            return Err(match v {
                Some(v) => self.invalid(
                    "server.admin_listen",
                    v,
                    "must differ from server.listen: the admin endpoints are never public",
                ),
                None => self.whole("server.admin_listen must differ from server.listen"),
            });
        }
        let public_url = match &s.public_url {
            Some(v) => self.public_url("server.public_url", v)?,
            None => return Err(self.whole("server.public_url is required: the https origin cloud providers use to reach this proxy, e.g. \"https://wif.example.com\"")),
        };
        let ms = Duration::from_millis;
        let server = ServerConfig {
            listen,
            admin_listen,
            public_url,
            max_connections: self.int("server.max_connections", &s.max_connections, 10_000, 1..=1_000_000)?,
            header_read_timeout: self.duration(
                "server.header_read_timeout",
                &s.header_read_timeout,
                Duration::from_secs(5),
                ms(100),
            )?,
            idle_timeout: self.duration("server.idle_timeout", &s.idle_timeout, Duration::from_secs(60), ms(100))?,
            shutdown_grace: self.duration(
                "server.shutdown_grace",
                &s.shutdown_grace,
                Duration::from_secs(10),
                Duration::ZERO,
            )?,
            max_header_bytes: self.int(
                "server.max_header_bytes",
                &s.max_header_bytes,
                16 * 1024,
                8 * 1024..=1024 * 1024,
            )?,
            max_headers: self.int("server.max_headers", &s.max_headers, 64, 8..=1024)?,
            h2_max_concurrent_streams: self.int(
                "server.h2_max_concurrent_streams",
                &s.h2_max_concurrent_streams,
                100,
                1..=10_000,
            )? as u32,
            max_connections_per_ip: self.int(
                "server.max_connections_per_ip",
                &s.max_connections_per_ip,
                256,
                1..=1_000_000,
            )?,
        };

        let c = raw.cache.unwrap_or_default();
        let cache = CacheConfig {
            min_ttl: self.duration("cache.min_ttl", &c.min_ttl, Duration::from_secs(30), ms(100))?,
            max_ttl: self.duration("cache.max_ttl", &c.max_ttl, Duration::from_secs(300), ms(100))?,
            max_stale: self.duration(
                "cache.max_stale",
                &c.max_stale,
                Duration::from_secs(24 * 3600),
                Duration::ZERO,
            )?,
            negative_ttl: self.duration(
                "cache.negative_ttl",
                &c.negative_ttl,
                Duration::from_secs(10),
                Duration::ZERO,
            )?,
            dir: c.dir.as_ref().map(|d| self.path_value("cache.dir", d)).transpose()?,
            max_dynamic_entries: self.int("cache.max_dynamic_entries", &c.max_dynamic_entries, 1024, 1..=1_000_000)?,
        };
        if cache.min_ttl > cache.max_ttl {
            return Err(match &c.min_ttl {
                Some(v) => self.invalid("cache.min_ttl", v, "must not exceed cache.max_ttl"),
                None => self.whole("cache.max_ttl must be at least cache.min_ttl (30s by default)"),
            });
        }

        let raw_log = raw.log.unwrap_or_default();
        let log = LogConfig {
            access: raw_log.access.unwrap_or(true),
            denied_lines_per_second: self.int(
                "log.denied_lines_per_second",
                &raw_log.denied_lines_per_second,
                100,
                0..=1_000_000,
            )?,
        };
        let client_ip = self.client_ip(raw.client_ip.unwrap_or_default())?;
        let rate_limit = self.rate_limit(raw.rate_limit.unwrap_or_default())?;
        let ip_allow = self.ip_allow(raw.ip_allow.unwrap_or_default())?;
        let tls = self.tls(raw.tls.unwrap_or_default(), &server)?;

        if raw.issuer.is_empty() {
            return Err(self.whole("no [[issuer]] is configured: there would be nothing to serve"));
        }
        let mut issuers: Vec<IssuerConfig> = Vec::with_capacity(raw.issuer.len());
        for (i, ri) in raw.issuer.iter().enumerate() {
            let issuer = self.issuer(i, ri, &server.public_url)?;
            if issuers.iter().any(|o| o.name == issuer.name) {
                return Err(self.invalid(
                    &format!("issuer[{i}].name"),
                    &ri.name,
                    "another issuer already has this name",
                ));
            }
            issuers.push(issuer);
        }

        Ok(Config {
            source: self.path.to_path_buf(),
            server,
            cache,
            log,
            client_ip,
            rate_limit,
            ip_allow,
            tls,
            issuers,
        })
    }

    fn tls(&self, r: RawTls, server: &ServerConfig) -> Result<TlsConfig, ConfigError> {
        let mode = match &r.mode {
            None => TlsMode::Off,
            Some(v) => match v.get_ref().as_str() {
                "off" => TlsMode::Off,
                "files" => TlsMode::Files,
                "acme" => TlsMode::Acme,
                _ => return Err(self.invalid("tls.mode", v, "expected one of off, files, acme")),
            },
        };
        let http_listen =
            r.http_listen.as_ref().map(|v| self.addr("tls.http_listen", &Some(v.clone()), "")).transpose()?;
        if let Some(addr) = http_listen {
            if addr.port() != 0 && (addr == server.listen || addr == server.admin_listen) {
                let v = r.http_listen.as_ref().expect("set");
                return Err(self.invalid(
                    "tls.http_listen",
                    v,
                    "must differ from server.listen and server.admin_listen",
                ));
            }
        }
        let mut certificates = Vec::new();
        for (i, c) in r.certificate.iter().enumerate() {
            certificates.push(CertificateFiles {
                cert: self.path_value(&format!("tls.certificate[{i}].cert"), &c.cert)?,
                key: self.path_value(&format!("tls.certificate[{i}].key"), &c.key)?,
            });
        }
        let acme = match &r.acme {
            None => None,
            Some(a) => {
                let mut domains = Vec::new();
                for (j, d) in a.domains.iter().enumerate() {
                    let v = d.get_ref().to_ascii_lowercase();
                    let ok = !v.is_empty()
                        && v.contains('.')
                        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                        && !v.starts_with(['.', '-'])
                        && !v.ends_with('.');
                    if !ok {
                        return Err(self.invalid(
                            &format!("tls.acme.domains[{j}]"),
                            d,
                            "a fully qualified DNS name such as \"wif.example.com\"",
                        ));
                    }
                    domains.push(v);
                }
                let contact = a
                    .contact
                    .iter()
                    .map(|c| {
                        let v = c.get_ref();
                        if v.starts_with("mailto:") {
                            v.clone()
                        } else {
                            format!("mailto:{v}")
                        }
                    })
                    .collect();
                let directory = match &a.directory {
                    None => LETS_ENCRYPT.to_string(),
                    Some(v) => match v.get_ref().as_str() {
                        "letsencrypt" => LETS_ENCRYPT.to_string(),
                        "letsencrypt-staging" => LETS_ENCRYPT_STAGING.to_string(),
                        url if url.starts_with("https://") && url.parse::<http::Uri>().is_ok() => url.to_string(),
                        _ => {
                            return Err(self.invalid(
                                "tls.acme.directory",
                                v,
                                "letsencrypt, letsencrypt-staging or an https URL",
                            ))
                        }
                    },
                };
                let challenge = match &a.challenge {
                    None => AcmeChallenge::TlsAlpn01,
                    Some(v) => match v.get_ref().as_str() {
                        "tls-alpn-01" => AcmeChallenge::TlsAlpn01,
                        "http-01" => AcmeChallenge::Http01,
                        _ => return Err(self.invalid("tls.acme.challenge", v, "expected tls-alpn-01 or http-01")),
                    },
                };
                if challenge == AcmeChallenge::Http01 && http_listen.is_none() {
                    let v = a.challenge.as_ref().expect("set");
                    return Err(self.invalid(
                        "tls.acme.challenge",
                        v,
                        "http-01 needs tls.http_listen (port 80 as the CA sees it)",
                    ));
                }
                let cache_dir = match &a.cache_dir {
                    Some(v) => self.path_value("tls.acme.cache_dir", v)?,
                    None => return Err(self.whole("tls.acme.cache_dir is required: the account and certificates must survive restarts (Let's Encrypt rate-limits re-issuance)")),
                };
                if domains.is_empty() {
                    return Err(self.whole("tls.acme.domains is empty"));
                }
                Some(AcmeSettings {
                    domains,
                    contact,
                    directory,
                    directory_ca: a
                        .directory_ca
                        .as_ref()
                        .filter(|v| !v.get_ref().is_empty())
                        .map(|v| self.path_value("tls.acme.directory_ca", v))
                        .transpose()?,
                    cache_dir,
                    challenge,
                })
            }
        };
        match mode {
            TlsMode::Files if certificates.is_empty() => {
                return Err(self.whole("tls.mode = \"files\" needs at least one [[tls.certificate]] with cert and key"));
            }
            TlsMode::Acme if acme.is_none() => {
                return Err(self.whole("tls.mode = \"acme\" needs a [tls.acme] table with domains and cache_dir"));
            }
            _ => {}
        }
        let hsts = match &r.hsts {
            Some(v) if v.get_ref().is_empty() => None,
            Some(v) => {
                if http::HeaderValue::from_str(v.get_ref()).is_err() {
                    return Err(self.invalid("tls.hsts", v, "not a valid header value"));
                }
                Some(v.get_ref().clone())
            }
            None => Some("max-age=31536000".to_string()),
        };
        Ok(TlsConfig {
            mode,
            handshake_timeout: self.duration(
                "tls.handshake_timeout",
                &r.handshake_timeout,
                Duration::from_secs(10),
                Duration::from_millis(100),
            )?,
            hsts,
            http_listen,
            certificates,
            reload_interval: self.duration(
                "tls.reload_interval",
                &r.reload_interval,
                Duration::from_secs(5),
                Duration::from_millis(100),
            )?,
            acme,
        })
    }

    fn nets(&self, field: &str, list: &[Spanned<String>]) -> Result<Vec<IpNet>, ConfigError> {
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

    fn client_ip(&self, r: RawClientIp) -> Result<ClientIpConfig, ConfigError> {
        let source = match &r.source {
            None => ClientIpSource::Peer,
            Some(v) => match v.get_ref().as_str() {
                "peer" => ClientIpSource::Peer,
                "proxy_protocol" => ClientIpSource::ProxyProtocol,
                "x_forwarded_for" => ClientIpSource::XForwardedFor,
                _ => {
                    return Err(self.invalid(
                        "client_ip.source",
                        v,
                        "expected one of peer, proxy_protocol, x_forwarded_for",
                    ))
                }
            },
        };
        let trusted = self.nets("client_ip.trusted_proxies", &r.trusted_proxies)?;
        if source != ClientIpSource::Peer && trusted.is_empty() {
            let v = r.source.as_ref().expect("set when not peer");
            return Err(self.invalid(
                "client_ip.source",
                v,
                "needs client_ip.trusted_proxies: the addresses of the load balancers allowed to name the client",
            ));
        }
        Ok(ClientIpConfig {
            source,
            trusted_proxies: IpSet::new(&trusted),
            proxy_protocol_timeout: self.duration(
                "client_ip.proxy_protocol_timeout",
                &r.proxy_protocol_timeout,
                Duration::from_secs(3),
                Duration::from_millis(10),
            )?,
        })
    }

    fn rate_limit(&self, r: RawRateLimit) -> Result<RateLimitConfig, ConfigError> {
        let n = |field: &str, v: &Option<Spanned<i64>>, default: usize| {
            self.int(&format!("rate_limit.{field}"), v, default, 1..=u32::MAX as usize).map(|n| n as u32)
        };
        Ok(RateLimitConfig {
            enabled: r.enabled.unwrap_or(true),
            per_client: n("per_client", &r.per_client, 50)?,
            per_client_burst: n("per_client_burst", &r.per_client_burst, 500)?,
            global: n("global", &r.global, 20_000)?,
            global_burst: n("global_burst", &r.global_burst, 40_000)?,
            ipv6_prefix: self.int("rate_limit.ipv6_prefix", &r.ipv6_prefix, 64, 1..=128)? as u8,
            exempt: IpSet::new(&self.nets("rate_limit.exempt", &r.exempt)?),
            max_clients: self.int("rate_limit.max_clients", &r.max_clients, 100_000, 1..=10_000_000)?,
        })
    }

    fn ip_allow(&self, r: RawIpAllow) -> Result<IpAllowConfig, ConfigError> {
        let mode = match &r.mode {
            None => IpAllowMode::Off,
            Some(v) => match v.get_ref().as_str() {
                "off" => IpAllowMode::Off,
                "report" => IpAllowMode::Report,
                "enforce" => IpAllowMode::Enforce,
                _ => return Err(self.invalid("ip_allow.mode", v, "expected one of off, report, enforce")),
            },
        };
        let mut sources: Vec<RangeSourceConfig> = Vec::new();
        for (i, src) in r.source.iter().enumerate() {
            let f = |name: &str| format!("ip_allow.source[{i}].{name}");
            let name = src.name.get_ref().clone();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(self.invalid(&f("name"), &src.name, "must be 1 or more of A-Z a-z 0-9 - _"));
            }
            if sources.iter().any(|o| o.name == name) {
                return Err(self.invalid(&f("name"), &src.name, "another source already has this name"));
            }
            let location = match (&src.file, &src.url, &src.cidrs) {
                (Some(file), None, None) => RangeLocation::File(self.path_value(&f("file"), file)?),
                (None, Some(url), None) => RangeLocation::Url(self.range_url(&f("url"), url)?),
                (None, None, Some(list)) => RangeLocation::Inline(self.nets(&f("cidrs"), list)?),
                _ => {
                    return Err(self.invalid(&f("name"), &src.name, "a source has exactly one of file, url or cidrs"));
                }
            };
            let format = match (&src.format, &location) {
                (None, RangeLocation::Inline(_)) => RangeFormat::Cidrs,
                (None, _) => {
                    return Err(self.invalid(
                        &f("name"),
                        &src.name,
                        format!("format is required: one of {}", RangeFormat::NAMES),
                    ))
                }
                (Some(v), _) => RangeFormat::parse(v.get_ref()).ok_or_else(|| {
                    self.invalid(&f("format"), v, format!("unknown format; expected one of {}", RangeFormat::NAMES))
                })?,
            };
            let allowed: &[&str] = match format {
                RangeFormat::Aws => &["services", "regions"],
                RangeFormat::Gcp => &["scopes"],
                RangeFormat::Azure => &["tags"],
                RangeFormat::Oracle => &["regions", "tags"],
                RangeFormat::Cidrs | RangeFormat::Goog => &[],
            };
            let filter = |field: &str, list: &[Spanned<String>]| -> Result<Vec<String>, ConfigError> {
                match list.first() {
                    Some(v) if !allowed.contains(&field) => {
                        Err(self.invalid(&f(field), v, format!("format {} has no {field} filter", format.as_str())))
                    }
                    _ => Ok(list.iter().map(|v| v.get_ref().clone()).collect()),
                }
            };
            sources.push(RangeSourceConfig {
                name,
                format,
                location,
                services: filter("services", &src.services)?,
                regions: filter("regions", &src.regions)?,
                scopes: filter("scopes", &src.scopes)?,
                tags: filter("tags", &src.tags)?,
            });
        }
        if mode != IpAllowMode::Off && sources.is_empty() {
            let v = r.mode.as_ref().expect("set when not off");
            return Err(self.invalid("ip_allow.mode", v, "needs at least one [[ip_allow.source]]"));
        }
        let has_url = sources.iter().any(|s| matches!(s.location, RangeLocation::Url(_)));
        let state_dir = r.state_dir.as_ref().map(|d| self.path_value("ip_allow.state_dir", d)).transpose()?;
        if has_url && state_dir.is_none() {
            return Err(self.whole(
                "ip_allow sources with a url need ip_allow.state_dir, where the last good copy is kept for restarts",
            ));
        }
        Ok(IpAllowConfig {
            mode,
            refresh: self.duration(
                "ip_allow.refresh",
                &r.refresh,
                Duration::from_secs(24 * 3600),
                Duration::from_secs(1),
            )?,
            state_dir,
            sources,
        })
    }

    /// https, or plain http to a loopback address (for local mirrors and tests).
    fn range_url(&self, field: &str, v: &Spanned<String>) -> Result<String, ConfigError> {
        let uri: http::Uri = v.get_ref().parse().map_err(|_| self.invalid(field, v, "not a URL"))?;
        let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match uri.scheme_str() {
            Some("https") => Ok(v.get_ref().clone()),
            Some("http") if loopback => Ok(v.get_ref().clone()),
            _ => Err(self.invalid(field, v, "must be an https URL (plain http only to a loopback address)")),
        }
    }

    fn issuer(&self, i: usize, r: &RawIssuer, default_public_url: &str) -> Result<IssuerConfig, ConfigError> {
        let f = |name: &str| format!("issuer[{i}].{name}");
        let name = r.name.get_ref().clone();
        if name.is_empty()
            || name.len() > MAX_NAME_LEN
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(self.invalid(&f("name"), &r.name, "must be 1-64 characters of A-Z a-z 0-9 - _"));
        }
        let kind = IssuerKind::parse(r.kind.get_ref()).ok_or_else(|| {
            self.invalid(&f("kind"), &r.kind, format!("unknown kind; expected one of {}", IssuerKind::NAMES))
        })?;
        let upstream = self.upstream(&f("upstream"), &r.upstream)?;

        // Which list fields make sense depends on the kind; a list the kind
        // ignores is almost certainly a mistake, so it is an error.
        let forbid = |field: &str, list: &[Spanned<String>], why: &str| -> Result<(), ConfigError> {
            match list.first() {
                Some(v) => Err(self.invalid(&f(field), v, why.to_string())),
                None => Ok(()),
            }
        };
        let namespaces = match (&r.namespaces, kind.is_vault()) {
            (Some(list), true) => self.namespaces(&f("namespaces"), list)?,
            (None, true) => Namespaces { listed: vec![String::new()], wildcard: false },
            (Some(list), false) => {
                forbid("namespaces", list, &format!("namespaces apply only to Vault kinds, not {}", kind.as_str()))?;
                Namespaces::default()
            }
            (None, false) => Namespaces::default(),
        };
        let mut providers = Vec::new();
        if kind == IssuerKind::VaultOidcProvider {
            if r.providers.is_empty() {
                return Err(self.invalid(
                    &f("kind"),
                    &r.kind,
                    "vault-oidc-provider needs providers = [\"<provider name>\", ...]",
                ));
            }
            for (j, p) in r.providers.iter().enumerate() {
                let v = p.get_ref();
                let ok = !v.is_empty()
                    && v.len() <= MAX_NAME_LEN
                    && !v.contains("..")
                    && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                    && !v.starts_with('.')
                    && !v.ends_with('.');
                if !ok {
                    return Err(self.invalid(
                        &format!("issuer[{i}].providers[{j}]"),
                        p,
                        "a provider name is 1-64 characters of A-Z a-z 0-9 - _ . (no leading, trailing or double dot)",
                    ));
                }
                if providers.contains(v) {
                    return Err(self.invalid(&format!("issuer[{i}].providers[{j}]"), p, "listed twice"));
                }
                providers.push(v.clone());
            }
        } else {
            forbid("providers", &r.providers, "providers apply only to kind = \"vault-oidc-provider\"")?;
        }
        let mut paths = Vec::new();
        if kind == IssuerKind::Custom {
            if r.paths.is_empty() {
                return Err(self.invalid(&f("kind"), &r.kind, "custom needs paths = [\"/exact/public/path\", ...]"));
            }
            for (j, p) in r.paths.iter().enumerate() {
                let field = format!("issuer[{i}].paths[{j}]");
                if let Err(why) = check_custom_path(p.get_ref()) {
                    return Err(self.invalid(&field, p, why));
                }
                if paths.contains(p.get_ref()) {
                    return Err(self.invalid(&field, p, "listed twice"));
                }
                paths.push(p.get_ref().clone());
            }
        } else {
            forbid("paths", &r.paths, "paths apply only to kind = \"custom\"")?;
        }
        let mut hosts: Vec<String> = Vec::new();
        for (j, h) in r.hosts.iter().enumerate() {
            let v = h.get_ref().to_ascii_lowercase();
            let ok = !v.is_empty()
                && v.len() <= 253
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && !v.starts_with('.')
                && !v.ends_with('.');
            if !ok {
                return Err(self.invalid(
                    &format!("issuer[{i}].hosts[{j}]"),
                    h,
                    "a host is a DNS name (letters, digits, '-', '.'), without port or scheme",
                ));
            }
            if !hosts.contains(&v) {
                hosts.push(v);
            }
        }
        let public_url = match &r.public_url {
            Some(v) => self.public_url(&f("public_url"), v)?,
            None => default_public_url.to_string(),
        };
        let file = |field: &str, v: &Option<Spanned<String>>| -> Result<Option<PathBuf>, ConfigError> {
            v.as_ref().filter(|v| !v.get_ref().is_empty()).map(|v| self.path_value(&f(field), v)).transpose()
        };
        let upstream_ca = file("upstream_ca", &r.upstream_ca)?;
        let upstream_client_cert = file("upstream_client_cert", &r.upstream_client_cert)?;
        let upstream_client_key = file("upstream_client_key", &r.upstream_client_key)?;
        if upstream_client_cert.is_some() != upstream_client_key.is_some() {
            let v = r.upstream_client_cert.as_ref().or(r.upstream_client_key.as_ref()).expect("one is set");
            return Err(self.invalid(
                &f("upstream_client_cert"),
                v,
                "upstream_client_cert and upstream_client_key go together",
            ));
        }
        if !upstream.https {
            for (field, v) in [("upstream_ca", &upstream_ca), ("upstream_client_cert", &upstream_client_cert)] {
                if v.is_some() {
                    return Err(self.invalid(&f(field), &r.upstream, format!("{field} needs an https upstream")));
                }
            }
        }
        let upstream_timeout = self.duration(
            &f("upstream_timeout"),
            &r.upstream_timeout,
            Duration::from_secs(5),
            Duration::from_millis(10),
        )?;
        let upstream_connect_timeout = self.duration(
            &f("upstream_connect_timeout"),
            &r.upstream_connect_timeout,
            upstream_timeout.min(Duration::from_secs(2)),
            Duration::from_millis(10),
        )?;
        Ok(IssuerConfig {
            name,
            kind,
            upstream,
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
            max_document_bytes: self.int(
                &f("max_document_bytes"),
                &r.max_document_bytes,
                1024 * 1024,
                256..=64 * 1024 * 1024,
            )?,
            strict_issuer: r.strict_issuer.unwrap_or(false),
        })
    }

    fn namespaces(&self, field: &str, list: &[Spanned<String>]) -> Result<Namespaces, ConfigError> {
        if list.is_empty() {
            return Err(self.whole(format!("{field} is empty: list \"\" for the root namespace")));
        }
        let mut out = Namespaces::default();
        for (j, v) in list.iter().enumerate() {
            let field = format!("{field}[{j}]");
            let ns = v.get_ref();
            if ns == "*" {
                out.wildcard = true;
                continue;
            }
            check_namespace(ns).map_err(|why| self.invalid(&field, v, why))?;
            if out.listed.iter().any(|o| o == ns) {
                return Err(self.invalid(&field, v, "listed twice"));
            }
            out.listed.push(ns.clone());
        }
        Ok(out)
    }

    fn upstream(&self, field: &str, v: &Spanned<String>) -> Result<UpstreamUrl, ConfigError> {
        let (https, rest) = split_origin(v.get_ref()).ok_or_else(|| {
            self.invalid(
                field,
                v,
                "must be an origin: http://host:port or https://host:port, with no path, query or credentials",
            )
        })?;
        Ok(UpstreamUrl { https, authority: rest.to_string(), origin: v.get_ref().clone() })
    }

    fn public_url(&self, field: &str, v: &Spanned<String>) -> Result<String, ConfigError> {
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

    fn path_value(&self, field: &str, v: &Spanned<String>) -> Result<PathBuf, ConfigError> {
        if v.get_ref().trim().is_empty() {
            return Err(self.invalid(field, v, "must not be empty"));
        }
        let p = PathBuf::from(v.get_ref());
        // Relative paths are taken relative to the configuration file, as
        // nginx and Caddy users expect, not to whatever the working directory is.
        Ok(if p.is_relative() { self.path.parent().unwrap_or(Path::new(".")).join(p) } else { p })
    }
}

/// Splits `http(s)://authority` into (is_https, authority); `None` when it has
/// anything beyond an origin.
fn split_origin(s: &str) -> Option<(bool, &str)> {
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

/// Checks one explicit namespace: `""` (root), `a`, `a/b`, ...
pub fn check_namespace(ns: &str) -> Result<(), String> {
    if ns.is_empty() {
        return Ok(());
    }
    if ns.contains("..") {
        return Err("a namespace must not contain \"..\"".into());
    }
    if ns.contains("//") {
        return Err("a namespace must not contain \"//\"".into());
    }
    if ns.contains('%') {
        return Err("a namespace must not contain '%': write it unencoded".into());
    }
    if ns.chars().any(char::is_whitespace) {
        return Err("a namespace must not contain whitespace".into());
    }
    if ns.starts_with('/') || ns.ends_with('/') {
        return Err("write a namespace without leading or trailing '/', e.g. \"ns1/team-a\"".into());
    }
    let depth = ns.split('/').count();
    if depth > MAX_NAMESPACE_DEPTH {
        return Err(format!("namespaces nest at most {MAX_NAMESPACE_DEPTH} deep"));
    }
    for seg in ns.split('/') {
        if let Some(r) = RESERVED_NAMESPACES.iter().find(|r| seg.eq_ignore_ascii_case(r)) {
            return Err(format!("\"{r}\" is a reserved Vault name, not a namespace"));
        }
        if !is_namespace_segment(seg) {
            return Err(format!(
                "namespace segment {seg:?} must be 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 - _, starting with a letter or digit"
            ));
        }
    }
    Ok(())
}

/// The strict namespace segment charset; the `*` wildcard's regex uses the same.
pub fn is_namespace_segment(seg: &str) -> bool {
    let b = seg.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

/// Checks a `custom` public path: absolute, no query/fragment/encoding, no
/// dot segments, no empty segments, no trailing slash.
fn check_custom_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') || p.len() < 2 {
        return Err("must be an absolute path such as \"/.well-known/openid-configuration\"".into());
    }
    if p.len() > 1024 {
        return Err("longer than 1024 bytes".into());
    }
    if p.ends_with('/') {
        return Err("must not end with '/'".into());
    }
    if p.contains("//") {
        return Err("must not contain \"//\"".into());
    }
    if let Some(c) = p.chars().find(|c| !(c.is_ascii_alphanumeric() || "-._~!$&'()*+,=:@/".contains(*c))) {
        return Err(format!("must not contain {c:?}: paths are matched byte for byte, unencoded, without query"));
    }
    if p.split('/').any(|s| s == "." || s == "..") {
        return Err("must not contain \".\" or \"..\" segments".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("t.toml"), text)
    }

    const MIN: &str = "[server]\npublic_url = \"https://wif.example.com\"\n[[issuer]]\nname = \"v\"\nkind = \"vault-plugin-wif\"\nupstream = \"http://127.0.0.1:8200\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MIN).expect("valid");
        assert_eq!(c.issuers[0].namespaces.listed, vec![String::new()]);
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(5));
        assert_eq!(c.cache.max_stale, Duration::from_secs(86400));
        assert_eq!(c.issuers[0].public_url, "https://wif.example.com");
    }

    #[test]
    fn namespace_rules() {
        for bad in ["a/../b", "a//b", "a%2fb", "a b", "/a", "a/", "sys", "a/identity", "ROOT", "a.b"] {
            assert!(check_namespace(bad).is_err(), "{bad} should be rejected");
        }
        for good in ["", "ns1", "ns1/team-a", "a_b/c-d/e"] {
            assert!(check_namespace(good).is_ok(), "{good} should be accepted");
        }
    }

    #[test]
    fn errors_name_line_field_and_value() {
        let text = format!("{MIN}namespaces = [\"ok\", \"a/../b\"]\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("t.toml:7: issuer[0].namespaces[1] = \"a/../b\""), "{e}");
        let e = parse(&MIN.replace("[server]", "[server]\nlisten = \"nope\"")).unwrap_err().to_string();
        assert!(e.starts_with("t.toml:2: server.listen = \"nope\""), "{e}");
    }

    #[test]
    fn custom_paths() {
        assert!(check_custom_path("/.well-known/openid-configuration").is_ok());
        for bad in ["keys", "/a/", "/a//b", "/a/../b", "/a?x", "/a%2f", "/a#b", "/a\\b", "/"] {
            assert!(check_custom_path(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn origins() {
        assert_eq!(split_origin("https://wif.example.com"), Some((true, "wif.example.com")));
        assert_eq!(split_origin("http://[::1]:8200"), Some((false, "[::1]:8200")));
        for bad in ["wif.example.com", "https://", "https://a/b", "https://u@a", "ftp://a", "https://a?b"] {
            assert_eq!(split_origin(bad), None, "{bad}");
        }
    }
}
