//! The log writer: one thread that owns stderr, and the access log that
//! feeds it.
//!
//! The request path does not format access-log lines. It copies a fixed-size
//! [`Record`] (no heap allocation) into a bounded queue; the log thread turns
//! records into text or JSON lines, batches whatever is queued into one
//! buffer and writes it with one syscall. The other log events (`tracing`)
//! reach the same thread through [`LogWriter`], so lines from both never
//! interleave mid-line.
//!
//! The log thread is not woken per record: it wakes every [`TICK`] (as
//! nginx's `access_log … flush=`), or early when the queue is a quarter
//! full. Waking a sleeping thread per record costs a futex syscall on each
//! side and a context switch, more than the rest of a cached answer; a
//! record pushed while the thread sleeps costs a few atomics.
//!
//! Two limits keep a flood from becoming a logging storm or a memory problem:
//! - lines for denied requests are budgeted per second
//!   (`log.denied_lines_per_second`); the rest are counted, and
//! - when the queue is full a record is dropped, never waited for.
//!
//! Both counts are reported once a second in one summary line, so nothing is
//! lost silently.

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Version};

use crate::telemetry::budget::Budget;

/// Records the queue holds at most (about 400 bytes each).
const QUEUE: usize = 4096;
/// How long a line may wait in the queue: what a reader of the log notices
/// least, and few enough wake-ups (40 a second) to cost nothing idle.
const TICK: Duration = Duration::from_millis(25);
/// Queued messages at which a producer wakes the log thread before its
/// tick: three quarters of the queue are left for what arrives meanwhile.
const NUDGE_AT: usize = QUEUE / 4;
/// Bytes of a request target kept for its log line; longer ones are cut.
const TARGET_MAX: usize = 256;

/// Line format of every log line, chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// What one request did, copied by value into the queue.
pub struct Record {
    pub time: SystemTime,
    pub client: IpAddr,
    pub method: Inline<16>,
    pub target: Inline<TARGET_MAX>,
    pub version: Version,
    pub status: u16,
    pub bytes: u64,
    pub duration_us: u64,
    pub issuer: Inline<64>,
    pub doc: &'static str,
    pub cache: &'static str,
    /// The deny reason; empty when the request was not denied.
    pub deny: &'static str,
}

impl Record {
    pub fn method(m: &Method) -> Inline<16> {
        Inline::new(m.as_str().as_bytes())
    }
}

/// Up to `N` bytes stored in place, and whether more were cut off.
#[derive(Clone, Copy)]
pub struct Inline<const N: usize> {
    len: u16,
    cut: bool,
    buf: [u8; N],
}

impl<const N: usize> Inline<N> {
    pub fn new(s: &[u8]) -> Self {
        let len = s.len().min(N);
        let mut buf = [0; N];
        buf[..len].copy_from_slice(&s[..len]);
        Inline { len: len as u16, cut: s.len() > N, buf }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

// Records are nearly every message: boxing them would allocate per request.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Access(Record),
    /// A formatted `tracing` line.
    Line(Vec<u8>),
    /// Write out everything queued, then answer.
    Flush(SyncSender<()>),
}

/// The running log thread's inbox and the counters it reports.
struct Logger {
    tx: SyncSender<Msg>,
    /// Messages queued since the log thread last drained the queue.
    queued: AtomicUsize,
    /// The log thread, to wake it early.
    thread: std::thread::Thread,
    denied: Budget,
    dropped: Arc<AtomicU64>,
}

impl Logger {
    /// Queues `msg` without waiting (`false`: the queue is full); wakes
    /// the log thread once the queue fills past [`NUDGE_AT`].
    fn try_send(&self, msg: Msg) -> bool {
        if self.tx.try_send(msg).is_err() {
            return false;
        }
        if self.queued.fetch_add(1, Ordering::Relaxed) + 1 == NUDGE_AT {
            self.thread.unpark();
        }
        true
    }
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Starts the log thread (once per process). Until it runs, access records
/// go nowhere, as `tracing` events go nowhere without a subscriber.
pub fn start(format: Format) -> std::io::Result<Guard> {
    if LOGGER.get().is_some() {
        return Err(std::io::Error::other("the log thread is already running"));
    }
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let thread = std::thread::Builder::new().name("wif-proxy-log".into()).spawn(move || run(rx, format))?;
    let thread = thread.thread().clone();
    let logger = Logger {
        tx: tx.clone(),
        queued: AtomicUsize::new(0),
        thread: thread.clone(),
        denied: Budget::new(),
        dropped: Arc::clone(&dropped),
    };
    // A racing second start loses here; its thread ends with its channel.
    if LOGGER.set(logger).is_err() {
        return Err(std::io::Error::other("the log thread is already running"));
    }
    Ok(Guard { tx, thread })
}

/// Flushes the log on drop (end of `main`).
pub struct Guard {
    tx: SyncSender<Msg>,
    thread: std::thread::Thread,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let (ack, done) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            self.thread.unpark();
            let _ = done.recv_timeout(Duration::from_secs(5));
        }
    }
}

