//! `[client_ip]` and `[rate_limit]`: who the client is, and how much it may
//! ask.

use crate::config::context::Cx;
use crate::config::defaults::*;
use crate::config::file::{RawClientIp, RawRateLimit};
use crate::config::{ClientIpConfig, ClientIpSource, ConfigError, RateLimitConfig};
use crate::net::ipset::IpSet;

/// `[client_ip]`: any source but the TCP peer needs the proxies trusted to
/// name the client.
pub(super) fn client_ip(cx: &Cx<'_>, r: RawClientIp) -> Result<ClientIpConfig, ConfigError> {
    let source = cx.keyword("client_ip.source", &r.source, CLIENT_IP_SOURCE)?;
    let trusted = cx.nets("client_ip.trusted_proxies", &r.trusted_proxies)?;
    if source != ClientIpSource::Peer && trusted.is_empty() {
        return Err(cx.at(
            "client_ip.source",
            r.source.as_ref(),
            "needs client_ip.trusted_proxies: the addresses of the load balancers allowed to name the client",
        ));
    }
    Ok(ClientIpConfig {
        source,
        trusted_proxies: IpSet::new(&trusted),
        proxy_protocol_timeout: cx.duration(
            "client_ip.proxy_protocol_timeout",
            &r.proxy_protocol_timeout,
            PROXY_PROTOCOL_TIMEOUT,
        )?,
    })
}

/// `[rate_limit]`.
pub(super) fn rate_limit(cx: &Cx<'_>, r: RawRateLimit) -> Result<RateLimitConfig, ConfigError> {
    Ok(RateLimitConfig {
        enabled: r.enabled.unwrap_or(RATE_LIMIT_ENABLED),
        per_client: cx.int("rate_limit.per_client", &r.per_client, RATE_PER_CLIENT)?,
        per_client_burst: cx.int("rate_limit.per_client_burst", &r.per_client_burst, RATE_PER_CLIENT_BURST)?,
        global: cx.int("rate_limit.global", &r.global, RATE_GLOBAL)?,
        global_burst: cx.int("rate_limit.global_burst", &r.global_burst, RATE_GLOBAL_BURST)?,
        ipv6_prefix: cx.int("rate_limit.ipv6_prefix", &r.ipv6_prefix, RATE_IPV6_PREFIX)?,
        exempt: IpSet::new(&cx.nets("rate_limit.exempt", &r.exempt)?),
        max_clients: cx.int("rate_limit.max_clients", &r.max_clients, RATE_MAX_CLIENTS)?,
    })
}
