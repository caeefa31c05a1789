//! The configuration as a whole: defaults, error placement, and the exact
//! wording of messages operators (and the integration tests) rely on.

use std::path::Path;
use std::time::Duration;

use super::keyword::Keyword;
use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("t.toml"), text)
}

/// The message of a configuration that must fail.
fn error(text: &str) -> String {
    parse(text).expect_err("must be refused").to_string()
}

const MIN: &str = "[server]\npublic_url = \"https://wif.example.com\"\n[[issuer]]\nname = \"v\"\nkind = \"vault-plugin-wif\"\nupstream = \"http://127.0.0.1:8200\"\n";

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MIN).expect("valid");
    assert_eq!(c.issuers[0].namespaces.listed, vec![String::new()]);
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(5));
    assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.server.admin_listen, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(c.cache.max_stale, Duration::from_secs(86400));
    assert_eq!(c.issuers[0].public_url, "https://wif.example.com");
    assert_eq!(c.issuers[0].upstream_connect_timeout, Duration::from_secs(2));
    assert_eq!(c.tls.hsts.as_deref(), Some("max-age=31536000"));
    assert_eq!(c.client_ip.source, ClientIpSource::Peer);
    assert_eq!((c.rate_limit.per_client, c.rate_limit.ipv6_prefix), (50, 64));
}

/// Sources load in every mode; `admit = false` keeps one for fetch
/// accounting only, beside sources that admit.
#[test]
fn sources_may_be_for_accounting_only() {
    let sources = "[[ip_allow.source]]\nname = \"aws\"\ncidrs = [\"10.0.0.0/8\"]\n[[ip_allow.source]]\nname = \"mon\"\ncidrs = [\"10.1.0.0/16\"]\nadmit = false\n";
    for mode in ["off", "report", "enforce"] {
        let c = parse(&format!("[ip_allow]\nmode = \"{mode}\"\n{sources}{MIN}")).expect("valid");
        let admit: Vec<(&str, bool)> = c.ip_allow.sources.iter().map(|s| (s.name.as_str(), s.admit)).collect();
        assert_eq!(admit, [("aws", true), ("mon", false)], "mode {mode}");
    }
    let off = parse(&format!("[[ip_allow.source]]\nname = \"mon\"\ncidrs = []\nadmit = false\n{MIN}")).expect("valid");
    assert_eq!(off.ip_allow.mode, IpAllowMode::Off, "off needs no source that admits");
}

#[test]
fn connect_timeout_defaults_to_at_most_the_fetch_timeout() {
    let c = parse(&format!("{MIN}upstream_timeout = \"500ms\"\n")).expect("valid");
    assert_eq!(c.issuers[0].upstream_connect_timeout, Duration::from_millis(500));
}

#[test]
fn errors_name_line_field_and_value() {
    let text = format!("{MIN}namespaces = [\"ok\", \"a/../b\"]\n");
    let e = error(&text);
    assert!(e.starts_with("t.toml:7: issuer[0].namespaces[1] = \"a/../b\""), "{e}");
    let e = error(&MIN.replace("[server]", "[server]\nlisten = \"nope\""));
    assert!(e.starts_with("t.toml:2: server.listen = \"nope\""), "{e}");
}

#[test]
fn syntax_errors_quote_the_line() {
    let e = error(&format!("{MIN}upstream_timeout = 5\n"));
    assert!(e.starts_with("t.toml:7: ") && e.ends_with("(in `upstream_timeout = 5`)"), "{e}");
    assert!(error(&format!("{MIN}bogus = 1\n")).contains("bogus"));
}

#[test]
fn enumerated_words_come_from_serde_and_round_trip() {
    fn check<T: Keyword + std::fmt::Debug>(expected: &[&str]) {
        assert_eq!(T::words(), expected);
        for w in expected {
            let v = T::from_word(w).unwrap_or_else(|| panic!("{w}"));
            assert_eq!(v.word(), *w);
        }
        assert_eq!(T::from_word("nonsense"), None);
    }
    check::<TlsMode>(&["off", "files", "acme"]);
    check::<AcmeChallenge>(&["tls-alpn-01", "http-01"]);
    check::<ClientIpSource>(&["peer", "proxy_protocol", "x_forwarded_for"]);
    check::<IpAllowMode>(&["off", "report", "enforce"]);
    check::<RangeFormat>(&["cidrs", "aws", "gcp", "goog", "azure", "oracle"]);
    check::<IssuerKind>(&[
        "vault-plugin-wif",
        "vault-identity",
        "vault-oidc-provider",
        "spire",
        "kubernetes",
        "custom",
    ]);
    assert_eq!(IssuerKind::VaultOidcProvider.as_str(), "vault-oidc-provider");
    assert_eq!(RangeFormat::Goog.as_str(), "goog");
}

