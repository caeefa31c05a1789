//! `[ip_allow]` and its `[[ip_allow.source]]`s: the source-address allowlist.

use crate::config::context::Cx;
use crate::config::defaults::*;
use crate::config::file::{RawIpAllow, RawRangeSource, Text};
use crate::config::keyword::Keyword;
use crate::config::values::PlainHttp;
use crate::config::{ConfigError, IpAllowConfig, IpAllowMode, RangeFormat, RangeLocation, RangeSourceConfig};

/// `[ip_allow]`: a mode other than `off` needs a source that admits, and URL
/// sources need somewhere to keep their last good copy. Sources are loaded
/// in every mode: in `off` (and with `admit = false`) they only name clients
/// in fetch accounting.
pub(super) fn ip_allow(cx: &Cx<'_>, r: RawIpAllow) -> Result<IpAllowConfig, ConfigError> {
    let mode = cx.keyword("ip_allow.mode", &r.mode, IP_ALLOW_MODE)?;
    let mut sources: Vec<RangeSourceConfig> = Vec::with_capacity(r.source.len());
    for (i, raw) in r.source.iter().enumerate() {
        let source = range_source(cx, i, raw, &sources)?;
        sources.push(source);
    }
    if mode != IpAllowMode::Off && sources.is_empty() {
        return Err(cx.at("ip_allow.mode", r.mode.as_ref(), "needs at least one [[ip_allow.source]]"));
    }
    if mode != IpAllowMode::Off && !sources.iter().any(|s| s.admit) {
        return Err(cx.at(
            "ip_allow.mode",
            r.mode.as_ref(),
            "needs at least one [[ip_allow.source]] that admits (every source has admit = false)",
        ));
    }
    let has_url = sources.iter().any(|s| matches!(s.location, RangeLocation::Url(_)));
    let state_dir = r.state_dir.as_ref().map(|d| cx.path("ip_allow.state_dir", d)).transpose()?;
    if has_url && state_dir.is_none() {
        return Err(cx.whole(
            "ip_allow sources with a url need ip_allow.state_dir, where the last good copy is kept for restarts",
        ));
    }
    Ok(IpAllowConfig {
        mode,
        refresh: cx.duration("ip_allow.refresh", &r.refresh, IP_ALLOW_REFRESH)?,
        state_dir,
        sources,
    })
}

/// `[[ip_allow.source]]` number `i`, after `earlier`: a name of its own;
/// exactly one of `file`, `url`, `cidrs`; a format (inline CIDRs need none);
/// only the filters that format has.
fn range_source(
    cx: &Cx<'_>,
    i: usize,
    src: &RawRangeSource,
    earlier: &[RangeSourceConfig],
) -> Result<RangeSourceConfig, ConfigError> {
    let f = |name: &str| format!("ip_allow.source[{i}].{name}");
    let name = cx.name(&f("name"), &src.name)?;
    if earlier.iter().any(|o| o.name == name) {
        return Err(cx.invalid(&f("name"), &src.name, "another source already has this name"));
    }
    if name == OTHER_SOURCE {
        return Err(cx.invalid(
            &f("name"),
            &src.name,
            "reserved: fetch accounting names clients in no source \"other\"",
        ));
    }
    let location = match (&src.file, &src.url, &src.cidrs) {
        (Some(file), None, None) => RangeLocation::File(cx.path(&f("file"), file)?),
        (None, Some(url), None) => RangeLocation::Url(cx.url(&f("url"), url, PlainHttp::ToLoopback)?),
        (None, None, Some(list)) => RangeLocation::Inline(cx.nets(&f("cidrs"), list)?),
        _ => return Err(cx.invalid(&f("name"), &src.name, "a source has exactly one of file, url or cidrs")),
    };
    let format = match (&src.format, &location) {
        (Some(v), _) => cx.word(&f("format"), v)?,
        (None, RangeLocation::Inline(_)) => RangeFormat::Cidrs,
        (None, _) => {
            let words = RangeFormat::words().join(", ");
            return Err(cx.invalid(&f("name"), &src.name, format!("format is required: one of {words}")));
        }
    };
    let has = filters(format);
    let filter = |field: &str, list: &[Text]| -> Result<Vec<String>, ConfigError> {
        if !has.contains(&field) {
            cx.absent(&f(field), list, &format!("format {} has no {field} filter", format.as_str()))?;
        }
        Ok(list.iter().map(|v| v.get_ref().clone()).collect())
    };
    Ok(RangeSourceConfig {
        name,
        format,
        location,
        admit: src.admit.unwrap_or(IP_ALLOW_SOURCE_ADMIT),
        services: filter("services", &src.services)?,
        regions: filter("regions", &src.regions)?,
        scopes: filter("scopes", &src.scopes)?,
        tags: filter("tags", &src.tags)?,
    })
}

/// The filter keys a format's data can be narrowed by.
fn filters(format: RangeFormat) -> &'static [&'static str] {
    match format {
        RangeFormat::Aws => &["services", "regions"],
        RangeFormat::Gcp => &["scopes"],
        RangeFormat::Azure => &["tags"],
        RangeFormat::Oracle => &["regions", "tags"],
        RangeFormat::Cidrs | RangeFormat::Goog => &[],
    }
}
