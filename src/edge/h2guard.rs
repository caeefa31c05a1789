//! HTTP/2 frame guard: per-connection budgets on what a client may make the
//! server do, enforced on the byte stream beneath hyper.
//!
//! hyper 1 and h2 0.4 bound streams, header lists, CONTINUATION frames per
//! header block, remotely reset streams awaiting accept and locally
//! generated resets, but nothing bounds how many SETTINGS, PING,
//! WINDOW_UPDATE, PRIORITY or RST_STREAM frames a peer may send: each costs
//! parsing and locking, SETTINGS and PING each cost an answer, and a peer
//! that sends them without pause holds a core. hyper also has no h2 idle
//! timeout, no deadline for a header block and no write timeout. This guard
//! wraps a connection's I/O once it is known to be h2 and reads the 9-byte
//! header of every frame going either way (across read and write
//! boundaries, skipping payloads without copying them):
//!
//! * **Inbound budgets**, one GCRA token bucket per frame kind
//!   ([`H2Limits`]): a burst, then a steady rate. WINDOW_UPDATE frames also
//!   earn credit from the DATA frames we send (acknowledging data is what
//!   they are for), as in Envoy's per-DATA-frame budget. Empty frames and
//!   header blocks have structural limits (consecutive empty frames,
//!   CONTINUATION frames and bytes per block), and the streams the client
//!   holds open are capped.
//! * **Deadlines**: a connection with no stream in flight is closed after
//!   `idle_timeout` (control frames such as PING do not keep it alive, as in
//!   Envoy); a header block must be complete within `header_block_timeout`
//!   of its HEADERS frame; a response that has started but sends no DATA for
//!   `write_timeout` (the peer grants no flow-control window), or a socket
//!   that accepts no bytes for `write_timeout`, ends the connection.
//!
//! **Cutting.** When a budget is exceeded, the bytes from the offending frame
//! on are never passed to hyper. The guard waits until hyper's outbound frame
//! in progress (if any) is complete, writes `GOAWAY` with
//! `ENHANCE_YOUR_CALM` (`NO_ERROR` for an idle close) and the highest client
//! stream id hyper saw, flushes it and shuts the write side down within
//! `goaway_timeout`, and then fails every read and write so hyper drops the
//! connection. Why it cut is kept in an [`H2Verdict`] for the caller to
//! count and log once, with what h2 itself sent to refuse things (the error
//! code of its GOAWAY, how many RST_STREAM frames), which the guard reads off
//! the outbound frames anyway.
//!
//! **Cost.** Per frame a few integer operations (a bucket is one `max`, one
//! add and one compare); per read or write one clock read; the timer is
//! touched only on pending paths. Nothing is allocated per frame: the open
//! stream table is sized once when the preface arrives.
//!
//! A connection that turns out not to open with the h2 preface (a cleartext
//! `POST` sniffed for h2, say) is passed through untouched.
//!
//! Wiring, where the connection is known to be (or may be) h2:
//!
//! ```ignore
//! let guard = H2Guard::new(io, &limits);
//! let verdict = guard.verdict();
//! builder.serve_connection(TokioIo::new(guard), service).await;
//! if let Some(why) = verdict.get() { /* count why.as_str(), log once */ }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::telemetry::events;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const FRAME_HEADER_LEN: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// GOAWAY error codes (RFC 9113 §7).
const NO_ERROR: u32 = 0x0;
const ENHANCE_YOUR_CALM: u32 = 0xb;

// ---------------------------------------------------------------------------
// Limits and their defaults.

/// A frame budget: `burst` frames at once, then `per_second` steadily
/// (GCRA, so the burst refills continuously). `per_second = 0`: `burst`
/// frames for the connection's lifetime; `burst = 0`: none at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// SETTINGS (ours acknowledged, or new ones). A client sends one at the start
/// and acknowledges ours; renegotiating later is rare. 16 leaves room for
/// clients that tune settings a few times; 2/s afterwards is four orders of
/// magnitude below a flood (each SETTINGS costs an ACK written back, which
/// h2 must flush before it reads on) and costs nothing.
pub const DEFAULT_SETTINGS: Rate = Rate { per_second: 2, burst: 16 };

/// PING, with or without ACK. Keep-alive pings come every few seconds at
/// most (gRPC's servers refuse pings more often than every 5 minutes without
/// calls); bandwidth estimators (gRPC BDP, hyper's adaptive window) ping once
/// per round trip while receiving data, and our bodies are at most a few
/// dozen DATA frames. We send no pings, so every PING ACK is unsolicited, and
/// h2 logs one WARN line for each (`recv PING ack that we never sent`): the
/// budget also bounds that log line.
pub const DEFAULT_PING: Rate = Rate { per_second: 10, burst: 50 };

/// WINDOW_UPDATE, beyond the credit earned by the DATA frames we send
/// ([`DEFAULT_WINDOW_UPDATES_PER_DATA_FRAME`]). A client opens its
/// connection window once or twice at the start and otherwise acknowledges
/// data; 100 at once and 20/s cover window tuning. The flood this stops cost
/// about a core per connection.
pub const DEFAULT_WINDOW_UPDATE: Rate = Rate { per_second: 20, burst: 100 };

/// WINDOW_UPDATE credit per DATA frame sent: one for the stream, one for the
/// connection. Envoy documents that 1 suffices for basic flow control and
/// that bandwidth estimators need at least 2
/// (`max_inbound_window_update_frames_per_data_frame_sent`); the bucket
/// covers more eager clients. The credit cannot exceed the bucket's burst.
pub const DEFAULT_WINDOW_UPDATES_PER_DATA_FRAME: u32 = 2;

/// PRIORITY. Deprecated by RFC 9113; fetchers send none, browsers a handful
/// per connection. 100 is Envoy's `max_inbound_priority_frames_per_stream`
/// and nginx's minimum (`max(http2_max_concurrent_streams, 100)`); h2 parses
/// and ignores each one, so beyond that 10/s is plenty.
pub const DEFAULT_PRIORITY: Rate = Rate { per_second: 10, burst: 100 };

/// RST_STREAM from the client (rapid reset, CVE-2023-44487). A client can
/// have at most `max_concurrent_streams` (100) streams to cancel at once;
/// after that, Netty's server default is 200 per 30 s (~7/s) and we allow
/// 10/s. h2's own limit counts only resets of streams not yet accepted by
/// hyper (`max_pending_accept_reset_streams`), not the rate at which streams
/// are opened, answered and cancelled. Pipelined HEADERS+RST_STREAM pairs
/// reach h2's limit first when it is below this burst (it logs a WARN line
/// per connection, and the cut is h2's, seen only in
/// [`H2Verdict::sent_goaway`]): set it above the burst to have the guard cut.
pub const DEFAULT_RST_STREAM: Rate = Rate { per_second: 10, burst: 100 };

/// HEADERS (streams opened). nginx refuses streams beyond twice
/// `http2_max_concurrent_streams` per read ("client sent too many streams at
/// once"); 200 is twice our 100. A document fetcher asks for two documents;
/// 100/s after the burst is above the per-client request rate limit's
/// default (50/s), so the rate limiter, not this, answers busy clients.
pub const DEFAULT_HEADERS: Rate = Rate { per_second: 100, burst: 200 };

/// DATA frames that do not end their stream and carry fewer than
/// [`DEFAULT_SMALL_DATA_BYTES`]. Requests here have no body, so a client has
/// no reason to send any; h2 itself closes after 100 empty DATA frames per
/// connection and charges small frames against a byte budget, but only as
/// frames are buffered.
pub const DEFAULT_SMALL_DATA: Rate = Rate { per_second: 4, burst: 16 };

/// Below this payload a DATA frame is "small" (h2's
/// `DEFAULT_DATA_FRAME_OVERHEAD_THRESHOLD`: a frame costs about this much to
/// buffer whatever it carries).
pub const DEFAULT_SMALL_DATA_BYTES: u32 = 256;

/// HEADERS, CONTINUATION and DATA frames in a row with an empty payload and
/// no END_STREAM. They have no legitimate use; Envoy's default for
/// `max_consecutive_inbound_frames_with_empty_payload` is 1.
pub const DEFAULT_MAX_CONSECUTIVE_EMPTY_FRAMES: u32 = 1;

/// GOAWAY, PUSH_PROMISE (an error from a client) and frame types we do not
/// know, which h2 ignores (extensions such as PRIORITY_UPDATE). Browsers send
/// one PRIORITY_UPDATE per request at most; fetchers none.
pub const DEFAULT_OTHER: Rate = Rate { per_second: 10, burst: 50 };

/// Streams the client holds open that we have not finished (answered or
/// reset). Twice `max_concurrent_streams` (100), nginx's threshold: a client
/// that has not yet seen our SETTINGS may assume 100, and h2 refuses (and
/// we untrack) the excess, but no client needs more before our refusals
/// arrive.
pub const DEFAULT_MAX_OPEN_STREAMS: u32 = 200;

/// CONTINUATION frames per header block. A client splits a header block at
/// our SETTINGS_MAX_FRAME_SIZE (16 KiB, RFC 9113 §4.2), so a block of
/// [`DEFAULT_MAX_HEADER_BLOCK_BYTES`] needs at most one; we allow that plus
/// 2 ([`H2Limits::with_max_header_list_size`] scales it the same way). h2
/// cuts after max(5, 1.25 x list size / frame size) frames without
/// END_HEADERS; staying below that, the guard trips first and the cut is
/// counted as ours.
pub const DEFAULT_MAX_CONTINUATION_FRAMES: u32 = 4;