/// Today's texts, word for word: `(file addition, message)`.
#[test]
fn unknown_words_list_what_is_accepted() {
    let cases = [
        ("[tls]\nmode = \"tls13\"\n", "t.toml:2: tls.mode = \"tls13\": expected one of off, files, acme"),
        (
            "[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"a.example\"]\ncache_dir = \"c\"\nchallenge = \"dns-01\"\n",
            "t.toml:6: tls.acme.challenge = \"dns-01\": expected tls-alpn-01 or http-01",
        ),
        (
            "[client_ip]\nsource = \"forwarded\"\n",
            "t.toml:2: client_ip.source = \"forwarded\": expected one of peer, proxy_protocol, x_forwarded_for",
        ),
        ("[ip_allow]\nmode = \"on\"\n", "t.toml:2: ip_allow.mode = \"on\": expected one of off, report, enforce"),
        (
            "[[ip_allow.source]]\nname = \"s\"\nformat = \"ibm\"\ncidrs = []\n",
            "t.toml:3: ip_allow.source[0].format = \"ibm\": unknown format; expected one of cidrs, aws, gcp, goog, azure, oracle",
        ),
        (
            "[[ip_allow.source]]\nname = \"s\"\nfile = \"f\"\n",
            "t.toml:2: ip_allow.source[0].name = \"s\": format is required: one of cidrs, aws, gcp, goog, azure, oracle",
        ),
    ];
    for (extra, message) in cases {
        // Sections first, so the line numbers are the extra text's own.
        assert_eq!(error(&format!("{extra}{MIN}")), message);
    }
    let kind = error(&MIN.replace("vault-plugin-wif", "vault"));
    assert_eq!(
        kind,
        "t.toml:5: issuer[0].kind = \"vault\": unknown kind; expected one of vault-plugin-wif, vault-identity, vault-oidc-provider, spire, kubernetes, custom"
    );
}

#[test]
fn messages_between_settings() {
    let cases = [
        ("[cache]\nmax_ttl = \"10s\"\n", "t.toml: cache.max_ttl must be at least cache.min_ttl (30s by default)"),
        ("[cache]\nmin_ttl = \"10m\"\n", "t.toml:2: cache.min_ttl = \"10m\": must not exceed cache.max_ttl"),
        (
            "[client_ip]\nsource = \"proxy_protocol\"\n",
            "t.toml:2: client_ip.source = \"proxy_protocol\": needs client_ip.trusted_proxies: the addresses of the load balancers allowed to name the client",
        ),
        ("[ip_allow]\nmode = \"report\"\n", "t.toml:2: ip_allow.mode = \"report\": needs at least one [[ip_allow.source]]"),
        (
            "[ip_allow]\nmode = \"enforce\"\n[[ip_allow.source]]\nname = \"aws\"\ncidrs = []\nadmit = false\n",
            "t.toml:2: ip_allow.mode = \"enforce\": needs at least one [[ip_allow.source]] that admits (every source has admit = false)",
        ),
        (
            "[[ip_allow.source]]\nname = \"other\"\ncidrs = []\n",
            "t.toml:2: ip_allow.source[0].name = \"other\": reserved: fetch accounting names clients in no source \"other\"",
        ),
        (
            "[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"a.example\"]\ncache_dir = \"c\"\nchallenge = \"http-01\"\n",
            "t.toml:6: tls.acme.challenge = \"http-01\": http-01 needs tls.http_listen (port 80 as the CA sees it)",
        ),
        (
            "[tls]\nhttp_listen = \"127.0.0.1:8080\"\n",
            "t.toml:2: tls.http_listen = \"127.0.0.1:8080\": must differ from server.listen and server.admin_listen",
        ),
        (
            "[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"a.example\"]\ncache_dir = \"c\"\ndirectory = \"ftp://x\"\n",
            "t.toml:6: tls.acme.directory = \"ftp://x\": letsencrypt, letsencrypt-staging or an https URL",
        ),
    ];
    for (extra, message) in cases {
        let e = error(&format!("{extra}{MIN}"));
        assert!(e.contains(message), "{e:?} should contain {message:?}");
    }
    let e = error(&MIN.replace("[server]", "[server]\nadmin_listen = \"127.0.0.1:8080\""));
    assert_eq!(
        e,
        "t.toml:2: server.admin_listen = \"127.0.0.1:8080\": must differ from server.listen: the admin endpoints are never public"
    );
}

