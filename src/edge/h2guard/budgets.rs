//! A connection's HTTP/2 frame budgets and deadlines ([`H2Limits`]), the
//! defaults with their reasons, and the GCRA token buckets that enforce the
//! rates.

use std::time::Duration;

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

/// RST_STREAM from the client (rapid reset, CVE-2023-44487) for streams
/// whose response has not begun; a reset after our response headers (a
/// client that read the status and dropped the body) saves no work and is
/// not charged. A client that has not yet seen our SETTINGS may assume 100
/// concurrent streams to cancel at once; after that, Netty's server default
/// is 200 per 30 s (~7/s) and we allow 10/s. h2's own limit counts only resets of streams not yet accepted by
/// hyper (`max_pending_accept_reset_streams`), not the rate at which streams
/// are opened, answered and cancelled. Pipelined HEADERS+RST_STREAM pairs
/// reach h2's limit first when it is below this burst (it logs a WARN line
/// per connection, and the cut is h2's, seen only in
/// [`H2Verdict::sent_goaway`]): set it above the burst to have the guard cut.
pub const DEFAULT_RST_STREAM: Rate = Rate { per_second: 10, burst: 100 };

/// HEADERS (streams opened): a backstop only, above what one CPU can
/// answer (~15,000 a second on one connection at best). Streams that are
/// answered are requests like any other, held to the request rate limit
/// (`rate_limit`, 50/s per client by default, answered with `429`); the h2
/// abuses are bounded elsewhere: open streams by `max_open_streams`, rapid
/// reset by the RST_STREAM budget. (At 100/s with a burst of 200, as first
/// written, an h2 client sending more than a hundred requests a second on
/// one connection, a load generator or an ingress multiplexing its clients,
/// was cut with ENHANCE_YOUR_CALM.)
pub const DEFAULT_HEADERS: Rate = Rate { per_second: 20_000, burst: 20_000 };

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
        self.headers.burst = n.saturating_mul(2).max(DEFAULT_HEADERS.burst);
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
// Budgets.

/// A [`Rate`] as GCRA parameters, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    /// Time one frame costs.
    pub(super) interval: u64,
    /// How far ahead of now the bucket may run: `burst` frames' worth.
    pub(super) tolerance: u64,
}

impl Pace {
    pub(super) fn of(r: Rate) -> Pace {
        let burst = u64::from(r.burst);
        let interval =
            if r.per_second == 0 { u64::MAX / (burst + 2) } else { 1_000_000_000 / u64::from(r.per_second) }.max(1);
        Pace { interval, tolerance: interval.saturating_mul(burst) }
    }
}

/// GCRA state: the theoretical arrival time of the next frame.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Bucket {
    pub(super) tat: u64,
}

impl Bucket {
    #[inline]
    pub(super) fn take(&mut self, p: Pace, now: u64) -> bool {
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
    pub(super) fn refund(&mut self, p: Pace, frames: u32) {
        self.tat = self.tat.saturating_sub(p.interval.saturating_mul(u64::from(frames)));
    }
}

/// One value per budgeted frame kind.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PerKind<T> {
    pub(super) settings: T,
    pub(super) ping: T,
    pub(super) window_update: T,
    pub(super) priority: T,
    pub(super) rst_stream: T,
    pub(super) headers: T,
    pub(super) small_data: T,
    pub(super) other: T,
}

/// The pace of each frame kind's budget.
pub(super) type Paces = PerKind<Pace>;

/// The bucket of each frame kind's budget.
pub(super) type Buckets = PerKind<Bucket>;