/// Whether access lines are being written at all (the log thread runs).
pub fn enabled() -> bool {
    LOGGER.get().is_some()
}

/// Queues one access-log record. Never blocks: a denied request over
/// `denied_per_second` (`log.denied_lines_per_second`), or any record while
/// the queue is full, is counted instead of logged.
pub fn submit(record: Record, denied_per_second: usize) {
    let Some(l) = LOGGER.get() else { return };
    if !record.deny.is_empty() && !l.denied.take(denied_per_second) {
        return;
    }
    if !l.try_send(Msg::Access(record)) {
        l.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The `tracing` side: each event arrives as one formatted line.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match LOGGER.get() {
            // Lossless and rare: waits while the queue is full, having woken
            // the log thread rather than wait for its tick.
            Some(l) => {
                let ended = || std::io::Error::other("log thread ended");
                match l.tx.try_send(Msg::Line(buf.to_vec())) {
                    Ok(()) => {}
                    Err(TrySendError::Full(line)) => {
                        l.thread.unpark();
                        l.tx.send(line).map_err(|_| ended())?;
                    }
                    Err(TrySendError::Disconnected(_)) => return Err(ended()),
                }
                l.queued.fetch_add(1, Ordering::Relaxed);
            }
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

/// The log thread: every [`TICK`] (or when woken), format and write what
/// is queued in one batch, and once a second report what was left out.
fn run(rx: Receiver<Msg>, format: Format) {
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut stderr = std::io::stderr();
    loop {
        std::thread::park_timeout(TICK);
        if let Some(l) = LOGGER.get() {
            l.queued.store(0, Ordering::Relaxed);
        }
        let mut acks = Vec::new();
        let mut ended = false;
        loop {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    ended = true;
                    break;
                }
            };
            match msg {
                Msg::Access(r) => format_record(&mut out, &r, format),
                Msg::Line(l) => out.extend_from_slice(&l),
                Msg::Flush(ack) => acks.push(ack),
            }
            if out.len() >= 60 * 1024 {
                let _ = stderr.write_all(&out);
                out.clear();
            }
        }
        report_left_out(&mut out, format);
        if !out.is_empty() {
            let _ = stderr.write_all(&out);
            out.clear();
            if out.capacity() > 256 * 1024 {
                out.shrink_to(64 * 1024);
            }
        }
        for ack in acks {
            let _ = ack.send(());
        }
        if ended {
            return;
        }
    }
}

/// One summary line for the lines left out since the last report (at most
/// once a second): denied requests over budget, records dropped on a full
/// queue, and library lines over theirs.
fn report_left_out(out: &mut Vec<u8>, format: Format) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let Some(l) = LOGGER.get() else { return };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if LAST.load(Ordering::Relaxed) == now {
        return;
    }
    let counts = [
        ("denied_over_budget", l.denied.take_left_out()),
        ("queue_full", l.dropped.swap(0, Ordering::Relaxed)),
        ("library_over_budget", LIBRARY.take_left_out()),
    ];
    if counts.iter().all(|(_, n)| *n == 0) {
        return;
    }
    LAST.store(now, Ordering::Relaxed);
    let ts = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
    let mut n = itoa::Buffer::new();
    match format {
        Format::Text => {
            out.extend_from_slice(ts.as_bytes());
            out.extend_from_slice(b"  WARN log: log lines left out:");
            for (key, count) in counts {
                for part in [" ", key, "=", n.format(count)] {
                    out.extend_from_slice(part.as_bytes());
                }
            }
        }
        Format::Json => {
            for part in [
                "{\"timestamp\":\"",
                &ts,
                "\",\"level\":\"WARN\",\"target\":\"log\",\"message\":\"log lines left out\"",
            ] {
                out.extend_from_slice(part.as_bytes());
            }
            for (key, count) in counts {
                for part in [",\"", key, "\":", n.format(count)] {
                    out.extend_from_slice(part.as_bytes());
                }
            }
            out.push(b'}');
        }
    }
    out.push(b'\n');
}

