//! The status page: one HTML document, no script, no external asset, one
//! inline style sheet allowed by its hash in a strict Content-Security-Policy.
//! Every value is escaped; key IDs, error texts and URLs come from issuers
//! and are shown as text, never as markup. The page reloads itself every
//! 15 s (`<meta http-equiv="refresh">`), which is what an operator watching a
//! rotation wants, and which needs no JavaScript.

use std::fmt::Write as _;
use std::sync::OnceLock;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{DocumentStatus, FetchState, IssuerStatus, SourceFetch, Status};

/// Seconds between the page's own reloads.
const REFRESH_SECONDS: u32 = 15;

/// The one style sheet (its hash is in the policy, so it must not change
/// at run time).
const CSS: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2430;background:#f4f6f9}\
header{background:#1d2430;color:#fff;padding:14px 24px;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}\
header h1{font-size:20px;margin:0}header .meta{color:#b9c2d0;font-size:12px}\
main{padding:8px 24px 32px;max-width:1400px}\
section{background:#fff;border:1px solid #dde2ea;border-radius:6px;margin:16px 0;padding:12px 16px}\
h2{font-size:16px;margin:4px 0 10px}h3{font-size:14px;margin:14px 0 6px}\
table{border-collapse:collapse;width:100%;margin:4px 0 8px}\
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceff4;vertical-align:top}\
th{font-size:12px;color:#5a6578;font-weight:600}\
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}\
.note{color:#5a6578;font-size:12px;margin:4px 0 8px}.muted{color:#8a94a6}\
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;white-space:nowrap}\
.t{white-space:nowrap}.t small{display:block;color:#8a94a6;font-size:11px}\
.ok{background:#dcf5e3;color:#146c2e}.warn{background:#fff1cc;color:#7a5200}\
.bad{background:#fde0e0;color:#a11}.idle{background:#e9edf3;color:#4a5568}\
.kind{color:#5a6578;font-weight:400;font-size:12px}\
.err{color:#a11;font-size:12px}";

/// The `Content-Security-Policy` of the page: nothing may load, run or
/// frame it; only its own style sheet applies.
pub fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(CSS.as_bytes()));
        format!("default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    })
}

/// Escapes text for an HTML element or a quoted attribute.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.bytes().any(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'')) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The whole page.
pub fn render(s: &Status) -> String {
    let mut p = Page(String::with_capacity(16 * 1024));
    let e = escape;
    p.raw("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    p.raw("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">");
    p.line(format_args!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">"));
    p.line(format_args!("<title>wif-proxy status</title><style>{CSS}</style></head><body>"));
    let (ready_class, ready) = if s.ready { ("ok", "ready") } else { ("bad", "not ready") };
    p.line(format_args!(
        "<header><h1>wif-proxy</h1><span class=\"badge {ready_class}\" id=\"ready\">{ready}</span><span class=\"meta\">version {} · {} · generated {} · reloads every {REFRESH_SECONDS} s</span></header><main>",
        e(&s.version),
        e(&s.config),
        e(&s.generated_at)
    ));

    p.raw("<section id=\"fetches\"><h2>Key sets by source</h2>");
    p.raw("<p class=\"note\">Who fetched each document last, and whether they got what is served now. After a rotation, watch this until every source you federate with shows the current key set.</p>");
    for issuer in &s.issuers {
        for doc in &issuer.documents {
            fetches(&mut p, issuer, doc);
        }
    }
    if s.issuers.is_empty() {
        p.raw("<p class=\"muted\">No issuers.</p>");
    }
    p.raw("</section>");

    p.raw("<section id=\"documents\"><h2>Issuers and documents</h2>");
    for issuer in &s.issuers {
        documents(&mut p, issuer);
    }
    p.raw("</section>");

    p.raw("<section id=\"listeners\"><h2>Listeners and certificates</h2><table><tr><th>listener</th><th>address</th><th>protocol</th><th>accepting</th></tr>");
    for l in &s.listeners {
        let (class, word) = if l.accepting { ("ok", "yes") } else { ("bad", "no") };
        p.line(format_args!(
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td><span class=\"badge {class}\">{word}</span></td></tr>",
            e(&l.name),
            e(&l.address),
            e(&l.protocol)
        ));
    }
    p.raw("</table>");
    if s.certificates.is_empty() {
        p.raw("<p class=\"muted\">No TLS certificates (tls.mode = \"off\", or none issued yet).</p>");
    } else {
        p.raw("<table><tr><th>certificate for</th><th>expires</th><th>in</th></tr>");
        for c in &s.certificates {
            let class = match c.expires_in_seconds {
                i64::MIN..=0 => "bad",
                1..=1_209_599 => "warn",
                _ => "ok",
            };
            p.line(format_args!(
                "<tr><td><code>{}</code></td><td>{}</td><td><span class=\"badge {class}\">{}</span></td></tr>",
                e(&c.host),
                e(&c.not_after),
                e(&duration(c.expires_in_seconds))
            ));
        }
        p.raw("</table>");
    }
    p.raw("</section>");

    let ip = &s.ip_allow;
    p.line(format_args!(
        "<section id=\"ip_allow\"><h2>Source-address allowlist</h2><p>mode <span class=\"badge idle\" id=\"ip-allow-mode\">{}</span> · would deny (report mode) <b id=\"would-deny\">{}</b> · denied <b>{}</b></p>",
        e(&ip.mode),
        ip.would_deny,
        ip.denied
    ));
    if ip.sources.is_empty() {
        p.raw("<p class=\"muted\">No [[ip_allow.source]]: every client is counted as other.</p>");
    } else {
        p.raw("<table><tr><th>source</th><th>format</th><th>admits</th><th>prefixes</th><th>last refresh</th></tr>");
        for r in &ip.sources {
            let admits = if r.admit { "yes" } else { "no (accounting only)" };
            p.line(format_args!(
                "<tr><td>{}</td><td>{}</td><td>{admits}</td><td>{}</td><td>{}</td></tr>",
                e(&r.name),
                e(&r.format),
                r.prefixes,
                e(r.last_refresh.as_deref().unwrap_or("never"))
            ));
        }
        p.raw("</table>");
    }
    p.raw("</section>");

    let r = &s.refusals;
    let limit = if r.rate_limit_enabled { "on" } else { "off" };
    p.line(format_args!(
        "<section id=\"refusals\"><h2>Refusals</h2><p>rate limits {limit} · answered 429 <b id=\"rate-limited\">{}</b></p>",
        r.rate_limited
    ));
    let (counted, none): (Vec<_>, Vec<_>) = r.by_reason.iter().partition(|(_, n)| **n > 0);
    if !counted.is_empty() {
        p.raw("<table><tr><th>reason</th><th>count</th></tr>");
        for (reason, n) in counted {
            p.line(format_args!("<tr class=\"refusal\"><td>{}</td><td>{n}</td></tr>", e(reason)));
        }
        p.raw("</table>");
    }
    let none: Vec<&str> = none.into_iter().map(|(reason, _)| reason.as_str()).collect();
    if !none.is_empty() {
        p.line(format_args!("<p class=\"note\">None counted: {}.</p>", e(&none.join(", "))));
    }
    p.raw("</section></main></body></html>\n");
    p.0
}

/// One document's fetch-accounting table.
fn fetches(p: &mut Page, issuer: &IssuerStatus, doc: &DocumentStatus) {
    let e = escape;
    p.line(format_args!(
        "<h3>{} <span class=\"kind\">{} · <code>{}</code></span></h3>",
        e(&issuer.name),
        e(&doc.document),
        e(&doc.path)
    ));
    p.raw(
        "<table><tr><th>source</th><th>got</th><th>last fetch</th><th>requests</th><th>ETag</th><th>key IDs</th></tr>",
    );
    for f in &doc.sources {
        fetch_row(p, f);
    }
    p.raw("</table>");
}

fn fetch_row(p: &mut Page, f: &SourceFetch) {
    let e = escape;
    let class = match f.state {
        FetchState::Current => "ok",
        FetchState::Behind => "bad",
        FetchState::Never => "idle",
    };
    let word = f.state.label();
    let when = match (&f.last_fetch, f.last_fetch_age_seconds) {
        (Some(at), Some(age)) => format!("{} ago<small>{}</small>", duration(age as i64), e(at)),
        _ => "—".to_string(),
    };
    let etag = f.etag.as_deref().unwrap_or(if f.last_fetch.is_some() { "(an older version)" } else { "" });
    let kids = f.key_ids.as_deref().map(key_list).unwrap_or_default();
    p.line(format_args!(
        "<tr class=\"fetch\" data-source=\"{}\" data-state=\"{}\"><td>{}</td><td><span class=\"badge {class}\">{word}</span></td><td class=\"t\">{when}</td><td>{}</td><td><code>{}</code></td><td>{kids}</td></tr>",
        e(&f.source),
        f.state.as_str(),
        e(&f.source),
        f.requests,
        e(etag)
    ));
}

/// One issuer's documents table.
fn documents(p: &mut Page, issuer: &IssuerStatus) {
    let e = escape;
    p.line(format_args!(
        "<h3>{} <span class=\"kind\">{} · {}</span></h3>",
        e(&issuer.name),
        e(&issuer.kind),
        e(&issuer.public_url)
    ));
    p.raw("<table><tr><th>document</th><th>path</th><th>state</th><th>age</th><th>last change</th><th>ETag</th><th>key IDs</th></tr>");
    for d in &issuer.documents {
        let class = match d.state {
            super::DocState::Fresh => "ok",
            super::DocState::Stale => "warn",
            super::DocState::Failing => "bad",
            super::DocState::NeverFetched => "idle",
        };
        let age = d.age_seconds.map(|a| duration(a as i64)).unwrap_or_else(|| "—".into());
        let mut notes = String::new();
        for text in [&d.error, &d.issuer_mismatch].into_iter().flatten() {
            let _ = write!(notes, "<div class=\"err\">{}</div>", e(text));
        }
        let kids = if d.document == "keys" { key_list(&d.key_ids) } else { String::new() };
        p.line(format_args!(
            "<tr class=\"document\" data-state=\"{}\"><td>{}</td><td><code>{}</code>{notes}</td><td><span class=\"badge {class}\">{}</span></td><td class=\"t\">{}</td><td class=\"t\">{}</td><td><code>{}</code></td><td>{kids}</td></tr>",
            d.state.as_str(),
            e(&d.document),
            e(&d.path),
            d.state.label(),
            e(&age),
            e(d.last_change.as_deref().unwrap_or("—")),
            e(d.etag.as_deref().unwrap_or("—"))
        ));
    }
    p.raw("</table>");
}

/// Key IDs as escaped `<code>` items.
fn key_list(kids: &[String]) -> String {
    if kids.is_empty() {
        return "<span class=\"muted\">none named</span>".to_string();
    }
    let mut out = String::new();
    for (i, k) in kids.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "<code class=\"kid\">{}</code>", escape(k));
    }
    out
}

/// `40 s`, `3 min`, `5 h`, `12 d` (negative: `expired 3 d ago`).
pub fn duration(secs: i64) -> String {
    if secs < 0 {
        return format!("expired {} ago", duration(-secs));
    }
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7_199 => format!("{} min", secs / 60),
        7_200..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// The page being written.
struct Page(String);

impl Page {
    fn raw(&mut self, s: &str) {
        self.0.push_str(s);
    }
    fn line(&mut self, args: std::fmt::Arguments<'_>) {
        let _ = self.0.write_fmt(args);
        self.0.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value that reaches the page is escaped, wherever it appears.
    #[test]
    fn the_page_escapes_every_value() {
        let evil = "<i>x</i>\"'&";
        let shown = "&lt;i&gt;x&lt;/i&gt;&quot;&#39;&amp;";
        let fetch = SourceFetch {
            source: evil.into(),
            state: FetchState::Behind,
            requests: 3,
            last_fetch: Some(evil.into()),
            last_fetch_age_seconds: Some(40),
            etag: Some(evil.into()),
            key_ids: Some(vec![evil.into()]),
        };
        let doc = DocumentStatus {
            path: evil.into(),
            document: "keys".into(),
            namespace: evil.into(),
            state: super::super::DocState::Failing,
            fetched_at: Some(evil.into()),
            age_seconds: Some(5),
            last_change: Some(evil.into()),
            etag: Some(evil.into()),
            keys: Some(1),
            key_ids: vec![evil.into()],
            error: Some(evil.into()),
            issuer_mismatch: Some(evil.into()),
            sources: vec![fetch],
        };
        let status = Status {
            version: evil.into(),
            generated_at: evil.into(),
            generated_unix: 0,
            config: evil.into(),
            ready: false,
            listeners: vec![super::super::ListenerStatus {
                name: evil.into(),
                address: evil.into(),
                protocol: evil.into(),
                accepting: true,
            }],
            certificates: vec![super::super::CertificateStatus {
                host: evil.into(),
                not_after: evil.into(),
                expires_in_seconds: -5,
            }],
            issuers: vec![IssuerStatus {
                name: evil.into(),
                kind: evil.into(),
                public_url: evil.into(),
                documents: vec![doc],
            }],
            ip_allow: super::super::IpAllowStatus {
                mode: evil.into(),
                would_deny: 1,
                denied: 2,
                sources: vec![super::super::RangeSourceStatus {
                    name: evil.into(),
                    format: evil.into(),
                    admit: false,
                    prefixes: 1,
                    last_refresh: Some(evil.into()),
                }],
            },
            refusals: super::super::Refusals {
                rate_limit_enabled: true,
                rate_limited: 0,
                by_reason: [(evil.to_string(), 1), (format!("{evil}0"), 0)].into_iter().collect(),
            },
        };
        let page = render(&status);
        assert!(!page.contains("<i>"), "{page}");
        // Version, config, time, three sections' worth of each field...
        assert!(page.matches(shown).count() >= 25, "{} escaped values in:\n{page}", page.matches(shown).count());
        assert!(page.contains("data-state=\"behind\""));
    }

    #[test]
    fn escape_covers_text_and_attributes() {
        assert_eq!(escape("plain kid-1"), "plain kid-1");
        assert_eq!(escape("<b a=\"x\" b='y'>&</b>"), "&lt;b a=&quot;x&quot; b=&#39;y&#39;&gt;&amp;&lt;/b&gt;");
    }

    #[test]
    fn the_policy_allows_exactly_the_style_sheet() {
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(!CSS.contains("</"), "the style sheet cannot close its element");
    }

    #[test]
    fn durations_read_as_an_operator_says_them() {
        assert_eq!(duration(40), "40 s");
        assert_eq!(duration(600), "10 min");
        assert_eq!(duration(7200), "2 h");
        assert_eq!(duration(86_400 * 30), "30 d");
        assert_eq!(duration(-86_400 * 3), "expired 3 d ago");
    }
}
