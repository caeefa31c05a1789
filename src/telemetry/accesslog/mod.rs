//! The log writer: one thread that owns stderr, and the access log that
//! feeds it.
//!
//! The request path does not format access-log lines. It moves a small
//! [`Record`] into a bounded queue: numbers, and pointers to the names and
//! the path of the document served, made when the configuration was loaded
//! (no allocation and no copy of text for a served document; only a target
//! that is not an allowlisted path is copied). The log thread turns records
//! into text or JSON lines ([`line`]), batches whatever is queued into one
//! buffer and writes it with one syscall. The other log events (`tracing`)
//! reach the same thread through [`LogWriter`], so lines from both never
//! interleave mid-line.
//!
//! The log thread is not woken per record: it wakes every [`TICK`] (as
//! nginx's `access_log … flush=`), or early when the queue is a quarter
//! full. Waking a sleeping thread per record costs a futex syscall on each
//! side and a context switch, more than the rest of a cached answer; a
//! record pushed while the thread sleeps costs an uncontended lock and a
//! move ([`Queue`]), and the log thread takes a whole batch with one lock.
//!
//! Two limits keep a flood from becoming a logging storm or a memory problem:
//! - lines for denied requests are budgeted per second
//!   (`log.denied_lines_per_second`); the rest are counted, and
//! - when the queue is full a record is dropped, never waited for.
//!
//! Both counts are reported once a second in one summary line, so nothing is
//! lost silently.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Method, Version};

use crate::telemetry::budget::Budget;

mod line;

/// Records the queue holds at most (about 120 bytes each).
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

/// What one request did, moved by value into the queue. Nothing in it is
/// formatted, and for a served document nothing is copied but numbers and
/// pointers to text made when the configuration was loaded ([`Names`]).
pub struct Record {
    /// When the answer was ready: the clock read that timed the request
    /// (the log thread places it on the wall clock).
    pub at: Instant,
    pub client: IpAddr,
    pub method: Method,
    pub target: Target,
    pub version: Version,
    pub status: u16,
    pub bytes: u64,
    pub duration_us: u64,
    pub issuer: &'static str,
    pub doc: &'static str,
    pub cache: &'static str,
    /// The deny reason; empty when the request was not denied.
    pub deny: &'static str,
}

/// A request target, as its line shows it.
pub enum Target {
    /// An allowlisted path, known when configured to need no escaping.
    Listed(&'static str),
    /// Any other target: its first [`TARGET_MAX`] bytes, escaped when
    /// written, and whether more were cut off.
    Raw { bytes: Box<[u8]>, cut: bool },
}

impl Target {
    pub fn raw(target: &[u8]) -> Target {
        let kept = &target[..target.len().min(TARGET_MAX)];
        Target::Raw { bytes: kept.into(), cut: target.len() > TARGET_MAX }
    }
}

/// What the lines for one document name it by, made once per
/// configuration. The strings are interned for the life of the process, so
/// a record points at them instead of copying them; the set grows only
/// with issuer names and paths not configured before (a reload of the
/// same configuration adds nothing).
#[derive(Debug, Clone, Copy)]
pub struct Names {
    pub issuer: &'static str,
    /// The document's allowlisted path, when it can be logged as it is;
    /// `None` for a `*`-namespace document (its path is a client's).
    path: Option<&'static str>,
}

impl Names {
    /// A document listed in the configuration at `path`.
    pub fn listed(issuer: &str, path: &str) -> Names {
        Names { issuer: intern(issuer), path: line::needs_no_escape(path.as_bytes()).then(|| intern(path)) }
    }

    /// A `*`-namespace document.
    pub fn dynamic(issuer: &str) -> Names {
        Names { issuer: intern(issuer), path: None }
    }