/// Lines a second the libraries beneath us (rustls, h2, hyper,
/// rustls-acme) may write. Their events are mostly about peers, so without
/// a budget a peer could make us write a line per connection (rustls warns
/// for every ClientHello with an IP address as SNI). Ten a second keeps a
/// real fault visible; the rest are counted in the summary line.
const LIBRARY_LINES_PER_SECOND: usize = 10;

static LIBRARY: Budget = Budget::new();

/// The filter every `tracing` event passes (see the binary's logging set-up):
/// ours always, a library's within [`LIBRARY_LINES_PER_SECOND`].
pub fn within_budget(meta: &tracing::Metadata<'_>) -> bool {
    // Callsites (spans) are asked too: only events are lines.
    !meta.is_event() || meta.target().starts_with("wif_proxy") || LIBRARY.take(LIBRARY_LINES_PER_SECOND)
}

/// What stands before each field of an access line, per format.
struct Keys {
    method: &'static [u8],
    uri: &'static [u8],
    version: &'static [u8],
    /// status, bytes, duration_us
    numbers: [&'static [u8]; 3],
    /// issuer, doc, cache, deny
    words: [&'static [u8]; 4],
    /// Text lines leave empty words out; JSON lines keep every key.
    skip_empty: bool,
    end: &'static [u8],
}

const TEXT_KEYS: Keys = Keys {
    method: b" method=",
    uri: b" uri=",
    version: b" version=",
    numbers: [b" status=", b" bytes=", b" duration_us="],
    words: [b" issuer=", b" doc=", b" cache=", b" deny="],
    skip_empty: true,
    end: b"",
};

const JSON_KEYS: Keys = Keys {
    method: b"\",\"method\":\"",
    uri: b"\",\"uri\":\"",
    version: b"\",\"version\":\"",
    numbers: [b"\",\"status\":", b",\"bytes\":", b",\"duration_us\":"],
    words: [b",\"issuer\":\"", b"\",\"doc\":\"", b"\",\"cache\":\"", b"\",\"deny\":\""],
    skip_empty: false,
    end: b"\"}",
};

/// Appends `t` as RFC 3339 with microseconds (`2026-12-01T23:48:59.361903Z`).
/// Lines come in bursts from the same second: the part up to the seconds
/// is formatted once a second (it was a sixth of a line's cost).
fn timestamp(out: &mut Vec<u8>, t: SystemTime) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, Vec<u8>)> = const { std::cell::RefCell::new((u64::MAX, Vec::new())) };
    }
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    SECOND.with(|s| {
        let (second, prefix) = &mut *s.borrow_mut();
        if *second != since.as_secs() {
            *second = since.as_secs();
            prefix.clear();
            // "…T23:48:59Z" without its "Z".
            let whole =
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(since.as_secs())).to_string();
            prefix.extend_from_slice(whole.trim_end_matches('Z').as_bytes());
        }
        out.extend_from_slice(prefix);
    });
    let micros = since.subsec_micros();
    let mut digits = [b'.', b'0', b'0', b'0', b'0', b'0', b'0', b'Z'];
    let mut m = micros;
    for d in digits[1..7].iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    out.extend_from_slice(&digits);
}

/// Appends a client address; IPv4 by hand (`Display` through `fmt` cost as
/// much as the rest of the line).
fn ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(n.format(octet).as_bytes());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends one access line. Client-controlled bytes (method, target) are
/// escaped: printable ASCII only, `"` and `\` and everything else as `\xNN`
/// (`\u00NN` in JSON), so a line is always one line and, in JSON, valid.
pub fn format_record(out: &mut Vec<u8>, r: &Record, format: Format) {
    let mut n = itoa::Buffer::new();
    let version = match r.version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    };
    let keys = match format {
        Format::Text => {
            timestamp(out, r.time);
            out.extend_from_slice(b"  INFO access: client=");
            &TEXT_KEYS
        }
        Format::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(out, r.time);
            out.extend_from_slice(b"\",\"level\":\"INFO\",\"target\":\"access\",\"client\":\"");
            &JSON_KEYS
        }
    };
    ip(out, r.client);
    out.extend_from_slice(keys.method);
    escape_into(out, &r.method, format);
    out.extend_from_slice(keys.uri);
    escape_into(out, &r.target, format);
    out.extend_from_slice(keys.version);
    out.extend_from_slice(version.as_bytes());
    for (key, value) in keys.numbers.iter().zip([u64::from(r.status), r.bytes, r.duration_us]) {
        out.extend_from_slice(key);
        out.extend_from_slice(n.format(value).as_bytes());
    }
    for (key, value) in
        keys.words.iter().zip([r.issuer.as_bytes(), r.doc.as_bytes(), r.cache.as_bytes(), r.deny.as_bytes()])
    {
        if !(value.is_empty() && keys.skip_empty) {
            out.extend_from_slice(key);
            out.extend_from_slice(value);
        }
    }
    out.extend_from_slice(keys.end);
    out.push(b'\n');
}