/// Header block bytes (HEADERS and CONTINUATION payloads, HPACK-encoded).
/// Twice the default header list size (16 KiB): HPACK output is shorter
/// than the decoded list for every sane encoder (the list counts 32 bytes per
/// field on top), so twice leaves room for padding and poor encoders.
pub const DEFAULT_MAX_HEADER_BLOCK_BYTES: u32 = 32 * 1024;

/// No stream in flight for this long: GOAWAY(NO_ERROR) and close. The
/// server's `idle_timeout` default; nginx's `keepalive_timeout` is 75 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A header block must be complete this long after its HEADERS frame: the
/// server's `header_read_timeout` default, as for an HTTP/1 request head.
pub const DEFAULT_HEADER_BLOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// A started response that sends no DATA, or a socket that accepts no bytes,
/// for this long ends the connection. nginx's `send_timeout` is 60 s; our
/// documents are at most a few hundred KiB and a reading client never waits
/// this long for window, so half that.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the GOAWAY may take to be written and flushed before the
/// connection is dropped regardless: many round trips on any real path, and
/// only a second more for a peer that does not read.
pub const DEFAULT_GOAWAY_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection's HTTP/2 frame budgets and deadlines. Plain data: copy it
/// out of the configuration once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Limits {
    pub settings: Rate,
    pub ping: Rate,
    pub window_update: Rate,
    pub window_updates_per_data_frame: u32,
    pub priority: Rate,
    pub rst_stream: Rate,
    pub headers: Rate,
    pub small_data: Rate,
    pub small_data_bytes: u32,
    pub max_consecutive_empty_frames: u32,
    pub other: Rate,
    pub max_open_streams: u32,
    pub max_continuation_frames: u32,
    pub max_header_block_bytes: u32,
    /// `None`: no idle close (the byte-level idle timeout still applies).
    pub idle_timeout: Option<Duration>,
    pub header_block_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    pub goaway_timeout: Duration,
}

impl Default for H2Limits {
    fn default() -> Self {
        H2Limits {
            settings: DEFAULT_SETTINGS,
            ping: DEFAULT_PING,
            window_update: DEFAULT_WINDOW_UPDATE,
            window_updates_per_data_frame: DEFAULT_WINDOW_UPDATES_PER_DATA_FRAME,
            priority: DEFAULT_PRIORITY,
            rst_stream: DEFAULT_RST_STREAM,
            headers: DEFAULT_HEADERS,
            small_data: DEFAULT_SMALL_DATA,
            small_data_bytes: DEFAULT_SMALL_DATA_BYTES,
            max_consecutive_empty_frames: DEFAULT_MAX_CONSECUTIVE_EMPTY_FRAMES,
            other: DEFAULT_OTHER,
            max_open_streams: DEFAULT_MAX_OPEN_STREAMS,
            max_continuation_frames: DEFAULT_MAX_CONTINUATION_FRAMES,
            max_header_block_bytes: DEFAULT_MAX_HEADER_BLOCK_BYTES,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            header_block_timeout: Some(DEFAULT_HEADER_BLOCK_TIMEOUT),
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            goaway_timeout: DEFAULT_GOAWAY_TIMEOUT,
        }
    }
}

impl H2Limits {
    /// Scales the stream budgets to the SETTINGS_MAX_CONCURRENT_STREAMS we
    /// advertise (`n`): open streams and the HEADERS burst to `2n`, the
    /// RST_STREAM burst to `n` (each with the defaults' floors).
    pub fn with_max_concurrent_streams(mut self, n: u32) -> Self {
        let n = n.max(1);
        self.max_open_streams = n.saturating_mul(2).max(16);
        self.headers.burst = n.saturating_mul(2).max(16);
        self.rst_stream.burst = n.max(16);
        self
    }

    /// Scales the header block limits to the SETTINGS_MAX_HEADER_LIST_SIZE
    /// we advertise: twice as many bytes, and the CONTINUATION frames of
    /// 16 KiB (our max frame size) that carry them, plus 2.
    pub fn with_max_header_list_size(mut self, bytes: u32) -> Self {
        self.max_header_block_bytes = bytes.saturating_mul(2).max(16 * 1024 + 256);
        self.max_continuation_frames = self.max_header_block_bytes.div_ceil(16 * 1024) + 2;
        self
    }
}

// ---------------------------------------------------------------------------
// Why the guard cut.

/// Why a connection was cut. `as_str` is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum H2Refusal {
    SettingsFlood = 1,
    PingFlood,
    WindowUpdateFlood,
    PriorityFlood,
    /// RST_STREAM beyond its budget (rapid reset).
    ResetFlood,
    /// Consecutive empty frames, or small DATA frames beyond their budget.
    EmptyFrameFlood,
    /// A header block with too many CONTINUATION frames or too many bytes.
    ContinuationFlood,
    /// HEADERS beyond their budget, or more open streams than tracked.
    StreamFlood,
    /// GOAWAY, PUSH_PROMISE or unknown frame types beyond their budget.
    OtherFrameFlood,
    /// A header block not complete within `header_block_timeout`.
    HeaderTimeout,
    /// No DATA for a started response, or no byte accepted by the socket,
    /// for `write_timeout`.
    WriteTimeout,
    /// No stream in flight for `idle_timeout` (GOAWAY `NO_ERROR`).
    Idle,
}

impl H2Refusal {
    const ALL: [H2Refusal; 12] = [
        H2Refusal::SettingsFlood,
        H2Refusal::PingFlood,
        H2Refusal::WindowUpdateFlood,
        H2Refusal::PriorityFlood,
        H2Refusal::ResetFlood,
        H2Refusal::EmptyFrameFlood,
        H2Refusal::ContinuationFlood,
        H2Refusal::StreamFlood,
        H2Refusal::OtherFrameFlood,
        H2Refusal::HeaderTimeout,
        H2Refusal::WriteTimeout,
        H2Refusal::Idle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            H2Refusal::SettingsFlood => "settings_flood",
            H2Refusal::PingFlood => "ping_flood",
            H2Refusal::WindowUpdateFlood => "window_update_flood",
            H2Refusal::PriorityFlood => "priority_flood",
            H2Refusal::ResetFlood => "reset_flood",
            H2Refusal::EmptyFrameFlood => "empty_frame_flood",
            H2Refusal::ContinuationFlood => "continuation_flood",
            H2Refusal::StreamFlood => "stream_flood",
            H2Refusal::OtherFrameFlood => "other_frame_flood",
            H2Refusal::HeaderTimeout => "header_timeout",
            H2Refusal::WriteTimeout => "write_timeout",
            H2Refusal::Idle => "idle_timeout",
        }
    }

    /// The GOAWAY error code sent for this cut.
    pub fn goaway_code(self) -> u32 {
        match self {
            H2Refusal::Idle => NO_ERROR,
            _ => ENHANCE_YOUR_CALM,
        }
    }

    fn from_u8(v: u8) -> Option<H2Refusal> {
        H2Refusal::ALL.iter().copied().find(|r| *r as u8 == v)
    }
}

/// Every cut is a refusal counted in `denied_requests_total`, by the same
/// word.
impl From<H2Refusal> for events::Cut {
    fn from(r: H2Refusal) -> events::Cut {
        match r {
            H2Refusal::SettingsFlood => events::Cut::SettingsFlood,
            H2Refusal::PingFlood => events::Cut::PingFlood,
            H2Refusal::WindowUpdateFlood => events::Cut::WindowUpdateFlood,
            H2Refusal::PriorityFlood => events::Cut::PriorityFlood,
            H2Refusal::ResetFlood => events::Cut::ResetFlood,
            H2Refusal::EmptyFrameFlood => events::Cut::EmptyFrameFlood,
            H2Refusal::ContinuationFlood => events::Cut::ContinuationFlood,
            H2Refusal::StreamFlood => events::Cut::StreamFlood,
            H2Refusal::OtherFrameFlood => events::Cut::OtherFrameFlood,
            H2Refusal::HeaderTimeout => events::Cut::HeaderTimeout,
            H2Refusal::WriteTimeout => events::Cut::WriteTimeout,
            H2Refusal::Idle => events::Cut::IdleTimeout,
        }
    }
}

impl std::fmt::Display for H2Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the guard cut its connection, and what hyper (h2) itself sent to
/// refuse things, readable once hyper has dropped the connection.
#[derive(Debug, Clone, Default)]
pub struct H2Verdict(Arc<VerdictCell>);

#[derive(Debug, Default)]
struct VerdictCell {
    refusal: AtomicU8,
    /// h2's GOAWAY error code + 1 (0: none sent).
    goaway: AtomicU32,
    resets: AtomicU32,
}

impl H2Verdict {
    /// Why the guard cut, if it did (set as it decides).
    pub fn get(&self) -> Option<H2Refusal> {
        H2Refusal::from_u8(self.0.refusal.load(Ordering::Acquire))
    }

    /// The error code of the GOAWAY hyper or h2 sent, if any (not the
    /// guard's own). Known once the guard is dropped.
    pub fn sent_goaway(&self) -> Option<u32> {
        self.0.goaway.load(Ordering::Acquire).checked_sub(1)
    }

    /// RST_STREAM frames hyper or h2 sent (refused, cancelled or broken
    /// streams). Known once the guard is dropped.
    pub fn resets_sent(&self) -> u32 {
        self.0.resets.load(Ordering::Acquire)
    }

