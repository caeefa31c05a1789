//! Every default and every bound of the configuration, in one place, each
//! with the reason for its value. Validation reads these; nothing else in
//! the configuration spells a default out.
//!
//! A numeric setting is an [`Int`] (default and inclusive range), a duration
//! an [`Interval`] (default and least value), so a new key is one constant
//! here plus one line in the section that validates it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::{AcmeChallenge, ClientIpSource, IpAllowMode, TlsMode};

/// An integer setting: what it is when the file is silent, and the inclusive
/// range the file may set it to.
#[derive(Debug, Clone, Copy)]
pub struct Int<T> {
    /// The value when the key is absent.
    pub default: T,
    /// The least value accepted.
    pub min: T,
    /// The greatest value accepted.
    pub max: T,
}

/// A duration setting: what it is when the file is silent, and the least
/// value the file may set it to.
#[derive(Debug, Clone, Copy)]
pub struct Interval {
    /// The value when the key is absent.
    pub default: Duration,
    /// The least value accepted (shorter ones are typos or self-harm).
    pub min: Duration,
}

const fn int<T>(default: T, min: T, max: T) -> Int<T> {
    Int { default, min, max }
}

const fn secs(default: u64, min: Duration) -> Interval {
    Interval { default: Duration::from_secs(default), min }
}

const MS_10: Duration = Duration::from_millis(10);
const MS_100: Duration = Duration::from_millis(100);
const DAY: u64 = 24 * 3600;
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

// --- Bounds on names ------------------------------------------------------

/// Longest issuer name, range source name, provider name or namespace
/// segment: names end up in paths, metric labels and log lines.
pub const MAX_NAME_LEN: usize = 64;
/// Deepest namespace nesting the `*` wildcard accepts (bounds the regex).
pub const MAX_NAMESPACE_DEPTH: usize = 8;
/// Longest DNS name (RFC 1035: 255 octets on the wire, 253 written).
pub const MAX_DNS_NAME_LEN: usize = 253;
/// Longest DNS label (RFC 1035).
pub const MAX_DNS_LABEL_LEN: usize = 63;
/// Longest `custom` public path: far beyond any real document path.
pub const MAX_CUSTOM_PATH_BYTES: usize = 1024;

// --- [server] ---------------------------------------------------------------

/// Loopback until told otherwise: nothing is public by accident.
pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// Metrics and health on loopback: the admin endpoints are never public.
pub const ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);
/// Open connections: enough for every cloud provider, bounded memory.
pub const MAX_CONNECTIONS: Int<usize> = int(10_000, 1, 1_000_000);
/// Open connections per client address: one client cannot take them all.
pub const MAX_CONNECTIONS_PER_IP: Int<usize> = int(256, 1, 1_000_000);
/// Slow-loris bound on the request head.
pub const HEADER_READ_TIMEOUT: Interval = secs(5, MS_100);
/// Keep-alive connections idle longer than this are closed.
pub const IDLE_TIMEOUT: Interval = secs(60, MS_100);
/// How long in-flight requests may finish after SIGTERM.
pub const SHUTDOWN_GRACE: Interval = secs(10, Duration::ZERO);
/// Request head bytes: our paths are short, 8 KiB is nginx's floor.
pub const MAX_HEADER_BYTES: Int<usize> = int(16 * KIB, 8 * KIB, MIB);
/// Request header count (HTTP/1 and h2).
pub const MAX_HEADERS: Int<usize> = int(64, 8, 1024);
/// Connections the kernel queues for `accept` on each listener. 4096 is
/// Linux's own ceiling by default (`net.core.somaxconn` since 5.4; a larger
/// value is cut to it): a burst of thousands of connects waits in the queue
/// instead of being dropped (at 128, a 3,000-connect burst overflowed it).
/// nginx's 511 dates from when the ceiling was 128 and 512 was the next
/// power of two; a queued connection costs the kernel a socket, not us.
pub const LISTEN_BACKLOG: Int<u32> = int(4096, 1, 65_535);
/// Concurrent HTTP/2 streams per connection. A discovery client fetches
/// two documents; 16 leaves room for parallel fetchers and retries. Each
/// stream a peer may hold open costs ~2.5 KiB at worst (h2 and hyper's
/// state while the peer grants no window): at 16 an h2 connection is
/// bounded near 64 KiB, where the usual 100 would allow ~260 KiB, and
/// `max_connections` times that is what the memory limit must hold
/// (docs/security.md).
pub const H2_MAX_CONCURRENT_STREAMS: Int<u32> = int(16, 1, 10_000);

// --- [cache] ----------------------------------------------------------------

/// Shortest freshness, whatever the issuer's Cache-Control says.
pub const CACHE_MIN_TTL: Interval = secs(30, MS_100);
/// Longest freshness: key rotation shows within five minutes.
pub const CACHE_MAX_TTL: Interval = secs(300, MS_100);
/// How long a stale document may stand in for an unreachable issuer.
pub const CACHE_MAX_STALE: Interval = secs(DAY, Duration::ZERO);
/// How long an issuer's 404 is remembered.
pub const CACHE_NEGATIVE_TTL: Interval = secs(10, Duration::ZERO);
/// Cache entries for `*`-namespace documents: bounds what clients can create.
pub const CACHE_MAX_DYNAMIC_ENTRIES: Int<usize> = int(1024, 1, 1_000_000);

