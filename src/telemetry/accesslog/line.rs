//! One access line from one [`Record`], text or JSON.
//!
//! This runs once per request, so it is written for that. The constant
//! pieces are copied as constants (the format is a const parameter, so
//! their lengths are known when compiled and no `memcpy` is called for
//! them); the date and time of day are formatted once a second; an
//! allowlisted target was checked when configured and is copied as it is,
//! and any other is scanned eight bytes at a time for what must be escaped.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Method, Version};

use super::{Format, Record, Target};

/// Turns the monotonic instants that records carry into wall-clock time.
///
/// A request reads the clock once, for its duration; its record carries
/// that instant, and the log thread places it on the wall clock against an
/// anchor read once per batch. A step of the wall clock (an operator's
/// `date -s`) therefore shows from the next batch on, within one tick.
pub(super) struct Clock {
    mono: Instant,
    /// Microseconds since the Unix epoch at `mono`.
    wall_us: u64,
    /// The second whose text `prefix` holds.
    second: u64,
    /// `2026-12-01T23:48:59` for `second`.
    prefix: [u8; 19],
}

impl Clock {
    pub(super) fn new() -> Clock {
        Clock::anchored(Instant::now(), SystemTime::now())
    }

    pub(super) fn anchored(mono: Instant, wall: SystemTime) -> Clock {
        let mut clock = Clock { mono, wall_us: 0, second: u64::MAX, prefix: [b'0'; 19] };
        clock.set(mono, wall);
        clock
    }

    /// Re-anchors to the wall clock (once per batch).
    pub(super) fn sync(&mut self) {
        self.set(Instant::now(), SystemTime::now());
    }

    fn set(&mut self, mono: Instant, wall: SystemTime) {
        self.mono = mono;
        self.wall_us = micros(wall.duration_since(UNIX_EPOCH).unwrap_or_default());
    }

    /// Appends `at` as RFC 3339 with microseconds (`2026-12-01T23:48:59.361903Z`).
    fn write(&mut self, out: &mut Vec<u8>, at: Instant) {
        let us = match at.checked_duration_since(self.mono) {
            Some(after) => self.wall_us.saturating_add(micros(after)),
            None => self.wall_us.saturating_sub(micros(self.mono.duration_since(at))),
        };
        let (second, mut fraction) = (us / 1_000_000, us % 1_000_000);
        if self.second != second {
            self.second = second;
            // "…T23:48:59Z" without its "Z" (years 1970 to 9999: 19 bytes).
            let whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(second)).to_string();
            let text = whole.trim_end_matches('Z').as_bytes();
            let n = text.len().min(self.prefix.len());
            self.prefix[..n].copy_from_slice(&text[..n]);
        }
        out.extend_from_slice(&self.prefix);
        let mut digits = *b".000000Z";
        for d in digits[1..7].iter_mut().rev() {
            *d = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        out.extend_from_slice(&digits);
    }
}

fn micros(d: Duration) -> u64 {
    d.as_secs().saturating_mul(1_000_000).saturating_add(u64::from(d.subsec_micros()))
}

/// Bytes of a method kept for its line.
const METHOD_MAX: usize = 16;

/// Appends the line for `r`.
pub(super) fn write(out: &mut Vec<u8>, r: &Record, clock: &mut Clock, format: Format) {
    match format {
        Format::Text => line::<false>(out, r, clock),
        Format::Json => line::<true>(out, r, clock),
    }
}

