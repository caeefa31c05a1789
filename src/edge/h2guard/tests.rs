//! Unit tests of the inspector, the budgets and the verdict.

use super::budgets::*;
use super::frames::*;
use super::refusal::*;
use super::*;

const SEC: u64 = 1_000_000_000;
const UNKNOWN: u8 = 0x20;

/// A frame with a zero-filled payload of `len` bytes.
pub(super) fn frame(kind: u8, flags: u8, stream: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(FRAME_HEADER_LEN + len);
    f.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.resize(FRAME_HEADER_LEN + len, 0);
    f
}

pub(super) fn settings() -> Vec<u8> {
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
fn resets_of_answered_streams_are_not_rapid_reset() {
    let l = H2Limits::default();
    let mut i = started(&l);
    // Open and answer more streams than the reset burst, then reset each
    // (a client dropping bodies it did not read): no cut.
    let n = l.rst_stream.burst * 2;
    for s in 0..n {
        i.inbound(&frame(HEADERS, 5, 2 * s + 1, 8), 0).expect("open");
        i.outbound(&frame(HEADERS, END_HEADERS | END_STREAM, 2 * s + 1, 4), 0);
    }
    let resets: Vec<u8> = (0..n).flat_map(|s| frame(RST_STREAM, 0, 2 * s + 1, 4)).collect();
    i.inbound(&resets, 0).expect("late resets cost only the frame");
    // One each: resetting a finished stream again and again is a flood.
    assert_eq!(i.inbound(&frame(RST_STREAM, 0, 1, 4), 0).map_err(|(_, r)| r), Err(H2Refusal::ResetFlood));
    // A reset that overtakes the body (the client saw the status and
    // dropped the rest) is answered too: the CI run that found it cut a
    // client at its 1,481st request.
    let mut i = started(&l);
    for s in 0..n {
        i.inbound(&frame(HEADERS, 5, 2 * s + 1, 8), 0).expect("open");
        i.outbound(&frame(HEADERS, END_HEADERS, 2 * s + 1, 4), 0);
        i.inbound(&frame(RST_STREAM, 0, 2 * s + 1, 4), 0).expect("a reset after our headers");
    }
    assert!(i.streams.is_empty(), "each reset finished its stream");
    assert_eq!(i.inbound(&frame(RST_STREAM, 0, 1, 4), 0).map_err(|(_, r)| r), Err(H2Refusal::ResetFlood), "once each");
    // A reset of a stream still being answered is rapid reset.
    let mut i = started(&l);
    let pairs: Vec<u8> = (0..=l.rst_stream.burst)
        .flat_map(|s| [frame(HEADERS, 5, 2 * s + 1, 8), frame(RST_STREAM, 0, 2 * s + 1, 4)].concat())
        .collect();
    assert_eq!(i.inbound(&pairs, 0).map_err(|(_, r)| r), Err(H2Refusal::ResetFlood));
}

#[test]
fn stream_budgets_trip_at_their_limits() {
    // HEADERS rate.
    let l = H2Limits { max_open_streams: 100_000, ..H2Limits::default() };
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
    assert_eq!((l.max_open_streams, l.headers.burst, l.rst_stream.burst), (500, DEFAULT_HEADERS.burst, 250));
    assert_eq!(l.max_header_block_bytes, 2 << 20);
    assert!(l.max_continuation_frames >= (2 << 20) / 16_384);
    let d = H2Limits::default().with_max_concurrent_streams(100).with_max_header_list_size(16 * 1024);
    assert_eq!(d, H2Limits::default(), "the defaults are the scaled defaults");
}
