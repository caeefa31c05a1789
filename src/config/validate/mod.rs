//! What the file must mean: turns the shape read by `file` into the
//! validated `model`, one section per file, in the order the sections are
//! checked (so the first error reported is the first one a reader meets).

mod admission;
mod ip_allow;
mod issuers;
mod server;
mod tls;

use super::context::Cx;
use super::file::RawConfig;
use super::{Config, ConfigError};

/// Validates every section and the rules between them.
pub(super) fn config(cx: &Cx<'_>, raw: RawConfig) -> Result<Config, ConfigError> {
    let server = server::server(cx, raw.server.unwrap_or_default())?;
    let cache = server::cache(cx, raw.cache.unwrap_or_default())?;
    let log = server::log(cx, raw.log.unwrap_or_default())?;
    let client_ip = admission::client_ip(cx, raw.client_ip.unwrap_or_default())?;
    let rate_limit = admission::rate_limit(cx, raw.rate_limit.unwrap_or_default())?;
    let ip_allow = ip_allow::ip_allow(cx, raw.ip_allow.unwrap_or_default())?;
    let tls = tls::tls(cx, raw.tls.unwrap_or_default(), &server)?;
    let issuers = issuers::issuers(cx, &raw.issuer, &server.public_url)?;
    Ok(Config { source: cx.path.to_path_buf(), server, cache, log, client_ip, rate_limit, ip_allow, tls, issuers })
}
