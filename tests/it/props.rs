//! Property tests: the allowlist forwards a target only if it is listed (or
//! matches a `*` namespace pattern), and then byte for byte; the range set
//! agrees with a naive linear scan.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use proptest::prelude::*;
use wif_proxy::IpSet;
use wif_proxy::Lookup;

// The same allowlist the route fuzzer checks.
use crate::fuzz::checks::ROUTES;

/// Targets near the allowlist: listed paths, mutated in the ways attackers try.
fn target() -> impl Strategy<Value = String> {
    let listed = prop::sample::select(vec![
        "/v1/identity/oidc/plugins/.well-known/keys",
        "/v1/ns1/identity/oidc/plugins/.well-known/openid-configuration",
        "/v1/ns1/team-a/identity/oidc/plugins/.well-known/keys",
        "/v1/x/identity/oidc/.well-known/keys",
        "/tenant/jwks.json",
    ]);
    let noise = prop::sample::select(vec![
        "", "/", "//", "/..", "/.", "%2f", "%2e%2e", "?", "?x=1", "#f", ";", "\\", "%00", "A", "sys/", "../", " ", "\t",
    ]);
    prop_oneof![
        // A listed path with something inserted somewhere.
        (listed.clone(), noise.clone(), any::<prop::sample::Index>()).prop_map(|(p, n, at)| {
            let cut = at.index(p.len() + 1);
            let cut = (0..=cut).rev().find(|i| p.is_char_boundary(*i)).unwrap_or(0);
            format!("{}{}{}", &p[..cut], n, &p[cut..])
        }),
        // A listed path with a case flip.
        (listed.clone(), any::<prop::sample::Index>()).prop_map(|(p, at)| {
            let i = at.index(p.len());
            p.char_indices().map(|(j, c)| if j == i { c.to_ascii_uppercase() } else { c }).collect()
        }),
        listed.prop_map(str::to_string),
        // Namespace-shaped targets for the wildcard.
        "[a-zA-Z0-9_./%-]{0,12}(/[a-zA-Z0-9_./%-]{0,12}){0,10}"
            .prop_map(|ns| format!("/v1/{ns}/identity/oidc/.well-known/keys")),
        // Anything at all.
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn a_target_is_forwarded_only_if_allowlisted_and_then_byte_for_byte(t in target(), host in prop::option::of("[a-z.]{0,20}")) {
        let (config, routes) = &*ROUTES;
        match routes.lookup(host.as_deref(), &t) {
            Some(Lookup::Static(i)) => {
                let r = &routes.routes[i];
                // The forwarded path is the allowlist entry, and it is the target itself.
                prop_assert_eq!(&*r.path, t.as_str());
                if config.issuers[r.issuer].name == "custom" {
                    prop_assert!(host.as_deref().is_some_and(|h| h.eq_ignore_ascii_case("custom.example.com")));
                }
            }
            Some(Lookup::Dynamic { issuer, path, .. }) => {
                prop_assert_eq!(path, t.as_str());
                prop_assert_eq!(&config.issuers[issuer].name, "any");
                // Only the strict namespace alphabet, no dot segments, encodings or queries.
                let ns = t.strip_prefix("/v1/").and_then(|r| r.strip_suffix("identity/oidc/.well-known/keys")
                    .or_else(|| r.strip_suffix("identity/oidc/.well-known/openid-configuration"))).expect("shape");
                for seg in ns.split('/').filter(|s| !s.is_empty()) {
                    prop_assert!(wif_proxy::config::check_namespace(seg).is_ok(), "segment {seg:?} of {t:?}");
                }
                prop_assert!(!t.contains(['?', '#', '%', '\\']) && !t.contains("//") && !t.contains("/./") && !t.contains("/../"));
            }
            None => {
                // Nothing listed was refused.
                prop_assert!(!routes.routes.iter().any(|r| *r.path == t && config.issuers[r.issuer].hosts.is_empty()));
            }
        }
    }

    #[test]
    fn range_lookup_agrees_with_a_linear_scan(
        v4 in prop::collection::vec((any::<u32>(), 0u8..=32), 0..60),
        v6 in prop::collection::vec((any::<u128>(), 0u8..=128), 0..60),
        probes in prop::collection::vec(any::<u128>(), 1..80),
    ) {
        let mut nets: Vec<IpNet> = Vec::new();
        for (a, l) in &v4 {
            nets.push(IpNet::new(IpAddr::V4(Ipv4Addr::from(*a)), *l).unwrap().trunc());
        }
        for (a, l) in &v6 {
            nets.push(IpNet::new(IpAddr::V6(Ipv6Addr::from(*a)), *l).unwrap().trunc());
        }
        let set = IpSet::new(&nets);
        // Probe random addresses and the edges of every prefix.
        let mut ips: Vec<IpAddr> = probes.iter().flat_map(|p| [IpAddr::V4(Ipv4Addr::from(*p as u32)), IpAddr::V6(Ipv6Addr::from(*p))]).collect();
        for n in &nets {
            ips.push(n.network());
            ips.push(n.broadcast());
            match n {
                IpNet::V4(n) => {
                    ips.extend(u32::from(n.network()).checked_sub(1).map(|x| IpAddr::V4(x.into())));
                    ips.extend(u32::from(n.broadcast()).checked_add(1).map(|x| IpAddr::V4(x.into())));
                }
                IpNet::V6(n) => {
                    ips.extend(u128::from(n.network()).checked_sub(1).map(|x| IpAddr::V6(x.into())));
                    ips.extend(u128::from(n.broadcast()).checked_add(1).map(|x| IpAddr::V6(x.into())));
                }
            }
        }
        for ip in ips {
            let naive = nets.iter().any(|n| n.contains(&ip));
            prop_assert_eq!(set.contains(ip), naive, "{} in {:?}", ip, nets);
        }
    }
}
