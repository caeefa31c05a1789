//! What a configuration means: the validated, immutable types the rest of
//! the proxy reads. Every value here is defaulted, typed and checked (see
//! `validate`), so no reader ever has to wonder whether it is sane. Relative
//! paths are already resolved against the configuration file's folder.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::keyword::Keyword;
use crate::net::ipset::IpSet;

/// A validated, immutable configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from (for messages and reloads).
    pub source: PathBuf,
    /// `[server]`: listeners, the public origin, connection limits.
    pub server: ServerConfig,
    /// `[cache]`: how long documents are fresh, stale and remembered.
    pub cache: CacheConfig,
    /// `[log]`: the access log.
    pub log: LogConfig,
    /// `[client_ip]`: where the client address comes from.
    pub client_ip: ClientIpConfig,
    /// `[rate_limit]`: request budgets.
    pub rate_limit: RateLimitConfig,
    /// `[ip_allow]`: the source-address allowlist.
    pub ip_allow: IpAllowConfig,
    /// `[tls]`: TLS on the public listener.
    pub tls: TlsConfig,
    /// `[[issuer]]`: what is published, in file order (at least one).
    pub issuers: Vec<IssuerConfig>,
}

/// Where a listener's socket comes from: an address to bind, or a socket
/// systemd passed (socket activation, `LISTEN_FDS`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Listen {
    /// `"IP:port"`: bound at start-up.
    Addr(SocketAddr),
    /// `"systemd"` (the one socket passed) or `"systemd:NAME"` (the socket
    /// whose `FileDescriptorName=` is NAME, from `LISTEN_FDNAMES`).
    Systemd(Option<String>),
}

impl Listen {
    /// The address to bind, when there is one.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Listen::Addr(a) => Some(*a),
            Listen::Systemd(_) => None,
        }
    }

    /// Whether two listeners would take the same socket (port 0 always
    /// binds a fresh one).
    pub fn same_socket(&self, other: &Listen) -> bool {
        match (self, other) {
            (Listen::Addr(a), Listen::Addr(b)) => a == b && a.port() != 0,
            (Listen::Systemd(a), Listen::Systemd(b)) => a == b,
            _ => false,
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Addr(a) => a.fmt(f),
            Listen::Systemd(None) => f.write_str("systemd"),
            Listen::Systemd(Some(name)) => write!(f, "systemd:{name}"),
        }
    }
}

/// Why a listener value is neither an address nor a systemd socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// Neither `IP:port` nor `systemd[:NAME]`.
    #[error("not a socket address; write \"IP:port\", e.g. \"0.0.0.0:443\" or \"[::]:443\", or \"systemd\" / \"systemd:NAME\" for a socket systemd passes")]
    NotAnAddress,
    /// `systemd:` with an empty or impossible name.
    #[error("a systemd socket name is 1 to 255 characters, no ':' and no control characters (FileDescriptorName=)")]
    BadName,
}

impl std::str::FromStr for Listen {
    type Err = ListenError;
    fn from_str(s: &str) -> Result<Listen, ListenError> {
        if s == "systemd" {
            return Ok(Listen::Systemd(None));
        }
        if let Some(name) = s.strip_prefix("systemd:") {
            // systemd's own rule for FileDescriptorName=.
            let ok = !name.is_empty() && name.len() <= 255 && !name.chars().any(|c| c == ':' || c.is_control());
            return if ok { Ok(Listen::Systemd(Some(name.to_string()))) } else { Err(ListenError::BadName) };
        }
        s.parse().map(Listen::Addr).map_err(|_| ListenError::NotAnAddress)
    }
}