#[test]
fn one_name_rule_for_issuers_and_sources() {
    let issuer = error(&MIN.replace("name = \"v\"", "name = \"v.1\""));
    assert!(issuer.ends_with("issuer[0].name = \"v.1\": must be 1-64 characters of A-Z a-z 0-9 - _"), "{issuer}");
    let source = error(&format!("[[ip_allow.source]]\nname = \"a b\"\ncidrs = []\n{MIN}"));
    assert!(
        source.ends_with("ip_allow.source[0].name = \"a b\": must be 1-64 characters of A-Z a-z 0-9 - _"),
        "{source}"
    );
}

#[test]
fn one_dns_name_rule_for_hosts_and_acme_domains() {
    let host = |h: &str| parse(&format!("{MIN}hosts = [\"{h}\"]\n"));
    assert_eq!(host("Wif.Example.COM").expect("valid").issuers[0].hosts, vec!["wif.example.com"]);
    assert!(host("wif").is_ok(), "a host needs no dot");
    let acme =
        |d: &str| parse(&format!("[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"{d}\"]\ncache_dir = \"c\"\n{MIN}"));
    assert_eq!(acme("WIF.example.com").expect("valid").tls.acme.expect("acme").domains, vec!["wif.example.com"]);
    let e = acme("wif").expect_err("an ACME domain is fully qualified").to_string();
    assert!(
        e.ends_with("tls.acme.domains[0] = \"wif\": a fully qualified DNS name such as \"wif.example.com\""),
        "{e}"
    );
    for bad in ["a..example", "-a.example", "a_b.example", "a.example:443", "*.example.com"] {
        let e = host(bad).expect_err(bad).to_string();
        assert!(e.contains("a host is a DNS name"), "{e}");
        assert!(acme(bad).is_err(), "{bad}");
    }
}

#[test]
fn kind_decides_which_lists_apply() {
    let e =
        error(&MIN.replace("vault-plugin-wif", "spire").replace("name = \"v\"", "name = \"v\"\nnamespaces = [\"a\"]"));
    assert!(e.ends_with("issuer[0].namespaces = \"a\": namespaces apply only to Vault kinds, not spire"), "{e}");
    let e = error(&(MIN.replace("vault-plugin-wif", "vault-oidc-provider") + "providers = [\"a\", \"a\"]\n"));
    assert!(e.ends_with("issuer[0].providers[1] = \"a\": listed twice"), "{e}");
    let e = error(&(MIN.replace("vault-plugin-wif", "vault-oidc-provider") + "providers = [\"a..b\"]\n"));
    assert!(e.contains("a provider name is 1-64 characters"), "{e}");
    let e = error(&format!("{MIN}namespaces = [\"*\", \"a\", \"*\", \"a\"]\n"));
    assert!(e.ends_with("issuer[0].namespaces[3] = \"a\": listed twice"), "{e}");
    let c = parse(&format!("{MIN}namespaces = [\"*\", \"a\"]\n")).expect("valid");
    assert_eq!(c.issuers[0].namespaces, Namespaces { listed: vec!["a".into()], wildcard: true });
}

#[test]
fn relative_paths_are_relative_to_the_file() {
    let c =
        Config::parse(Path::new("/etc/wif/proxy.toml"), &format!("[cache]\ndir = \"cache\"\n{MIN}")).expect("valid");
    assert_eq!(c.cache.dir.as_deref(), Some(Path::new("/etc/wif/cache")));
    let e = error(&format!("[cache]\ndir = \" \"\n{MIN}"));
    assert!(e.ends_with("cache.dir = \" \": must not be empty"), "{e}");
}

