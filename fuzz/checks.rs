//! What each fuzz target checks, shared with the regression test
//! (`tests/it/fuzz.rs`) that replays every input kept in
//! `fuzz/regressions/<target>/`. A panic here is a finding.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use wif_proxy::config::{Config, RangeFormat, RangeSourceConfig};
use wif_proxy::IpSet;
use wif_proxy::{Lookup, Routes};

/// One fuzz target's check.
pub type Check = fn(&[u8]);

/// Every target by name, for the regression test.
pub const TARGETS: &[(&str, Check)] =
    &[("routes", routes), ("proxy_header", proxy_header), ("ranges", ranges), ("config", config)];

/// Three issuers: listed namespaces, a `*` namespace, a host-bound custom path.
pub static ROUTES: LazyLock<(Config, Routes)> = LazyLock::new(|| {
    let text = r#"
[server]
public_url = "https://wif.example.com"
[[issuer]]
name = "plugins"
kind = "vault-plugin-wif"
upstream = "http://127.0.0.1:8200"
namespaces = ["", "ns1", "ns1/team-a"]
[[issuer]]
name = "any"
kind = "vault-identity"
upstream = "http://127.0.0.1:8200"
namespaces = ["*"]
[[issuer]]
name = "custom"
kind = "custom"
upstream = "http://127.0.0.1:8300"
paths = ["/tenant/jwks.json"]
hosts = ["custom.example.com"]
"#;
    let c = Config::parse(Path::new("fuzz.toml"), text).expect("config");
    let r = Routes::build(&c).expect("routes");
    (c, r)
});

/// The route matcher: a target is found only if it is listed (then the
/// entry equals the target byte for byte) or it is a strict `*`-namespace
/// document path. First byte: which Host; the rest: the target.
pub fn routes(data: &[u8]) {
    let Some((&h, rest)) = data.split_first() else { return };
    let Ok(target) = std::str::from_utf8(rest) else { return };
    let host = match h % 4 {
        0 => None,
        1 => Some("custom.example.com"),
        2 => Some("CUSTOM.Example.COM"),
        _ => Some("wif.example.com"),
    };
    let (config, routes) = &*ROUTES;
    match routes.lookup(host, target) {
        Some(Lookup::Static(i)) => {
            let r = &routes.routes[i];
            assert_eq!(&*r.path, target, "a listed entry is the target itself");
            if config.issuers[r.issuer].name == "custom" {
                assert!(host.is_some_and(|h| h.eq_ignore_ascii_case("custom.example.com")), "host-bound entry");
            }
        }
        Some(Lookup::Dynamic { issuer, path, .. }) => {
            assert_eq!(path, target);
            assert_eq!(config.issuers[issuer].name, "any");
            let ns = target
                .strip_prefix("/v1/")
                .and_then(|r| {
                    r.strip_suffix("identity/oidc/.well-known/keys")
                        .or_else(|| r.strip_suffix("identity/oidc/.well-known/openid-configuration"))
                })
                .expect("a document path");
            for seg in ns.split('/').filter(|s| !s.is_empty()) {
                assert!(wif_proxy::config::is_namespace_segment(seg), "segment {seg:?} of {target:?}");
            }
            assert!(!target.contains(['?', '#', '%', '\\']) && !target.contains("//"), "{target:?}");
        }
        None => {
            assert!(
                !routes.routes.iter().any(|r| *r.path == *target && config.issuers[r.issuer].hosts.is_empty()),
                "a listed target was refused: {target:?}"
            );
        }
    }
}

static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime"));

/// The PROXY v1/v2 header reader, fed the input as the connection's bytes
/// (in two reads, split where the first byte says). On success, the bytes it
/// read past the header plus what it left unread are exactly what followed
/// the header: nothing of the HTTP stream is lost or invented.
pub fn proxy_header(data: &[u8]) {
    let Some((&split, bytes)) = data.split_first() else { return };
    let split = usize::from(split).min(bytes.len());
    let peer: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
    let trusted = IpSet::new(&["127.0.0.0/8".parse().expect("net")]);
    let mut stream = tokio::io::AsyncReadExt::chain(&bytes[..split], &bytes[split..]);
    let result = RUNTIME.block_on(wif_proxy::read_proxy_header(&mut stream, peer, &trusted, Duration::from_secs(1)));
    if let Ok((_, rest)) = result {
        let mut after = rest.to_vec();
        RUNTIME.block_on(tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut after)).expect("read slices");
        assert!(bytes.ends_with(&after), "what follows the header is a suffix of the input");
        assert!(bytes.len() > after.len(), "a header was consumed");
    }
}

/// The range-file parsers: first byte picks the format. Whatever parses
/// must survive a round trip through the plain CIDR format unchanged.
pub fn ranges(data: &[u8]) {
    let Some((&f, doc)) = data.split_first() else { return };
    let format = [
        RangeFormat::Cidrs,
        RangeFormat::Aws,
        RangeFormat::Gcp,
        RangeFormat::Goog,
        RangeFormat::Azure,
        RangeFormat::Oracle,
    ][usize::from(f) % 6];
    let Ok(nets) = wif_proxy::parse_ranges(&RangeSourceConfig::unfiltered("fuzz", format), doc) else {
        return;
    };
    let text: String = nets.iter().map(|n| format!("{n}\n")).collect();
    let again = wif_proxy::parse_ranges(&RangeSourceConfig::unfiltered("fuzz", RangeFormat::Cidrs), text.as_bytes())
        .expect("our own output parses");
    assert_eq!(again, nets, "round trip through the CIDR format");
    let set = IpSet::new(&nets);
    for n in &nets {
        for ip in [n.network(), n.broadcast()] {
            // IPv4-mapped IPv6 addresses are looked up as the IPv4 client they are.
            if ip.to_canonical() == ip {
                assert!(set.contains(ip), "{ip} of {n} is in the set");
            }
        }
    }
}

/// The configuration loader: any text either loads (and then builds its
/// route table) or is refused with an error that names the file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse(Path::new("fuzz.toml"), text) {
        Ok(c) => {
            let _ = Routes::build(&c);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("fuzz.toml"), "error does not name the file: {msg}");
        }
    }
}