/// The public and admin listeners and what a connection may cost.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The public listener.
    pub listen: Listen,
    /// Metrics, health and readiness; never the same as `listen`.
    pub admin_listen: Listen,
    /// Origin (`scheme://host[:port]`, no path, no trailing slash) the cloud
    /// providers use to reach this proxy.
    pub public_url: String,
    /// Open connections on the public listener.
    pub max_connections: usize,
    /// A request head must arrive within this.
    pub header_read_timeout: Duration,
    /// A keep-alive connection idle this long is closed.
    pub idle_timeout: Duration,
    /// How long in-flight requests may finish on shutdown.
    pub shutdown_grace: Duration,
    /// Upper bound on request header bytes (HTTP/1 read buffer, h2 header list).
    pub max_header_bytes: usize,
    /// Upper bound on the number of request headers (HTTP/1 and h2).
    pub max_headers: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
    /// Open connections allowed per client address.
    pub max_connections_per_ip: usize,
    /// The kernel's accept queue of each listener.
    pub listen_backlog: u32,
}

/// How long documents are kept and served.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Shortest freshness, whatever the issuer's Cache-Control says.
    pub min_ttl: Duration,
    /// Longest freshness (never less than `min_ttl`).
    pub max_ttl: Duration,
    /// How long past freshness a document stands in for a failing issuer.
    pub max_stale: Duration,
    /// How long an issuer's 404 is remembered.
    pub negative_ttl: Duration,
    /// Where documents are persisted across restarts; `None`: memory only.
    pub dir: Option<PathBuf>,
    /// Bound on cache entries created for `*`-namespace documents.
    pub max_dynamic_entries: usize,
}

/// The access log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// One line per request on the `access` target.
    pub access: bool,
    /// At most this many access-log lines a second for requests the proxy
    /// denied (the rest are counted and reported in one summary line), so a
    /// flood of hostile requests cannot become a logging storm. 0 = none.
    pub denied_lines_per_second: usize,
}

/// Where client addresses come from (see `edge::clientip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIpConfig {
    /// Which address counts as the client's.
    pub source: ClientIpSource,
    /// Peers allowed to name the client (PROXY header, X-Forwarded-For).
    pub trusted_proxies: IpSet,
    /// A PROXY header must arrive within this.
    pub proxy_protocol_timeout: Duration,
}

/// Which address is the client's: `client_ip.source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientIpSource {
    /// The TCP peer.
    Peer,
    /// The PROXY protocol header (v1 or v2) a trusted load balancer sends.
    ProxyProtocol,
    /// `X-Forwarded-For` from a trusted peer: its right-most address that
    /// is not itself a trusted proxy.
    XForwardedFor,
}

impl Keyword for ClientIpSource {}

/// Request rate limits (see `admission::ratelimit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Off only for benchmarks and trusted networks.
    pub enabled: bool,
    /// Sustained requests per second per client address (IPv6: per prefix).
    pub per_client: u32,
    /// Requests a client may send at once before the sustained rate applies.
    pub per_client_burst: u32,
    /// Sustained requests per second for all clients together.
    pub global: u32,
    /// Requests all clients together may send at once.
    pub global_burst: u32,
    /// IPv6 clients share a budget per prefix of this length.
    pub ipv6_prefix: u8,
    /// Addresses no limit applies to.
    pub exempt: IpSet,
    /// Bound on tracked client addresses; beyond it new ones share a bucket.
    pub max_clients: usize,
}

/// What the source-address allowlist does: `ip_allow.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpAllowMode {
    /// Every address may ask.
    Off,
    /// Log and count what would be denied, deny nothing.
    Report,
    /// Deny every address outside the sources.
    Enforce,
}

impl Keyword for IpAllowMode {}

impl IpAllowMode {
    /// The word the configuration file uses for this mode.
    pub fn as_str(self) -> &'static str {
        self.word()
    }
}

/// The source-address allowlist (see `admission::ranges`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpAllowConfig {
    /// Off, report or enforce.
    pub mode: IpAllowMode,
    /// How often URL sources are fetched again.
    pub refresh: Duration,
    /// Where fetched URL sources are kept (last good copy).
    pub state_dir: Option<PathBuf>,
    /// The ranges, by source (at least one that admits unless `mode` is
    /// off). In every mode, `off` included, an answered document request is
    /// attributed to the first source that contains the client.
    pub sources: Vec<RangeSourceConfig>,
}