#[test]
fn fetched_urls_are_https_but_range_mirrors_may_be_local() {
    let source = |url: &str| {
        parse(&format!(
            "[ip_allow]\nstate_dir = \"s\"\n[[ip_allow.source]]\nname = \"s\"\nformat = \"cidrs\"\nurl = \"{url}\"\n{MIN}"
        ))
    };
    assert!(source("https://ranges.example.com/r").is_ok());
    assert!(source("http://127.0.0.1:8000/r").is_ok() && source("http://[::1]/r").is_ok());
    let e = source("http://ranges.example.com/r").expect_err("plain http").to_string();
    assert!(e.ends_with("must be an https URL (plain http only to a loopback address)"), "{e}");
    let directory = |url: &str| {
        parse(&format!(
            "[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"a.example\"]\ncache_dir = \"c\"\ndirectory = \"{url}\"\n{MIN}"
        ))
    };
    assert_eq!(
        directory("letsencrypt-staging").expect("valid").tls.acme.expect("acme").directory,
        LETS_ENCRYPT_STAGING
    );
    assert!(directory("https://127.0.0.1:14000/dir").is_ok());
    assert!(directory("http://127.0.0.1:14000/dir").is_err(), "the ACME directory is https, even on loopback");
}

/// `upstream` as a list, `unix:`, `upstream_host`, the forwarding headers and
/// the bearer token file: what they mean, and every refusal naming file,
/// line, field and value.
#[test]
fn upstream_keys() {
    let issuer = |kind: &str, upstream: &str, extra: &str| {
        format!("[server]\npublic_url = \"https://oidc.example.com:8443\"\n[[issuer]]\nname = \"i\"\nkind = \"{kind}\"\nupstream = {upstream}\n{extra}")
    };
    // A list, in order; one label for the cache and persisted documents.
    let c =
        parse(&issuer("vault-plugin-wif", "[\n  \"https://v0:8200\",\n  \"https://v1:8200\",\n]", "")).expect("valid");
    let origins: Vec<&str> = c.issuers[0].upstream.iter().map(|u| u.origin.as_str()).collect();
    assert_eq!(origins, ["https://v0:8200", "https://v1:8200"]);
    assert_eq!(c.issuers[0].upstream_label(), "https://v0:8200 https://v1:8200");
    assert_eq!(c.issuers[0].upstream_host, None, "each node's own name unless set");
    // SPIRE is sent the public host; a unix socket speaks plain HTTP.
    let c =
        parse(&issuer("spire", "\"unix:/run/spire/oidc.sock\"", "upstream_forwarded_headers = true\n")).expect("valid");
    let i = &c.issuers[0];
    assert_eq!(i.upstream[0].unix.as_deref(), Some(Path::new("/run/spire/oidc.sock")));
    assert_eq!((i.upstream[0].base().as_str(), i.upstream[0].https), ("http://localhost", false));
    assert_eq!(i.upstream_host.as_deref(), Some("oidc.example.com:8443"));
    assert_eq!(i.upstream_forwarded, Some(Forwarded { host: "oidc.example.com:8443".into(), proto: "https".into() }));
    let c =
        parse(&issuer("spire", "\"http://127.0.0.1:8080\"", "upstream_host = \"Spire.Internal\"\n")).expect("valid");
    assert_eq!(c.issuers[0].upstream_host.as_deref(), Some("spire.internal"));

    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "eyJhbGciOi.payload.sig\n").expect("write");
    let missing = dir.path().join("missing");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let with_token = |upstream: &str, file: &Path| {
        issuer("kubernetes", upstream, &format!("upstream_bearer_token_file = \"{}\"\n", file.display()))
    };
    let c = parse(&with_token("\"https://kubernetes.default.svc\"", &token)).expect("valid");
    assert_eq!(c.issuers[0].upstream_bearer_token_file.as_deref(), Some(token.as_path()));
    assert!(parse(&with_token("\"http://127.0.0.1:6443\"", &token)).is_ok(), "loopback may be plain");

    let cases: Vec<(String, String)> = vec![
        (issuer("spire", "[]", ""), "t.toml:6: issuer[0].upstream = []: upstream is empty: give one origin, or several to fail over between".into()),
        (
            issuer("spire", "\"ftp://spire:8080\"", ""),
            "t.toml:6: issuer[0].upstream = \"ftp://spire:8080\": unknown scheme \"ftp\": write http://host:port, https://host:port or unix:/path/to.sock".into(),
        ),
        (
            issuer("spire", "[\"https://a\",\n\"gopher://b\"]", ""),
            "t.toml:7: issuer[0].upstream[1] = \"gopher://b\": unknown scheme \"gopher\"".into(),
        ),
        (
            issuer("spire", "[\"https://a\", \"https://a\"]", ""),
            "t.toml:6: issuer[0].upstream[1] = \"https://a\": listed twice".into(),
        ),
        (
            issuer("spire", "[\"https://a\", \"http://b\"]", ""),
            "t.toml:6: issuer[0].upstream[1] = \"http://b\": every node of one issuer is reached the same way".into(),
        ),
        (
            issuer("spire", "\"unix:run/oidc.sock\"", ""),
            "t.toml:6: issuer[0].upstream = \"unix:run/oidc.sock\": a unix socket upstream is unix:/absolute/path/to.sock".into(),
        ),
        (
            issuer("spire", "\"https://a\"", "upstream_host = \"a/b\"\n"),
            "t.toml:7: issuer[0].upstream_host = \"a/b\": a Host is host or host:port".into(),
        ),
        (
            issuer("spire", "\"https://a\"", "upstream_host = \"u@a\"\n"),
            "t.toml:7: issuer[0].upstream_host = \"u@a\": a Host is host or host:port".into(),
        ),
        (
            with_token("\"https://k8s\"", &missing),
            format!("t.toml:7: issuer[0].upstream_bearer_token_file = \"{}\": cannot read: No such file or directory", missing.display()),
        ),
        (
            with_token("\"https://k8s\"", &empty),
            format!("t.toml:7: issuer[0].upstream_bearer_token_file = \"{}\": the token file is empty", empty.display()),
        ),
        (
            with_token("\"http://k8s:6443\"", &token),
            format!("t.toml:7: issuer[0].upstream_bearer_token_file = \"{}\": the token would cross the network in clear to http://k8s:6443", token.display()),
        ),
        (
            issuer("spire", "\"unix:/run/oidc.sock\"", "upstream_ca = \"ca.pem\"\n"),
            "t.toml:6: issuer[0].upstream_ca = \"unix:/run/oidc.sock\": upstream_ca needs an https upstream".into(),
        ),
        (
            issuer("spire", "\"https://a\"", "upstream_forwarded_headers = \"yes\"\n"),
            "t.toml:7: invalid type: string \"yes\", expected a boolean".into(),
        ),
    ];
    for (text, message) in cases {
        let e = error(&text);
        assert!(e.starts_with(&message), "{e:?} should start with {message:?}");
    }
}

