//! Why the guard cut ([`H2Refusal`]), and what it and hyper sent, readable
//! once the connection is dropped ([`H2Verdict`]).

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

use super::frames::{ENHANCE_YOUR_CALM, NO_ERROR};
use crate::telemetry::events;

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
    pub(super) const ALL: [H2Refusal; 12] = [
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

    pub(super) fn from_u8(v: u8) -> Option<H2Refusal> {
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
pub struct H2Verdict(pub(super) Arc<VerdictCell>);

#[derive(Debug, Default)]
pub(super) struct VerdictCell {
    pub(super) refusal: AtomicU8,
    /// h2's GOAWAY error code + 1 (0: none sent).
    pub(super) goaway: AtomicU32,
    pub(super) resets: AtomicU32,
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

    pub(super) fn set(&self, r: H2Refusal) {
        let _ = self.0.refusal.compare_exchange(0, r as u8, Ordering::AcqRel, Ordering::Acquire);
    }
}
