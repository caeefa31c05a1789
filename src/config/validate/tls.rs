//! `[tls]`, its `[[tls.certificate]]`s and `[tls.acme]`: TLS on the public
//! listener.

use crate::config::context::Cx;
use crate::config::defaults::*;
use crate::config::file::{RawAcme, RawTls};
use crate::config::values::PlainHttp;
use crate::config::{
    AcmeChallenge, AcmeSettings, CertificateFiles, ConfigError, Listen, ServerConfig, TlsConfig, TlsMode,
};

/// `[tls]`: `files` needs certificates, `acme` needs `[tls.acme]`, and the
/// plain-HTTP listener is neither of the server's listeners.
pub(super) fn tls(cx: &Cx<'_>, r: RawTls, server: &ServerConfig) -> Result<TlsConfig, ConfigError> {
    let mode = cx.keyword("tls.mode", &r.mode, TLS_MODE)?;
    let http_listen = match &r.http_listen {
        None => None,
        Some(v) => {
            let addr = cx.listen("tls.http_listen", v)?;
            if addr.same_socket(&server.listen) || addr.same_socket(&server.admin_listen) {
                return Err(cx.invalid("tls.http_listen", v, "must differ from server.listen and server.admin_listen"));
            }
            Some(addr)
        }
    };
    let mut certificates = Vec::with_capacity(r.certificate.len());
    for (i, c) in r.certificate.iter().enumerate() {
        certificates.push(CertificateFiles {
            cert: cx.path(&format!("tls.certificate[{i}].cert"), &c.cert)?,
            key: cx.path(&format!("tls.certificate[{i}].key"), &c.key)?,
        });
    }
    let acme = r.acme.as_ref().map(|a| acme(cx, a, http_listen.as_ref())).transpose()?;
    match mode {
        TlsMode::Files if certificates.is_empty() => {
            return Err(cx.whole("tls.mode = \"files\" needs at least one [[tls.certificate]] with cert and key"));
        }
        TlsMode::Acme if acme.is_none() => {
            return Err(cx.whole("tls.mode = \"acme\" needs a [tls.acme] table with domains and cache_dir"));
        }
        _ => {}
    }
    let hsts = match &r.hsts {
        Some(v) if v.get_ref().is_empty() => None,
        Some(v) => Some(cx.header_value("tls.hsts", v)?),
        None => Some(HSTS.to_string()),
    };
    Ok(TlsConfig {
        mode,
        handshake_timeout: cx.duration("tls.handshake_timeout", &r.handshake_timeout, TLS_HANDSHAKE_TIMEOUT)?,
        hsts,
        http_listen,
        certificates,
        reload_interval: cx.duration("tls.reload_interval", &r.reload_interval, TLS_RELOAD_INTERVAL)?,
        acme,
    })
}

/// `[tls.acme]`: DNS names to certify, where the account lives, and a
/// challenge the CA can reach (`http-01` needs `tls.http_listen`).
fn acme(cx: &Cx<'_>, a: &RawAcme, http_listen: Option<&Listen>) -> Result<AcmeSettings, ConfigError> {
    let domains = a
        .domains
        .iter()
        .enumerate()
        .map(|(j, d)| cx.fqdn(&format!("tls.acme.domains[{j}]"), d))
        .collect::<Result<Vec<_>, _>>()?;
    let contact = a
        .contact
        .iter()
        .map(|c| match c.get_ref() {
            v if v.starts_with("mailto:") => v.clone(),
            v => format!("mailto:{v}"),
        })
        .collect();
    let directory = match &a.directory {
        None => ACME_DIRECTORY.to_string(),
        Some(v) => match ACME_DIRECTORY_NAMES.iter().find(|(name, _)| name == v.get_ref()) {
            Some((_, url)) => url.to_string(),
            None => cx.url("tls.acme.directory", v, PlainHttp::Never).map_err(|_| {
                let names: Vec<&str> = ACME_DIRECTORY_NAMES.iter().map(|(name, _)| *name).collect();
                cx.invalid("tls.acme.directory", v, format!("{} or an https URL", names.join(", ")))
            })?,
        },
    };
    let challenge = cx.keyword("tls.acme.challenge", &a.challenge, ACME_CHALLENGE)?;
    if challenge == AcmeChallenge::Http01 && http_listen.is_none() {
        return Err(cx.at(
            "tls.acme.challenge",
            a.challenge.as_ref(),
            "http-01 needs tls.http_listen (port 80 as the CA sees it)",
        ));
    }
    let Some(cache_dir) = &a.cache_dir else {
        return Err(cx.whole("tls.acme.cache_dir is required: the account and certificates must survive restarts (Let's Encrypt rate-limits re-issuance)"));
    };
    let cache_dir = cx.path("tls.acme.cache_dir", cache_dir)?;
    if domains.is_empty() {
        return Err(cx.whole("tls.acme.domains is empty"));
    }
    Ok(AcmeSettings {
        domains,
        contact,
        directory,
        directory_ca: cx.optional_path("tls.acme.directory_ca", &a.directory_ca)?,
        cache_dir,
        challenge,
    })
}