fn escape_into<const N: usize>(out: &mut Vec<u8>, s: &Inline<N>, format: Format) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let safe = |b: &u8| (0x21..0x7f).contains(b) && *b != b'\\' && *b != b'"';
    let mut rest = s.as_bytes();
    while !rest.is_empty() {
        // Copy the run of safe bytes at once; escape the one byte after it.
        let run = rest.iter().position(|b| !safe(b)).unwrap_or(rest.len());
        out.extend_from_slice(&rest[..run]);
        let Some(&b) = rest.get(run) else { break };
        let (hi, lo) = (HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]);
        match format {
            Format::Text => out.extend_from_slice(&[b'\\', b'x', hi, lo]),
            Format::Json => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hi, lo]),
        }
        rest = &rest[run + 1..];
    }
    if s.cut {
        out.extend_from_slice(b"...");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(target: &[u8], deny: &'static str) -> Record {
        Record {
            time: UNIX_EPOCH + Duration::from_micros(1_764_050_000_123_456),
            client: "127.0.0.2".parse().expect("ip"),
            method: Record::method(&Method::GET),
            target: Inline::new(target),
            version: Version::HTTP_11,
            status: 404,
            bytes: 98,
            duration_us: 7,
            issuer: Inline::new(b""),
            doc: "",
            cache: "",
            deny,
        }
    }

    /// The hand-written timestamp and address agree with humantime and
    /// `Display`, across seconds and for short microseconds.
    #[test]
    fn timestamps_and_addresses_are_formatted_as_the_libraries_do() {
        for micros in [1_764_050_000_123_456u64, 1_764_050_000_000_007, 1_764_050_001_999_999, 1_764_050_000_500_000] {
            let t = UNIX_EPOCH + Duration::from_micros(micros);
            let mut out = Vec::new();
            timestamp(&mut out, t);
            assert_eq!(String::from_utf8(out).unwrap(), humantime::format_rfc3339_micros(t).to_string());
        }
        for a in ["127.0.0.2", "0.0.0.0", "255.255.255.255", "10.200.3.45", "::1", "2001:db8::7:1", "::ffff:1.2.3.4"] {
            let addr: IpAddr = a.parse().unwrap();
            let mut out = Vec::new();
            ip(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
        }
    }

    #[test]
    fn text_line_escapes_and_omits_empty_fields() {
        let mut out = Vec::new();
        format_record(&mut out, &record(b"/a b\"\\\xc3\xa9", "path"), Format::Text);
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "2025-11-25T05:53:20.123456Z  INFO access: client=127.0.0.2 method=GET \
             uri=/a\\x20b\\x22\\x5c\\xc3\\xa9 version=HTTP/1.1 status=404 bytes=98 duration_us=7 deny=path\n"
        );
    }

    #[test]
    fn json_line_is_valid_json_for_any_bytes() {
        let target: Vec<u8> = (0..=255u8).collect();
        let mut out = Vec::new();
        format_record(&mut out, &record(&target, "path"), Format::Json);
        let line = String::from_utf8(out).expect("ascii");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        let uri = v["uri"].as_str().expect("uri");
        assert_eq!(uri.chars().count(), 256, "every byte kept, one char each: {uri}");
        assert_eq!(v["deny"], "path");
        assert_eq!(v["status"], 404);
    }

    #[test]
    fn long_targets_are_cut_and_marked() {
        let mut out = Vec::new();
        format_record(&mut out, &record(&[b'a'; 300], ""), Format::Text);
        let line = String::from_utf8(out).expect("ascii");
        assert!(line.contains(&format!("uri={}... ", "a".repeat(TARGET_MAX))), "{line}");
    }
}