    fn set(&self, r: H2Refusal) {
        let _ = self.0.refusal.compare_exchange(0, r as u8, Ordering::AcqRel, Ordering::Acquire);
    }
}

// ---------------------------------------------------------------------------
// Budgets.

/// A [`Rate`] as GCRA parameters, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Time one frame costs.
    interval: u64,
    /// How far ahead of now the bucket may run: `burst` frames' worth.
    tolerance: u64,
}

impl Pace {
    fn of(r: Rate) -> Pace {
        let burst = u64::from(r.burst);
        let interval =
            if r.per_second == 0 { u64::MAX / (burst + 2) } else { 1_000_000_000 / u64::from(r.per_second) }.max(1);
        Pace { interval, tolerance: interval.saturating_mul(burst) }
    }
}

/// GCRA state: the theoretical arrival time of the next frame.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    tat: u64,
}

impl Bucket {
    #[inline]
    fn take(&mut self, p: Pace, now: u64) -> bool {
        let next = self.tat.max(now).saturating_add(p.interval);
        if next - now > p.tolerance {
            return false;
        }
        self.tat = next;
        true
    }

    /// Gives back `frames` frames' worth (never beyond a full bucket: `take`
    /// starts from `now` at the latest).
    #[inline]
    fn refund(&mut self, p: Pace, frames: u32) {
        self.tat = self.tat.saturating_sub(p.interval.saturating_mul(u64::from(frames)));
    }
}

#[derive(Debug, Clone, Copy)]
struct Paces {
    settings: Pace,
    ping: Pace,
    window_update: Pace,
    priority: Pace,
    rst_stream: Pace,
    headers: Pace,
    small_data: Pace,
    other: Pace,
}

#[derive(Debug, Clone, Copy, Default)]
struct Buckets {
    settings: Bucket,
    ping: Bucket,
    window_update: Bucket,
    priority: Bucket,
    rst_stream: Bucket,
    headers: Bucket,
    small_data: Bucket,
    other: Bucket,
}