    /// How a request for this document with `target` is logged: the listed
    /// path when the target is that, byte for byte.
    pub fn target(&self, target: &str) -> Target {
        match self.path {
            Some(path) if path == target => Target::Listed(path),
            _ => Target::raw(target.as_bytes()),
        }
    }
}

fn intern(s: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(&known) = names.get(s) {
        return known;
    }
    let leaked: &'static str = Box::leak(s.into());
    names.insert(leaked);
    leaked
}

enum Msg {
    Access(Record),
    /// A formatted `tracing` line.
    Line(Vec<u8>),
    /// Write out everything queued, then answer.
    Flush(mpsc::SyncSender<()>),
}

/// The bounded inbox between the threads that log and the log thread: a
/// vector pushed to under a lock, which the log thread swaps for its empty
/// one once a batch. A push is a lock, a move and an unlock, with no
/// allocation (both vectors keep [`QUEUE`] places) and no wake-up; the log
/// thread takes a whole batch with one lock.
struct Queue {
    msgs: Mutex<Vec<Msg>>,
    /// Signalled when the log thread has taken the queue.
    taken: Condvar,
    /// Cleared if the log thread ends (it runs for the life of the
    /// process; this is for a panic), so no writer waits for it.
    alive: AtomicBool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Vec<Msg>> {
        self.msgs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `msg`; when the queue is full, gives up (`wait` false: the
    /// caller counts it) or waits for the log thread to take it, having
    /// woken it. Wakes the log thread early once [`NUDGE_AT`] are queued.
    fn push(&self, thread: &std::thread::Thread, msg: Msg, wait: bool) -> Result<(), Full> {
        let mut msgs = self.lock();
        while msgs.len() >= QUEUE {
            if !wait || !self.alive.load(Ordering::Relaxed) {
                return Err(Full);
            }
            thread.unpark();
            msgs = self.taken.wait_timeout(msgs, TICK).unwrap_or_else(PoisonError::into_inner).0;
        }
        msgs.push(msg);
        let queued = msgs.len();
        drop(msgs);
        if queued == NUDGE_AT {
            thread.unpark();
        }
        Ok(())
    }

    /// Everything queued, swapped for `empty`.
    fn take(&self, empty: &mut Vec<Msg>) {
        std::mem::swap(&mut *self.lock(), empty);
        self.taken.notify_all();
    }
}

/// The queue is full (or its reader gone).
struct Full;

/// The running log thread's inbox and the counters it reports.
struct Logger {
    queue: Arc<Queue>,
    /// The log thread, to wake it early.
    thread: std::thread::Thread,
    denied: Budget,
    dropped: AtomicU64,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Starts the log thread (once per process). Until it runs, access records
/// go nowhere, as `tracing` events go nowhere without a subscriber.
pub fn start(format: Format) -> std::io::Result<Guard> {
    if LOGGER.get().is_some() {
        return Err(std::io::Error::other("the log thread is already running"));
    }
    let queue = Arc::new(Queue {
        msgs: Mutex::new(Vec::with_capacity(QUEUE)),
        taken: Condvar::new(),
        alive: AtomicBool::new(true),
    });
    let inbox = Arc::clone(&queue);
    let thread = std::thread::Builder::new().name("wif-proxy-log".into()).spawn(move || run(&inbox, format))?;
    let logger = Logger { queue, thread: thread.thread().clone(), denied: Budget::new(), dropped: AtomicU64::new(0) };
    // A racing second start loses here; its thread idles.
    if LOGGER.set(logger).is_err() {
        return Err(std::io::Error::other("the log thread is already running"));
    }
    Ok(Guard)
}

/// Flushes the log on drop (end of `main`).
pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(l) = LOGGER.get() else { return };
        let (ack, done) = mpsc::sync_channel(1);
        // Not waited in: a queue still full at exit is one the log thread
        // cannot drain (stderr stalled), and exit must not hang on it.
        if l.queue.push(&l.thread, Msg::Flush(ack), false).is_ok() {
            l.thread.unpark();
            let _ = done.recv_timeout(Duration::from_secs(5));
        }
    }
}

/// Whether access lines are being written at all (the log thread runs).
pub fn enabled() -> bool {
    LOGGER.get().is_some()
}

/// Queues the access-log record `make` builds. Never blocks: a `denied`
/// request over `denied_per_second` (`log.denied_lines_per_second`) is
/// counted before its record is built, any record while the queue is full
/// is counted instead of logged.
pub fn submit(denied: bool, denied_per_second: usize, make: impl FnOnce() -> Record) {
    let Some(l) = LOGGER.get() else { return };
    if denied && !l.denied.take(denied_per_second) {
        return;
    }
    if l.queue.push(&l.thread, Msg::Access(make()), false).is_err() {
        l.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The `tracing` side: each event arrives as one formatted line.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match LOGGER.get() {
            // Lossless and rare: waits while the queue is full.
            Some(l) => l
                .queue
                .push(&l.thread, Msg::Line(buf.to_vec()), true)
                .map_err(|Full| std::io::Error::other("log thread ended"))?,
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

/// Clears [`Queue::alive`] however the log thread ends.
struct Alive<'q>(&'q Queue);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Relaxed);
        self.0.taken.notify_all();
    }
}

/// The log thread: every [`TICK`] (or when woken), format and write what
/// is queued in one batch, and once a second report what was left out.
fn run(queue: &Queue, format: Format) {
    let _alive = Alive(queue);
    let mut batch: Vec<Msg> = Vec::with_capacity(QUEUE);
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut stderr = std::io::stderr();
    let mut clock = line::Clock::new();
    let mut acks = Vec::new();
    loop {
        std::thread::park_timeout(TICK);
        queue.take(&mut batch);
        clock.sync();
        for msg in batch.drain(..) {
            match msg {
                Msg::Access(r) => line::write(&mut out, &r, &mut clock, format),
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
        for ack in acks.drain(..) {
            let _ = ack.send(());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(t: &Target) -> (&str, &[u8]) {
        match t {
            Target::Listed(p) => ("listed", p.as_bytes()),
            Target::Raw { bytes, .. } => ("raw", bytes),
        }
    }

    /// A listed path is pointed at only for a target equal to it byte for
    /// byte, and only when it needs no escaping; names are interned once.
    #[test]
    fn names_point_at_the_listed_path_only_for_that_exact_target() {
        let n = Names::listed("vault", "/v1/identity/oidc/plugins/.well-known/keys");
        assert_eq!(shown(&n.target("/v1/identity/oidc/plugins/.well-known/keys")).0, "listed");
        for other in ["/v1/identity/oidc/plugins/.well-known/keys?x", "/v1/identity/oidc/plugins/.well-known/KEYS", ""]
        {
            assert_eq!(shown(&n.target(other)), ("raw", other.as_bytes()), "{other:?}");
        }
        let odd = Names::listed("vault", "/v1/a\\b");
        assert_eq!(shown(&odd.target("/v1/a\\b")).0, "raw", "a path that needs escaping is escaped");
        let dynamic = Names::dynamic("vault");
        assert_eq!(shown(&dynamic.target("/v1/team/identity/oidc/plugins/.well-known/keys")).0, "raw");
        assert!(std::ptr::eq(n.issuer, dynamic.issuer), "one interned copy of a name");
    }
}
