//! `wif-proxy status`: asks the running proxy's admin listener for
//! `/status.json` and prints it for a terminal: what the status page shows,
//! one screen, no colour.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use wif_proxy::status::{duration, DocumentStatus, FetchState, Status};

/// How long the admin listener may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Prints the status of the proxy `config` describes (or the one at `admin`).
pub(super) fn status(config: &Path, admin: Option<SocketAddr>, json: bool) -> ExitCode {
    let addr = match super::admin::address(config, admin) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let Some(runtime) = super::one_thread_runtime() else { return ExitCode::FAILURE };
    let body = match runtime.block_on(fetch(addr)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: http://{addr}/status.json: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{}", String::from_utf8_lossy(&body));
        return ExitCode::SUCCESS;
    }
    match serde_json::from_slice::<Status>(&body) {
        Ok(s) => {
            print!("{}", render(&s));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: http://{addr}/status.json is not a status this version reads: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn fetch(addr: SocketAddr) -> anyhow::Result<Bytes> {
    const AGENT: &str = concat!("wif-proxy-status/", env!("CARGO_PKG_VERSION"));
    let asked = super::admin::ask(addr, http::Method::GET, "/status.json", AGENT);
    let (status, body) =
        tokio::time::timeout(TIMEOUT, asked).await.map_err(|_| anyhow::anyhow!("no answer within {TIMEOUT:?}"))??;
    anyhow::ensure!(status == 200, "answered {status}");
    Ok(body)
}

/// The status as terminal text.
pub(super) fn render(s: &Status) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(text.trim_end());
        out.push('\n');
    };
    let ready = if s.ready { "ready" } else { "NOT READY" };
    line(format!("wif-proxy {} · {ready} · {} · {}", clean(&s.version), clean(&s.config), clean(&s.generated_at)));
    line(String::new());
    line("listeners".into());
    for l in &s.listeners {
        let accepting = if l.accepting { "accepting" } else { "not accepting" };
        line(format!("  {:<20} {:<22} {:<5} {accepting}", clean(&l.name), clean(&l.address), clean(&l.protocol)));
    }
    for c in &s.certificates {
        let left = duration(c.expires_in_seconds);
        let when = if c.expires_in_seconds < 0 { left } else { format!("in {left}") };
        line(format!("  certificate {} expires {} ({when})", clean(&c.host), clean(&c.not_after)));
    }
    for issuer in &s.issuers {
        line(String::new());
        line(format!("issuer {} ({}) {}", clean(&issuer.name), clean(&issuer.kind), clean(&issuer.public_url)));
        for d in &issuer.documents {
            document(&mut line, d);
        }
    }
    line(String::new());
    let ip = &s.ip_allow;
    line(format!("ip_allow mode {} · would deny {} · denied {}", clean(&ip.mode), ip.would_deny, ip.denied));
    for r in &ip.sources {
        let admits = if r.admit { "admits" } else { "accounting only" };
        let refreshed = r.last_refresh.as_deref().map_or("never".into(), clean);
        line(format!(
            "  {:<16} {:<7} {admits:<16} {:>7} prefixes  loaded {refreshed}",
            clean(&r.name),
            clean(&r.format),
            r.prefixes
        ));
    }
    let r = &s.refusals;
    let limit = if r.rate_limit_enabled { "on" } else { "off" };
    let counted: Vec<String> =
        r.by_reason.iter().filter(|(_, n)| **n > 0).map(|(w, n)| format!("{} {n}", clean(w))).collect();
    let counted = if counted.is_empty() { "none".to_string() } else { counted.join(", ") };
    line(format!("refusals: rate limits {limit}, answered 429 {}; by reason: {counted}", r.rate_limited));
    out
}

fn document(line: &mut impl FnMut(String), d: &DocumentStatus) {
    line(format!("  {} {}", clean(&d.document), clean(&d.path)));
    let mut facts = vec![d.state.label().to_string()];
    if let Some(age) = d.age_seconds {
        facts.push(format!("age {}", duration(age as i64)));
    }
    if let Some(changed) = &d.last_change {
        facts.push(format!("changed {}", clean(changed)));
    }
    if let Some(etag) = &d.etag {
        facts.push(format!("ETag {}", clean(etag)));
    }
    if d.document == "keys" && d.keys.is_some() {
        facts.push(format!("key IDs {}", kids(&d.key_ids)));
    }
    line(format!("    {}", facts.join(" · ")));
    for note in [&d.error, &d.issuer_mismatch].into_iter().flatten() {
        line(format!("    ! {}", clean(note)));
    }
    for f in &d.sources {
        // Shouted: the row an operator watching a rotation looks for.
        let got = if f.state == FetchState::Behind { "BEHIND" } else { f.state.label() };
        let when = f.last_fetch_age_seconds.map_or("-".to_string(), |a| format!("{} ago", duration(a as i64)));
        let what = f.key_ids.as_deref().map(kids).or_else(|| f.etag.as_deref().map(clean)).unwrap_or_default();
        line(format!("    {:<16} {got:<13} {when:<12} {:>8} req  {what}", clean(&f.source), f.requests));
    }
}

fn kids(list: &[String]) -> String {
    if list.is_empty() {
        return "(none named)".into();
    }
    list.iter().map(|k| clean(k)).collect::<Vec<_>>().join(", ")
}

/// Text from the proxy (key IDs come from issuers) with control characters
/// and bidirectional or invisible format characters shown escaped, so
/// nothing it says can drive the terminal or reorder what it shows.
fn clean(text: &str) -> String {
    let format =
        |c: char| matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}');
    text.chars()
        .map(|c| match c {
            c if c.is_control() => c.escape_default().to_string(),
            c if format(c) => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(clean("k1\u{1b}[31m\n"), "k1\\u{1b}[31m\\n");
        assert_eq!(clean("plain <b>"), "plain <b>");
        assert_eq!(clean("k\u{202e}1"), "k\\u{202e}1", "a right-to-left override is shown, not obeyed");
    }
}