// ---------------------------------------------------------------------------
// Frame headers across read/write boundaries.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHead {
    len: u32,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(b: &[u8; FRAME_HEADER_LEN]) -> FrameHead {
        FrameHead {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

/// Walks a frame stream: assembles 9-byte headers, skips payloads.
#[derive(Debug, Clone, Copy, Default)]
struct Framer {
    head: [u8; FRAME_HEADER_LEN],
    have: u8,
    /// Payload bytes of the current frame not yet seen.
    left: u32,
}

/// What the framer found next in a chunk.
enum Event {
    /// A frame header; `start` is where it began in the chunk (0 if it began
    /// in an earlier one).
    Head { head: FrameHead, start: usize },
    /// The current frame's payload ended.
    PayloadEnd,
}

impl Framer {
    /// Advances over `bytes[*i..]` up to the next event.
    #[inline]
    fn next(&mut self, bytes: &[u8], i: &mut usize) -> Option<Event> {
        while *i < bytes.len() {
            if self.left > 0 {
                let n = (bytes.len() - *i).min(self.left as usize);
                *i += n;
                self.left -= n as u32;
                if self.left == 0 {
                    return Some(Event::PayloadEnd);
                }
                continue;
            }
            // A header begun in an earlier chunk starts this one.
            let start = if self.have == 0 { *i } else { 0 };
            let need = FRAME_HEADER_LEN - self.have as usize;
            let n = need.min(bytes.len() - *i);
            self.head[self.have as usize..self.have as usize + n].copy_from_slice(&bytes[*i..*i + n]);
            self.have += n as u8;
            *i += n;
            if self.have as usize == FRAME_HEADER_LEN {
                self.have = 0;
                let head = FrameHead::parse(&self.head);
                self.left = head.len;
                return Some(Event::Head { head, start });
            }
        }
        None
    }

    /// Bytes until the current frame ends (0: at a frame boundary). Inside
    /// a header whose length is not known yet: until the header ends.
    fn remaining(&self) -> usize {
        match self.have as usize {
            0 => self.left as usize,
            have @ 1..3 => FRAME_HEADER_LEN - have,
            have => {
                FRAME_HEADER_LEN - have + u32::from_be_bytes([0, self.head[0], self.head[1], self.head[2]]) as usize
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The inspector: everything but the I/O, with time passed in (ns).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Matching the client preface; `matched` bytes so far.
    Preface {
        matched: u8,
    },
    H2,
    /// Not h2: bytes pass untouched.
    Passthrough,
}

/// Bit set on a stream table entry once its response has started.
const STARTED: u32 = 1 << 31;

/// The header block in progress, if any.
#[derive(Debug, Clone, Copy, Default)]
struct Block {
    open: bool,
    /// The frame whose payload is being read carries END_HEADERS.
    ending: bool,
    continuations: u32,
    bytes: u32,
    deadline: u64,
}

#[derive(Debug)]
struct Inspector {
    limits: H2Limits,
    paces: Paces,
    mode: Mode,
    inbound: Framer,
    outbound: Framer,
    buckets: Buckets,
    empty_run: u32,
    /// Highest client stream id passed to hyper.
    highest: u32,
    /// Client streams we have not finished; [`STARTED`] marks a started
    /// response. Sized once, when the preface arrives.
    streams: Vec<u32>,
    started: u32,
    block: Block,
    /// When the connection last had a stream in flight (or request bytes).
    idle_since: u64,
    /// When a started response last sent DATA.
    last_data_out: u64,
    idle_ns: Option<u64>,
    block_ns: Option<u64>,
    write_ns: Option<u64>,
    /// Outbound GOAWAY payload being read (the error code is at 4..8).
    goaway_capture: Option<([u8; 8], u8)>,
    /// The last outbound GOAWAY's error code.
    sent_goaway: Option<u32>,
    resets_sent: u32,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Inspector {
    fn new(limits: &H2Limits) -> Inspector {
        let l = *limits;
        Inspector {
            limits: l,
            paces: Paces {
                settings: Pace::of(l.settings),
                ping: Pace::of(l.ping),
                window_update: Pace::of(l.window_update),
                priority: Pace::of(l.priority),
                rst_stream: Pace::of(l.rst_stream),
                headers: Pace::of(l.headers),
                small_data: Pace::of(l.small_data),
                other: Pace::of(l.other),
            },
            mode: Mode::Preface { matched: 0 },
            inbound: Framer::default(),
            outbound: Framer::default(),
            buckets: Buckets::default(),
            empty_run: 0,
            highest: 0,
            streams: Vec::new(),
            started: 0,
            block: Block::default(),
            idle_since: 0,
            last_data_out: 0,
            idle_ns: l.idle_timeout.map(nanos),
            block_ns: l.header_block_timeout.map(nanos),
            write_ns: l.write_timeout.map(nanos),
            goaway_capture: None,
            sent_goaway: None,
            resets_sent: 0,
        }
    }

    fn passthrough(&self) -> bool {
        self.mode == Mode::Passthrough
    }

    /// Inspects bytes read from the client. `Err((keep, why))`: only the
    /// first `keep` bytes may be passed on; the frame after them broke a
    /// budget.
    fn inbound(&mut self, bytes: &[u8], now: u64) -> Result<(), (usize, H2Refusal)> {
        let mut i = 0;
        if let Mode::Preface { matched } = self.mode {
            let m = matched as usize;
            let n = (PREFACE.len() - m).min(bytes.len());
            if bytes[..n] != PREFACE[m..m + n] {
                self.mode = Mode::Passthrough;
                return Ok(());
            }
            if m + n < PREFACE.len() {
                self.mode = Mode::Preface { matched: (m + n) as u8 };
                return Ok(());
            }
            self.mode = Mode::H2;
            self.streams = Vec::with_capacity(self.limits.max_open_streams as usize);
            self.idle_since = now;
            i = n;
        }
        if self.mode != Mode::H2 {
            return Ok(());
        }
        let mut framer = self.inbound;
        let result = loop {
            match framer.next(bytes, &mut i) {
                None => break Ok(()),
                Some(Event::PayloadEnd) => self.inbound_payload_end(),
                Some(Event::Head { head, start }) => {
                    if let Err(why) = self.inbound_frame(head, now) {
                        break Err((start, why));
                    }
                    if head.len == 0 {
                        self.inbound_payload_end();
                    }
                }
            }
        };
        self.inbound = framer;
        result
    }

    /// Checks and records one inbound frame header.
    #[inline]
    fn inbound_frame(&mut self, f: FrameHead, now: u64) -> Result<(), H2Refusal> {
        let p = self.paces;
        match f.kind {
            DATA => {
                let end = f.flags & END_STREAM != 0;
                self.empty(f.len == 0 && !end)?;
                let small = !end && f.len > 0 && f.len < self.limits.small_data_bytes;
                if small && !self.buckets.small_data.take(p.small_data, now) {
                    return Err(H2Refusal::EmptyFrameFlood);
                }
                self.idle_since = now;
            }
            HEADERS => {
                if !self.buckets.headers.take(p.headers, now) {
                    return Err(H2Refusal::StreamFlood);
                }
                self.empty(f.len == 0 && f.flags & END_STREAM == 0)?;
                if f.len > self.limits.max_header_block_bytes {
                    return Err(H2Refusal::ContinuationFlood);
                }
                let opens = f.stream % 2 == 1 && f.stream > self.highest;
                if opens && self.streams.len() >= self.limits.max_open_streams as usize {
                    return Err(H2Refusal::StreamFlood);
                }
                if opens {
                    self.highest = f.stream;
                    self.streams.push(f.stream);
                }
                self.block = Block {
                    open: true,
                    ending: f.flags & END_HEADERS != 0,
                    continuations: 0,
                    bytes: f.len,
                    deadline: self.block_ns.map_or(u64::MAX, |t| now.saturating_add(t)),
                };
                self.idle_since = now;
            }
            CONTINUATION => {
                self.empty(f.len == 0)?;
                if self.block.open {
                    let blk = &mut self.block;
                    blk.continuations += 1;
                    blk.bytes = blk.bytes.saturating_add(f.len);
                    if blk.continuations > self.limits.max_continuation_frames
                        || blk.bytes > self.limits.max_header_block_bytes
                    {
                        return Err(H2Refusal::ContinuationFlood);
                    }
                    blk.ending = f.flags & END_HEADERS != 0;
                }
                self.idle_since = now;
            }
            PRIORITY => {
                if !self.buckets.priority.take(p.priority, now) {
                    return Err(H2Refusal::PriorityFlood);
                }
            }
            RST_STREAM => {
                if !self.buckets.rst_stream.take(p.rst_stream, now) {
                    return Err(H2Refusal::ResetFlood);
                }
                self.finish(f.stream, now);
            }
            SETTINGS => {
                if !self.buckets.settings.take(p.settings, now) {
                    return Err(H2Refusal::SettingsFlood);
                }
            }
            PING => {
                if !self.buckets.ping.take(p.ping, now) {
                    return Err(H2Refusal::PingFlood);
                }
            }
            WINDOW_UPDATE => {
                if !self.buckets.window_update.take(p.window_update, now) {
                    return Err(H2Refusal::WindowUpdateFlood);
                }
            }
            _ => {
                if !self.buckets.other.take(p.other, now) {
                    return Err(H2Refusal::OtherFrameFlood);
                }
            }
        }
        Ok(())
    }

    /// Counts a request frame as empty (`true`) or not.
    #[inline]
    fn empty(&mut self, empty: bool) -> Result<(), H2Refusal> {
        if !empty {
            self.empty_run = 0;
            return Ok(());
        }
        self.empty_run += 1;
        if self.empty_run > self.limits.max_consecutive_empty_frames {
            return Err(H2Refusal::EmptyFrameFlood);
        }
        Ok(())
    }

    fn inbound_payload_end(&mut self) {
        if self.block.open && self.block.ending {
            self.block.open = false;
            self.block.ending = false;
        }
    }

    /// Records bytes written to the client (hyper's frames).
    fn outbound(&mut self, bytes: &[u8], now: u64) {
        if self.mode == Mode::Passthrough {
            return;
        }
        let mut framer = self.outbound;
        let mut i = 0;
        loop {
            if let Some((code, have)) = &mut self.goaway_capture {
                // The first 8 payload bytes of a GOAWAY: last stream, code.
                let n = (8 - *have as usize).min(framer.left as usize).min(bytes.len() - i);
                code[*have as usize..*have as usize + n].copy_from_slice(&bytes[i..i + n]);
                *have += n as u8;
                framer.left -= n as u32;
                i += n;
                if *have == 8 || framer.left == 0 {
                    if *have == 8 {
                        self.sent_goaway = Some(u32::from_be_bytes([code[4], code[5], code[6], code[7]]));
                    }
                    self.goaway_capture = None;
                } else {
                    break;
                }
            }
            let Some(ev) = framer.next(bytes, &mut i) else { break };
            let Event::Head { head: f, .. } = ev else { continue };
            match f.kind {
                HEADERS if f.flags & END_STREAM != 0 => self.finish(f.stream, now),
                HEADERS => self.start(f.stream, now),
                DATA => {
                    self.last_data_out = now;
                    let credit = self.limits.window_updates_per_data_frame;
                    self.buckets.window_update.refund(self.paces.window_update, credit);
                    if f.flags & END_STREAM != 0 {
                        self.finish(f.stream, now);
                    }
                }
                RST_STREAM => {
                    self.resets_sent = self.resets_sent.saturating_add(1);
                    self.finish(f.stream, now);
                }
                GOAWAY => self.goaway_capture = Some(([0; 8], 0)),
                _ => {}
            }
        }
        self.outbound = framer;
    }

    fn find(&self, id: u32) -> Option<usize> {
        if id == 0 {
            return None;
        }
        self.streams.iter().position(|s| s & !STARTED == id)
    }

    /// Our response on `id` began (headers without END_STREAM).
    fn start(&mut self, id: u32, now: u64) {
        if let Some(at) = self.find(id) {
            if self.streams[at] & STARTED == 0 {
                self.streams[at] |= STARTED;
                if self.started == 0 {
                    self.last_data_out = now;
                }
                self.started += 1;
            }
        }
    }

    /// Stream `id` is over for us (answered or reset either way).
    fn finish(&mut self, id: u32, now: u64) {
        if let Some(at) = self.find(id) {
            if self.streams.swap_remove(at) & STARTED != 0 {
                self.started -= 1;
            }
            if self.streams.is_empty() {
                self.idle_since = now;
            }
        }
    }

    /// Whether the outbound stream is between frames.
    fn out_remaining(&self) -> usize {
        self.outbound.remaining()
    }

    fn idle(&self) -> bool {
        self.mode == Mode::H2 && self.streams.is_empty() && !self.block.open
    }

    /// The earliest deadline of the frame-level rules.
    fn deadline(&self) -> Option<u64> {
        let mut d = u64::MAX;
        if self.mode == Mode::H2 {
            if self.block.open && self.block_ns.is_some() {
                d = d.min(self.block.deadline);
            }
            if let (true, Some(w)) = (self.started > 0, self.write_ns) {
                d = d.min(self.last_data_out.saturating_add(w));
            }
            if let (true, Some(t)) = (self.idle(), self.idle_ns) {
                d = d.min(self.idle_since.saturating_add(t));
            }
        }
        (d != u64::MAX).then_some(d)
    }

    /// Which rule's deadline has passed at `now`, if any.
    fn expired(&self, now: u64) -> Option<H2Refusal> {
        if self.mode != Mode::H2 {
            return None;
        }
        if self.block.open && self.block_ns.is_some() && now >= self.block.deadline {
            return Some(H2Refusal::HeaderTimeout);
        }
        if let (true, Some(w)) = (self.started > 0, self.write_ns) {
            if now >= self.last_data_out.saturating_add(w) {
                return Some(H2Refusal::WriteTimeout);
            }
        }
        if let (true, Some(t)) = (self.idle(), self.idle_ns) {
            if now >= self.idle_since.saturating_add(t) {
                return Some(H2Refusal::Idle);
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------
// The I/O wrapper.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for hyper to finish the outbound frame it is writing.
    Drain,
    /// Writing our GOAWAY.
    Send,
    Flush,
    Shutdown,
    Done,
}

#[derive(Debug)]
struct Cut {
    why: H2Refusal,
    phase: Phase,
    goaway: [u8; 17],
    sent: u8,
    /// Give up writing the GOAWAY at this time (ns).
    until: u64,
    /// The reader waiting for the cut to finish.
    reader: Option<Waker>,
}

/// A connection's I/O with the HTTP/2 frame guard; see the module docs.
#[derive(Debug)]
pub struct H2Guard<IO> {
    io: IO,
    inspect: Inspector,
    origin: Instant,
    verdict: H2Verdict,
    timer: Option<Pin<Box<Sleep>>>,
    /// The deadline the timer is set for (ns).
    armed: Option<u64>,
    /// Since when writes have been pending without a byte accepted (ns).
    write_blocked_since: Option<u64>,
    cut: Option<Cut>,
}

impl<IO> H2Guard<IO> {
    /// Guards `io`, whose first inbound bytes should be the client preface
    /// (a connection opening with anything else is passed through).
    pub fn new(io: IO, limits: &H2Limits) -> Self {
        H2Guard {
            io,
            inspect: Inspector::new(limits),
            origin: Instant::now(),
            verdict: H2Verdict::default(),
            timer: None,
            armed: None,
            write_blocked_since: None,
            cut: None,
        }
    }

    /// Where the guard's decision will be found once it has made one.
    pub fn verdict(&self) -> H2Verdict {
        self.verdict.clone()
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    fn now(&self) -> u64 {
        nanos(self.origin.elapsed())
    }

    fn at(&self, ns: u64) -> Instant {
        self.origin + Duration::from_nanos(ns)
    }

    /// Decides to cut: no more bytes for hyper; GOAWAY at the next outbound
    /// frame boundary.
    fn start_cut(&mut self, why: H2Refusal, now: u64) {
        if self.cut.is_some() {
            return;
        }
        self.verdict.set(why);
        let mut goaway = [0u8; 17];
        goaway[..9].copy_from_slice(&[0, 0, 8, GOAWAY, 0, 0, 0, 0, 0]);
        goaway[9..13].copy_from_slice(&self.inspect.highest.to_be_bytes());
        goaway[13..].copy_from_slice(&why.goaway_code().to_be_bytes());
        self.cut = Some(Cut {
            why,
            phase: Phase::Drain,
            goaway,
            sent: 0,
            until: now.saturating_add(nanos(self.inspect.limits.goaway_timeout)),
            reader: None,
        });
    }

    fn next_deadline(&self) -> Option<u64> {
        if let Some(cut) = &self.cut {
            return (cut.phase != Phase::Done).then_some(cut.until);
        }
        let write = match (self.write_blocked_since, self.inspect.write_ns) {
            (Some(since), Some(w)) => Some(since.saturating_add(w)),
            _ => None,
        };
        match (self.inspect.deadline(), write) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// On a pending path: polls the next deadline (registering `cx`), and
    /// starts a cut, or gives up on one, when it has passed. The timer is
    /// reset only when the deadline moved earlier; when it moved later (most
    /// progress does that) the timer fires early and is set again, so the hot
    /// path never touches it.
    fn watch(&mut self, cx: &mut Context<'_>) {
        for _ in 0..4 {
            let Some(deadline) = self.next_deadline() else { return };
            let now = self.now();
            if now >= deadline {
                self.armed = None;
                if let Some(cut) = &mut self.cut {
                    cut.phase = Phase::Done;
                    return;
                }
                let blocked = matches!((self.write_blocked_since, self.inspect.write_ns), (Some(s), Some(w)) if now >= s.saturating_add(w));
                let why = if blocked { Some(H2Refusal::WriteTimeout) } else { self.inspect.expired(now) };
                match why {
                    Some(why) => self.start_cut(why, now),
                    None => return,
                }
                continue;
            }
            let at = self.at(deadline);
            let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if self.armed.is_none_or(|armed| deadline < armed) {
                timer.as_mut().reset(at);
                self.armed = Some(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return;
            }
            // Fired early (the deadline moved on): set it again.
            self.armed = None;
        }
    }
}

impl<IO> Drop for H2Guard<IO> {
    /// Publishes what hyper sent (counted per frame here, without atomics).
    fn drop(&mut self) {
        let cell = &self.verdict.0;
        if let Some(code) = self.inspect.sent_goaway {
            cell.goaway.store(code.saturating_add(1), Ordering::Release);
        }
        cell.resets.store(self.inspect.resets_sent, Ordering::Release);
    }
}

impl<IO: AsyncWrite + Unpin> H2Guard<IO> {
    /// Drives a cut to its end: GOAWAY written, flushed, write side shut.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Some(cut) = &mut self.cut else { return Poll::Ready(()) };
            // Each arm either moves to the next phase (`continue`) or is
            // pending on the inner I/O (or, draining, on hyper).
            match cut.phase {
                Phase::Drain => {
                    if self.inspect.out_remaining() == 0 {
                        cut.phase = Phase::Send;
                        continue;
                    }
                }
                Phase::Send => match Pin::new(&mut self.io).poll_write(cx, &cut.goaway[cut.sent as usize..]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        cut.sent += n as u8;
                        if cut.sent as usize == cut.goaway.len() {
                            cut.phase = Phase::Flush;
                        }
                        continue;
                    }
                    Poll::Ready(_) => {
                        cut.phase = Phase::Done;
                        continue;
                    }
                    Poll::Pending => {}
                },
                Phase::Flush => match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        cut.phase = Phase::Shutdown;
                        continue;
                    }
                    Poll::Ready(Err(_)) => {
                        cut.phase = Phase::Done;
                        continue;
                    }
                    Poll::Pending => {}
                },
                Phase::Shutdown => match Pin::new(&mut self.io).poll_shutdown(cx) {
                    Poll::Ready(_) => {
                        cut.phase = Phase::Done;
                        continue;
                    }
                    Poll::Pending => {}
                },
                Phase::Done => {
                    if let Some(w) = cut.reader.take() {
                        w.wake();
                    }
                    return Poll::Ready(());
                }
            }
            // Pending: bounded by the GOAWAY deadline.
            self.watch(cx);
            if self.cut.as_ref().is_some_and(|c| c.phase == Phase::Done) {
                continue;
            }
            return Poll::Pending;
        }
    }

    fn cut_error(&self, kind: io::ErrorKind) -> io::Error {
        let why = self.cut.as_ref().map_or("cut", |c| c.why.as_str());
        io::Error::new(kind, format!("h2 guard: {why}"))
    }

    fn poll_cut_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.drive(cx) {
            Poll::Ready(()) => Poll::Ready(Err(self.cut_error(io::ErrorKind::ConnectionAborted))),
            Poll::Pending => {
                if let Some(cut) = &mut self.cut {
                    cut.reader = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// A write while cutting: the rest of hyper's frame in progress, then
    /// nothing.
    fn poll_cut_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let remaining = self.inspect.out_remaining();
        if self.cut.as_ref().is_some_and(|c| c.phase == Phase::Drain) && remaining > 0 && !buf.is_empty() {
            let part = &buf[..remaining.min(buf.len())];
            return match Pin::new(&mut self.io).poll_write(cx, part) {
                Poll::Ready(Ok(n)) => {
                    let now = self.now();
                    self.inspect.outbound(&part[..n], now);
                    Poll::Ready(Ok(n))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.watch(cx);
                    if self.cut.as_ref().is_some_and(|c| c.phase == Phase::Done) {
                        return Poll::Ready(Err(self.cut_error(io::ErrorKind::BrokenPipe)));
                    }
                    Poll::Pending
                }
            };
        }
        match self.drive(cx) {
            Poll::Ready(()) => Poll::Ready(Err(self.cut_error(io::ErrorKind::BrokenPipe))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// After the inner I/O accepted (or refused) bytes.
    fn after_write(&mut self, cx: &mut Context<'_>, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) if *n > 0 => self.write_blocked_since = None,
            Poll::Pending => {
                if self.write_blocked_since.is_none() {
                    self.write_blocked_since = Some(self.now());
                }
                self.watch(cx);
            }
            _ => {}
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for H2Guard<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cut.is_some() {
            return this.poll_cut_read(cx);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.inspect.passthrough() || buf.filled().len() == before {
                    return Poll::Ready(Ok(()));
                }
                let now = this.now();
                match this.inspect.inbound(&buf.filled()[before..], now) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err((keep, why)) => {
                        buf.set_filled(before + keep);
                        this.start_cut(why, now);
                        if keep > 0 {
                            Poll::Ready(Ok(()))
                        } else {
                            this.poll_cut_read(cx)
                        }
                    }
                }
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if !this.inspect.passthrough() {
                    this.watch(cx);
                    if this.cut.is_some() {
                        return this.poll_cut_read(cx);
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for H2Guard<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.inspect.passthrough() {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        if this.cut.is_some() {
            return this.poll_cut_write(cx, buf);
        }
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            let now = this.now();
            this.inspect.outbound(&buf[..n], now);
        }
        this.after_write(cx, &r);
        if this.cut.is_some() && r.is_pending() {
            return this.poll_cut_write(cx, buf);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.inspect.passthrough() {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        }
        if this.cut.is_some() {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
            return this.poll_cut_write(cx, first);
        }
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            let now = this.now();
            let mut left = n;
            for b in bufs {
                if left == 0 {
                    break;
                }
                let k = left.min(b.len());
                this.inspect.outbound(&b[..k], now);
                left -= k;
            }
        }
        this.after_write(cx, &r);
        if this.cut.is_some() && r.is_pending() {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
            return this.poll_cut_write(cx, first);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(cut) = &this.cut {
            if cut.phase == Phase::Drain && this.inspect.out_remaining() > 0 {
                return Pin::new(&mut this.io).poll_flush(cx);
            }
            return match this.drive(cx) {
                Poll::Ready(()) => Poll::Ready(Err(this.cut_error(io::ErrorKind::BrokenPipe))),
                Poll::Pending => Poll::Pending,
            };
        }
        let r = Pin::new(&mut this.io).poll_flush(cx);
        if r.is_pending() && !this.inspect.passthrough() {
            this.watch(cx);
        }
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SEC: u64 = 1_000_000_000;
    const UNKNOWN: u8 = 0x20;

    /// A frame with a zero-filled payload of `len` bytes.
    fn frame(kind: u8, flags: u8, stream: u32, len: usize) -> Vec<u8> {
        let mut f = Vec::with_capacity(FRAME_HEADER_LEN + len);
        f.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.resize(FRAME_HEADER_LEN + len, 0);
        f
    }

    fn settings() -> Vec<u8> {
        frame(SETTINGS, 0, 0, 6)
    }

    /// An inspector past the preface and the client's first SETTINGS.
    fn started(limits: &H2Limits) -> Inspector {
        let mut i = Inspector::new(limits);
        let mut open = PREFACE.to_vec();
        open.extend(settings());
        i.inbound(&open, 0).expect("preface and SETTINGS");
        i
    }

    /// What a split must not change.
    fn summary(i: &Inspector) -> String {
        format!(
            "{:?} {:?} {:?} {} {} {:?} {} {:?}",
            i.mode,
            (i.inbound.have, i.inbound.left),
            i.buckets,
            i.empty_run,
            i.highest,
            i.streams,
            i.started,
            (i.block.open, i.block.ending, i.block.continuations, i.block.bytes),
        )
    }

    fn mixed_stream() -> Vec<u8> {
        let mut b = PREFACE.to_vec();
        for f in [
            settings(),
            frame(SETTINGS, 1, 0, 0),
            frame(WINDOW_UPDATE, 0, 0, 4),
            frame(HEADERS, END_STREAM | END_HEADERS, 1, 40),
            frame(PRIORITY, 0, 3, 5),
            frame(PING, 0, 0, 8),
            frame(HEADERS, END_STREAM, 3, 30),
            frame(CONTINUATION, 0, 3, 20),
            frame(CONTINUATION, END_HEADERS, 3, 10),
            frame(RST_STREAM, 0, 3, 4),
            frame(DATA, END_STREAM, 1, 0),
            frame(UNKNOWN, 0, 0, 3),
            frame(HEADERS, 0, 5, 17),
        ] {
            b.extend(f);
        }
        b
    }

    /// Frame headers split across reads at every offset (and every pair of
    /// offsets) leave exactly the state of a byte-at-a-time read.
    #[test]
    fn frame_headers_split_across_reads_at_every_offset() {
        let input = mixed_stream();
        let limits = H2Limits::default();
        let mut reference = Inspector::new(&limits);
        for b in &input {
            reference.inbound(std::slice::from_ref(b), 0).expect("within budget");
        }
        assert_eq!(reference.highest, 5);
        assert_eq!(reference.streams, vec![1, 5], "stream 3 was reset");
        assert!(reference.block.open, "stream 5's header block is open");
        let want = summary(&reference);
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let mut i = Inspector::new(&limits);
                for part in [&input[..a], &input[a..b], &input[b..]] {
                    i.inbound(part, 0).expect("within budget");
                }
                assert_eq!(summary(&i), want, "split at {a}, {b}");
            }
        }
        // The outbound side the same way.
        let out: Vec<u8> = [
            settings(),
            frame(SETTINGS, 1, 0, 0),
            frame(HEADERS, END_HEADERS, 1, 12),
            frame(DATA, 0, 1, 100),
            frame(DATA, END_STREAM, 1, 3),
            frame(HEADERS, END_HEADERS, 5, 9),
        ]
        .concat();
        let mut reference = Inspector::new(&limits);
        reference.inbound(&input, 0).unwrap();
        for b in &out {
            reference.outbound(std::slice::from_ref(b), 0);
        }
        assert_eq!(reference.streams, vec![5 | STARTED]);
        assert_eq!(reference.out_remaining(), 0);
        for a in 0..=out.len() {
            let mut i = Inspector::new(&limits);
            i.inbound(&input, 0).unwrap();
            i.outbound(&out[..a], 0);
            i.outbound(&out[a..], 0);
            assert_eq!(summary(&i), summary(&reference), "outbound split at {a}");
        }
    }

    #[test]
    fn outbound_remaining_knows_the_frame_in_progress() {
        let mut i = Inspector::new(&H2Limits::default());
        let f = frame(DATA, 0, 1, 100);
        assert_eq!(i.out_remaining(), 0);
        i.outbound(&f[..2], 0);
        assert_eq!(i.out_remaining(), 7, "length not known yet: finish the header");
        i.outbound(&f[2..5], 0);
        assert_eq!(i.out_remaining(), 104);
        i.outbound(&f[5..50], 0);
        assert_eq!(i.out_remaining(), 59);
        i.outbound(&f[50..], 0);
        assert_eq!(i.out_remaining(), 0);
    }

    /// `rate.burst` frames at once pass, one more is refused (and `keep`
    /// ends right before it); after a second, `rate.per_second` more pass.
    fn trips_at(rate: Rate, why: H2Refusal, mut make: impl FnMut(u32) -> Vec<u8>) {
        let limits = H2Limits {
            headers: Rate { per_second: 1000, burst: 100_000 },
            max_open_streams: 100_000,
            ..H2Limits::default()
        };
        let mut i = started(&limits);
        // Extra budget the connection's opening already used.
        let used = u32::from(why == H2Refusal::SettingsFlood);
        let mut n = 0;
        let mut chunk = Vec::new();
        for _ in used..rate.burst {
            chunk.extend(make(n));
            n += 1;
        }
        i.inbound(&chunk, 0).unwrap_or_else(|e| panic!("{why:?}: refused within the burst: {e:?}"));
        let mut over = make(n).repeat(1);
        n += 1;
        over.extend(make(n));
        n += 1;
        assert_eq!(i.inbound(&over, 0), Err((0, why)), "{why:?}: one beyond the burst");

        // A fresh connection: the burst, then the steady rate.
        let mut i = started(&limits);
        let mut chunk = Vec::new();
        for _ in used..rate.burst {
            chunk.extend(make(n));
            n += 1;
        }
        i.inbound(&chunk, 0).expect("burst");
        let mut second = Vec::new();
        for _ in 0..rate.per_second {
            second.extend(make(n));
            n += 1;
        }
        let boundary = second.len();
        second.extend(make(n));
        n += 1;
        assert_eq!(i.inbound(&second, SEC), Err((boundary, why)), "{why:?}: a second's worth, then refused");
        let _ = n;
    }

    #[test]
    fn each_flood_trips_at_its_budget_and_not_below() {
        let l = H2Limits::default();
        trips_at(l.settings, H2Refusal::SettingsFlood, |_| settings());
        trips_at(l.ping, H2Refusal::PingFlood, |n| frame(PING, (n % 2) as u8, 0, 8));
        trips_at(l.window_update, H2Refusal::WindowUpdateFlood, |_| frame(WINDOW_UPDATE, 0, 0, 4));
        trips_at(l.priority, H2Refusal::PriorityFlood, |n| frame(PRIORITY, 0, 2 * n + 1, 5));
        trips_at(l.rst_stream, H2Refusal::ResetFlood, |n| frame(RST_STREAM, 0, 2 * n + 1, 4));
        trips_at(l.small_data, H2Refusal::EmptyFrameFlood, |_| frame(DATA, 0, 1, 10));
        trips_at(l.other, H2Refusal::OtherFrameFlood, |_| frame(UNKNOWN, 0, 0, 1));
        trips_at(l.other, H2Refusal::OtherFrameFlood, |_| frame(GOAWAY, 0, 0, 8));
    }

    #[test]
    fn stream_budgets_trip_at_their_limits() {
        // HEADERS rate.
        let l = H2Limits { max_open_streams: 10_000, ..H2Limits::default() };
        let mut i = started(&l);
        let burst: Vec<u8> = (0..l.headers.burst).flat_map(|n| frame(HEADERS, 5, 2 * n + 1, 8)).collect();
        i.inbound(&burst, 0).expect("the HEADERS burst");
        let next = frame(HEADERS, 5, 2 * l.headers.burst + 1, 8);
        assert_eq!(i.inbound(&next, 0), Err((0, H2Refusal::StreamFlood)));
        assert_eq!(i.highest, 2 * l.headers.burst - 1, "the refused stream is not the last one seen");

        // Open streams: a slot frees when we answer one.
        let l = H2Limits { max_open_streams: 4, ..H2Limits::default() };
        let mut i = started(&l);
        let four: Vec<u8> = (0..4).flat_map(|n| frame(HEADERS, 5, 2 * n + 1, 8)).collect();
        i.inbound(&four, 0).expect("four open streams");
        assert_eq!(i.inbound(&frame(HEADERS, 5, 9, 8), 0), Err((0, H2Refusal::StreamFlood)));
        let mut i = started(&l);
        i.inbound(&four, 0).unwrap();
        i.outbound(&frame(HEADERS, END_HEADERS | END_STREAM, 3, 4), 0);
        i.inbound(&frame(HEADERS, 5, 9, 8), 0).expect("a slot was freed");
        // Trailers on an open stream open nothing.
        i.inbound(&frame(HEADERS, 5, 1, 8), 0).expect("trailers");
        assert_eq!(i.streams.len(), 4);
    }

    #[test]
    fn continuation_floods_trip_by_count_and_by_bytes() {
        let l = H2Limits::default();
        // As many CONTINUATION frames as allowed, the last one ending the block.
        let mut i = started(&l);
        let mut b = frame(HEADERS, END_STREAM, 1, 100);
        for _ in 1..l.max_continuation_frames {
            b.extend(frame(CONTINUATION, 0, 1, 100));
        }
        b.extend(frame(CONTINUATION, END_HEADERS, 1, 100));
        i.inbound(&b, 0).expect("a long but allowed header block");
        assert!(!i.block.open);
        // One more.
        let mut i = started(&l);
        let mut b = frame(HEADERS, END_STREAM, 1, 100);
        for _ in 0..l.max_continuation_frames {
            b.extend(frame(CONTINUATION, 0, 1, 100));
        }
        let at = b.len();
        b.extend(frame(CONTINUATION, 0, 1, 100));
        assert_eq!(i.inbound(&b, 0), Err((at, H2Refusal::ContinuationFlood)));
        // Bytes: exactly the limit passes, one more does not.
        let max = l.max_header_block_bytes as usize;
        let mut i = started(&l);
        let mut b = frame(HEADERS, END_STREAM, 1, 16_384);
        b.extend(frame(CONTINUATION, END_HEADERS, 1, max - 16_384));
        i.inbound(&b, 0).expect("a block of exactly the limit");
        let mut i = started(&l);
        let mut b = frame(HEADERS, END_STREAM, 1, 16_384);
        let at = b.len();
        b.extend(frame(CONTINUATION, END_HEADERS, 1, max - 16_384 + 1));
        assert_eq!(i.inbound(&b, 0), Err((at, H2Refusal::ContinuationFlood)));
        // A single HEADERS frame over the limit.
        let mut i = started(&l);
        assert_eq!(i.inbound(&frame(HEADERS, END_HEADERS, 1, max + 1)[..9], 0), Err((0, H2Refusal::ContinuationFlood)));
    }

    #[test]
    fn consecutive_empty_frames_trip_and_end_stream_data_does_not() {
        let l = H2Limits::default();
        let mut i = started(&l);
        let mut b = frame(HEADERS, END_HEADERS, 1, 20);
        b.extend(frame(DATA, 0, 1, 0));
        i.inbound(&b, 0).expect("one empty frame");
        let at = 0;
        assert_eq!(i.inbound(&frame(DATA, 0, 1, 0), 0), Err((at, H2Refusal::EmptyFrameFlood)));
        // Empty DATA that ends a stream (fetchers send it) never counts.
        let mut i = started(&l);
        let b: Vec<u8> = (0..150u32)
            .flat_map(|n| [frame(HEADERS, END_HEADERS, 2 * n + 1, 20), frame(DATA, END_STREAM, 2 * n + 1, 0)].concat())
            .collect();
        i.inbound(&b, 0).expect("empty END_STREAM DATA is fine");
        // A non-empty frame between empty ones resets the run.
        let mut i = started(&l);
        let mut b = frame(HEADERS, END_HEADERS, 1, 20);
        for _ in 0..10 {
            b.extend(frame(DATA, 0, 1, 0));
            b.extend(frame(DATA, 0, 1, 300));
        }
        i.inbound(&b, 0).expect("never two empty frames in a row");
        // Empty CONTINUATION frames are empty frames too.
        let mut i = started(&l);
        let mut b = frame(HEADERS, 0, 1, 20);
        b.extend(frame(CONTINUATION, 0, 1, 0));
        let at = b.len();
        b.extend(frame(CONTINUATION, 0, 1, 0));
        assert_eq!(i.inbound(&b, 0), Err((at, H2Refusal::EmptyFrameFlood)));
    }

    /// A client as fetchers behave, for ten minutes: never refused, never
    /// idle, never stalled.
    #[test]
    fn a_well_behaved_client_never_trips() {
        let l = H2Limits::default();
        let mut i = Inspector::new(&l);
        let mut open = PREFACE.to_vec();
        open.extend(settings());
        open.extend(frame(WINDOW_UPDATE, 0, 0, 4));
        i.inbound(&open, 0).unwrap();
        i.outbound(&[settings(), frame(SETTINGS, 1, 0, 0)].concat(), 0);
        i.inbound(&frame(SETTINGS, 1, 0, 0), SEC / 100).unwrap();
        let mut stream = 1;
        for tick in 0..600u64 {
            let now = tick * SEC + SEC / 10;
            // Two documents, each answered in two DATA frames.
            for _ in 0..2 {
                i.inbound(&frame(HEADERS, END_STREAM | END_HEADERS, stream, 60), now).expect("request");
                assert_eq!(i.expired(now + SEC / 2), None);
                i.outbound(&frame(HEADERS, END_HEADERS, stream, 30), now + 1000);
                i.outbound(&frame(DATA, 0, stream, 16_384), now + 2000);
                i.inbound(&[frame(WINDOW_UPDATE, 0, stream, 4), frame(WINDOW_UPDATE, 0, 0, 4)].concat(), now + 3000)
                    .expect("window updates after DATA");
                i.outbound(&frame(DATA, END_STREAM, stream, 2000), now + 4000);
                i.inbound(&[frame(WINDOW_UPDATE, 0, stream, 4), frame(WINDOW_UPDATE, 0, 0, 4)].concat(), now + 5000)
                    .expect("window updates after DATA");
                stream += 2;
            }
            if tick % 10 == 0 {
                i.inbound(&frame(PING, 0, 0, 8), now + 6000).expect("keep-alive ping");
                i.outbound(&frame(PING, 1, 0, 8), now + 7000);
            }
            if tick % 100 == 0 {
                i.inbound(&frame(PRIORITY, 0, stream, 5), now + 8000).expect("a PRIORITY now and then");
            }
            assert!(i.streams.is_empty(), "every request answered");
            assert_eq!(i.expired(now + SEC), None, "never idle, never stalled");
        }
        assert_eq!(i.highest, stream - 2);
    }

    #[test]
    fn idle_header_and_write_deadlines() {
        let l = H2Limits::default();
        let idle = nanos(l.idle_timeout.unwrap());
        // Idle: PINGs do not keep a connection without streams open.
        let mut i = started(&l);
        for t in 1..60 {
            i.inbound(&frame(PING, 0, 0, 8), t * SEC).unwrap();
        }
        assert_eq!(i.deadline(), Some(idle));
        assert_eq!(i.expired(idle - 1), None);
        assert_eq!(i.expired(idle), Some(H2Refusal::Idle));
        // An open stream is not idle, however long it takes; answering it
        // starts the idle clock again.
        let mut i = started(&l);
        i.inbound(&frame(HEADERS, END_STREAM | END_HEADERS, 1, 20), SEC).unwrap();
        assert_eq!(i.expired(10 * idle), None);
        i.outbound(&frame(HEADERS, END_HEADERS | END_STREAM, 1, 20), 2 * idle);
        assert_eq!(i.expired(3 * idle - 1), None);
        assert_eq!(i.expired(3 * idle), Some(H2Refusal::Idle));

        // A header block must end within its deadline, whatever else arrives.
        let block = nanos(l.header_block_timeout.unwrap());
        let mut i = started(&l);
        i.inbound(&frame(HEADERS, 0, 1, 20), SEC).unwrap();
        i.inbound(&frame(CONTINUATION, 0, 1, 20), 2 * SEC).unwrap();
        assert_eq!(i.expired(SEC + block - 1), None);
        assert_eq!(i.expired(SEC + block), Some(H2Refusal::HeaderTimeout));
        // The payload of the frame carrying END_HEADERS must arrive too.
        let f = frame(CONTINUATION, END_HEADERS, 1, 20);
        i.inbound(&f[..12], 3 * SEC).unwrap();
        assert_eq!(i.expired(SEC + block), Some(H2Refusal::HeaderTimeout), "payload still missing");
        i.inbound(&f[12..], 3 * SEC).unwrap();
        assert_eq!(i.expired(SEC + block), None);

        // A started response without DATA: a zero window held.
        let write = nanos(l.write_timeout.unwrap());
        let mut i = started(&l);
        i.inbound(&frame(HEADERS, END_STREAM | END_HEADERS, 1, 20), 0).unwrap();
        i.outbound(&frame(HEADERS, END_HEADERS, 1, 20), SEC);
        assert_eq!(i.expired(SEC + write - 1), None);
        assert_eq!(i.expired(SEC + write), Some(H2Refusal::WriteTimeout));
        i.outbound(&frame(DATA, 0, 1, 1), 10 * SEC);
        assert_eq!(i.expired(SEC + write), None, "DATA moved");
        // The client resetting the stream ends it.
        i.inbound(&frame(RST_STREAM, 0, 1, 4), 11 * SEC).unwrap();
        assert_eq!(i.started, 0);
        assert_eq!(i.expired(10 * SEC + write), None);
    }

    #[test]
    fn window_updates_earn_credit_from_data_sent() {
        let l = H2Limits::default();
        let mut i = started(&l);
        let burst: Vec<u8> = (0..l.window_update.burst).flat_map(|_| frame(WINDOW_UPDATE, 0, 0, 4)).collect();
        i.inbound(&burst, 0).unwrap();
        assert!(i.inbound(&frame(WINDOW_UPDATE, 0, 0, 4), 0).is_err());
        let mut i = started(&l);
        i.inbound(&burst, 0).unwrap();
        i.inbound(&frame(HEADERS, 5, 1, 8), 0).unwrap();
        for _ in 0..10 {
            i.outbound(&frame(DATA, 0, 1, 100), 0);
        }
        let earned: Vec<u8> =
            (0..10 * l.window_updates_per_data_frame).flat_map(|_| frame(WINDOW_UPDATE, 0, 1, 4)).collect();
        i.inbound(&earned, 0).expect("two per DATA frame sent");
        assert!(i.inbound(&frame(WINDOW_UPDATE, 0, 0, 4), 0).is_err());
    }

    #[test]
    fn what_hyper_sent_is_reported() {
        let mut i = started(&H2Limits::default());
        let goaway = [frame(GOAWAY, 0, 0, 8)[..9].to_vec(), vec![0, 0, 0, 7, 0, 0, 0, 0xb]].concat();
        let out = [frame(RST_STREAM, 0, 1, 4), frame(RST_STREAM, 0, 3, 4), goaway, frame(PING, 0, 0, 8)].concat();
        for split in 0..=out.len() {
            let mut j = started(&H2Limits::default());
            j.outbound(&out[..split], 0);
            j.outbound(&out[split..], 0);
            assert_eq!((j.sent_goaway, j.resets_sent, j.out_remaining()), (Some(0xb), 2, 0), "split at {split}");
        }
        i.outbound(&out, 0);
        let (server, _client) = tokio_test_pair();
        let mut g = H2Guard::new(server, &H2Limits::default());
        g.inspect = i;
        let v = g.verdict();
        assert_eq!((v.sent_goaway(), v.resets_sent()), (None, 0), "published when dropped");
        drop(g);
        assert_eq!((v.sent_goaway(), v.resets_sent(), v.get()), (Some(0xb), 2, None));
    }

    fn tokio_test_pair() -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
        tokio::io::duplex(64)
    }

    #[test]
    fn labels_and_codes() {
        for r in H2Refusal::ALL {
            assert_eq!(H2Refusal::from_u8(r as u8), Some(r));
            let s = r.as_str();
            assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{s}");
            assert_eq!(r.goaway_code(), if r == H2Refusal::Idle { NO_ERROR } else { ENHANCE_YOUR_CALM });
        }
        assert_eq!(H2Refusal::from_u8(0), None);
    }

    #[test]
    fn scaled_limits() {
        let l = H2Limits::default().with_max_concurrent_streams(250).with_max_header_list_size(1 << 20);
        assert_eq!((l.max_open_streams, l.headers.burst, l.rst_stream.burst), (500, 500, 250));
        assert_eq!(l.max_header_block_bytes, 2 << 20);
        assert!(l.max_continuation_frames >= (2 << 20) / 16_384);
        let d = H2Limits::default().with_max_concurrent_streams(100).with_max_header_list_size(16 * 1024);
        assert_eq!(d, H2Limits::default(), "the defaults are the scaled defaults");
    }

    /// Parses the frames in `bytes`: (type, flags, stream, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while bytes.len() >= 9 {
            let h = FrameHead::parse(bytes[..9].try_into().unwrap());
            let end = 9 + h.len as usize;
            out.push((h.kind, h.flags, h.stream, bytes[9..end.min(bytes.len())].to_vec()));
            bytes = &bytes[end.min(bytes.len())..];
        }
        out
    }

    fn goaway_of(f: &(u8, u8, u32, Vec<u8>)) -> (u32, u32) {
        assert_eq!(f.0, GOAWAY, "{f:?}");
        let p = &f.3;
        (u32::from_be_bytes(p[0..4].try_into().unwrap()), u32::from_be_bytes(p[4..8].try_into().unwrap()))
    }

    /// A flood arrives while hyper is in the middle of writing a DATA frame:
    /// the rest of that frame goes out, then the GOAWAY, then nothing.
    #[tokio::test]
    async fn goaway_waits_for_the_frame_hyper_is_writing() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut g = H2Guard::new(server, &H2Limits::default());
        let verdict = g.verdict();
        let mut open = PREFACE.to_vec();
        open.extend(settings());
        open.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1, 20));
        client.write_all(&open).await.unwrap();
        let mut buf = vec![0u8; 1 << 16];
        assert_eq!(g.read(&mut buf).await.unwrap(), open.len());

        // hyper: its SETTINGS, the response head, half a DATA frame.
        let data = frame(DATA, END_STREAM, 1, 100);
        let mut out = [settings(), frame(HEADERS, END_HEADERS, 1, 10)].concat();
        out.extend_from_slice(&data[..40]);
        g.write_all(&out).await.unwrap();

        // The flood: 16 SETTINGS pass (one already used), the 17th does not.
        let flood: Vec<u8> = (0..40).flat_map(|_| settings()).collect();
        client.write_all(&flood).await.unwrap();
        let n = g.read(&mut buf).await.unwrap();
        assert_eq!(n, 15 * 15, "the frames within budget are passed on, nothing after");
        assert_eq!(verdict.get(), Some(H2Refusal::SettingsFlood));
        let read = tokio::time::timeout(Duration::from_millis(50), g.read(&mut buf)).await;
        assert!(read.is_err(), "reads wait while hyper's frame is half written: {read:?}");

        // hyper finishes its frame and would write another: only the rest of
        // the frame is taken.
        let mut rest = data[40..].to_vec();
        rest.extend(frame(PING, 1, 0, 8));
        assert_eq!(g.write(&rest).await.unwrap(), data.len() - 40);
        let next = g.write(&rest[data.len() - 40..]).await;
        assert_eq!(next.map_err(|e| e.kind()).unwrap_err(), io::ErrorKind::BrokenPipe);
        let err = g.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert!(err.to_string().contains("settings_flood"), "{err}");

        let mut seen = Vec::new();
        client.read_to_end(&mut seen).await.unwrap();
        let got = frames(&seen);
        assert_eq!(got.len(), 4, "SETTINGS, HEADERS, the whole DATA frame, GOAWAY: {got:?}");
        assert_eq!(got[2].3.len(), 100, "the DATA frame is whole");
        assert_eq!(goaway_of(&got[3]), (1, ENHANCE_YOUR_CALM), "last stream 1, ENHANCE_YOUR_CALM");
    }

    /// With no frame in progress the GOAWAY goes out at once; vectored
    /// writes are tracked like plain ones.
    #[tokio::test]
    async fn goaway_at_once_between_frames_and_vectored_writes() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut g = H2Guard::new(server, &H2Limits::default());
        let mut open = PREFACE.to_vec();
        open.extend(settings());
        client.write_all(&open).await.unwrap();
        let mut buf = vec![0u8; 1 << 16];
        assert_eq!(g.read(&mut buf).await.unwrap(), open.len());
        let a = settings();
        let b = frame(SETTINGS, 1, 0, 0);
        let all = [a.clone(), b.clone()].concat();
        let slices = [io::IoSlice::new(&a[..5]), io::IoSlice::new(&a[5..]), io::IoSlice::new(&b)];
        let n = g.write_vectored(&slices).await.unwrap();
        assert!(n > 0);
        if n == 5 {
            // The duplex writes one slice at a time: the rest of the header
            // and the payload are still to come.
            assert_eq!(g.inspect.out_remaining(), 4 + 6);
        }
        g.write_all(&all[n..]).await.unwrap();
        assert_eq!(g.inspect.out_remaining(), 0);
        let pings: Vec<u8> = (0..200).flat_map(|_| frame(PING, 0, 0, 8)).collect();
        client.write_all(&pings).await.unwrap();
        let n = g.read(&mut buf).await.unwrap();
        assert_eq!(n, 50 * 17);
        let err = g.read(&mut buf).await.unwrap_err();
        assert!(err.to_string().contains("ping_flood"), "{err}");
        let mut seen = Vec::new();
        client.read_to_end(&mut seen).await.unwrap();
        let got = frames(&seen);
        assert_eq!(goaway_of(got.last().unwrap()), (0, ENHANCE_YOUR_CALM));
    }

    /// No stream for `idle_timeout`: GOAWAY(NO_ERROR) and the end, though
    /// the client pings all along.
    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_though_it_pings() {
        let limits = H2Limits { idle_timeout: Some(Duration::from_secs(3)), ..H2Limits::default() };
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut g = H2Guard::new(server, &limits);
        let verdict = g.verdict();
        let start = Instant::now();
        let served = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                match g.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        });
        let mut open = PREFACE.to_vec();
        open.extend(settings());
        client.write_all(&open).await.unwrap();
        let (mut rd, mut wr) = tokio::io::split(client);
        let pinger = tokio::spawn(async move {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if wr.write_all(&frame(PING, 0, 0, 8)).await.is_err() {
                    return;
                }
            }
        });
        let err = served.await.unwrap().unwrap_err();
        let took = start.elapsed();
        assert!(took >= Duration::from_secs(3) && took < Duration::from_millis(3100), "{took:?}");
        assert!(err.to_string().contains("idle_timeout"), "{err}");
        assert_eq!(verdict.get(), Some(H2Refusal::Idle));
        let mut seen = Vec::new();
        rd.read_to_end(&mut seen).await.unwrap();
        assert_eq!(goaway_of(&frames(&seen)[0]), (0, NO_ERROR));
        pinger.abort();
    }

    /// A response stuck on a zero window ends the connection at
    /// `write_timeout`.
    #[tokio::test(start_paused = true)]
    async fn a_response_without_window_is_cut_at_write_timeout() {
        let limits = H2Limits { write_timeout: Some(Duration::from_secs(2)), ..H2Limits::default() };
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut g = H2Guard::new(server, &limits);
        let mut open = PREFACE.to_vec();
        open.extend(settings());
        open.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1, 20));
        client.write_all(&open).await.unwrap();
        let mut buf = vec![0u8; 4096];
        assert_eq!(g.read(&mut buf).await.unwrap(), open.len());
        g.write_all(&[settings(), frame(HEADERS, END_HEADERS, 1, 20)].concat()).await.unwrap();
        let start = Instant::now();
        let err = g.read(&mut buf).await.unwrap_err();
        assert!(err.to_string().contains("write_timeout"), "{err}");
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    /// A socket that accepts nothing: the cut gives up on the GOAWAY after
    /// `goaway_timeout`.
    #[tokio::test(start_paused = true)]
    async fn a_peer_that_reads_nothing_is_dropped_after_the_goaway_timeout() {
        let limits = H2Limits { write_timeout: Some(Duration::from_secs(2)), ..H2Limits::default() };
        let (mut client, server) = tokio::io::duplex(64);
        let mut g = H2Guard::new(server, &limits);
        let mut open = PREFACE.to_vec();
        open.extend(settings());
        client.write_all(&open).await.unwrap();
        let mut buf = vec![0u8; 4096];
        assert_eq!(g.read(&mut buf).await.unwrap(), open.len());
        let big = frame(DATA, 0, 1, 1000);
        let start = Instant::now();
        let err = g.write_all(&big).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        let took = start.elapsed();
        assert_eq!(took, Duration::from_secs(3), "write timeout, then the GOAWAY's own second");
        assert_eq!(g.verdict().get(), Some(H2Refusal::WriteTimeout));
    }

    /// A connection that is not h2 is passed through untouched.
    #[tokio::test]
    async fn http1_passes_through() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut g = H2Guard::new(server, &H2Limits::default());
        let req = b"POST / HTTP/1.1\r\nHost: x\r\n\r\n";
        client.write_all(req).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = g.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], req);
        let junk = vec![0xffu8; 3000];
        g.write_all(&junk).await.unwrap();
        client.write_all(&[0u8; 5000]).await.unwrap();
        let mut total = 0;
        while total < 5000 {
            total += g.read(&mut buf).await.unwrap();
        }
        assert!(g.inspect.passthrough());
        assert_eq!(g.verdict().get(), None);
    }
}