/// Client-controlled bytes (method, target) are escaped: printable ASCII
/// only, `"` and `\` and everything else as `\xNN` (`\u00NN` in JSON), so a
/// line is always one line and, in JSON, valid. Text lines leave empty
/// words out; JSON lines keep every key.
fn line<const JSON: bool>(out: &mut Vec<u8>, r: &Record, clock: &mut Clock) {
    let put = |out: &mut Vec<u8>, text: &'static [u8], json: &'static [u8]| {
        out.extend_from_slice(if JSON { json } else { text });
    };
    put(out, b"", b"{\"timestamp\":\"");
    clock.write(out, r.at);
    put(out, b"  INFO access: client=", b"\",\"level\":\"INFO\",\"target\":\"access\",\"client\":\"");
    ip(out, r.client);
    put(out, b" method=", b"\",\"method\":\"");
    match r.method {
        Method::GET => out.extend_from_slice(b"GET"),
        Method::HEAD => out.extend_from_slice(b"HEAD"),
        // Any other method is a client's token, as long as its head allows:
        // kept to METHOD_MAX bytes, as a target is to TARGET_MAX.
        ref other => {
            let m = other.as_str().as_bytes();
            escape::<JSON>(out, &m[..m.len().min(METHOD_MAX)]);
            if m.len() > METHOD_MAX {
                out.extend_from_slice(b"...");
            }
        }
    }
    put(out, b" uri=", b"\",\"uri\":\"");
    match &r.target {
        Target::Listed(path) => out.extend_from_slice(path.as_bytes()),
        Target::Raw { bytes, cut } => {
            escape::<JSON>(out, bytes);
            if *cut {
                out.extend_from_slice(b"...");
            }
        }
    }
    put(out, b" version=", b"\",\"version\":\"");
    out.extend_from_slice(match r.version {
        Version::HTTP_09 => b"HTTP/0.9",
        Version::HTTP_10 => b"HTTP/1.0",
        Version::HTTP_11 => b"HTTP/1.1",
        Version::HTTP_2 => b"HTTP/2.0",
        Version::HTTP_3 => b"HTTP/3.0",
        _ => b"HTTP/?",
    });
    let mut n = itoa::Buffer::new();
    put(out, b" status=", b"\",\"status\":");
    match r.status {
        // Every status hyper sends has three digits.
        100..=999 => {
            let s = r.status;
            out.extend_from_slice(&[b'0' + (s / 100) as u8, b'0' + (s / 10 % 10) as u8, b'0' + (s % 10) as u8]);
        }
        other => out.extend_from_slice(n.format(other).as_bytes()),
    }
    put(out, b" bytes=", b",\"bytes\":");
    out.extend_from_slice(n.format(r.bytes).as_bytes());
    put(out, b" duration_us=", b",\"duration_us\":");
    out.extend_from_slice(n.format(r.duration_us).as_bytes());
    let word = |out: &mut Vec<u8>, text: &'static [u8], json: &'static [u8], value: &str| {
        if JSON || !value.is_empty() {
            put(out, text, json);
            out.extend_from_slice(value.as_bytes());
        }
    };
    word(out, b" issuer=", b",\"issuer\":\"", r.issuer);
    word(out, b" doc=", b"\",\"doc\":\"", r.doc);
    word(out, b" cache=", b"\",\"cache\":\"", r.cache);
    word(out, b" deny=", b"\",\"deny\":\"", r.deny);
    put(out, b"\n", b"\"}\n");
}

/// Appends a client address; IPv4 by hand (`Display` through `fmt` cost as
/// much as the rest of the line).
fn ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // Each octet's text (with its dot) from a table, on the stack,
            // then copied once.
            let (mut text, mut n) = ([0u8; 16], 0);
            for o in v4.octets() {
                let (digits, len) = OCTETS[usize::from(o)];
                text[n..n + 4].copy_from_slice(&digits);
                n += len;
            }
            out.extend_from_slice(&text[..n - 1]);
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// `"7."`, `"42."`, `"255."` for each octet value, padded to four bytes,
/// with the length that counts.
static OCTETS: [([u8; 4], usize); 256] = {
    let mut table = [([0u8; 4], 0usize); 256];
    let mut o = 0;
    while o < 256 {
        let (d, v) = (&mut table[o].0, o as u8);
        table[o].1 = if v >= 100 {
            *d = [b'0' + v / 100, b'0' + v / 10 % 10, b'0' + v % 10, b'.'];
            4
        } else if v >= 10 {
            *d = [b'0' + v / 10, b'0' + v % 10, b'.', 0];
            3
        } else {
            *d = [b'0' + v, b'.', 0, 0];
            2
        };
        o += 1;
    }
    table
};

/// Whether `s` can be written into a line as it is, in either format:
/// printable ASCII other than `"` and `\`.
pub(super) fn needs_no_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether any byte of `x` is zero, or (with `n` as a byte value up to
    // 0x80) below `n`: the classic exact bit trick, eight bytes at once.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0;
    let equal = |x: u64, b: u8| below(x ^ (ONES * u64::from(b)), 1);
    let mut words = s.chunks_exact(8);
    for w in &mut words {
        let mut word = [0; 8];
        word.copy_from_slice(w);
        let x = u64::from_ne_bytes(word);
        // Bytes at or above 0x80 set their high bit; 0x7f is DEL.
        if x & HIGH != 0 || below(x, 0x21) || equal(x, 0x7f) || equal(x, b'"') || equal(x, b'\\') {
            return false;
        }
    }
    words.remainder().iter().all(|&b| safe(b))
}

fn safe(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && b != b'\\' && b != b'"'
}