#[test]
fn kubernetes_publishes_the_api_servers_two_documents() {
    let c = parse(&MIN.replace("vault-plugin-wif", "kubernetes")).expect("valid");
    assert_eq!(c.issuers[0].kind, IssuerKind::Kubernetes);
    let e = error(
        &MIN.replace("vault-plugin-wif", "kubernetes").replace("name = \"v\"", "name = \"v\"\nnamespaces = [\"a\"]"),
    );
    assert!(e.ends_with("namespaces apply only to Vault kinds, not kubernetes"), "{e}");
}

#[test]
fn listeners_take_systemd_sockets_by_name() {
    let c = parse(&MIN.replace(
        "[server]",
        "[tls]\nhttp_listen = \"systemd:http\"\n[server]\nlisten = \"systemd\"\nadmin_listen = \"systemd:admin\"",
    ))
    .expect("valid");
    assert_eq!(c.server.listen, Listen::Systemd(None));
    assert_eq!(c.server.admin_listen, Listen::Systemd(Some("admin".into())));
    assert_eq!(c.tls.http_listen, Some(Listen::Systemd(Some("http".into()))));
    assert_eq!(c.server.admin_listen.to_string(), "systemd:admin");
    let e = error(&MIN.replace("[server]", "[server]\nlisten = \"systemd:a\"\nadmin_listen = \"systemd:a\""));
    assert!(e.ends_with("must differ from server.listen: the admin endpoints are never public"), "{e}");
    let e = error(&MIN.replace("[server]", "[server]\nlisten = \"systemd:\""));
    assert!(e.starts_with("t.toml:2: server.listen = \"systemd:\": a systemd socket name is 1 to 255"), "{e}");
    let e = error(&MIN.replace("[server]", "[server]\nlisten = \"systemd:a:b\""));
    assert!(e.contains("no ':'"), "{e}");
}
