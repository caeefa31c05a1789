//! Unit tests of the I/O wrapper: where the GOAWAY goes, the deadlines on a
//! real (paused) clock, passthrough.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::budgets::*;
use super::frames::*;
use super::refusal::*;
use super::tests::{frame, settings};
use super::*;

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