fn escape<const JSON: bool>(out: &mut Vec<u8>, s: &[u8]) {
    if needs_no_escape(s) {
        out.extend_from_slice(s);
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rest = s;
    while !rest.is_empty() {
        // Copy the run of safe bytes at once; escape the one byte after it.
        let run = rest.iter().position(|&b| !safe(b)).unwrap_or(rest.len());
        out.extend_from_slice(&rest[..run]);
        let Some(&b) = rest.get(run) else { break };
        let (hi, lo) = (HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]);
        if JSON {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hi, lo]);
        } else {
            out.extend_from_slice(&[b'\\', b'x', hi, lo]);
        }
        rest = &rest[run + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::super::TARGET_MAX;
    use super::*;

    fn record(at: Instant, target: &[u8], deny: &'static str) -> Record {
        Record {
            at,
            client: "127.0.0.2".parse().expect("ip"),
            method: Method::GET,
            target: Target::raw(target),
            version: Version::HTTP_11,
            status: 404,
            bytes: 98,
            duration_us: 7,
            issuer: "",
            doc: "",
            cache: "",
            deny,
        }
    }

    const WALL: Duration = Duration::from_micros(1_764_050_000_123_456);

    fn text(r: &Record, format: Format) -> String {
        let mut clock = Clock::anchored(r.at, UNIX_EPOCH + WALL);
        let mut out = Vec::new();
        write(&mut out, r, &mut clock, format);
        String::from_utf8(out).expect("ascii")
    }

    /// The hand-written timestamp agrees with humantime, across seconds,
    /// for short microseconds, and for instants either side of the anchor;
    /// the hand-written address with `Display`.
    #[test]
    fn timestamps_and_addresses_are_formatted_as_the_libraries_do() {
        let mono = Instant::now() + Duration::from_secs(10);
        let wall = UNIX_EPOCH + WALL;
        let mut clock = Clock::anchored(mono, wall);
        for (at, expected) in [
            (mono, wall),
            (mono + Duration::from_micros(876_544), wall + Duration::from_micros(876_544)),
            (mono + Duration::from_micros(1_876_551), wall + Duration::from_micros(1_876_551)),
            (mono - Duration::from_micros(123_449), wall - Duration::from_micros(123_449)),
            (mono - Duration::from_secs(5), wall - Duration::from_secs(5)),
        ] {
            let mut out = Vec::new();
            clock.write(&mut out, at);
            assert_eq!(String::from_utf8(out).unwrap(), humantime::format_rfc3339_micros(expected).to_string());
        }
        let every_octet = (0..=255u8).flat_map(|o| [[o, o, o, o], [1, o, 22, 255 - o]]).map(IpAddr::from);
        let v6 = ["::1", "2001:db8::7:1", "::ffff:1.2.3.4"].map(|a| a.parse::<IpAddr>().unwrap());
        for addr in every_octet.chain(v6) {
            let mut out = Vec::new();
            ip(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
        }
    }

    #[test]
    fn text_line_escapes_and_omits_empty_fields() {
        let line = text(&record(Instant::now(), b"/a b\"\\\xc3\xa9", "path"), Format::Text);
        assert_eq!(
            line,
            "2025-11-25T05:53:20.123456Z  INFO access: client=127.0.0.2 method=GET \
             uri=/a\\x20b\\x22\\x5c\\xc3\\xa9 version=HTTP/1.1 status=404 bytes=98 duration_us=7 deny=path\n"
        );
    }

    #[test]
    fn listed_targets_are_written_as_they_are() {
        let mut r = record(Instant::now(), b"", "");
        (r.target, r.issuer, r.doc, r.cache, r.status) = (Target::Listed("/v1/keys"), "vault", "jwks", "hit", 200);
        assert_eq!(
            text(&r, Format::Text),
            "2025-11-25T05:53:20.123456Z  INFO access: client=127.0.0.2 method=GET uri=/v1/keys \
             version=HTTP/1.1 status=200 bytes=98 duration_us=7 issuer=vault doc=jwks cache=hit\n"
        );
        let v: serde_json::Value = serde_json::from_str(&text(&r, Format::Json)).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "timestamp": "2025-11-25T05:53:20.123456Z", "level": "INFO", "target": "access",
                "client": "127.0.0.2", "method": "GET", "uri": "/v1/keys", "version": "HTTP/1.1",
                "status": 200, "bytes": 98, "duration_us": 7,
                "issuer": "vault", "doc": "jwks", "cache": "hit", "deny": "",
            })
        );
    }

    #[test]
    fn json_line_is_valid_json_for_any_bytes() {
        let target: Vec<u8> = (0..=255u8).collect();
        let line = text(&record(Instant::now(), &target, "path"), Format::Json);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        let uri = v["uri"].as_str().expect("uri");
        assert_eq!(uri.chars().count(), 256, "every byte kept, one char each: {uri}");
        assert_eq!(v["deny"], "path");
        assert_eq!(v["status"], 404);
    }

    #[test]
    fn long_targets_and_methods_are_cut_and_marked() {
        let mut r = record(Instant::now(), &[b'a'; 300], "method");
        r.method = Method::from_bytes(&[b'M'; 40]).expect("token");
        let line = text(&r, Format::Text);
        assert!(line.contains(&format!("uri={}... ", "a".repeat(TARGET_MAX))), "{line}");
        assert!(line.contains(&format!(" method={}... ", "M".repeat(METHOD_MAX))), "{line}");
        r.method = Method::from_bytes(b"BREW").expect("token");
        assert!(text(&r, Format::Text).contains(" method=BREW uri="));
    }

    /// The eight-at-a-time scan agrees with the byte rule for every byte
    /// at every position of a word and of the remainder.
    #[test]
    fn the_word_scan_agrees_with_the_byte_rule() {
        for len in [1, 7, 8, 9, 16, 23] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(needs_no_escape(&s), safe(b), "byte {b:#04x} at {at} of {len}");
                }
            }
        }
        assert!(needs_no_escape(b""));
        assert!(needs_no_escape(b"/v1/team-a/identity/oidc/plugins/.well-known/keys"));
    }
}