// --- [log] ------------------------------------------------------------------

/// One access-log line per request, as every web server does.
pub const LOG_ACCESS: bool = true;
/// Access-log lines a second for denied requests before they are summarised.
pub const LOG_DENIED_LINES_PER_SECOND: Int<usize> = int(100, 0, 1_000_000);

// --- [client_ip] ------------------------------------------------------------

/// The TCP peer is the client unless a trusted proxy is configured.
pub const CLIENT_IP_SOURCE: ClientIpSource = ClientIpSource::Peer;
/// A load balancer sends its PROXY header at once; waiting long is an attack.
pub const PROXY_PROTOCOL_TIMEOUT: Interval = secs(3, MS_10);

// --- [rate_limit] -----------------------------------------------------------

/// Rate limits are on: the proxy faces the internet.
pub const RATE_LIMIT_ENABLED: bool = true;
/// Requests a second per client address: far above any provider's need.
pub const RATE_PER_CLIENT: Int<u32> = int(50, 1, u32::MAX);
/// Burst per client address.
pub const RATE_PER_CLIENT_BURST: Int<u32> = int(500, 1, u32::MAX);
/// Requests a second for everyone together.
pub const RATE_GLOBAL: Int<u32> = int(20_000, 1, u32::MAX);
/// Burst for everyone together.
pub const RATE_GLOBAL_BURST: Int<u32> = int(40_000, 1, u32::MAX);
/// IPv6 clients are limited per /64, what one host usually gets.
pub const RATE_IPV6_PREFIX: Int<u8> = int(64, 1, 128);
/// Tracked client addresses: bounds memory under a spoofed flood.
pub const RATE_MAX_CLIENTS: Int<usize> = int(100_000, 1, 10_000_000);

// --- [ip_allow] -------------------------------------------------------------

/// The source-address allowlist is opt-in: it needs sources to be useful.
pub const IP_ALLOW_MODE: IpAllowMode = IpAllowMode::Off;
/// Cloud providers publish their ranges about daily.
pub const IP_ALLOW_REFRESH: Interval = secs(DAY, Duration::from_secs(1));
/// What fetch accounting calls a client in no source (so no source may be
/// named so).
pub const OTHER_SOURCE: &str = "other";
/// A source admits what it lists unless it is there for fetch accounting only.
pub const IP_ALLOW_SOURCE_ADMIT: bool = true;

// --- [tls] ------------------------------------------------------------------

/// Plain HTTP unless asked: TLS is often terminated in front of the proxy.
pub const TLS_MODE: TlsMode = TlsMode::Off;
/// A connection must finish its handshake within this.
pub const TLS_HANDSHAKE_TIMEOUT: Interval = secs(10, MS_100);
/// How often certificate files are checked for renewal.
pub const TLS_RELOAD_INTERVAL: Interval = secs(5, MS_100);
/// HSTS for a year, what browsers' preload lists ask for.
pub const HSTS: &str = "max-age=31536000";
/// TLS-ALPN-01 needs nothing but the TLS port.
pub const ACME_CHALLENGE: AcmeChallenge = AcmeChallenge::TlsAlpn01;
/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// The default ACME directory: free, automated, trusted everywhere.
pub const ACME_DIRECTORY: &str = LETS_ENCRYPT;
/// Short names `tls.acme.directory` may use instead of a URL.
pub const ACME_DIRECTORY_NAMES: &[(&str, &str)] =
    &[("letsencrypt", LETS_ENCRYPT), ("letsencrypt-staging", LETS_ENCRYPT_STAGING)];

// --- [[issuer]] -------------------------------------------------------------

/// A Vault issuer without `namespaces` publishes the root namespace only.
pub const NAMESPACES: &[&str] = &[""];
/// A whole issuer fetch: a healthy Vault answers in milliseconds.
pub const UPSTREAM_TIMEOUT: Interval = secs(5, MS_10);
/// Connecting to the issuer; the default is also capped at the fetch timeout.
pub const UPSTREAM_CONNECT_TIMEOUT: Interval = secs(2, MS_10);
/// A discovery document or JWKS is a few KiB; 1 MiB is generous.
pub const MAX_DOCUMENT_BYTES: Int<usize> = int(MIB, 256, 64 * MIB);
/// A document failing the issuer guard is warned about (and shown on
/// `/readyz`) but served: refusing it is opt-in, as it breaks a working setup.
pub const STRICT_ISSUER: bool = false;
/// More nodes than any HA cluster has: each is tried in turn within one
/// `upstream_timeout`.
pub const MAX_UPSTREAM_NODES: usize = 16;
/// The Host sent over a unix socket when `upstream_host` is not set: the
/// name a local web server answers to by default.
pub const UNIX_UPSTREAM_HOST: &str = "localhost";
/// Forwarding headers are opt-in: most issuers ignore them, and the ones
/// that read them build their URLs from them.
pub const UPSTREAM_FORWARDED_HEADERS: bool = false;
/// The longest unix socket path Linux accepts (`sun_path` less its NUL).
pub const MAX_UNIX_SOCKET_PATH: usize = 107;
/// A bearer token file larger than this is not a token (projected
/// service-account tokens are about 1 KiB).
pub const MAX_BEARER_TOKEN_BYTES: usize = 16 * KIB;