/// The published range formats wif-proxy reads: `ip_allow.source.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
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

impl Keyword for RangeFormat {
    const LEAD: &'static str = "unknown format; ";
}

impl RangeFormat {
    /// The word the configuration file uses for this format.
    pub fn as_str(self) -> &'static str {
        self.word()
    }
}

/// One source of allowed ranges: `[[ip_allow.source]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSourceConfig {
    /// Unique among sources; named in verdicts and metrics.
    pub name: String,
    /// How the data is read.
    pub format: RangeFormat,
    /// Where the data lives.
    pub location: RangeLocation,
    /// Whether its addresses pass the allowlist. `false`: the source only
    /// names the clients it contains in fetch accounting (metrics, the
    /// status page), as every source does in mode `off`.
    pub admit: bool,
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

impl RangeSourceConfig {
    /// A source without filters whose data is handed to `ranges::parse`
    /// directly (benchmarks, tests, tools).
    pub fn unfiltered(name: &str, format: RangeFormat) -> RangeSourceConfig {
        RangeSourceConfig {
            name: name.to_string(),
            format,
            location: RangeLocation::Inline(Vec::new()),
            admit: true,
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
    /// A local file, read at start and on reload.
    File(PathBuf),
    /// An https URL (or http to loopback), fetched every `refresh`.
    Url(String),
    /// `cidrs = [...]` in the file itself.
    Inline(Vec<IpNet>),
}

/// TLS on the public listener (see `edge::tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Off, certificate files or ACME.
    pub mode: TlsMode,
    /// A connection must finish its TLS handshake within this.
    pub handshake_timeout: Duration,
    /// `Strict-Transport-Security` value on TLS responses; `None` to omit.
    pub hsts: Option<String>,
    /// Optional plain-HTTP listener: ACME HTTP-01, redirects for allowlisted paths.
    pub http_listen: Option<Listen>,
    /// `files` mode: certificate chains and keys; hosts come from their SANs.
    pub certificates: Vec<CertificateFiles>,
    /// How often certificate files are checked for changes.
    pub reload_interval: Duration,
    /// `acme` mode settings.
    pub acme: Option<AcmeSettings>,
}

/// Where certificates come from: `tls.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain HTTP (TLS terminated in front of the proxy, or a test).
    Off,
    /// `[[tls.certificate]]` files, reloaded when they change.
    Files,
    /// Certificates obtained and renewed over ACME.
    Acme,
}

impl Keyword for TlsMode {}

impl TlsMode {
    /// The word the configuration file uses for this mode.
    pub fn as_str(self) -> &'static str {
        self.word()
    }
}

/// One certificate chain and its key: `[[tls.certificate]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// How the ACME CA validates control of a domain: `tls.acme.challenge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AcmeChallenge {
    /// On the TLS port itself.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// On port 80 (`tls.http_listen`).
    #[serde(rename = "http-01")]
    Http01,
}

impl Keyword for AcmeChallenge {}

/// `[tls.acme]`.
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
    /// TLS-ALPN-01 or HTTP-01.
    pub challenge: AcmeChallenge,
}

/// What kind of issuer sits behind the proxy; decides the public path set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssuerKind {
    /// Vault's plugin workload identity (`identity/oidc/plugins`).
    VaultPluginWif,
    /// Vault identity tokens (`identity/oidc`).
    VaultIdentity,
    /// Vault OIDC providers (`identity/oidc/provider/<name>`).
    VaultOidcProvider,
    /// A SPIRE OIDC discovery provider.
    Spire,
    /// A Kubernetes API server's service-account issuer discovery
    /// (`/.well-known/openid-configuration`, `/openid/v1/jwks`).
    Kubernetes,
    /// Any issuer, with its exact public paths listed.
    Custom,
}

