//! HTTP/2 frame headers read in both directions across read and write
//! boundaries, and the inspector that checks each one against the budgets
//! and keeps the deadlines: everything but the I/O, with time passed in
//! (ns).

use std::time::Duration;

use super::budgets::{Buckets, H2Limits, Pace, Paces};
use super::refusal::H2Refusal;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub(super) const FRAME_HEADER_LEN: usize = 9;

pub(super) const DATA: u8 = 0x0;
pub(super) const HEADERS: u8 = 0x1;
pub(super) const PRIORITY: u8 = 0x2;
pub(super) const RST_STREAM: u8 = 0x3;
pub(super) const SETTINGS: u8 = 0x4;
pub(super) const PING: u8 = 0x6;
pub(super) const GOAWAY: u8 = 0x7;
pub(super) const WINDOW_UPDATE: u8 = 0x8;
pub(super) const CONTINUATION: u8 = 0x9;

pub(super) const END_STREAM: u8 = 0x1;
pub(super) const END_HEADERS: u8 = 0x4;

/// GOAWAY error codes (RFC 9113 §7).
pub(super) const NO_ERROR: u32 = 0x0;
pub(super) const ENHANCE_YOUR_CALM: u32 = 0xb;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameHead {
    pub(super) len: u32,
    pub(super) kind: u8,
    pub(super) flags: u8,
    pub(super) stream: u32,
}

impl FrameHead {
    pub(super) fn parse(b: &[u8; FRAME_HEADER_LEN]) -> FrameHead {
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
pub(super) struct Framer {
    pub(super) head: [u8; FRAME_HEADER_LEN],
    pub(super) have: u8,
    /// Payload bytes of the current frame not yet seen.
    pub(super) left: u32,
}

/// What the framer found next in a chunk.
pub(super) enum Event {
    /// A frame header; `start` is where it began in the chunk (0 if it began
    /// in an earlier one).
    Head { head: FrameHead, start: usize },
    /// The current frame's payload ended.
    PayloadEnd,
}

impl Framer {
    /// Advances over `bytes[*i..]` up to the next event.
    #[inline]
    pub(super) fn next(&mut self, bytes: &[u8], i: &mut usize) -> Option<Event> {
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
    pub(super) fn remaining(&self) -> usize {
        match self.have as usize {
            0 => self.left as usize,
            have @ 1..3 => FRAME_HEADER_LEN - have,
            have => {
                FRAME_HEADER_LEN - have + u32::from_be_bytes([0, self.head[0], self.head[1], self.head[2]]) as usize
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Matching the client preface; `matched` bytes so far.
    Preface {
        matched: u8,
    },
    H2,
    /// Not h2: bytes pass untouched.
    Passthrough,
}

/// Bit set on a stream table entry once its response has started.
pub(super) const STARTED: u32 = 1 << 31;

/// The header block in progress, if any.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Block {
    pub(super) open: bool,
    /// The frame whose payload is being read carries END_HEADERS.
    pub(super) ending: bool,
    pub(super) continuations: u32,
    pub(super) bytes: u32,
    pub(super) deadline: u64,
}

#[derive(Debug)]
pub(super) struct Inspector {
    pub(super) limits: H2Limits,
    pub(super) paces: Paces,
    pub(super) mode: Mode,
    pub(super) inbound: Framer,
    pub(super) outbound: Framer,
    pub(super) buckets: Buckets,
    pub(super) empty_run: u32,
    /// Highest client stream id passed to hyper.
    pub(super) highest: u32,
    /// Client streams we have not finished; [`STARTED`] marks a started
    /// response. Sized once, when the preface arrives.
    pub(super) streams: Vec<u32>,
    pub(super) started: u32,
    pub(super) block: Block,
    /// When the connection last had a stream in flight (or request bytes).
    pub(super) idle_since: u64,
    /// When a started response last sent DATA.
    pub(super) last_data_out: u64,
    pub(super) idle_ns: Option<u64>,
    pub(super) block_ns: Option<u64>,
    pub(super) write_ns: Option<u64>,
    /// Outbound GOAWAY payload being read (the error code is at 4..8).
    pub(super) goaway_capture: Option<([u8; 8], u8)>,
    /// The last outbound GOAWAY's error code.
    pub(super) sent_goaway: Option<u32>,
    pub(super) resets_sent: u32,
    /// Client streams finished (answered or reset), and resets the client
    /// sent for streams already finished: at most one each.
    pub(super) finished: u64,
    pub(super) late_resets: u64,
}

pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Inspector {
    pub(super) fn new(limits: &H2Limits) -> Inspector {
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
            finished: 0,
            late_resets: 0,
        }
    }

    pub(super) fn passthrough(&self) -> bool {
        self.mode == Mode::Passthrough
    }

    /// Inspects bytes read from the client. `Err((keep, why))`: only the
    /// first `keep` bytes may be passed on; the frame after them broke a
    /// budget.
    pub(super) fn inbound(&mut self, bytes: &[u8], now: u64) -> Result<(), (usize, H2Refusal)> {
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
    pub(super) fn inbound_frame(&mut self, f: FrameHead, now: u64) -> Result<(), H2Refusal> {
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
                // Rapid reset cancels streams before we answer them: the
                // reset budget. A reset of a stream whose response has begun
                // or ended (a client that read the status and dropped the
                // body) saves us no work and costs only the frame; each
                // finished stream may have one. (A stream never opened counts
                // as cancelled.)
                let answered = match self.find(f.stream) {
                    Some(at) => self.streams[at] & STARTED != 0,
                    None => f.stream <= self.highest,
                };
                if answered {
                    self.finish(f.stream, now);
                    self.late_resets += 1;
                    if self.late_resets > self.finished {
                        return Err(H2Refusal::ResetFlood);
                    }
                } else {
                    if !self.buckets.rst_stream.take(p.rst_stream, now) {
                        return Err(H2Refusal::ResetFlood);
                    }
                    self.finish(f.stream, now);
                }
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
    pub(super) fn empty(&mut self, empty: bool) -> Result<(), H2Refusal> {
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

    pub(super) fn inbound_payload_end(&mut self) {
        if self.block.open && self.block.ending {
            self.block.open = false;
            self.block.ending = false;
        }
    }

    /// Records bytes written to the client (hyper's frames).
    pub(super) fn outbound(&mut self, bytes: &[u8], now: u64) {
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

    pub(super) fn find(&self, id: u32) -> Option<usize> {
        if id == 0 {
            return None;
        }
        self.streams.iter().position(|s| s & !STARTED == id)
    }

    /// Our response on `id` began (headers without END_STREAM).
    pub(super) fn start(&mut self, id: u32, now: u64) {
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
    pub(super) fn finish(&mut self, id: u32, now: u64) {
        if let Some(at) = self.find(id) {
            self.finished += 1;
            if self.streams.swap_remove(at) & STARTED != 0 {
                self.started -= 1;
            }
            if self.streams.is_empty() {
                self.idle_since = now;
            }
        }
    }

    /// Whether the outbound stream is between frames.
    pub(super) fn out_remaining(&self) -> usize {
        self.outbound.remaining()
    }

    pub(super) fn idle(&self) -> bool {
        self.mode == Mode::H2 && self.streams.is_empty() && !self.block.open
    }

    /// The earliest deadline of the frame-level rules.
    pub(super) fn deadline(&self) -> Option<u64> {
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
    pub(super) fn expired(&self, now: u64) -> Option<H2Refusal> {
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
