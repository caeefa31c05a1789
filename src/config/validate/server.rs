//! `[server]`, `[cache]` and `[log]`: listeners, connection limits, document
//! lifetimes and the access log.

use crate::config::context::Cx;
use crate::config::defaults::*;
use crate::config::file::{RawCache, RawLog, RawServer};
use crate::config::{CacheConfig, ConfigError, LogConfig, ServerConfig};

/// `[server]`: `public_url` is required, and the admin listener is never
/// the public one.
pub(super) fn server(cx: &Cx<'_>, s: RawServer) -> Result<ServerConfig, ConfigError> {
    let listen = cx.listen_or("server.listen", &s.listen, LISTEN)?;
    let admin_listen = cx.listen_or("server.admin_listen", &s.admin_listen, ADMIN_LISTEN)?;
    if listen.same_socket(&admin_listen) {
        return Err(cx.at(
            "server.admin_listen",
            s.admin_listen.as_ref().or(s.listen.as_ref()),
            "must differ from server.listen: the admin endpoints are never public",
        ));
    }
    let public_url = match &s.public_url {
        Some(v) => cx.public_url("server.public_url", v)?,
        None => return Err(cx.whole("server.public_url is required: the https origin cloud providers use to reach this proxy, e.g. \"https://wif.example.com\"")),
    };
    Ok(ServerConfig {
        listen,
        admin_listen,
        public_url,
        max_connections: cx.int("server.max_connections", &s.max_connections, MAX_CONNECTIONS)?,
        header_read_timeout: cx.duration("server.header_read_timeout", &s.header_read_timeout, HEADER_READ_TIMEOUT)?,
        idle_timeout: cx.duration("server.idle_timeout", &s.idle_timeout, IDLE_TIMEOUT)?,
        shutdown_grace: cx.duration("server.shutdown_grace", &s.shutdown_grace, SHUTDOWN_GRACE)?,
        max_header_bytes: cx.int("server.max_header_bytes", &s.max_header_bytes, MAX_HEADER_BYTES)?,
        max_headers: cx.int("server.max_headers", &s.max_headers, MAX_HEADERS)?,
        h2_max_concurrent_streams: cx.int(
            "server.h2_max_concurrent_streams",
            &s.h2_max_concurrent_streams,
            H2_MAX_CONCURRENT_STREAMS,
        )?,
        max_connections_per_ip: cx.int(
            "server.max_connections_per_ip",
            &s.max_connections_per_ip,
            MAX_CONNECTIONS_PER_IP,
        )?,
        listen_backlog: cx.int("server.listen_backlog", &s.listen_backlog, LISTEN_BACKLOG)?,
    })
}

/// `[cache]`: `min_ttl` never exceeds `max_ttl`.
pub(super) fn cache(cx: &Cx<'_>, c: RawCache) -> Result<CacheConfig, ConfigError> {
    let cache = CacheConfig {
        min_ttl: cx.duration("cache.min_ttl", &c.min_ttl, CACHE_MIN_TTL)?,
        max_ttl: cx.duration("cache.max_ttl", &c.max_ttl, CACHE_MAX_TTL)?,
        max_stale: cx.duration("cache.max_stale", &c.max_stale, CACHE_MAX_STALE)?,
        negative_ttl: cx.duration("cache.negative_ttl", &c.negative_ttl, CACHE_NEGATIVE_TTL)?,
        dir: c.dir.as_ref().map(|d| cx.path("cache.dir", d)).transpose()?,
        max_dynamic_entries: cx.int("cache.max_dynamic_entries", &c.max_dynamic_entries, CACHE_MAX_DYNAMIC_ENTRIES)?,
    };
    if cache.min_ttl > cache.max_ttl {
        return Err(match &c.min_ttl {
            Some(v) => cx.invalid("cache.min_ttl", v, "must not exceed cache.max_ttl"),
            None => cx.whole(format!(
                "cache.max_ttl must be at least cache.min_ttl ({} by default)",
                humantime::format_duration(CACHE_MIN_TTL.default)
            )),
        });
    }
    Ok(cache)
}

/// `[log]`.
pub(super) fn log(cx: &Cx<'_>, l: RawLog) -> Result<LogConfig, ConfigError> {
    Ok(LogConfig {
        access: l.access.unwrap_or(LOG_ACCESS),
        denied_lines_per_second: cx.int(
            "log.denied_lines_per_second",
            &l.denied_lines_per_second,
            LOG_DENIED_LINES_PER_SECOND,
        )?,
    })
}