impl Keyword for IssuerKind {
    const LEAD: &'static str = "unknown kind; ";
}

impl IssuerKind {
    /// The word the configuration file uses for this kind.
    pub fn as_str(self) -> &'static str {
        self.word()
    }

    /// Whether this kind publishes per Vault namespace.
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

/// One issuer and how it is reached: `[[issuer]]`.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// Unique among issuers; named in metrics and logs.
    pub name: String,
    /// Decides the public paths.
    pub kind: IssuerKind,
    /// Where documents are fetched from: one node or more, tried in order
    /// (starting with the one that last answered well).
    pub upstream: Vec<UpstreamUrl>,
    /// The `Host` header sent to every node; `None`: each node's own
    /// authority. `kind = "spire"` defaults to the public URL's host.
    pub upstream_host: Option<String>,
    /// `X-Forwarded-Host`/`X-Forwarded-Proto` sent to the upstream, from the
    /// public URL (never from a client); `None`: not sent.
    pub upstream_forwarded: Option<Forwarded>,
    /// A file whose content is sent as `Authorization: Bearer …`, re-read
    /// when it changes (projected service-account tokens rotate).
    pub upstream_bearer_token_file: Option<PathBuf>,
    /// Vault kinds: which namespaces are published.
    pub namespaces: Namespaces,
    /// `vault-oidc-provider`: the provider names published.
    pub providers: Vec<String>,
    /// `custom`: the exact public paths.
    pub paths: Vec<String>,
    /// Lower-cased host names; empty means "every host".
    pub hosts: Vec<String>,
    /// Origin this issuer is published under (defaults to `server.public_url`).
    pub public_url: String,
    /// Extra trust root for an https upstream.
    pub upstream_ca: Option<PathBuf>,
    /// Client certificate for an https upstream (with `upstream_client_key`).
    pub upstream_client_cert: Option<PathBuf>,
    /// Key of `upstream_client_cert`.
    pub upstream_client_key: Option<PathBuf>,
    /// Connecting to the upstream must take no longer.
    pub upstream_connect_timeout: Duration,
    /// A whole fetch must take no longer.
    pub upstream_timeout: Duration,
    /// Larger documents are refused.
    pub max_document_bytes: usize,
    /// Refuse to serve a discovery document whose `issuer`/`jwks_uri` do not
    /// match what this proxy publishes.
    pub strict_issuer: bool,
}

impl IssuerConfig {
    /// The upstream as one string: the origin, or the origins joined by
    /// spaces (cache slots and persisted documents are keyed by it).
    pub fn upstream_label(&self) -> String {
        self.upstream.iter().map(|u| u.origin.as_str()).collect::<Vec<_>>().join(" ")
    }
}

/// The forwarding headers an upstream is sent (`upstream_forwarded_headers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// `X-Forwarded-Host`: the public URL's host (and port, if it has one).
    pub host: String,
    /// `X-Forwarded-Proto`: the public URL's scheme.
    pub proto: String,
}

/// An upstream node: `http(s)://host[:port]` or `unix:/path/to.sock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// Whether the upstream speaks TLS.
    pub https: bool,
    /// `host:port` or `host` exactly as written (the default Host header);
    /// `localhost` for a unix socket.
    pub authority: String,
    /// As written: `scheme://authority`, or `unix:/path`; names the node in
    /// logs, `/readyz` and metrics.
    pub origin: String,
    /// The socket of a `unix:` upstream (plain HTTP over it).
    pub unix: Option<PathBuf>,
}

impl UpstreamUrl {
    /// The prefix request URLs are built on (`http://localhost` for a unix
    /// socket, which the client dials whatever the URL says).
    pub fn base(&self) -> String {
        if self.unix.is_some() {
            format!("http://{}", self.authority)
        } else {
            self.origin.clone()
        }
    }
}
